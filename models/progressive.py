"""Offline progressive validation: several models side by side, test-then-train, on one
recorded stream of events and labels.

Each model runs in an :class:`~models.learner.OnlineLearner` of its own, the class the learn
flow runs, with the same label join, TTL and :class:`~models.evaluation.Prequential`
metrics, so the numbers are the ones the flow reports for that model on the same events in
the same order. No model is ever promoted or swapped: side by side means side by side.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.evaluation import Prequential
from models.learner import ModelError, OnlineLearner, Slot
from models.schema import Event, InvalidInput, LabelMessage, Record

SERIES_POINTS = 500  # about this many points of each model's rolling metrics over a run


def hold_labels(records: Iterable[Record], delay: int) -> Iterator[Record]:
    """Hold each inline label back ``delay`` events, in ``river.stream.simulate_qa`` order.

    The label of event ``i`` comes as a label message just before event ``i + delay`` (or at
    the end), exactly as ``riverrun produce --delay-labels`` writes it. Label messages
    already in the stream pass through where they are.

    >>> evs = [Event(f"e{i}", float(i), "", {}, label=i % 2 == 0) for i in range(3)]
    >>> [(type(r).__name__[0], r.id) for r in hold_labels(evs, 1)]
    [('E', 'e0'), ('L', 'e0'), ('E', 'e1'), ('L', 'e1'), ('E', 'e2'), ('L', 'e2')]
    """
    waiting: deque[tuple[int, LabelMessage]] = deque()
    index = 0
    for rec in records:
        if type(rec) is Event:
            while waiting and waiting[0][0] <= index:
                yield waiting.popleft()[1]
            if rec.label is not None:
                waiting.append((index + delay, LabelMessage(rec.id, rec.label, rec.time)))
                rec = dataclasses.replace(rec, label=None)
            index += 1
        yield rec
    for _, label in waiting:
        yield label


class Rejects:
    """Records that cannot be learned from (the flow would dead-letter them): counted by
    reason, with the first message of each reason to show."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, exc: InvalidInput) -> None:
        """Count one rejected record."""
        self.counts[exc.reason] += 1
        self.examples.setdefault(exc.reason, str(exc))


@dataclass
class ModelRun:
    """One model under evaluation: its learner, time spent in it, and its rolling metrics
    sampled over the run."""

    name: str
    learner: OnlineLearner
    seconds: float = 0.0
    series: dict[str, list[float]] = field(default_factory=dict)

    @property
    def slot(self) -> Slot:
        """The learner's only model."""
        return self.learner.champion

    def sample(self, time_: float) -> None:
        """Append the current rolling metrics (and where in the stream) to the series."""
        series = self.series
        series.setdefault("labelled", []).append(float(self.learner.counts.labelled))
        series.setdefault("time", []).append(time_)
        for name, value in self.slot.metrics.report().items():
            if name.startswith("rolling_"):
                series.setdefault(name, []).append(value)

    def report(self) -> dict[str, Any]:
        """Name, spec, counts, metrics and speed, as plain data."""
        slot = self.slot
        events = self.learner.counts.events
        return {
            "name": self.name,
            "spec": slot.spec,
            "predicted": slot.predicted,
            "learned": slot.learned,
            "metrics": slot.metrics.report(),
            "seconds": self.seconds,
            "events_per_second": events / self.seconds if self.seconds > 0 else 0.0,
        }


class Evaluation:
    """Feeds one stream of records to every model, test-then-train, and keeps score.

    >>> from river import linear_model
    >>> ev = Evaluation("regression", [("lin", linear_model.LinearRegression())], window=10)
    >>> for i in range(3):
    ...     ev.feed(Event(str(i), float(i), "", {"x": 1.0}, label=2.0))
    >>> ev.finish()
    >>> ev.report()["labelled"], ev.report()["models"][0]["learned"]
    (3, 3)
    """

    def __init__(
        self,
        task: str,
        models: list[tuple[str, Any]],
        *,
        window: int = 1000,
        label_ttl: float = 3600.0,
        max_pending: int = 200_000,
        expire_every: int = 1000,
        sample_every: int = 100,
        rejects: Rejects | None = None,
    ) -> None:
        self.task = task
        self.runs = [
            ModelRun(
                name,
                OnlineLearner(
                    task,
                    [Slot(spec, model, Prequential(task, window))],
                    label_ttl=label_ttl,
                    max_pending=max_pending,
                    window=window,
                ),
            )
            for name, (spec, model) in zip(_unique_names(models), models, strict=True)
        ]
        self.rejects = rejects or Rejects()
        self.expire_every = expire_every
        self.sample_every = sample_every
        self._fed = 0
        self._next_sample = sample_every

    @property
    def lead(self) -> OnlineLearner:
        """The learner that took the most events, whose counts are the stream's: every
        learner sees the same records, but a model skips the events its own code failed to
        predict, whichever ``--model`` it is."""
        return max((run.learner for run in self.runs), key=lambda lr: lr.counts.events)

    def feed(self, record: Record) -> None:
        """Give one event or label to every model, timing each."""
        clock = time.perf_counter
        if type(record) is Event:
            rejected = self._event(record)
            if rejected is not None:  # the models that took it still expire and are sampled
                self.rejects.add(rejected)
        else:
            refused = None
            for run in self.runs:
                began = clock()
                try:
                    run.learner.on_label(record)  # type: ignore[arg-type]
                except InvalidInput as exc:
                    refused = refused or exc
                run.seconds += clock() - began
            if refused is not None:
                self.rejects.add(refused)
        self._fed += 1
        if self._fed % self.expire_every == 0:
            for run in self.runs:
                run.learner.expire()
        lead = self.lead
        if lead.counts.labelled >= self._next_sample:
            self._next_sample = lead.counts.labelled + self.sample_every
            for run in self.runs:
                run.sample(lead.watermark)

    def _event(self, event: Event) -> InvalidInput | None:
        """Give one event to every model, timing each; returns why it was refused, if it was.

        A model whose own code fails to predict it skips it, as its learn flow would
        dead-letter it (``model_error``); the other models go on with it.
        """
        clock = time.perf_counter
        refused = None
        for run in self.runs:
            began = clock()
            try:
                run.learner.on_event(event)
            except InvalidInput as exc:
                refused = refused or exc
            except ModelError as exc:
                refused = refused or InvalidInput("model_error", str(exc))
            run.seconds += clock() - began
        return refused

    def finish(self) -> None:
        """The stream ended: labels still waiting for their event are counted as unknown."""
        for run in self.runs:
            run.learner.drain_orphans()
            if not run.series or run.series["labelled"][-1] != run.learner.counts.labelled:
                run.sample(self.lead.watermark)

    def report(self) -> dict[str, Any]:
        """Counts, every model's report and the rolling metrics over the run."""
        lead = self.lead
        counts = lead.counts
        return {
            "task": self.task,
            "events": counts.events,
            "labelled": counts.labelled,
            "pending": len(lead.pending),
            "expired": counts.expired,
            "unknown_labels": counts.unknown_labels,
            "rejected": dict(self.rejects.counts),
            "rejected_examples": dict(self.rejects.examples),
            "models": [run.report() for run in self.runs],
            "series": {run.name: run.series for run in self.runs},
        }


def sample_every(expected_labels: int | None) -> int:
    """How often to sample rolling metrics for about :data:`SERIES_POINTS` points."""
    return max((expected_labels or 100_000) // SERIES_POINTS, 1)


def _unique_names(models: list[tuple[str, Any]]) -> list[str]:
    """Each model's spec, numbered when a spec comes twice (``logreg``, ``logreg#2``)."""
    names: list[str] = []
    for spec, _ in models:
        name = spec
        while name in names:
            name = f"{spec}#{len(names) + 1}"
        names.append(name)
    return names
