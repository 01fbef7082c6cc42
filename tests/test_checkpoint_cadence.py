"""When the learn flow checkpoints: every ``snapshot_every`` labels, or after
``snapshot_interval`` seconds if its models learned since the last checkpoints; an idle
flow writes no copies (each would be a new version for every server to swap to)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY

from flows.registry_sync import registry_link
from flows.snapshots import Checkpoint, SnapshotWriter
from models.registry import Registry
from models.signing import dumps_signed
from models.specs import build_model
from tests.helpers import wait_for


def test_checkpoints_come_by_count_or_by_time_but_not_while_idle(make_settings: Any) -> None:
    s = make_settings(snapshot_every=100, snapshot_interval=3.0)  # a margin for a busy machine
    link = registry_link(s)
    try:
        started = time.monotonic()
        link.submit([], 40)
        assert not link.due(41), "neither the count nor the time has come"
        assert link.due(140), "by count, at once"
        wait_for(lambda: link.due(41), 10, "a checkpoint by time after one more label")
        assert time.monotonic() - started >= 3.0
        assert not link.due(40), "nothing learned since the last checkpoints"
    finally:
        link.close()


def test_the_checkpoint_age_gauge_counts_the_champions_checkpoints_only(
    make_settings: Any,
) -> None:
    """RiverrunSnapshotStale pages when the champion's checkpoints stop: a challenger's kept
    the gauge fresh while the champion's failed, and the alert quiet."""
    s = make_settings()
    registry = Registry.connect(s.redis_url, s.registry_key)
    writer = SnapshotWriter(registry, s.model_name, "test")
    gauge = "riverrun_snapshot_last_success_timestamp_seconds"

    def checkpoint(alias: str) -> Checkpoint:
        signed = dumps_signed(build_model("logreg", "binary", 0), registry.key)
        return Checkpoint(alias, signed, "logreg", "binary", {}, 0, {}, {})

    try:
        writer.submit(checkpoint("challenger"))
        assert writer.flush(10) and writer.head("challenger") is not None
        assert REGISTRY.get_sample_value(gauge, {"model": s.model_name}) is None
        before = time.time()
        writer.submit(checkpoint("champion"))
        assert writer.flush(10) and writer.head("champion") is not None
        assert REGISTRY.get_sample_value(gauge, {"model": s.model_name}) >= before
    finally:
        writer.stop()
