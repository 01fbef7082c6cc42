"""Runs the learn flow: in this process, or as a cluster of Bytewax processes.

Bytewax worker threads share one GIL, so riverrun scales with processes: ``processes=N``
spawns N ``python -m riverrun.cluster_process K ADDRESSES`` children (Bytewax process K
of the cluster) that read the same ``RIVERRUN_*`` settings, and stops them all if one
fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.run import cli_main

from flows import heap
from flows.hush import STDERR
from flows.kafka_io import (
    KafkaUnavailable,
    ensure_topics,
    partition_count,
    read_again,
    stop_reading,
)
from flows.learn import build_flow
from flows.registry_sync import drift_watch
from models.features import FeatureSpec
from models.signing import check_key
from models.specs import build_model
from riverrun.deathsig import guarded
from riverrun.local import free_port, stop_all
from riverrun.metrics import serve_metrics
from riverrun.peers import await_listeners
from riverrun.recovery import holding_recovery, prepare_recovery, recovery_config
from riverrun.settings import Settings, SettingsError, env_name

STOP_TIMEOUT = 25.0  # seconds a stopped cluster's processes have to stop (compose grants 30)
PEERS_END = 5.0  # seconds the others of a failed cluster process have to end by themselves


def learn_topics(settings: Settings) -> list[str]:
    """Every topic the learn flow reads or writes."""
    return [
        settings.topic_events,
        settings.topic_labels,
        settings.topic_predictions,
        settings.topic_shadow,
        settings.topic_deadletter,
        settings.topic_drift,
    ]


def run_learn(settings: Settings) -> int:
    """Run the learn flow until its input ends (``follow=False``) or it is stopped."""
    check_learn_settings(settings)
    check_key(settings.registry_key)  # before Kafka is touched, as the step would refuse it
    ensure_topics(settings.bootstrap_servers, learn_topics(settings), settings.partitions)
    if settings.processes > 1:
        warn_of_idle_processes(settings)
    with holding_recovery(settings):
        if prepare_recovery(settings):
            print(f"learn flow resumes from {settings.recovery_path}", file=sys.stderr)
        with stop_quietly_on_signal(graceful=settings.processes == 1):
            if settings.processes == 1:
                run_process(settings)
                return 0
            return _run_cluster(settings)
    return 0


def warn_of_idle_processes(settings: Settings) -> None:
    """Say so when the events topic has fewer partitions than the flow has processes: a
    topic's partitions are fixed when it is made, and the extra processes read nothing."""
    try:
        partitions = partition_count(settings.bootstrap_servers, settings.topic_events)
    except KafkaUnavailable:  # a topic just made may not say yet (no leader): no warning
        return
    if partitions < settings.processes:
        print(
            f"warning: topic {settings.topic_events!r} has {partitions} partition(s) for "
            f"{settings.processes} processes: {settings.processes - partitions} will have no "
            "events to read (RIVERRUN_PARTITIONS sets the partitions of the topics riverrun "
            "creates)",
            file=sys.stderr,
        )


@contextlib.contextmanager
def stop_quietly_on_signal(
    announce: bool = True,
    *,
    graceful: bool = False,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Ctrl-C or SIGTERM stop the flow; whichever code it interrupted, that is no error.

    ``graceful``: the first signal ends the flow's Kafka input
    (:func:`flows.kafka_io.stop_reading`), so it flushes its outputs and snapshots before
    it stops; a second stops it at once, as a signal does without ``graceful`` (a cluster's
    parent, whose children stop themselves). At once, the signal raises
    ``KeyboardInterrupt`` wherever Python happens to be (inside a Kafka flush, say), and
    Bytewax may wrap what that becomes: once a signal came, an error on the way out is the
    stop itself. Bytewax's worker also panics on it and Rust prints the panic (a whole
    backtrace with ``RUST_BACKTRACE`` set), so stderr is closed from then until the flow is
    down. ``announce=False`` stops without a word: a cluster's processes, whose parent says
    it once. ``signals``: those that stop it.
    """
    asked, at_once = threading.Event(), threading.Event()  # a signal came; a stop at once

    def stop(signum: int, frame: Any) -> None:
        if graceful and not asked.is_set():
            asked.set()
            stop_reading()
            if announce:
                print("stopping: the flow ends its batch (again to stop at once)", file=sys.stderr)
            return
        asked.set()
        at_once.set()
        STDERR.start()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        with STDERR.armed_for():  # a step's own error hushes it too (panics_hushed)
            yield
    except (KeyboardInterrupt, Exception) as exc:
        if not (isinstance(exc, KeyboardInterrupt) or at_once.is_set()):
            raise  # an error of its own, if while it ended its batch: reported, stderr back
        if announce:
            print("learn flow stopped by signal", file=sys.stderr)
    else:
        if announce and asked.is_set():
            print("learn flow stopped by signal", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        read_again()  # a flow run next in this process reads its input


def run_process(
    settings: Settings, process_id: int | None = None, addresses: list[str] | None = None
) -> None:
    """Run this process's share of the learn flow (all of it when alone)."""
    if settings.metrics_port:
        serve_metrics(settings.metrics_port + (process_id or 0), settings.metrics_host)
    flow = build_flow(settings)
    if process_id and addresses:  # the processes it dials (all on this machine)
        await_listeners(addresses[:process_id])
    with heap.frozen():
        try:
            cli_main(
                flow,
                process_id=process_id,
                addresses=addresses,
                epoch_interval=timedelta(seconds=settings.epoch_interval),
                recovery_config=recovery_config(settings),
            )
        except BaseException:  # Bytewax's PanicException is no Exception
            if STDERR.cause is None:
                raise
            raise STDERR.cause from None  # the step's own error, not the panic it became


def check_learn_settings(settings: Settings) -> None:
    """Fail fast, before touching Kafka, on a spec, feature list or folder that cannot work."""
    FeatureSpec.parse(settings.entity_features)
    drift_watch(settings)
    for spec in (settings.model_spec, *settings.challengers):
        build_model(spec, settings.task, settings.seed)
    if settings.recovery_path is not None:  # private: Bytewax unpickles from it
        make_folder("recovery_dir", settings.recovery_path.parent, 0o700)
    if settings.offline_store_dir:
        make_folder("offline_store_dir", Path(settings.offline_store_dir))


def make_folder(setting: str, folder: Path, mode: int = 0o777) -> None:
    """Make the folder a setting names, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise SettingsError(
            f"{env_name(setting)}={str(folder)!r}: cannot make the folder: {exc.strerror or exc}"
        ) from None


class LearnProcessError(RuntimeError):
    """A process of a learn cluster stopped without saying why in one line; the message
    names it."""


def _run_cluster(settings: Settings) -> int:
    """Run the cluster; a process that fails stops the others. A process reports a known
    failure itself, in one line and with exit status 2, which the cluster then returns."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(settings.processes))
    env = {**os.environ, **settings.to_env()}
    # A killed parent takes its children along, no orphan keeps learning: by SIGKILL, as
    # one joining a cluster whose peer died runs no Python signal handler (recovery
    # resumes from the last snapshot either way).
    argv = [sys.executable, "-m", "riverrun.cluster_process"]
    children = [
        subprocess.Popen(guarded([*argv, str(k), addresses], signal.SIGKILL), env=env)
        for k in range(settings.processes)
    ]
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [(k, code) for k, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                return _failure(*_first_to_say_why(children, failed))
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:  # stopped by signal: each process ends its batch, then stops
        for k in stop_all(children, STOP_TIMEOUT):
            print(
                f"warning: learn process {k} did not stop within {STOP_TIMEOUT:.0f} s and was "
                "killed: its restart repeats the outputs since its last snapshot",
                file=sys.stderr,
            )
        raise
    finally:  # ended or failed: what is left of the cluster has nothing to finish
        stop_all(children, PEERS_END)


def _first_to_say_why(
    children: list[subprocess.Popen[bytes]], failed: list[tuple[int, int]]
) -> tuple[int, int]:
    """The failed process that said why (exit status 2), given the others a moment to end as
    their peer's failure stops them; else the first that failed."""
    deadline = time.monotonic() + PEERS_END
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.05)
    said = [(k, c.returncode) for k, c in enumerate(children) if c.returncode == 2]
    return said[0] if said else failed[0]


def _failure(process_id: int, code: int) -> int:
    """The exit status of a cluster whose process ``process_id`` ended with status ``code``."""
    if code == 2:  # it said why in one line
        return code
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise LearnProcessError(f"learn process {process_id} was killed by {name}")
    raise LearnProcessError(f"learn process {process_id} failed with exit status {code}")
