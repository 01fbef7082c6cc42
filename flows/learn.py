"""The learn flow: Kafka events and labels in, features, test-then-train, predictions out.

Run it with ``riverrun learn`` or ``python -m bytewax.run flows.learn:flow`` (settings
from ``RIVERRUN_*``). Steps, each one batch per Kafka poll:

``kafka-in`` → ``parse`` (rejects to ``deadletter``) → ``features`` (keyed by source
partition: per-entity aggregates) → ``learn`` (keyed by model name: the champion and its
challengers predict every event and learn every label) → ``predictions``.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows.codec import Parsed, Parser, dead_letter, encode
from flows.kafka_io import KafkaBatchSink, KafkaBatchSource, Out
from models.evaluation import Prequential, predicted_label
from models.features import EntityFeatures, FeatureSpec
from models.learner import OnlineLearner, Slot
from models.schema import Event, InvalidInput, LabelMessage
from models.specs import build_model
from models.status import write_status
from riverrun.settings import Settings

log = logging.getLogger(__name__)

Record = Event | LabelMessage


@dataclass(slots=True)
class LearnOut:
    """What the learn step emits for one batch."""

    predictions: list[Out] = field(default_factory=list)
    dead: list[Out] = field(default_factory=list)


class FeatureLogic(StatefulBatchLogic[list[Record], list[Record], bytes]):
    """Per-entity aggregates for the entities of one source partition."""

    def __init__(self, features: EntityFeatures) -> None:
        self.features = features

    def on_batch(self, values: list[list[Record]]) -> tuple[list[list[Record]], bool]:
        update = self.features.update
        for records in values:
            for rec in records:
                if type(rec) is Event:
                    rec.features = update(rec.entity, rec.time, rec.features)
        return values, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.features, protocol=pickle.HIGHEST_PROTOCOL)


class StatusReporter:
    """Writes the learner's status to Redis now and then; never stops the flow if Redis is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        self.next_at = 0.0
        self.failures = 0

    def maybe_write(self, learner: OnlineLearner, *, force: bool = False) -> None:
        """Write if the status interval has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + self.settings.status_interval
        try:
            write_status(self.client, self.settings.model_name, learner.report())
        except redis.RedisError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("cannot write status to Redis (%d failures): %s", self.failures, exc)


class LearnLogic(StatefulBatchLogic[list[Record], LearnOut, bytes]):
    """Runs the :class:`OnlineLearner` over batches and encodes what it returns."""

    def __init__(self, settings: Settings, learner: OnlineLearner) -> None:
        self.settings = settings
        self.learner = learner
        self.status = StatusReporter(settings)
        self.classify = learner.task != "regression"

    def on_batch(self, values: list[list[Record]]) -> tuple[list[LearnOut], bool]:
        learner = self.learner
        out = LearnOut()
        predictions, dead = out.predictions, out.dead
        champion = learner.champion
        name = self.settings.model_name
        classify = self.classify
        for records in values:
            for rec in records:
                if type(rec) is not Event:
                    rejected = learner.on_label(rec)  # type: ignore[arg-type]
                    if rejected is not None:
                        dead.append(
                            dead_letter(
                                rec.origin,
                                "duplicate_label",
                                f"a label for event {rec.id!r} already waits",
                            )
                        )
                    continue
                try:
                    preds = learner.on_event(rec)
                except InvalidInput as exc:
                    dead.append(dead_letter(rec.origin, exc.reason, str(exc)))
                    continue
                y_pred = preds[champion.uid]
                payload: dict[str, Any] = {
                    "id": rec.id,
                    "entity": rec.entity,
                    "time": rec.time,
                    "model": name,
                    "version": champion.version,
                    "spec": champion.spec,
                    "role": "champion",
                }
                if classify:
                    payload["prediction"] = predicted_label(y_pred)
                    payload["proba"] = y_pred
                else:
                    payload["prediction"] = y_pred
                predictions.append(Out(rec.entity.encode(), encode(payload)))
        for label in learner.expire():
            dead.append(_unknown_label(label))
        self.status.maybe_write(learner)
        return [out], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[LearnOut], bool]:
        out = LearnOut(dead=[_unknown_label(label) for label in self.learner.drain_orphans()])
        self.status.maybe_write(self.learner, force=True)
        return [out], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.learner, protocol=pickle.HIGHEST_PROTOCOL)


def _unknown_label(label: LabelMessage) -> Out:
    return dead_letter(
        label.origin,
        "unknown_event_id",
        f"no prediction waits for event {label.id!r} (never seen, or expired after label_ttl)",
    )


def new_learner(settings: Settings) -> OnlineLearner:
    """A learner with a fresh champion built from the settings' model spec."""
    task = settings.task
    champion = Slot(
        settings.model_spec,
        build_model(settings.model_spec, task, settings.seed),
        Prequential(task, settings.rolling_window),
    )
    return OnlineLearner(
        task, [champion], label_ttl=settings.label_ttl, max_pending=settings.max_pending
    )


def build_flow(settings: Settings) -> Dataflow:
    """The learn dataflow; with ``settings.follow`` off it stops at the topics' current end."""
    flow = Dataflow("riverrun-learn")
    source = KafkaBatchSource(
        settings.bootstrap_servers,
        [settings.topic_events, settings.topic_labels],
        tail=settings.follow,
        batch_size=settings.batch_size,
    )
    raw = op.input("kafka-in", flow, source)
    parser = Parser(settings.task, settings.max_message_bytes)

    def parse(batch: list[Any]) -> tuple[str, Parsed]:
        first = batch[0]
        return f"{first.topic}-{first.partition}", parser.parse_batch(batch)

    parsed = op.map("parse", raw, parse)
    parse_dead = op.filter_map("parse-rejects", parsed, lambda kp: kp[1].dead or None)
    records = op.filter_map(
        "records", parsed, lambda kp: (kp[0], kp[1].records) if kp[1].records else None
    )
    spec = FeatureSpec.parse(settings.entity_features)
    if spec:

        def build_features(state: bytes | None) -> FeatureLogic:
            return FeatureLogic(EntityFeatures(spec) if state is None else pickle.loads(state))

        records = op.stateful_batch("features", records, build_features)

    to_model = op.map("route-model", records, lambda kv: (settings.model_name, kv[1]))

    def build_learn(state: bytes | None) -> LearnLogic:
        learner = new_learner(settings) if state is None else pickle.loads(state)
        return LearnLogic(settings, learner)

    learned = op.stateful_batch("learn", to_model, build_learn)
    outs = op.map("unkey", learned, lambda kv: kv[1])
    predictions = op.filter_map("predictions", outs, lambda o: o.predictions or None)
    learn_dead = op.filter_map("learn-rejects", outs, lambda o: o.dead or None)
    dead = op.merge("rejects", parse_dead, learn_dead)
    op.output(
        "predictions-out", predictions,
        KafkaBatchSink(settings.bootstrap_servers, settings.topic_predictions),
    )  # fmt: skip
    op.output(
        "deadletter-out",
        dead,
        KafkaBatchSink(settings.bootstrap_servers, settings.topic_deadletter),
    )
    return flow


def __getattr__(name: str) -> Any:
    """``flows.learn:flow`` for ``python -m bytewax.run``: built from ``RIVERRUN_*`` on access."""
    if name == "flow":
        return build_flow(Settings.from_env())
    raise AttributeError(name)
