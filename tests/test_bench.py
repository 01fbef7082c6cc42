"""``riverrun bench`` runs every benchmark end to end and writes its JSON and the memory
curve: at ``--smoke`` size, the same code as ``--quick`` and the full run on fewer events
(figures are reported, never asserted: speed is measured, not tested)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson

BENCHMARKS = {
    "learn-flow throughput",
    "event latency",
    "scaling with processes",
    "cost of challengers",
    "learn-flow memory",
    "snapshots and recovery",
    "registry snapshots",
    "gRPC serving (loopback, logreg)",
    "concept-drift detection",
    "triggers on a drifting stream",
}


def test_bench_writes_every_report_and_the_memory_curve(tmp_path: Path) -> None:
    out = tmp_path / "results" / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERRUN_")}
    done = subprocess.run(
        [sys.executable, "-m", "riverrun.cli", "bench", "--smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {r["benchmark"]: r for r in orjson.loads(out.read_bytes())}
    assert set(reports) == BENCHMARKS
    assert all(r["rows"] and r["seconds"] > 0 for r in reports.values())
    (recovered,) = reports["snapshots and recovery"]["rows"]
    assert recovered["restart_to_first_new_prediction_s"] > 0
    assert recovered["cold_start_to_first_prediction_s"] > 0
    throughput = reports["learn-flow throughput"]
    setups = [row["setup"] for row in throughput["rows"]]
    assert len(setups) == 5 and setups[-1] == "learn flow"
    assert any(setup.startswith("plain Kafka loop") for setup in setups), "the ceiling is measured"
    for row in throughput["rows"]:  # the best of the smoke size's 2 rounds, the slowest beside
        rates = throughput["params"]["events_per_s_by_round"][row["setup"]]
        assert len(rates) == 2 and all(rate > 0 for rate in rates)
        assert (row["events_per_s"], row["slowest_round"]) == (max(rates), min(rates))
    curve = orjson.loads((out.parent / "memory.json").read_bytes())
    seen = [point["events"] for point in curve]
    assert seen == sorted(seen) and 0 < seen[-1] <= 10_000, "sampled as the flow went"
    assert all(point["rss_mb"] > 0 for point in curve), "only a running flow is sampled"
    assert (out.parent / "memory.png").read_bytes().startswith(b"\x89PNG")
    for name in BENCHMARKS:
        assert f"== {name} ==" in done.stdout
    took = re.findall(r"^\(\d+ s\)$", done.stdout, re.MULTILINE)
    assert len(took) == len(BENCHMARKS), "each benchmark says how long it took"
