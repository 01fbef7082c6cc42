"""``riverrun registry``: list, show, promote, rollback, history and verify model versions."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import socket
from typing import Any

import orjson

from models.registry import Registry, RegistryError, VersionInfo
from riverrun.settings import Settings, add_flags


def _registry(settings: Settings) -> Registry:
    return Registry.connect(settings.redis_url, settings.registry_key, keep=settings.registry_keep)


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.json else text)
    return 0


def _version_line(info: VersionInfo, aliases: dict[str, int]) -> str:
    names = ",".join(a for a, v in sorted(aliases.items()) if v == info.version)
    metric = ", ".join(f"{k}={v:.4f}" for k, v in info.metrics.items() if not k.startswith("n"))
    return (
        f"v{info.version:<5} {info.spec:<12} {_when(info.created_at)}  seen={info.events_seen:<9,}"
        f" parent={info.parent or '-':<5} {names:<20} {metric}"
    )


def list_(args: argparse.Namespace, settings: Settings) -> int:
    """Every model, or every version of one model."""
    reg = _registry(settings)
    if not args.model:
        models = {m: reg.aliases(m) for m in reg.models()}
        text = "\n".join(f"{m:<24} {aliases}" for m, aliases in models.items()) or "no models"
        return _emit(args, models, text)
    versions = reg.versions(args.model)
    if not versions:
        raise RegistryError(f"model {args.model!r} has no versions")
    aliases = reg.aliases(args.model)
    text = "\n".join(_version_line(v, aliases) for v in versions)
    return _emit(args, {"versions": [v.to_dict() for v in versions], "aliases": aliases}, text)


def show(args: argparse.Namespace, settings: Settings) -> int:
    """One version in full (the champion by default)."""
    reg = _registry(settings)
    version = args.version or reg.alias(args.model, "champion")
    if version is None:
        raise RegistryError(f"model {args.model!r} has no champion; give a version")
    info = reg.info(args.model, version)
    text = "\n".join(f"{k:<13} {v}" for k, v in info.to_dict().items())
    return _emit(args, info.to_dict(), text)


def promote(args: argparse.Namespace, settings: Settings) -> int:
    """Make a version the champion (compare-and-set on the current one)."""
    reg = _registry(settings)
    current = reg.alias(args.model, "champion")
    move = reg.move_alias(
        args.model,
        "champion",
        args.version,
        expected=current,
        actor=_actor(),
        reason=args.reason,
        action="promote",
    )
    text = f"{args.model}: champion v{move.from_version} -> v{move.to_version}"
    return _emit(args, move.to_dict(), text)


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Move the champion back to the previous champion."""
    move = _registry(settings).rollback(args.model, actor=_actor(), reason=args.reason)
    text = f"{args.model}: champion rolled back v{move.from_version} -> v{move.to_version}"
    return _emit(args, move.to_dict(), text)


def history(args: argparse.Namespace, settings: Settings) -> int:
    """The audit stream: every alias move, refusal and rollback, oldest first."""
    moves = _registry(settings).history(args.model, count=args.limit)
    lines = [
        f"{_when(m.at)}  {m.action:<10} {m.alias or '-':<11} v{m.from_version or '-'} -> "
        f"v{m.to_version or '-'}  by {m.actor}: {m.reason}"
        for m in moves
    ]
    return _emit(args, [m.to_dict() for m in moves], "\n".join(lines) or "no history")


def verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check every version's signature without loading it; exit 1 if any fails."""
    results = _registry(settings).verify(args.model)
    if not results:
        raise RegistryError(f"model {args.model!r} has no versions")
    text = "\n".join(f"v{v:<5} {'ok' if err is None else 'REFUSED: ' + err}" for v, err in results)
    _emit(args, [{"version": v, "ok": err is None, "error": err} for v, err in results], text)
    return 0 if all(err is None for _, err in results) else 1


def add_parser(sub: Any) -> None:
    """Register ``riverrun registry ...``."""
    p = sub.add_parser("registry", help="model versions, aliases, promotion and rollback")
    actions = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    def action(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text)
        a.add_argument("--json", action="store_true", help="machine-readable output")
        add_flags(a, ("redis_url", "registry_keep"))
        a.set_defaults(handler=handler)
        return a

    a = action("list", list_, "models, or the versions of one model")
    a.add_argument("model", nargs="?", help="model name")
    a = action("show", show, "one version (default: the champion)")
    a.add_argument("model")
    a.add_argument("version", nargs="?", type=int)
    a = action("promote", promote, "make VERSION the champion")
    a.add_argument("model")
    a.add_argument("version", type=int)
    a.add_argument("--reason", default="promoted by hand", help="recorded in the audit stream")
    a = action("rollback", rollback, "move the champion back to the previous one")
    a.add_argument("model")
    a.add_argument("--reason", default="rolled back by hand", help="recorded in the audit stream")
    a = action("history", history, "the audit stream of a model")
    a.add_argument("model")
    a.add_argument("--limit", type=int, default=100, help="last N entries")
    a = action("verify", verify, "check every snapshot's signature")
    a.add_argument("model")
