"""Shared pieces of the benchmarks: timing, a table printer and the JSON report."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Timer:
    """Seconds elapsed inside a ``with timed() as t`` block, in ``t.seconds``."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    """Time the block with a monotonic clock."""
    timer = Timer()
    began = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - began


@dataclass
class Report:
    """Rows of one benchmark run, printed as a table and written as JSON."""

    name: str
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None  # how long the benchmark took, set by its runner

    def add(self, **row: Any) -> None:
        """Append a row (column name to value)."""
        self.rows.append(row)

    def table(self) -> str:
        """The rows as an aligned text table."""
        if not self.rows:
            return f"{self.name}: no rows"
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        cells = [[_fmt(row.get(c, "")) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = [
            f"== {self.name} ==",
            "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)),
        ]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as plain data, with the machine it ran on."""
        return {
            "benchmark": self.name,
            "params": self.params,
            "machine": {"python": platform.python_version(), "cpu": platform.processor()},
            "rows": self.rows,
            "seconds": self.seconds,
        }


def write_reports(reports: list[Report], path: Path) -> None:
    """Write every report to one JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps([r.to_json() for r in reports], option=orjson.OPT_INDENT_2))


def best_of(repeats: int, run: Callable[[], float]) -> float:
    """The smallest of ``repeats`` measurements (the least disturbed one)."""
    return min(run() for _ in range(repeats))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
