"""How the command lines show a version's metrics."""

from __future__ import annotations

from collections.abc import Mapping


def metric_text(value: float | None) -> str:
    """One metric to four places, or ``-`` for one stored as null (a NaN or infinity, which
    JSON cannot hold)."""
    return "-" if value is None else f"{value:.4f}"


def metrics_text(metrics: Mapping[str, float | None]) -> str:
    """``name=value, ...`` of a version's metrics, its count ``n`` left out; ``-`` for one
    stored as null (a NaN or infinity, which JSON cannot hold).

    >>> metrics_text({"accuracy": 0.91234, "mae": None, "n": 10.0})
    'accuracy=0.9123, mae=-'
    """
    return ", ".join(f"{k}={metric_text(v)}" for k, v in metrics.items() if k != "n")
