"""Start commands that Linux stops when their parent dies: no orphan keeps a port or learns.

``python -m riverrun.deathsig PID CMD...`` asks for the parent-death signal and then
becomes ``CMD`` (exec keeps the request). Asking in a ``preexec_fn`` instead would make
:mod:`subprocess` fork without vfork and run the parent's fork handlers in the child, and
gRPC's restart threads there that can crash it before the exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def guarded(argv: list[str], death_signal: int = signal.SIGTERM) -> list[str]:
    """``argv`` as a command that gets ``death_signal`` when this process ends (as is, off
    Linux): SIGKILL for a child that may sit where no Python signal handler runs."""
    if sys.platform != "linux":
        return argv
    parent = str(os.getpid())
    return [sys.executable, "-m", "riverrun.deathsig", parent, str(int(death_signal)), *argv]


def main(args: list[str]) -> None:
    """Ask for the signal ``args[1]`` on the death of the parent ``args[0]``, then exec the
    command (exit 1 if the parent is already gone)."""
    parent, death_signal, argv = int(args[0]), int(args[1]), args[2:]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, death_signal)
    if os.getppid() != parent:
        sys.exit(1)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
