"""``riverrun trigger`` reads the drift topic through the real broker: a message it cannot
read is skipped, the drift events after it still arm the policies, and a restarted service
keeps what they noted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from flows import trigger_service
from flows.retrain_lock import retrain_lock
from flows.trigger_service import TriggerService, retrain_argv
from models.specs import build_model
from models.triggers import Action
from riverrun.retrain_cmd import parse_time
from tests.helpers import process_alive, wait_for, write_raw


def _service_and_versions(s: Any, count: int) -> tuple[Any, ...]:
    """A trigger service of the settings' model, and ``count`` versions registered for it."""
    service = TriggerService(s, threading.Event())
    model = build_model("logreg", "binary", 1)
    register = service.registry.register
    versions = [register(s.model_name, model, spec="logreg", task="binary") for _ in range(count)]
    return (service, *(info.version for info in versions))


def _crown(service: Any, name: str, *versions: int) -> None:
    """Make each of ``versions`` the champion of ``name`` in turn, the first from none."""
    before = None
    for version in versions:
        service.registry.move_alias(
            name, "champion", version, expected=before, actor="t", reason="crowned"
        )
        before = version


def test_unreadable_drift_messages_are_skipped_and_the_next_event_counts(
    make_settings: Any,
) -> None:
    s = make_settings(partitions=1)
    now = time.time()
    drift = {
        "model": s.model_name,
        "kind": "concept",
        "source": "champion",
        "detector": "adwin",
        "position": 120,
        "statistic": 0.4,
        "positions": {f"{s.topic_events}-0": 240},
        "detected_at": now,
    }
    bad = [
        b"not json",
        b"[1, 2]",
        orjson.dumps({**drift, "detected_at": "now"}),
        orjson.dumps({**drift, "detected_at": None}),
        orjson.dumps({**drift, "position": "x"}),
        orjson.dumps({**drift, "statistic": [0.4]}),
        orjson.dumps({**drift, "positions": [["events-0", 240]]}),
        orjson.dumps({**drift, "positions": {"events-0": "240"}}),
        orjson.dumps({**drift, "positions": {"events-0": -5}}),  # no retrain could read it
        orjson.dumps({**drift, "position": -1}),
    ]
    write_raw(s, s.topic_drift, [(None, raw) for raw in [*bad, orjson.dumps(drift)]])
    service = TriggerService(s, threading.Event())
    failures: list[BaseException] = []

    def run() -> None:
        try:
            service.run(poll=0.05)
        except BaseException as exc:  # the test reports it, with the thread's end
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        saved = service.offsets

        def read_all() -> bool:
            assert not failures, f"the service stopped: {failures[0]!r}"
            return service.registry.client.hget(saved, "0") == str(len(bad) + 1).encode()

        wait_for(read_all, 30, "the service to read past every drift message")
    finally:
        service.stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failures
    assert service.triggers.drift == drift, "the good drift event armed the drift policy"
    again = TriggerService(s, threading.Event())  # the service restarted: the drift is read
    assert again.triggers.drift == drift, "and still armed"
    service.registry.client.set(service.state_key, b'{"drift": "not an event"}')
    assert TriggerService(s, threading.Event()).triggers.drift is None, "a bad state is ignored"


def test_stopping_the_service_stops_its_running_retrain_and_frees_the_lock(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waited for the retrain (up to 3,000 s) before it stopped; killed meanwhile, it left
    the retrain running and its lock held for an hour."""
    s = make_settings(trigger_drift_wait=0)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setattr(trigger_service, "retrain_argv", lambda action, alias, token: sleeper)
    service = TriggerService(s, threading.Event())
    drift = {"kind": "concept", "source": "champion", "position": 10, "positions": {}}
    service._retrain(Action("retrain", "drift", evidence={"drift": drift}, policy="drift"))
    worker = service._worker
    lock = retrain_lock(s.model_name)
    assert worker is not None and service.registry.client.get(lock) is not None
    service.stop.set()
    wait_for(lambda: not worker.is_alive(), 30, "the retrain to stop with the service")
    assert service.registry.client.get(lock) is None, "the lock is free"
    (entry,) = [e for e in service.registry.history(s.model_name) if e.action == "trigger-retrain"]
    assert entry.reason.startswith("retrain stopped with the trigger service; due again")
    assert service.triggers.drift == drift, "armed again for the next start"
    assert not service.triggers.drift_tries, "a stop is no failed try: three would give it up"
    assert REGISTRY.get_sample_value(
        "riverrun_retrains_total", {"model": s.model_name, "outcome": "failed"}
    ) in (None, 0.0)


KILLED_SERVICE = """
import sys, threading, time
from flows import retrain_lock, trigger_service
from models.triggers import Action
from riverrun.settings import Settings
retrain_lock.LEASE_SECONDS = {lease}
sleep = "import os, time; open({pid!r}, 'w').write(str(os.getpid())); time.sleep(120)"
sleeper = ["{python}", "-c", sleep]
trigger_service.retrain_argv = lambda action, alias, token: sleeper
service = trigger_service.TriggerService(Settings.from_env(), threading.Event())
drift = {{"kind": "concept", "source": "champion", "position": 10, "positions": {{}}}}
service._retrain(Action("retrain", "drift", evidence={{"drift": drift}}, policy="drift"))
time.sleep(120)
"""


def test_a_killed_service_takes_its_retrain_along_and_its_lock_soon_frees_itself(
    make_settings: Any, tmp_path: Path
) -> None:
    """SIGKILLed, the service left its retrain running to its end and the lock held for an
    hour, so no retrain of the model could start meanwhile. The lock is now a lease, renewed
    while the retrain runs, and the retrain gets SIGTERM when the service dies."""
    s = make_settings()
    lease = 2
    pid = tmp_path / "retrain.pid"
    code = KILLED_SERVICE.format(lease=lease, python=sys.executable, pid=str(pid))
    service = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **s.to_env()})
    client = redis.Redis.from_url(s.redis_url)
    lock = retrain_lock(s.model_name)
    try:
        wait_for(lambda: client.exists(lock), 30, "the retrain to take its lock")
        taken = time.monotonic()

        def outlived_its_lease() -> bool:
            assert client.exists(lock), "the lock lapsed while its retrain ran"
            return time.monotonic() - taken > 2 * lease

        wait_for(outlived_its_lease, 10, "the retrain to outlast two leases", every=0.1)
        retrain = int(wait_for(lambda: pid.exists() and pid.read_text(), 30, "the retrain's pid"))
        assert process_alive(retrain)
        os.kill(service.pid, signal.SIGKILL)
        service.wait()
        wait_for(lambda: not process_alive(retrain), 10, "the retrain to end with its service")
        wait_for(lambda: not client.exists(lock), 2 * lease, "the lock to free itself")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def test_a_lookback_from_before_1970_replays_from_the_start() -> None:
    """``riverrun retrain`` refuses times before 1970; a lookback longer than that means all."""
    argv = retrain_argv(Action("retrain", "scheduled", since=1e12), "challenger-retrain", "t")
    since = argv[argv.index("--since") + 1]
    assert since == "0.000" and parse_time(since) == 0.0
    recent = retrain_argv(Action("retrain", "scheduled", since=60.0), "challenger-retrain", "t")
    assert abs(parse_time(recent[recent.index("--since") + 1]) - (time.time() - 60)) < 5


def test_a_slump_rollback_leaves_a_champion_moved_since_alone(make_settings: Any) -> None:
    """The status a slump is read from is a moment old: a champion promoted since is not the
    one that slumped, and is not rolled back; one moved since only by its own checkpoints
    (newer snapshots of the same model) is."""
    s = make_settings()
    service, v1, v2, v3 = _service_and_versions(s, 3)
    reg, name = service.registry, s.model_name
    _crown(service, name, v1, v2)
    reg.move_alias(name, "champion", v3, expected=v2, actor="t", reason="c", action="checkpoint")
    service._rollback(Action("rollback", "slump", evidence={"champion_version": v1}))
    assert reg.alias(name, "champion") == v3, "v1 slumped, but v2 was promoted since"
    service._rollback(Action("rollback", "slump", evidence={"champion_version": v2}))
    assert reg.alias(name, "champion") == v1, "v2 slumped: v3 is its checkpoint, rolled back"


def test_a_slump_promotion_promotes_only_the_challenger_the_contest_tested(
    make_settings: Any,
) -> None:
    """A challenger pushed (or retrained) under the alias since the status is not the one
    the contest found better, and is not promoted; one moved since only by its own
    checkpoints is."""
    s = make_settings()
    service, v1, v2, v3, v4 = _service_and_versions(s, 4)
    reg, name = service.registry, s.model_name
    _crown(service, name, v1)
    reg.move_alias(name, "challenger", v2, expected=None, actor="t", reason="a", action="set")
    reg.move_alias(name, "challenger", v3, expected=v2, actor="t", reason="pushed", action="set")
    seen = {"champion_version": v1, "challenger_version": v2}
    service._promote(Action("promote", "slump", alias="challenger", evidence=seen))
    assert reg.alias(name, "champion") == v1, "v2 was tested, v3 replaced it since"
    reg.move_alias(name, "challenger", v4, expected=v3, actor="t", reason="c", action="checkpoint")
    seen = {"champion_version": v1, "challenger_version": v3}
    service._promote(Action("promote", "slump", alias="challenger", evidence=seen))
    assert reg.alias(name, "champion") == v4, "v3 was tested: v4 is its checkpoint"
    assert reg.alias(name, "challenger") == v1, "the former champion, kept as a challenger"


def test_a_slump_promotion_whose_second_move_conflicts_is_audited_as_done(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow's checkpoint of the challenger between the two moves: the champion had moved,
    and the audit said "promotion failed"."""
    s = make_settings()
    service, v1, v2, v3 = _service_and_versions(s, 3)
    reg, name = service.registry, s.model_name
    _crown(service, name, v1)
    reg.move_alias(name, "challenger", v2, expected=None, actor="t", reason="a", action="set")
    move = reg.move_alias

    def then_a_checkpoint(model_name: str, alias: str, *args: Any, **kwargs: Any) -> Any:
        done = move(model_name, alias, *args, **kwargs)
        if alias == "champion":  # the flow checkpoints its challenger meanwhile
            move(name, "challenger", v3, expected=v2, actor="flow", reason="c", action="checkpoint")
        return done

    monkeypatch.setattr(reg, "move_alias", then_a_checkpoint)
    seen = {"champion_version": v1, "challenger_version": v2}
    service._promote(Action("promote", "slump", alias="challenger", evidence=seen))
    assert reg.aliases(name) == {"champion": v2, "challenger": v3}
    (audited,) = [e.reason for e in reg.history(name) if e.action == "trigger-promote"]
    assert audited.startswith("promoted; challenger not moved to the former champion ("), audited


def test_a_slump_promotion_or_rollback_to_a_version_that_does_not_check_is_refused(
    make_settings: Any,
) -> None:
    """As `riverrun registry promote` and `rollback` refuse it: every flow and server would
    refuse to load the champion the trigger made."""
    s = make_settings()
    service, v1, v2, v3 = _service_and_versions(s, 3)
    reg, name = service.registry, s.model_name
    _crown(service, name, v1, v2)
    reg.move_alias(name, "challenger", v3, expected=None, actor="t", reason="a", action="set")
    for tampered in (v1, v3):
        reg.client.set(f"riverrun:registry:{name}:blob:{tampered}", b"RRS1" + b"0" * 40)
    seen = {"champion_version": v2, "challenger_version": v3}
    service._promote(Action("promote", "slump", alias="challenger", evidence=seen))
    service._rollback(Action("rollback", "slump", evidence={"champion_version": v2}))
    assert reg.aliases(name) == {"champion": v2, "challenger": v3}
    refusals = [e.reason for e in reg.history(name) if e.action.startswith("trigger-")]
    assert refusals == [
        f"promotion failed (model {name!r} v{v3} cannot be the champion: snapshot signature "
        f"does not match: refused (tampered, or signed with another key) (riverrun registry "
        f"verify {name} checks every version)): slump",
        f"rollback failed (model {name!r} v{v1} cannot be the champion: snapshot signature "
        f"does not match: refused (tampered, or signed with another key) (riverrun registry "
        f"verify {name} checks every version)): slump",
    ]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "is not JSON"),
        (b"{}", "has no number for 'labelled'"),
        (b'{"labelled": null}', "has no number for 'labelled'"),
        (b'{"labelled": 10, "positions": [1]}', "no map of partitions to offsets"),
        (b'{"labelled": 10, "models": [1]}', "no list of objects for 'models'"),
        (b'{"labelled": 10, "models": [{"metrics": {"n": "many"}}]}', "are not numbers"),
        (b'{"labelled": 10, "contest": {"challenger": 1}}', "no map of objects"),
        (b'{"labelled": 10, "models": [{"metrics": {"n": null}}]}', "'n' is no number"),
        (b'{"labelled": 10, "contest": {"c": {"p_value": "0.01"}}}', "'p_value' is askew"),
    ],
)
def test_a_status_no_flow_wrote_is_skipped_with_a_warning(
    make_settings: Any, caplog: pytest.LogCaptureFixture, raw: bytes, says: str
) -> None:
    """It raised out of the service's loop (a JSONDecodeError, a KeyError, a TypeError),
    stopping the service with a traceback."""
    s = make_settings(trigger_slump_action="promote")
    service = TriggerService(s, threading.Event())
    service.registry.client.set(f"riverrun:status:{s.model_name}", raw)
    service.step(time.time())
    assert "cannot read the learn flow's status: the status of model" in caplog.text
    assert says in caplog.text
    assert service.registry.history(s.model_name) == [], "nothing decided on it"
