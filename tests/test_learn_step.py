"""The learn step on its own (real Redis, no Kafka): records a resumed learner's state
already went past are not learned again."""

from __future__ import annotations

from typing import Any

import orjson

from flows.kafka_io import Raw
from flows.learn_step import LearnLogic
from flows.registry_sync import RegistrySync, new_learner, registry_link
from models.schema import Event

T0 = 1_700_000_000.0


def _events(topic: str, offsets: range) -> list[Event]:
    """Labelled events at ``offsets`` of partition 0 of ``topic``."""
    return [
        Event(f"e{i}", T0 + i, "a", {"x": float(i % 7)}, i % 3 == 0, Raw(topic, 0, i, None, b"", 0))
        for i in offsets
    ]


def test_records_before_the_learners_position_are_not_learned_again(make_settings: Any) -> None:
    s = make_settings(challengers=("logreg",))
    link = registry_link(s)
    logic = LearnLogic(s, new_learner(s, link), RegistrySync(s, link))
    try:
        logic.on_batch([_events(s.topic_events, range(0, 6))])
        # a source that resumed three records earlier than the state it resumed with
        (out,), _ = logic.on_batch([_events(s.topic_events, range(3, 10))])
        assert [orjson.loads(m.value)["id"] for m in out.predictions] == ["e6", "e7", "e8", "e9"]
        learner = logic.learner
        assert learner.counts.labelled == 10 and learner.counts.events == 10
        assert [slot.learned for slot in learner.slots] == [10, 10]
        assert learner.positions == {f"{s.topic_events}-0": 10}
        (out,), _ = logic.on_batch([_events(s.topic_events, range(4, 8))])  # all seen
        assert out.predictions == [] and learner.counts.labelled == 10
    finally:
        logic.on_eof()
