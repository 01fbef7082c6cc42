"""The learn step on its own (real Redis, no Kafka): records a resumed learner's state
already went past are not learned again; what the parser lets through and the learner
refuses is dead-lettered, and the step goes on; a registry that lost its data gets the
flow's models back."""

from __future__ import annotations

import functools
import logging
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from flows.codec import Parser
from flows.kafka_io import Raw
from flows.learn_step import LearnLogic
from flows.registry_sync import RegistrySync, new_learner, registry_link
from models.promotion import Decision
from models.registry import ANY, Registry
from models.schema import Event, LabelMessage
from models.signing import loads_signed
from riverrun.local import free_port, start_redis
from tests.helpers import wait_for

T0 = 1_700_000_000.0


def _learn_step(s: Any) -> LearnLogic:
    """The learn step as the flow builds it on a first start."""
    link = registry_link(s)
    return LearnLogic(s, new_learner(s, link), RegistrySync(s, link))


def _events(topic: str, offsets: range) -> list[Event]:
    """Labelled events at ``offsets`` of partition 0 of ``topic``."""
    return [
        Event(f"e{i}", T0 + i, "a", {"x": float(i % 7)}, i % 3 == 0, Raw(topic, 0, i, None, b"", 0))
        for i in offsets
    ]


def test_records_before_the_learners_position_are_not_learned_again(make_settings: Any) -> None:
    s = make_settings(challengers=("logreg",))
    logic = _learn_step(s)
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


def test_refused_regression_labels_and_repeated_ids_are_dead_lettered(make_settings: Any) -> None:
    s = make_settings(task="regression", model_spec="linreg", drift_detector="adwin")
    logic = _learn_step(s)
    bodies = [
        b'{"id": "e0", "features": {"x": 1}, "label": 2}',
        b'{"id": "e1", "features": {"x": 1}, "label": 1%s}' % (b"0" * 400),  # past any float
        b'{"id": "e2", "features": {"x": 1}, "label": 1e200}',
        b'{"id": "e3", "features": {"x": 1}}',
        b'{"id": "e3", "features": {"x": 5}}',
        b'{"id": "e4", "features": {"x": 2}, "label": 3.5}',
    ]
    raw = [Raw(s.topic_events, 0, i, b"a", body, 1_000) for i, body in enumerate(bodies)]
    try:
        parsed = Parser(s.task, s.max_message_bytes).parse_batch(raw)
        (out,), _ = logic.on_batch([parsed.records])
        dead = parsed.dead + out.dead
        assert [(m.value, dict(m.headers or ())["reason"]) for m in dead] == [
            (bodies[1], b"out_of_range"),
            (bodies[2], b"out_of_range"),
            (bodies[4], b"duplicate_event"),
        ]
        assert [orjson.loads(m.value)["id"] for m in out.predictions] == ["e0", "e3", "e4"]
        assert logic.learner.counts.labelled == 2
        assert logic.learner.pending["e3"].features == {"x": 1.0}
    finally:
        logic.on_eof()


def test_the_settings_split_seeds_the_registry_once_and_a_split_ended_by_hand_stays_ended(
    make_settings: Any,
) -> None:
    s = make_settings(challengers=("logreg",), ab_fraction=0.25)
    first = _learn_step(s)
    reg = first.sync.registry
    try:
        assert reg.ab_fraction(s.model_name) == first.learner.ab_fraction == 0.25
    finally:
        first.on_eof()
    reg.set_ab_fraction(s.model_name, 0.0, actor="t", reason="the test is over")
    again = _learn_step(s)  # a restart with the same settings
    try:
        assert reg.ab_fraction(s.model_name) == again.learner.ab_fraction == 0.0
    finally:
        again.on_eof()


def test_a_registry_that_lost_its_data_gets_the_flows_models_back(make_settings: Any) -> None:
    s = make_settings(challengers=("logreg",), snapshot_interval=0.2, ab_fraction=0.25)
    logic = _learn_step(s)
    reg = logic.sync.registry
    try:
        logic.on_batch([_events(s.topic_events, range(0, 30))])
        wait_for(
            lambda: set(reg.aliases(s.model_name)) == {"champion", "challenger"}, 10, "aliases"
        )
        reg.client.delete(*reg.client.keys(f"riverrun:registry:{s.model_name}:*"))  # Redis lost it

        def registered_again() -> bool:
            logic.on_notify()
            return set(reg.aliases(s.model_name)) == {"champion", "challenger"}

        wait_for(registered_again, 20, "the flow's models registered again")
        assert reg.ab_fraction(s.model_name) == 0.25, "the settings' split, as on a first start"
        learner = logic.learner
        champion = reg.load(s.model_name, reg.alias(s.model_name, "champion"))
        assert (
            champion["LogisticRegression"].weights
            == learner.champion.model["LogisticRegression"].weights
        )
        logic.on_batch([_events(s.topic_events, range(30, 60))])
        assert learner.counts.labelled == 60  # and it goes on learning
    finally:
        logic.on_eof()


def test_promotions_happen_at_the_same_event_however_batched_or_resumed(
    make_settings: Any,
) -> None:
    """The promotion check runs every CHECK_EVERY labels counted from the stream's start,
    not at batch ends: runs batched differently, or resumed from a snapshot after the
    crashed run went on, promote at the same event and end with the same champion."""
    common = {"model_spec": "river.dummy:NoChangeClassifier", "challengers": ("logreg",)}

    def run(batch: int, *, crash_after: int | None = None, resumed_batch: int = 0) -> Any:
        s = make_settings(**common)
        logic = _learn_step(s)
        stream = _events(s.topic_events, range(3_000))
        batches = [stream[i : i + batch] for i in range(0, len(stream), batch)]
        for n, records in enumerate(batches):
            logic.on_batch([records])
            if n == crash_after:
                state = logic.snapshot()
                for later in batches[n + 1 : n + 3]:  # the crashed run went on past it
                    logic.on_batch([later])
                logic.sync.link.close()
                resumed = loads_signed(state, logic.key)
                logic = LearnLogic(s, resumed, RegistrySync(s, registry_link(s)))
                rest = stream[(n + 1) * batch :]
                for i in range(0, len(rest), resumed_batch):
                    logic.on_batch([rest[i : i + resumed_batch]])
                break
        logic.on_eof()
        learner = logic.learner
        weights = learner.champion.model["LogisticRegression"].weights
        return [p.at_event for p in learner.promotions], learner.champion.spec, weights

    straight = run(200)
    assert straight[0] and straight[1] == "logreg", "the challenger wins once"
    assert run(170) == straight
    assert run(230) == straight
    assert run(200, crash_after=2, resumed_batch=230) == straight
    assert straight[0] == [1_250], "the crashed run of the next case promotes before its crash"
    assert run(200, crash_after=4, resumed_batch=170) == straight


def test_a_drift_found_by_a_late_label_is_placed_at_its_event(make_settings: Any) -> None:
    """Labels come 500 events late: a concept drift their join reveals is stamped with the
    position just past the drifting event, so that a retrain of it starts there and finds
    the labels of the events after it (the flow's own position is 500 events further)."""
    s = make_settings(drift_detector="adwin", data_drift_window=0)
    logic = _learn_step(s)
    rng = random.Random(3)
    records: list[Any] = []
    labels: list[LabelMessage] = []
    for i in range(6000):
        x = rng.uniform(-1, 1)
        raw = Raw(s.topic_events, 0, i, None, b"", 0)
        records.append(Event(f"e{i}", T0 + i, "a", {"x": x}, None, raw))
        flipped = i >= 3000  # the concept changes at event 3,000
        label = LabelMessage(f"e{i}", (x > 0) != flipped, T0 + i)
        labels.append(label)
        if i >= 500:  # the label of event i - 500 comes now
            late = labels[i - 500]
            records.append(replace(late, origin=Raw(s.topic_labels, 0, i - 500, None, b"", 0)))
    drifts = []
    try:
        for start in range(0, len(records), 200):
            events = [r for r in records[start : start + 200] if type(r) is Event]
            late = [r for r in records[start : start + 200] if type(r) is LabelMessage]
            (out,), _ = logic.on_batch([events, late])
            drifts += [orjson.loads(m.value) for m in out.drift]
    finally:
        logic.on_eof()
    concept = [d for d in drifts if d["kind"] == "concept" and d["source"] == "champion"]
    assert concept, "the flip is found"
    first = concept[0]
    event = int(first["event_id"].removeprefix("e"))
    assert 3000 <= event < 3500
    assert first["positions"] == {
        f"{s.topic_events}-0": event + 1,
        f"{s.topic_labels}-0": event + 1,
    }


def test_a_first_start_with_recovery_waits_for_its_first_versions(
    make_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis comes up only after the registration's usual wait of 5 s: with recovery on,
    the first start waits for its versions, which are what a run killed before its first
    snapshot restarts from."""
    port = free_port()
    s = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", recovery_dir=str(tmp_path))
    started: list[LearnLogic] = []
    caplog.set_level(logging.WARNING, logger="flows.registry_sync")
    starting = threading.Thread(target=lambda: started.append(_learn_step(s)), daemon=True)
    starting.start()

    def waiting() -> bool:  # logged each time the usual wait ran out
        return any(
            "waiting for the registry to take the first models" in r.getMessage()
            for r in list(caplog.records)
        )

    # Redis is down until then (started from this thread: it outlives it)
    wait_for(waiting, 30, "the first start to say it waits for the registry")
    assert not started, "the first start waits for its versions"
    server = start_redis(tmp_path, port)
    try:
        starting.join(60)
        (logic,) = started
        version = logic.learner.champion.version
        assert version is not None
        assert logic.sync.registry.info(s.model_name, version).events_seen == 0
        logic.on_eof()
    finally:
        server.stop()


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("failure", ["conflict", "outage"])
def test_a_promotion_whose_challenger_move_fails_is_still_a_swap(
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    failure: str,
    keep: bool,
) -> None:
    """Once the champion alias moved, the promotion happened: the flow must run the new
    champion as champion even if setting the old one as challenger (or removing the alias,
    when the old champion is not kept) then fails.

    Both failures are real. The conflict: another connection moves the challenger alias
    between the flow's two moves, so Redis refuses the second; that move stands, and the
    flow shadows the version it names. The outage: the flow's Redis (a private, durable
    one) stops between the two moves and comes back, with its data, once the promotion is
    done; the alias is mended then."""
    caplog.set_level(logging.WARNING, logger="flows.registry_sync")
    servers = [start_redis(tmp_path, durable=True)] if failure == "outage" else []
    private = {"redis_url": f"redis://127.0.0.1:{servers[0].port}/0"} if servers else {}
    s = make_settings(challengers=("logreg",), promote_keep_old=keep, **private)
    logic = _learn_step(s)
    reg = logic.sync.registry
    try:
        logic.on_batch([_events(s.topic_events, range(0, 30))])
        wait_for(lambda: set(reg.aliases(s.model_name)) == {"champion", "challenger"}, 10, "both")
        learner = logic.learner
        champion, challenger = learner.slots
        move = reg.move_alias
        tried: list[str] = []

        other = Registry.connect(s.redis_url, s.registry_key)  # someone else's connection
        elsewhere = champion.version  # where someone else points the challenger alias

        def conflicting(model: str, alias: str, *args: Any, **kwargs: Any) -> Any:
            tried.append(alias)
            if alias != "champion":
                if failure == "conflict":  # someone else moves it first: Redis refuses ours
                    other.move_alias(model, alias, elsewhere, expected=ANY, actor="ops", reason="r")
                else:
                    servers[0].stop()  # Redis goes away between the two moves
            return move(model, alias, *args, **kwargs)

        monkeypatch.setattr(reg, "move_alias", conflicting)
        decision = Decision(True, "better", 1000, 0.1, 0.5, 3.0, 0.001)
        logic.sync._promote(learner, challenger, decision)
        assert tried == ["champion", "challenger"], "both moves were tried"
        said = [r.getMessage() for r in caplog.records if "was not moved yet" in r.getMessage()]
        assert len(said) == 1, "the second move failed"
        monkeypatch.undo()
        if servers:  # back, with what it held
            servers[0] = start_redis(tmp_path, servers[0].port, durable=True)
        assert learner.champion is challenger and [p.to_spec for p in learner.promotions] == [
            "logreg"
        ]
        assert reg.alias(s.model_name, "champion") == challenger.version
        assert (champion in learner.slots) is keep, "kept as a challenger if the settings say"
        before = reg.alias(s.model_name, "challenger")
        logic.on_notify()
        if failure == "conflict":  # someone else's move stands, and the flow follows it
            assert before == elsewhere and reg.alias(s.model_name, "challenger") == elsewhere
            adopted = learner.slot("challenger")
            assert adopted is not None and adopted is not champion
            assert adopted.version == elsewhere, "the flow shadows what the registry names"
            return
        # the registry still names the new champion's earlier snapshot
        if not keep:
            assert "challenger" not in reg.aliases(s.model_name), "no stale challenger to serve"
            assert learner.slots == [challenger]
            return
        assert learner.slot("challenger") is champion, "that snapshot is not adopted"
        logic.sync.checkpoint_all(learner)
        assert logic.sync.link.final(timeout=10.0)
        moved = reg.alias(s.model_name, "challenger")
        assert moved is not None and before is not None and moved > before
    finally:
        monkeypatch.undo()
        if servers and not servers[0].alive():  # failed before Redis came back
            servers[0] = start_redis(tmp_path, servers[0].port, durable=True)
        try:
            logic.on_eof()
        finally:
            for server in servers:
                server.stop()


def test_a_step_resumed_from_a_snapshot_counts_only_its_own_work_in_prometheus(
    make_settings: Any,
) -> None:
    """A restart's counters start from zero, as Prometheus expects of a new process: the
    learned events the snapshot brings were counted by the process that learned them, and
    counting them again read as a burst of work right after each restart."""
    s = make_settings()
    labelled = functools.partial(
        REGISTRY.get_sample_value, "riverrun_labelled_total", {"model": s.model_name}
    )
    first = _learn_step(s)
    first.on_batch([_events(s.topic_events, range(0, 50))])
    state = first.snapshot()
    first.on_eof()
    assert labelled() == 50
    resumed = LearnLogic(s, loads_signed(state, first.key), RegistrySync(s, registry_link(s)))
    resumed.on_batch([_events(s.topic_events, range(50, 70))])
    resumed.on_eof()
    assert resumed.learner.counts.labelled == 70 and labelled() == 70, "20 more, not 70"


def test_a_split_written_into_redis_by_hand_stops_no_flow(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A flow that starts on an unreadable split keeps its own (it raised ValueError, and a
    restart raised it again)."""
    s = make_settings(ab_fraction=0.25)
    redis_client = registry_link(s).registry.client
    redis_client.set(f"riverrun:registry:{s.model_name}:ab", b"xyz")
    logic = _learn_step(s)
    try:
        (out,), _ = logic.on_batch([_events(s.topic_events, range(0, 5))])
        assert len(out.predictions) == 5 and logic.learner.ab_fraction == 0.25, "its settings'"
        assert "keeping the A/B split 0.25: the A/B split of" in caplog.text
    finally:
        logic.on_eof()


def test_specs_the_registry_overrides_are_named_in_a_warning(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A model with a champion and challengers in the registry learns those: a spec asked for
    in the settings is ignored, and said to be (it used to be ignored without a word)."""
    s = make_settings(challengers=("logreg",))
    _learn_step(s).on_eof()  # a first start registers the champion and the challenger
    asked = replace(s, model_spec="hoeffding", challengers=("linreg",))
    with caplog.at_level(logging.WARNING, logger="flows.registry_sync"):
        learner = new_learner(asked, registry_link(asked))
    assert [slot.spec for slot in learner.slots] == ["logreg", "logreg"]
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"the registry already has a champion for {s.model_name} (logreg): "
        "RIVERRUN_MODEL_SPEC=hoeffding is ignored (push a model of that spec with riverrun "
        "registry push)",
        f"the registry already has challengers for {s.model_name}: RIVERRUN_CHALLENGERS is "
        "ignored (push or remove challengers in the registry)",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flows.registry_sync"):
        new_learner(replace(s, challengers=()), registry_link(s))
    assert caplog.records == [], "nothing asked for, nothing ignored"
