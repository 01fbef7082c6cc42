"""Waiting in a benchmark: for a condition on running ``riverrun`` children, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from riverrun.children import Child

TIMEOUT = 600.0


def wait_until(
    condition: Callable[[], bool],
    what: str,
    every: float = 0.01,
    *,
    children: Sequence[Child] = (),
    timeout: float = TIMEOUT,
) -> float:
    """Poll ``condition`` until true; the monotonic time it became true. Fails at once,
    with its stderr, if one of ``children`` stopped meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        for child in children:
            if not child.alive():
                raise RuntimeError(f"riverrun {child.argv[0]} stopped: {child.stderr()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark gave up waiting for {what}")
        time.sleep(every)
    return time.monotonic()
