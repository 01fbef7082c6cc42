"""How the command lines show what they report: as JSON or text, times, models' metrics and
promotions."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson


def emit(as_json: bool, data: Any, text: str) -> int:
    """Print ``data`` as indented JSON (``--json``), else ``text``; the command's exit status."""
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if as_json else text)
    return 0


def utc_text(ts: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS``, in UTC."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def counts_text(counts: Counter[str]) -> str:
    """``n reason, ...`` of refused records, the commonest first.

    >>> counts_text(Counter({"bad_label": 1, "bad_feature": 3}))
    '3 bad_feature, 1 bad_label'
    """
    return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


def models_table(rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[str]:
    """Lines of a table of ``(model, alias, metrics)`` rows: how many events each scored and
    its metrics, or ``-`` for one that scored none yet (its zeros are not metrics)."""
    rows = list(rows)
    if not rows:
        return []
    keys = [k for k in rows[0][2] if k != "n"]
    lines = [
        "model".ljust(22)
        + "alias".ljust(20)
        + "scored".rjust(8)
        + "".join(k.rjust(18) for k in keys)
    ]
    for name, alias, metrics in rows:
        scored = int(metrics["n"])
        cells = [(metric_text(metrics[k]) if scored else "-").rjust(18) for k in keys]
        lines.append(name.ljust(22) + alias.ljust(20) + f"{scored:>8,}" + "".join(cells))
    return lines


def promotion_text(promotion: Mapping[str, Any]) -> str:
    """One promotion the learn flow made, with its evidence, in a line."""
    e = promotion["evidence"]
    return (
        f"promoted {promotion['to']} over {promotion['from']} at event "
        f"{promotion['at_event']:,}: loss lower by {e['mean_difference']:.4f} over {e['n']:,} "
        f"paired events (p={e['p_value']:.2g})"
    )
