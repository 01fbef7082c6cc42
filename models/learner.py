"""Online learning, test-then-train, of a champion and its challengers on one stream.

:class:`OnlineLearner` holds no I/O: the learn flow feeds it events and labels in arrival
order and ships what it returns. Every labelled event is predicted by every model before
any model learns it, and a delayed label is joined by event id to the features that were
seen at prediction time, so the champion's metric equals River's
``evaluate.progressive_val_score`` on the same stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.evaluation import Prequential
from models.schema import Event, LabelMessage, check_schema


@dataclass(eq=False)
class Slot:
    """One model of the group, with its role, registry version and prequential metrics."""

    spec: str
    model: Any
    metrics: Prequential
    role: str = "champion"
    version: int = 0
    uid: int = 0
    predicted: int = 0
    learned: int = 0

    def report(self) -> dict[str, Any]:
        """Role, version, spec, counts and metrics, as plain data."""
        return {
            "role": self.role,
            "version": self.version,
            "spec": self.spec,
            "predicted": self.predicted,
            "learned": self.learned,
            "metrics": self.metrics.report(),
        }


@dataclass(slots=True)
class Pending:
    """A prediction waiting for its label: when, on which features, and what each model said."""

    time: float
    features: dict[str, float]
    predictions: dict[int, Any]


@dataclass
class Counts:
    """What the learner has seen, for status reports and metrics."""

    events: int = 0
    labelled: int = 0
    expired: int = 0
    unknown_labels: int = 0


@dataclass
class OnlineLearner:
    """Champion and challengers learning from one stream, test-then-train.

    >>> from river import linear_model
    >>> from models.schema import Event, LabelMessage
    >>> lr = OnlineLearner("regression", [Slot("lin", linear_model.LinearRegression(),
    ...                                        Prequential("regression", 10))])
    >>> preds = lr.on_event(Event("e1", 0.0, "a", {"x": 1.0}))   # predicted, label pending
    >>> lr.on_label(LabelMessage("e1", 2.0, 0.0))                 # joined, then learned
    >>> lr.counts.labelled, lr.champion.learned
    (1, 1)
    """

    task: str
    slots: list[Slot]
    label_ttl: float = 3600.0
    max_pending: int = 200_000
    schema: frozenset[str] | None = None
    pending: dict[str, Pending] = field(default_factory=dict)
    orphans: dict[str, tuple[LabelMessage, float]] = field(default_factory=dict)
    watermark: float = -math.inf
    counts: Counts = field(default_factory=Counts)
    positions: dict[str, int] = field(default_factory=dict)
    last_uid: int = 0

    def __post_init__(self) -> None:
        for slot in self.slots:
            self._enrol(slot)

    def _enrol(self, slot: Slot) -> None:
        self.last_uid += 1
        slot.uid = self.last_uid

    def replace_champion(self, slot: Slot) -> None:
        """Serve and learn with ``slot`` from now on instead of the current champion."""
        self._enrol(slot)
        slot.role = "champion"
        self.slots[0] = slot

    @property
    def champion(self) -> Slot:
        """The model whose predictions are served."""
        return self.slots[0]

    def predict(self, event: Event) -> dict[int, Any]:
        """Every model's prediction for ``event`` (probabilities for classifiers), by slot uid.

        Raises :class:`~models.schema.InvalidInput` if a feature the models learned is missing.
        """
        x = event.features
        if self.schema is None:
            self.schema = frozenset(x)
        else:
            check_schema(x, self.schema)
        classify = self.task != "regression"
        out = {}
        for slot in self.slots:
            model = slot.model
            out[slot.uid] = model.predict_proba_one(x) if classify else model.predict_one(x)
            slot.predicted += 1
        return out

    def on_event(self, event: Event) -> dict[int, Any]:
        """Predict an event, then learn it at once if its label is known (inline or early)."""
        predictions = self.predict(event)
        self.counts.events += 1
        if event.time > self.watermark:
            self.watermark = event.time
        if event.label is not None:
            self._learn(event.features, event.label, predictions)
            return predictions
        early = self.orphans.pop(event.id, None)
        if early is not None:
            self._learn(event.features, early[0].label, predictions)
        else:
            self.pending[event.id] = Pending(event.time, event.features, predictions)
        return predictions

    def on_label(self, label: LabelMessage) -> LabelMessage | None:
        """Join a label to its pending prediction and learn; keep it a while if it came early.

        Returns the label back if it must be rejected: a second early label for one event.
        """
        pending = self.pending.pop(label.id, None)
        if pending is not None:
            self._learn(pending.features, label.label, pending.predictions)
            return None
        if label.id in self.orphans:
            self.counts.unknown_labels += 1
            return label
        # An early label waits label_ttl from its own time (or from now, if that is later).
        self.orphans[label.id] = (label, max(label.time, self.watermark))
        return None

    def _learn(self, x: dict[str, float], y: Any, predictions: dict[int, Any]) -> None:
        self.counts.labelled += 1
        for slot in self.slots:
            y_pred = predictions.get(slot.uid)
            if y_pred is not None and y_pred != {}:
                slot.metrics.update(y, y_pred)
            slot.model.learn_one(x, y)
            slot.learned += 1

    def expire(self) -> list[LabelMessage]:
        """Drop predictions older than the TTL (counted) and return labels nobody claimed.

        Time is event time (the newest event seen), so a replay expires exactly the same
        entries as the original run. Both maps are also capped at ``max_pending``.
        """
        limit = self.watermark - self.label_ttl
        pending = self.pending
        while pending:
            oldest = next(iter(pending))
            if pending[oldest].time >= limit and len(pending) <= self.max_pending:
                break
            del pending[oldest]
            self.counts.expired += 1
        unclaimed = []
        orphans = self.orphans
        while orphans:
            oldest = next(iter(orphans))
            label, seen_at = orphans[oldest]
            if seen_at >= limit and len(orphans) <= self.max_pending:
                break
            del orphans[oldest]
            unclaimed.append(label)
        self.counts.unknown_labels += len(unclaimed)
        return unclaimed

    def drain_orphans(self) -> list[LabelMessage]:
        """Return (and forget) every label still waiting for its event: the input has ended."""
        unclaimed = [label for label, _ in self.orphans.values()]
        self.orphans.clear()
        self.counts.unknown_labels += len(unclaimed)
        return unclaimed

    def report(self) -> dict[str, Any]:
        """Counts and every model's report, keyed by ``spec@vVERSION``-style names."""
        return {
            "events": self.counts.events,
            "labelled": self.counts.labelled,
            "pending": len(self.pending),
            "expired": self.counts.expired,
            "unknown_labels": self.counts.unknown_labels,
            "models": [slot.report() for slot in self.slots],
        }
