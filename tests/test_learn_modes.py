"""The learn flow runs the same from every entry point: bytewax.run, and a process cluster;
and the heap it starts with stays out of the garbage collector's way (in this process,
it leaves the collector as it found it)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import redis

from flows.kafka_io import ensure_topics
from models.status import read_status
from riverrun.runner import learn_topics, warn_of_idle_processes
from tests.helpers import produce_stream, read_topic, run_flow_to_end


def _produce(s: Any, events: int, **kw: Any) -> None:
    produce_stream(s, events, "m", **kw)


def _env(s: Any) -> dict[str, str]:
    return {**os.environ, **s.to_env()}


def test_python_m_bytewax_run_reads_settings_from_env(make_settings: Any) -> None:
    s = make_settings()
    _produce(s, 2000)
    from flows.kafka_io import ensure_topics

    ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.learn:flow"],
        env=_env(s),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [m.json()["id"] for m in read_topic(s, s.topic_predictions)]
    assert ids == [f"m-{i}" for i in range(2000)]


def test_two_processes_three_partitions_predict_and_learn_everything(make_settings: Any) -> None:
    s = make_settings(partitions=3, entity_features=("count",))
    _produce(s, 6000, delay_labels=50, labels_topic=True)
    done = subprocess.run(
        [sys.executable, "-m", "riverrun.cli", "learn", "--processes", "2", "--no-follow"],
        env=_env(s),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "error connecting" not in done.stderr, "process 1 dials 0 once it listens"
    predictions = read_topic(s, s.topic_predictions)
    assert Counter(m.json()["id"] for m in predictions) == Counter(f"m-{i}" for i in range(6000))
    assert {m.partition for m in read_topic(s, s.topic_events)} == {0, 1, 2}
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == 6000 and status["models"][0]["learned"] == 6000
    assert not read_topic(s, s.topic_deadletter)


def test_the_flow_runs_with_the_heap_it_started_with_frozen_and_unfreezes_it(
    make_settings: Any,
) -> None:
    s = make_settings()
    _produce(s, 2000)
    frozen_during_collections: list[int] = []

    def watch(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            frozen_during_collections.append(gc.get_freeze_count())

    gc.callbacks.append(watch)
    try:
        run_flow_to_end(s)
    finally:
        gc.callbacks.remove(watch)
    assert len(read_topic(s, s.topic_predictions)) == 2000
    assert frozen_during_collections, "the flow allocates enough to collect"
    assert max(frozen_during_collections) > 10_000  # modules, models and flow left out
    assert gc.get_freeze_count() == 0


def test_the_bytewax_run_entry_point_freezes_the_heap_it_builds(
    make_settings: Any, monkeypatch: Any
) -> None:
    for name, value in make_settings().to_env().items():
        monkeypatch.setenv(name, value)
    import flows.learn

    assert gc.get_freeze_count() == 0
    try:
        assert flows.learn.flow.flow_id == "riverrun-learn"
        assert gc.get_freeze_count() > 10_000  # everything alive, the new flow included
    finally:
        gc.unfreeze()


def test_processes_past_the_events_topics_partitions_are_named_in_a_warning(
    make_settings: Any, capsys: Any
) -> None:
    """The partitions of a topic are fixed when it is made: a cluster larger than them has
    idle processes, which the user hears of (it used to run so without a word)."""
    one = make_settings(partitions=1)
    ensure_topics(one.bootstrap_servers, learn_topics(one), 1)
    warn_of_idle_processes(replace(one, processes=3))
    assert capsys.readouterr().err == (
        f"warning: topic {one.topic_events!r} has 1 partition(s) for 3 processes: 2 will have "
        "no events to read (RIVERRUN_PARTITIONS sets the partitions of the topics riverrun "
        "creates)\n"
    )
    two = make_settings(partitions=2)
    ensure_topics(two.bootstrap_servers, learn_topics(two), 2)
    warn_of_idle_processes(replace(two, processes=2))
    assert capsys.readouterr().err == ""
