"""Shortcuts on the flow's hot path answer exactly as the plain code they stand for."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

from models.evaluation import Prequential, _clamp, log_loss, predicted_label
from models.schema import FEATURE_LIMIT, InvalidInput, _check_each, check_features

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2 * FEATURE_LIMIT, 2 * FEATURE_LIMIT),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, None, "1", 1e100, 10**100]),
)


def _outcome(check: Any, features: dict[str, Any]) -> tuple[str, str] | dict[str, Any]:
    try:
        return check(features)  # type: ignore[no-any-return]
    except InvalidInput as exc:
        return exc.reason, str(exc)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(st.text(max_size=3), VALUES, max_size=6))
def test_feature_check_accepts_and_refuses_as_the_feature_by_feature_loop(
    features: dict[str, Any],
) -> None:
    assert _outcome(check_features, features) == _outcome(_check_each, features)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.dictionaries(
        st.one_of(st.booleans(), st.integers(0, 3), st.text(max_size=2)),
        st.one_of(st.floats(0, 1), st.sampled_from([0.5, math.nan])),
        max_size=4,
    )
)
def test_predicted_label_is_the_first_most_probable_class(proba: dict[Any, float]) -> None:
    expected = max(proba, key=proba.__getitem__) if proba else None
    assert predicted_label(proba) == expected


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(
    st.one_of(st.floats(), st.sampled_from([0.0, 1e-15, 1 - 1e-15, 1.0])),
    st.booleans(),
)
def test_probability_clamps_and_losses_are_rivers(p_true: float, y: bool) -> None:
    assert _same(_clamp(p_true), utils.math.clamp(p_true, 1e-15, 1 - 1e-15))
    proba = {False: 1 - p_true, True: p_true}
    loss = Prequential("binary", 10).update(y, proba)  # the clamp written inline
    assert _same(loss, log_loss(y, proba, "binary"))
    if not math.isnan(p_true):
        river_loss = metrics.LogLoss()
        river_loss.update(y, proba)
        assert _same(loss, river_loss.get())
