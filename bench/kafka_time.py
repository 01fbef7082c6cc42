"""Time as Kafka saw it: message timestamps (set by each producer when it sends) of whole
topics, for throughput without start-up time and for end-to-end latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, cast

import orjson
from confluent_kafka import Message, TopicPartition

from flows.kafka_io import consumer, end_offsets

GAP_MS = 5  # a pause this long between two messages ends a burst written at once


@dataclass(frozen=True)
class Span:
    """A topic's messages: how many, how many of them came in the first burst, and the
    milliseconds from the first to the last."""

    messages: int
    first_burst: int
    first_ms: int
    last_ms: int

    @property
    def rate(self) -> float:
        """Messages per second from the first to the last, leaving out the first burst: a
        flow writes a batch's messages at once after working on the batch, so the first
        burst's work was done before the first timestamp."""
        counted = self.messages - self.first_burst
        return counted / max((self.last_ms - self.first_ms) / 1000, 1e-3)


def span(bootstrap: str, topic: str, timeout: float = 60.0) -> Span:
    """The topic's message count, first burst and earliest and latest timestamps."""
    times = sorted(_ms(msg) for msg in _messages(bootstrap, topic, timeout, {}))
    burst = next((i for i in range(1, len(times)) if times[i] - times[i - 1] >= GAP_MS), len(times))
    return Span(len(times), burst, times[0], times[-1])


class Stamp(NamedTuple):
    """One message of a topic: where it is, its ``id`` (JSON field) and its timestamp."""

    partition: int
    offset: int
    id: str
    ms: int


def stamps(
    bootstrap: str, topic: str, timeout: float = 60.0, since: dict[int, int] | None = None
) -> list[Stamp]:
    """Every message of ``topic`` but labels (from the offsets ``since``, if given),
    partition by partition in offset order."""
    out = [
        Stamp(
            cast(int, msg.partition()), cast(int, msg.offset()), orjson.loads(value)["id"], _ms(msg)
        )
        for msg in _messages(bootstrap, topic, timeout, since or {})
        if (value := msg.value()) and b'"kind":"label"' not in value
    ]
    return sorted(out)


def stamps_by_id(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[str, int]:
    """Each message's ``id`` and timestamp; the first one when an id repeats."""
    out: dict[str, int] = {}
    for stamp in stamps(bootstrap, topic, timeout):
        out.setdefault(stamp.id, stamp.ms)
    return out


class Arrivals:
    """Tails ``topic`` from its start in a thread and notes, per ``id``, the wall-clock
    milliseconds at which a reader got it: when the message is on the topic for its readers
    (a message's own timestamp is set earlier, when its producer is handed it)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.seen: dict[str, float] = {}
        self._consumer = consumer(bootstrap, **{"fetch.wait.max.ms": 1})  # the reader's part small
        partitions = end_offsets(bootstrap, topic)
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen, poll = self.seen, self._consumer.poll
        while not self._stop.is_set():
            msg = poll(0.05)  # each message as soon as it is here (consume() waits for more)
            if msg is not None and msg.error() is None:
                seen.setdefault(orjson.loads(msg.value())["id"], time.time() * 1000)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop tailing."""
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def _messages(
    bootstrap: str, topic: str, timeout: float, since: dict[int, int]
) -> Iterator[Message]:
    """Every message of ``topic`` from the offsets ``since`` (else its start), read to the end
    it had when called."""
    ends = {p: end for p, end in end_offsets(bootstrap, topic).items() if end > since.get(p, 0)}
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, since.get(p, 0)) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} was not read to its end in {timeout:.0f} s")
            for msg in c.consume(10_000, 0.2):
                if msg.error() is None:
                    yield msg
                    partition, offset = cast(int, msg.partition()), cast(int, msg.offset())
                    if offset + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
    finally:
        c.close()


def _ms(msg: Message) -> int:
    return int(msg.timestamp()[1])
