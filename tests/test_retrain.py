"""Full retrain: a fresh model from a replayed Kafka range, registered as a challenger; and
the trigger service that starts retrains, as those who wait on it see it."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import threading
import time
from typing import Any

import pytest

from bench.kafka_time import stamps
from flows import retrain as retrain_module
from flows import retrain_lock as retrain_lock_module
from flows.kafka_io import reach
from flows.produce import ProduceRequest, produce
from flows.retrain import RetrainRequest, replay_range
from flows.retrain_lock import retrain_held, retrain_lock
from flows.trigger_service import TriggerService, caught_up
from models.datasets import open_stream
from models.features import EntityFeatures, FeatureSpec
from models.registry import ANY, Registry
from models.specs import build_model
from models.status import write_status
from models.triggers import Action
from riverrun.retrain_cmd import parse_time
from tests.helpers import (
    event,
    one_line,
    read_topic,
    run_cli,
    run_flow_to_end,
    wait_for,
    write_raw,
)


def _produce(s: Any, events: int, prefix: str, seed: int = 4) -> None:
    req = ProduceRequest("agrawal-switch", events, seed=seed, drift_every=1500, id_prefix=prefix)
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)


def _retrain(s: Any, *argv: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(s.to_env(), "retrain", *argv, *(["--quiet"] if quiet else []))


def test_retrain_from_offsets_registers_a_challenger_with_its_lineage(make_settings: Any) -> None:
    s = make_settings(model_spec="hoeffding")
    _produce(s, 3000, "r")
    run_flow_to_end(s)
    reg = Registry.connect(s.redis_url, s.registry_key)
    champion = reg.alias(s.model_name, "champion")
    done = _retrain(s, "--from-positions", f"{s.topic_events}-0=1500", "--reason", "drift test")
    assert done.returncode == 0, done.stderr
    assert "learned 1500 labelled events and is now challenger" in done.stdout
    version = reg.alias(s.model_name, "challenger")
    assert version is not None and version != champion
    info = reg.info(s.model_name, version)
    assert info.spec == "hoeffding", "the champion's spec by default"
    assert info.events_seen == 1500 and info.parent is None
    assert info.tags["origin"] == "retrain" and info.tags["trigger"] == "drift test"
    assert f"{s.topic_events}[0] 1500..3000" in info.tags["range"]
    assert info.positions == {f"{s.topic_events}-0": 3000, f"{s.topic_labels}-0": 0}
    agrawal = next(iter(open_stream("agrawal-switch", seed=4, events=1).samples))[0]
    assert info.features == sorted(agrawal), "requests to it are asked for the replay's features"
    move = reg.history(s.model_name)[-1]
    assert (move.alias, move.to_version, move.actor) == ("challenger", version, "retrain")
    assert move.evidence["start"][f"{s.topic_events}-0"] == 1500
    assert move.evidence["spec"] == "hoeffding", "the audit stands alone once v is pruned"
    assert reg.load(s.model_name, version).predict_proba_one({"salary": 1.0})


def test_a_retrain_stops_at_the_learn_flows_position(make_settings: Any) -> None:
    """Events the flow has not scored yet are where it will test the new model: a replay to
    the topic's end used to learn them too, and its shadow metrics scored what it learned."""
    s = make_settings(model_spec="logreg")
    _produce(s, 2000, "seen")
    run_flow_to_end(s)  # its status says events-0 = 2000
    _produce(s, 1000, "unseen", seed=5)
    done = _retrain(s, "--spec", "hoeffding")
    assert done.returncode == 0, done.stderr
    assert "learned 2000 labelled events" in done.stdout
    assert (
        f"the replay stopped at the learn flow's position ({s.topic_events}-0 at 2000 of 3000)"
        in done.stdout
    )
    reg = Registry.connect(s.redis_url, s.registry_key)
    info = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
    assert info.events_seen == 2000 and info.positions[f"{s.topic_events}-0"] == 2000


def test_a_retrain_computes_the_entity_features_of_the_learn_flow(make_settings: Any) -> None:
    """A retrain run from another shell (or a trigger service set up apart) used to compute
    the entity features of its own environment: the new model missed those the flow gives."""
    s = make_settings(entity_features=("count",))
    _produce(s, 600, "f")
    run_flow_to_end(s)
    reg = Registry.connect(s.redis_url, s.registry_key)
    for told in ((), ("since_last",)):
        done = _retrain(s.override({"entity_features": told}), "--spec", "logreg")
        assert done.returncode == 0, done.stderr
        info = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
        assert "entity_count" in info.features and "entity_since_last" not in info.features
        said = "RIVERRUN_ENTITY_FEATURES=since_last is not what the learn flow of"
        assert (said in done.stderr) == bool(told), done.stderr
    # a flow that keeps none any more: its spec was forgotten, and a retrain told of some
    # computed them, so the server refused every request for a feature no flow gave
    run_flow_to_end(s.override({"entity_features": ()}))
    done = _retrain(s, "--spec", "logreg")
    assert done.returncode == 0, done.stderr
    assert "the replay computes none" in done.stderr
    info = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
    assert not [name for name in info.features if name.startswith("entity_")]


def test_a_replay_asked_to_start_before_the_first_kept_message_starts_there(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drift's positions older than the topic's retention started the replay at an offset
    no reader could get to: the consumer reset to the end, and the replay waited for ever.
    (Tansu never deletes, so the kept range of a topic with retention is given here.)"""
    s = make_settings()
    kept = {"events": {0: (100, 500), 1: (40, 60)}, "labels": {0: (0, 0)}}
    monkeypatch.setattr(retrain_module, "kept_offsets", lambda boot, topic: kept[topic])
    req = RetrainRequest(start_offsets={("events", 0): 0, ("events", 1): 50})
    start, stop = replay_range(s, req, ["events", "labels"])
    assert start == {("events", 0): 100, ("events", 1): 50, ("labels", 0): 0}
    assert stop == {("events", 0): 500, ("events", 1): 60, ("labels", 0): 0}


@pytest.mark.parametrize("by", ["offset", "time"])
def test_a_retrain_from_mid_stream_learns_the_entity_features_the_flow_gave(
    make_settings: Any, by: str
) -> None:
    """The replay counted each entity from its start: an entity the flow had seen fifty
    times counted one, and a drift retrain learned features the flow never gives."""
    s = make_settings(model_spec="logreg", entity_features=("count", "mean:salary"))
    _produce(s, 600, "mid")
    run_flow_to_end(s)
    events = [m.json() for m in read_topic(s, s.topic_events)]
    ms = [stamp.ms for stamp in stamps(s.bootstrap_servers, s.topic_events)]
    first = next(i for i in range(400, 600) if ms[i] > ms[i - 1])  # no earlier one its ms
    features = EntityFeatures(FeatureSpec.parse(["count", "mean:salary"]))
    want = build_model("logreg", "binary", s.seed)
    for i, e in enumerate(events):
        x = features.update(e["entity"], e["time"], e["features"])
        if i >= first:  # what the retrain learns: the flow's features from there on
            want.learn_one(x, e["label"])
    where = f"{s.topic_events}-0={first}"
    since = f"{ms[first] / 1000:.3f}"
    bounds = ["--from-positions", where] if by == "offset" else ["--since", since]
    done = _retrain(s, "--spec", "logreg", *bounds)
    assert done.returncode == 0, done.stderr
    reg = Registry.connect(s.redis_url, s.registry_key)
    got = reg.load(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
    assert got["LogisticRegression"].weights == pytest.approx(want["LogisticRegression"].weights)


def test_retrain_by_time_replays_only_messages_after_since(make_settings: Any) -> None:
    s = make_settings(model_spec="logreg")
    _produce(s, 700, "old")
    since = time.time()
    wait_for(lambda: time.time() > since + 0.005, 1, "the clock to move past `since`")
    _produce(s, 400, "new", seed=5)
    done = _retrain(s, "--since", f"{since:.6f}", "--spec", "hoeffding")
    assert done.returncode == 0, done.stderr
    assert f"no learn flow of {s.model_name} has said where it is" in done.stdout
    reg = Registry.connect(s.redis_url, s.registry_key)
    info = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
    assert info.spec == "hoeffding" and info.events_seen == 400


def test_an_empty_range_is_a_one_line_error(make_settings: Any) -> None:
    s = make_settings()
    _produce(s, 50, "e")
    done = _retrain(s, "--from-positions", f"{s.topic_events}-0=50", "--spec", "logreg")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("riverrun retrain: error: nothing to learn in the range")
    bad = _retrain(s, "--from-positions", "events:0=1")
    assert bad.returncode == 2 and "expected TOPIC-PARTITION=OFFSET" in bad.stderr
    both = _retrain(s, "--since", "0", "--from-positions", f"{s.topic_events}-0=1")
    assert "argument --from-positions: not allowed with argument --since" in one_line(both)
    unknown = _retrain(s, "--model-name", "nosuch", "--from-positions", f"{s.topic_events}-0=1")
    assert "model 'nosuch' has no champion to take the spec from: give one" in one_line(unknown)
    missing = _retrain(
        s, "--from-positions", f"{s.topic_events}-7=5,nosuch-0=1", "--spec", "logreg"
    )
    assert one_line(missing) == (
        f"riverrun retrain: error: no such partition to replay: nosuch-0, {s.topic_events}-7 "
        f"(the replay reads {s.topic_events}-0, {s.topic_labels}-0)"
    )


def test_a_retrain_does_its_champions_task_says_what_it_refused_and_stops_at_the_end(
    make_settings: Any,
) -> None:
    s = make_settings()  # the settings' task is binary; the champion does regression
    reg = Registry.connect(s.redis_url, s.registry_key)
    pushed = reg.register(
        s.model_name, build_model("linreg", "regression", 0), spec="linreg", task="regression"
    )
    reg.move_alias(
        s.model_name, "champion", pushed.version, expected=ANY, actor="test", reason="pushed"
    )
    req = ProduceRequest("trumpapproval", 300, id_prefix="t")
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    ghost = b'{"kind": "label", "id": "ghost", "label": 1.5}'  # no such event, twice
    write_raw(s, s.topic_events, [(None, b"{not json")] * 3 + [(b"ghost", ghost)] * 2)

    env = {**s.to_env(), "RIVERRUN_DRIFT_DETECTOR": "ddm"}  # fine for binary, unused here
    past_the_end = f"{s.topic_events}-0=999999"
    done = run_cli(env, "retrain", "--to-positions", past_the_end)
    assert done.returncode == 0, done.stderr
    assert "(linreg, regression) learned 300 labelled events" in done.stdout
    refused = done.stdout.splitlines()[-1]
    assert refused.startswith("5 messages of the range were refused: 3 malformed_json, ")
    assert sorted(refused.split(": ", 1)[1].split(", ")[1:]) == [
        "1 duplicate_label",
        "1 unknown_event_id",
    ]
    info = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))  # type: ignore[arg-type]
    assert info.task == "regression" and info.positions[f"{s.topic_events}-0"] == 305


def test_a_model_that_fails_to_learn_is_not_registered(make_settings: Any) -> None:
    s = make_settings()
    rng = random.Random(3)
    rows = [(None, event(i, {"v": rng.random()}, rng.random() < 0.5)) for i in range(200)]
    write_raw(s, s.topic_events, rows)
    line = one_line(_retrain(s, "--spec", "tests.recorder:clumsy"))
    assert re.fullmatch(
        r"riverrun retrain: error: tests.recorder:clumsy failed to learn \d+ of 200 labelled "
        r"events: nothing registered",
        line,
    ), line
    assert Registry.connect(s.redis_url, s.registry_key).versions(s.model_name) == []


def test_a_misspelt_topic_is_refused_and_not_created(make_settings: Any) -> None:
    s = make_settings()
    _produce(s, 50, "m")
    typo = f"{s.topic_events}-typo"
    line = one_line(_retrain(s, "--topic-events", typo, "--spec", "logreg"))
    assert line.endswith(f"Kafka topic {typo!r} does not exist on {s.bootstrap_servers}")
    assert typo not in reach(s.bootstrap_servers, 10)[1], "a misspelt topic is not created"


def test_the_trigger_service_says_which_status_it_acted_on(make_settings: Any) -> None:
    s = make_settings()
    service = TriggerService(s, threading.Event())
    client = service.registry.client
    assert not caught_up(client, s.model_name, 0), "no status acted on yet"
    write_status(client, s.model_name, {"events": 500, "labelled": 400, "models": []})
    service.step(time.time())
    assert caught_up(client, s.model_name, 400)
    assert not caught_up(client, s.model_name, 401), "the flow has gone further since"
    client.set(retrain_lock(s.model_name), "a retrain runs")
    assert not caught_up(client, s.model_name, 400), "a running retrain is not caught up"


def test_one_retrain_of_a_model_runs_at_a_time_by_hand_too(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``riverrun retrain`` took no lock: a retrain by hand ran beside the trigger service's,
    and the service started one beside a retrain by hand."""
    s = make_settings(model_spec="logreg", trigger_drift_wait=0)
    _produce(s, 300, "lock")
    client = Registry.connect(s.redis_url, s.registry_key).client
    lock = retrain_lock(s.model_name)
    client.set(lock, "the trigger service's token", ex=60)
    refused = _retrain(s, "--spec", "logreg")
    assert refused.returncode == 2
    assert one_line(refused) == (
        f"riverrun retrain: error: a retrain of {s.model_name} already runs (lock {lock}); "
        "try again once it ends"
    )
    token = "the trigger service's token"
    under = _retrain(s, "--spec", "logreg", "--lock-token", token)
    assert under.returncode == 0 and "retrain replay" not in under.stderr, under.stderr
    assert client.get(lock) == b"the trigger service's token", "its caller's lock, kept"
    wrong = _retrain(s, "--spec", "logreg", "--lock-token", "a stale token")
    assert wrong.returncode == 2 and "is not held with the token given" in one_line(wrong)
    client.delete(lock)
    done = _retrain(s, "--spec", "logreg", quiet=False)
    assert done.returncode == 0, done.stderr
    assert not client.exists(lock), "freed at the end"
    assert re.search(r"retrain replay: 100%\|.*\| 300/300 ", done.stderr), "its progress"
    monkeypatch.setattr(retrain_lock_module, "LEASE_SECONDS", 2)
    service = TriggerService(s, threading.Event())
    drift = {"kind": "concept", "source": "champion", "position": 10, "positions": {}}
    with retrain_held(client, s.model_name):  # a retrain by hand runs
        taken = time.monotonic()

        def renewed_past_its_lease() -> bool:
            assert client.exists(lock), "the lease lapsed while the retrain ran"
            return time.monotonic() - taken > 5

        wait_for(renewed_past_its_lease, 15, "two leases and a half", every=0.05)
        service._retrain(Action("retrain", "drift", evidence={"drift": drift}, policy="drift"))
    assert service._worker is None, "the service started no retrain beside it"
    (entry,) = [e for e in service.registry.history(s.model_name) if e.action == "trigger-retrain"]
    assert entry.reason.startswith("skipped, a retrain of this model already runs")
    assert not client.exists(lock)


BAD_TIMES = ["nan", "inf", "-inf", "1e300", "-5", "1969-12-31", "yesterday"]


@pytest.mark.parametrize("value", BAD_TIMES)
def test_a_time_kafka_cannot_hold_is_no_time(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="from 1970 to 9999"):
        parse_time(value)


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        (["retrain"], "--since", "nan"),
        (["retrain"], "--until", "-inf"),
        (["evaluate", "--model", "logreg", "--source", "kafka"], "--since", "1e300"),
    ],
)
def test_a_time_kafka_cannot_hold_is_refused_in_one_line(
    make_settings: Any, command: list[str], flag: str, value: str
) -> None:
    line = one_line(run_cli(make_settings().to_env(), *command, f"{flag}={value}"))  # -inf
    assert line.startswith(f"riverrun {command[0]}: error: argument {flag}: {value!r}: ")
    assert "expected epoch seconds or an ISO-8601 time from 1970 to 9999" in line


@pytest.mark.parametrize(
    ("command", "bounds", "said"),
    [
        (["retrain"], ["--since", "2030-01-01", "--until", "2020-01-01"], "--since 1893456000.0"),
        (
            ["evaluate", "--model", "logreg", "--source", "kafka"],
            ["--start-offset", "10", "--stop-offset", "5"],
            "--start-offset 10 is not before --stop-offset 5",
        ),
        (
            ["registry", "push", "m", "--spec", "logreg", "--warm-start", "kafka"],
            ["--since", "100", "--until", "100"],
            "--since 100.0 is not before --until 100.0",
        ),
    ],
)
def test_a_range_that_ends_before_it_starts_is_refused_in_one_line(
    make_settings: Any, command: list[str], bounds: list[str], said: str
) -> None:
    """It read as a range with nothing in it: 'holds no event', 'nothing to learn'."""
    line = one_line(run_cli(make_settings().to_env(), *command, *bounds))
    assert line.startswith(f"riverrun {command[0]}: error: {said}"), line
