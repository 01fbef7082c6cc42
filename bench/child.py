"""``riverrun learn`` as a child process of a benchmark: started, watched, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from riverrun.settings import Settings

TIMEOUT = 600.0


@contextlib.contextmanager
def learn_child(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """The learn flow running in a child with these settings; interrupted on exit."""
    env = {**os.environ, **settings.to_env()}
    child = subprocess.Popen(
        [sys.executable, "-m", "riverrun.cli", "learn"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def wait_until(condition: Callable[[], bool], what: str, every: float = 0.01) -> float:
    """Poll ``condition`` until true; the monotonic time it became true."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark gave up waiting for {what}")
        time.sleep(every)
    return time.monotonic()
