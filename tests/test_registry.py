"""The registry on a real Redis: versions, compare-and-set aliases, audit, rollback,
signatures, retention, and the CLI over it."""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from river import linear_model

from models.registry import (
    CHANNEL,
    AliasMove,
    Conflict,
    NotFound,
    Registry,
    RegistryError,
    _bound_fields,
    model_params,
)
from models.signing import MAGIC, SignatureError, dumps_signed, mac, verify
from riverrun.local import LocalStack
from tests.helpers import one_line, run_cli

KEY = "k" * 32


@pytest.fixture
def reg(stack: LocalStack) -> Registry:
    return Registry(redis.Redis.from_url(stack.redis_url), KEY, keep=3)


@pytest.fixture
def name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _register(reg: Registry, name: str, n: int = 1, **kw: Any) -> list[int]:
    return [
        reg.register(
            name, linear_model.LinearRegression(), spec="linreg", task="regression", **kw
        ).version
        for _ in range(n)
    ]


def test_versions_are_numbered_and_hold_their_lineage(reg: Registry, name: str) -> None:
    first = reg.register(
        name,
        linear_model.LinearRegression(),
        spec="linreg",
        task="regression",
        metrics={"mae": 1.5},
        events_seen=10,
        positions={"events-0": 10},
        tags={"who": "test"},
    )
    second = reg.register(
        name,
        linear_model.LinearRegression(),
        spec="linreg",
        task="regression",
        parent=first.version,
    )
    assert (first.version, second.version) == (1, 2)
    info = reg.info(name, 1)
    assert info.metrics == {"mae": 1.5} and info.positions == {"events-0": 10}
    assert info.events_seen == 10 and info.tags == {"who": "test"} and info.parent is None
    assert reg.info(name, 2).parent == 1
    assert info.params["intercept_lr"] is not None and info.code_version
    assert info.size > 0 and len(info.sha256) == 64
    assert [v.version for v in reg.versions(name)] == [1, 2]
    assert name in reg.models()
    with pytest.raises(NotFound):
        reg.info(name, 99)


def test_alias_moves_are_conditional_audited_and_announced(reg: Registry, name: str) -> None:
    v1, v2, v3 = _register(reg, name, 3)
    listener = reg.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CHANNEL)
    reg.move_alias(name, "champion", v1, expected=None, actor="a", reason="first")
    with pytest.raises(Conflict) as err:
        reg.move_alias(name, "champion", v3, expected=None, actor="b", reason="late")
    assert err.value.current == v1
    reg.move_alias(
        name, "champion", v2, expected=v1, actor="c", reason="better", evidence={"p_value": 0.01}
    )
    with pytest.raises(Conflict):
        reg.move_alias(name, "champion", v3, expected=v1, actor="d", reason="stale")
    with pytest.raises(NotFound):
        reg.move_alias(name, "challenger", 42, actor="e", reason="no such version")
    assert reg.aliases(name) == {"champion": v2}
    moves = reg.history(name)
    assert [(m.from_version, m.to_version, m.actor) for m in moves] == [
        (None, v1, "a"),
        (v1, v2, "c"),
    ]
    assert moves[1].evidence == {"p_value": 0.01} and moves[1].reason == "better"
    announced = []
    deadline = time.monotonic() + 10
    while len(announced) < 2:
        assert time.monotonic() < deadline, "no announcement on the channel"
        message = listener.get_message(timeout=1)
        if message is not None and orjson.loads(message["data"])["model"] == name:
            announced.append(orjson.loads(message["data"]))  # not another test's model
    assert [a["to"] for a in announced] == [str(v1), str(v2)]


def _racer(url: str, name: str, me: int, rounds: Any, results: Any, barrier: Any) -> None:
    reg = Registry(redis.Redis.from_url(url), KEY)
    while (job := rounds.get(timeout=60)) is not None:
        expected, target = job
        barrier.wait(timeout=30)
        try:
            reg.move_alias(
                name, "champion", target, expected=expected, actor=f"racer-{me}", reason="race"
            )
            results.put((me, target, True))
        except Conflict:
            results.put((me, target, False))


def test_two_processes_racing_100_times_never_both_win(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    versions = _register(reg, name, 201)
    reg.move_alias(name, "champion", versions[0], expected=None, actor="setup", reason="start")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    queues = [ctx.Queue(), ctx.Queue()]
    results: Any = ctx.Queue()
    procs = [  # daemons, whose waits end: a failed round cannot leave them blocking the run
        ctx.Process(
            target=_racer, args=(stack.redis_url, name, i, queues[i], results, barrier), daemon=True
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    winners = []
    current = versions[0]
    try:
        for r in range(100):
            targets = versions[1 + 2 * r], versions[2 + 2 * r]
            for i in range(2):
                queues[i].put((current, targets[i]))
            outcome = [results.get(timeout=30) for _ in range(2)]
            won = [target for _me, target, ok in outcome if ok]
            assert len(won) == 1, f"round {r}: {outcome}"
            winners.append((current, won[0]))
            current = won[0]
    finally:
        for q in queues:
            q.put(None)
        for p in procs:
            p.join(30)
            if p.exitcode is None:
                p.terminate()
                p.join(10)
    assert [p.exitcode for p in procs] == [0, 0], "both racers ended when told to"
    assert reg.alias(name, "champion") == current
    audited = [(m.from_version, m.to_version) for m in reg.history(name)][1:]
    assert audited == winners


def test_rollback_walks_back_through_previous_champions(reg: Registry, name: str) -> None:
    v1, v2, v3 = _register(reg, name, 3)
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    reg.move_alias(name, "champion", v2, expected=v1, actor="t", reason="r")
    reg.move_alias(name, "champion", v3, expected=v2, actor="t", reason="r")
    assert reg.rollback(name, actor="ops", reason="bad model").to_version == v2
    assert reg.rollback(name, actor="ops", reason="still bad").to_version == v1
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback(name, actor="ops", reason="again")
    moves = reg.history(name)
    assert [m.action for m in moves[-2:]] == ["rollback", "rollback"]
    assert moves[-1].reason == "still bad" and moves[-1].actor == "ops"


class _Booby:
    """A pickle that creates a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_tampered_and_unsigned_snapshots_are_refused_unread(
    reg: Registry, name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Booby(marker))
    pickle.loads(payload)  # the payload is live: unpickling it does run code
    assert marker.exists()
    marker.unlink()

    (v1,) = _register(reg, name)
    blob_key = f"riverrun:registry:{name}:blob:{v1}"
    signed = bytearray(dumps_signed(_Booby(marker), reg.key))
    signed[-3] ^= 0x01  # flip one byte of the pickle
    reg.client.set(blob_key, bytes(signed))
    with pytest.raises(SignatureError, match="does not match"):
        reg.load(name, v1)
    reg.client.set(blob_key, payload)  # unsigned
    with pytest.raises(SignatureError, match="unsigned"):
        reg.load(name, v1)
    assert not marker.exists(), "code inside a refused snapshot ran"
    assert reg.refused_count(name) == 2
    assert [m.action for m in reg.history(name)] == ["refused", "refused"]
    assert reg.verify(name) == [(v1, "unsigned snapshot: refused")]
    other = Registry(reg.client, "another key of 32 bytes........")
    with pytest.raises(SignatureError, match="or the registry key is not the one it was regis"):
        other.load(name, _register(reg, name)[0])  # the likeliest cause, said


def test_another_versions_signed_bytes_are_refused_in_its_place(reg: Registry, name: str) -> None:
    old = reg.register(
        name, linear_model.LinearRegression(l2=0.5), spec="linreg", task="regression"
    )
    new = reg.register(name, linear_model.LinearRegression(), spec="linreg", task="regression")
    reg.client.set(
        f"riverrun:registry:{name}:blob:{new.version}",
        reg.client.get(f"riverrun:registry:{name}:blob:{old.version}"),
    )
    with pytest.raises(SignatureError, match=f"not those registered for v{new.version}"):
        reg.load(name, new.version)
    assert reg.load(name, old.version).l2 == 0.5
    assert [v for v, error in reg.verify(name) if error] == [new.version]
    assert reg.refused_count(name) == 1


def _key(model: str, part: str, version: int) -> str:
    return f"riverrun:registry:{model}:{part}:{version}"


def _copy(reg: Registry, source: tuple[str, int], target: tuple[str, int]) -> None:
    """Write one version's metadata and signed snapshot over another's, as anyone who can
    write to Redis but has no registry key can."""
    for part in ("v", "blob"):
        reg.client.set(
            _key(target[0], part, target[1]), reg.client.get(_key(source[0], part, source[1]))
        )


def _edit(reg: Registry, where: tuple[str, int], fields: dict[str, Any]) -> None:
    """Rewrite fields of a version's stored metadata by hand."""
    key = _key(where[0], "v", where[1])
    reg.client.set(key, orjson.dumps({**orjson.loads(reg.client.get(key)), **fields}))


def _booby(reg: Registry, model: str, marker: Path) -> int:
    """Register a snapshot that creates ``marker`` if it is ever unpickled."""
    return reg.register(model, _Booby(marker), spec="linreg", task="regression").version


def test_an_old_versions_snapshot_and_metadata_are_refused_over_the_champion(
    reg: Registry, name: str, stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    old = _booby(reg, name, marker)
    (champion,) = _register(reg, name)
    reg.move_alias(name, "champion", champion, expected=None, actor="t", reason="r")
    _copy(reg, (name, old), (name, champion))
    refusal = f"the metadata of {name!r} v{champion} is not the one registered as that model"
    with pytest.raises(SignatureError, match=refusal):
        reg.load_alias(name, "champion")
    assert not marker.exists(), "code inside a refused snapshot ran"
    assert reg.refused_count(name) == 1
    assert [(m.action, m.from_version) for m in reg.history(name)][-1] == ("refused", champion)
    assert [v for v, error in reg.verify(name) if error and refusal in error] == [champion]
    verified = _cli(stack, "verify", name)
    assert verified.returncode == 1 and f"v{champion:<5} REFUSED: {refusal}" in verified.stdout


def test_another_models_version_is_refused_under_this_ones_name(
    reg: Registry, name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    other = f"{name}-other"
    theirs = _booby(reg, other, marker)
    (mine,) = _register(reg, name)
    assert theirs == mine  # the same number: only the model name tells them apart
    _copy(reg, (other, theirs), (name, mine))
    refusal = f"the metadata of {name!r} v{mine} is not the one registered as that model"
    with pytest.raises(SignatureError, match=refusal):
        reg.load_version(name, mine)
    _edit(reg, (name, mine), {"model": name})  # naming this model in the JSON changes nothing
    with pytest.raises(SignatureError, match=refusal):
        reg.load_version(name, mine)
    assert not marker.exists(), "code inside a refused snapshot ran"
    assert (reg.refused_count(name), reg.refused_count(other)) == (2, 0)
    assert [(v, error and refusal in error) for v, error in reg.verify(name)] == [(mine, True)]
    assert reg.verify(other) == [(theirs, None)]


@pytest.mark.parametrize(
    "fields",
    [
        {"task": "binary"},
        {"spec": "arf"},
        {"events_seen": 10**6},
        {"positions": {"events-0": 0}},
        {"parent": 7},
        {"metrics": {"mae": 0.0}},
    ],
    ids=lambda fields: next(iter(fields)),
)
def test_edited_metadata_is_refused(reg: Registry, name: str, fields: dict[str, Any]) -> None:
    (version,) = _register(reg, name, events_seen=5, positions={"events-0": 5})
    _edit(reg, (name, version), fields)
    with pytest.raises(SignatureError, match="is not the one registered"):
        reg.load(name, version)
    assert reg.refused_count(name) == 1


def test_versions_registered_before_bindings_are_refused_with_the_fix(
    reg: Registry, name: str
) -> None:
    (version,) = _register(reg, name)
    key = _key(name, "v", version)
    unbound = {k: v for k, v in orjson.loads(reg.client.get(key)).items() if k != "binding"}
    reg.client.set(key, orjson.dumps(unbound))
    refusal = (
        f"{name!r} v{version} was registered before snapshots were bound to their model and "
        "version: refused; register the model again"
    )
    with pytest.raises(SignatureError, match=refusal):
        reg.load(name, version)
    assert reg.refused_count(name) == 1
    assert str(reg.verify(name)[0][1]).startswith(refusal)


def test_versions_signed_here_or_beforehand_load_as_registered(reg: Registry, name: str) -> None:
    model = linear_model.LinearRegression(l2=0.25)
    lineage = {"metrics": {"mae": 0.5}, "events_seen": 3, "positions": {"events-0": 3}}
    here = reg.register(name, model, spec="linreg", task="regression", **lineage)
    ahead = reg.register(
        name,
        None,
        spec="linreg",
        task="regression",
        parent=here.version,
        params=model_params(model),
        signed=dumps_signed(model, reg.key),
    )
    for info in (here, ahead):
        loaded, obj = reg.load_version(name, info.version)
        assert loaded == info and obj.l2 == 0.25
    assert here.binding != ahead.binding
    assert reg.verify(name) == [(here.version, None), (ahead.version, None)]
    assert reg.refused_count(name) == 0


class _Opaque:
    """A parameter JSON cannot hold: stored as its text, which names its address."""


def test_parameters_json_cannot_hold_load_as_stored(reg: Registry, name: str) -> None:
    info = reg.register(
        name, None, spec="linreg", task="regression", params={"optimizer": _Opaque()}
    )
    assert info.params["optimizer"].startswith("<tests.test_registry._Opaque object at 0x")
    assert reg.load_version(name, info.version)[0] == info
    assert reg.verify(name) == [(info.version, None)]


def test_a_version_number_is_not_given_twice_when_the_counter_goes_back(
    reg: Registry, name: str
) -> None:
    first, second = _register(reg, name, 2)
    reg.client.delete(f"riverrun:registry:{name}:next")  # as a restored or edited Redis
    (third,) = _register(reg, name)
    assert third == second + 1
    reg.client.set(f"riverrun:registry:{name}:v:{third + 1}", b"{}")  # taken, yet unlisted
    with pytest.raises(RegistryError, match=f"v{third + 1} already exists in Redis"):
        _register(reg, name)
    assert reg.client.get(f"riverrun:registry:{name}:v:{third + 1}") == b"{}", "not overwritten"
    assert [v for v, error in reg.verify(name) if error is None] == [first, second, third]


def test_a_binding_does_not_pass_for_a_snapshots_signature(reg: Registry, name: str) -> None:
    info = reg.register(name, linear_model.LinearRegression(), spec="linreg", task="regression")
    bound = _bound_fields(info)  # signed as a snapshot, it would be MAGIC + binding + these
    with pytest.raises(SignatureError, match="does not match"):
        verify(MAGIC + bytes.fromhex(info.binding) + bound, reg.key)
    assert verify(MAGIC + mac(bound, reg.key) + bound, reg.key) == bound, "the same key would"


def test_retention_keeps_recent_aliased_and_rollback_versions(reg: Registry, name: str) -> None:
    versions = _register(reg, name, 12)
    reg.move_alias(name, "champion", 1, expected=None, actor="t", reason="r")
    reg.move_alias(name, "champion", 2, expected=1, actor="t", reason="r")
    reg.move_alias(name, "challenger", 5, expected=None, actor="t", reason="r", action="set")
    reg.move_alias(name, "challenger", 6, expected=5, actor="t", reason="r", action="set")
    removed = reg.prune(name)
    kept = {v.version for v in reg.versions(name)}
    # last 3 (10-12), aliases (2, 6), rollback target (1), named by the last 3 moves (5)
    assert kept == {1, 2, 5, 6, 10, 11, 12}
    assert sorted(removed) == sorted(set(versions) - kept)
    assert reg.rollback(name, actor="t", reason="r").to_version == 1


def test_retention_counts_alias_moves_past_trigger_and_split_entries(
    reg: Registry, name: str
) -> None:
    """Only the last keep * 4 audit entries were read: a trigger's decisions and outcomes,
    which move no alias, crowded the moves out, and a version they named was deleted."""
    _register(reg, name, 12)
    reg.move_alias(name, "challenger", 5, expected=None, actor="t", reason="r", action="set")
    reg.move_alias(name, "challenger", 6, expected=5, actor="t", reason="r", action="set")
    for i in range(12):
        reg.audit(name, "trigger-retrain", "trigger", f"decided {i}", {})
    reg.prune(name)
    assert {v.version for v in reg.versions(name)} == {5, 6, 10, 11, 12}


def test_a_version_that_scored_nothing_is_listed_without_metrics(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    fresh = {"accuracy": 0.0, "log_loss": 0.0, "n": 0}
    (unscored,) = _register(reg, name, metrics=fresh)
    (scored,) = _register(reg, name, metrics={"accuracy": 0.9, "n": 10})
    (broken,) = _register(reg, name, metrics={"accuracy": 0.5, "mae": math.nan, "n": 10})
    listed = _cli(stack, "list", name)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"v{unscored} ") and lines[0].endswith("not scored yet")
    assert lines[1].startswith(f"v{scored} ") and lines[1].endswith("accuracy=0.9000")
    assert lines[2].startswith(f"v{broken} ") and lines[2].endswith("accuracy=0.5000, mae=-")


def test_unreadable_or_missing_metadata_is_named_not_skipped(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    v1, v2, v3 = _register(reg, name, 3)
    reg.client.set(f"riverrun:registry:{name}:v:{v2}", b'{"version": 2, "spec')
    reg.client.delete(f"riverrun:registry:{name}:v:{v3}")
    results = dict(reg.verify(name))
    assert results[v1] is None
    assert f"model {name!r} v{v2}: its metadata is unreadable" in str(results[v2])
    assert results[v3] == "its metadata is missing"
    with pytest.raises(RegistryError, match="its metadata is unreadable"):
        reg.load(name, v2)
    listed = _cli(stack, "list", name)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert listed.stderr.startswith(f"riverrun registry: error: model {name!r} v{v2}: its meta")
    verified = _cli(stack, "verify", name)
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    assert f"v{v3}" in verified.stdout and "metadata is missing" in verified.stdout


def test_an_alias_moved_while_retention_reads_keeps_its_version(
    reg: Registry, name: str, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion that lands between retention's reads and its delete (here, from another
    connection, at the worst moment) is seen: the version it names is not deleted."""
    versions = _register(reg, name, 8)
    reg.move_alias(name, "champion", versions[-1], expected=None, actor="t", reason="r")
    other = Registry(redis.Redis.from_url(stack.redis_url), KEY)
    read = reg.newest_moves  # retention's last read, after the aliases'
    moves = iter([versions[0]])

    def promote_then_read(model: str, limit: int, page: int = 100) -> Iterator[AliasMove]:
        for version in moves:  # once
            other.move_alias(model, "champion", version, actor="ops", reason="by hand")
        return read(model, limit, page)

    monkeypatch.setattr(reg, "newest_moves", promote_then_read)
    removed = reg.prune(name)
    assert versions[0] not in removed and reg.alias(name, "champion") == versions[0]
    reg.load(name, versions[0])  # still there
    assert sorted(removed) == versions[1:5]


def _cli(stack: LocalStack, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli({**stack.env(), "RIVERRUN_REGISTRY_KEY": KEY}, "registry", *argv)


def test_cli_promotes_rolls_back_and_reports(reg: Registry, name: str, stack: LocalStack) -> None:
    v1, v2 = _register(reg, name, 2)
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    done = _cli(stack, "promote", name, str(v2), "--reason", "looks better")
    assert done.returncode == 0 and f"v{v1} -> v{v2}" in done.stdout
    listing = orjson.loads(_cli(stack, "list", name, "--json").stdout)
    assert listing["aliases"] == {"champion": v2} and len(listing["versions"]) == 2
    assert orjson.loads(_cli(stack, "show", name, "--json").stdout)["version"] == v2
    assert _cli(stack, "rollback", name).returncode == 0
    assert reg.alias(name, "champion") == v1
    hist = orjson.loads(_cli(stack, "history", name, "--json").stdout)
    assert [h["action"] for h in hist] == ["promote", "promote", "rollback"]
    assert hist[1]["reason"] == "looks better" and "(cli)" in hist[1]["actor"]
    assert _cli(stack, "verify", name).returncode == 0
    reg.client.set(f"riverrun:registry:{name}:blob:{v2}", b"junk")
    bad = _cli(stack, "verify", name)
    assert bad.returncode == 1 and f"v{v2}" in bad.stdout and "REFUSED" in bad.stdout
    v3 = _register(reg, name)[0]
    reg.move_alias(name, "champion", v3, actor="learn-flow", reason="it won")
    stale = _cli(stack, "rollback", name, "--from", str(v2))  # v2 is no longer the champion
    assert f"{name} champion points at {v3}, not {v2}: someone else moved it" in one_line(stale)
    assert reg.alias(name, "champion") == v3
    assert _cli(stack, "rollback", name, "--from", str(v3)).returncode == 0
    assert reg.alias(name, "champion") == v1
    unknown = _cli(stack, "history", f"{name}-nosuch")
    assert one_line(unknown).endswith(f"unknown model '{name}-nosuch': it has no history")
    failed = _cli(stack, "rollback", name)
    assert failed.returncode == 2
    assert (
        failed.stderr.strip() == f"riverrun registry: error: {name} has no previous champion "
        "to roll back to"
    )


def test_cli_push_warm_starts_only_on_labelled_events_of_the_models_task(
    reg: Registry, name: str, stack: LocalStack, tmp_path: Path
) -> None:
    (v1,) = _register(reg, name)  # a regression champion
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    push = ("push", name, "--spec", "linreg", "--quiet", "--warm-start")
    other_task = _cli(stack, *push, "phishing")  # a binary stream, for a regression model
    assert one_line(other_task).endswith(
        f"dataset phishing is a binary stream, and model {name!r} does regression (its champion)"
    )
    unlabelled = tmp_path / "unlabelled.jsonl"
    events = ({"id": f"e{i}", "time": i, "features": {"x": float(i)}} for i in range(5))
    unlabelled.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    assert one_line(_cli(stack, *push, str(unlabelled))).endswith(
        f"file {unlabelled}: no event was labelled, nothing to warm-start on"
    )
    assert "'': expected a non-empty value" in one_line(_cli(stack, *push, ""))
    assert [v.version for v in reg.versions(name)] == [v1], "nothing refused was registered"

    first = _cli(stack, *push, "trumpapproval", "--events", "50")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("warm-started on 50 labelled events)"), first.stdout
    again = _cli(stack, *push, "trumpapproval", "--events", "50")
    assert again.stdout.strip().endswith(f"(was v{v1 + 1})"), "says which version it replaced"
    new_model = f"{name}-new"  # no champion to follow: the dataset's task
    fresh = _cli(
        stack,
        "push",
        new_model,
        "--spec",
        "linreg",
        "--quiet",
        "--json",
        "--warm-start",
        "trumpapproval",
        "--events",
        "50",
    )
    assert fresh.returncode == 0, fresh.stderr
    assert orjson.loads(fresh.stdout)["version"]["task"] == "regression"
    messy = tmp_path / "messy.csv"  # refused rows are said and kept with the version
    messy.write_text("x,label\n1,2.0\n?,3.0\n2,4.5\n")
    said = _cli(stack, *push, str(messy))
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip().endswith("; refused: 1 bad_feature"), said.stdout
    latest = reg.versions(name)[-1]
    assert (latest.events_seen, latest.tags["warm_start_rejected"]) == (2, "1 bad_feature")


def test_cli_push_refuses_a_warm_start_with_features_the_models_events_lack(
    reg: Registry, name: str, stack: LocalStack, tmp_path: Path
) -> None:
    """A warm start with a column the live events lack was registered, and once promoted the
    server refused every request for a feature no event carried."""
    (v1,) = _register(reg, name, features=["entity_count", "x"])
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    push = ("push", name, "--spec", "linreg", "--quiet", "--warm-start")
    wider = tmp_path / "wider.csv"
    wider.write_text("x,account_age,label\n1,3,2.0\n2,4,4.5\n")
    refused = _cli(stack, *push, str(wider))
    assert refused.returncode == 2
    assert one_line(refused).endswith(
        f"file {wider} has feature(s) 'account_age' that the events of model {name!r} do not "
        "carry (its champion's features): drop them from the warm start, or push under "
        "another model name"
    )
    assert [v.version for v in reg.versions(name)] == [v1], "nothing registered"
    narrower = tmp_path / "narrower.csv"  # a model that asks for fewer features serves
    narrower.write_text("x,label\n1,2.0\n2,4.5\n")
    done = _cli(stack, *push, str(narrower))
    assert done.returncode == 0, done.stderr
    assert reg.versions(name)[-1].features == ["x"]


def test_cli_makes_champion_only_a_version_flows_can_load_that_does_the_champions_task(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    v1, v2, v3 = _register(reg, name, 3)  # regression
    first = _cli(stack, "promote", name, str(v1))
    assert first.stdout.strip() == f"{name}: champion - -> v{v1}", "no 'vNone'"
    binary = reg.register(name, linear_model.LogisticRegression(), spec="logreg", task="binary")
    other_task = _cli(stack, "promote", name, str(binary.version))
    assert one_line(other_task).endswith(
        f"model {name!r} v{binary.version} does binary, and its champion v{v1} does "
        "regression: a model keeps its task (push one that does regression)"
    )
    reg.client.set(f"riverrun:registry:{name}:blob:{v2}", b"RRS1" + b"0" * 40)  # tampered
    tampered = one_line(_cli(stack, "promote", name, str(v2)))
    assert f"model {name!r} v{v2} cannot be the champion: " in tampered
    assert tampered.endswith(f"(riverrun registry verify {name} checks every version)")
    assert reg.alias(name, "champion") == v1, "neither moved it"

    assert _cli(stack, "promote", name, str(v3)).returncode == 0
    reg.client.set(f"riverrun:registry:{name}:blob:{v1}", b"RRS1" + b"0" * 40)
    back = one_line(_cli(stack, "rollback", name))
    assert f"model {name!r} v{v1} cannot be the champion: " in back
    assert reg.alias(name, "champion") == v3
    *_, history_line = _cli(stack, "history", name).stdout.splitlines()
    assert f" champion    v{v1} -> v{v3}  by " in history_line
    assert f" champion    - -> v{v1}  by " in _cli(stack, "history", name).stdout


def test_a_model_name_that_cannot_be_a_folder_is_refused_by_the_api(reg: Registry) -> None:
    for bad in ("", "a/b", ".."):
        with pytest.raises(RegistryError, match="expected a model name that can be a folder"):
            reg.register(bad, None, spec="linreg", task="regression")
        assert reg.versions(bad) == []


def test_cli_push_beside_an_unreachable_kafka_says_so_once(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    """The live stream's sample is a nicety: without Kafka the push goes on, with one
    warning, where librdkafka wrote about a hundred lines of failed connections."""
    env = {**stack.env(), "RIVERRUN_REGISTRY_KEY": KEY, "RIVERRUN_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = run_cli(env, "registry", "push", name, "--spec", "logreg")
    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert "cannot reach Kafka at 127.0.0.1:1" in warning
    assert warning.endswith(": no sample of the live stream to build the model on")
    assert [v.spec for v in reg.versions(name)] == ["logreg"]


def test_values_written_into_redis_by_hand_are_one_line_and_a_split_is_set_over_one(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    (v1,) = _register(reg, name)
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    reg.client.hset(f"riverrun:registry:{name}:aliases", "challenger", "abc")
    with pytest.raises(RegistryError, match="holds b'abc' where a version number goes"):
        reg.aliases(name)
    assert "where a version number goes" in one_line(_cli(stack, "list", name)), "no ValueError"
    reg.client.hset(f"riverrun:registry:{name}:aliases", "challenger", v1)
    reg.client.set(f"riverrun:registry:{name}:ab", "xyz")
    with pytest.raises(RegistryError, match="holds b'xyz', not a fraction within"):
        reg.ab_fraction(name)
    fixed = _cli(stack, "ab", name, "0.5")
    assert fixed.returncode == 0 and fixed.stdout.strip().endswith("(was nan)"), fixed.stderr
    assert reg.ab_fraction(name) == 0.5
    assert " ab          - -> 0.5  by " in _cli(stack, "history", name).stdout


def test_junk_in_the_history_or_the_audit_stream_is_one_line_not_a_traceback(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    """int() and a missing field raised out of `registry rollback` and `registry history`
    (exit 1, 23 lines), and out of the trigger service and the pruning writer."""
    v1, v2 = _register(reg, name, 2)
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    reg.move_alias(name, "champion", v2, expected=v1, actor="t", reason="r")
    reg.client.lpush(f"riverrun:registry:{name}:history", "abc")
    done = _cli(stack, "rollback", name)
    assert done.returncode == 2
    assert "holds b'abc' where a version number goes" in one_line(done)
    reg.client.lrem(f"riverrun:registry:{name}:history", 0, "abc")
    reg.client.xadd(f"riverrun:registry:{name}:audit", {"alias": "champion", "to": "1"})
    with pytest.raises(RegistryError, match="is not one riverrun writes \\(no field 'from'\\)"):
        reg.history(name)
    done = _cli(stack, "history", name)
    assert done.returncode == 2 and "is not one riverrun writes" in one_line(done)


def test_newest_moves_read_back_page_by_page_to_the_limit(reg: Registry, name: str) -> None:
    for i in range(23):
        reg.audit(name, "decided", f"actor-{i}", "a trigger", {"i": i})
    every = [m.actor for m in reversed(reg.history(name))]
    assert [m.actor for m in reg.newest_moves(name, 100, page=5)] == every  # newest first
    assert [m.actor for m in reg.newest_moves(name, 12, page=5)] == every[:12]
    assert list(reg.newest_moves("no-such-model", 100)) == []
    assert [m.actor for m in reg.history(name, count=10**30)] == every[::-1], "Redis refused it"


def test_cli_sets_the_ab_split_audited_and_refuses_what_it_cannot_set(
    reg: Registry, name: str, stack: LocalStack
) -> None:
    v1, v2 = _register(reg, name, 2)
    reg.move_alias(name, "champion", v1, expected=None, actor="t", reason="r")
    alone = _cli(stack, "ab", name, "0.25", "--reason", "try it")
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == (
        f"{name}: the challenger serves a fraction 0.25 of entities (was 0); there is no "
        "challenger yet, so the champion serves all until there is one"
    )
    assert reg.ab_fraction(name) == 0.25
    reg.move_alias(name, "challenger", v2, expected=None, actor="t", reason="r")
    ended = orjson.loads(_cli(stack, "ab", name, "0", "--json").stdout)
    assert ended == {"model": name, "from": 0.25, "to": 0.0} and reg.ab_fraction(name) == 0.0
    *_, tried, _challenger, undone = _cli(stack, "history", name).stdout.splitlines()
    assert " ab          0 -> 0.25  by " in tried and tried.endswith("(cli): try it")
    assert " ab          0.25 -> 0  by " in undone and undone.endswith("(cli): set by hand")
    for bad in ("1.5", "-1e-3", "-inf", "nan"):  # a leading '-' is no flag here
        refused = _cli(stack, "ab", name, bad)
        assert f"argument fraction: '{bad}': expected a number within [0, 1]" in one_line(refused)
    unknown = _cli(stack, "ab", f"{name}-nosuch", "0.5")
    assert one_line(unknown).endswith(f"unknown model '{name}-nosuch': it has no versions")
    assert reg.ab_fraction(name) == 0.0 and reg.ab_fraction(f"{name}-nosuch") == 0.0
