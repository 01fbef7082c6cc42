"""Children started through :func:`riverrun.deathsig.guarded` end with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Lines, process_alive, wait_for

PARENT = """
import signal, subprocess, sys, time
from riverrun.deathsig import guarded
child = subprocess.Popen(guarded([sys.executable, "-c", {child!r}], {death_signal}))
print(child.pid, flush=True)
time.sleep(120)
"""
DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


@pytest.mark.parametrize(
    ("child", "death_signal"),
    [
        ("import time; time.sleep(120)", "signal.SIGTERM"),
        (DEAF, "signal.SIGKILL"),  # a child that no SIGTERM stops, as a cluster's can be
    ],
)
def test_a_guarded_child_ends_when_its_parent_is_killed(child: str, death_signal: str) -> None:
    code = PARENT.format(child=child, death_signal=death_signal)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(Lines(parent.stdout).next(10, "the child's pid"))
        wait_for(lambda: "time.sleep" in Path(f"/proc/{child}/cmdline").read_text(), 10, "exec")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not process_alive(child), 10, "the child to end with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
