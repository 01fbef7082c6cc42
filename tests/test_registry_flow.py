"""The learn flow and the registry: checkpoints, resuming from the champion, Redis outages,
and champions moved by someone else."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from flows.kafka_io import ensure_topics
from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.registry import Registry
from riverrun.local import free_port, start_redis
from riverrun.runner import learn_topics
from tests.helpers import (
    LearnProcess,
    child_env,
    count_messages,
    one_line,
    read_topic,
    run_cli,
    run_flow_to_end,
    wait_for,
)
from tests.prom import scrape, total


def _registry(s: Any) -> Registry:
    return Registry.connect(s.redis_url, s.registry_key)


def _produce(s: Any, events: int, prefix: str, seed: int = 1, **kw: Any) -> None:
    req = ProduceRequest("sea-drift", events, seed=seed, id_prefix=prefix, **kw)
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)


def test_flow_checkpoints_the_champion_with_its_lineage(make_settings: Any) -> None:
    s = make_settings(snapshot_every=500, snapshot_interval=3600.0)
    _produce(s, 2000, "c")
    run_flow_to_end(s)
    reg = _registry(s)
    versions = reg.versions(s.model_name)
    assert len(versions) >= 3
    assert versions[0].parent is None and versions[0].events_seen == 0
    for earlier, later in itertools.pairwise(versions):
        assert later.parent == earlier.version and later.events_seen >= earlier.events_seen
    last = versions[-1]
    assert reg.alias(s.model_name, "champion") == last.version
    assert last.events_seen == 2000 and last.positions == {f"{s.topic_events}-0": 2000}
    assert last.spec == "logreg" and 0.5 < last.metrics["accuracy"] <= 1
    assert {m.action for m in reg.history(s.model_name)} == {"promote", "checkpoint"}
    predictions = [m.json() for m in read_topic(s, s.topic_predictions)]
    served = [p["version"] for p in predictions]
    assert served[0] == versions[0].version, "the first prediction names the registered model"
    assert served == sorted(served) and set(served) <= {v.version for v in versions}


def test_a_new_flow_resumes_from_the_registry_champion(make_settings: Any) -> None:
    first = make_settings()
    _produce(first, 1500, "a")
    run_flow_to_end(first)
    reg = _registry(first)
    info, loaded = reg.load_alias(first.model_name, "champion")  # type: ignore[misc]
    assert info.events_seen == 1500

    # A new deployment of the same model: new topics, empty state.
    second = make_settings(model_name=first.model_name)
    _produce(second, 200, "b", seed=99)
    run_flow_to_end(second)
    got = [m.json() for m in read_topic(second, second.topic_predictions)]
    for (x, y), prediction in zip(
        open_stream("sea-drift", seed=99, events=200).samples, got, strict=True
    ):
        expected = loaded.predict_proba_one(x)
        assert prediction["proba"]["true"] == expected[True]
        loaded.learn_one(x, y)
    assert got[0]["version"] == info.version


def test_flow_keeps_learning_through_a_redis_outage(make_settings: Any, tmp_path: Path) -> None:
    server = start_redis(tmp_path, durable=True)
    s = make_settings(
        redis_url=f"redis://127.0.0.1:{server.port}/0", snapshot_interval=0.3, snapshot_every=10**9
    )
    _produce(s, 2000, "r1")
    reg = _registry(s)
    try:
        with LearnProcess(s) as flow:
            wait_for(
                lambda: count_messages(s, s.topic_predictions) >= 2000,
                60,
                "the first 2000 predictions",
            )
            wait_for(lambda: reg.alias(s.model_name, "champion"), 30, "a first checkpoint")
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
            _produce(s, 2000, "r2", seed=2)
            wait_for(
                lambda: count_messages(s, s.topic_predictions) >= 4000,
                60,
                "predictions while Redis is down",
            )
            assert flow.alive(), "the flow stopped when Redis went away"
            server = start_redis(tmp_path, server.port, durable=True)
            reg = _registry(s)

            def snapshot_after_outage() -> bool:
                versions = reg.versions(s.model_name)
                return bool(versions) and versions[-1].events_seen >= 4000

            wait_for(snapshot_after_outage, 60, "a checkpoint after Redis came back")
            assert flow.alive()
            assert flow.stop() == 0, flow.stderr()
        assert reg.alias(s.model_name, "champion") == reg.versions(s.model_name)[-1].version
    finally:
        server.stop()
    ids = {m.json()["id"] for m in read_topic(s, s.topic_predictions)}
    assert ids == {f"r1-{i}" for i in range(2000)} | {f"r2-{i}" for i in range(2000)}


def test_running_flow_adopts_a_champion_promoted_or_rolled_back_elsewhere(
    make_settings: Any,
) -> None:
    s = make_settings(snapshot_interval=0.3, snapshot_every=10**9, metrics_port=free_port())
    reg = _registry(s)

    def counted() -> tuple[float, float]:
        samples = scrape(s.metrics_port)
        promotions = total(samples, "riverrun_promotions_total", model=s.model_name)
        return promotions, total(samples, "riverrun_rollbacks_total", model=s.model_name)

    with LearnProcess(s) as flow:
        _produce(s, 500, "p0")
        ours = wait_for(lambda: reg.alias(s.model_name, "champion"), 60, "the first champion")
        other = reg.register(s.model_name, open_stream_model(), spec="hoeffding", task="binary")
        cli = [sys.executable, "-m", "riverrun.cli", "registry"]
        env = child_env(**s.to_env())
        promoted = subprocess.run(
            [*cli, "promote", s.model_name, str(other.version), "--json"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        before = orjson.loads(promoted.stdout)["from_version"]

        def served_by(version: int, spec: str, prefix: str) -> bool:
            _produce(s, 50, prefix)
            got = [m.json() for m in read_topic(s, s.topic_predictions)[-50:]]
            return bool(got) and all(g["spec"] == spec and g["version"] >= version for g in got)

        rounds = iter(range(1000))
        wait_for(
            lambda: served_by(other.version, "hoeffding", f"q{next(rounds)}"),
            30,
            "predictions from the promoted champion",
        )
        assert counted() == (1, 0), "the flow counts a promotion made elsewhere"
        rolled = subprocess.run(
            [*cli, "rollback", s.model_name, "--json"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        back = orjson.loads(rolled.stdout)["to_version"]
        assert back == before, "rolled back to the champion before the promotion"
        assert reg.info(s.model_name, back).spec == "logreg"
        wait_for(
            lambda: served_by(back, "logreg", f"w{next(rounds)}"),
            30,
            "predictions from the rolled-back champion",
        )
        assert counted() == (1, 1), "and a rollback made elsewhere, as a rollback"
        assert ours and flow.stop() == 0, flow.stderr()[-3000:]


def open_stream_model() -> Any:
    """A Hoeffding tree that has learned a little, to promote by hand."""
    from models.specs import build_model

    model = build_model("hoeffding", "binary", 0)
    for x, y in open_stream("sea-drift", seed=5, events=300).samples:
        model.learn_one(x, y)
    return model


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        ("tampered", "snapshot signature does not match: refused (tampered, or signed with"),
        ("task", "champion v{champion} of '{model}' does binary, but this flow's task is "),
    ],
)
def test_flow_refuses_a_champion_it_cannot_run_at_start_in_one_line(
    make_settings: Any, refusal: str, said: str
) -> None:
    """Refused as the flow starts, in one line: Bytewax's Rust panic (a whole backtrace
    with RUST_BACKTRACE set) used to come before it."""
    s = make_settings()
    _produce(s, 100, "t")
    run_flow_to_end(s)
    client = redis.Redis.from_url(s.redis_url)
    champion = _registry(s).alias(s.model_name, "champion")
    again = make_settings(model_name=s.model_name)
    if refusal == "tampered":
        client.set(f"riverrun:registry:{s.model_name}:blob:{champion}", b"RRS1" + b"0" * 40)
    else:  # events without labels, which a regression flow would otherwise dead-letter
        again = again.override({"task": "regression", "model_spec": "linreg"})
        _produce(again, 10, "u", delay_labels=5, labels_topic=True)
    _produce(again, 10, "u")
    done = run_cli({**again.to_env(), "RUST_BACKTRACE": "1"}, "learn")
    line = one_line(done)
    assert line.startswith(
        f"riverrun learn: error: {said.format(model=s.model_name, champion=champion)}"
    ), line
    assert _registry(s).refused_count(s.model_name) == (refusal == "tampered")


def test_a_cluster_says_why_it_refused_a_champion_at_start(make_settings: Any) -> None:
    """In a cluster, Bytewax hands each process a panic, not the step's error: the refusal
    used to be counted and audited but never said ("learn process 1 failed", and two Rust
    tracebacks). The process that refused says why, its peer says it stopped, no traceback."""
    s = make_settings(partitions=2)
    ensure_topics(s.bootstrap_servers, learn_topics(s), 2)  # a partition for each process
    _produce(s, 100, "t")
    run_flow_to_end(s)
    champion = _registry(s).alias(s.model_name, "champion")
    client = redis.Redis.from_url(s.redis_url)
    client.set(f"riverrun:registry:{s.model_name}:blob:{champion}", b"RRS1" + b"0" * 40)
    done = run_cli(s.override({"processes": 2}).to_env(), "learn")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("riverrun learn: error: snapshot signature does not match"), lines
    assert all(line.startswith("riverrun learn: learn process ") for line in lines[1:]), lines
    assert "Traceback" not in done.stderr
