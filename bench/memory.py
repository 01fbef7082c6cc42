"""The learn flow's resident memory over a long run with delayed labels, sampled over time:
it should grow while models and pending joins warm up, then stay flat."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import orjson
import psutil
import redis

from bench.harness import Report
from bench.plot import line_png
from bench.throughput import produced
from models.status import read_status
from riverrun.children import Child
from riverrun.settings import Settings

EVERY = 0.5  # seconds between samples
WARM_UP = 0.2  # the first fifth of the events


def memory(
    settings: Settings, *, events: int, out: Path, delay: int = 1000, dataset: str = "agrawal"
) -> Report:
    """RSS of the flow against events predicted; the curve to ``out``.json and .png."""
    s = produced(settings, events, dataset, "mem", delay_labels=delay, status_interval=EVERY)
    client = redis.Redis.from_url(s.redis_url)
    curve: list[tuple[float, int, float]] = []  # (seconds, events predicted, RSS MB)
    with Child(s, "learn") as child:
        process = psutil.Process(child.process.pid)
        began = time.monotonic()
        while child.alive():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:  # ended: its RSS reads 0
                    break
                rss = process.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                break
            status = read_status(client, s.model_name)
            curve.append((time.monotonic() - began, status["events"] if status else 0, rss))
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(EVERY)
    return _report(curve, events, delay, dataset, out)


def _report(
    curve: list[tuple[float, int, float]], events: int, delay: int, dataset: str, out: Path
) -> Report:
    out.parent.mkdir(parents=True, exist_ok=True)
    points = [{"seconds": t, "events": n, "rss_mb": mb} for t, n, mb in curve]
    out.with_suffix(".json").write_bytes(orjson.dumps(points, option=orjson.OPT_INDENT_2))
    line_png(
        out.with_suffix(".png"),
        [n for _t, n, _mb in curve],
        [mb for _t, _n, mb in curve],
        xlabel="events predicted",
        ylabel="resident memory (MB)",
        title=f"learn flow RSS, {events:,} events, labels {delay} events late",
    )
    # From warm-up to the end of the input: once it ended, the flow winds down and frees.
    warm = [mb for _t, n, mb in curve if WARM_UP * events <= n < events]
    report = Report("learn-flow memory", {"events": events, "delay": delay, "dataset": dataset})
    report.add(
        rss_after_warm_up_mb=warm[0] if warm else float("nan"),
        rss_end_mb=curve[-1][2] if curve else float("nan"),
        peak_mb=max(mb for _t, _n, mb in curve) if curve else float("nan"),
        growth_after_warm_up_mb=(max(warm) - warm[0]) if warm else float("nan"),
        samples=len(curve),
        curve=str(out.with_suffix(".png")),
    )
    return report
