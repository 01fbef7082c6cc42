"""The server's threads that calls may hold while they wait on something other than it.

An open ``PredictStream`` holds a thread until its client closes it, and a ``Feedback``
call holds one until Kafka acknowledges the label. Left alone, a few idle streams (or a
Kafka outage) would take every thread, and ``Predict`` and health checks would queue
until their deadlines. :class:`WaitingCalls` lets at most ``limit`` such calls hold a
thread at once; the others are refused at once, saying why.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

STREAM = "open PredictStreams"
LABEL = "labels waiting on Kafka"


class Busy(Exception):
    """Every place for a waiting call is taken; the message says by what."""


class WaitingCalls:
    """At most ``limit`` calls of the kinds :data:`STREAM` and :data:`LABEL` at once.

    >>> waits = WaitingCalls(1)
    >>> with waits.holding(STREAM):
    ...     try:
    ...         with waits.holding(LABEL):
    ...             pass
    ...     except Busy as busy:
    ...         print(str(busy)[:80])
    all 1 of this server's threads for calls that wait are taken (1 open PredictStre
    >>> with waits.holding(LABEL):  # the stream's place is free again
    ...     pass
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def holding(self, kind: str) -> Iterator[None]:
        """Hold one place for the block; :class:`Busy` at once if none is free."""
        with self._lock:
            if self._held.total() >= self.limit:
                raise Busy(
                    f"all {self.limit} of this server's threads for calls that wait are taken "
                    f"({self._held[STREAM]} {STREAM}, {self._held[LABEL]} {LABEL}): try again "
                    "later, or give the server more threads (RIVERRUN_SERVE_WORKERS: half of "
                    "them may wait)"
                )
            self._held[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[kind] -= 1
