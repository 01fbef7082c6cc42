"""Which ``riverrun local up`` runs: its pid in a file it keeps locked while it runs.

The lock, not the pid, says whether a stack runs: the kernel drops it when ``up`` ends,
however it ends, so a pid left behind by a killed ``up`` (and later reused by another
process) is never taken for a running stack, and never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from riverrun.local import LauncherError


def marker_path() -> Path:
    """The marker: in the user's private runtime folder (``$XDG_RUNTIME_DIR``), else in
    ``~/.local/state/riverrun``, never in a folder other users can write to."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) if runtime else Path.home() / ".local" / "state" / "riverrun"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LauncherError(
            f"cannot keep the local stack's marker in {str(folder)!r}: {exc.strerror}"
        ) from None
    return folder / f"riverrun-local-{os.getuid()}.pid"


def _try_lock(fd: int) -> bool:
    """Take the marker's lock if nobody holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _pid(path: Path) -> str:
    """The pid written in the marker, as text."""
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return ""


@contextlib.contextmanager
def holding_marker() -> Iterator[Path]:
    """Hold the marker, with this process's pid in it, for as long as the block runs;
    :class:`LauncherError` if another ``local up`` holds it."""
    path = marker_path()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            raise LauncherError(
                f"a local stack already runs (pid {_pid(path) or '?'}); "
                "stop it with: riverrun local down"
            )
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # not a file its last holder unlinked as we opened it
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def stop_running(timeout: float) -> int:
    """Ask the running ``local up`` to stop (SIGTERM) and wait until it has let the marker
    go, its servers stopped; its pid. :class:`LauncherError` if none runs."""
    path = marker_path()
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise LauncherError("no local stack is running") from None
    try:
        if _try_lock(fd):  # nobody holds it: left by an `up` that was killed
            path.unlink(missing_ok=True)
            raise LauncherError("no local stack is running")
        text = _pid(path)
        if not text.isdigit():
            raise LauncherError(f"the local stack is starting, or {path} is damaged: try again")
        pid = int(text)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise LauncherError(f"local stack (pid {pid}) did not stop in {timeout:.0f} s")
            time.sleep(0.1)
        return pid
    finally:
        os.close(fd)
