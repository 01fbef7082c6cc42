"""Crash recovery through the real broker: the learn flow is SIGKILLed at seeded random points
while it consumes a fixed stream, restarted each time, and ends as if it never crashed."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from flows import kafka_io
from flows.kafka_io import ensure_topics
from models.registry import Registry
from models.status import read_status, status_key
from riverrun.runner import learn_topics, stop_quietly_on_signal
from riverrun.settings import Settings
from tests.helpers import (
    count_messages,
    process_alive,
    produce_stream,
    read_topic,
    run_flow_to_end,
    wait_for,
)
from tests.recovery_db import executions, resume_point

SEED = 8
T0 = 1_700_000_000.0
DEADLINE = 90.0


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``riverrun learn`` following its topics, in a session of its own (killed as a whole);
    the status the last run left in Redis is cleared first."""
    ensure_topics(settings.bootstrap_servers, learn_topics(settings), settings.partitions)
    redis.Redis.from_url(settings.redis_url).delete(status_key(settings.model_name))
    env = {**os.environ, **settings.override({"follow": True}).to_env()}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "riverrun.cli", "learn"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(settings: Settings, log: Path) -> None:
    """Restart the flow once more and let it run to the end of the stream."""
    env = {**os.environ, **settings.override({"follow": False}).to_env()}
    with open(log, "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "riverrun.cli", "learn"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert done.returncode == 0, log.read_text()[-3000:]


def _kill_when(settings: Settings, log: Path, condition: Callable[[], Any], what: str) -> None:
    """Start the flow and SIGKILL it (its whole session) once ``condition`` holds."""
    flow = _start(settings, log)
    try:
        wait_for(condition, DEADLINE, what, every=0.02)
    finally:
        os.killpg(flow.pid, signal.SIGKILL)
        flow.wait()


def _finish_without_snapshot(settings: Settings, log: Path) -> None:
    """Check that the killed runs committed no snapshot, then run to the end."""
    path = settings.recovery_path
    assert path is not None and resume_point(path).states == {}, "no snapshot was committed"
    _finish(settings, log)


def _same_models(s: Settings, reference: Settings, events: int) -> tuple[dict, dict]:
    """Both runs' statuses, once every model learned each event once, with the reference's
    metrics."""
    client = redis.Redis.from_url(s.redis_url)
    got, want = read_status(client, s.model_name), read_status(client, reference.model_name)
    assert got is not None and want is not None
    for mine, theirs in zip(got["models"], want["models"], strict=True):
        assert mine["learned"] == events, f"{mine['alias']} learned events twice"
        assert mine["metrics"] == theirs["metrics"]
    return got, want


def _kill_points(rng: random.Random, events: int, kills: int) -> list[int]:
    """Seeded random positions in the stream (events predicted), one in each of ``kills``
    stretches, so every restarted flow gets somewhere before it is killed again."""
    stretch = events // (kills + 1)
    return [k * stretch + rng.randrange(stretch // 2) for k in range(1, kills + 1)]


def _wait_until_predicted(s: Settings, flow: subprocess.Popen[bytes], events: int) -> None:
    """Wait until the running flow's status (fresh: :func:`_start` clears it) counts ``events``."""
    client = redis.Redis.from_url(s.redis_url)

    def there() -> bool:
        assert flow.poll() is None, "the flow stopped by itself"
        status = read_status(client, s.model_name)
        return status is not None and status["events"] >= events

    wait_for(there, DEADLINE, f"{events} events predicted", every=0.02)


def _settled_count(s: Settings, topic: str) -> int:
    """How many messages ``topic`` holds once two looks 0.5 s apart agree: a produce request
    a killed flow had sent may still be landing."""
    counts: list[int] = []

    def settled() -> bool:
        counts.append(count_messages(s, topic))
        return len(counts) > 1 and counts[-1] == counts[-2]

    wait_for(settled, DEADLINE, f"{topic} to settle", every=0.5)
    return counts[-1]


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _learned(model: Any) -> tuple[dict, dict, dict, float]:
    """What a ``logreg`` pipeline has learned: scaler means and variances, weights, intercept."""
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]
    return dict(scaler.means), dict(scaler.vars), dict(lr.weights), lr.intercept


def _event_ids_from(events: list[Any], offset: int) -> list[str]:
    """Ids of the events (not labels) at ``offset`` and after, in topic order."""
    return [m.json()["id"] for m in events[offset:] if m.json().get("kind") != "label"]


def test_flow_killed_three_times_ends_like_an_uninterrupted_run(
    make_settings: Any, tmp_path: Path
) -> None:
    events = 20_000
    common = {
        "model_spec": "river.dummy:NoChangeClassifier",
        "challengers": ("logreg",),  # promoted after 8,000 events: killed before and after
        "promote_min_samples": 8_000,
        "promote_window": 8_000,
        "entity_features": ("count", "mean:0"),  # per-entity state is recovered too
        "snapshot_every": 400,
        "batch_size": 200,
    }
    reference = make_settings(**common)
    s = make_settings(**common, recovery_dir=str(tmp_path / "recovery"), epoch_interval=0.2)
    for target in (reference, s):  # labels inline, so one partition orders everything
        produce_stream(target, events, "ev", delay_labels=25, start_time=T0)
    run_flow_to_end(reference)

    rng = random.Random(SEED)
    path = s.recovery_path
    assert path is not None
    part, position = f"0-{s.topic_events}", f"{s.topic_events}-0"
    resumed: list[tuple[int, int]] = []  # (predictions written so far, offset resumed from)
    previous = -1
    kill_points = _kill_points(rng, events, 3)
    for kill, at in enumerate(kill_points):
        flow = _start(s, tmp_path / "flow.log")
        try:

            def snapshot_taken(after: int = previous) -> bool:
                offset = resume_point(path).offset(part) if executions(path) else None
                return offset is not None and offset > after

            wait_for(snapshot_taken, DEADLINE, f"a snapshot after restart {kill}", every=0.02)
            _wait_until_predicted(s, flow, at)
        finally:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()
        point = resume_point(path)
        offset = point.offset(part)
        assert offset is not None and offset > previous
        learner = point.learner(s.model_name, s.registry_key)
        assert learner.positions[position] == offset, "model state and offsets move together"
        resumed.append((_settled_count(s, s.topic_predictions), offset))
        previous = offset
    _finish(s, tmp_path / "flow.log")
    assert len(executions(path)) == 4

    # The model and its metrics are those of the uninterrupted run.
    client = redis.Redis.from_url(s.redis_url)
    got, want = read_status(client, s.model_name), read_status(client, reference.model_name)
    assert got is not None and want is not None
    assert got["labelled"] == events and got["pending"] == 0
    for mine, theirs in zip(got["models"], want["models"], strict=True):
        assert mine["learned"] == events, f"{mine['alias']} learned events twice"
        assert mine["metrics"] == theirs["metrics"]
    (promoted,) = [p["at_event"] for p in want["promotions"]]
    assert [p["at_event"] for p in got["promotions"]] == [promoted], "promoted at the same event"
    assert kill_points[0] < promoted < kill_points[1], "killed before and after the promotion"
    registry = Registry.connect(s.redis_url, s.registry_key)
    info, model = registry.load_alias(s.model_name, "champion")  # type: ignore[misc]
    ref_info, ref_model = registry.load_alias(reference.model_name, "champion")  # type: ignore[misc]
    assert info.spec == "logreg" and _learned(model) == _learned(ref_model)
    assert info.metrics == ref_info.metrics and info.events_seen == events
    moves = [m for m in registry.history(s.model_name) if m.alias == "champion"]
    assert all(m.actor == f"learn-flow:{s.model_name}" for m in moves)
    assert all(a.to_version == b.from_version for a, b in itertools.pairwise(moves)), "one lineage"

    # Every event is predicted; each restart repeats exactly the events after its snapshot.
    stream = read_topic(s, s.topic_events)
    predicted = [m.json()["id"] for m in read_topic(s, s.topic_predictions)]
    assert set(predicted) == {f"ev-{i}" for i in range(events)}
    ends = [end for end, _offset in resumed] + [len(predicted)]
    for (start, offset), end in zip(resumed, ends[1:], strict=True):
        after_restart = predicted[start:end]
        assert after_restart == _event_ids_from(stream, offset)[: len(after_restart)]
    assert predicted[resumed[-1][0] :] == _event_ids_from(stream, resumed[-1][1])


def test_flow_killed_before_its_first_snapshot_starts_again_from_where_it_began(
    make_settings: Any, tmp_path: Path
) -> None:
    """Killed after it checkpointed to the registry but before Bytewax committed a snapshot:
    the restart reads the topics from the start with the models the run began with."""
    events = 6_000
    common = {"challengers": ("logreg",), "snapshot_every": 500, "batch_size": 200}
    reference = make_settings(**common)
    s = make_settings(**common, recovery_dir=str(tmp_path / "recovery"), epoch_interval=3600.0)
    for target in (reference, s):
        produce_stream(target, events, "ev", delay_labels=25, start_time=T0)
    run_flow_to_end(reference)
    registry = Registry.connect(s.redis_url, s.registry_key)

    def checkpointed() -> bool:
        moves = registry.history(s.model_name)
        return any(m.action == "checkpoint" and m.evidence["events_seen"] > 0 for m in moves)

    _kill_when(s, tmp_path / "flow.log", checkpointed, "a checkpoint of learned events")
    _finish_without_snapshot(s, tmp_path / "flow.log")

    _same_models(s, reference, events)
    _info, model = registry.load_alias(s.model_name, "champion")  # type: ignore[misc]
    _ref_info, ref_model = registry.load_alias(reference.model_name, "champion")  # type: ignore[misc]
    assert _learned(model) == _learned(ref_model)
    moves = [m for m in registry.history(s.model_name) if m.alias == "champion"]
    assert all(a.to_version == b.from_version for a, b in itertools.pairwise(moves)), "one lineage"


def test_flow_killed_after_its_own_promotion_promotes_again_instead_of_adopting_it(
    make_settings: Any, tmp_path: Path
) -> None:
    """Killed after it promoted its challenger, with no snapshot since, twice in a row: each
    restart puts the aliases back to the models it resumes with and the replay promotes
    again. Adopting the promoted version instead would feed it again the events it had
    learned."""
    events = 4_000
    common = {
        "model_spec": "river.dummy:NoChangeClassifier",  # logreg beats it after ~1,000 events
        "challengers": ("logreg",),
        "snapshot_every": 500,
        "batch_size": 200,
    }
    reference = make_settings(**common)
    s = make_settings(**common, recovery_dir=str(tmp_path / "recovery"), epoch_interval=3600.0)
    for target in (reference, s):
        produce_stream(target, events, "ev", start_time=T0)
    run_flow_to_end(reference)
    registry = Registry.connect(s.redis_url, s.registry_key)
    actor = f"learn-flow:{s.model_name}"

    def promotions() -> int:
        return sum(
            m.action == "promote" and m.from_version is not None and m.actor == actor
            for m in registry.history(s.model_name)
        )

    for crash in (1, 2):
        _kill_when(
            s, tmp_path / "flow.log", lambda n=crash: promotions() == n, f"promotion {crash}"
        )
    _finish_without_snapshot(s, tmp_path / "flow.log")

    got, want = _same_models(s, reference, events)
    assert [p["at_event"] for p in got["promotions"]] == [p["at_event"] for p in want["promotions"]]
    assert [(m["alias"], m["spec"]) for m in got["models"]] == [
        (m["alias"], m["spec"]) for m in want["models"]
    ]
    info, model = registry.load_alias(s.model_name, "champion")  # type: ignore[misc]
    _ref_info, ref_model = registry.load_alias(reference.model_name, "champion")  # type: ignore[misc]
    assert info.spec == "logreg" and info.events_seen == events
    assert _learned(model) == _learned(ref_model)
    moves = [m for m in registry.history(s.model_name) if m.alias == "champion"]
    undone = [i for i, m in enumerate(moves) if m.action == "rollback"]
    assert len(undone) == 2, "one put-back per restart"
    for undo in undone:
        assert moves[undo].actor == actor and "resumed" in moves[undo].reason
        promotion = max(i for i, m in enumerate(moves[:undo]) if m.action == "promote")
        assert moves[undo].to_version == moves[promotion].from_version, "back to where it was"
    assert [m.action for m in moves[undone[-1] :]].count("promote") == 1, "promoted again, once"


def test_two_processes_killed_three_ways_learn_every_label_once(
    make_settings: Any, tmp_path: Path
) -> None:
    """Parent killed (its workers follow), one worker killed (the rest stop), all killed."""
    events = 12_000
    s = make_settings(
        challengers=("logreg",),
        entity_features=("count", "mean:0"),
        partitions=3,
        processes=2,
        recovery_dir=str(tmp_path / "recovery"),
        epoch_interval=0.2,
    )
    produce_stream(s, events, "ev", delay_labels=25, labels_topic=True, start_time=T0)
    rng = random.Random(SEED)
    log = tmp_path / "flow.log"
    for how, at in zip(("parent", "worker", "all"), _kill_points(rng, events, 3), strict=True):
        flow = _start(s, log)
        try:
            wait_for(lambda f=flow: len(_children(f.pid)) == 2, DEADLINE, "both workers")
            workers = _children(flow.pid)
            _wait_until_predicted(s, flow, at)
            if how == "parent":
                os.kill(flow.pid, signal.SIGKILL)
                wait_for(
                    lambda ws=workers: not any(map(process_alive, ws)), DEADLINE, "workers to end"
                )
            elif how == "worker":
                os.kill(rng.choice(workers), signal.SIGKILL)
                assert flow.wait(DEADLINE) != 0, "the cluster noticed a worker died"
            else:
                os.killpg(flow.pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()
    _finish(s, log)

    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == events and status["pending"] == 0
    assert [m["learned"] for m in status["models"]] == [events, events], "each label learned once"
    predicted = Counter(m.json()["id"] for m in read_topic(s, s.topic_predictions))
    assert set(predicted) == {f"ev-{i}" for i in range(events)}
    assert not read_topic(s, s.topic_deadletter)


@pytest.mark.parametrize(
    ("processes", "ctrl_c"),
    [(1, False), (2, False), (2, True)],
    ids=["alone", "cluster", "cluster-ctrl-c"],
)
def test_a_flow_stopped_by_a_signal_sends_what_it_did_and_resumes_with_no_repeat(
    make_settings: Any, tmp_path: Path, processes: int, ctrl_c: bool
) -> None:
    """A signal stopped the flow where it was: predictions its producer still held were
    lost, and the resumed flow repeated every event since its last snapshot. The first
    signal now ends its input: it sends what it did and snapshots before it stops."""
    s = make_settings(recovery_dir=str(tmp_path / "state"), epoch_interval=600.0, partitions=2)
    ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)
    produce_stream(s, 200, "stop")  # the same first events as the whole stream
    rest = {"rate": 500, "skip": 200}  # the rest at a pace, so the stop comes mid-stream
    paced = threading.Thread(target=produce_stream, args=(s, 3000, "stop"), kwargs=rest)
    log = tmp_path / "learn.log"
    flow = _start(s, log)
    client = redis.Redis.from_url(s.redis_url)
    try:
        wait_for(lambda: count_messages(s, s.topic_predictions) >= 200, DEADLINE, "the start")
        paced.start()
        wait_for(lambda: count_messages(s, s.topic_predictions) >= 600, DEADLINE, "predictions")
        if ctrl_c:  # a terminal's Ctrl-C: SIGINT to every process of the group
            os.killpg(flow.pid, signal.SIGINT)
        else:
            flow.send_signal(signal.SIGTERM)
        assert flow.wait(DEADLINE) == 0, log.read_text()
    finally:
        if paced.is_alive():
            paced.join()
        if flow.poll() is None:
            flow.kill()
            flow.wait()
    assert log.read_text().strip().splitlines()[-1] == "learn flow stopped by signal"
    status = read_status(client, s.model_name)
    sent = [orjson.loads(m.value)["id"] for m in read_topic(s, s.topic_predictions)]
    assert status is not None and 0 < status["events"] == len(sent) < 3000, "all it did, sent"
    run_flow_to_end(s)  # resumes from the snapshot the stop took
    predicted = Counter(orjson.loads(m.value)["id"] for m in read_topic(s, s.topic_predictions))
    assert len(predicted) == 3000 and set(predicted.values()) == {1}, "none lost, none repeated"


def test_an_error_while_the_flow_ends_its_batch_is_no_stop_by_signal() -> None:
    """Once a signal asked for a stop, any error on the way out was taken for the stop: a
    refused message or a step's own bug exited 0. The stop request also outlived the run,
    and every later flow of the process read nothing."""
    bug = pytest.raises(RuntimeError, match="a step's own bug")
    with bug, stop_quietly_on_signal(announce=False, graceful=True):
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this thread
        assert kafka_io._STOP_READING.is_set(), "the input is asked to end"
        raise RuntimeError("a step's own bug")
    assert not kafka_io._STOP_READING.is_set(), "the next run reads its input"
    with stop_quietly_on_signal(announce=False, graceful=True):
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # a second signal: at once
            os.kill(os.getpid(), signal.SIGTERM)
