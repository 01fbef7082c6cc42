"""The server's threads that calls may hold while they wait on something other than it.

An open ``PredictStream`` holds a thread until its client closes it, and a ``Feedback``
call holds one until Kafka acknowledges the label. Left alone, a few idle streams (or a
Kafka outage) would take every thread, and ``Predict`` and health checks would queue
until their deadlines. :class:`WaitingCalls` lets at most ``limit`` calls of each kind
hold a thread at once, so that neither kind locks the other out; the others are refused
at once, saying why.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

STREAM = "open PredictStreams"
LABEL = "labels waiting on Kafka"


class Busy(Exception):
    """Every place for a waiting call of its kind is taken; the message says so."""


class WaitingCalls:
    """At most ``limit`` calls of each kind (:data:`STREAM`, :data:`LABEL`) at once.

    >>> waits = WaitingCalls(1)
    >>> with waits.holding(STREAM):
    ...     with waits.holding(LABEL):  # a place of its own
    ...         try:
    ...             with waits.holding(STREAM):
    ...                 pass
    ...         except Busy as busy:
    ...             print(str(busy)[:63])
    all 1 of this server's places for open PredictStreams are taken
    >>> with waits.holding(STREAM):  # the first stream's place is free again
    ...     pass
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def holding(self, kind: str) -> Iterator[None]:
        """Hold one place of ``kind`` for the block; :class:`Busy` at once if none is free."""
        with self._lock:
            if self._held[kind] >= self.limit:
                raise Busy(
                    f"all {self.limit} of this server's places for {kind} are taken: try again "
                    "later, or give the server more threads (a quarter of "
                    "RIVERRUN_SERVE_WORKERS may hold open streams, a quarter labels)"
                )
            self._held[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[kind] -= 1
