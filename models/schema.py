"""What an event and a label are, and the checks every entry point applies to them.

The learn flow, the gRPC server and offline evaluation validate input with these same
functions, so a feature map that one of them accepts is accepted by all.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

TASKS = ("binary", "multiclass", "regression")

Label = bool | str | int | float
# Larger magnitudes are refused: squared inside a scaler or a linear model they overflow
# to infinity, and one such value leaves the model answering NaN from then on.
FEATURE_LIMIT = 1e100
# Event times are epoch seconds from 0001-01-01 00:00:00 to 9999-12-31 23:59:59 UTC, the
# times a date can be told for (the offline store files rows by date): NaN, infinities
# and times in milliseconds or nanoseconds are refused.
EARLIEST_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
LATEST_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
# seconds an event's time may run ahead of this machine's clock: one further ahead would
# move event time there (every prediction waiting for its label, and every entity's
# aggregates under a TTL, would expire at once); the learner refuses it
FUTURE_TOLERANCE = 86_400.0
_NUMBERS = frozenset((int, float))  # bool is not a number here


class InvalidInput(ValueError):
    """Input that cannot be learned from or scored.

    ``reason`` is a short stable code (used in dead letters and metric labels), ``field``
    names the offending field when there is one, and the message says what was wrong.
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(slots=True)
class Event:
    """One event to score: its id, event time (epoch seconds), entity key and features.

    ``label`` is set when the label travels with the event (test-then-train at once);
    ``origin`` is whatever the caller needs to report an error about it later; a Kafka
    message's (with ``topic``, ``partition`` and ``offset``) also places a drift its late
    label reveals.
    """

    id: str
    time: float
    entity: str
    features: dict[str, float]
    label: Label | None = None
    origin: Any = None


@dataclass(slots=True)
class LabelMessage:
    """The label of an event that was scored earlier, joined to it by event id."""

    id: str
    label: Label
    time: float
    origin: Any = None


Record = Event | LabelMessage  # what a stream of events with separate labels carries


def check_features(features: Any) -> dict[str, float]:
    """Return ``features`` if it maps names to finite numbers, else raise :class:`InvalidInput`.

    >>> check_features({"a": 1, "b": 2.5})
    {'a': 1, 'b': 2.5}
    >>> check_features({"a": "x"})
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: feature 'a' must be a number, got str
    >>> check_features({"a": 1e308})
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: feature 'a' is beyond +/-1e+100
    """
    if not isinstance(features, dict):
        raise InvalidInput("bad_features", "features must be an object of name: number")
    values = features.values()
    try:  # the common case, in two passes in C: the sum of the magnitudes is NaN or
        # infinite if one value is, and within the limit only if every value is
        if _NUMBERS.issuperset(map(type, values)) and sum(map(abs, values)) <= FEATURE_LIMIT:
            return features
    except OverflowError:  # an int too large for a float: out of range, said below
        pass
    return _check_each(features)


def _check_each(features: dict[Any, Any]) -> dict[str, float]:
    """:func:`check_features` one feature at a time: raises for the first bad one."""
    for name, value in features.items():
        kind = type(value)
        if kind is float and not math.isfinite(value):
            raise InvalidInput("non_finite", f"feature {name!r} is {value}", name)
        if kind is float or kind is int:
            if not -FEATURE_LIMIT <= value <= FEATURE_LIMIT:
                message = f"feature {name!r} is beyond +/-{FEATURE_LIMIT:g}"
                raise InvalidInput("out_of_range", message, name)
        else:
            raise InvalidInput(
                "bad_feature", f"feature {name!r} must be a number, got {_type_name(value)}", name
            )
    return features


def check_time(value: object) -> float:
    """Return ``value`` as a float if it is an event time in epoch seconds, else raise
    :class:`InvalidInput`: a number (not a bool) from ``EARLIEST_TIME`` to ``LATEST_TIME``.

    >>> check_time(1_700_000_000)
    1700000000.0
    >>> check_time(5e11)  # the year 17814
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: field 'time' must be epoch seconds
    """
    if (type(value) is float or type(value) is int) and EARLIEST_TIME <= value <= LATEST_TIME:
        return float(value)
    raise InvalidInput("bad_field", "field 'time' must be epoch seconds", "time")


def too_far_ahead(value: float) -> InvalidInput:
    """The refusal of a time more than :data:`FUTURE_TOLERANCE` ahead of this machine's clock,
    as the learner, an early label's wait and the server each give it."""
    return InvalidInput(
        "bad_field",
        f"field 'time' is {value}, more than a day ahead of this machine's clock",
        "time",
    )


def utc_seconds(when: dt.datetime) -> float:
    """Epoch seconds of ``when``, a naive date and time taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def text_seconds(text: str) -> float:
    """Epoch seconds written as a number or as an ISO-8601 date and time (UTC when no zone is
    given); ``ValueError`` if the text is neither.

    >>> text_seconds("1700000000.5"), text_seconds("2023-11-14T22:13:20")
    (1700000000.5, 1700000000.0)
    """
    try:
        return float(text)
    except ValueError:
        return utc_seconds(dt.datetime.fromisoformat(text))


MISSING_SHOWN = 10  # missing features a refusal names: a wide model's would not fit a header


def check_schema(features: dict[str, float], expected: frozenset[str]) -> None:
    """Raise :class:`InvalidInput` naming the missing expected features (the first
    :data:`MISSING_SHOWN` of them, in order, and how many more).

    >>> check_schema({}, frozenset(f"f{i:02}" for i in range(12)))
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: missing feature(s): 'f00', 'f01', 'f02', 'f03', 'f04', \
'f05', 'f06', 'f07', 'f08', 'f09' and 2 more
    """
    if expected.issubset(features.keys()):
        return
    missing = sorted(expected.difference(features.keys()))
    named = ", ".join(map(repr, missing[:MISSING_SHOWN]))
    more = len(missing) - MISSING_SHOWN
    raise InvalidInput(
        "missing_feature",
        f"missing feature(s): {named}" + (f" and {more} more" if more > 0 else ""),
        missing[0],
    )


def check_label(task: str, label: Any) -> Label:
    """Return ``label`` if its type fits ``task``, else raise :class:`InvalidInput`.

    Binary labels are booleans (0 and 1 become ``False`` and ``True``), multiclass labels
    strings or integers, regression labels numbers within ±``FEATURE_LIMIT`` (as features).

    >>> check_label("binary", True)
    True
    >>> check_label("regression", "high")
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: a regression label must be a finite number, got str
    >>> check_label("multiclass", 2**64)  # no JSON object could key a prediction by it
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: a multiclass label must be a string or a 64-bit integer, got int
    >>> check_label("regression", 10**400)
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: a regression label must lie within +/-1e+100
    """
    kind = type(label)
    if task == "binary":
        if kind is bool:
            return label
        if kind is int and label in (0, 1):
            return bool(label)
        expected = "true, false, 0 or 1"
        ok = False
    elif task == "multiclass":  # an int class past 64 bits cannot key a JSON prediction
        ok = kind is str or (kind is int and -(2**63) <= label < 2**63)
        expected = "a string or a 64-bit integer"
    else:
        ok = (kind is float and math.isfinite(label)) or kind is int
        expected = "a finite number"
    if not ok:
        raise InvalidInput(
            "bad_label", f"a {task} label must be {expected}, got {_type_name(label)}", "label"
        )
    if task == "regression" and not -FEATURE_LIMIT <= label <= FEATURE_LIMIT:
        raise InvalidInput(
            "out_of_range", f"a regression label must lie within +/-{FEATURE_LIMIT:g}", "label"
        )
    return label


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return str(value)
    return type(value).__name__
