"""``riverrun status``: what a learn flow last reported: counts, every model's metrics, the
promotion contest's decisions and the promotions made."""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis

from models.ab import CHALLENGER
from models.status import UnreadableStatus, read_status
from riverrun.settings import Settings, add_flags, hide_password
from riverrun.shown import emit, metrics_text, models_table, promotion_text, utc_text

TIMEOUT = 5.0  # seconds to connect to Redis and for its answer
# The status's counts, in the order shown; a flow of an older version wrote fewer.
COUNTS = ("events", "labelled", "pending", "expired", "unknown_labels", "model_errors")


class StatusError(RuntimeError):
    """No status a learn flow wrote on the model can be shown."""


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the flow's last status (``--json``: as the flow wrote it)."""
    name = settings.model_name
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )
    try:
        report = read_status(client, name, shaped=not args.json)
    except UnreadableStatus as exc:
        raise StatusError(str(exc)) from None
    if report is None:
        raise StatusError(
            f"no status for model {name!r}: no learn flow has reported on it to "
            f"{hide_password(settings.redis_url)} (see --model-name and --redis-url)"
        )
    if args.json:
        return emit(True, report, "")
    try:
        shown = text(name, report, time.time())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # written by no flow
        raise StatusError(
            f"the status of model {name!r} is not one a learn flow writes "
            f"({type(exc).__name__}: {exc}); --json shows it as it is"
        ) from None
    return emit(False, report, shown)


def text(name: str, report: dict[str, Any], now: float) -> str:
    """The status as a few lines and a table; sections an older flow did not write are left
    out."""
    models = report.get("models", [])
    lines = [
        f"model {name}{written(report.get('written_at'), now)}",
        ", ".join(f"{key.replace('_', ' ')} {report[key]:,}" for key in COUNTS if key in report),
        "",
        *models_table((f"{m['spec']}@v{m['version']}", m["alias"], m["metrics"]) for m in models),
    ]
    fraction = report.get("ab_fraction", 0.0)
    if fraction:
        lines.append(
            ab_text(fraction, report["arms"], any(m["alias"] == CHALLENGER for m in models))
        )
    lines += [
        f"{alias}: {'would promote' if d['promote'] else 'not promoted'}: {d['reason']}"
        for alias, d in report.get("contest", {}).items()
    ]
    lines += [promotion_text(p) for p in report.get("promotions", [])]
    return "\n".join(lines)


def written(at: float | None, now: float) -> str:
    """When the status was written, in UTC, and how long before ``now``; a writer whose
    clock is ahead is said to be, not shown as fresh."""
    if at is None:
        return ""
    when = f"{utc_text(at)} UTC"
    age = now - at
    if age < -1.0:
        return f", written {when} (the writer's clock is {-age:.0f} s ahead of this one)"
    return f", written {when} ({max(age, 0.0):.0f} s ago)"


def ab_text(fraction: float, arms: dict[str, dict[str, Any]], challenger: bool) -> str:
    """The A/B split and what each arm served, ``-`` for an arm that scored nothing yet."""
    if not challenger:
        alone = "there is no challenger: the champion serves all"
        return f"A/B: a fraction {fraction:g} is set, but {alone}"
    served = "; ".join(
        f"by the {arm}: {metrics_text(arms[arm]) if arms[arm]['n'] else '-'}"
        for arm in ("champion", CHALLENGER)
    )
    return f"A/B: the challenger serves a fraction {fraction:g} of entities; served {served}"


def add_parser(sub: Any) -> None:
    """Register ``riverrun status``."""
    p = sub.add_parser("status", help="what the learn flow last reported: counts, metrics, contest")
    p.add_argument("--json", action="store_true", help="the status as the flow wrote it")
    add_flags(p, ("redis_url", "model_name"))
    p.set_defaults(handler=status)
