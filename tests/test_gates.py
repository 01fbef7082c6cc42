"""CI gates on evaluation results: a metric that is no measurement never passes one."""

from __future__ import annotations

import math
from typing import Any

import pytest

from models.gates import OVER, UNDER, GateError, failures, parse_gate


def _report(**metrics: float) -> dict[str, Any]:
    """An evaluation report of one model, ``m``, with these metrics."""
    return {"models": [{"name": "m", "metrics": {"n": 100.0, **metrics}}]}


@pytest.mark.parametrize(
    ("gate", "metric", "says"),
    [
        ("mae=1", "mae", "mae is NaN, which breaks mae > 1"),
        (
            "rolling_rmse=1e9",
            "rolling_rmse",
            "rolling_rmse is NaN, which breaks rolling_rmse > 1e+09",
        ),
    ],
)
def test_a_nan_metric_fails_every_gate_saying_it_is_nan(gate: str, metric: str, says: str) -> None:
    got = failures(_report(**{metric: math.nan}), [parse_gate(gate, OVER, "regression")])
    assert got == [f"m: {says}"]


def test_a_nan_accuracy_fails_an_under_gate() -> None:
    got = failures(_report(accuracy=math.nan), [parse_gate("accuracy=0", UNDER, "binary")])
    assert got == ["m: accuracy is NaN, which breaks accuracy < 0"]


def test_a_model_that_scored_nothing_fails_every_gate() -> None:
    report = _report(log_loss=0.0, accuracy=0.0)
    report["models"][0]["metrics"]["n"] = 0.0
    got = failures(report, [parse_gate("log_loss=0.5", OVER, "binary")])
    assert got == ["m: scored no event, which breaks log_loss > 0.5"]


def test_numbers_on_the_right_side_pass() -> None:
    gates = [parse_gate("mae=1", OVER, "regression"), parse_gate("rmse=2", OVER, "regression")]
    assert failures(_report(mae=1.0, rmse=1.5), gates) == []
    assert failures(_report(mae=1.5, rmse=1.5), gates) == ["m: mae 1.5000 breaks mae > 1"]


def test_a_nan_bound_is_refused() -> None:
    with pytest.raises(GateError, match=r"^--fail-over 'mae=nan': the bound must be a number"):
        parse_gate("mae=nan", OVER, "regression")
