"""When a challenger may replace the champion: paired evidence on the same events, and gates.

A challenger is promoted only when, over its most recent ``window`` labelled events that
both it and the champion scored, (a) there are at least ``min_samples`` of them, (b) its
mean loss is lower by at least ``margin`` (relative to the champion's), (c) a one-sided
paired test on the per-event loss differences rejects "no better" at ``alpha``, and
(d) the validation gates pass: no NaN or infinite output, prediction latency within
budget, classes consistent with the champion.

Consecutive losses of a stream are correlated (drift, shared features), which makes a
per-event t-test too eager; the test runs on the means of blocks of ``block`` events,
which are close to independent, with Student's t distribution. ``alpha`` holds for one
look: the flow looks every 250 labels at a sliding window, so over a long stream two
equally good models are told apart now and then (``margin`` and the cool-down bound it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from scipy.special import stdtr

from models.evaluation import exact_sum


@dataclass(frozen=True)
class PromotionPolicy:
    """The thresholds of a promotion decision."""

    min_samples: int = 1000
    window: int = 5000
    margin: float = 0.02
    alpha: float = 0.01
    block: int = 50
    latency_budget: float = 0.005
    cooldown: int = 5000

    def __post_init__(self) -> None:
        if self.min_samples < 2 * self.block:
            raise ValueError("min_samples must cover at least two blocks")
        if self.window < self.min_samples:
            raise ValueError("a window below min_samples never holds enough to promote")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be within (0, 1)")
        if not 0 <= self.margin < 1:
            raise ValueError("margin must be within [0, 1): 1 or more never promotes")


class PairedLosses:
    """The recent per-event losses of a champion and one challenger on the same events.

    Their means are summed exactly (``math.fsum``) when asked for: a running sum loses
    its precision to a huge loss that left the window, and decisions rest on these means.

    >>> p = PairedLosses(window=4)
    >>> for champion, challenger in [(1.0, 0.5), (1.0, 0.7), (0.8, 0.8)]:
    ...     p.add(champion, challenger)
    >>> len(p), round(p.mean_difference(), 3)
    (3, 0.267)
    """

    __slots__ = ("_champion", "_difference")

    def __init__(self, window: int) -> None:
        self._champion: deque[float] = deque(maxlen=window)
        self._difference: deque[float] = deque(maxlen=window)

    def add(self, champion_loss: float, challenger_loss: float) -> None:
        """Record one event scored by both (positive difference: the challenger did better)."""
        self._champion.append(champion_loss)
        self._difference.append(champion_loss - challenger_loss)

    def __len__(self) -> int:
        return len(self._difference)

    def mean_difference(self) -> float:
        """Mean of champion loss minus challenger loss."""
        return exact_sum(self._difference) / len(self._difference) if self._difference else 0.0

    def champion_loss(self) -> float:
        """The champion's mean loss over the window."""
        return exact_sum(self._champion) / len(self._champion) if self._champion else 0.0

    def block_means(self, block: int) -> list[float]:
        """Means of consecutive blocks of ``block`` differences, newest complete blocks."""
        diffs = list(self._difference)
        start = len(diffs) % block
        return [exact_sum(diffs[i : i + block]) / block for i in range(start, len(diffs), block)]

    def clear(self) -> None:
        """Forget everything (after a swap, the baseline changed)."""
        self._champion.clear()
        self._difference.clear()


@dataclass(frozen=True)
class GateReport:
    """What the validation gates look at, for one challenger."""

    non_finite: int = 0
    latency: float = 0.0
    classes_ok: bool = True


@dataclass(frozen=True)
class Decision:
    """A promotion decision and its evidence."""

    promote: bool
    reason: str
    n: int
    mean_difference: float
    champion_loss: float
    statistic: float
    p_value: float
    gate: str | None = None

    def evidence(self) -> dict[str, Any]:
        """The decision as plain data, for the audit stream and the report."""
        return asdict(self)


def paired_test(block_means: list[float]) -> tuple[float, float]:
    """One-sided paired t-test that the mean difference is > 0, on block means:
    ``(t statistic, p-value)``.

    >>> t, p = paired_test([0.1, 0.2, 0.15, 0.12, 0.18])
    >>> t > 5 and p < 0.001
    True
    """
    k = len(block_means)
    if k < 2:
        return 0.0, 1.0
    mean = exact_sum(block_means) / k
    var = exact_sum([(m - mean) * (m - mean) for m in block_means]) / (k - 1)  # inf, not raise
    if var == 0.0:
        return (math.inf, 0.0) if mean > 0 else (0.0, 1.0)
    t = mean / math.sqrt(var / k)
    # Student's t with k - 1 degrees of freedom: the normal's tail, with a few blocks, gave
    # equal models a p-value below alpha several times as often as alpha
    return t, float(stdtr(k - 1, -t))


def decide(policy: PromotionPolicy, paired: PairedLosses, gates: GateReport) -> Decision:
    """Whether the challenger should replace the champion now, and why (not)."""
    n = len(paired)
    diff = paired.mean_difference()
    base = paired.champion_loss()
    finite = math.isfinite(diff) and math.isfinite(base)  # else no test: (0, 1), as for none
    t, p = paired_test(paired.block_means(policy.block)) if finite else (0.0, 1.0)

    def no(reason: str, gate: str | None = None) -> Decision:
        return Decision(False, reason, n, diff, base, t, p, gate)

    if n < policy.min_samples:
        return no(f"{n} paired events, fewer than {policy.min_samples}")
    if not finite:  # NaN or infinite outputs make such losses: then their gate says so
        gate = "non_finite" if gates.non_finite else None
        return no("the losses in the window are NaN, infinite or too large to sum", gate)
    if diff < policy.margin * base or diff <= 0:
        return no(f"loss lower by {diff:.4g}, less than the margin {policy.margin:.0%}")
    if not p < policy.alpha:  # a NaN p-value is no evidence either
        return no(f"p-value {p:.3g} is not below {policy.alpha}")
    if gates.non_finite:
        return no(f"{gates.non_finite} NaN or infinite outputs", "non_finite")
    if gates.latency > policy.latency_budget:
        return no(
            f"prediction takes {gates.latency * 1000:.2f} ms, over the "
            f"{policy.latency_budget * 1000:.2f} ms budget",
            "latency",
        )
    if not gates.classes_ok:
        return no("its classes differ from the champion's", "classes")
    return Decision(
        True, f"loss lower by {diff:.4g} (p={p:.2g}) over {n} paired events", n, diff, base, t, p
    )
