"""Event latency of the learn flow: from the moment a paced producer sends an event (its
Kafka timestamp) to the moment a reader of the predictions topic gets its prediction (the
reader's clock: the same machine's); the producer's batching (``LINGER_MS``) is part of
it, as it would be in production."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from bench.child import wait_until
from bench.harness import Report
from bench.kafka_time import Arrivals, stamps_by_id
from bench.throughput import isolated
from flows.codec import encode
from flows.kafka_io import ensure_topics, producer
from models.datasets import open_stream
from riverrun.children import Child
from riverrun.runner import learn_topics
from riverrun.settings import Settings

WARM_UP = 500  # events predicted before the measured ones are sent
# Producers batch: one request per event would measure the broker's request rate instead
# (at 3,000 events/s unbatched, Tansu and the paced loop starve the flow of CPU on 2 cores).
LINGER_MS = 5


def latency(
    settings: Settings, *, seconds: float, rates: tuple[float, ...], dataset: str = "agrawal"
) -> Report:
    """p50/p90/p99/max milliseconds from event sent to prediction read, per send rate."""
    report = Report("event latency", {"seconds_per_rate": seconds, "dataset": dataset})
    for rate in rates:
        ms, sent_rate = _at_rate(settings, int(seconds * rate), rate, dataset)
        report.add(
            setup="learn flow (logreg + challenger)",
            rate=rate,
            sent_per_s=sent_rate,
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            max_ms=float(ms.max()),
        )
    return report


def _at_rate(settings: Settings, events: int, rate: float, dataset: str) -> tuple[Any, float]:
    """Each event's milliseconds to its prediction, and the rate they were really sent at."""
    stream = open_stream(dataset, seed=settings.seed, events=WARM_UP + events)
    s = isolated(settings, f"lat{rate:.0f}", task=stream.task, follow=True)
    ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)
    out = producer(s.bootstrap_servers, **{"linger.ms": LINGER_MS})
    samples = list(stream.samples)

    def send(i: int) -> None:
        x, y = samples[i]
        event = {"id": f"lat-{i}", "time": time.time(), "entity": "e", "features": x, "label": y}
        out.produce(s.topic_events, encode(event), b"e")
        out.poll(0)

    arrivals = Arrivals(s.bootstrap_servers, s.topic_predictions)

    def predicted(n: int) -> bool:
        return len(arrivals.seen) >= n

    with Child(s, "learn") as child, contextlib.closing(arrivals):
        for i in range(WARM_UP):
            send(i)
        out.flush()
        wait_until(
            lambda: predicted(WARM_UP), "the warm-up predictions", every=0.1, children=(child,)
        )
        began = time.monotonic()
        for i in range(WARM_UP, WARM_UP + events):
            send(i)
            ahead = began + (i - WARM_UP + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        out.flush()
        sent_rate = events / (time.monotonic() - began)
        wait_until(
            lambda: predicted(WARM_UP + events), "every prediction", every=0.1, children=(child,)
        )
    sent = stamps_by_id(s.bootstrap_servers, s.topic_events)
    done = arrivals.seen
    ids = [f"lat-{i}" for i in range(WARM_UP, WARM_UP + events)]
    return np.array([done[i] - sent[i] for i in ids]), sent_rate
