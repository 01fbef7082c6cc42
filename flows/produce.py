"""The stream producer: a named dataset to the ``events`` topic, as JSON events and labels.

Labels travel inline in each event, or with ``delay_labels=N`` as separate label messages
N events later, in exactly the order ``river.stream.simulate_qa`` gives (so
``progressive_val_score(delay=N)`` sees the same stream): on the events topic keyed by
entity (same partition as the event), or on the labels topic keyed by event id.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from river import stream as river_stream
from tqdm import tqdm

from flows.codec import encode
from flows.kafka_io import Delivery, Out, ensure_topics
from models.datasets import DatasetError, Stream, open_stream

STREAM_EVENTS = 50_000  # events of a stream that ``produce`` and the demo write by default


@dataclass(frozen=True)
class ProduceRequest:
    """What to produce and how fast."""

    dataset: str
    events: int | None
    seed: int = 42
    rate: float | None = None
    burst: int = 0  # events written at full speed before ``rate`` applies (history, then live)
    skip: int = 0  # leave out the stream's first events (to resume it where it stopped)
    delay_labels: int = 0
    labels_topic: bool = False
    drift_every: int | None = None  # a paced dataset's, else DRIFT_EVERY
    entities: int = 100
    id_prefix: str | None = None
    start_time: float | None = None


@dataclass(frozen=True)
class ProduceSummary:
    """What was written."""

    events: int
    labels: int
    task: str
    drifts: tuple[int, ...]
    id_prefix: str
    seconds: float


@dataclass(frozen=True)
class Message:
    """One message to send: which topic kind, key and value."""

    to_labels: bool
    key: bytes
    value: bytes
    is_event: bool


def messages(req: ProduceRequest, stream: Stream, prefix: str) -> Iterator[Message]:
    """The stream as Kafka messages, in the order they must be written. Event times are
    ``step`` apart from ``start_time``, the time of the stream's first event (so that a
    resumed stream keeps its timeline); without one, the first event sent after the burst
    is stamped now: the burst is history, and a resumed stream goes on from now, where it
    used to be stamped ahead (the flow refuses events over a day ahead)."""
    rng = random.Random(req.seed)
    step = 1.0 / req.rate if req.rate else 0.001
    if req.start_time is not None:
        start = req.start_time
    else:
        start = time.time() - (req.skip + req.burst) * step
    entity_of: dict[int, str] = {}
    time_of: dict[int, float] = {}
    delay = req.delay_labels or None
    for i, x, y in _questions_and_answers(stream, delay):
        if delay is None or y is None:  # a question: the event itself
            entity = f"entity-{rng.randrange(req.entities)}"
            event: dict[str, Any] = {
                "id": f"{prefix}-{i}",
                "time": start + i * step,
                "entity": entity,
                "features": x,
            }
            if delay is None:
                event["label"] = y
            else:
                entity_of[i], time_of[i] = entity, event["time"]
            if i >= req.skip:
                yield Message(False, entity.encode(), encode(event), True)
            continue
        entity = entity_of.pop(i)
        if i < req.skip:
            time_of.pop(i)
            continue
        label = {"kind": "label", "id": f"{prefix}-{i}", "label": y, "time": time_of.pop(i)}
        key = f"{prefix}-{i}" if req.labels_topic else entity
        yield Message(req.labels_topic, key.encode(), encode(label), False)


def _questions_and_answers(stream: Stream, delay: int | None) -> Iterator[tuple[int, dict, Any]]:
    if delay is None:
        for i, (x, y) in enumerate(stream.samples):
            yield i, x, y
        return
    yield from river_stream.simulate_qa(
        stream.samples,  # type: ignore[arg-type]
        moment=None,
        delay=delay,
        copy=False,
    )


def produce(
    req: ProduceRequest,
    bootstrap: str,
    events_topic: str,
    labels_topic: str,
    *,
    partitions: int = 1,
    progress: bool = True,
) -> ProduceSummary:
    """Write the requested stream to Kafka, paced by ``rate`` (events/s) after ``burst``."""
    stream = open_stream(req.dataset, seed=req.seed, events=req.events, drift_every=req.drift_every)
    if stream.size is not None and req.skip >= stream.size:
        raise DatasetError(
            f"nothing to produce: skipping {req.skip:,} events leaves none of the "
            f"{stream.size:,} of {req.dataset}"
        )
    prefix = req.id_prefix or uuid.uuid4().hex[:8]
    ensure_topics(bootstrap, [events_topic, labels_topic], partitions)
    out = Delivery(bootstrap, **{"linger.ms": 20, "batch.num.messages": 10000})
    n_events = n_labels = 0
    began = paced_from = time.monotonic()
    total = None if stream.size is None else max(stream.size - req.skip, 0)
    bar = tqdm(total=total, unit="ev", desc=f"produce {req.dataset}", disable=not progress)
    try:
        for msg in messages(req, stream, prefix):
            topic = labels_topic if msg.to_labels else events_topic
            out.send(topic, Out(msg.key, msg.value))
            if msg.is_event:
                n_events += 1
                bar.update(1)
                if n_events == req.burst:
                    paced_from = time.monotonic()
                if req.rate and n_events > req.burst:
                    ahead = (n_events - req.burst) / req.rate - (time.monotonic() - paced_from)
                    if ahead > 0:
                        time.sleep(ahead)
            else:
                n_labels += 1
        out.flush()
    finally:
        bar.close()
    return ProduceSummary(
        n_events, n_labels, stream.task, stream.drifts, prefix, time.monotonic() - began
    )
