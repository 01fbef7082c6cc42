"""Drift detection: concept drift on each model's per-event error, data drift on features.

Concept drift uses a River detector (``adwin`` by default, ``page_hinkley``, ``ddm``) on
each model's per-event error (0/1 for classifiers, absolute error for regressors), and
only an *increase* of the error counts: a model that gets better as it learns is no alarm.
Data drift compares each numeric feature's distribution over the latest window of events
with a reference window by the population stability index (PSI) over the reference's
deciles, and names the features that moved. No source raises alarms closer together than
``min_gap`` events.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from river import drift

from models.features import GROWING

DETECTORS: dict[str, Callable[[], Any]] = {  # "off" is accepted where detectors are chosen
    "adwin": lambda: drift.ADWIN(),
    "page_hinkley": lambda: drift.PageHinkley(mode="up"),
    "ddm": lambda: drift.binary.DDM(),
}


class DriftConfigError(ValueError):
    """An unknown detector name or an impossible window."""


@dataclass(frozen=True)
class DriftSignal:
    """One alarm: what drifted, which detector saw it, where, and how strongly."""

    kind: str  # "concept" or "data"
    source: str  # the model's alias, or "features"
    detector: str
    position: int  # labelled events (concept) or events (data) seen when it fired
    statistic: float  # the error estimate after the change, or the largest PSI
    features: tuple[str, ...] = ()
    event_id: str = ""
    event_time: float = 0.0
    where: tuple[str, int, int] | None = None  # the event's Kafka topic, partition, offset

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for the drift topic."""
        return {
            "kind": self.kind,
            "source": self.source,
            "detector": self.detector,
            "position": self.position,
            "statistic": self.statistic,
            "features": list(self.features),
            "event_id": self.event_id,
            "event_time": self.event_time,
        }


def make_detector(name: str) -> Any:
    """A fresh River drift detector by name."""
    factory = DETECTORS.get(name)
    if factory is None:
        raise DriftConfigError(
            f"unknown drift detector {name!r}: use one of {', '.join(DETECTORS)}"
        )
    return factory()


class ErrorWatch:
    """A detector on one model's error that fires only when the error goes up.

    ADWIN drops the older part of its window when it sees a change; the change is an
    increase when the part it keeps has a higher mean than the part it dropped (and the
    kept part stays, as in Bifet and Gavaldà's algorithm). Detectors without a window
    (Page-Hinkley, DDM) watch for increases by themselves.

    >>> w = ErrorWatch("adwin")
    >>> fired = [i for i in range(4000) if w.update(0.0 if i < 2000 else 1.0)]
    >>> 2000 <= fired[0] < 2100
    True
    """

    def __init__(self, detector: str) -> None:
        self.name = detector
        self.detector = make_detector(detector)
        self.windowed = hasattr(self.detector, "width")
        self.level = 0.0
        self._total = 0.0  # the sum and size of ADWIN's window, mirrored (cheaper than asking)
        self._width = 0

    def update(self, error: float) -> bool:
        """Feed one error; ``True`` when the error rose significantly."""
        detector = self.detector
        detector.update(error)
        if not self.windowed:
            if detector.drift_detected:
                self.level = error
                return True
            return False
        self._total += error
        self._width += 1
        if not detector.drift_detected:
            return False
        # River's ADWIN empties its whole window on the update after a detection; the
        # algorithm itself keeps the part it did not cut. Emptying it after a *decrease*
        # leaves the detector blind to an increase that follows soon after, so keep it.
        detector._drift_detected = False
        kept, kept_total = detector.width, detector.total
        dropped = self._width - kept
        dropped_total = self._total - kept_total
        self._width, self._total = kept, kept_total
        self.level = kept_total / kept if kept else error
        return dropped > 0 and self.level > dropped_total / dropped


class PSIWatch:
    """Population stability index of every numeric feature, window against reference.

    The first ``window`` events are the reference: their deciles become each feature's
    bins. Every following ``window`` events are compared with it; a feature whose PSI
    exceeds ``threshold`` has moved, and the window that showed it becomes the reference.
    Distributions are estimated on one event in ``every`` (a window of 5,000 events still
    puts over a hundred in each bin), which keeps the check cheap on the hot path.
    Features named in ``ignore`` are not watched: an entity's count moves by construction.
    """

    ignore: frozenset[str] = GROWING  # also for a watch from a snapshot older than the field

    def __init__(
        self,
        window: int = 5000,
        bins: int = 10,
        threshold: float = 0.2,
        every: int = 4,
        ignore: frozenset[str] = GROWING,
    ) -> None:
        if window < bins * 10 * every:
            raise DriftConfigError(
                f"the data-drift window needs at least {bins * 10 * every} events (0 turns "
                "the data-drift check off)"
            )
        self.window = window
        self.bins = bins
        self.threshold = threshold
        self.every = every
        self.ignore = ignore
        self.seen = 0
        self._sample: dict[str, list[float]] = {}
        self._reference: dict[str, list[float]] = {}
        self._bins: list[tuple[str, list[float], list[int]]] = []  # name, edges, counts

    def update(self, x: dict[str, Any]) -> list[tuple[str, float]]:
        """Feed one event's features; the features that moved when a window completes."""
        self.seen += 1
        sampled = self.seen % self.every == 0
        if not self._bins:
            if sampled:
                for name, value in x.items():
                    if name not in self.ignore:
                        self._sample.setdefault(name, []).append(value)
            if self.seen == self.window:
                self._set_reference()
            return []
        if sampled:
            right = bisect.bisect_right
            for name, edges, counts in self._bins:
                value = x.get(name)
                if value is not None:
                    counts[right(edges, value)] += 1
        if self.seen % self.window:
            return []
        moved = []
        for name, _edges, counts in self._bins:
            current = _proportions(counts)
            score = psi(self._reference[name], current)
            if score > self.threshold:
                moved.append((name, score))
                self._reference[name] = current
            counts[:] = [0] * len(counts)
        return moved

    def _set_reference(self) -> None:
        for name, values in self._sample.items():
            ordered = sorted(values)
            edges = sorted({ordered[len(ordered) * k // self.bins] for k in range(1, self.bins)})
            counts = [0] * (len(edges) + 1)
            for value in values:
                counts[bisect.bisect_right(edges, value)] += 1
            self._reference[name] = _proportions(counts)
            self._bins.append((name, edges, [0] * len(counts)))
        self._sample.clear()


def _proportions(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [max(c / total, 1e-4) for c in counts]


def psi(reference: list[float], current: list[float]) -> float:
    """Population stability index of two binned distributions (0: same; > 0.2: moved).

    >>> round(psi([0.5, 0.5], [0.5, 0.5]), 6), psi([0.5, 0.5], [0.9, 0.1]) > 0.2
    (0.0, True)
    """
    return math.fsum((c - r) * math.log(c / r) for r, c in zip(reference, current, strict=True))


@dataclass
class DriftWatch:
    """Every drift detector of a learner, with the minimum gap between alarms per source."""

    detector: str = "adwin"  # or "off"
    min_gap: int = 1000
    data_window: int = 0  # 0: no data-drift detection
    errors: dict[int, ErrorWatch] = field(default_factory=dict)
    data: PSIWatch | None = None
    last_alarm: dict[str, int] = field(default_factory=dict)
    signals: list[DriftSignal] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.detector != "off":
            make_detector(self.detector)  # fail early on a wrong name
        if self.data_window:
            self.data = PSIWatch(self.data_window)

    def error(
        self,
        uid: int,
        alias: str,
        error: float,
        position: int,
        event_id: str,
        time: float,
        where: tuple[str, int, int] | None = None,
    ) -> None:
        """Feed the error of model ``uid`` (known as ``alias``) on one labelled event (read
        ``where`` in Kafka, if its label came later)."""
        if self.detector == "off":
            return
        watch = self.errors.get(uid)
        if watch is None:
            watch = self.errors[uid] = ErrorWatch(self.detector)
        if watch.update(error):
            self._signal(
                DriftSignal(
                    "concept",
                    alias,
                    self.detector,
                    position,
                    watch.level,
                    (),
                    event_id,
                    time,
                    where,
                )
            )

    def features(self, x: dict[str, Any], position: int, event_id: str, time: float) -> None:
        """Feed one event's features."""
        if self.data is None:
            return
        moved = self.data.update(x)
        if moved:
            names = tuple(name for name, _ in sorted(moved, key=lambda m: -m[1]))
            score = max(score for _, score in moved)
            self._signal(
                DriftSignal("data", "features", "psi", position, score, names, event_id, time)
            )

    def forget(self, uid: int) -> None:
        """Stop watching a model that left."""
        self.errors.pop(uid, None)

    def _signal(self, signal: DriftSignal) -> None:
        last = self.last_alarm.get(signal.source)
        if last is not None and signal.position - last < self.min_gap:
            return
        self.last_alarm[signal.source] = signal.position
        self.signals.append(signal)
