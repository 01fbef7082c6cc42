"""Property-based fuzzing of the learn flow through the real broker: arbitrary bytes and JSON
on the events and labels topics, mixed with good events and good labels. The flow never
stops, each bad message is dead-lettered exactly once with a reason and its bytes, every
good event is predicted once and learned (by its inline label or one on the labels topic),
and whatever was accepted is predicted instead of dead-lettered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.schema import EARLIEST_TIME, LATEST_TIME
from models.status import read_status
from tests.helpers import read_topic, run_flow_to_end, write_raw

MAX_BYTES = 2048
REASONS = {
    "oversize",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "bad_field",
    "bad_features",
    "bad_feature",
    "non_finite",
    "out_of_range",
    "missing_feature",
    "bad_label",
    "unknown_event_id",
    "duplicate_label",
}
# Text as JSON can carry it: lone UTF-16 surrogates included ("\ud800" parses, then no
# UTF-8 output holds it), which Hypothesis's own characters never give.
CHARACTERS = st.characters() | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(CHARACTERS, max_size=10)
    | st.sampled_from(["", "id", "label", "event", "features", "e-1"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(CHARACTERS, max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
EDGES = [
    10**400,
    -(2**1024),
    2**1024 - 2**970,
    2**1024 - 2**970 - 1,
    2**64,
    1e308,
    -1e308,
    5e-324,
    -0.0,
]
# Good events happen about now: an event with no time of its own takes its Kafka timestamp,
# and good labels must not expire (label_ttl is counted in event time; the test allows days).
NOW = float(int(time.time()))
NUMBERS = st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGES)


def _dumps(value: Any) -> bytes:
    """JSON as producers in the wild write it: NaN and Infinity as bare words."""
    return json.dumps(value).encode()


def _good(i: int) -> dict[str, Any]:
    return {
        "id": f"good-event-{i:05d}",
        "time": NOW + i,
        "entity": "a",
        "features": {"a": i * 0.25, "b": float(i % 7 - 3)},
        "label": i % 3 == 0,
    }


def _label_of(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` without its label, and the labels-topic message that carries it."""
    label = {"kind": "label", "id": event["id"], "label": event.pop("label"), "time": event["time"]}
    return label


def _not_a_json_object(raw: bytes) -> bool:
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return True


def _not(valid: Any) -> Any:
    """Arbitrary JSON for which ``valid`` is false."""
    return JSON.filter(lambda v: not valid(v))


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and v == v and abs(v) != float("inf")


CORRUPTIONS: dict[str, Any] = {
    "id": _not(lambda v: isinstance(v, str) and v != ""),
    "time": _not(lambda v: v is None or (_is_number(v) and EARLIEST_TIME <= v <= LATEST_TIME)),
    "entity": _not(lambda v: v is None or isinstance(v, str)),
    "label": _not(lambda v: v is None or (v in (True, False) and type(v) in (bool, int))),
    "kind": _not(lambda v: v in ("event", "label")),
    "features": _not(lambda v: isinstance(v, dict) and all(map(_is_number, v.values()))),
    "feature": _not(_is_number) | st.sampled_from([float("nan"), float("inf"), -float("inf")]),
}


@st.composite
def bad_events(draw: Any) -> bytes:
    """Bytes that no event parser should accept: noise, non-objects, or an event with one
    field broken, a feature missing, a lone surrogate in its text, or too many bytes."""
    how = draw(st.sampled_from(["bytes", "json", "missing", "oversize", "surrogate", *CORRUPTIONS]))
    if how == "bytes":
        return draw(st.binary(max_size=300).filter(_not_a_json_object))
    if how == "json":
        return _dumps(draw(_not(lambda v: isinstance(v, dict))))
    event = _good(draw(st.integers(0, 10**6)))
    event["id"] = f"bad-{event['id']}"
    if how == "missing":
        gone = draw(st.sampled_from(["id", "features", "b"]))
        del (event["features"] if gone == "b" else event)[gone]
    elif how == "oversize":
        event["pad"] = "x" * MAX_BYTES
    elif how == "surrogate":
        where = draw(st.sampled_from(["id", "entity", "feature name"]))
        if where == "feature name":
            event["features"]["\ud800"] = 1.0
        else:
            event[where] += "\udfff"
    elif how == "feature":
        event["features"][draw(st.sampled_from(["a", "b"]))] = draw(CORRUPTIONS["feature"])
    else:
        event[how] = draw(CORRUPTIONS[how])
    return _dumps(event)


@st.composite
def odd_events(draw: Any, number: int) -> bytes:
    """Event-shaped objects that may or may not be acceptable: arbitrary keys and values, and
    numbers at the edges of what floats hold."""
    event: dict[str, Any] = draw(st.dictionaries(st.text(CHARACTERS, max_size=6), JSON, max_size=3))
    extra = draw(st.dictionaries(st.text(CHARACTERS, max_size=4), JSON, max_size=2))
    event.update(id=f"odd-{number}", features={"a": draw(NUMBERS), "b": draw(NUMBERS), **extra})
    event.pop("kind", None)
    event.pop("time", None)  # its Kafka timestamp: near the good events' time
    if draw(st.booleans()):
        event["label"] = draw(JSON)
    return _dumps(event)


@st.composite
def bad_labels(draw: Any) -> bytes:
    """Label-topic messages that cannot join a waiting prediction."""
    how = draw(st.sampled_from(["bytes", "json", "label", "id", "unknown"]))
    if how == "bytes":
        return draw(st.binary(max_size=200).filter(_not_a_json_object))
    if how == "json":
        return _dumps(draw(_not(lambda v: isinstance(v, dict))))
    label: dict[str, Any] = {"kind": "label", "id": f"nobody-{draw(st.integers(0, 99))}"}
    label["label"] = draw(CORRUPTIONS["label"]) if how == "label" else draw(st.booleans())
    if how == "id":
        label["id"] = draw(CORRUPTIONS["id"])
    return _dumps(label)


@dataclass
class Stream:
    """What one example writes: events and label-topic messages, each with its class."""

    events: list[tuple[str, bytes]] = field(default_factory=list)
    labels: list[tuple[str, bytes]] = field(default_factory=list)


@st.composite
def streams(draw: Any) -> Stream:
    """Good events, the first one leading, shuffled with bad and odd ones; the labels of
    some good events on the labels topic, shuffled with bad labels."""
    goods, good_labels = [], []
    for i in range(draw(st.integers(5, 25))):
        event = _good(i)
        if i and draw(st.booleans()):
            good_labels.append(("good", _dumps(_label_of(event))))
        goods.append(("good", _dumps(event)))
    others = [("bad", raw) for raw in draw(st.lists(bad_events(), min_size=1, max_size=25))]
    others += [("odd", draw(odd_events(k))) for k in range(draw(st.integers(0, 8)))]
    mixed = draw(st.permutations(goods[1:] + others))
    bad = [("bad", raw) for raw in draw(st.lists(bad_labels(), max_size=10))]
    return Stream([goods[0], *mixed], draw(st.permutations(good_labels + bad)))


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams())
def test_arbitrary_input_is_dead_lettered_once_and_good_events_learned(
    make_settings: Any, stream: Stream
) -> None:
    # Odd events take their Kafka timestamp, now, while good ones are stamped from NOW, the
    # time of import: however long the session ran before this test, no label expires.
    s = make_settings(max_message_bytes=MAX_BYTES, label_ttl=30 * 24 * 3600.0)
    write_raw(s, s.topic_events, [(b"a", raw) for _kind, raw in stream.events])
    write_raw(s, s.topic_labels, [(None, raw) for _kind, raw in stream.labels])

    run_flow_to_end(s)  # raises if the flow stopped on anything

    dead = read_topic(s, s.topic_deadletter)
    where = Counter(
        (m.headers["source.topic"].decode(), int(m.headers["source.offset"])) for m in dead
    )
    assert max(where.values(), default=1) == 1, "a message dead-lettered twice"
    sent = {
        topic: [raw for _kind, raw in messages]
        for topic, messages in ((s.topic_events, stream.events), (s.topic_labels, stream.labels))
    }
    for m in dead:
        assert m.headers["reason"].decode() in REASONS and m.headers["detail"]
        assert sent[m.headers["source.topic"].decode()][int(m.headers["source.offset"])] == m.value
    predicted = Counter(m.json()["id"] for m in read_topic(s, s.topic_predictions))
    assert max(predicted.values(), default=1) == 1, "an event predicted twice"
    learned = 0
    for offset, (kind, raw) in enumerate(stream.events):
        rejected = (s.topic_events, offset) in where
        if kind == "bad":
            assert rejected, f"accepted {raw[:200]!r}"
            continue
        event = json.loads(raw)
        assert rejected != (event["id"] in predicted), f"{raw[:200]!r}: predicted or rejected"
        assert kind == "odd" or not rejected, f"rejected good event {raw!r}"
        labelled = kind == "good" or event.get("label") is not None  # good: inline or later
        learned += event["id"] in predicted and labelled
    for offset, (kind, raw) in enumerate(stream.labels):
        assert ((s.topic_labels, offset) in where) == (kind == "bad"), f"label {raw[:200]!r}"
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["models"][0]["learned"] == status["labelled"] == learned
