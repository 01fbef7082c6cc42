"""Serving latency and throughput over loopback gRPC, calm and during promotions.

``riverrun serve`` (a child process, answering from a ``logreg`` champion) and the echo
baseline (:mod:`bench.echo`, same server, no work) take the same requests from this
process: ``Predict`` one at a time and 16 in flight, ``PredictBatch`` of 1,000 rows packed
and as messages. Then riverrun again while a new champion is promoted every 100 ms, with
the time each one takes to answer after its promotion.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from bench.harness import Report
from grpc_api.proto import pb, rpc
from models.datasets import open_stream
from models.registry import Registry
from models.specs import build_model
from riverrun.deathsig import guarded
from riverrun.local import free_port
from riverrun.settings import Settings

MODEL = "bench-serving"
ROWS = 1000
IN_FLIGHT = 16
PROMOTE_EVERY = 0.1
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Sizes:
    """How many requests each measurement makes, and how many rounds of them."""

    sequential: int
    concurrent: int
    batches: int
    rounds: int


@dataclass
class Promoter:
    """Promotes the next registered version every :data:`PROMOTE_EVERY` seconds, noting
    when; the measuring requests tell when each version first answered."""

    registry: Registry
    versions: list[int]
    promoted: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    stopped: list[float] = field(default_factory=list)  # when each run of promotions ended

    def run(self) -> None:
        """Promote until stopped (cycling through the versions)."""
        while not self.stop.is_set():
            version = self.versions[len(self.promoted) % len(self.versions)]
            self.registry.move_alias(MODEL, "champion", version, actor="bench", reason="bench")
            self.promoted.append((time.monotonic(), version))
            self.stop.wait(PROMOTE_EVERY)

    def lags(self, seen: list[tuple[float, int]]) -> list[float]:
        """Seconds from each promotion to the first answer naming its version (promotions
        overtaken by the next one, or by the end of their run of promotions, before any
        measured answer are left out: the next run's answers come long after)."""
        out = []
        ends = [at for at, _ in self.promoted[1:]] + [float("inf")]
        for (moved, version), end in zip(self.promoted, ends, strict=True):
            end = min([end, *(t for t in self.stopped if t >= moved)])
            first = min((t for t, v in seen if v == version and moved <= t < end), default=None)
            if first is not None:
                out.append(first - moved)
        return out


def _version(reply: Any) -> int:
    """The version that answered a Predict or PredictBatch reply."""
    if isinstance(reply, pb.PredictResponse):
        return int(reply.version)
    if reply.HasField("packed"):
        return int(reply.packed.answerers[0].version)
    return int(reply.results[0].version)


def _trained_versions(registry: Registry, count: int, seed: int) -> tuple[list[int], list[dict]]:
    """``count`` versions of a logreg, each a little further on an agrawal stream."""
    model = build_model("logreg", "binary", seed)
    rows: list[dict] = []
    versions = []
    for i, (x, y) in enumerate(open_stream("agrawal", seed=seed, events=count * 100).samples):
        model.learn_one(x, y)
        rows.append(x)
        if i % 100 == 99:
            versions.append(registry.register(MODEL, model, spec="logreg", task="binary").version)
    return versions, rows


@contextlib.contextmanager
def _child(argv: list[str], env: dict[str, str], target: str) -> Iterator[Any]:
    """A server in a child process; yields a stub once it answers Predict."""
    process = subprocess.Popen(guarded(argv), env=env, stdout=subprocess.DEVNULL)
    channel = grpc.insecure_channel(target)
    stub = rpc.ScoringStub(channel)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                stub.Predict(pb.PredictRequest(model=MODEL), timeout=1)
                break
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    break  # up: it only wants features
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not start serving on {target}") from None
                time.sleep(0.1)
        yield stub
    finally:
        channel.close()
        process.terminate()
        process.wait(10)


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure at its best over the rounds: the least disturbed measurement."""
    return {
        key: (min if key.endswith(("_us", "_ms")) else max)(run[key] for run in runs)
        for key in runs[0]
    }


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _sequential(call: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(max(n // 10, 10), 500)):  # warm up (and start the server's threads)
        call()
    out = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        out.append(time.perf_counter() - began)
    return out


def _in_flight(
    stub: Any, request: pb.PredictRequest, n: int, seen: list[tuple[float, int]]
) -> tuple[list[float], float]:
    """Latencies with ``IN_FLIGHT`` requests outstanding, and the wall time of all ``n``."""
    slots = threading.Semaphore(IN_FLIGHT)
    latencies: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def finished(began: float, future: Any) -> None:
        latencies.append(time.perf_counter() - began)
        if future.exception() is not None:
            errors.append(future.exception())
        else:
            seen.append((time.monotonic(), _version(future.result())))
        slots.release()
        if len(latencies) == n:
            done.set()

    started = time.perf_counter()
    for _ in range(n):
        slots.acquire()
        began = time.perf_counter()
        stub.Predict.future(request).add_done_callback(lambda f, b=began: finished(b, f))
    done.wait()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return latencies, time.perf_counter() - started


def _measure(
    stub: Any, rows: list[dict], sizes: Sizes, seen: list[tuple[float, int]]
) -> dict[str, float]:
    """Every figure of one server; ``seen`` gets (time, version) of every answer."""
    one = pb.PredictRequest(model=MODEL, entity="user-1", features=rows[0])
    names = sorted(rows[0])
    matrix = np.array([[x[n] for n in names] for x in rows[:ROWS]])
    packed = pb.PredictBatchRequest(
        model=MODEL, packed=pb.PackedRows(feature_names=names, values=matrix.ravel())
    )
    mapped = pb.PredictBatchRequest(
        model=MODEL, events=[pb.PredictRequest(features=x) for x in rows[:ROWS]]
    )

    def call(method: Any, request: Any) -> Callable[[], None]:
        return lambda: seen.append((time.monotonic(), _version(method(request))))

    seq = _sequential(call(stub.Predict, one), sizes.sequential)
    conc, wall = _in_flight(stub, one, sizes.concurrent, seen)
    batch = _sequential(call(stub.PredictBatch, packed), sizes.batches)
    batch_map = _sequential(call(stub.PredictBatch, mapped), max(sizes.batches // 4, 10))
    return {
        "predict_p50_us": _percentile(seq, 50) * 1e6,
        "predict_p99_us": _percentile(seq, 99) * 1e6,
        "predict_req_per_s": len(seq) / sum(seq),
        "predict16_p50_us": _percentile(conc, 50) * 1e6,
        "predict16_p99_us": _percentile(conc, 99) * 1e6,
        "predict16_req_per_s": len(conc) / wall,
        "batch_packed_rows_per_s": ROWS * len(batch) / sum(batch),
        "batch_packed_p99_ms": _percentile(batch, 99) * 1e3,
        "batch_map_rows_per_s": ROWS * len(batch_map) / sum(batch_map),
    }


LABELS = {
    "predict_p50_us": "Predict p50, sequential (us)",
    "predict_p99_us": "Predict p99, sequential (us)",
    "predict_req_per_s": "Predict requests/s, sequential",
    "predict16_p50_us": f"Predict p50, {IN_FLIGHT} in flight (us)",
    "predict16_p99_us": f"Predict p99, {IN_FLIGHT} in flight (us)",
    "predict16_req_per_s": f"Predict requests/s, {IN_FLIGHT} in flight",
    "batch_packed_rows_per_s": f"PredictBatch rows/s, {ROWS} packed",
    "batch_packed_p99_ms": f"PredictBatch p99 per {ROWS} packed (ms)",
    "batch_map_rows_per_s": f"PredictBatch rows/s, {ROWS} as messages",
}


def serving(settings: Settings, sizes: Sizes) -> Report:
    """The serving figures of riverrun and of the echo baseline, calm and during promotions."""
    registry = Registry.connect(settings.redis_url, settings.registry_key)
    versions, rows = _trained_versions(registry, 60, settings.seed)
    registry.move_alias(MODEL, "champion", versions[0], actor="bench", reason="bench")
    port = free_port()
    serve_env = {
        **os.environ,
        **settings.override(
            {
                "serve_port": port,
                "serve_metrics_port": 0,
                "serve_models": (MODEL,),
                "model_name": MODEL,
            }
        ).to_env(),
    }
    echo_port = free_port()
    echo_argv = [sys.executable, "-m", "bench.echo", str(echo_port)]
    serve_argv = [sys.executable, "-m", "riverrun.cli", "serve"]
    rounds: list[tuple[dict[str, float], ...]] = []
    promoter = Promoter(registry, versions[1:])
    seen: list[tuple[float, int]] = []
    with (
        _child(echo_argv, dict(os.environ), f"127.0.0.1:{echo_port}") as echo,
        _child(serve_argv, serve_env, f"127.0.0.1:{port}") as stub,
    ):
        for _ in range(sizes.rounds):  # alternate, so neither side gets the quieter moments
            baseline = _measure(echo, rows, sizes, [])
            calm = _measure(stub, rows, sizes, [])
            promoter.stop.clear()
            thread = threading.Thread(target=promoter.run, daemon=True)
            thread.start()
            try:
                busy = _measure(stub, rows, sizes, seen)
            finally:
                promoter.stop.set()
                thread.join()
                promoter.stopped.append(time.monotonic())
            rounds.append((baseline, calm, busy))
    baseline, calm, busy = (_best([r[k] for r in rounds]) for k in range(3))
    report = Report(
        "gRPC serving (loopback, logreg)",
        {
            "rows_per_batch": ROWS,
            "in_flight": IN_FLIGHT,
            "promote_every_s": PROMOTE_EVERY,
            "promotions": len(promoter.promoted),
            "sizes": sizes.__dict__,
            "figures": "each at its best over the rounds",
            "baseline": "bench.echo: the same grpcio server and messages, no work",
        },
    )
    for key, label in LABELS.items():
        report.add(
            measure=label,
            echo=baseline[key],
            riverrun=calm[key],
            during_promotions=busy[key],
            vs_echo=calm[key] / baseline[key],
        )
    lags_ms = [lag * 1e3 for lag in promoter.lags(seen)]
    report.add(
        measure=f"new champion answers after (ms), p50 of {len(lags_ms)}",
        during_promotions=statistics.median(lags_ms),
    )
    report.add(measure="new champion answers after (ms), max", during_promotions=max(lags_ms))
    return report
