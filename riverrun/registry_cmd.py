"""``riverrun registry``: list, show, promote, rollback, history and verify model versions;
push a data scientist's model to shadow as a challenger, remove a challenger, and set the
A/B split."""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Iterable
from typing import Any

from flows.retrain import with_the_flows_features
from flows.sources import latest_event
from models.ab import CHALLENGER
from models.feature_store import FeatureStore
from models.progressive import Rejects
from models.registry import ANY, AliasMove, Registry, RegistryError, VersionInfo, model_params
from models.specs import build_model
from riverrun.argtypes import challenger_alias, fraction, model_name, nonempty, positive
from riverrun.evaluate_cmd import (
    KAFKA_FLAGS,
    add_source_flags,
    check_labelled,
    check_source_flags,
    new_evaluation,
    open_checked,
    run,
    source_request,
)
from riverrun.settings import Settings, add_flags
from riverrun.shown import counts_text, emit, metrics_text, utc_text


def _registry(settings: Settings) -> Registry:
    return Registry.connect(settings.redis_url, settings.registry_key, keep=settings.registry_keep)


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


def _version_line(info: VersionInfo, aliases: dict[str, int]) -> str:
    names = ",".join(a for a, v in sorted(aliases.items()) if v == info.version)
    metric = metrics_text(info.metrics)
    if info.metrics.get("n") == 0:  # registered before it scored a label: its zeros say nothing
        metric = "not scored yet"
    return (
        f"v{info.version:<5} {info.spec:<12} {utc_text(info.created_at)}"
        f"  seen={info.events_seen:<9,} parent={info.parent or '-':<5} {names:<20} {metric}"
    )


def list_(args: argparse.Namespace, settings: Settings) -> int:
    """Every model, or every version of one model."""
    reg = _registry(settings)
    if not args.model:
        models = {m: reg.aliases(m) for m in reg.models()}
        text = "\n".join(f"{m:<24} {aliases}" for m, aliases in models.items()) or "no models"
        return emit(args.json, models, text)
    versions = reg.versions(args.model)
    if not versions:
        raise RegistryError(f"model {args.model!r} has no versions")
    aliases = reg.aliases(args.model)
    text = "\n".join(_version_line(v, aliases) for v in versions)
    return emit(args.json, {"versions": [v.to_dict() for v in versions], "aliases": aliases}, text)


def show(args: argparse.Namespace, settings: Settings) -> int:
    """One version in full (the champion by default)."""
    reg = _registry(settings)
    version = args.version or reg.alias(args.model, "champion")
    if version is None and not reg.versions(args.model):
        raise RegistryError(f"model {args.model!r} has no versions")
    if version is None:
        raise RegistryError(f"model {args.model!r} has no champion; give a version")
    info = reg.info(args.model, version)
    text = "\n".join(f"{k:<13} {v}" for k, v in info.to_dict().items())
    return emit(args.json, info.to_dict(), text)


def promote(args: argparse.Namespace, settings: Settings) -> int:
    """Make a version the champion (compare-and-set on the current one)."""
    reg = _registry(settings)
    current = reg.alias(args.model, "champion")
    reg.check_champion(args.model, args.version, current)
    move = reg.move_alias(
        args.model,
        "champion",
        args.version,
        expected=current,
        actor=_actor(),
        reason=args.reason,
        action="promote",
    )
    text = f"{args.model}: champion {_v(move.from_version)} -> {_v(move.to_version)}"
    return emit(args.json, move.to_dict(), text)


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Move the champion back to the previous champion."""
    reg = _registry(settings)
    current = reg.alias(args.model, "champion")
    # the champion checked against: one moved since (to another rollback target) is a
    # conflict, and a --from that is not the champion is refused as one, unchecked
    expected = current if args.from_version is None else args.from_version
    if expected == current:  # else the rollback says why it cannot be done
        reg.check_rollback(args.model, current)
    move = reg.rollback(args.model, actor=_actor(), reason=args.reason, expected=expected)
    text = f"{args.model}: champion rolled back v{move.from_version} -> v{move.to_version}"
    return emit(args.json, move.to_dict(), text)


def history(args: argparse.Namespace, settings: Settings) -> int:
    """The audit stream: every alias move, refusal and rollback, oldest first."""
    reg = _registry(settings)
    moves = reg.history(args.model, count=args.limit)
    if not moves and args.model not in reg.models():
        raise RegistryError(f"unknown model {args.model!r}: it has no history")
    lines = [
        f"{utc_text(m.at)}  {m.action:<10} {_moved(m)}  by {m.actor}: {m.reason}" for m in moves
    ]
    return emit(args.json, [m.to_dict() for m in moves], "\n".join(lines) or "no history")


def _moved(move: AliasMove) -> str:
    """What an audit entry moved: an alias's versions, or the A/B split's fractions."""
    if move.action == "ab":  # a "from" of null: the split it replaced was unreadable
        was, to = (move.evidence[k] for k in ("from", "to"))
        return f"{move.alias:<11} {'-' if was is None else f'{was:g}'} -> {to:g}"
    return f"{move.alias or '-':<11} {_v(move.from_version)} -> {_v(move.to_version)}"


def _v(version: int | None) -> str:
    """A version as ``v3``, or ``-`` for none (an alias's first move, or its removal)."""
    return "-" if version is None else f"v{version}"


def verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check every version's binding and signature without loading it; exit 1 if any fails."""
    results = _registry(settings).verify(args.model)
    if not results:
        raise RegistryError(f"model {args.model!r} has no versions")
    text = "\n".join(f"v{v:<5} {'ok' if err is None else 'REFUSED: ' + err}" for v, err in results)
    emit(args.json, [{"version": v, "ok": err is None, "error": err} for v, err in results], text)
    return 0 if all(err is None for _, err in results) else 1


def _champion_features(reg: Registry, model: str) -> list[str] | None:
    """The features the champion's flow asks of every event (and of every model it runs),
    as its version recorded them; ``None`` if there is no champion or it recorded none."""
    version = reg.alias(model, "champion")
    return None if version is None else reg.info(model, version).features


def _check_features(reg: Registry, model: str, asked: Iterable[str], warm_start: str) -> None:
    """Refuse a warm-started model that would ask for features the model's events do not
    carry (those its champion recorded): once promoted, the server would refuse every
    request for it."""
    given = _champion_features(reg, model)
    missing = sorted(set(asked) - set(given)) if given else []
    if missing:
        raise RegistryError(
            f"{warm_start} has feature(s) {', '.join(map(repr, missing))} that the events of "
            f"model {model!r} do not carry (its champion's features): drop them from the "
            "warm start, or push under another model name"
        )


def push(args: argparse.Namespace, settings: Settings) -> int:
    """Register a model built from a spec (optionally warm-started on recorded data) and
    set it as a challenger: running learn flows shadow it from their next event on."""
    # the source flags checked before any work
    request = None if args.warm_start is None else source_request(args, args.warm_start)
    if request is None:
        check_source_flags(args, None, "--warm-start")
    reg = _registry(settings)
    champion_task = _champion_task(reg, args)
    task = champion_task or args.task or settings.task
    settings = settings.override({"task": task})
    metrics: dict[str, float] = {}
    events_seen = 0
    tags = {"pushed": "true"}
    if request is not None:
        rejects = Rejects()
        store = FeatureStore(reg.client, args.model)  # the warm start learns the flow's
        settings = with_the_flows_features(settings.override({"model_name": args.model}), store)
        source, first = open_checked(request, settings, args, rejects)
        if source.task != task and champion_task is not None:
            raise RegistryError(
                f"{source.description} is a {source.task} stream, and model {args.model!r} "
                f"does {task} (its champion)"
            )
        task = source.task  # a dataset's own, when the model has no champion to follow
        settings = settings.override({"task": task})
        model = build_model(args.spec, task, settings.seed, first.features)
        evaluation = new_evaluation(source, [(args.spec, model)], settings, rejects)
        run(source, evaluation, progress=not args.quiet, desc="warm start")
        report = evaluation.report()
        check_labelled(report, source, rejects, "nothing to warm-start on")
        (done,) = report["models"]
        metrics, events_seen = done["metrics"], done["learned"]
        tags["warm_start"] = source.description
        if rejects.counts:  # refused rows, recorded with the version and said below
            tags["warm_start_rejected"] = counts_text(rejects.counts)
        features: Iterable[str] | None = evaluation.lead.schema  # what it asked of events
        _check_features(reg, args.model, features or (), source.description)
    else:
        sample = latest_event(settings)
        model = build_model(
            args.spec, task, settings.seed, None if sample is None else sample.features
        )
        features = _champion_features(reg, args.model)  # what the flow asks of every model
    info = reg.register(
        args.model,
        model,
        spec=args.spec,
        task=task,
        metrics=metrics,
        events_seen=events_seen,
        tags=tags,
        params=model_params(model),
        features=features,
    )
    move = reg.move_alias(
        args.model,
        args.alias,
        info.version,
        expected=ANY,
        actor=_actor(),
        reason=args.reason or f"pushed {args.spec} to shadow",
        action="set",
    )
    text = f"{args.model}: {args.alias} -> v{info.version} ({args.spec}, {task}"
    text += f", warm-started on {events_seen:,} labelled events)" if args.warm_start else ")"
    if move.from_version is not None:
        text += f" (was v{move.from_version})"
    if "warm_start_rejected" in tags:
        text += f"; refused: {tags['warm_start_rejected']}"
    return emit(args.json, {"version": info.to_dict(), "move": move.to_dict()}, text)


def _champion_task(reg: Registry, args: argparse.Namespace) -> str | None:
    """The task of the model's champion, which ``--task`` may only repeat (``None`` without
    a champion: ``--task``, a warm start's dataset or the settings decide)."""
    champion = reg.alias(args.model, "champion")
    if champion is None:
        return None
    task = reg.info(args.model, champion).task
    if args.task is not None and args.task != task:
        raise RegistryError(f"model {args.model!r} does {task} (its champion), not {args.task}")
    return task


def remove(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a challenger alias: running learn flows stop shadowing it."""
    if args.alias == "champion":
        raise RegistryError("the champion cannot be removed: promote another version or roll back")
    reg = _registry(settings)
    if reg.alias(args.model, args.alias) is None:
        raise RegistryError(f"model {args.model!r} has no alias {args.alias!r}")
    move = reg.move_alias(
        args.model, args.alias, None, expected=ANY, actor=_actor(), reason=args.reason, action="set"
    )
    text = f"{args.model}: {args.alias} removed (was v{move.from_version})"
    return emit(args.json, move.to_dict(), text)


def ab(args: argparse.Namespace, settings: Settings) -> int:
    """Serve a fraction of entities with the challenger; servers and flows follow at once."""
    reg = _registry(settings)
    if args.model not in reg.models():
        raise RegistryError(f"unknown model {args.model!r}: it has no versions")
    to = args.fraction
    was = reg.set_ab_fraction(args.model, to, actor=_actor(), reason=args.reason)
    text = f"{args.model}: the challenger serves a fraction {to:g} of entities (was {was:g})"
    if to > 0 and reg.alias(args.model, CHALLENGER) is None:
        text += "; there is no challenger yet, so the champion serves all until there is one"
    return emit(args.json, {"model": args.model, "from": was, "to": to}, text)


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
    a.add_argument("model", nargs="?", type=model_name, help="model name")
    a = action("show", show, "one version (default: the champion)")
    a.add_argument("model", type=model_name)
    a.add_argument("version", nargs="?", type=positive)
    a = action("promote", promote, "make VERSION the champion")
    a.add_argument("model", type=model_name)
    a.add_argument("version", type=positive)
    a.add_argument("--reason", default="promoted by hand", help="recorded in the audit stream")
    a = action("rollback", rollback, "move the champion back to the previous one")
    a.add_argument("model", type=model_name)
    a.add_argument("--reason", default="rolled back by hand", help="recorded in the audit stream")
    a.add_argument(
        "--from",
        dest="from_version",
        type=positive,
        default=None,
        metavar="VERSION",
        help="roll back only if VERSION is still the champion (else say who moved it)",
    )
    a = action("history", history, "the audit stream of a model")
    a.add_argument("model", type=model_name)
    a.add_argument("--limit", type=positive, default=100, metavar="N", help="last N entries")
    a = action("verify", verify, "check every version's binding and its snapshot's signature")
    a.add_argument("model", type=model_name)
    a = action("push", push, "register a model from a spec and shadow it as a challenger")
    a.add_argument("model", type=model_name)
    a.add_argument("--spec", required=True, help="a built-in spec or package.module:factory")
    a.add_argument(
        "--alias",
        type=challenger_alias,
        default="challenger",
        help="challenger alias (default: challenger)",
    )
    a.add_argument(
        "--warm-start",
        type=nonempty,
        default=None,
        metavar="SOURCE",
        help="learn first from a file, kafka (a range of the events topic) or a dataset",
    )
    a.add_argument("--reason", default=None, help="recorded in the audit stream")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_source_flags(a)
    add_flags(a, (*KAFKA_FLAGS, "task", "seed", "rolling_window", "label_ttl", "max_pending"))
    add_flags(a, ("batch_size", "max_message_bytes"))
    a = action("remove", remove, "remove a challenger: flows stop shadowing it")
    a.add_argument("model", type=model_name)
    a.add_argument("alias")
    a.add_argument("--reason", default="removed by hand", help="recorded in the audit stream")
    a = action("ab", ab, "serve FRACTION of entities with the challenger (0 ends the split)")
    a.add_argument("model", type=model_name)
    a.add_argument("fraction", type=fraction, help="within [0, 1], of entities by key hash")
    a.add_argument("--reason", default="set by hand", help="recorded in the audit stream")
