"""How the command lines show a version's metrics."""

from __future__ import annotations

from collections.abc import Mapping


def metrics_text(metrics: Mapping[str, float | None]) -> str:
    """``name=value, ...`` of a version's metrics, its count ``n`` left out; ``-`` for one
    stored as null (a NaN or infinity, which JSON cannot hold).

    >>> metrics_text({"accuracy": 0.91234, "mae": None, "n": 10.0})
    'accuracy=0.9123, mae=-'
    """
    return ", ".join(
        f"{k}={'-' if v is None else f'{v:.4f}'}" for k, v in metrics.items() if k != "n"
    )
