"""Champion against challengers: paired losses, validation gates and the cool-down.

The learner reports every labelled event's per-model losses here; the learn flow asks
:meth:`Contest.best` which challenger, if any, the policy would promote now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.promotion import Decision, GateReport, PairedLosses, PromotionPolicy, decide


@dataclass
class Gates:
    """What one model's outputs looked like: for the validation gates."""

    non_finite: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    classes: set[Any] = field(default_factory=set)

    def output(self, y_pred: Any, classify: bool) -> None:
        """Look at one prediction."""
        if classify:
            if not math.isfinite(sum(y_pred.values())):
                self.non_finite += 1
            if not self.classes.issuperset(y_pred):
                self.classes.update(y_pred)
        elif y_pred is None or not math.isfinite(y_pred):
            self.non_finite += 1

    def timing(self, seconds: float) -> None:
        """Record one sampled prediction time."""
        self.latency_sum += seconds
        self.latency_n += 1

    @property
    def latency(self) -> float:
        """Mean sampled prediction time, in seconds."""
        return self.latency_sum / self.latency_n if self.latency_n else 0.0


@dataclass
class Contest:
    """Paired evidence of each challenger against the champion, and when swaps may happen."""

    policy: PromotionPolicy
    paired: dict[int, PairedLosses] = field(default_factory=dict)
    gates: dict[int, Gates] = field(default_factory=dict)
    labels_seen: set[Any] = field(default_factory=set)
    last_swap_at: int | None = None

    def enter(self, uid: int) -> None:
        """Start tracking a model."""
        self.paired[uid] = PairedLosses(self.policy.window)
        self.gates[uid] = Gates()

    def leave(self, uid: int) -> None:
        """Stop tracking a model."""
        self.paired.pop(uid, None)
        self.gates.pop(uid, None)

    def record(self, champion_uid: int, losses: dict[int, float], label: Any) -> None:
        """One labelled event's losses by model uid (only models that predicted it); that of
        a model taken out meanwhile (its code failed to learn the event) is left out."""
        self.labels_seen.add(label)
        champion_loss = losses.get(champion_uid)
        if champion_loss is None:
            return
        paired = self.paired
        for uid, loss in losses.items():
            if uid != champion_uid and uid in paired:
                paired[uid].add(champion_loss, loss)

    def cooling_down(self, labelled: int) -> bool:
        """Whether the last swap was fewer than ``cooldown`` labelled events ago."""
        return self.last_swap_at is not None and labelled - self.last_swap_at < self.policy.cooldown

    def decision(self, champion_uid: int, uid: int) -> Decision:
        """The policy's decision for challenger ``uid`` right now."""
        gates = self.gates[uid]
        known = self.labels_seen | self.gates[champion_uid].classes
        report = GateReport(gates.non_finite, gates.latency, gates.classes <= known)
        return decide(self.policy, self.paired[uid], report)

    def best(self, champion_uid: int, labelled: int) -> tuple[int, Decision] | None:
        """The challenger to promote now (the one that gains most), or ``None``."""
        if self.cooling_down(labelled):
            return None
        ready = [
            (uid, d)
            for uid in self.paired
            if uid != champion_uid and (d := self.decision(champion_uid, uid)).promote
        ]
        return max(ready, key=lambda pair: pair[1].mean_difference, default=None)

    def swapped(self, labelled: int) -> None:
        """A swap happened: the baseline changed, so all paired evidence starts over."""
        self.last_swap_at = labelled
        for paired in self.paired.values():
            paired.clear()
        for gates in self.gates.values():
            gates.non_finite, gates.latency_sum, gates.latency_n = 0, 0.0, 0
