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


def guarded(argv: list[str]) -> list[str]:
    """``argv`` as a command that gets SIGTERM when this process ends (as is, off Linux)."""
    if sys.platform != "linux":
        return argv
    return [sys.executable, "-m", "riverrun.deathsig", str(os.getpid()), *argv]


def main(args: list[str]) -> None:
    """Ask for SIGTERM on the parent's death, then exec the command (exit 1 if the parent
    ``args[0]`` is already gone)."""
    parent, argv = int(args[0]), args[1:]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(1)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
