"""Time as Kafka saw it: message timestamps (set by each producer when it sends) of whole
topics, for throughput without start-up time and for end-to-end latency."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import orjson
from confluent_kafka import Consumer, TopicPartition

from flows.kafka_io import consumer, end_offsets


@dataclass(frozen=True)
class Span:
    """How many messages a topic holds and the milliseconds from its first to its last."""

    messages: int
    first_ms: int
    last_ms: int

    @property
    def rate(self) -> float:
        """Messages per second between the first and the last."""
        return self.messages / max((self.last_ms - self.first_ms) / 1000, 1e-3)


def span(bootstrap: str, topic: str, timeout: float = 30.0) -> Span:
    """The topic's message count and its earliest and latest timestamps."""
    ends = {p: end for p, end in end_offsets(bootstrap, topic).items() if end > 0}
    c = consumer(bootstrap)
    try:
        stamps = [
            _timestamp(c, TopicPartition(topic, p, offset), timeout)
            for p, end in ends.items()
            for offset in (0, end - 1)
        ]
    finally:
        c.close()
    return Span(sum(ends.values()), min(stamps), max(stamps))


def _timestamp(c: Consumer, tp: TopicPartition, timeout: float) -> int:
    c.assign([tp])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in c.consume(1, 0.2):
            if msg.error() is None:
                return int(msg.timestamp()[1])
    raise TimeoutError(f"no message at {tp.topic}[{tp.partition}]@{tp.offset}")


def stamps_by_id(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[str, int]:
    """Each message's ``id`` (JSON field) and timestamp; the first one when an id repeats."""
    ends = {p: end for p, end in end_offsets(bootstrap, topic).items() if end > 0}
    c = consumer(bootstrap)
    out: dict[str, int] = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        left = dict(ends)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in c.consume(10_000, 0.2):
                if msg.error() is not None:
                    continue
                value = msg.value()
                if value and b'"kind":"label"' not in value:
                    out.setdefault(orjson.loads(value)["id"], int(msg.timestamp()[1]))
                partition, offset = cast(int, msg.partition()), cast(int, msg.offset())
                if offset + 1 >= left.get(partition, 0):
                    left.pop(partition, None)
    finally:
        c.close()
    return out
