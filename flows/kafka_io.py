"""Kafka wiring for the flows: client configs, topic creation, and a batch source and sink.

The source emits one item per poll of a partition (a list of :class:`Raw` messages), and
the sink takes lists of :class:`Out` messages, so the dataflow pays its per-item cost once
per batch instead of once per message.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from flows.pacing import Arrival, Pacer
from riverrun.metrics import CONSUMER_LAG

# librdkafka waits 1 s between fetches of an empty queue by default, which stalls
# consumers of a quiet partition (and of Tansu); 10 ms keeps latency low. Tansu also
# seems to hold a fetch for its whole fetch.wait.max.ms when the partition was empty at
# the start, even if records arrive meanwhile (Apache Kafka answers at once): 10 ms
# instead of 50 took the flow's p50 latency from 18 to 7 ms here, for some 5% of a core
# more while idle.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "group.id": "riverrun",
    "enable.auto.commit": False,
    "fetch.queue.backoff.ms": 10,
    "fetch.wait.max.ms": 10,
}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 2, "enable.idempotence": False}
REACH_TIMEOUT = 10.0  # seconds a command waits for a first answer from the brokers
LAG_INTERVAL = 5.0  # seconds between updates of a partition's consumer-lag gauge
_SINK_PART = "out"  # the one partition of a KafkaBatchSink


class KafkaUnavailable(RuntimeError):
    """Kafka could not do what was asked (brokers unreachable, a topic missing, a partition
    unreadable, a message undelivered); the message says which."""


@dataclass(slots=True)
class Raw:
    """One message as read from Kafka: where it came from and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def part(self) -> str:
        """``topic-partition``: the name of its partition in the learner's positions."""
        return f"{self.topic}-{self.partition}"


@dataclass(slots=True)
class Out:
    """One message to write: key, value and optional headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None

    def __reduce__(self) -> tuple[type[Out], tuple[Any, ...]]:
        # Pickled as a call with its fields: a tenth of the default's cost, which counts
        # when batches of predictions travel between Bytewax processes.
        return Out, (self.key, self.value, self.headers)


def consumer(bootstrap: str, **overrides: Any) -> Consumer:
    """A consumer with riverrun's defaults (no group management is used)."""
    return Consumer({"bootstrap.servers": bootstrap, **CONSUMER_DEFAULTS, **overrides})


def producer(bootstrap: str, **overrides: Any) -> Producer:
    """A producer with riverrun's defaults."""
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def ensure_topics(bootstrap: str, topics: list[str], partitions: int, timeout: float = 30) -> None:
    """Create whichever of ``topics`` do not exist yet, with ``partitions`` partitions; an
    unreachable broker is reported as :func:`reach` does."""
    admin, existing = reach(bootstrap, timeout)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaUnavailable(f"cannot create Kafka topic {topic!r}: {exc}") from None


def reach(
    bootstrap: str, timeout: float, topic: str | None = None
) -> tuple[AdminClient, dict[str, Any]]:
    """An admin client and the brokers' topics (or only ``topic``); a broker that does not
    answer within ``REACH_TIMEOUT`` is reported unreachable (in one error, without
    librdkafka logging every failed connection meanwhile)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return admin, admin.list_topics(topic, timeout=min(timeout, REACH_TIMEOUT)).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc.args[0]}") from None


def recorded_topics(bootstrap: str, events: str, labels: str, timeout: float = 30) -> list[str]:
    """The events topic, and the labels topic if there is one (labels may travel on the
    events topic); a clear error if the events topic does not exist. All topics are
    listed: asked about by name, a broker may create the topic (Tansu does, and Kafka with
    ``auto.create.topics.enable``), so a misspelt name would read as an empty topic."""
    existing = reach(bootstrap, timeout)[1]
    if events not in existing:
        raise KafkaUnavailable(f"Kafka topic {events!r} does not exist on {bootstrap}")
    return [events, labels] if labels in existing else [events]


def partition_count(bootstrap: str, topic: str, timeout: float = 30) -> int:
    """How many partitions ``topic`` has; a clear error if it does not exist."""
    meta = reach(bootstrap, timeout, topic)[1].get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaUnavailable(f"Kafka topic {topic!r} does not exist on {bootstrap}")
    return len(meta.partitions)


def end_offsets(bootstrap: str, topic: str, timeout: float = 30) -> dict[int, int]:
    """The offset after the last message of every partition of ``topic``, right now."""
    return {p: end for p, (_, end) in kept_offsets(bootstrap, topic, timeout).items()}


def kept_offsets(bootstrap: str, topic: str, timeout: float = 30) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: the offset of the first message kept (past 0 once
    retention has deleted some: reading from 0 would then start at the end) and the offset
    after the last one, right now.

    Tansu reports as high watermark the base offset of the last record *batch* plus one,
    so the watermark is only trusted as a lower bound: the last batch is read from there
    and the end is one past its last record (on Apache Kafka the two agree).
    """
    partitions = partition_count(bootstrap, topic, timeout)  # first: it says if none answers
    c = consumer(bootstrap)
    try:
        return {p: _kept(c, TopicPartition(topic, p), timeout) for p in range(partitions)}
    finally:
        c.close()


def offsets_at(bootstrap: str, topic: str, when_ms: int, timeout: float = 30) -> dict[int, int]:
    """Per partition, an offset at or before the first message stamped ``when_ms`` or later.

    Apache Kafka answers exactly; Tansu answers with the earliest offset. Either way it is
    a lower bound: readers filter the messages by their timestamp.
    """
    c = consumer(bootstrap)
    try:
        parts = range(partition_count(bootstrap, topic, timeout))
        found = c.offsets_for_times([TopicPartition(topic, p, when_ms) for p in parts], timeout)
        ends = end_offsets(bootstrap, topic, timeout)
        return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}
    finally:
        c.close()


def read_values(bootstrap: str, topic: str, timeout: float = 30) -> list[bytes]:
    """The value of every message of ``topic`` up to its current end, partition by partition."""
    ends = end_offsets(bootstrap, topic, timeout)
    c = consumer(bootstrap)
    values: list[bytes] = []
    try:
        for part, end in ends.items():
            c.assign([TopicPartition(topic, part, 0)])
            offset, deadline = -1, time.monotonic() + timeout
            while offset + 1 < end:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"could not read {topic}[{part}] to its end {end}")
                for m in c.consume(1000, 0.2):
                    if m.error() is None and cast(int, m.offset()) < end:
                        offset = cast(int, m.offset())
                        values.append(m.value() or b"")
    finally:
        c.close()
    return values


def _kept(c: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """The low watermark of ``tp`` and the true end past its last record batch."""
    low, high = c.get_watermark_offsets(tp, timeout=timeout)
    if high <= low:
        return int(low), int(high)
    c.assign([TopicPartition(tp.topic, tp.partition, high - 1)])
    end = high
    deadline = time.monotonic() + timeout
    first: list[Message] = []
    while not first and time.monotonic() < deadline:
        first = [m for m in c.consume(1000, 0.1) if m.error() is None]
    if not first:
        raise KafkaUnavailable(
            f"cannot read the end of {tp.topic}[{tp.partition}] at offset {high - 1}"
        )
    batch = first
    while batch:  # the rest of the last record batch came in the same fetch
        end = max(end, *(cast(int, m.offset()) + 1 for m in batch))
        batch = [m for m in c.consume(1000, 0) if m.error() is None]
    c.unassign()
    return int(low), int(end)


_STOP_READING = threading.Event()


def stop_reading() -> None:
    """End the input of every Kafka source of this process, as if each partition had reached
    its stop: the flow then finishes the records in hand, flushes its outputs and takes
    its last snapshot, so a stopped flow loses no output and a resumed one repeats none.
    Records read but not handed on are read again on resume."""
    _STOP_READING.set()


def read_again() -> None:
    """Undo :func:`stop_reading`: the sources of a flow run next in this process read on."""
    _STOP_READING.clear()


class _BatchPartition(StatefulSourcePartition[list[Raw], int]):
    """One partition's consumer, handing on records in step with the process's other
    partitions (:mod:`flows.pacing`): records read past the pacer's limit are held."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        part: int,
        start: int,
        stop: int | None,
        batch_size: int,
        config: dict[str, Any],
        lag_interval: float,
        window: tuple[int, int] | None,
        pacer: Pacer,
    ) -> None:
        self._consumer = consumer(bootstrap, **config)
        self._tp = TopicPartition(topic, part)
        self._consumer.assign([TopicPartition(topic, part, start)])
        self._topic = topic
        self._part = part
        self._name = f"{part}-{topic}"
        self._pacer = pacer
        self._held: deque[Raw] = deque()  # read, not yet handed on (past the pacer's limit)
        self._read_to = start  # the consumer's next offset
        self._last_stamp = 0  # the time of the last record read
        self._offset = start  # the next offset to hand on: where a resumed flow starts
        self._stop = stop
        self._batch_size = batch_size
        self._lag = CONSUMER_LAG.labels(topic, str(part))
        self._lag_interval = lag_interval
        self._window = window
        self._lag_at = 0.0
        try:  # records waiting now: the others wait for this one's first (flows.pacing)
            low, high = self._consumer.get_watermark_offsets(self._tp, timeout=10)
        except KafkaException:  # the broker will not say: this one holds nobody back
            low = high = 0
        waiting = high > (start if start >= 0 else low) and (stop is None or stop > start)
        self._arrival = Arrival(waiting)
        pacer.note(self._name, -math.inf if waiting else None)

    def next_batch(self) -> list[list[Raw]]:
        """The records waiting in the consumer (never blocks) that the pacer lets through,
        as one batch."""
        held = self._held
        ended = self._stop is not None and self._read_to >= self._stop and not held
        if ended or _STOP_READING.is_set():
            self._report_lag()
            self._pacer.note(self._name, None)
            raise StopIteration()
        took = self._read(self._batch_size - len(held)) if len(held) < self._batch_size else 0
        limit = self._pacer.limit(self._name)
        if limit == math.inf:
            batch = list(held)
            held.clear()
        else:
            batch = []
            while held and held[0].timestamp_ms <= limit:
                batch.append(held.popleft())
        self._offset = held[0].offset if held else self._read_to
        self._pacer.note(self._name, self._frontier(took))
        if time.monotonic() >= self._lag_at:
            self._report_lag()
        return [batch] if batch else []

    def _read(self, count: int) -> int:
        """Read up to ``count`` records into the held ones; how many the consumer returned."""
        msgs = self._consumer.consume(count, 0)
        window, stop = self._window, self._stop
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise RuntimeError(f"Kafka error on {self._topic}: {err}")
                continue  # transient: librdkafka retries by itself
            offset = cast(int, msg.offset())
            if stop is not None and offset >= stop:
                break
            self._read_to = offset + 1
            stamp = msg.timestamp()[1]
            if window is not None and not window[0] <= stamp < window[1]:
                continue
            value = msg.value()
            self._held.append(
                Raw(self._topic, self._part, offset, msg.key(), value if value else b"", stamp)
            )
        if msgs:
            self._arrival.arrived()
            self._last_stamp = msgs[-1].timestamp()[1]
        return len(msgs)

    def _frontier(self, took: int) -> float | None:
        """This partition's frontier for the pacer: its next held record's time; else, if the
        read took records and the broker's end (as of the last fetch) lies past them, the
        last one's (the next is no earlier); else nothing waits, unless its first records
        are still on their way. A partition whose reads come back empty holds nobody back,
        even if its end says otherwise (transaction markers are offsets no consumer sees)."""
        if self._held:
            return float(self._held[0].timestamp_ms)
        high = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
        if took and high > self._read_to:
            return float(self._last_stamp)
        return -math.inf if self._arrival.expected() else None

    def _report_lag(self) -> None:
        """Set the lag gauge: high watermark minus the next offset to hand on, at least 0."""
        # The watermarks are the ones librdkafka cached from its last fetch of this
        # partition (no broker round trip), so the figure is as fresh as that fetch. Tansu
        # reports as high watermark the base offset of the last record batch plus one, so
        # there the lag is a lower bound (on Apache Kafka it is exact).
        low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high < 0:  # no fetch has answered yet
            return
        position = self._offset if self._offset >= 0 else max(low, 0)
        self._lag.set(max(high - position, 0))
        self._lag_at = time.monotonic() + self._lag_interval

    def snapshot(self) -> int:
        """The next offset to hand on: where a resumed flow starts (held records are read
        again)."""
        return self._offset

    def close(self) -> None:
        """Close the consumer."""
        self._pacer.note(self._name, None)
        with contextlib.suppress(RuntimeError):
            self._consumer.close()


class KafkaBatchSource(FixedPartitionedSource[list[Raw], int]):
    """Read Kafka partitions as batches of :class:`Raw` messages, resumable by offset.

    ``tail=True`` follows the topics forever; ``tail=False`` stops each partition at the
    high watermark it had when the flow started (or at ``stop_offsets``), which bounds
    replays and demos. ``start_offsets`` maps ``(topic, partition)`` to a first offset.
    ``window`` keeps only messages stamped within ``[start_ms, end_ms)``. Every
    ``lag_interval`` seconds each partition sets its consumer-lag gauge.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        *,
        tail: bool = True,
        batch_size: int = 1000,
        start_offsets: dict[tuple[str, int], int] | None = None,
        stop_offsets: dict[tuple[str, int], int] | None = None,
        config: dict[str, Any] | None = None,
        lag_interval: float = LAG_INTERVAL,
        window: tuple[int, int] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._tail = tail
        self._batch_size = batch_size
        self._start = start_offsets or {}
        self._stop = stop_offsets
        self._config = config or {}
        self._lag_interval = lag_interval
        self._window = window
        self._pacer = Pacer()  # shared by the partitions this process reads

    def list_parts(self) -> list[str]:
        """One part per topic partition: ``"PARTITION-TOPIC"``."""
        return [
            f"{p}-{topic}"
            for topic in self._topics
            for p in range(partition_count(self._bootstrap, topic))
        ]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        """A consumer of one partition, from its resume offset or the configured start."""
        idx, topic = for_part.split("-", 1)
        part = int(idx)
        start = resume_state
        if start is None:
            start = self._start.get((topic, part), OFFSET_BEGINNING)
        stop: int | None = None
        if self._stop is not None:
            stop = self._stop.get((topic, part), 0)
        elif not self._tail:
            stop = end_offsets(self._bootstrap, topic)[part]
        if start == OFFSET_BEGINNING and stop is not None:
            start = self._low_watermark(topic, part)
        return _BatchPartition(
            self._bootstrap,
            topic,
            part,
            start,
            stop,
            self._batch_size,
            self._config,
            self._lag_interval,
            self._window,
            self._pacer,
        )

    def _low_watermark(self, topic: str, part: int) -> int:
        c = consumer(self._bootstrap)
        try:
            return int(c.get_watermark_offsets(TopicPartition(topic, part), timeout=30)[0])
        finally:
            c.close()


class Delivery:
    """A producer that waits for room when its queue is full and, on :meth:`flush`, says
    whether every message it was given was delivered."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        # Only failed deliveries call back, through the producer's own callback: a Python
        # call per delivered message, or a callback passed per message, costs. The callback
        # holds the error list, not ``self``: a cycle through the producer would keep it
        # (and its connections) alive after its owner is gone, logging failures once the
        # broker stops.
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        self.producer = producer(
            bootstrap,
            **{"delivery.report.only.error": True, "on_delivery": on_delivery, **overrides},
        )
        self.errors = errors

    def send(self, topic: str, out: Out) -> None:
        """Queue one message (waiting for deliveries while the local queue is full)."""
        self.send_all(topic, (out,))

    def send_all(self, topic: str, outs: Iterable[Out]) -> None:
        """Queue every message, in order (waiting for deliveries while the queue is full),
        then serve the reports of failed deliveries that came meanwhile."""
        produce = self.producer.produce
        for out in outs:
            while True:
                try:
                    if out.headers is None:
                        produce(topic, out.value, out.key)
                    else:
                        produce(topic, out.value, out.key, headers=out.headers)  # type: ignore[arg-type]
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued message; :class:`KafkaUnavailable` if one was not delivered."""
        left = self.producer.flush(timeout)
        errors = self.errors[:]
        self.errors.clear()
        if left or errors:
            why = errors[0] if errors else f"{left} messages still queued after {timeout:.0f} s"
            raise KafkaUnavailable(f"could not write to Kafka: {why}")


class _SinkPartition(StatefulSinkPartition[list[Out], None]):
    def __init__(self, bootstrap: str, topic: str, config: dict[str, Any]) -> None:
        self._delivery = Delivery(bootstrap, **config)
        self._topic = topic

    def write_batch(self, values: list[list[Out]]) -> None:
        """Queue every message; librdkafka sends them in the background."""
        for batch in values:
            self._delivery.send_all(self._topic, batch)

    def snapshot(self) -> None:
        """Wait until every message of the epoch is delivered: the epoch is committed only
        after this returns, so a resumed flow never skips an output it did not deliver."""
        self._delivery.flush()

    def close(self) -> None:
        """Deliver what is left."""
        self._delivery.flush()


class KafkaBatchSink(FixedPartitionedSink[list[Out], None]):
    """Write batches of :class:`Out` messages to one topic, all delivered before their epoch
    is committed (outputs are at-least-once with recovery).

    Waiting for deliveries once per epoch instead of after every batch keeps the flow from
    idling on broker round trips. The sink has one partition: write to it with
    :func:`kafka_output`, which keys the stream for it. In a cluster, items of other workers
    travel to its worker.
    """

    def __init__(self, bootstrap: str, topic: str, config: dict[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._config = config or {}

    def list_parts(self) -> list[str]:
        """The one partition: one producer writes the topic."""
        return [_SINK_PART]

    def part_fn(self, item_key: str) -> int:
        """Every item goes to the one partition."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SinkPartition:
        """The partition's producer (there is no position to resume from)."""
        return _SinkPartition(self._bootstrap, self._topic, self._config)


def kafka_output(step_id: str, up: Stream[list[Out]], bootstrap: str, topic: str) -> None:
    """Write the batches of ``up`` to ``topic`` through a :class:`KafkaBatchSink`."""
    keyed = op.map(f"{step_id}-key", up, lambda outs: (_SINK_PART, outs))
    op.output(step_id, keyed, KafkaBatchSink(bootstrap, topic))
