"""``riverrun evaluate``: progressive validation of several models side by side, offline.

The models learn test-then-train on a recorded stream (a file, a Kafka range, a dataset)
exactly as the learn flow would, with a progress bar; the command prints cumulative and
rolling metrics and events/s per model, writes JSON and a plot on request, and can gate a
CI job (exit status 1 when a model breaks a ``--fail-under``/``--fail-over`` bound).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from flows.kafka_range import KafkaRange
from flows.sources import KAFKA, Source, SourceRequest, open_source
from models.datasets import DATASETS, DRIFT_EVERY
from models.gates import OVER, UNDER, Gate, GateError, failures, parse_gate
from models.progressive import Evaluation, Rejects, sample_every
from models.schema import Event
from models.specs import build_model
from riverrun.argtypes import check_range, count, nonempty, output_file, plot_file, positive
from riverrun.retrain_cmd import parse_time
from riverrun.settings import Settings, add_flags

KAFKA_FLAGS = ("bootstrap_servers", "topic_events", "topic_labels")
LEARN_FLAGS = ("task", "seed", "rolling_window", "label_ttl", "max_pending", "batch_size")
ENTITY_FLAGS = ("entity_features", "entity_ttl")


class EvaluateError(RuntimeError):
    """An evaluation that cannot run; the message says why in one line."""


def add_source_flags(p: argparse.ArgumentParser) -> None:
    """Flags that bound a source: events of a dataset, a Kafka range, a label delay."""
    p.add_argument("--events", type=positive, default=None, help="events of a synthetic dataset")
    p.add_argument(
        "--drift-every",
        type=positive,
        default=None,
        metavar="N",
        help=f"events between a paced dataset's drifts (default: {DRIFT_EVERY})",
    )
    p.add_argument("--start-offset", type=count, default=None, help="kafka: first offset")
    p.add_argument("--stop-offset", type=count, default=None, help="kafka: offset to stop before")
    p.add_argument("--since", type=parse_time, default=None, help="kafka: first record time")
    p.add_argument("--until", type=parse_time, default=None, help="kafka: time to stop before")
    p.add_argument(
        "--delay",
        type=count,
        default=None,
        metavar="N",
        help="hold each inline label back N events (river.stream.simulate_qa order; default: 0)",
    )


KAFKA_RANGE_FLAGS = ("start_offset", "stop_offset", "since", "until")
DATASET_FLAGS = ("events", "drift_every")
ANY_SOURCE_FLAGS = ("delay",)


def check_source_flags(args: argparse.Namespace, name: str | None, source: str = "") -> None:
    """:class:`EvaluateError` for a source flag given that the source ``name`` has no use
    for (``None``: no source, named by the flag ``source``); it would be ignored unsaid."""
    for flag in (*KAFKA_RANGE_FLAGS, *DATASET_FLAGS, *ANY_SOURCE_FLAGS):
        if getattr(args, flag) is None:
            continue
        given = "--" + flag.replace("_", "-")
        if name is None:
            raise EvaluateError(f"{given} bounds a source: give {source}")
        if flag in KAFKA_RANGE_FLAGS and name != KAFKA:
            raise EvaluateError(f"{given} is for the source kafka, not {name!r}")
        if flag in DATASET_FLAGS and name not in DATASETS:
            raise EvaluateError(f"{given} is for a dataset, not {name!r}")


def source_request(args: argparse.Namespace, name: str) -> SourceRequest:
    """What the source flags ask for, of the source ``name`` (:func:`check_source_flags`)."""
    check_source_flags(args, name)
    check_range(args.start_offset, args.stop_offset, "--start-offset", "--stop-offset")
    check_range(args.since, args.until, "--since", "--until")
    return SourceRequest(
        name,
        events=args.events,
        drift_every=args.drift_every,
        kafka=KafkaRange(args.start_offset, args.stop_offset, args.since, args.until),
        delay=args.delay or 0,
    )


def open_checked(
    req: SourceRequest, settings: Settings, args: argparse.Namespace, rejects: Rejects
) -> tuple[Source, Event]:
    """Open a source whose task agrees with ``--task``; returns it and its first event."""
    source = open_source(req, settings, rejects)
    if args.task is not None and args.task != source.task:
        raise EvaluateError(f"{source.description} is a {source.task} stream, not {args.task}")
    first = source.first_event()
    if first is None:
        detail = next(iter(rejects.examples.values()), "")
        raise EvaluateError(
            f"{source.description} holds no event" + (f" that reads: {detail}" if detail else "")
        )
    return source, first


def new_evaluation(
    source: Source, models: list[tuple[str, Any]], settings: Settings, rejects: Rejects
) -> Evaluation:
    """An evaluation of ``models`` on ``source`` with the learn flow's settings (rolling
    window, label TTL and cap, and expiry once per batch as the flow does)."""
    return Evaluation(
        source.task,
        models,
        window=settings.rolling_window,
        label_ttl=settings.label_ttl,
        max_pending=settings.max_pending,
        expire_every=settings.batch_size,
        sample_every=sample_every(source.size),
        rejects=rejects,
    )


def run(source: Source, evaluation: Evaluation, *, progress: bool, desc: str) -> None:
    """Feed the whole source to the evaluation, with a progress bar of what it has read."""
    with tqdm(total=source.size, unit="rec", desc=desc, disable=not progress) as bar:
        for rec in source.records:
            evaluation.feed(rec)
            bar.update(source.read.done - bar.n)
        bar.update(source.read.done - bar.n)  # read after the last record: out of the range
    evaluation.finish()


def evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Run the evaluation, print and write the results, apply the gates."""
    rejects = Rejects()
    source, first = open_checked(source_request(args, args.source), settings, args, rejects)
    gates = _gates(args, source.task)
    models = [
        (spec, build_model(spec, source.task, settings.seed, first.features))
        for spec in args.models
    ]
    evaluation = new_evaluation(source, models, settings, rejects)
    run(source, evaluation, progress=not args.quiet, desc="evaluate")
    report = {"source": source.description, **evaluation.report()}
    check_labelled(report, source, rejects, "nothing to score")
    print(format_table(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"results written to {args.json}")
    if args.plot:
        from riverrun.plot import plot_series

        plot_series(report, Path(args.plot), f"rolling metrics on {source.description}")
        print(f"plot written to {args.plot}")
    broken = failures(report, gates)
    for line in broken:
        print(f"riverrun evaluate: gate failed: {line}", file=sys.stderr)
    return 1 if broken else 0


def check_labelled(report: dict[str, Any], source: Source, rejects: Rejects, so: str) -> None:
    """:class:`EvaluateError` if no event of ``source`` was labelled (``so``: what that
    means for the command), with the commonest reason records were rejected."""
    if report["labelled"] == 0:
        raise EvaluateError(
            f"{source.description}: no event was labelled, {so}" + _most_rejected(rejects)
        )


def _most_rejected(rejects: Rejects) -> str:
    """The commonest reason records were rejected, with an example ("" if none was), to say
    why nothing could be scored."""
    if not rejects.counts:
        return ""
    ((reason, n),) = rejects.counts.most_common(1)
    return f" ({n:,} rejected as {reason}, e.g. {rejects.examples[reason]})"


def _gates(args: argparse.Namespace, task: str) -> list[Gate]:
    try:
        return [parse_gate(text, UNDER, task) for text in args.fail_under] + [
            parse_gate(text, OVER, task) for text in args.fail_over
        ]
    except GateError as exc:
        raise EvaluateError(str(exc)) from None


def format_table(report: dict[str, Any]) -> str:
    """The results as a short human-readable table."""
    rejected = sum(report["rejected"].values())
    lines = [
        f"source    {report['source']}",
        f"events    {report['events']:,}   labelled {report['labelled']:,}   "
        f"pending {report['pending']:,}   rejected {rejected:,}   expired {report['expired']:,}"
        f"   unknown labels {report['unknown_labels']:,}",
        "",
    ]
    for reason, n in sorted(report["rejected"].items()):
        lines.insert(-1, f"  {n:,} rejected ({reason}), e.g. {report['rejected_examples'][reason]}")
    keys = [k for k in report["models"][0]["metrics"] if k != "n"]
    width = max(12, *(len(m["name"]) + 2 for m in report["models"]))
    lines.append("model".ljust(width) + "".join(k.rjust(18) for k in keys) + "events/s".rjust(12))
    for m in report["models"]:
        scored = m["metrics"]["n"]  # a model that scored nothing has zeros, not metrics
        lines.append(
            m["name"].ljust(width)
            + "".join(f"{m['metrics'][k]:>18.4f}" if scored else "-".rjust(18) for k in keys)
            + f"{m['events_per_second']:>12,.0f}"
        )
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    """Register ``riverrun evaluate``."""
    p = sub.add_parser(
        "evaluate", help="progressive validation of models side by side on a recorded stream"
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        required=True,
        metavar="SPEC",
        help="a built-in spec or package.module:factory (repeat for several)",
    )
    p.add_argument(
        "--source",
        type=nonempty,
        required=True,
        help="a file (.csv, .jsonl or .parquet), a folder of Parquet files, kafka, or a dataset",
    )
    add_source_flags(p)
    p.add_argument(
        "--json", type=output_file, default=None, metavar="FILE", help="write the results as JSON"
    )
    p.add_argument(
        "--plot",
        type=plot_file,
        default=None,
        metavar="FILE.png",
        help="draw rolling metrics (.png, .svg, .pdf, ...)",
    )
    p.add_argument(
        "--fail-under",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="exit 1 if a model's higher-is-better metric (accuracy) is below VALUE",
    )
    p.add_argument(
        "--fail-over",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="exit 1 if a model's lower-is-better metric (log_loss, mae, rmse) is above VALUE",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(p, (*KAFKA_FLAGS, *LEARN_FLAGS, *ENTITY_FLAGS, "max_message_bytes"))
    p.set_defaults(handler=evaluate)
