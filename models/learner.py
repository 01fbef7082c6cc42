"""Online learning, test-then-train, of a champion and its challengers on one stream.

:class:`OnlineLearner` holds no I/O: the learn flow feeds it events and labels in arrival
order and ships what it returns. Every labelled event is predicted by every model before
any model learns it, and a delayed label is joined by event id to the features that were
seen at prediction time, so the champion's metric equals River's
``evaluate.progressive_val_score`` on the same stream. Challengers predict and learn the
same events in shadow; their paired losses feed the promotion :class:`Contest`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from models.ab import CHALLENGER, CHAMPION, serving_arm
from models.contest import Contest
from models.drift import DriftWatch
from models.evaluation import Prequential
from models.kernels import learn_and_scale, learn_logreg, plain_logreg, proba_logreg
from models.promotion import Decision, PromotionPolicy
from models.schema import (
    FUTURE_TOLERANCE,
    Event,
    InvalidInput,
    LabelMessage,
    check_schema,
    too_far_ahead,
)
from models.sharing import group

TIMING_EVERY = 32  # sample each model's predict and learn time on one event in this many


@dataclass(eq=False)
class Slot:
    """One model of the group: its registry alias and version, and prequential metrics."""

    spec: str
    model: Any
    metrics: Prequential
    alias: str = CHAMPION
    version: int = 0
    uid: int = 0
    predicted: int = 0
    learned: int = 0

    @property
    def role(self) -> str:
        """``champion`` or ``challenger``."""
        return CHAMPION if self.alias == CHAMPION else CHALLENGER

    def report(self) -> dict[str, Any]:
        """Alias, role, version, spec, counts and metrics, as plain data."""
        return {
            "alias": self.alias,
            "role": self.role,
            "version": self.version,
            "spec": self.spec,
            "predicted": self.predicted,
            "learned": self.learned,
            "metrics": self.metrics.report(),
        }


@dataclass(slots=True)
class Pending:
    """A prediction waiting for its label: when, on which features, what each model said,
    which A/B arm served it, and where the event was read (its Kafka topic, partition and
    offset, if it came from Kafka): a drift its label reveals is placed at the event."""

    time: float
    entity: str
    features: dict[str, float]
    predictions: dict[int, Any]
    served: int
    where: tuple[str, int, int] | None = None

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Restore from a snapshot; one taken before ``where`` existed lacks it."""
        self.where = None
        for name, value in state[1].items():
            setattr(self, name, value)


@dataclass
class Counts:
    """What the learner has seen, for status reports and metrics."""

    events: int = 0
    labelled: int = 0
    expired: int = 0
    unknown_labels: int = 0
    model_errors: int = 0


class ModelError(RuntimeError):
    """The champion's own code failed on an event: the event cannot be served."""


@dataclass(frozen=True)
class Broken:
    """A challenger whose code failed, taken out of the contest: what failed, and how."""

    alias: str
    spec: str
    version: int
    error: str


@dataclass(slots=True)
class LabelledRow:
    """One labelled example as the models saw it, for the offline store: the features at
    prediction time, the label, and each model's prediction with its alias and version."""

    id: str
    time: float
    entity: str
    features: dict[str, float]
    label: Any
    predictions: list[tuple[str, str, int, Any]]


@dataclass
class Promotion:
    """A swap the learner made: when, from which model to which, and the evidence."""

    at_event: int
    from_spec: str
    from_version: int
    to_spec: str
    to_version: int
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The report's form: ``{at_event, from, to, evidence}``."""
        return {
            "at_event": self.at_event,
            "from": f"{self.from_spec}@v{self.from_version}",
            "to": f"{self.to_spec}@v{self.to_version}",
            "evidence": self.evidence,
        }


@dataclass
class OnlineLearner:
    """Champion and challengers learning from one stream, test-then-train.

    >>> from river import linear_model
    >>> from models.schema import Event, LabelMessage
    >>> lr = OnlineLearner("regression", [Slot("lin", linear_model.LinearRegression(),
    ...                                        Prequential("regression", 10))])
    >>> preds, served = lr.on_event(Event("e1", 0.0, "a", {"x": 1.0}))  # label pending
    >>> lr.on_label(LabelMessage("e1", 2.0, 0.0))                        # joined, learned
    >>> lr.counts.labelled, lr.champion.learned
    (1, 1)
    """

    task: str
    slots: list[Slot]
    label_ttl: float = 3600.0
    max_pending: int = 200_000
    window: int = 1000
    policy: PromotionPolicy = field(default_factory=PromotionPolicy)
    ab_fraction: float = 0.0
    drift: DriftWatch | None = None
    keep_rows: bool = False
    schema: frozenset[str] | None = None
    label_type: type | None = None  # of the first multiclass label learned: every other's
    pending: dict[str, Pending] = field(default_factory=dict)
    orphans: dict[str, tuple[LabelMessage, float]] = field(default_factory=dict)
    unclaimed: list[LabelMessage] = field(default_factory=list, repr=False)  # for expire()
    watermark: float = -math.inf
    counts: Counts = field(default_factory=Counts)
    positions: dict[str, int] = field(default_factory=dict)
    arms: dict[str, Prequential] = field(default_factory=dict)
    promotions: list[Promotion] = field(default_factory=list)
    timings: list[tuple[str, str, float]] = field(default_factory=list, repr=False)
    rows: list[LabelledRow] = field(default_factory=list, repr=False)
    broken: list[Broken] = field(default_factory=list, repr=False)
    contest: Contest = field(init=False)
    last_uid: int = 0
    # StandardScaler pipelines by shared scaler (models/sharing.py): (scaler, [(uid, final)]).
    _groups: list[tuple[Any, list[tuple[int, Any]]]] = field(default_factory=list, repr=False)
    _alone: list[Slot] = field(default_factory=list, repr=False)
    # Uids of the finals that models/kernels.py predicts and learns instead of River's calls.
    _fast: frozenset[int] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        self.contest = Contest(self.policy)
        self.arms = {arm: Prequential(self.task, self.window) for arm in (CHAMPION, CHALLENGER)}
        for slot in self.slots:
            self._enrol(slot)
        self._regroup()

    def _enrol(self, slot: Slot) -> None:
        self.last_uid += 1
        slot.uid = self.last_uid
        self.contest.enter(slot.uid)

    def _regroup(self) -> None:
        """Share one scaler among models whose scalers are in the same state; note which
        final steps the kernels run."""
        self._groups = group((s.uid, s.model) for s in self.slots)
        finals = [member for _, members in self._groups for member in members]
        grouped = {uid for uid, _ in finals}
        self._alone = [s for s in self.slots if s.uid not in grouped]
        classify = self.task != "regression"
        self._fast = frozenset(uid for uid, final in finals if classify and plain_logreg(final))

    @property
    def champion(self) -> Slot:
        """The model whose predictions are served (outside the A/B arm)."""
        return self.slots[0]

    def slot(self, alias: str) -> Slot | None:
        """The model under ``alias``, if any."""
        return next((s for s in self.slots if s.alias == alias), None)

    # -- membership -------------------------------------------------------------------------

    def replace_champion(self, slot: Slot) -> None:
        """Serve and learn with ``slot`` from now on instead of the current champion."""
        self.contest.leave(self.champion.uid)
        slot.alias = CHAMPION
        self._enrol(slot)
        self.slots[0] = slot
        self._regroup()
        self.contest.swapped(self.counts.labelled)  # a new baseline: evidence and cool-down

    def put_challenger(self, slot: Slot) -> None:
        """Shadow ``slot`` under its alias from now on, replacing one already there."""
        self.remove_challenger(slot.alias)
        self._enrol(slot)
        self.slots.append(slot)
        self._regroup()

    def remove_challenger(self, alias: str) -> Slot | None:
        """Stop shadowing the challenger under ``alias``; returns it if there was one."""
        old = self.slot(alias)
        if old is None or old is self.champion:
            return None
        self.slots.remove(old)
        self.contest.leave(old.uid)
        if self.drift is not None:
            self.drift.forget(old.uid)
        self._regroup()
        return old

    # -- test-then-train ----------------------------------------------------------------------

    def predict(self, event: Event) -> dict[int, Any]:
        """Every model's prediction for ``event`` (probabilities for classifiers), by slot uid.

        Raises :class:`~models.schema.InvalidInput` if a feature of the first event the models
        learned is missing.
        """
        x = event.features
        if self.schema is not None:
            check_schema(x, self.schema)
        classify = self.task != "regression"
        timed = self.counts.events % TIMING_EVERY == 0
        gates, fast = self.contest.gates, self._fast
        out: dict[int, Any] = {}
        seconds: dict[int, float] = {}
        failed: dict[int, Exception] = {}
        clock = time.perf_counter
        for scaler, members in self._groups:
            began = clock() if timed else 0.0
            xt = scaler.transform_one(x)
            shared = clock() - began if timed else 0.0
            for uid, final in members:
                began = clock() if timed else 0.0
                try:
                    if uid in fast:
                        out[uid] = proba_logreg(final, xt)
                    else:
                        out[uid] = (
                            final.predict_proba_one(xt) if classify else final.predict_one(xt)
                        )
                except Exception as exc:  # a model's own code must not stop the stream
                    failed[uid] = exc
                if timed:
                    seconds[uid] = shared + clock() - began
        for slot in self._alone:
            model = slot.model
            began = clock() if timed else 0.0
            try:
                out[slot.uid] = model.predict_proba_one(x) if classify else model.predict_one(x)
            except Exception as exc:
                failed[slot.uid] = exc
            if timed:
                seconds[slot.uid] = clock() - began
        if failed:
            self._quarantine(failed, "predict")
        for slot in self.slots:
            gates[slot.uid].output(out[slot.uid], classify)
            slot.predicted += 1
            if timed:
                gates[slot.uid].timing(seconds[slot.uid])
                self.timings.append(("predict", slot.role, seconds[slot.uid]))
        return out

    def serving(self, entity: str) -> Slot:
        """The model that serves ``entity``: the A/B arm's challenger, or the champion."""
        if self.ab_fraction > 0.0 and serving_arm(entity, self.ab_fraction) == CHALLENGER:
            challenger = self.slot(CHALLENGER)
            if challenger is not None:
                return challenger
        return self.champion

    def on_event(self, event: Event) -> tuple[dict[int, Any], Slot]:
        """Predict an event with every model, then learn it at once if its label is known
        (inline or early); returns the predictions and the model that serves it.

        Raises :class:`~models.schema.InvalidInput` for an event whose id already waits for
        its label (its label could join only one of the two), for one dated more than
        :data:`FUTURE_TOLERANCE` ahead of this machine's clock, and for an inline label of
        another type than the stream's first (:meth:`check_label_type`).
        """
        if event.label is not None and self.task == "multiclass":
            self.check_label_type(event.label)
        if event.time > self.watermark and event.time > time.time() + FUTURE_TOLERANCE:
            raise too_far_ahead(event.time)  # it would expire every prediction waiting
        waiting = self.pending.get(event.id)
        if waiting is not None:
            if waiting.time >= max(self.watermark, event.time) - self.label_ttl:
                raise InvalidInput(
                    "duplicate_event", f"event {event.id!r} already waits for its label", "id"
                )
            del self.pending[event.id]  # expired, though expire() has not dropped it yet
            self.counts.expired += 1
        predictions = self.predict(event)
        served = self.serving(event.entity)
        self.counts.events += 1
        if self.drift is not None:
            self.drift.features(event.features, self.counts.events, event.id, event.time)
        if event.time > self.watermark:
            self.watermark = event.time
        label = event.label
        if label is None:
            early = self._early_label(event.id)
            if early is None:
                self._wait(event, predictions, served)
                return predictions, served
            label = early.label
        self._learn(
            event.id,
            Pending(event.time, event.entity, event.features, predictions, served.uid),
            label,
        )
        return predictions, served

    def _wait(self, event: Event, predictions: dict[int, Any], served: Slot) -> None:
        """Keep ``event``'s predictions until its label comes; past ``max_pending`` waiting,
        the oldest expires now (so the cap does not depend on where batches end)."""
        pending = self.pending
        if len(pending) >= self.max_pending:
            del pending[next(iter(pending))]
            self.counts.expired += 1
        origin = event.origin
        where = None if origin is None else (origin.topic, origin.partition, origin.offset)
        pending[event.id] = Pending(
            event.time, event.entity, event.features, predictions, served.uid, where
        )

    def _early_label(self, event_id: str) -> LabelMessage | None:
        """The label that came before its event ``event_id``, taken from those waiting; one
        past the TTL is unclaimed instead, whether or not :meth:`expire` ran, as is one of
        another type than the labels learned since it came (multiclass)."""
        early = self.orphans.pop(event_id, None)
        if early is None:
            return None
        label = early[0]
        stale = early[1] < self.watermark - self.label_ttl
        if stale or (self.label_type is not None and type(label.label) is not self.label_type):
            self._unclaim(label)
            return None
        return label

    def _unclaim(self, label: LabelMessage) -> None:
        """``label`` found no event: counted now, returned by the next :meth:`expire`."""
        self.unclaimed.append(label)
        self.counts.unknown_labels += 1

    def check_label_type(self, label: Any) -> None:
        """Raise :class:`~models.schema.InvalidInput` for a multiclass label whose type is
        not that of the first label learned: River's trees and forests sort their classes, so
        one ``7`` among ``"cat"`` and ``"dog"`` would fail their every later prediction."""
        if self.label_type is not None and type(label) is not self.label_type:
            raise InvalidInput(
                "bad_label",
                f"a label of this stream must be a {self.label_type.__name__}, as the first "
                f"one learned was, got {type(label).__name__} {label!r}",
                "label",
            )

    def on_label(self, label: LabelMessage) -> None:
        """Join a label to its pending prediction and learn; keep it a while if it came early.

        A prediction older than ``label_ttl`` (of event time) has expired, whether or not
        :meth:`expire` has dropped it yet: its label is treated as one whose event never came.
        Raises :class:`~models.schema.InvalidInput` for a second early label for one event
        (``duplicate_label``), for an early label dated more than :data:`FUTURE_TOLERANCE`
        ahead of this machine's clock, and for a label of another type than the stream's
        first (:meth:`check_label_type`).
        """
        if self.task == "multiclass":
            self.check_label_type(label.label)
        limit = self.watermark - self.label_ttl
        pending = self.pending.pop(label.id, None)
        if pending is not None:
            if pending.time >= limit:
                self._learn(label.id, pending, label.label)
                return
            self.counts.expired += 1
        # An early label waits label_ttl from its own time (or from now, if that is later);
        # one dated far ahead would wait for ever, and hold up expire() behind it.
        if label.time > self.watermark and label.time > time.time() + FUTURE_TOLERANCE:
            raise too_far_ahead(label.time)
        orphans = self.orphans
        early = orphans.get(label.id)
        if early is not None:
            if early[1] >= limit:  # dead-lettered, no unknown label
                raise InvalidInput(
                    "duplicate_label", f"a label for event {label.id!r} already waits", "id"
                )
            del orphans[label.id]  # expired: the new label waits in its place
            self._unclaim(early[0])
        if len(orphans) >= self.max_pending:  # the oldest gives way, whenever expire() runs
            self._unclaim(orphans.pop(next(iter(orphans)))[0])
        orphans[label.id] = (label, max(label.time, self.watermark))

    def _learn(self, event_id: str, seen: Pending, y: Any) -> None:
        """Score every model's earlier prediction against ``y``, then let each learn."""
        self.counts.labelled += 1
        x, predictions = seen.features, seen.predictions
        if self.schema is None:  # the features every later event must have
            self.schema = frozenset(x)
        if self.label_type is None and self.task == "multiclass":  # every later label's type
            self.label_type = type(y)
        losses = {}
        drift = self.drift
        for slot in self.slots:
            y_pred = predictions.get(slot.uid)
            if y_pred is not None and y_pred != {}:
                losses[slot.uid] = slot.metrics.update(y, y_pred)
                if drift is not None:
                    error = slot.metrics.last_error
                    drift.error(
                        slot.uid,
                        slot.alias,
                        error,
                        self.counts.labelled,
                        event_id,
                        seen.time,
                        seen.where,
                    )
            slot.learned += 1
        self._fit(x, y)
        if self.ab_fraction > 0.0:  # otherwise the champion's own metrics are its arm's
            served = next((s for s in self.slots if s.uid == seen.served), self.champion)
            served_pred = predictions.get(served.uid)
            if served_pred is not None and served_pred != {}:
                self.arms[served.role].update(y, served_pred)
        if len(self.slots) > 1:
            self.contest.record(self.champion.uid, losses, y)
        if self.keep_rows:
            self.rows.append(
                LabelledRow(
                    event_id,
                    seen.time,
                    seen.entity,
                    x,
                    y,
                    [
                        (s.alias, s.spec, s.version, predictions[s.uid])
                        for s in self.slots
                        if s.uid in predictions
                    ],
                )
            )

    def _fit(self, x: dict[str, float], y: Any) -> None:
        """Every model learns ``(x, y)``; a shared scaler learns and transforms once."""
        timed = self.counts.labelled % TIMING_EVERY == 0
        fast = self._fast
        clock = time.perf_counter
        took: dict[int, float] = {}
        failed: dict[int, Exception] = {}
        for scaler, members in self._groups:
            began = clock() if timed else 0.0
            xt = learn_and_scale(scaler, x)
            shared = clock() - began if timed else 0.0
            for uid, final in members:
                began = clock() if timed else 0.0
                try:
                    if uid in fast:
                        learn_logreg(final, xt, y)
                    else:
                        final.learn_one(xt, y)
                except Exception as exc:  # a model's own code must not stop the stream
                    failed[uid] = exc
                if timed:
                    took[uid] = shared + clock() - began
        for slot in self._alone:
            began = clock() if timed else 0.0
            try:
                slot.model.learn_one(x, y)
            except Exception as exc:
                failed[slot.uid] = exc
            if timed:
                took[slot.uid] = clock() - began
        if timed:
            for slot in self.slots:
                self.timings.append(("learn", slot.role, took[slot.uid]))
        if failed:  # a champion that failed to learn keeps serving: counted in model_errors
            self.champion.learned -= self.champion.uid in failed  # it did not learn this one
            with contextlib.suppress(ModelError):
                self._quarantine(failed, "learn")

    def _quarantine(self, failed: dict[int, Exception], stage: str) -> None:
        """Take challengers whose code failed out of the contest; raise for the champion."""
        self.counts.model_errors += len(failed)
        champion_error = failed.pop(self.champion.uid, None)
        for slot in [s for s in self.slots if s.uid in failed]:
            self.remove_challenger(slot.alias)
            self.broken.append(
                Broken(slot.alias, slot.spec, slot.version, f"{stage}: {failed[slot.uid]!r}")
            )
        if champion_error is not None:
            raise ModelError(
                f"the champion {self.champion.spec} v{self.champion.version} failed to "
                f"{stage}: {champion_error!r}"
            ) from champion_error

    # -- promotion ----------------------------------------------------------------------------

    def candidate(self) -> tuple[Slot, Decision] | None:
        """The challenger the policy would promote now, with the decision, if any."""
        best = self.contest.best(self.champion.uid, self.counts.labelled)
        if best is None:
            return None
        uid, decision = best
        return next(s for s in self.slots if s.uid == uid), decision

    def decisions(self) -> dict[str, Decision]:
        """The policy's current decision for every challenger, by alias."""
        return {s.alias: self.contest.decision(self.champion.uid, s.uid) for s in self.slots[1:]}

    def swap(self, challenger: Slot, decision: Decision, *, keep_old: bool) -> Slot:
        """Make ``challenger`` the champion; the old champion takes the challenger's alias
        (``keep_old``) or leaves. Returns the old champion."""
        old = self.champion
        index = self.slots.index(challenger)
        old_alias = challenger.alias
        challenger.alias, old.alias = CHAMPION, old_alias
        self.slots[0], self.slots[index] = challenger, old
        if not keep_old:
            self.slots.remove(old)
            self.contest.leave(old.uid)
            self._regroup()
        self.promotions.append(
            Promotion(
                self.counts.labelled,
                old.spec,
                old.version,
                challenger.spec,
                challenger.version,
                decision.evidence(),
            )
        )
        self.contest.swapped(self.counts.labelled)
        return old

    # -- bookkeeping --------------------------------------------------------------------------

    def expire(self) -> list[LabelMessage]:
        """Drop predictions older than the TTL (counted) and return labels nobody claimed.

        Time is event time (the newest event seen). Which labels join, and which are
        refused or unclaimed, does not depend on when this runs: :meth:`on_event` and
        :meth:`on_label` check the TTL and the ``max_pending`` caps themselves. This frees
        the memory, oldest first, stopping at the first entry still in time.
        """
        limit = self.watermark - self.label_ttl
        pending = self.pending
        while pending:
            oldest = next(iter(pending))
            if pending[oldest].time >= limit:
                break
            del pending[oldest]
            self.counts.expired += 1
        orphans = self.orphans
        while orphans:
            oldest = next(iter(orphans))
            if orphans[oldest][1] >= limit:
                break
            self._unclaim(orphans.pop(oldest)[0])
        unclaimed, self.unclaimed = self.unclaimed, []
        return unclaimed

    def drain_orphans(self) -> list[LabelMessage]:
        """Return (and forget) every label still waiting for its event: the input has ended."""
        for label, _ in self.orphans.values():
            self._unclaim(label)
        self.orphans.clear()
        unclaimed, self.unclaimed = self.unclaimed, []
        return unclaimed

    def _arm_metrics(self) -> dict[str, Prequential]:
        if self.ab_fraction > 0.0:
            return self.arms
        return {CHAMPION: self.champion.metrics, CHALLENGER: self.arms[CHALLENGER]}

    def report(self) -> dict[str, Any]:
        """Counts, every model's report, per-arm metrics and the promotions so far."""
        return {
            "events": self.counts.events,
            "labelled": self.counts.labelled,
            "pending": len(self.pending),
            "expired": self.counts.expired,
            "unknown_labels": self.counts.unknown_labels,
            "model_errors": self.counts.model_errors,
            "positions": dict(self.positions),
            "models": [slot.report() for slot in self.slots],
            "ab_fraction": self.ab_fraction,
            "arms": {arm: m.report() for arm, m in self._arm_metrics().items()},
            "promotions": [p.to_dict() for p in self.promotions],
            "contest": {alias: d.evidence() for alias, d in self.decisions().items()},
            # no swap yet: within promote_cooldown labelled events of the last one
            "cooling_down": self.contest.cooling_down(self.counts.labelled),
        }
