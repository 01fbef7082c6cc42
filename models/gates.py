"""Quality gates on evaluation results, for CI: ``accuracy=0.8`` under ``--fail-under``.

A gate compares one metric of every model with a bound, literally: ``--fail-under`` fails
a model whose metric is below the bound, ``--fail-over`` one whose metric is above it. Each
metric has a direction, so each flag takes only the metrics it makes sense for: accuracy is
higher-is-better (``--fail-under``), log loss, MAE and RMSE are lower-is-better
(``--fail-over``); the wrong pairing is refused, naming the right flag. A metric that is
NaN, and a model that scored no event, break every gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

HIGHER_IS_BETTER = frozenset({"accuracy"})
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})
METRICS = {
    "binary": ("accuracy", "log_loss"),
    "multiclass": ("accuracy", "log_loss"),
    "regression": ("mae", "rmse"),
}
UNDER, OVER = "under", "over"


class GateError(ValueError):
    """A gate that cannot be applied: unknown metric, bad value or wrong direction."""


@dataclass(frozen=True)
class Gate:
    """Fail a model whose ``metric`` is ``under`` or ``over`` ``bound``."""

    metric: str
    bound: float
    side: str

    def fails(self, value: float) -> bool:
        """Whether ``value`` breaks the gate: NaN breaks every gate (no comparison holds)."""
        return math.isnan(value) or (
            value < self.bound if self.side == UNDER else value > self.bound
        )

    def __str__(self) -> str:
        return f"{self.metric} {'<' if self.side == UNDER else '>'} {self.bound:g}"


def parse_gate(text: str, side: str, task: str) -> Gate:
    """A gate from ``METRIC=VALUE`` (a cumulative or ``rolling_`` metric of ``task``).

    >>> parse_gate("rolling_accuracy=0.8", UNDER, "binary")
    Gate(metric='rolling_accuracy', bound=0.8, side='under')
    >>> parse_gate("log_loss=0.5", UNDER, "binary")
    Traceback (most recent call last):
    ...
    models.gates.GateError: log_loss is lower-is-better: use --fail-over log_loss=0.5
    """
    metric, sep, raw = text.partition("=")
    metric = metric.strip()
    if not sep:
        raise GateError(f"--fail-{side} {text!r}: expected METRIC=VALUE")
    base = metric.removeprefix("rolling_")
    if base not in METRICS[task]:
        known = ", ".join(f"{m}, rolling_{m}" for m in METRICS[task])
        raise GateError(f"--fail-{side} {text!r}: a {task} model has no {metric!r} ({known})")
    try:
        bound = float(raw)
    except ValueError:
        raise GateError(f"--fail-{side} {text!r}: {raw!r} is not a number") from None
    if math.isnan(bound):  # every comparison with NaN is false: the gate would always pass
        raise GateError(f"--fail-{side} {text!r}: the bound must be a number, not NaN")
    right = UNDER if base in HIGHER_IS_BETTER else OVER
    if side != right:
        direction = "higher" if right == UNDER else "lower"
        raise GateError(f"{metric} is {direction}-is-better: use --fail-{right} {metric}={raw}")
    return Gate(metric, bound, side)


def failures(report: dict[str, Any], gates: list[Gate]) -> list[str]:
    """One line per model and gate it breaks, empty when every model passes."""
    return [
        f"{model['name']}: {broken}"
        for model in report["models"]
        for gate in gates
        if (broken := _breach(model["metrics"], gate)) is not None
    ]


def _breach(metrics: dict[str, float], gate: Gate) -> str | None:
    """How ``metrics`` break ``gate``, or ``None``. A model that scored no event or whose
    metric is NaN breaks every gate: neither is a measurement that could pass one."""
    value = metrics[gate.metric]
    if not metrics["n"]:
        return f"scored no event, which breaks {gate}"
    if not gate.fails(value):
        return None
    shown = "is NaN, which" if math.isnan(value) else f"{value:.4f}"
    return f"{gate.metric} {shown} breaks {gate}"
