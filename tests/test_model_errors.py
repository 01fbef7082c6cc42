"""A model whose own code fails never stops the flow: a failing challenger is taken out, an
event the champion cannot score is dead-lettered with the reason."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import redis

from models.evaluation import Prequential
from models.learner import ModelError, OnlineLearner, Slot
from models.registry import Registry
from models.schema import Event, InvalidInput, LabelMessage
from models.specs import build_model
from models.status import read_status
from tests.helpers import event, read_topic, run_flow_to_end, write_raw
from tests.recorder import Clumsy, Flaky


def _events(n: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(4)
    return [({"v": rng.random(), "w": rng.random()}, rng.random() < 0.5) for _ in range(n)]


def test_a_failing_challenger_is_taken_out_and_the_champion_goes_on() -> None:
    champion = Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 10))
    flaky = Slot("flaky", Flaky(), Prequential("binary", 10), "challenger", version=7)
    lr = OnlineLearner("binary", [champion, flaky])
    for i, (x, y) in enumerate(_events(300)):
        lr.on_event(Event(str(i), float(i), "a", x, y))
    assert [s.alias for s in lr.slots] == ["champion"]
    (broken,) = lr.broken
    assert (broken.alias, broken.spec, broken.version) == ("challenger", "flaky", 7)
    assert "flaky model: v is too high" in broken.error
    assert champion.learned == 300 and lr.counts.model_errors == 1


def test_a_challenger_that_fails_to_learn_beside_another_is_taken_out_of_the_contest() -> None:
    """Its loss of the event it failed on was still paired with the champion's (KeyError)."""
    champion = Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 10))
    rival = Slot("logreg", build_model("logreg", "binary", 1), Prequential("binary", 10), "c-2")
    clumsy = Slot("clumsy", Clumsy(), Prequential("binary", 10), "challenger", version=3)
    lr = OnlineLearner("binary", [champion, rival, clumsy])
    for i, (x, y) in enumerate(_events(300)):
        lr.on_event(Event(str(i), float(i), "a", x, y))
    assert [s.alias for s in lr.slots] == ["champion", "c-2"]
    assert [b.alias for b in lr.broken] == ["challenger"] and lr.counts.model_errors == 1
    assert len(lr.contest.paired[rival.uid]) == 300, "the rival's contest went on"


def test_a_champion_that_fails_to_learn_an_event_has_not_learned_it() -> None:
    lr = OnlineLearner("binary", [Slot("clumsy", Clumsy(), Prequential("binary", 10))])
    events = _events(300)
    for i, (x, y) in enumerate(events):
        lr.on_event(Event(str(i), float(i), "a", x, y))
    failed = sum(x["v"] > 0.9 for x, _ in events)
    assert failed > 0 and lr.counts.model_errors == failed
    assert lr.champion.learned == 300 - failed and lr.counts.labelled == 300


def test_an_event_the_champion_cannot_score_raises_and_changes_nothing() -> None:
    lr = OnlineLearner("binary", [Slot("flaky", Flaky(), Prequential("binary", 10))])
    lr.on_event(Event("ok", 0.0, "a", {"v": 0.1}, True))
    with pytest.raises(ModelError, match="the champion flaky v0 failed to predict"):
        lr.on_event(Event("bad", 1.0, "a", {"v": 0.99}, True))
    assert lr.counts.events == 1 and lr.counts.labelled == 1 and lr.champion.learned == 1


def test_the_flow_dead_letters_what_the_champion_cannot_score(make_settings: Any) -> None:
    s = make_settings(model_spec="tests.recorder:flaky", challengers=("tests.recorder:flaky",))
    data = _events(200)
    write_raw(s, s.topic_events, [(b"a", event(i, x, y)) for i, (x, y) in enumerate(data)])
    run_flow_to_end(s)
    bad = {f"e{i}" for i, (x, _) in enumerate(data) if x["v"] > 0.9}
    dead = read_topic(s, s.topic_deadletter)
    assert {m.json()["id"] for m in dead} == bad and bad
    assert {m.headers["reason"] for m in dead} == {b"model_error"}
    served = {m.json()["id"] for m in read_topic(s, s.topic_predictions)}
    assert served == {f"e{i}" for i in range(200)} - bad
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and [m["alias"] for m in status["models"]] == ["champion"]
    registry = Registry.connect(s.redis_url, s.registry_key)
    assert list(registry.aliases(s.model_name)) == ["champion"], "no restart adopts it again"
    (removal,) = [m for m in registry.history(s.model_name) if m.to_version is None]
    assert removal.alias == "challenger" and "its code failed" in removal.reason


def test_a_multiclass_label_of_another_type_is_refused_and_trees_go_on() -> None:
    """River's trees sort their classes: one 7 among "cat" and "dog" failed every later
    prediction of a hoeffding champion, for good (each event a model_error)."""
    tree = Slot(
        "hoeffding", build_model("hoeffding", "multiclass", 0), Prequential("multiclass", 10)
    )
    lr = OnlineLearner("multiclass", [tree])
    for i in range(5):
        lr.on_event(Event(f"c{i}", float(i), "a", {"v": 0.1 * i}, "cat"))
    lr.on_event(Event("n", 5.0, "a", {"v": 0.5}))
    with pytest.raises(
        InvalidInput, match="must be a str, as the first one learned was, got int 7"
    ) as exc:
        lr.on_label(LabelMessage("n", 7, 5.0))
    assert exc.value.reason == "bad_label"
    with pytest.raises(InvalidInput, match="got int 7"):
        lr.on_event(Event("i", 6.0, "a", {"v": 0.6}, 7))
    for i in range(5):
        lr.on_event(Event(f"d{i}", 7.0 + i, "a", {"v": 0.1 * i}, "dog"))
    lr.on_label(LabelMessage("n", "dog", 12.0))
    assert lr.counts.model_errors == 0 and tree.learned == 11


def test_the_flow_dead_letters_a_multiclass_label_of_another_type(make_settings: Any) -> None:
    s = make_settings(task="multiclass", model_spec="hoeffding", challengers=("arf",))
    classes = ["cat", "dog", "emu"]
    events = [(b"a", event(i, {"v": float(i % 3)}, classes[i % 3])) for i in range(60)]
    events.insert(30, (b"a", event(99, {"v": 1.0}, 1)))  # an int beside the strings
    events.append((b"a", event(60, {"v": 0.0})))  # its label comes on the labels topic
    write_raw(s, s.topic_events, events)
    late = orjson.dumps({"kind": "label", "id": "e60", "label": 2})
    write_raw(s, s.topic_labels, [(b"z", late)])
    run_flow_to_end(s)
    dead = read_topic(s, s.topic_deadletter)
    assert sorted((m.headers["reason"], m.headers["source.topic"].decode()) for m in dead) == [
        (b"bad_label", s.topic_events),
        (b"bad_label", s.topic_labels),
    ]
    served = [m.json()["id"] for m in read_topic(s, s.topic_predictions)]
    assert served == [f"e{i}" for i in range(61)], "no model_error after the int"
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and status["labelled"] == 60
    assert [m["alias"] for m in status["models"]] == ["champion", "challenger"]


def test_only_a_label_learned_sets_the_type_the_others_must_have() -> None:
    """The first label seen set it: a 7 that was then refused, or never met its event, made
    every later "cat" a bad_label, for good."""
    tree = Slot(
        "hoeffding", build_model("hoeffding", "multiclass", 0), Prequential("multiclass", 10)
    )
    lr = OnlineLearner("multiclass", [tree])
    with pytest.raises(InvalidInput, match="more than a day ahead"):
        lr.on_event(Event("far", 1e10, "a", {"v": 0.0}, 7))
    lr.on_label(LabelMessage("ghost", 7, 0.0))  # waits for an event that comes only later
    for i in range(5):
        lr.on_event(Event(f"c{i}", float(i), "a", {"v": 0.1 * i}, "cat"))
    assert lr.label_type is str
    lr.on_event(Event("ghost", 6.0, "a", {"v": 0.5}))  # its early label: a 7
    assert "ghost" in lr.pending and [label.id for label in lr.expire()] == ["ghost"]
    assert lr.counts.model_errors == 0 and tree.learned == 5
