"""``riverrun bench``: every benchmark in one process tree, a table each and one JSON file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.drift import detection
from bench.harness import Report, write_reports
from bench.serving import serving
from bench.snapshots import snapshots
from bench.throughput import challenger_cost, throughput
from bench.triggers import triggers_effect
from models.drift import DETECTORS
from riverrun.local import local_stack
from riverrun.settings import Settings


@dataclass(frozen=True)
class BenchRequest:
    """How big to run, and where to write the JSON."""

    quick: bool = False
    out: Path = Path("bench/results/bench.json")


def run_bench(req: BenchRequest, settings: Settings) -> list[Report]:
    """Start a local stack, run the benchmarks, print their tables, write the JSON."""
    events = 20_000 if req.quick else 200_000
    reports: list[Report] = []
    with local_stack() as stack:
        s = Settings.from_env(stack.env()).override({"seed": settings.seed, "metrics_port": 0})
        for bench in (
            lambda: throughput(s, events=events),
            lambda: challenger_cost(s, events=events // 2),
            lambda: snapshots(s, events=10_000, repeats=1 if req.quick else 3),
            lambda: serving(s, quick=req.quick),
            lambda: detection(detectors=("adwin",) if req.quick else tuple(DETECTORS)),
            lambda: triggers_effect(s.override({"trigger_metrics_port": 0}), req.out.parent),
        ):
            reports.append(bench())
            print(reports[-1].table(), flush=True)
    write_reports(reports, req.out)
    print(f"results written to {req.out}")
    return reports
