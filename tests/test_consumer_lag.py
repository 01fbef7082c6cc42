"""The Kafka source sets its consumer-lag gauge from the watermarks, every few seconds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY

from flows.kafka_io import KafkaBatchSource, Raw
from tests.helpers import wait_for, write_raw

MESSAGES = 100


def _lag(topic: str) -> float | None:
    return REGISTRY.get_sample_value(
        "riverrun_consumer_lag_messages", {"topic": topic, "partition": "0"}
    )


def _poll(part: Any) -> list[Raw]:
    return [m for batch in part.next_batch() for m in batch]


def _read_all(part: Any) -> bool:
    _poll(part)
    return bool(part.snapshot() == MESSAGES)


@contextmanager
def _after_first_batch(s: Any, lag_interval: float) -> Iterator[Any]:
    """A partition of MESSAGES, read in batches of 30, once its first batch has come."""
    for _ in range(4):  # four record batches, so Tansu's watermark moves past the first
        write_raw(s, s.topic_events, [(b"k", b"{}")] * (MESSAGES // 4))
    source = KafkaBatchSource(
        s.bootstrap_servers, [s.topic_events], batch_size=30, lag_interval=lag_interval
    )
    part = source.build_part("in", f"0-{s.topic_events}", None)
    try:
        wait_for(lambda: _poll(part), 30, "a first batch")
        yield part
    finally:
        part.close()


def test_lag_is_watermark_minus_position_and_reaches_zero(make_settings: Any) -> None:
    s = make_settings()
    with _after_first_batch(s, lag_interval=0) as part:
        behind = MESSAGES - part.snapshot()
        lag = _lag(s.topic_events)
        assert lag is not None and 0 < lag <= behind, (lag, behind)
        wait_for(lambda: _read_all(part), 30, "the end")
        wait_for(lambda: _poll(part) == [] and _lag(s.topic_events) == 0, 30, "lag 0")


def test_lag_is_updated_per_interval_not_per_poll(make_settings: Any) -> None:
    s = make_settings()
    with _after_first_batch(s, lag_interval=3600) as part:
        first = _lag(s.topic_events)
        assert first is not None and first > 0
        wait_for(lambda: _read_all(part), 30, "the end")
        assert _lag(s.topic_events) == first, "read everything, but the hour has not passed"
