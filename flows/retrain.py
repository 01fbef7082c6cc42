"""Full retrain: a fresh model of a chosen spec learns a bounded replay of the Kafka topics.

The replay runs the learn flow's own steps (parse, features, test-then-train with the
delayed-label join) over a range of the events and labels topics, given by offsets or by
time, and the result is registered as a new version with its lineage (the trigger and the
data range) and set as a challenger. Whether it serves is then the shadow policy's call.
Entity features are recomputed as the flow gave them: the events kept before the range
are folded in first (:func:`features_before`). The replay never goes past
the learn flow's last reported positions: the flow scores the challenger on the events
after them, which it must not have learned.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.run import cli_main
from tqdm import tqdm

from flows import kafka_range
from flows.codec import Parser
from flows.feature_step import ByPartition
from flows.kafka_io import (
    KafkaBatchSource,
    Out,
    kept_offsets,
    offsets_at,
    recorded_topics,
)
from flows.kafka_range import Bounds, KafkaRange
from flows.learn import record_streams, reject_reason
from models.evaluation import Prequential
from models.feature_store import FeatureStore
from models.features import FeatureSpec
from models.learner import ModelError, OnlineLearner, Slot
from models.registry import ANY, Registry, VersionInfo
from models.schema import Event, InvalidInput, LabelMessage, Record
from models.specs import build_model
from models.status import UnreadableStatus, read_status
from riverrun.settings import Settings, env_name

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]


class RetrainError(RuntimeError):
    """A retrain that cannot run or learned nothing; the message says why."""


@dataclass(frozen=True)
class RetrainRequest:
    """What to learn from, with which spec, why, and where the result goes."""

    spec: str = ""  # empty: the champion's spec
    since: float | None = None  # epoch seconds of the first message (Kafka timestamp)
    until: float | None = None
    start_offsets: Offsets = field(default_factory=dict)
    stop_offsets: Offsets = field(default_factory=dict)
    reason: str = "requested by hand"
    alias: str = "challenger"
    progress: bool = True  # a progress bar of the replay on stderr


@dataclass(frozen=True)
class Retrained:
    """The registered version, the replayed messages refused, by reason (the learn flow
    dead-lettered them when it read them; a retrain only counts them), and the partitions
    whose replay stopped at the learn flow's position instead of where it was asked to."""

    info: VersionInfo
    rejected: Counter[str]
    held_back: dict[str, tuple[int, int]] = field(default_factory=dict)  # where: (stop, asked)
    flow_known: bool = True  # whether the flow had said where it was (else: nothing held)


class _Done(StatefulBatchLogic[list[Record], OnlineLearner, None]):
    """Feeds the learner and hands it on when the replay ends."""

    def __init__(self, learner: OnlineLearner, rejected: Counter[str], bar: tqdm) -> None:
        self.learner = learner
        self.rejected = rejected
        self.bar = bar

    def on_batch(self, values: list[list[Record]]) -> tuple[list[OnlineLearner], bool]:
        """Learn the replayed events and labels in order."""
        learner = self.learner
        for records in values:
            for rec in records:
                try:
                    if type(rec) is Event:
                        learner.on_event(rec)
                    else:
                        learner.on_label(rec)  # type: ignore[arg-type]
                except InvalidInput as exc:
                    self.rejected[exc.reason] += 1
                except ModelError:
                    self.rejected["model_error"] += 1
            self._unknown(learner.expire())
            self.bar.update(len(records))
        return [], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[OnlineLearner], bool]:
        """Hand on the trained learner once the range is read."""
        self._unknown(self.learner.drain_orphans())
        self.bar.close()
        return [self.learner], StatefulBatchLogic.DISCARD

    def _unknown(self, labels: list[LabelMessage]) -> None:
        """Count labels whose event never came (or expired), as the flow dead-letters them."""
        if labels:
            self.rejected["unknown_event_id"] += len(labels)

    def snapshot(self) -> None:
        """Nothing: a replay is short and starts over rather than resumes."""
        return None


def replay_range(
    settings: Settings, req: RetrainRequest, topics: list[str]
) -> tuple[Offsets, Offsets]:
    """First and stop offsets of every partition of ``topics``: from the first message kept
    (or ``since``) to the end as it is now; offsets asked for past the end stop there, as a
    replay never waits for messages to come, and those before the first kept start there,
    as no reader could ever get to them."""
    boot = settings.bootstrap_servers
    start: Offsets = {}
    stop: Offsets = {}
    for topic in topics:
        kept = kept_offsets(boot, topic)
        since = offsets_at(boot, topic, math.ceil(req.since * 1000)) if req.since else {}
        for part, (first, end) in kept.items():
            asked = req.start_offsets.get((topic, part), since.get(part, first))
            start[(topic, part)] = min(max(asked, first), end)
            stop[(topic, part)] = min(req.stop_offsets.get((topic, part), end), end)
    unknown = sorted((req.start_offsets.keys() | req.stop_offsets.keys()) - start.keys())
    if unknown:
        named = ", ".join(f"{topic}-{part}" for topic, part in unknown)
        read = ", ".join(f"{topic}-{part}" for topic, part in sorted(start))
        raise RetrainError(f"no such partition to replay: {named} (the replay reads {read})")
    return start, stop


def retrain(settings: Settings, req: RetrainRequest) -> Retrained:
    """Replay the range into a fresh model, register it, point ``req.alias`` at it. The
    model does the champion's task, whatever the settings say: it is a version of it."""
    registry = Registry.connect(settings.redis_url, settings.registry_key)
    champion = _champion(registry, settings)
    if champion is not None:  # parse and score as the champion does (the rest is checked)
        settings = dataclasses.replace(settings, task=champion.task)
    settings = with_the_flows_features(settings, FeatureStore(registry.client, settings.model_name))
    task = settings.task
    if req.spec:
        spec = req.spec
    elif champion is not None:
        spec = champion.spec
    else:
        known = ", ".join(registry.models()) or "none"
        raise RetrainError(
            f"model {settings.model_name!r} has no champion to take the spec from: give one "
            f"with --spec, or name a model that has one (the registry knows: {known})"
        )
    topics = recorded_topics(
        settings.bootstrap_servers, settings.topic_events, settings.topic_labels
    )
    start, asked = replay_range(settings, req, topics)
    positions = _flow_positions(registry, settings.model_name)
    stop, held_back = before_the_flow(start, asked, positions)
    start = {where: min(offset, stop[where]) for where, offset in start.items()}
    window = None
    if req.since or req.until:  # Kafka stamps whole milliseconds: round inwards
        window = (math.ceil((req.since or 0) * 1000), math.ceil((req.until or 1e12) * 1000))
    source = KafkaBatchSource(
        settings.bootstrap_servers,
        topics,
        tail=False,
        batch_size=settings.batch_size,
        start_offsets=start,
        stop_offsets=stop,
        window=window,
    )
    model = build_model(spec, task, settings.seed)
    slot = Slot(spec, model, Prequential(task, settings.rolling_window))
    learner = OnlineLearner(
        task, [slot], label_ttl=settings.label_ttl, max_pending=settings.max_pending
    )
    flow = Dataflow("riverrun-retrain")
    warmed = features_before(settings, start, stop, req.since, req.progress)
    records, parse_rejects = record_streams(
        flow, settings, source, online_store=False, features_from=warmed
    )
    rejected: Counter[str] = Counter()
    op.inspect("count-rejects", parse_rejects, lambda _step, dead: _count(rejected, dead))
    keyed = op.map("route-model", records, lambda kv: ("retrain", kv[1]))
    total = sum(stop[where] - offset for where, offset in start.items())
    bar = tqdm(total=total, unit="msg", desc="retrain replay", disable=not req.progress)
    done = op.stateful_batch("learn", keyed, lambda _state: _Done(learner, rejected, bar))
    op.inspect("finished", done, _log_finished)
    began = time.monotonic()
    cli_main(flow, epoch_interval=timedelta(seconds=settings.epoch_interval))
    if slot.learned < learner.counts.labelled:
        raise RetrainError(
            f"{spec} failed to learn {learner.counts.labelled - slot.learned} of "
            f"{learner.counts.labelled} labelled events: nothing registered"
        )
    if slot.learned == 0:
        raise RetrainError(
            f"nothing to learn in the range {_describe(start, stop)}: no labelled event"
            + (" (held back to the learn flow's positions)" if held_back else "")
        )
    stop_positions = {f"{t}-{p}": o for (t, p), o in stop.items()}
    data_range = {
        "start": {f"{t}-{p}": o for (t, p), o in start.items()},
        "stop": stop_positions,
        "since": req.since,
        "until": req.until,
    }
    info = registry.register(
        settings.model_name,
        model,
        spec=spec,
        task=task,
        metrics=slot.metrics.report(),
        events_seen=slot.learned,
        positions=stop_positions,
        tags={"origin": "retrain", "trigger": req.reason, "range": _describe(start, stop)},
        features=learner.schema,
    )
    registry.move_alias(
        settings.model_name,
        req.alias,
        info.version,
        expected=ANY,
        actor="retrain",
        reason=f"retrained on {slot.learned} labelled events: {req.reason}",
        evidence={**data_range, "spec": spec, "seconds": round(time.monotonic() - began, 3)},
        action="set",
    )
    log.info("retrained %s on %d events as v%s (%s)", spec, slot.learned, info.version, req.alias)
    return Retrained(info, rejected, held_back, positions is not None)


def features_before(
    settings: Settings, start: Offsets, stop: Offsets, since: float | None, progress: bool
) -> ByPartition | None:
    """The entity aggregates as the learn flow had them where the replay starts: every event
    kept before it (before ``since``, by timestamp, if given) folded in, partition by
    partition, so the replay's features are those the flow gave (``None`` without entity
    features). From nothing, an entity seen a hundred times counted one. It reads the
    events topic's kept history before the range once more."""
    spec = FeatureSpec.parse(settings.entity_features)
    if not spec:
        return None
    features = ByPartition(spec, settings.entity_ttl)
    topic, boot = settings.topic_events, settings.bootstrap_servers
    until = start if since is None else stop  # by time: the window's records are filtered
    bounds = [
        Bounds(topic, part, first, until[(topic, part)])
        for part, (first, _end) in kept_offsets(boot, topic).items()
        if first < until.get((topic, part), first)
    ]
    parser = Parser(settings.task, settings.max_message_bytes)
    total = sum(b.stop - b.start for b in bounds)
    shown = progress and total > 0
    with tqdm(total=total, unit="msg", desc="features before the range", disable=not shown) as bar:
        for bound in bounds:  # each partition in its own order, as the flow read it
            for raw in kafka_range.read(boot, [bound], KafkaRange(until=since)):
                bar.update()
                try:
                    features.fold(raw.part, [parser.parse(raw)])
                except InvalidInput:  # dead-lettered when the flow read it
                    continue
    return features


def with_the_flows_features(settings: Settings, store: FeatureStore) -> Settings:
    """The settings with the entity features (and their TTL) the model's learn flow computes,
    as it wrote them to ``store``, whatever this process was told: the new model must learn
    the features the flow will give it. None if the flow keeps none; the settings' own if no
    flow has said."""
    kept = store.read_spec()
    if kept is None:
        return settings
    ttl = store.read_ttl()
    if settings.entity_features and FeatureSpec.parse(settings.entity_features) != kept:
        log.warning(
            "%s=%s is not what the learn flow of %s computes: the replay computes %s",
            env_name("entity_features"),
            ",".join(settings.entity_features),
            settings.model_name,
            ",".join(kept.items()) or "none",
        )
    if settings.entity_ttl and settings.entity_ttl != ttl:
        log.warning(
            "%s=%s is not the learn flow's: the replay keeps entities as it does (%s)",
            env_name("entity_ttl"),
            settings.entity_ttl,
            ttl or "for ever",
        )
    return dataclasses.replace(settings, entity_features=kept.items(), entity_ttl=ttl)


def before_the_flow(
    start: Offsets, stop: Offsets, flow: dict[str, int] | None
) -> tuple[Offsets, dict[str, tuple[int, int]]]:
    """``stop`` held back to the learn flow's positions (``topic-partition``: offset; ``None``
    without a flow), and where it was, by partition: the flow shadows the new model on the
    events after its positions, so a model that learned them would be scored on what it
    learned. A partition the flow has not read from stops at its ``start``.

    >>> before_the_flow({("e", 0): 0, ("e", 1): 0}, {("e", 0): 900, ("e", 1): 5}, {"e-0": 600})
    ({('e', 0): 600, ('e', 1): 0}, {'e-0': (600, 900), 'e-1': (0, 5)})
    """
    if flow is None:
        return dict(stop), {}
    held = dict(stop)
    back = {}
    for (topic, part), offset in stop.items():
        name = f"{topic}-{part}"
        position = flow.get(name, start[(topic, part)])
        if position < offset:
            held[(topic, part)] = position
            back[name] = (position, offset)
    return held, back


def _flow_positions(registry: Registry, model: str) -> dict[str, int] | None:
    """Where the model's learn flow last said it was, by ``topic-partition`` (empty: it has
    read nothing yet), or ``None`` if no flow reported, or its status is unreadable."""
    try:
        status = read_status(registry.client, model)
    except UnreadableStatus as exc:
        log.warning("%s: the replay is not held back to the flow's positions", exc)
        return None
    positions = None if status is None else status.get("positions")
    return positions if isinstance(positions, dict) else None


def _count(rejected: Counter[str], dead: list[Out]) -> None:
    """Count the parser's dead letters by reason."""
    rejected.update(map(reject_reason, dead))


def _log_finished(_step: str, item: tuple[str, OnlineLearner]) -> None:
    log.info("replay done: %d events, %d labelled", item[1].counts.events, item[1].counts.labelled)


def _champion(registry: Registry, settings: Settings) -> VersionInfo | None:
    """The champion of the settings' model, whose spec and task a retrain takes."""
    version = registry.alias(settings.model_name, "champion")
    return None if version is None else registry.info(settings.model_name, version)


def _describe(start: Offsets, stop: Offsets) -> str:
    return ", ".join(f"{t}[{p}] {start[(t, p)]}..{stop[(t, p)]}" for t, p in sorted(start))
