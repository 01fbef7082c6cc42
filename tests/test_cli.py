"""The command line as a user meets it: local up/down, the demo, and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from flows.kafka_io import end_offsets, ensure_topics, producer
from riverrun import local
from riverrun.demo import format_report
from riverrun.local import (
    TANSU_ENV,
    LocalStack,
    ephemeral_ports,
    free_port,
    local_stack,
    start_broker,
    start_redis,
    stop_all,
)
from riverrun.runner import LearnProcessError, _failure
from tests.helpers import (
    LearnProcess,
    Lines,
    child_env,
    command_line,
    count_messages,
    free_ports,
    one_line,
    processes_in_session,
    processes_with_env,
    produce_stream,
    run_cli,
    wait_for,
)
from tests.serving import publish, registry, trained

RIVERRUN = [sys.executable, "-m", "riverrun.cli"]


def _server_pids(parent: int | None = None) -> set[int]:
    """Pids of the Tansu brokers and redis-servers on this machine (children of ``parent``).

    Other test runs may start servers at the same time, so a test only counts its own:
    children of the command it runs, or those among all that it saw start.
    """
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            if (b"tansu" in cmd or b"redis-server" in cmd) and parent in (None, ppid):
                pids.add(int(entry.name))
    return pids


@contextlib.contextmanager
def _local_up(
    env: dict[str, str], *args: str, stderr: int | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``riverrun local up ARGS...`` in a child, stopped with its servers whatever the test
    does."""
    up = subprocess.Popen(
        [*RIVERRUN, "local", "up", *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )
    try:
        yield up
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(30)


def _work_folder(lines: Lines) -> Path:
    """The work folder ``local up`` says its logs are in."""
    while not (line := lines.next(60, "local up to say where its logs are")).startswith(
        "# logs in "
    ):
        assert line, "local up ended before saying where its logs are"
    return Path(line.removeprefix("# logs in ").split(";")[0])


def test_local_up_serves_both_and_down_stops_them(tmp_path: Path) -> None:
    env = child_env(XDG_RUNTIME_DIR=str(tmp_path))
    with _local_up(env) as up:
        assert up.stdout is not None
        lines = Lines(up.stdout)
        exports: dict[str, str] = {}
        while "RIVERRUN_REGISTRY_KEY" not in exports:
            line = lines.next(60, "the exports of local up")
            assert line, "local up ended before printing its exports"
            if line.startswith("export "):
                name, _, value = line[len("export ") :].strip().partition("=")
                exports[name] = value
        assert set(exports) == {
            "RIVERRUN_BOOTSTRAP_SERVERS",
            "RIVERRUN_REDIS_URL",
            "RIVERRUN_RECOVERY_DIR",
            "RIVERRUN_REGISTRY_KEY",
        }
        assert exports["RIVERRUN_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
        logs = _work_folder(lines)
        assert Path(exports["RIVERRUN_RECOVERY_DIR"]).parent == logs, "the state goes with it"
        admin = AdminClient({"bootstrap.servers": exports["RIVERRUN_BOOTSTRAP_SERVERS"]})
        assert admin.list_topics(timeout=10).topics is not None
        del admin
        assert redis.Redis.from_url(exports["RIVERRUN_REDIS_URL"]).ping()
        started = _server_pids(parent=up.pid)
        assert len(started) == 2

        again = run_cli(env, "local", "up", timeout=60)
        assert one_line(again).startswith("riverrun local: error: a local stack already runs")
        assert "riverrun local down" in again.stderr, "says how to stop the running one"
        assert up.poll() is None and _server_pids(parent=up.pid) == started, "the first runs on"

        down = subprocess.run(
            [*RIVERRUN, "local", "down"], env=env, capture_output=True, text=True, timeout=60
        )
        assert down.returncode == 0, down.stderr
        assert up.wait(30) == 0
        assert not (_server_pids() & started), "local down left a server running"
        assert not logs.exists(), "a clean stop left the work folder up made (stale state)"
        twice = run_cli(env, "local", "down")
        assert one_line(twice) == "riverrun local: error: no local stack is running"


def test_local_up_interrupted_stops_its_servers_and_keeps_a_given_work_folder(
    tmp_path: Path,
) -> None:
    env = child_env(XDG_RUNTIME_DIR=str(tmp_path))
    mine = tmp_path / "stack"
    with _local_up(env, "--workdir", str(mine)) as up:
        assert up.stdout is not None
        assert _work_folder(Lines(up.stdout)) == mine
        started = _server_pids(parent=up.pid)
        assert len(started) == 2
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        assert not (_server_pids() & started)
    assert {"broker.log", "redis.log"} <= {f.name for f in mine.iterdir()}, "the user's folder"


def test_local_up_interrupted_while_starting_exports_nothing_and_cleans_up(
    tmp_path: Path,
) -> None:
    """Ctrl-C before the servers are up: no settings printed for a stack that is stopping."""
    env = child_env(XDG_RUNTIME_DIR=str(tmp_path), TMPDIR=str(tmp_path))
    marker = tmp_path / f"riverrun-local-{os.getuid()}.pid"
    with _local_up(env) as up:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()):  # its Ctrl-C handler is set
            assert up.poll() is None and time.monotonic() < deadline, "local up never started"
            time.sleep(0.005)
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0
    assert "export" not in out, "it printed settings for a stack that was stopping"
    assert out.splitlines()[-1:] == ["# local stack stopped"]
    assert not list(tmp_path.glob("riverrun-local-*/")), "its work folder was left behind"
    assert not {p for p in _server_pids() if str(tmp_path) in command_line(p)}


def test_local_up_names_the_server_that_died_and_keeps_its_logs(tmp_path: Path) -> None:
    env = child_env(XDG_RUNTIME_DIR=str(tmp_path), TMPDIR=str(tmp_path))  # its folder in there
    with _local_up(env, stderr=subprocess.PIPE) as up:
        assert up.stdout is not None and up.stderr is not None
        logs = _work_folder(Lines(up.stdout))
        started = _server_pids(parent=up.pid)
        (redis_pid,) = (p for p in started if "redis-server" in command_line(p))
        os.kill(redis_pid, signal.SIGKILL)
        assert up.wait(30) == 2
        error = up.stderr.read().splitlines()
        assert error == [f"riverrun local: error: redis exited; see {logs / 'redis.log'}"]
        assert (logs / "redis.log").exists() and (logs / "broker.log").exists()
        assert not (_server_pids() & started), "the broker outlived its failed stack"
        assert logs.parent == tmp_path


def test_the_local_broker_takes_no_tansu_setting_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TANSU_ENV:  # a user's Tansu settings, which would send data elsewhere
        monkeypatch.setenv(name, "tcp://192.0.2.1:9092" if "URL" in name else "elsewhere")
    broker = start_broker(tmp_path)
    try:
        environ = Path(f"/proc/{broker.process.pid}/environ").read_bytes().split(b"\0")
        assert not {entry.partition(b"=")[0].decode() for entry in environ} & TANSU_ENV
        bootstrap = f"127.0.0.1:{broker.port}"
        ensure_topics(bootstrap, ["t"], 1)
        writer = producer(bootstrap)
        writer.produce("t", b"kept in memory")
        assert writer.flush(10) == 0
        assert end_offsets(bootstrap, "t") == {0: 1}
    finally:
        broker.stop()


def test_each_verbose_flag_logs_more() -> None:
    """``-v`` shows riverrun's INFO lines, ``-vv`` DEBUG ones (librdkafka's, say)."""
    script = (
        "import logging, sys; from riverrun.cli import main; "
        "main(sys.argv[1:]); print(logging.getLogger().level)"
    )
    env = child_env(RIVERRUN_REDIS_URL="redis://127.0.0.1:1/0")  # refused at once: no wait
    levels = {(): "WARNING", ("-v",): "INFO", ("-vv",): "DEBUG", ("-vvv",): "DEBUG"}
    for flags, level in levels.items():
        done = subprocess.run(
            [sys.executable, "-c", script, *flags, "registry", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert logging.getLevelName(int(done.stdout.split()[-1])) == level, (flags, done.stderr)


def test_a_stack_takes_the_folder_it_made_with_it_unless_it_failed(tmp_path: Path) -> None:
    with local_stack() as stack:
        clean = stack.workdir
        assert (clean / "broker.log").exists() and (clean / "redis.log").exists()
    assert not clean.exists(), "a clean exit leaves nothing in the temp folder"
    recovery = []
    for _ in range(2):  # a work folder given twice: each stack's recovery state is its own
        with local_stack(tmp_path) as stack:
            recovery.append(stack.env()["RIVERRUN_RECOVERY_DIR"])
    assert len(set(recovery)) == 2 and all(Path(r).parent == tmp_path for r in recovery)
    with pytest.raises(RuntimeError), local_stack() as stack:
        failed = stack.workdir
        raise RuntimeError("the work failed")
    try:
        assert (failed / "broker.log").exists(), "the servers' logs stay for a look"
    finally:
        shutil.rmtree(failed)


def test_a_reader_that_stops_reading_ends_a_command_quietly(stack: LocalStack) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as with `| head -0`
    try:
        done = subprocess.run(
            [*RIVERRUN, "registry", "list", "--json"],
            env=child_env(**stack.env()),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
    closed = subprocess.run(  # started with no stdout at all: nothing to say it to
        ["sh", "-c", 'exec "$@" >&-', "sh", *RIVERRUN, "registry", "list"],
        env=child_env(**stack.env()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (closed.returncode, closed.stderr) == (0, "")


def test_free_ports_never_repeat_and_stay_clear_of_outgoing_connections() -> None:
    # A port from the ephemeral range can go to any client's connection before its server
    # binds it: a Bytewax cluster or a /metrics server then fails to start.
    low, high = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low or high < port < 65536 for port in ports)


@pytest.mark.parametrize("start", [start_broker, start_redis])
def test_a_server_whose_port_is_taken_before_it_binds_starts_on_another(
    start: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (a second test worker, say) binds the free port first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _starts_on_the_second_pick(start, taken.getsockname()[1], tmp_path, monkeypatch)


@pytest.mark.parametrize("start", [start_broker, start_redis])
def test_a_server_that_took_the_port_first_is_not_taken_for_the_one_started(
    start: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It answers on the port, while the one started there could not bind it and ends."""
    (tmp_path / "other").mkdir()
    other = start(tmp_path / "other")
    try:
        _starts_on_the_second_pick(start, other.port, tmp_path, monkeypatch)
    finally:
        other.stop()


def _starts_on_the_second_pick(
    start: Any, busy: int, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start`` picks ``busy`` first, then a free port: it must run, on the second."""
    picks = iter([busy, free_port()])
    monkeypatch.setattr(local, "free_port", lambda: next(picks))
    server = start(workdir)
    try:
        assert server.port != busy and server.alive()
    finally:
        server.stop()
    assert next(picks, None) is None, "started on the second pick"


def test_a_durable_redis_counts_as_started_only_once_its_data_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answers INFO while it replays its append-only file, but refuses data commands;
    Redis's own test setting ``key-load-delay`` makes the replay last about a second on any
    machine (50 µs a key)."""
    keys = 20_000
    server = start_redis(tmp_path, durable=True)
    try:
        client = redis.Redis(port=server.port)
        client.config_set("appendfsync", "no")  # written at shutdown: a quicker fill
        writes = client.pipeline(transaction=False)
        for i in range(keys):
            writes.set(f"k{i}", i)
        writes.execute()
    finally:
        server.stop()
    slow = tmp_path / "slow-loading-redis"
    slow.write_text(f'#!/bin/sh\nexec {local.redis_binary()} "$@" --key-load-delay 50\n')
    slow.chmod(0o755)
    monkeypatch.setattr(local, "redis_binary", lambda: str(slow))
    again = start_redis(tmp_path, durable=True)
    try:
        client = redis.Redis(port=again.port, retry=Retry(NoBackoff(), 0))
        assert client.dbsize() == keys, "counted as started before it had loaded its data"
    finally:
        again.stop()


# Every process of the demo inherits this variable, so a leftover is found whichever process
# reaps it (pid 1, or a subreaper such as a container's init), among other runs' processes.
TREE_TOKEN = "DEMO_TREE_TOKEN"


def _left_behind(token: str, session: int) -> list[int]:
    """The processes of a command's tree still running: those that inherited its ``token`` or
    its ``session`` (a redis-server overwrites its environment with its title)."""
    return sorted({*processes_with_env(TREE_TOKEN, token), *processes_in_session(session)})


def test_demo_runs_end_to_end_and_leaves_nothing_behind(tmp_path: Path) -> None:
    token = str(uuid.uuid4())
    report_path = tmp_path / "report.json"
    # Its own session too: the session's id (the demo's pid) is not reused while one of its
    # processes lives, and a process that writes its title over its environment keeps it.
    with subprocess.Popen(
        [
            *RIVERRUN,
            "demo",
            "--events",
            "8000",
            "--drift-every",
            "2500",
            "--report",
            str(report_path),
        ],
        env=child_env(**{TREE_TOKEN: token}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as demo:
        try:
            stdout, stderr = demo.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
            raise
    done = subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(report_path.read_bytes())
    assert report["events_in"] == 8000 and report["predictions_out"] == 8000
    assert report["deadletter"] == 0 and report["labelled"] == 8000
    models = report["models"]
    assert {models["champion"]["spec"], models["challenger"]["spec"]} == {"logreg", "arf"}
    # The champion and the challenger score from the first event; a retrained challenger
    # scores only what arrives after the flow adopts it, which on a slow machine may be
    # nothing (the stream has ended): its accuracy says nothing, and the table shows none.
    scored = {alias: m["metrics"] for alias, m in models.items() if m["metrics"]["n"] >= 1000}
    assert {"champion", "challenger"} <= scored.keys()
    assert all(0.5 < m["accuracy"] <= 1.0 for m in scored.values())
    # The loop closes: the arf challenger wins the contest, the stream drifts under it, and
    # the trigger retrains a fresh challenger from the replay (the demo waits for it).
    first = report["promotions"][0]
    assert first["from"].startswith("logreg@") and first["to"].startswith("arf@")
    concept = [d for d in report["drift_events"] if d["kind"] == "concept"]
    assert concept and all(d["position"] >= 2500 for d in concept), "drift every 2,500 events"
    assert report["retrains"], "a concept drift on the champion retrains a challenger"
    assert all("concept drift on the champion" in r["reason"] for r in report["retrains"])
    assert "labelled" in done.stdout and "logreg" in done.stdout
    # Its children end on the demo's death signal, which may take them a moment.
    try:
        wait_for(lambda: not _left_behind(token, demo.pid), 30, "the demo's processes to end")
    except AssertionError:
        left = {pid: command_line(pid) for pid in _left_behind(token, demo.pid)}
        for pid in left:  # not to leave them to the next test either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the demo left processes running for 30 s: {left}") from None


def test_demo_table_shows_no_metrics_for_a_model_that_scored_nothing() -> None:
    def model(spec: str, version: int, accuracy: float | None, n: int) -> dict[str, Any]:
        metrics = {"accuracy": accuracy, "log_loss": 0.5, "n": float(n)}
        return {"spec": spec, "role": "shadow", "version": version, "metrics": metrics}

    report = {
        "events_in": 10,
        "predictions_out": 10,
        "deadletter": 0,
        "labelled": 10,
        "models": {
            "champion": model("arf", 3, 0.75, 1234),
            "late": model("arf", 9, 0.0, 0),
            "broken": model("arf", 7, None, 99),  # a NaN accuracy, stored as null
        },
        "drift_events": [],
        "retrains": [],
        "promotions": [],
    }
    table = format_report(report).splitlines()
    champion = next(line for line in table if line.startswith("arf@v3"))
    late = next(line for line in table if line.startswith("arf@v9"))
    assert champion.split()[2:] == ["1,234", "0.7500", "0.5000"]
    assert late.split()[2:] == ["0", "-", "-"]
    broken = next(line for line in table if line.startswith("arf@v7"))
    assert broken.split()[2:] == ["99", "-", "0.5000"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["learn", "--model-spec", "nosuch"], {}, "unknown model spec 'nosuch'"),
        (["learn", "--model-spec", "linreg"], {}, "does not do binary"),
        (["learn"], {"RIVERRUN_SEED": "x"}, "RIVERRUN_SEED='x': expected int"),
        (["learn", "--entity-features", "median"], {}, "unknown entity feature 'median'"),
        (["learn", "--model-spec", "collections:OrderedDict"], {}, "not a River estimator"),
        (["learn", "--model-spec", "json:dumps"], {}, "the factory raised TypeError"),
        (
            ["produce", "--bootstrap-servers", "127.0.0.1:1", "--dataset", "phishing"],
            {},
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        (
            ["retrain", "--bootstrap-servers", "127.0.0.1:1", "--spec", "logreg"],
            {"RIVERRUN_REGISTRY_KEY": "k" * 32},
            "riverrun retrain: error: cannot reach Kafka at 127.0.0.1:1",
        ),
        (
            [
                "evaluate",
                "--model",
                "logreg",
                "--source",
                "kafka",
                "--bootstrap-servers",
                "127.0.0.1:1",
            ],
            {},
            "riverrun evaluate: error: cannot reach Kafka at 127.0.0.1:1",
        ),
        (
            ["demo", "--dataset", "trumpapproval", "--events", "500"],
            {},
            "riverrun demo: error: model spec 'logreg' does not do regression (it does binary, "
            "multiclass); the trumpapproval stream is regression",
        ),
        (["demo", "--challengers", "nosuch"], {}, "unknown model spec 'nosuch'"),
        (
            # said before Kafka is tried
            ["produce", "--events", "5", "--skip", "5", "--bootstrap-servers", "127.0.0.1:1"],
            {},
            "riverrun produce: error: nothing to produce: skipping 5 events leaves none of the "
            "5 of agrawal-drift",
        ),
        (
            ["registry", "push", "", "--spec", "logreg"],
            {},
            "riverrun registry push: error: argument model: '': expected a model name that can "
            "be a folder name (not empty, no '/', not '.' or '..')",
        ),
        (
            ["registry", "list", "a/b"],  # which an empty name listed every model
            {},
            "argument model: 'a/b': expected a model name that can be a folder name",
        ),
        (
            ["status"],
            {"RIVERRUN_MODEL_NAME": ".."},
            "riverrun status: error: RIVERRUN_MODEL_NAME='..': expected a model name that can be",
        ),
        (
            ["status", "--redis-url", "redis://:secret@127.0.0.1:1/0"],
            {},
            "riverrun status: error: Redis at redis://:***@127.0.0.1:1/0: ",  # which, unsaid
        ),
        (
            ["evaluate", "--model", "logreg", "--source", ""],  # was "'.': no Parquet files"
            {},
            "riverrun evaluate: error: argument --source: '': expected a non-empty value",
        ),
        (
            ["evaluate", "--model", "logreg", "--source", "phishing", "--json", ""],
            {},
            "riverrun evaluate: error: argument --json: '': expected a file name (",
        ),
        (
            ["produce", "--labels-topic"],
            {},
            "riverrun produce: error: --labels-topic sends delayed labels: give --delay-labels",
        ),
        (
            ["registry", "list", "--redis-url", "notaurl"],
            {},
            "--redis-url='notaurl': expected a redis://, rediss:// or unix:// URL",
        ),
        (
            ["registry", "list", "--redis-url", "redis://127.0.0.1:99999/0"],
            {},
            "--redis-url='redis://127.0.0.1:99999/0': the port is no number from 1 to 65535",
        ),
        (
            ["registry", "list"],
            {"RIVERRUN_REDIS_URL": "redis://:hunter2@127.0.0.1:6379/zero"},
            "RIVERRUN_REDIS_URL='redis://:***@127.0.0.1:6379/zero': database 'zero' is no number",
        ),
        (
            ["produce", "--id-prefix", ""],
            {},
            "riverrun produce: error: argument --id-prefix: '': expected a non-empty value",
        ),
        (
            ["produce", "--burst", "10"],
            {},
            "riverrun produce: error: --burst comes before the pace --rate sets: give --rate R too",
        ),
        (
            ["produce", "--events", "0"],
            {},
            "riverrun produce: error: argument --events: '0': expected a whole number of at "
            "least 1 (riverrun produce --help shows the usage)",
        ),
        (
            ["retrain", "--alias", "champion"],
            {},
            "riverrun retrain: error: argument --alias: a new model goes under a challenger alias",
        ),
        (
            ["trigger"],
            {"RIVERRUN_TRIGGER_RETRAIN_ALIAS": "champion"},
            "RIVERRUN_TRIGGER_RETRAIN_ALIAS: a retrained model goes under a challenger alias",
        ),
        *[
            (
                ["predict", "a=1", "--timeout", timeout],
                {},
                f"riverrun predict: error: argument --timeout: {timeout!r}: expected a finite "
                "number above 0",
            )
            for timeout in ("nan", "inf", "0", "-1")
        ],
        (
            ["predict", "a=1", "--serve-port", "1"],  # no scoring server listens there
            {},
            "riverrun predict: error: UNAVAILABLE: failed to connect to all addresses",
        ),
        (
            ["predict", '{"a": 1'],
            {},
            "riverrun predict: error: features: not a valid JSON object: unexpected end of data",
        ),
        (
            ["evaluate", "--model", "logreg", "--source", "phishing", "--delay", "-1"],
            {},
            "riverrun evaluate: error: argument --delay: '-1': expected a whole number of at "
            "least 0",
        ),
        (
            ["evaluate", "--model", "logreg", "--source", "phishing", "--start-offset", "10"],
            {},
            "riverrun evaluate: error: --start-offset is for the source kafka, not 'phishing'",
        ),
        (
            ["evaluate", "--model", "logreg", "--source", "kafka", "--drift-every", "10"],
            {},
            "riverrun evaluate: error: --drift-every is for a dataset, not 'kafka'",
        ),
        (
            [
                "registry",
                "push",
                "m",
                "--spec",
                "logreg",
                "--warm-start",
                "a.jsonl",
                "--events",
                "9",
            ],
            {},
            "riverrun registry: error: --events is for a dataset, not 'a.jsonl'",
        ),
        (
            ["registry", "push", "m", "--spec", "logreg", "--since", "2024-05-01"],
            {},
            "riverrun registry: error: --since bounds a source: give --warm-start",
        ),
        (
            ["registry", "push", "m", "--spec", "logreg", "--delay", "500"],
            {},
            "riverrun registry: error: --delay bounds a source: give --warm-start",
        ),
        (
            ["evaluate", "--model", "logreg", "--task", "regression", "--source", "phishing"],
            {},
            "riverrun evaluate: error: dataset phishing is a binary stream, not regression",
        ),
        *[
            (  # they build no model of it: a retrain takes --spec or the champion's
                [command, "--model-spec", "arf"],
                {},
                "riverrun: error: unrecognized arguments: --model-spec arf",
            )
            for command in ("retrain", "trigger")
        ],
        (
            ["evaluate", "--model", "logreg", "--source", "/nonexistent.csv"],
            {},
            "riverrun evaluate: error: no such file, dataset or source: '/nonexistent.csv'",
        ),
        (
            ["evaluate", "--model", "logreg", "--source", str(Path(__file__))],
            {},
            "test_cli.py': unknown file type (use .csv, .jsonl or .parquet, or a folder of "
            "Parquet files)",
        ),
        (["serve"], {"RIVERRUN_SERVE_PORT": "70000"}, "RIVERRUN_SERVE_PORT must be a port number"),
        (
            ["learn", "--no-follow"],  # before Kafka is touched
            {"RIVERRUN_REGISTRY_KEY": "", "RIVERRUN_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "riverrun learn: error: RIVERRUN_REGISTRY_KEY is not set or shorter than 16 bytes",
        ),
        (
            ["learn", "--no-follow"],  # before Kafka is touched
            {"RIVERRUN_DATA_DRIFT_WINDOW": "100"},
            "riverrun learn: error: the data-drift window needs at least 400 events (0 turns the "
            "data-drift check off)",
        ),
        *[
            (
                [*command, "--drift-every", "10"],
                {},
                f"riverrun {command[0]}: error: {dataset} has no drifts to place: --drift-every "
                "is for agrawal-drift, agrawal-switch, sea-drift, sea-gradual",
            )
            for dataset, command in (
                ("phishing", ["evaluate", "--model", "logreg", "--source", "phishing"]),
                ("agrawal", ["produce", "--dataset", "agrawal", "--events", "10"]),
                ("hyperplane", ["demo", "--dataset", "hyperplane"]),  # before the stack starts
            )
        ],
    ],
)
def test_bad_requests_exit_2_with_one_line(
    riverrun_main: Any, argv: list[str], env: Any, message: str
) -> None:
    assert message in one_line(riverrun_main(env, *argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "{unknown}"], "model '{unknown}' has no versions"),
        (["verify", "{unknown}"], "model '{unknown}' has no versions"),
        (["show", "{bare}"], "model '{bare}' has no champion; give a version"),
        (["show", "{unknown}"], "model '{unknown}' has no versions"),
        (["promote", "{model}", "999"], "model '{model}' has no version 999"),
        (
            ["push", "{model}", "--spec", "linreg", "--task", "regression"],
            "model '{model}' does binary (its champion), not regression",
        ),
    ],
)
def test_registry_refusals_exit_2_with_one_line(
    make_settings: Any, riverrun_main: Any, argv: list[str], message: str
) -> None:
    s = make_settings()
    names = {
        "model": s.model_name,  # a champion, v1
        "bare": f"{s.model_name}-bare",  # v1 and no champion
        "unknown": f"{s.model_name}-unknown",
    }
    model = trained(events=10)[0]
    publish(s, model)
    registry(s).register(names["bare"], model, spec="logreg", task="binary")
    done = riverrun_main(s.to_env(), "registry", *(arg.format(**names) for arg in argv))
    assert one_line(done) == f"riverrun registry: error: {message.format(**names)}"
    assert registry(s).alias(s.model_name, "champion") == 1
    assert [v.version for v in registry(s).versions(s.model_name)] == [1], "nothing registered"


def test_local_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    done = run_cli({"XDG_RUNTIME_DIR": str(tmp_path)}, "local", "down")
    assert one_line(done) == "riverrun local: error: no local stack is running"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_learn_stops_on_a_signal_with_one_line(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    """Bytewax's worker panics on the interrupt, and Rust would print it (with a backtrace
    under RUST_BACKTRACE): a stop by signal says one line and exits 0."""
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    s = make_settings()
    produce_stream(s, 500, "sig")
    with LearnProcess(s) as learn:
        wait_for(lambda: count_messages(s, s.topic_predictions) >= 500, 60, "every prediction")
        learn.process.send_signal(sig)
        assert learn.process.wait(60) == 0
        assert learn.stderr().strip().splitlines()[-1:] == ["learn flow stopped by signal"]
        assert "panicked" not in learn.stderr() and "Traceback" not in learn.stderr()


@pytest.mark.parametrize("setting", ["recovery_dir", "offline_store_dir"])
def test_learn_refuses_a_folder_it_cannot_make_in_one_line(
    make_settings: Any, tmp_path: Path, setting: str
) -> None:
    """A file where the folder should be ended in a traceback, the offline store's only
    after the flow had started."""
    (afile := tmp_path / "afile").write_text("")
    s = make_settings(**{setting: str(afile)})
    done = run_cli(s.to_env(), "learn")
    assert one_line(done) == (
        f"riverrun learn: error: RIVERRUN_{setting.upper()}={str(afile)!r}: "
        "cannot make the folder: File exists"
    )


def test_local_up_refuses_a_work_folder_it_cannot_make(tmp_path: Path) -> None:
    (afile := tmp_path / "afile").write_text("")
    done = run_cli({"XDG_RUNTIME_DIR": str(tmp_path)}, "local", "up", "--workdir", str(afile))
    assert one_line(done) == (
        f"riverrun local: error: cannot use {str(afile)!r} as the work folder: File exists"
    )
    assert done.stdout == "", "nothing started, so nothing to say stopped"


@pytest.mark.parametrize(
    ("command", "flag", "where", "message"),
    [
        ("evaluate", "--json", "missing/r.json", "'{path}': there is no folder '{tmp}/missing'"),
        ("evaluate", "--json", "file/r.json", "'{path}': '{tmp}/file' is a file, not a folder"),
        ("evaluate", "--json", ".", "'{path}' is a folder; give a file name"),
        ("evaluate", "--plot", "missing/p.png", "'{path}': there is no folder '{tmp}/missing'"),
        ("evaluate", "--plot", "p.txt", "'{path}': expected a file name ending in one of"),
        ("evaluate", "--plot", "plot", "'{path}': expected a file name ending in one of"),
        ("demo", "--report", "missing/r.json", "'{path}': there is no folder '{tmp}/missing'"),
        ("demo", "--report", ".", "'{path}' is a folder; give a file name"),
    ],
)
def test_output_paths_are_refused_before_any_work(
    riverrun_main: Any, tmp_path: Path, command: str, flag: str, where: str, message: str
) -> None:
    (tmp_path / "file").write_text("a file")
    work = ["--model", "logreg", "--source", "agrawal", "--events", "500"]
    argv = [command, *(work if command == "evaluate" else ["--events", "500"])]
    path = str(tmp_path / where)
    done = riverrun_main({}, *argv, flag, path)
    line = one_line(done)
    expected = message.format(tmp=tmp_path, path=path)
    assert line.startswith(f"riverrun {command}: error: argument {flag}: ") and expected in line
    assert done.stdout == "", "the command did its work before refusing where to write it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("limit", ["-5", "0", "x"])
def test_registry_history_needs_a_positive_limit(make_settings: Any, limit: str) -> None:
    s = make_settings()
    line = one_line(run_cli(s.to_env(), "registry", "history", s.model_name, "--limit", limit))
    assert line.startswith("riverrun registry history: error: argument --limit: ")
    assert f"{limit!r}: expected a whole number of at least 1" in line


def test_a_cluster_process_that_cannot_serve_metrics_fails_in_one_line(
    make_settings: Any,
) -> None:
    first = free_ports(2)  # process K serves /metrics on port + K: process 1's is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        s = make_settings(processes=2, partitions=2, metrics_port=first, follow=True)
        done = run_cli(s.to_env(), "learn", timeout=180)  # the peer has 5 s, then 10 to stop
    line = one_line(done)
    assert line.startswith(f"riverrun learn: error: cannot serve /metrics on 127.0.0.1:{first + 1}")
    assert "RIVERRUN_METRICS_PORT" in line


def test_a_cluster_process_that_ends_without_its_one_line_is_named() -> None:
    assert _failure(1, 2) == 2, "it said why itself"
    with pytest.raises(LearnProcessError, match="learn process 1 was killed by SIGKILL"):
        _failure(1, -signal.SIGKILL)
    with pytest.raises(LearnProcessError, match="learn process 0 failed with exit status 1"):
        _failure(0, 1)


class _Waits(subprocess.Popen[str]):
    """A child that notes how long each ``wait`` was allowed to take (``None``: no limit)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed: list[float | None] = []

    def wait(self, timeout: float | None = None) -> int:
        self.allowed.append(timeout)
        return super().wait(timeout)


def test_a_cluster_stops_processes_deaf_to_sigterm_within_one_timeout() -> None:
    """The children share one deadline: the waits it allows add up to one timeout, however
    many children there are (what each wait was allowed is counted, not the seconds the
    whole took, which a loaded machine stretches)."""
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1)"
    deaf += "; import sys; sys.stdout.flush(); time.sleep(60)"
    children = [
        _Waits([sys.executable, "-c", deaf], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None and Lines(child.stdout).next(30, "a deaf child") == "1\n"
    assert stop_all(children, timeout=1.0) == [0, 1, 2, 3], "each one killed is named"
    assert [child.returncode for child in children] == [-signal.SIGKILL] * 4
    allowed = [t for child in children for t in child.allowed if t is not None]
    assert allowed and sum(allowed) <= 1.0, f"a timeout for each child, not one for all: {allowed}"
