"""Stderr hushed while a learn flow goes down: Bytewax turns a Python error raised in a step
(or a signal's ``KeyboardInterrupt``) into a Rust panic, which Rust prints on stderr, with a
whole backtrace under ``RUST_BACKTRACE``, before Python gets the error back and reports it
itself. :data:`STDERR` is armed by the runner around a flow; unarmed (``python -m
bytewax.run``), nothing is hushed, since nothing would give stderr back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


class Hush:
    """Points file descriptor 2 at /dev/null until :meth:`end` puts it back."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self.armed = False
        self.cause: BaseException | None = None  # the step's own error, once one raised

    def start(self) -> None:
        """Hush stderr (Python's and Rust's: both write to descriptor 2), if armed."""
        if not self.armed or self._saved is not None:
            return
        sys.stderr.flush()
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def end(self) -> None:
        """Give stderr back, if it was hushed."""
        if self._saved is not None:
            sys.stderr.flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None

    @contextlib.contextmanager
    def armed_for(self) -> Iterator[None]:
        """Allow :meth:`start` within the block, and give stderr back when it ends."""
        self.armed, self.cause = True, None
        try:
            yield
        finally:
            self.armed = False
            self.end()


STDERR = Hush()


@contextlib.contextmanager
def panics_hushed() -> Iterator[None]:
    """Around a step's own code: should it raise, stderr is hushed until the flow is down,
    so that the error Python reports comes alone, without Rust's panic before it. The error
    is kept as :attr:`Hush.cause`: in a cluster, Bytewax hands back a panic instead."""
    try:
        yield
    except BaseException as exc:
        STDERR.cause = exc
        STDERR.start()
        raise
