"""The learn flow: Kafka events and labels in, features, test-then-train, predictions out.

Run it with ``riverrun learn`` or ``python -m bytewax.run flows.learn:flow`` (settings
from ``RIVERRUN_*``). Steps, each one batch per Kafka poll:

``kafka-in`` → ``parse`` (rejects to ``deadletter``) → ``features`` (keyed by source
partition: per-entity aggregates, whose latest state also goes to the online feature
store in Redis) → ``learn`` (keyed by model name: the champion and its
challengers predict every event and learn every label) → ``predictions``.
"""

from __future__ import annotations

import logging
from typing import Any

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream

from flows import heap
from flows.codec import Parsed, Parser
from flows.feature_step import ByPartition, FeatureLogic
from flows.hush import panics_hushed
from flows.kafka_io import KafkaBatchSource, Out, kafka_output
from flows.learn_step import LearnLogic
from flows.registry_sync import RegistrySync, new_learner, registry_link
from flows.run_start import read_start, record_start
from models.feature_store import FeatureStore, FeatureWriter
from models.features import EntityFeatures, FeatureSpec
from models.schema import Record
from models.signing import check_key, loads_signed
from riverrun.metrics import DEADLETTERS, EVENTS_IN
from riverrun.settings import Settings

log = logging.getLogger(__name__)


def record_streams(
    flow: Dataflow,
    settings: Settings,
    source: KafkaBatchSource,
    *,
    online_store: bool,
    features_from: ByPartition | None = None,
) -> tuple[KeyedStream[list[Record]], Stream[list[Out]]]:
    """``kafka-in`` → ``parse`` → ``features``: batches of records keyed by source partition,
    and the parse rejects. ``online_store`` writes entity state for the servers.
    ``features_from``: the aggregates the partitions go on from (a replay's, in one worker,
    warmed on the events before it), else fresh or resumed ones per partition."""
    raw = op.input("kafka-in", flow, source)
    parser = Parser(settings.task, settings.max_message_bytes)

    def parse(batch: list[Any]) -> tuple[str, Parsed]:
        first = batch[0]
        EVENTS_IN.labels(first.topic).inc(len(batch))
        return first.part, parser.parse_batch(batch)

    parsed = op.map("parse", raw, parse)
    parse_dead = op.filter_map("parse-rejects", parsed, lambda kp: kp[1].dead or None)
    records = op.filter_map(
        "records", parsed, lambda kp: (kp[0], kp[1].records) if kp[1].records else None
    )
    spec = FeatureSpec.parse(settings.entity_features)
    if spec:
        key = check_key(settings.registry_key)
        store = FeatureStore.connect(settings.redis_url, settings.model_name)

        def build_features(state: bytes | None) -> FeatureLogic:
            with panics_hushed():
                features = EntityFeatures(spec) if state is None else loads_signed(state, key)
            features.ttl = settings.entity_ttl  # this run's, also for a resumed state
            writer = FeatureWriter(store, spec, ttl=settings.entity_ttl) if online_store else None
            return FeatureLogic(features, key, writer)

        if features_from is None:
            records = op.stateful_batch("features", records, build_features)
        else:
            records = op.map("features", records, lambda kv: (kv[0], features_from.fold(*kv)))
    elif online_store:  # a spec left by an earlier run would have servers compute features
        try:
            FeatureStore.connect(settings.redis_url, settings.model_name).forget_spec()
        except redis.RedisError as exc:
            log.warning("cannot say in Redis that the flow keeps no entity features: %s", exc)
    return records, parse_dead


def build_flow(settings: Settings) -> Dataflow:
    """The learn dataflow; with ``settings.follow`` off it stops at the topics' current end."""
    flow = Dataflow("riverrun-learn")
    source = KafkaBatchSource(
        settings.bootstrap_servers,
        [settings.topic_events, settings.topic_labels],
        tail=settings.follow,
        batch_size=settings.batch_size,
    )
    records, parse_dead = record_streams(flow, settings, source, online_store=True)

    to_model = op.map("route-model", records, lambda kv: (settings.model_name, kv[1]))

    def build_learn(state: bytes | None) -> LearnLogic:
        with panics_hushed():  # a refusal (a tampered champion, say) is reported alone
            link = registry_link(settings)
            if state is not None:
                learner = loads_signed(state, check_key(settings.registry_key))
                return LearnLogic(settings, learner, RegistrySync(settings, link))
            learner = new_learner(settings, link, read_start(settings))
            logic = LearnLogic(settings, learner, RegistrySync(settings, link))  # registers
            if all(slot.version for slot in learner.slots):
                record_start(settings, {slot.alias: slot.version for slot in learner.slots})
            return logic

    learned = op.stateful_batch("learn", to_model, build_learn)
    outs = op.map("unkey", learned, lambda kv: kv[1])
    predictions = op.filter_map("predictions", outs, lambda o: o.predictions or None)
    shadow = op.filter_map("shadow-predictions", outs, lambda o: o.shadow or None)
    drift = op.filter_map("drift-events", outs, lambda o: o.drift or None)
    learn_dead = op.filter_map("learn-rejects", outs, lambda o: o.dead or None)
    dead = op.map("count-rejects", op.merge("rejects", parse_dead, learn_dead), count_rejects)
    for step, stream, topic in (
        ("predictions-out", predictions, settings.topic_predictions),
        ("shadow-out", shadow, settings.topic_shadow),
        ("drift-out", drift, settings.topic_drift),
        ("deadletter-out", dead, settings.topic_deadletter),
    ):
        kafka_output(step, stream, settings.bootstrap_servers, topic)
    return flow


def count_rejects(batch: list[Out]) -> list[Out]:
    """Count dead letters by reason on their way out."""
    for out in batch:
        DEADLETTERS.labels(reject_reason(out)).inc()
    return batch


def reject_reason(dead: Out) -> str:
    """The reason a dead letter carries in its headers."""
    return dict(dead.headers or ()).get("reason", b"unknown").decode()


def __getattr__(name: str) -> Any:
    """``flows.learn:flow`` for ``python -m bytewax.run``: built from ``RIVERRUN_*`` on access,
    with the heap frozen as ``riverrun learn`` runs it (the process lives for the flow)."""
    if name == "flow":
        flow = build_flow(Settings.from_env())
        heap.freeze()
        return flow
    raise AttributeError(name)
