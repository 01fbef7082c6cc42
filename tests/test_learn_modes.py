"""The learn flow runs the same from every entry point: bytewax.run, and a process cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any

import redis

from models.status import read_status
from riverrun.runner import learn_topics
from tests.helpers import produce_stream, read_topic


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
    predictions = read_topic(s, s.topic_predictions)
    assert Counter(m.json()["id"] for m in predictions) == Counter(f"m-{i}" for i in range(6000))
    assert {m.partition for m in read_topic(s, s.topic_events)} == {0, 1, 2}
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == 6000 and status["models"][0]["learned"] == 6000
    assert not read_topic(s, s.topic_deadletter)
