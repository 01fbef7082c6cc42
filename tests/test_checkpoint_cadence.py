"""When the learn flow checkpoints: every ``snapshot_every`` labels, or after
``snapshot_interval`` seconds if its models learned since the last checkpoints; an idle
flow writes no copies (each would be a new version for every server to swap to)."""

from __future__ import annotations

import time
from typing import Any

from flows.registry_sync import registry_link
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
