"""``riverrun bench``: every benchmark in one process tree, a table each and one JSON file
(plus the memory curve as JSON and PNG beside it)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.drift import detection
from bench.harness import Report, write_reports
from bench.latency import latency
from bench.memory import memory
from bench.recovery import recovery
from bench.serving import serving
from bench.snapshots import snapshots
from bench.throughput import challenger_cost, scaling, throughput
from bench.triggers import triggers_effect
from models.drift import DETECTORS
from riverrun.local import local_stack
from riverrun.settings import Settings


@dataclass(frozen=True)
class BenchRequest:
    """How big to run, and where to write the JSON."""

    quick: bool = False
    out: Path = Path("bench/results/bench.json")


@dataclass(frozen=True)
class Sizes:
    """Events (or requests) per benchmark: ``--quick`` fits in 3 minutes, the full run in 10."""

    throughput: int
    latency_seconds: float
    latency_rates: tuple[float, ...]
    memory: int
    recovery: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        """Small sizes for ``--quick``."""
        if quick:
            return cls(20_000, 5.0, (2_000.0,), 50_000, 20_000)
        return cls(200_000, 10.0, (1_000.0, 5_000.0, 10_000.0), 1_000_000, 100_000)


def run_bench(req: BenchRequest, settings: Settings) -> list[Report]:
    """Start a local stack, run the benchmarks, print their tables, write the JSON."""
    size = Sizes.for_run(req.quick)
    reports: list[Report] = []
    with local_stack() as stack, tempfile.TemporaryDirectory(prefix="riverrun-bench-") as tmp:
        s = Settings.from_env(stack.env()).override(
            {"seed": settings.seed, "metrics_port": 0, "recovery_dir": str(Path(tmp) / "state")}
        )
        benches: list[Callable[[], Report]] = [
            lambda: throughput(s, events=size.throughput),
            lambda: latency(s, seconds=size.latency_seconds, rates=size.latency_rates),
            lambda: scaling(s, events=size.throughput),
            lambda: challenger_cost(s, events=size.throughput // 2),
            lambda: memory(s, events=size.memory, out=req.out.with_name("memory")),
            lambda: recovery(s, events=size.recovery),
            lambda: snapshots(s, events=10_000, repeats=1 if req.quick else 3),
            lambda: serving(s, quick=req.quick),
            lambda: detection(
                detectors=("adwin",) if req.quick else tuple(DETECTORS),
                seeds=3 if req.quick else 10,
            ),
            lambda: triggers_effect(s.override({"trigger_metrics_port": 0}), req.out.parent),
        ]
        for bench in benches:
            reports.append(bench())
            print(reports[-1].table(), flush=True)
    write_reports(reports, req.out)
    print(f"results written to {req.out}")
    return reports
