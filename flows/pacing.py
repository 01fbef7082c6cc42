"""Reading the partitions of one process in step by record time.

Read as fast as each partition allows, a backlog of events was all predicted before the
labels on their own topic were read (by models that had learned nothing), and event time
ran ahead of the labels, expiring their waits. With a :class:`Pacer`, a partition hands
on a record only once every other partition with records waiting has handed on those
written before it (by Kafka timestamp), so labels join about when they were written.
Partitions of other processes are not paced against these.
"""

from __future__ import annotations

import math
import time

STARTUP_GRACE = 2.0  # seconds a partition with records waiting may take to return its first


class Pacer:
    """Each partition's frontier: the time (ms) of its next record to hand on.

    >>> pacer = Pacer()
    >>> pacer.note("0-events", 2_000); pacer.note("0-labels", 1_000)
    >>> pacer.limit("0-events"), pacer.limit("0-labels")
    (1000, 2000)
    >>> pacer.note("0-labels", None)  # caught up: it holds nobody back
    >>> pacer.limit("0-events")
    inf
    """

    def __init__(self) -> None:
        self._frontier: dict[str, float] = {}

    def limit(self, part: str) -> float:
        """The latest record time ``part`` may hand on now: the earliest frontier of the
        other partitions (``inf`` if none has records waiting)."""
        return min((t for p, t in self._frontier.items() if p != part), default=math.inf)

    def note(self, part: str, frontier: float | None) -> None:
        """Where ``part`` stands: ``None`` if it has nothing waiting (it holds nobody back),
        ``-inf`` while its first records are on their way."""
        if frontier is None:
            self._frontier.pop(part, None)
        else:
            self._frontier[part] = frontier


class Arrival:
    """Whether a partition's first records are still on their way: it had records waiting
    when it started, and has returned none for less than :data:`STARTUP_GRACE` seconds."""

    def __init__(self, waiting: bool) -> None:
        self._until = time.monotonic() + STARTUP_GRACE if waiting else 0.0

    def expected(self) -> bool:
        """Whether to hold the other partitions back for this one's first records."""
        return self._until > 0.0 and time.monotonic() < self._until

    def arrived(self) -> None:
        """The first records came."""
        self._until = 0.0
