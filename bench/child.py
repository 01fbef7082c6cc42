"""Waiting in a benchmark: for a condition on a running ``riverrun`` child, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

TIMEOUT = 600.0


def wait_until(condition: Callable[[], bool], what: str, every: float = 0.01) -> float:
    """Poll ``condition`` until true; the monotonic time it became true."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark gave up waiting for {what}")
        time.sleep(every)
    return time.monotonic()
