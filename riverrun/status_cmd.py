"""``riverrun status``: what a learn flow last reported: counts, every model's metrics, the
promotion contest's decisions and the promotions made."""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import redis

from models.status import read_status
from riverrun.settings import Settings, add_flags
from riverrun.shown import metrics_text, models_table, promotion_text


class StatusError(RuntimeError):
    """No learn flow has reported on the model."""


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the flow's last status (``--json``: as the flow wrote it)."""
    name = settings.model_name
    report = read_status(redis.Redis.from_url(settings.redis_url), name)
    if report is None:
        raise StatusError(
            f"no status for model {name!r}: no learn flow has reported on it to "
            f"{settings.redis_url} (check RIVERRUN_MODEL_NAME and RIVERRUN_REDIS_URL)"
        )
    print(
        orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
        if args.json
        else text(name, report)
    )
    return 0


def text(name: str, report: dict[str, Any]) -> str:
    """The status as a few lines and a table."""
    written = report.get("written_at")
    age = "" if written is None else f", written {max(time.time() - written, 0):.0f} s ago"
    lines = [
        f"model {name}{age}",
        f"events {report['events']:,}, labelled {report['labelled']:,}, pending "
        f"{report['pending']:,}, expired {report['expired']:,}, unknown labels "
        f"{report['unknown_labels']:,}, model errors {report['model_errors']:,}",
        "",
        *models_table(
            (f"{m['spec']}@v{m['version']}", m["alias"], m["metrics"]) for m in report["models"]
        ),
    ]
    if report["ab_fraction"]:
        arms = report["arms"]
        lines.append(
            f"A/B: the challenger serves a fraction {report['ab_fraction']:g} of entities; "
            f"served by the champion: {metrics_text(arms['champion'])}; by the challenger: "
            f"{metrics_text(arms['challenger'])}"
        )
    lines += [
        f"{alias}: {'promote' if d['promote'] else 'not promoted'}: {d['reason']}"
        for alias, d in report["contest"].items()
    ]
    lines += [promotion_text(p) for p in report["promotions"]]
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    """Register ``riverrun status``."""
    p = sub.add_parser("status", help="what the learn flow last reported: counts, metrics, contest")
    p.add_argument("--json", action="store_true", help="the status as the flow wrote it")
    add_flags(p, ("redis_url", "model_name"))
    p.set_defaults(handler=status)
