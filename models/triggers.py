"""Trigger policies: when to retrain, promote or roll back, from drift events and status.

Four policies, each on or off: concept drift on the champion (retrain on the events since
the drift, once ``drift_wait`` labelled events have arrived after it), a performance slump
(a rolling metric worse than a threshold for ``slump_for`` seconds: retrain, promote a
challenger that is already better, or roll back), fresh labelled data (every
``fresh_every`` labelled events) and a schedule (every ``schedule_every`` seconds). Only
one retrain runs at a time per model, and none starts within ``cooldown`` seconds of the
last one. Everything here is pure: the trigger service feeds it and carries out what it
decides. A retrain never reads past the flow's current position, so a challenger never
learns an event before the champion has predicted it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from models.evaluation import Prequential
from models.gates import HIGHER_IS_BETTER, LOWER_IS_BETTER

SLUMP_ACTIONS = ("off", "retrain", "promote", "rollback")
METRICS = tuple(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))  # of any task
SLUMP_MIN_SCORED = 100  # labelled events a champion is scored on before a slump can count
# seconds a status may go unrewritten (the flow writes one every few seconds) before its
# metrics count as frozen: a flow that stopped is no champion slumping
STALE_STATUS = 60.0


class TriggerConfigError(ValueError):
    """An impossible trigger policy."""


class BadDriftEvent(ValueError):
    """A drift-topic message the policies cannot read: the message says which field."""


def _finite(value: Any, default: float) -> float:
    """``value`` if it is a finite number, else ``default`` (a status writes NaN as null)."""
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return default


def slump_metrics(task: str) -> tuple[str, ...]:
    """The champion metrics a slump can watch for ``task``: those the flow's status reports.

    >>> slump_metrics("regression")
    ('mae', 'rmse', 'rolling_mae', 'rolling_rmse')
    """
    return tuple(sorted(set(Prequential(task, 1).report()) - {"n"}))


def check_drift_event(event: Any) -> dict[str, Any]:
    """``event`` if the fields the policies read have their types, else
    :class:`BadDriftEvent`: anyone can write to the drift topic, and a message that stopped
    the trigger service would stop it again at every restart."""
    if not isinstance(event, dict):
        raise BadDriftEvent("not a JSON object")
    for name in ("detected_at", "position", "statistic"):
        value = event.get(name, 0)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise BadDriftEvent(f"field {name!r} is not a finite number")
    if event.get("position", 0) < 0:
        raise BadDriftEvent("field 'position' is negative")
    positions = event.get("positions", {})
    if not isinstance(positions, dict) or not all(
        isinstance(part, str) and type(offset) is int and offset >= 0
        for part, offset in positions.items()
    ):
        raise BadDriftEvent("field 'positions' is not a map of partitions to offsets")
    return event


@dataclass(frozen=True)
class TriggerPolicy:
    """Which triggers are on, and their thresholds."""

    on_drift: bool = True
    drift_wait: int = 1000
    slump_action: str = "off"
    slump_metric: str = "rolling_accuracy"
    slump_threshold: float = 0.7
    slump_for: float = 600.0
    fresh_every: int = 0
    schedule_every: float = 0.0
    cooldown: float = 300.0
    lookback: float = 3600.0
    alpha: float = 0.01  # how sure a slump's promotion must be that the challenger is better

    def __post_init__(self) -> None:
        if self.slump_action not in SLUMP_ACTIONS:
            raise TriggerConfigError(
                f"slump action {self.slump_action!r}: use one of {', '.join(SLUMP_ACTIONS)}"
            )
        if self.slump_metric.removeprefix("rolling_") not in METRICS:
            raise TriggerConfigError(
                f"slump metric {self.slump_metric!r}: use one of {', '.join(METRICS)}, "
                "or their rolling_ forms"
            )

    def slumping(self, value: float) -> bool:
        """Whether a metric value is worse than the slump threshold."""
        name = self.slump_metric.removeprefix("rolling_")
        if name in LOWER_IS_BETTER:
            return value > self.slump_threshold
        return value < self.slump_threshold


@dataclass(frozen=True)
class Action:
    """What to do, and why: ``retrain`` (from Kafka positions, or the last ``since``
    seconds), ``promote`` a challenger alias, or ``rollback``."""

    kind: str
    reason: str
    positions: dict[str, int] = field(default_factory=dict)
    until: dict[str, int] = field(default_factory=dict)  # the flow's positions: no peeking ahead
    since: float | None = None
    alias: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    policy: str = ""  # which decided it: drift, slump, fresh or schedule


_KEPT_NUMBERS = (
    "fresh_from",
    "last_labelled",
    "last_schedule",
    "last_retrain",
    "last_swap",
    "drift_tries",
)
# retrains a drift is given before it is given up: one that always fails (a factory that
# raises, a range past the retrain timeout) was tried after every cool-down, for ever
DRIFT_TRIES = 3
_KEPT = ("drift", *_KEPT_NUMBERS)  # what Triggers.state keeps across restarts


@dataclass
class Triggers:
    """The state of the policies for one model: what they saw and when they last acted."""

    policy: TriggerPolicy
    started: float = 0.0
    drift: dict[str, Any] | None = None
    slump_since: float | None = None
    fresh_from: int | None = None
    last_schedule: float | None = None
    last_retrain: float | None = None
    last_swap: float | None = None  # a slump's promotion or rollback
    last_labelled: int | None = None  # the labelled count of the last status decided on
    drift_tries: int | None = None  # retrains of the armed drift that failed or never began
    running: bool = False

    def state(self) -> dict[str, Any]:
        """What the policies noted, as plain data kept across restarts of the service (a
        retrain that ran then is not: it ended with the service; nor is a slump's start,
        which a restart watches again from its own start).

        >>> t = Triggers(TriggerPolicy(), fresh_from=300, last_retrain=12.5)
        >>> again = Triggers(TriggerPolicy())
        >>> again.restore(t.state())
        >>> (again.fresh_from, again.last_retrain, again.drift)
        (300, 12.5, None)
        """
        return {name: getattr(self, name) for name in _KEPT}

    def restore(self, state: dict[str, Any]) -> None:
        """Take up a :meth:`state`; raise ``ValueError`` (changing nothing) if it is not one.
        An armed drift is dropped if the drift policy is off now."""
        drift = state.get("drift")
        numbers = [state.get(name) for name in _KEPT_NUMBERS]
        if drift is not None:
            check_drift_event(drift)
        if not all(v is None or (type(v) in (int, float) and math.isfinite(v)) for v in numbers):
            raise ValueError("a kept trigger time or count is not a finite number")
        for name in _KEPT:
            setattr(self, name, state.get(name))
        if not self.policy.on_drift:
            self.drift = None

    def drift_event(self, event: dict[str, Any]) -> None:
        """Note a drift event; concept drift on the champion arms the drift policy. An armed
        drift stays (its retrain starts from the first drift), unless the new one comes
        from a count that went back (the flow started over, and the armed one is stale) or
        the armed one's retrain already failed (the new one is tried afresh)."""
        concept = event.get("kind") == "concept" and event.get("source") == "champion"
        if not (self.policy.on_drift and concept):
            return
        armed = self.drift
        if armed is None or self.drift_tries or event.get("position", 0) < armed.get("position", 0):
            self.drift, self.drift_tries = event, None

    def retry(self, action: Action, now: float, *, tried: bool = True) -> bool:
        """A retrain the service could not start (another holds the model's retrain lock, or
        Redis is away) or that failed: it is due again once the cool-down is over (not twice a
        second for a lock left behind, nor a whole period later for fresh data or a
        schedule). A drift gets :data:`DRIFT_TRIES` tries in all, unless a drift came since
        (``tried=False``: it was stopped, not tried); returns whether the retrain is due
        again."""
        self.last_retrain = now
        if action.policy == "fresh":
            due = int(action.evidence["labelled"]) - self.policy.fresh_every
            self.fresh_from = min(self.fresh_from or due, due)
        elif action.policy == "schedule":
            self.last_schedule = now - self.policy.schedule_every
        elif action.policy == "slump":
            self.slump_since = now - self.policy.slump_for  # if it still slumps
        elif action.policy == "drift" and self.drift is None:  # else a newer drift comes
            tries = (self.drift_tries or 0) + tried
            if tries >= DRIFT_TRIES:
                self.drift_tries = None
                return False
            self.drift, self.drift_tries = action.evidence["drift"], tries
        return True

    def retrain_started(self, now: float) -> None:
        """A retrain began: no other starts until it ends."""
        self.running = True
        self.last_retrain = now

    def retrain_ended(
        self, now: float, action: Action | None = None, *, tried: bool = True
    ) -> bool:
        """The retrain ended: the cool-down starts now. ``action``, if given, failed (or was
        stopped: ``tried=False``): it is due again (:meth:`retry`); returns whether it is."""
        self.running = False
        if action is not None:
            return self.retry(action, now, tried=tried)  # which starts the cool-down too
        self.last_retrain = now
        if self.drift is None:  # the drift it answered, if any, is done with
            self.drift_tries = None
        return False

    def decide(self, status: dict[str, Any], now: float) -> list[Action]:
        """What to do now, given the learn flow's latest status."""
        labelled = int(status.get("labelled", 0))
        self._forget_the_future(labelled)
        written = status.get("written_at")  # a flow of an older version wrote none
        fresh = not isinstance(written, (int, float)) or now - written <= STALE_STATUS
        actions = self._slump(status, now) if fresh else self._no_slump()
        if self.running or self._cooling(now, self.last_retrain):
            return [a for a in actions if a.kind != "retrain"]
        if not any(a.kind == "retrain" for a in actions):
            retrain = self._drift(labelled) or self._fresh(labelled) or self._schedule(now)
            if retrain is not None:
                actions.append(retrain)
        until = dict(status.get("positions", {}))
        return [replace(a, until=until) if a.kind == "retrain" else a for a in actions]

    def _forget_the_future(self, labelled: int) -> None:
        """A labelled count below the last status's: the flow started over (its recovery
        state gone), so a drift or fresh-data mark past it would never be reached. (A drift
        may well lie past the last status, written every few seconds: it stays then.)"""
        went_back = self.last_labelled is not None and labelled < self.last_labelled
        self.last_labelled = labelled
        if not went_back:
            return
        if self.drift is not None and labelled < int(self.drift.get("position", 0)):
            self.drift = self.drift_tries = None
        if self.fresh_from is not None and labelled < self.fresh_from:
            self.fresh_from = labelled

    def _cooling(self, now: float, last: float | None) -> bool:
        """Whether ``now`` is within the cool-down of ``last`` (``None``: never)."""
        return last is not None and now - last < self.policy.cooldown

    def _drift(self, labelled: int) -> Action | None:
        drift = self.drift
        if drift is None or labelled - int(drift.get("position", 0)) < self.policy.drift_wait:
            return None
        self.drift = None
        return Action(
            "retrain",
            f"concept drift on the champion at labelled event {drift.get('position')} "
            f"({drift.get('detector')}, error {drift.get('statistic', 0):.3f})",
            positions=dict(drift.get("positions", {})),
            evidence={"drift": drift},
            policy="drift",
        )

    def _fresh(self, labelled: int) -> Action | None:
        every = self.policy.fresh_every
        if not every:
            return None
        if self.fresh_from is None:
            self.fresh_from = labelled
        if labelled - self.fresh_from < every:
            return None
        self.fresh_from = labelled
        return Action(
            "retrain",
            f"{every} new labelled events",
            since=self.policy.lookback,
            evidence={"labelled": labelled},
            policy="fresh",
        )

    def _schedule(self, now: float) -> Action | None:
        every = self.policy.schedule_every
        if not every:
            return None
        if self.last_schedule is None:
            self.last_schedule = now
        if now - self.last_schedule < every:
            return None
        self.last_schedule = now
        return Action(
            "retrain", f"scheduled every {every:g} s", since=self.policy.lookback, policy="schedule"
        )

    def _no_slump(self) -> list[Action]:
        """No slump now: one seen later starts its clock again."""
        self.slump_since = None
        return []

    def _slump(self, status: dict[str, Any], now: float) -> list[Action]:
        policy = self.policy
        if policy.slump_action == "off":
            return []
        champion: dict[str, Any] = next(
            (m for m in status.get("models", []) if m.get("role") == "champion"), {}
        )
        metrics = champion.get("metrics", {})
        value = metrics.get(policy.slump_metric)
        scored = metrics.get("n", 0) >= SLUMP_MIN_SCORED  # else its metric means nothing yet
        # null: NaN or infinite (JSON holds neither), what a champion gone wrong scores
        broken = policy.slump_metric in metrics and value is None
        if not scored or not (broken or (value is not None and policy.slumping(value))):
            return self._no_slump()
        if self.slump_since is None:
            self.slump_since = now
        if now - self.slump_since < policy.slump_for:
            return []
        if policy.slump_action == "promote":  # no swap after swap: each gets its time
            waits = self._cooling(now, self.last_swap) or status.get("cooling_down") is True
        elif policy.slump_action == "rollback":
            waits = self._cooling(now, self.last_swap)
        else:
            waits = self.running or self._cooling(now, self.last_retrain)
        if waits:
            return []  # the slump goes on: its action comes once the cool-down is over
        self.slump_since = None
        shown = "null (NaN or infinite)" if value is None else f"{value:.4f}"
        reason = (
            f"{policy.slump_metric} {shown} worse than {policy.slump_threshold} "
            f"for {policy.slump_for:g} s"
        )
        evidence = {policy.slump_metric: value, "champion_version": champion.get("version")}
        if policy.slump_action == "retrain":
            return [
                Action("retrain", reason, since=policy.lookback, evidence=evidence, policy="slump")
            ]
        if policy.slump_action == "rollback":
            self.last_swap = now
            return [Action("rollback", reason, evidence=evidence)]
        better = [  # what the promotion policy itself would promote: tested, gates passed
            (alias, e)
            for alias, e in status.get("contest", {}).items()
            if e.get("promote") is True
            and _finite(e.get("mean_difference"), 0.0) > 0
            and _finite(e.get("p_value"), 1.0) < policy.alpha  # null: NaN, no evidence
        ]
        if not better:
            return []
        alias, e = max(better, key=lambda pair: pair[1]["mean_difference"])
        self.last_swap = now
        tested: dict[str, Any] = next(
            (m for m in status.get("models", []) if m.get("alias") == alias), {}
        )
        e = {
            **e,
            "champion_version": champion.get("version"),
            "challenger_version": tested.get("version"),
        }
        return [Action("promote", f"{reason}; {alias} is better", alias=alias, evidence=e)]
