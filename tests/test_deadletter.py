"""Every kind of bad input goes to the dead-letter topic with its reason and original bytes,
and every good event around it is still predicted and learned."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from models.status import read_status
from tests.helpers import event, read_topic, run_flow_to_end, write_raw

GOOD_FEATURES = {"a": 1.0, "b": 2.0}

# (reason, bytes): each bad event with the exact reason its dead letter must carry.
BAD_EVENTS: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"id": "bad1", "features": {"a": 1.0'),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_field", orjson.dumps({"id": "bad3", "time": 1.0, "entity": "a"})),
    ("bad_feature", orjson.dumps({"id": "bad4", "features": {"a": "high", "b": 1.0}})),
    ("missing_feature", orjson.dumps({"id": "bad5", "time": 1e6, "features": {"a": 1.0}})),
    ("non_finite", b'{"id": "bad6", "features": {"a": NaN, "b": 18446744073709551616}}'),
    ("out_of_range", b'{"id": "bad10", "features": {"a": 1e308, "b": 1.0}}'),
    ("bad_label", orjson.dumps({"id": "bad7", "features": GOOD_FEATURES, "label": "yes"})),
    ("oversize", orjson.dumps({"id": "bad8", "features": {**GOOD_FEATURES, "pad": "x" * 5000}})),
    ("bad_field", orjson.dumps({"id": 12, "features": GOOD_FEATURES})),
    ("bad_field", orjson.dumps({"id": "", "features": GOOD_FEATURES})),
    ("bad_field", orjson.dumps({"kind": "evnt", "id": "bad13", "features": GOOD_FEATURES})),
    ("bad_field", orjson.dumps({"id": "bad14", "entity": 5, "features": GOOD_FEATURES})),
    ("bad_field", orjson.dumps({"id": "bad15", "time": "noon", "features": GOOD_FEATURES})),
    ("bad_field", orjson.dumps({"id": "bad16", "time": True, "features": GOOD_FEATURES})),
    ("bad_features", orjson.dumps({"id": "bad17", "features": [1]})),
    ("bad_features", orjson.dumps({"id": "bad18", "features": 3.0})),
    # parsed, then refused by the learner: it would move event time centuries ahead
    ("bad_field", orjson.dumps({"id": "bad19", "time": 1e10, "features": GOOD_FEATURES})),
]


def test_each_bad_input_is_dead_lettered_with_reason_and_bytes(make_settings: Any) -> None:
    s = make_settings(max_message_bytes=4096)
    messages: list[tuple[bytes | None, bytes]] = []
    expected: dict[tuple[str, int], str] = {}  # (topic, offset) of each bad message: its reason
    good = 0

    def bad(reason: str, raw: bytes) -> None:
        expected[s.topic_events, len(messages)] = reason
        messages.append((b"a", raw))

    for reason, raw in BAD_EVENTS:
        for _ in range(3):
            messages.append((b"a", event(good, {"a": float(good), "b": 1.0}, good % 2 == 0)))
            good += 1
        bad(reason, raw)
    bad("non_finite", b'{"id": "bad9", "features": {"a": 1e999, "b": 1.0}}')
    bad("malformed_json", b"")
    # a lone surrogate parses as JSON, but no prediction about this entity could be written
    bad("malformed_json", b'{"id": "bad11", "entity": "\\ud800", "features": {"a": 1, "b": 1}}')
    messages.append((b"a", event(good, {"a": 0.0, "b": 1.0}, True)))
    good += 1
    # an id that already waits for its label: its label could join only one of the two
    messages.append((b"a", event(0, {"a": 1.0, "b": 1.0}, prefix="w")))
    bad("duplicate_event", event(0, {"a": 9.0, "b": 1.0}, prefix="w"))
    write_raw(s, s.topic_events, messages)
    ghost = orjson.dumps({"kind": "label", "id": "ghost", "label": True})
    label_messages = [
        (b"z", orjson.dumps({"kind": "label", "id": "nobody", "label": True})),
        (b"z", orjson.dumps({"kind": "label", "id": "e1", "label": 3})),
        (b"z", orjson.dumps({"kind": "label", "id": 5, "label": True})),
        # two early labels for an event never seen: the first waits (and is never claimed),
        # the second could join nothing the first would not
        (b"z", ghost),
        (b"z", ghost),
        (b"z", orjson.dumps({"kind": "label", "id": "e2"})),
    ]
    expected |= {
        (s.topic_labels, 0): "unknown_event_id",
        (s.topic_labels, 1): "bad_label",
        (s.topic_labels, 2): "bad_field",
        (s.topic_labels, 3): "unknown_event_id",
        (s.topic_labels, 4): "duplicate_label",
        (s.topic_labels, 5): "missing_field",
    }
    write_raw(s, s.topic_labels, label_messages)

    run_flow_to_end(s)

    dead = read_topic(s, s.topic_deadletter)
    got = {
        (m.headers["source.topic"].decode(), int(m.headers["source.offset"])): m.headers[
            "reason"
        ].decode()
        for m in dead
    }
    assert len(dead) == len(got), "one dead letter per bad message"
    assert got == expected
    written = {
        s.topic_events: [value for _k, value in messages],
        s.topic_labels: [value for _k, value in label_messages],
    }
    for m in dead:
        assert m.headers["detail"], "a dead letter says what was wrong"
        source = written[m.headers["source.topic"].decode()]
        assert source[int(m.headers["source.offset"])] == m.value, "original bytes, exact"
        assert m.headers["source.partition"] == b"0"
    details = {m.headers["reason"].decode(): m.headers["detail"] for m in dead}
    assert details["missing_feature"] == b"missing feature(s): 'b'"
    assert b"'a'" in details["bad_feature"]
    assert details["duplicate_label"] == b"a label for event 'ghost' already waits"
    fields = sorted(
        next(name for name in ("id", "kind", "entity", "time") if f"'{name}'" in detail)
        for m in dead
        if m.headers["reason"] == b"bad_field"
        for detail in [m.headers["detail"].decode()]
    )
    assert fields == ["entity", "id", "id", "id", "kind", "time", "time", "time"], "names it"

    predicted = [m.json()["id"] for m in read_topic(s, s.topic_predictions)]
    assert predicted == [f"e{i}" for i in range(good)] + ["w0"]
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == good and status["models"][0]["learned"] == good
