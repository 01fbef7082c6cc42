"""A data scientist's model pushed to shadow: adopted by a running flow, promoted, removed."""

from __future__ import annotations

import itertools
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import redis

from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.registry import Registry
from models.status import read_status
from tests.helpers import LearnProcess, count_messages, read_topic, run_cli, wait_for

SPEC = "dsmodel:make"
DSMODEL = '''
"""A data scientist's model, in a module outside riverrun's packages."""
from river import tree


class GreedyTree(tree.HoeffdingTreeClassifier):
    """A Hoeffding tree that splits early."""


def make():
    return GreedyTree(grace_period=50, delta=1e-3)


def not_a_model():
    return "a tree, honestly"
'''


@pytest.fixture
def dsmodel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of ``dsmodel``, on the ``PYTHONPATH`` of every child process."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dsmodel.py").write_text(DSMODEL)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def _riverrun(s: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(s.to_env(), *argv)


class Stream(threading.Thread):
    """Produces chunks of the non-linear ``agrawal`` stream, paced, until stopped."""

    def __init__(self, s: Any) -> None:
        super().__init__(daemon=True)
        self.s = s
        self.chunks = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for k in itertools.count():
            if self.stop.is_set():
                return
            req = ProduceRequest("agrawal", 400, seed=100 + k, id_prefix=f"p{k}", rate=2000)
            s = self.s
            produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
            self.chunks = k + 1


def _ids(s: Any, topic: str, spec: str | None = None) -> set[str]:
    return {
        m["id"]
        for m in (msg.json() for msg in read_topic(s, topic))
        if spec is None or m["spec"] == spec
    }


def test_a_pushed_model_is_shadowed_promoted_and_its_old_rival_removed_without_restart(
    make_settings: Any, dsmodel: Path, tmp_path: Path
) -> None:
    s = make_settings(
        promote_min_samples=300,
        promote_window=1000,
        promote_cooldown=10**6,
        snapshot_interval=0.5,
        snapshot_every=10**9,
    )
    history = tmp_path / "history.csv"
    rows = [{**x, "label": y} for x, y in open_stream("agrawal", seed=7, events=3000).samples]
    pd.DataFrame(rows).to_csv(history, index=False)
    reg = Registry.connect(s.redis_url, s.registry_key)
    stream = Stream(s)
    with LearnProcess(s) as flow:
        stream.start()
        try:
            wait_for(lambda: count_messages(s, s.topic_predictions) >= 400, 60, "the flow serving")
            pushed = _riverrun(
                s, "registry", "push", s.model_name, "--spec", SPEC, "--warm-start", str(history)
            )
            assert pushed.returncode == 0, pushed.stderr
            version = int(pushed.stdout.split("challenger -> v")[1].split()[0])
            info = reg.info(s.model_name, version)
            assert (info.spec, info.events_seen, info.tags["pushed"]) == (SPEC, 3000, "true")

            def shadowed() -> bool:  # the pushed version, then its checkpoints in the flow
                return any(
                    m.json()["spec"] == SPEC and m.json()["version"] == version
                    for m in read_topic(s, s.topic_shadow)
                )

            wait_for(shadowed, 30, "shadow predictions of the pushed model")

            def promoted() -> Any:
                return next(
                    (m for m in reg.history(s.model_name) if m.reason.startswith(f"{SPEC} beat")),
                    None,
                )

            move = wait_for(promoted, 60, "the pushed model promoted")
            assert move.action == "promote" and move.alias == "champion"
            assert reg.info(s.model_name, move.to_version).spec == SPEC

            def served_by_it() -> bool:
                last = [m.json() for m in read_topic(s, s.topic_predictions)[-100:]]
                return all(p["spec"] == SPEC and p["role"] == "champion" for p in last)

            wait_for(served_by_it, 30, "predictions from the promoted model")

            # The old champion now shadows as the challenger; remove it from the registry.
            removed = _riverrun(s, "registry", "remove", s.model_name, "challenger")
            assert removed.returncode == 0, removed.stderr
            client = redis.Redis.from_url(s.redis_url)

            def one_model() -> bool:
                status = read_status(client, s.model_name)
                return status is not None and len(status["models"]) == 1

            wait_for(one_model, 30, "the flow to stop shadowing the removed challenger")
            after = stream.chunks + 1  # produced from now on, after the removal took effect
            later = {f"p{after}-{i}" for i in range(400)}
            wait_for(lambda: later <= _ids(s, s.topic_predictions), 30, "later predictions")
            assert flow.alive(), "the flow restarted or died"
        finally:
            stream.stop.set()
            stream.join(30)
        assert not stream.is_alive(), "the producer did not stop within 30 s"
        produced = 400 * stream.chunks  # stopped once idle, not in the middle of a write
        wait_for(lambda: count_messages(s, s.topic_predictions) >= produced, 60, "the backlog")
        assert flow.stop() == 0, flow.stderr()[-3000:]
    # The flow stopped cleanly: every batch it took was written to every topic, so whatever
    # it shadowed of the later events (written by a sink of its own, maybe after their
    # predictions) is on the shadow topic by now.
    shadowed = _ids(s, s.topic_shadow)
    assert shadowed, "the shadow topic was written"
    after_removal = {f"p{k}-{i}" for k in range(after, stream.chunks) for i in range(400)}
    assert later <= after_removal
    assert not after_removal & shadowed, "the removed challenger still shadows"
    actions = [(m.action, m.alias) for m in reg.history(s.model_name)]
    assert ("set", "challenger") in actions and ("promote", "champion") in actions


def test_push_without_warm_start_samples_the_live_stream_and_refuses_what_does_not_fit(
    make_settings: Any, dsmodel: Path
) -> None:
    s = make_settings()
    produce(
        ProduceRequest("phishing", 50, seed=1, id_prefix="w"),
        s.bootstrap_servers,
        s.topic_events,
        s.topic_labels,
        progress=False,
    )
    fresh = _riverrun(s, "registry", "push", s.model_name, "--spec", SPEC, "--json")
    assert fresh.returncode == 0, fresh.stderr
    version = orjson.loads(fresh.stdout)["version"]
    assert (version["spec"], version["events_seen"], version["task"]) == (SPEC, 0, "binary")
    assert version["features"] is None, "no flow has asked events for features yet"

    warm_start = ["--warm-start", "kafka", "--stop-offset", "30", "--json"]
    second = ["--spec", "hoeffding", "--alias", "challenger-2", *warm_start]
    from_kafka = _riverrun(s, "registry", "push", s.model_name, *second)
    assert from_kafka.returncode == 0, from_kafka.stderr
    warm = orjson.loads(from_kafka.stdout)["version"]
    assert warm["events_seen"] == 30 and warm["tags"]["warm_start"].startswith("kafka")
    phishing = sorted(next(iter(open_stream("phishing", seed=1, events=1).samples))[0])
    assert warm["features"] == phishing, "those its warm start asked of every event"
    reg = Registry.connect(s.redis_url, s.registry_key)
    assert set(reg.aliases(s.model_name)) == {"challenger", "challenger-2"}
    champion = reg.register(s.model_name, None, spec=SPEC, task="binary", features=["a", "b"])
    reg.move_alias(s.model_name, "champion", champion.version, actor="t", reason="r")
    beside = _riverrun(s, "registry", "push", s.model_name, "--spec", SPEC, "--json")
    assert beside.returncode == 0, beside.stderr
    assert orjson.loads(beside.stdout)["version"]["features"] == ["a", "b"], "the champion's"

    for argv, message in [
        (["push", s.model_name, "--spec", "dsmodel:not_a_model"], "returned str, not a River"),
        (
            ["push", s.model_name, "--spec", SPEC, "--alias", "champion"],
            "goes under a challenger alias",
        ),
        (["remove", s.model_name, "champion"], "the champion cannot be removed"),
        (["remove", s.model_name, "challenger-9"], "has no alias 'challenger-9'"),
    ]:
        done = _riverrun(s, "registry", *argv)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_flow_that_cannot_import_a_pushed_model_keeps_serving_and_says_why(
    make_settings: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "dsmodel.py").write_text(DSMODEL)
    s = make_settings()

    def produce_round(k: int) -> set[str]:
        req = ProduceRequest("phishing", 100, seed=k, id_prefix=f"r{k}")
        produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
        return {f"r{k}-{i}" for i in range(100)}

    with LearnProcess(s) as flow:  # without the folder on its path
        first = produce_round(0)
        wait_for(lambda: first <= _ids(s, s.topic_predictions), 60, "the flow serving")
        env = {**s.to_env(), "PYTHONPATH": str(folder)}
        pushed = run_cli(env, "registry", "push", s.model_name, "--spec", SPEC)
        assert pushed.returncode == 0, pushed.stderr
        for k in (1, 2):  # two rounds after the push: the flow has tried to adopt it
            later = produce_round(k)
            wait_for(lambda ids=later: ids <= _ids(s, s.topic_predictions), 60, f"round {k} served")
        assert flow.alive() and not _ids(s, s.topic_shadow)
        assert flow.stop() == 0
        said = flow.stderr()
        assert "cannot adopt challenger" in said and "No module named 'dsmodel'" in said
