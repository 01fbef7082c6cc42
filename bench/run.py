"""``riverrun bench``: every benchmark in one process tree, a table each and one JSON file
(plus the memory curve as JSON and PNG beside it)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.drift import detection
from bench.harness import Report, timed, write_reports
from bench.latency import latency
from bench.memory import memory
from bench.recovery import recovery
from bench.serving import Sizes as ServingSizes
from bench.serving import serving
from bench.snapshots import snapshots
from bench.throughput import challenger_cost, scaling, throughput
from bench.triggers import triggers_effect
from models.drift import DETECTORS
from riverrun.local import local_stack
from riverrun.settings import Settings


@dataclass(frozen=True)
class BenchRequest:
    """How big to run (a key of :data:`SIZES`), and where to write the JSON."""

    size: str = "full"
    out: Path = Path("bench/results/bench.json")


@dataclass(frozen=True)
class Sizes:
    """Events (or requests) per benchmark."""

    throughput: int
    throughput_rounds: int
    latency_seconds: float
    latency_rates: tuple[float, ...]
    memory: int
    recovery: int
    snapshot_events: int
    snapshot_repeats: int
    serving: ServingSizes
    detectors: tuple[str, ...]
    detection_seeds: int


SIZES = {
    # every figure of the README: 5 min 20 s on 2 cores (longer on a slow day of the machine)
    "full": Sizes(
        throughput=200_000,
        throughput_rounds=2,
        latency_seconds=10.0,
        latency_rates=(1_000.0, 5_000.0, 10_000.0),
        memory=1_000_000,
        recovery=100_000,
        snapshot_events=10_000,
        snapshot_repeats=3,
        serving=ServingSizes(sequential=10_000, concurrent=20_000, batches=200, rounds=3),
        detectors=tuple(DETECTORS),
        detection_seeds=10,
    ),
    # the same benchmarks smaller: under 3 minutes on a slow day of the README's machine
    "quick": Sizes(
        throughput=20_000,
        throughput_rounds=1,
        latency_seconds=5.0,
        latency_rates=(2_000.0,),
        memory=30_000,
        recovery=12_000,
        snapshot_events=3_000,
        snapshot_repeats=1,
        serving=ServingSizes(sequential=1000, concurrent=2000, batches=20, rounds=1),
        detectors=("adwin",),
        detection_seeds=2,
    ),
    # just enough to show that every benchmark runs and reports: its figures mean little
    "smoke": Sizes(
        throughput=3_000,
        throughput_rounds=2,
        latency_seconds=2.0,
        latency_rates=(1_000.0,),
        memory=10_000,
        recovery=3_000,
        snapshot_events=1_000,
        snapshot_repeats=1,
        serving=ServingSizes(sequential=200, concurrent=400, batches=4, rounds=1),
        detectors=("adwin",),
        detection_seeds=1,
    ),
}


def run_bench(req: BenchRequest, settings: Settings) -> list[Report]:
    """Start a local stack, run the benchmarks, print their tables, write the JSON."""
    size = SIZES[req.size]
    reports: list[Report] = []
    with local_stack() as stack, tempfile.TemporaryDirectory(prefix="riverrun-bench-") as tmp:
        s = Settings.from_env(stack.env()).override(
            {"seed": settings.seed, "metrics_port": 0, "recovery_dir": str(Path(tmp) / "state")}
        )
        benches: list[Callable[[], Report]] = [
            lambda: throughput(s, events=size.throughput, rounds=size.throughput_rounds),
            lambda: latency(s, seconds=size.latency_seconds, rates=size.latency_rates),
            lambda: scaling(s, events=size.throughput),
            lambda: challenger_cost(s, events=size.throughput // 2),
            lambda: memory(s, events=size.memory, out=req.out.with_name("memory")),
            lambda: recovery(s, events=size.recovery),
            lambda: snapshots(s, events=size.snapshot_events, repeats=size.snapshot_repeats),
            lambda: serving(s, size.serving),
            lambda: detection(detectors=size.detectors, seeds=size.detection_seeds),
            lambda: triggers_effect(s.override({"trigger_metrics_port": 0}), req.out.parent),
        ]
        for bench in benches:
            with timed() as t:
                reports.append(bench())
            reports[-1].seconds = t.seconds
            print(reports[-1].table(), flush=True)
            print(f"({t.seconds:.0f} s)\n", flush=True)
    write_reports(reports, req.out)
    print(f"results written to {req.out}")
    return reports
