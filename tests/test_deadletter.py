"""Every kind of bad input goes to the dead-letter topic with its reason and original bytes,
and every good event around it is still predicted and learned."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from models.status import read_status
from tests.helpers import event, read_topic, run_flow_to_end, write_raw

BAD_EVENTS: dict[str, bytes] = {
    "malformed_json": b'{"id": "bad1", "features": {"a": 1.0',
    "not_an_object": b"[1, 2, 3]",
    "missing_field": orjson.dumps({"id": "bad3", "time": 1.0, "entity": "a"}),
    "bad_feature": orjson.dumps({"id": "bad4", "features": {"a": "high", "b": 1.0}}),
    "missing_feature": orjson.dumps({"id": "bad5", "time": 1e6, "features": {"a": 1.0}}),
    "non_finite": b'{"id": "bad6", "features": {"a": NaN, "b": 18446744073709551616}}',
    "out_of_range": b'{"id": "bad10", "features": {"a": 1e308, "b": 1.0}}',
    "bad_label": orjson.dumps({"id": "bad7", "features": {"a": 1.0, "b": 2.0}, "label": "yes"}),
    "oversize": orjson.dumps({"id": "bad8", "features": {"a": 1.0, "b": 2.0, "pad": "x" * 5000}}),
}


def test_each_bad_input_is_dead_lettered_with_reason_and_bytes(make_settings: Any) -> None:
    s = make_settings(max_message_bytes=4096)
    messages: list[tuple[bytes | None, bytes]] = []
    good = 0
    for _reason, raw in BAD_EVENTS.items():
        for _ in range(3):
            messages.append((b"a", event(good, {"a": float(good), "b": 1.0}, good % 2 == 0)))
            good += 1
        messages.append((b"a", raw))
    messages.append((b"a", b'{"id": "bad9", "features": {"a": 1e999, "b": 1.0}}'))
    messages.append((b"a", b""))
    # a lone surrogate parses as JSON, but no prediction about this entity could be written
    messages.append((b"a", b'{"id": "bad11", "entity": "\\ud800", "features": {"a": 1, "b": 1}}'))
    messages.append((b"a", event(good, {"a": 0.0, "b": 1.0}, True)))
    good += 1
    # an id that already waits for its label: its label could join only one of the two
    waiting = event(0, {"a": 1.0, "b": 1.0}, prefix="w")
    messages += [(b"a", waiting), (b"a", event(0, {"a": 9.0, "b": 1.0}, prefix="w"))]
    write_raw(s, s.topic_events, messages)
    label_messages = [
        (b"z", orjson.dumps({"kind": "label", "id": "nobody", "label": True})),
        (b"z", orjson.dumps({"kind": "label", "id": "e1", "label": 3})),
    ]
    write_raw(s, s.topic_labels, label_messages)

    run_flow_to_end(s)

    dead = read_topic(s, s.topic_deadletter)
    reasons = [m.headers["reason"].decode() for m in dead]
    assert sorted(reasons) == sorted(
        [
            *BAD_EVENTS,
            "non_finite",
            "malformed_json",
            "malformed_json",
            "unknown_event_id",
            "bad_label",
            "duplicate_event",
        ]
    )
    written = {
        s.topic_events: [value for _k, value in messages],
        s.topic_labels: [value for _k, value in label_messages],
    }
    for m in dead:
        assert m.headers["detail"], "a dead letter says what was wrong"
        source = written[m.headers["source.topic"].decode()]
        assert source[int(m.headers["source.offset"])] == m.value, "original bytes, exact"
        assert m.headers["source.partition"] == b"0"
    by_reason = {m.headers["reason"].decode(): m for m in dead}
    assert by_reason["missing_feature"].headers["detail"] == b"missing feature(s): 'b'"
    assert b"'a'" in by_reason["bad_feature"].headers["detail"]

    predicted = [m.json()["id"] for m in read_topic(s, s.topic_predictions)]
    assert predicted == [f"e{i}" for i in range(good)] + ["w0"]
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == good and status["models"][0]["learned"] == good
