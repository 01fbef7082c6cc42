"""Shortcuts on the flow's hot path answer exactly as the plain code they stand for."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation import predicted_label
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


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=3), VALUES, max_size=6))
def test_feature_check_accepts_and_refuses_as_the_feature_by_feature_loop(
    features: dict[str, Any],
) -> None:
    assert _outcome(check_features, features) == _outcome(_check_each, features)


@settings(max_examples=300, deadline=None)
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
