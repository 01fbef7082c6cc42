"""The online feature store: the learn flow writes each entity's latest state to Redis, and
writes survive a Redis outage without stopping anything."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from flows.feature_step import ByPartition
from models.feature_store import FeatureStore, FeatureWriter
from models.features import EntityFeatures, FeatureSpec
from models.schema import Event
from riverrun.local import start_redis
from tests.helpers import event, run_flow_to_end, write_raw

ITEMS = ("count", "since_last", "mean:x")


def test_flow_writes_every_entitys_latest_state_and_the_spec(make_settings: Any) -> None:
    s = make_settings(entity_features=ITEMS)
    entities = [f"user-{i % 7}" for i in range(300)]
    features = [{"x": float(i % 11), "y": float(i % 3)} for i in range(300)]
    write_raw(
        s,
        s.topic_events,
        [
            (e.encode(), event(i, f, i % 2 == 0, entity=e))
            for i, (e, f) in enumerate(zip(entities, features, strict=True))
        ],
    )
    run_flow_to_end(s)

    spec = FeatureSpec.parse(ITEMS)
    offline = EntityFeatures(spec)
    for i, (e, f) in enumerate(zip(entities, features, strict=True)):
        offline.update(e, 1_000_000.0 + i, f)
    store = FeatureStore.connect(s.redis_url, s.model_name)
    assert store.read_spec() == spec
    assert store.read_many(spec, sorted(offline.entities)) == [
        offline.entities[e] for e in sorted(offline.entities)
    ]
    assert store.read(spec, "nobody") is None
    assert store.read(FeatureSpec.parse(["count"]), "user-1") is None, "another layout"


def test_writer_keeps_entities_through_an_outage_and_writes_them_after(tmp_path: Path) -> None:
    server = start_redis(tmp_path, durable=True)
    try:
        spec = FeatureSpec.parse(["count"])
        store = FeatureStore.connect(f"redis://127.0.0.1:{server.port}/0", "outage")
        now = [0.0]
        writer = FeatureWriter(store, spec, clock=lambda: now[0])
        assert writer.write({"a": [1.0, 5.0]}, ["a"])
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()

        states = {"a": [2.0, 6.0], "b": [1.0, 6.0]}
        assert not writer.write(states, ["a", "b"]), "a failed write is reported"
        assert writer.failures == 1 and writer.dirty == {"a", "b"}
        states["c"] = [1.0, 7.0]
        assert writer.write(states, ["c"]), "backing off: nothing tried"
        assert writer.failures == 1

        server = start_redis(tmp_path, server.port, durable=True)
        now[0] += 1.0  # past the backoff
        assert writer.write(states, [])
        assert writer.dirty == set()
        assert store.read_many(spec, ["a", "b", "c"]) == [[2.0, 6.0], [1.0, 6.0], [1.0, 7.0]]
    finally:
        server.stop()


def test_with_a_ttl_idle_entities_are_forgotten_by_the_flow_and_the_store(
    make_settings: Any,
) -> None:
    """``RIVERRUN_ENTITY_TTL`` bounds the state to the entities of the last TTL seconds of
    event time: one idle for longer leaves the flow's state and Redis (the server then sees
    it as new), and its next event starts afresh; the TTL is written beside the spec."""
    s = make_settings(entity_features=("count",), entity_ttl=100.0)
    early = [(b"old", event(i, {"x": 1.0}, True, entity="old")) for i in range(3)]
    late = [(b"new", event(i, {"x": 1.0}, True, entity="new")) for i in range(300, 600)]
    back = [(b"old", event(600, {"x": 1.0}, True, entity="old", prefix="back"))]
    write_raw(s, s.topic_events, early + late)
    run_flow_to_end(s)
    spec = FeatureSpec.parse(["count"])
    store = FeatureStore.connect(s.redis_url, s.model_name)
    assert store.read(spec, "old") is None, "idle 300 s, past its 100 s TTL"
    assert store.read(spec, "new") == [300.0, 1_000_599.0]
    assert store.read_ttl() == 100.0
    write_raw(s, s.topic_events, back)
    run_flow_to_end(s)
    assert store.read(spec, "old") == [1.0, 1_000_600.0], "it starts afresh"


def test_an_entity_state_expires_by_event_time_and_ignores_times_far_ahead() -> None:
    f = EntityFeatures(FeatureSpec.parse(["count"]), ttl=10.0)
    f.update("a", 100.0, {})
    f.update("b", 105.0, {})
    # decades ahead: the learner refuses it, so it changes no state and moves no clock
    assert f.update("z", 1e12, {"x": 1.0}) == {"x": 1.0}
    assert f.expire() == [] and sorted(f.entities) == ["a", "b"]
    f.update("b", 112.0, {})
    assert f.expire() == ["a"], "idle 12 s of the latest event's time"
    f.update("b", 113.0, {})
    assert f.expire() == [], "swept at most four times per TTL"
    kept = EntityFeatures(FeatureSpec.parse(["count"]))  # no TTL: kept for ever
    kept.update("a", 0.0, {})
    kept.update("b", 1e6, {})
    assert kept.expire() == [] and len(kept.entities) == 2


def test_a_flow_without_entity_features_says_so_to_servers_and_retrains(
    make_settings: Any,
) -> None:
    """The spec an earlier run wrote used to stay: servers and retrains went on computing
    features that the flow no longer gave its models."""
    s = make_settings(entity_features=("count",), entity_ttl=60.0)
    write_raw(s, s.topic_events, [(b"a", event(0, {"x": 1.0}, True))])
    run_flow_to_end(s)
    store = FeatureStore.connect(s.redis_url, s.model_name)
    count = FeatureSpec.parse(["count"])
    assert (store.read_spec(), store.read_ttl()) == (count, 60.0) and store.read(count, "a")
    run_flow_to_end(s.override({"entity_features": (), "entity_ttl": 0.0}))
    assert (store.read_spec(), store.read_ttl()) == (FeatureSpec(), 0.0), "none, said"
    assert store.read(count, "a") is None, "no stale state for a flow that keeps them again"


def test_aggregates_read_in_one_place_keep_each_partitions_clock() -> None:
    """A replay or an evaluation that reads every partition in one place kept one clock:
    a partition an hour ahead in event time expired the entities of one behind it, which
    the flow, whose features step keeps each partition apart, never did."""
    by = ByPartition(FeatureSpec.parse(["count"]), ttl=600.0)
    counts = []
    for i in range(5):
        by.fold("events-0", [Event(f"a{i}", 3600.0 + 100 * i, "a", {})])
        (b,) = by.fold("events-1", [Event(f"b{i}", 100.0 * i, "b", {})])
        counts.append(b.features["entity_count"])  # type: ignore[union-attr]
    assert counts == [1.0, 2.0, 3.0, 4.0, 5.0]
