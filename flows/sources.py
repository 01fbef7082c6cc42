"""Recorded streams to evaluate models on or warm-start them from: a file, a bounded range
of the Kafka events (and labels) topics, or a named dataset, as events and labels in order.

``riverrun evaluate`` and ``riverrun registry push --warm-start`` name a source the same
way: ``kafka``, a dataset name (``phishing``, ``agrawal-drift``, ...) or a path.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException

from flows import files, kafka_range
from flows.codec import Parser
from flows.feature_step import ByPartition
from flows.kafka_io import KafkaUnavailable, reach, recorded_topics
from flows.kafka_range import KafkaRange
from models.datasets import DATASETS, open_stream
from models.features import FeatureSpec
from models.progressive import Rejects, hold_labels
from models.schema import Event, InvalidInput, Record
from riverrun.settings import Settings

KAFKA = "kafka"

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """How much of a source its records have read so far, in the unit of its size: rows of a
    file or dataset, offsets of Kafka (records outside the time range and labels included)."""

    done: int = 0


@dataclass
class Source:
    """A recorded stream: what it is, its task, its records, how much it holds when that is
    known, and how much of that its records have read so far (for progress bars)."""

    description: str
    task: str
    records: Iterator[Record]
    size: int | None
    read: Progress

    def first_event(self) -> Event | None:
        """The first event, without taking it out of :attr:`records` (a sample for checks)."""
        head: list[Record] = []
        found = None
        for rec in self.records:
            head.append(rec)
            if type(rec) is Event:
                found = rec
                break
        self.records = itertools.chain(head, self.records)
        return found


@dataclass(frozen=True)
class SourceRequest:
    """Which source to open: a name, and how much of it (``events`` of a synthetic dataset,
    a Kafka range), and the label delay to simulate on inline labels."""

    name: str
    events: int | None = None
    drift_every: int | None = None  # a paced dataset's, else DRIFT_EVERY
    kafka: KafkaRange = field(default_factory=KafkaRange)
    delay: int = 0


def open_source(req: SourceRequest, settings: Settings, rejects: Rejects) -> Source:
    """Open the source; records that cannot be read are counted in ``rejects``."""
    if req.name == KAFKA:
        source = _kafka(req.kafka, settings, rejects)
    elif req.name in DATASETS:
        stream = open_stream(
            req.name, seed=settings.seed, events=req.events, drift_every=req.drift_every
        )
        read = Progress()
        records: Iterator[Record] = (
            Event(f"{req.name}-{i}", i * files.ROW_SECONDS, "", x, y)
            for i, (x, y) in enumerate(stream.samples)
        )
        source = Source(
            f"dataset {req.name}", stream.task, _counted(records, read), stream.size, read
        )
    else:
        source = _file(req.name, settings, rejects)
    if settings.entity_features:
        spec = FeatureSpec.parse(settings.entity_features)
        source.records = with_entity_features(source.records, spec, settings.entity_ttl)
        source.description += f", with entity features {','.join(spec.items())}"
    if req.delay > 0:
        source.records = hold_labels(source.records, req.delay)
        source.description += f", labels delayed by {req.delay} events"
    return source


def with_entity_features(
    records: Iterator[Record], spec: FeatureSpec, ttl: float
) -> Iterator[Record]:
    """``records`` with each event's features joined by its entity's aggregates after it,
    as the learn flow's features step computes them: per Kafka partition (a file is one),
    entities idle ``ttl`` seconds of event time starting afresh."""
    features = ByPartition(spec, ttl)
    for rec in records:
        if type(rec) is Event:
            features.fold(getattr(rec.origin, "part", ""), [rec])
        yield rec


def _counted(records: Iterator[Record], read: Progress) -> Iterator[Record]:
    """``records``, each one counted in ``read`` as it is taken."""
    for rec in records:
        read.done += 1
        yield rec


def _file(name: str, settings: Settings, rejects: Rejects) -> Source:
    """A file or folder; each of its rows is read once, whether it is an event or refused."""
    path = Path(name)
    read = Progress()

    def refuse(exc: InvalidInput) -> None:
        read.done += 1
        rejects.add(exc)

    records = files.read_file(path, settings.task, settings.max_message_bytes, refuse)
    return Source(
        f"file {name}", settings.task, _counted(records, read), files.file_size(path), read
    )


def _kafka(rng: KafkaRange, settings: Settings, rejects: Rejects) -> Source:
    """The events topic (and the labels topic, if there is one) within the range."""
    boot = settings.bootstrap_servers
    topics = recorded_topics(boot, settings.topic_events, settings.topic_labels)
    bounds = kafka_range.plan(boot, topics, rng)
    parser = Parser(settings.task, settings.max_message_bytes)
    size = sum(b.stop - b.start for b in bounds)
    read = Progress()

    def records() -> Iterator[Record]:
        passed = {(b.topic, b.partition): b.start for b in bounds}  # offsets read up to
        for raw in kafka_range.read(boot, bounds, rng):
            where = (raw.topic, raw.partition)
            read.done += raw.offset + 1 - passed[where]  # with the records out of the range
            passed[where] = raw.offset + 1
            try:
                yield parser.parse(raw)
            except InvalidInput as exc:
                rejects.add(exc)
        read.done = size  # every partition was read to its stop, past the range's last record

    span = ", ".join(f"{b.topic}[{b.partition}] {b.start}-{b.stop}" for b in bounds)
    return Source(f"kafka {span}", settings.task, records(), size, read)


def latest_event(settings: Settings, look_back: int = 100, timeout: float = 5) -> Event | None:
    """The newest readable event among the last ``look_back`` messages of each partition of
    the events topic: a sample of the live stream (``None`` if Kafka has none to give; an
    unreachable Kafka is said in one warning, not in librdkafka's every failed connection)."""
    boot = settings.bootstrap_servers
    try:
        reach(boot, timeout)
    except KafkaUnavailable as exc:
        log.warning("%s: no sample of the live stream to build the model on", exc)
        return None
    try:
        bounds = [
            dataclasses.replace(b, start=max(b.start, b.stop - look_back))
            for b in kafka_range.plan(boot, [settings.topic_events], KafkaRange(), timeout)
        ]
        raws = list(kafka_range.read(boot, bounds, KafkaRange(), timeout))
    except (KafkaException, RuntimeError):
        return None
    parser = Parser(settings.task, settings.max_message_bytes)
    for raw in reversed(raws):
        try:
            parsed = parser.parse(raw)
        except InvalidInput:
            continue
        if type(parsed) is Event:
            return parsed
    return None
