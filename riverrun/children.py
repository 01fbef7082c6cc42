"""``riverrun`` commands as child processes: the demo, the benchmarks and the tests run the
learn flow and the trigger service this way, as they run in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

from riverrun.deathsig import guarded
from riverrun.settings import Settings


class Child:
    """``riverrun ARGV...`` in a child process that dies with its parent; stderr kept in a
    file; stopped like Ctrl-C (the commands treat SIGINT as a clean stop)."""

    def __init__(self, settings: Settings, *argv: str) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives with the child)
        self.argv = argv
        self.process = subprocess.Popen(
            guarded([sys.executable, "-m", "riverrun.cli", *argv]),
            env={**os.environ, **settings.to_env()},
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
        )

    def alive(self) -> bool:
        """Whether the command is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """Interrupt the command and return its exit status (killed if it hangs)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stderr(self) -> str:
        """What the command wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self.alive():
            self.stop()
        if exc_type is not None:  # whatever went wrong, the command's own words come with it
            code = self.process.returncode
            print(f"--- riverrun {' '.join(self.argv)} (exit {code}) said:", file=sys.stderr)
            print(self.stderr()[-20_000:], file=sys.stderr)
        self._stderr.close()
