"""Prequential (test-then-train) metrics of one model: cumulative and rolling.

The formulas are River's own (``metrics.Accuracy``, ``LogLoss``, ``CrossEntropy``,
``MAE``, ``RMSE``, clamping probabilities to [1e-15, 1 - 1e-15]), computed in a few
arithmetic operations per event because they run on the flow's hot path for every model.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

_EPS = 1e-15
# Between exact sums, a running sum of non-negative values takes at most `window` additions
# and subtractions, each off by at most 1.1e-16 of a sum of at most `window` times the
# largest value: below window**2 * ROUNDING * that value, it may be off by over a millionth.
ROUNDING = 1e-10
_MAX_P = 1 - _EPS


def _clamp(p: float) -> float:
    """River's clamp of a probability to [1e-15, 1 - 1e-15], NaN kept."""
    return _EPS if p < _EPS else _MAX_P if p > _MAX_P else p


def predicted_label(proba: Mapping[Hashable, float]) -> Hashable | None:
    """The class River's ``predict_one`` would return for these probabilities: the first of
    the most probable (``max``), found without a call per class for two classes."""
    if len(proba) == 2:
        (first, p_first), (second, p_second) = proba.items()
        return second if p_second > p_first else first
    if not proba:
        return None
    return max(proba, key=proba.__getitem__)


def log_loss(y_true: Hashable, proba: Mapping[Hashable, float], task: str) -> float:
    """River's per-event ``LogLoss`` (binary) or ``CrossEntropy`` (multiclass)."""
    if task == "binary":
        p_true = _clamp(proba.get(True, 0.0))
        return -math.log(p_true) if y_true else -math.log(1 - p_true)
    p = proba.get(y_true)
    if p is None:
        return 0.0  # River's CrossEntropy ignores a class the model never predicted
    return -math.log(_clamp(p))


def exact_sum(values: Sequence[float]) -> float:
    """``math.fsum`` of ``values``, or NaN or an infinity where they hold one (fsum raises
    for +inf with -inf, and for sums beyond the float range)."""
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):
        return sum(values)


class RollingMean:
    """Mean of the last ``window`` non-negative values, in O(1) per update.

    The running sum is made exact each time the window turns over. Between, a value huge
    beside the rest leaves its rounding behind once it drops out, and a NaN leaves the sum
    NaN; :meth:`get` sums the window itself when the running sum is too small beside the
    largest value added since the last exact sum to be trusted (``ROUNDING``), or is not
    finite.

    >>> r = RollingMean(2)
    >>> for v in (1.0, 2.0, 4.0):
    ...     r.update(v)
    >>> r.get()
    3.0
    """

    __slots__ = ("_high", "_i", "_sum", "_values", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._values: list[float] = []
        self._i = 0
        self._sum = 0.0
        self._high = 0.0  # the largest value added since the sum was last made exact

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Restore from a snapshot; one taken before ``_high`` was kept lacks it, and gets
        exact sums until the window next turns over."""
        self._high = math.inf
        for name, value in state[1].items():
            setattr(self, name, value)

    def update(self, value: float) -> None:
        """Add a value, dropping the oldest once the window is full."""
        values = self._values
        if value > self._high:
            self._high = value
        if len(values) < self.window:
            values.append(value)
            self._sum += value
            return
        i = self._i
        self._sum += value - values[i]
        values[i] = value
        self._i = i + 1
        if self._i == self.window:
            self._i = 0
            self._sum = exact_sum(values)  # bound the rounding error of the running sum
            self._high = max(values)

    def get(self) -> float:
        """The mean of the window (0 when empty)."""
        values, total = self._values, self._sum
        if not values:
            return 0.0
        if not self._high * self.window**2 * ROUNDING <= total < math.inf:  # NaN fails too
            total = exact_sum(values)
        return total / len(values)

    def __len__(self) -> int:
        return len(self._values)


class Prequential:
    """Cumulative and rolling prequential metrics of one model.

    ``update`` takes the true label and what the model predicted *before* learning it
    (class probabilities for classifiers, a number for regressors) and returns the
    per-event loss (log loss, or squared error), which the promotion policy pairs.

    >>> m = Prequential("binary", window=2)
    >>> for y, p in [(True, 0.9), (False, 0.2), (True, 0.4)]:
    ...     _ = m.update(y, {True: p, False: 1 - p})
    >>> round(m.report()["accuracy"], 3), round(m.report()["rolling_accuracy"], 3)
    (0.667, 0.5)
    """

    def __init__(self, task: str, window: int) -> None:
        self.task = task
        self.n = 0
        self.last_error = 0.0  # the last event's error: 0/1 for classifiers, |error| otherwise
        self._sums = [0.0, 0.0]  # correct/log loss, or absolute/squared error
        self._rolling = [RollingMean(window), RollingMean(window)]

    def update(self, y_true: Any, y_pred: Any) -> float:
        """Score one prediction against its label; returns the event's loss."""
        task = self.task
        if task == "regression":
            err = y_true - y_pred
            first, loss = abs(err), err * err
            self.last_error = first
        elif task == "binary":
            p_true, p_false = y_pred.get(True, 0.0), y_pred.get(False, 0.0)
            label = p_true > p_false if p_true != p_false else predicted_label(y_pred)
            first = 1.0 if label == y_true else 0.0
            p = _EPS if p_true < _EPS else _MAX_P if p_true > _MAX_P else p_true  # _clamp, inline
            loss = -math.log(p) if y_true else -math.log(1 - p)
            self.last_error = 1.0 - first
        else:
            first = 1.0 if predicted_label(y_pred) == y_true else 0.0
            loss = log_loss(y_true, y_pred, task)
            self.last_error = 1.0 - first
        self.n += 1
        sums, rolling = self._sums, self._rolling
        sums[0] += first
        sums[1] += loss
        rolling[0].update(first)
        rolling[1].update(loss)
        return loss

    def report(self) -> dict[str, float]:
        """The metrics by name: cumulative, and ``rolling_*`` over the window."""
        n = self.n or 1
        first, second = self._sums[0] / n, self._sums[1] / n
        r_first, r_second = self._rolling[0].get(), self._rolling[1].get()
        if self.task == "regression":
            return {
                "mae": first,
                "rmse": math.sqrt(second),
                "rolling_mae": r_first,
                "rolling_rmse": math.sqrt(r_second),
                "n": float(self.n),
            }
        return {
            "accuracy": first,
            "log_loss": second,
            "rolling_accuracy": r_first,
            "rolling_log_loss": r_second,
            "n": float(self.n),
        }
