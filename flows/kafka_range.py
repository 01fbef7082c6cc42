"""A bounded range of Kafka topics, read once: by offsets, by record timestamps, or both.

Offset bounds apply to every partition of the events topic; a labels topic is read whole
(within the time bounds), as its offsets say nothing of which events its labels are for.
Time bounds are Kafka record timestamps (epoch
seconds): the broker's offsets-for-times only gives where to start reading (Tansu answers
it with the earliest offset, so it is a lower bound), and every record is then filtered by
its timestamp, which is exact on any broker. Partitions and topics are merged by record
timestamp, each one's own order kept.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, TopicPartition

from flows.kafka_io import KafkaUnavailable, Raw, consumer, end_offsets

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class KafkaRange:
    """Which records to read: offsets ``[start_offset, stop_offset)`` of each partition of
    the events topic, and timestamps ``[since, until)``; ``None`` leaves a side open (the stop
    is then the end of the partition when reading starts)."""

    start_offset: int | None = None
    stop_offset: int | None = None
    since: float | None = None
    until: float | None = None

    def keeps(self, timestamp_ms: int) -> bool:
        """Whether a record with this timestamp is in the range."""
        seconds = timestamp_ms / 1000.0
        if self.since is not None and seconds < self.since:
            return False
        return self.until is None or seconds < self.until


@dataclass(frozen=True)
class Bounds:
    """The offsets to read of one partition: ``[start, stop)``."""

    topic: str
    partition: int
    start: int
    stop: int


def plan(bootstrap: str, topics: list[str], rng: KafkaRange, timeout: float = 30) -> list[Bounds]:
    """Where reading starts and stops in every partition of ``topics``: the events topic,
    then the labels topic if there is one (which the offset bounds leave alone)."""
    out = []
    c = consumer(bootstrap)
    try:
        for topic in topics:
            offsets = rng if topic == topics[0] else KafkaRange()
            for part, end in end_offsets(bootstrap, topic, timeout).items():
                tp = TopicPartition(topic, part)
                low = int(c.get_watermark_offsets(tp, timeout=timeout)[0])
                start = max(low, offsets.start_offset or 0)
                if rng.since is not None:
                    start = max(start, _offset_at(c, tp, rng.since, end, timeout))
                stop = end if offsets.stop_offset is None else min(end, offsets.stop_offset)
                out.append(Bounds(topic, part, start, max(start, stop)))
    finally:
        c.close()
    return out


def _offset_at(c: Consumer, tp: TopicPartition, seconds: float, end: int, timeout: float) -> int:
    """The broker's first offset at or after a time (a lower bound on Tansu); ``end`` if none."""
    asked = TopicPartition(tp.topic, tp.partition, int(seconds * 1000))
    (found,) = c.offsets_for_times([asked], timeout=timeout)
    return int(found.offset) if found.offset >= 0 else end


def read(
    bootstrap: str, bounds: list[Bounds], rng: KafkaRange, timeout: float = 30
) -> Iterator[Raw]:
    """The records within ``bounds`` and the range's times, merged by timestamp."""
    parts = [_read_partition(bootstrap, b, rng, timeout) for b in bounds if b.stop > b.start]
    return heapq.merge(*parts, key=lambda raw: raw.timestamp_ms)


def _read_partition(bootstrap: str, b: Bounds, rng: KafkaRange, timeout: float) -> Iterator[Raw]:
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(b.topic, b.partition, b.start)])
        position = b.start
        stalled_since = time.monotonic()
        while position < b.stop:
            msgs = c.consume(1000, POLL_SECONDS)
            if not msgs and time.monotonic() - stalled_since > timeout:
                raise KafkaUnavailable(
                    f"cannot read {b.topic}[{b.partition}] from offset {position} (stop {b.stop})"
                )
            for msg in msgs:
                if msg.error() is not None:
                    continue
                offset = cast(int, msg.offset())
                if offset >= b.stop:
                    position = b.stop
                    break
                position = offset + 1
                stalled_since = time.monotonic()
                timestamp = msg.timestamp()[1]
                if rng.keeps(timestamp):
                    value = msg.value()
                    yield Raw(b.topic, b.partition, offset, msg.key(), value or b"", timestamp)
    finally:
        c.close()
