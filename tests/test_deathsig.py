"""Children started through :func:`riverrun.deathsig.guarded` end with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import Lines, process_alive, wait_for

PARENT = """
import subprocess, sys, time
from riverrun.deathsig import guarded
child = subprocess.Popen(guarded([sys.executable, "-c", "import time; time.sleep(120)"]))
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_guarded_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
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
