"""``riverrun retrain`` (a full retrain from a Kafka range) and ``riverrun trigger`` (the
service that decides when to retrain, promote or roll back)."""

from __future__ import annotations

import argparse
import math
import signal
import threading
from typing import Any

from models.schema import LATEST_TIME, text_seconds
from riverrun.argtypes import challenger_alias, check_range
from riverrun.metrics import serve_metrics
from riverrun.settings import Settings, SettingsError, add_flags, split_list
from riverrun.shown import counts_text, metrics_text

KAFKA_AND_REDIS = (
    "bootstrap_servers",
    "redis_url",
    "topic_events",
    "topic_labels",
    "topic_drift",
    "partitions",
    "model_name",
    "task",
    "seed",
    "entity_features",
    "label_ttl",
    "max_pending",
    "batch_size",
    "rolling_window",
)
TRIGGERS = (
    "trigger_on_drift",
    "trigger_drift_wait",
    "trigger_slump_action",
    "trigger_slump_metric",
    "trigger_slump_threshold",
    "trigger_slump_for",
    "trigger_fresh_every",
    "trigger_schedule_every",
    "trigger_cooldown",
    "trigger_lookback",
    "trigger_retrain_alias",
    "metrics_host",
    "trigger_metrics_port",
)


def parse_time(text: str) -> float:
    """Epoch seconds from ``1700000000.5`` or an ISO-8601 time (UTC when no zone is given); an
    argument type, refusing what is neither, or no time from 1970 to 9999 (``nan``, ``-5``).

    >>> parse_time("1700000000.5"), parse_time("2023-11-14T22:13:20")
    (1700000000.5, 1700000000.0)
    >>> parse_time("inf")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'inf': expected epoch seconds or an ISO-8601 time from 1970 to 9999
    """
    try:
        seconds = text_seconds(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= LATEST_TIME:  # nan too
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected epoch seconds or an ISO-8601 time from 1970 to 9999"
        )
    return seconds


def parse_positions(text: str) -> dict[tuple[str, int], int]:
    """``events-0=120,labels-0=15`` (topic-partition=offset) as offsets by partition."""
    out = {}
    for item in split_list(text):
        where, _, offset = item.partition("=")
        topic, _, partition = where.rpartition("-")
        if not topic or not partition.isdigit() or not offset.isdigit():
            raise SettingsError(f"{item!r}: expected TOPIC-PARTITION=OFFSET")
        out[(topic, int(partition))] = int(offset)
    return out


def retrain(args: argparse.Namespace, settings: Settings) -> int:
    """Replay a range of the topics into a fresh model and make it a challenger, one retrain
    of the model at a time."""
    import redis

    from flows.retrain import RetrainRequest
    from flows.retrain import retrain as run
    from flows.retrain_lock import retrain_held

    check_range(args.since, args.until, "--since", "--until")

    req = RetrainRequest(
        spec=args.spec or "",
        since=args.since,
        until=args.until,
        start_offsets=parse_positions(args.from_positions or ""),
        stop_offsets=parse_positions(args.to_positions or ""),
        reason=args.reason,
        alias=args.alias,
        progress=not args.quiet,
    )
    client = redis.Redis.from_url(settings.redis_url)
    with retrain_held(client, settings.model_name, args.lock_token):
        done = run(settings, req)
    info = done.info
    metrics = metrics_text(info.metrics)
    print(
        f"{settings.model_name} v{info.version} ({info.spec}, {info.task}) learned "
        f"{info.events_seen} labelled events and is now {args.alias}: {metrics}"
    )
    if not done.flow_known:
        print(
            f"no learn flow of {settings.model_name} has said where it is: the replay was not "
            "held back to it"
        )
    if done.held_back:
        held = ", ".join(f"{w} at {stop} of {asked}" for w, (stop, asked) in done.held_back.items())
        print(
            f"the replay stopped at the learn flow's position ({held}): the flow scores the "
            "new model on the events after it, which it must not have learned"
        )
    if done.rejected:
        reasons = counts_text(done.rejected)
        print(f"{done.rejected.total()} messages of the range were refused: {reasons}")
    return 0


def trigger(args: argparse.Namespace, settings: Settings) -> int:
    """Run the trigger service until Ctrl-C or SIGTERM."""
    from flows.trigger_service import TriggerService

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve_metrics(settings.trigger_metrics_port, settings.metrics_host, "trigger_metrics_port")
    print(f"trigger service for {settings.model_name}: watching {settings.topic_drift}", flush=True)
    TriggerService(settings, stop).run()
    print("trigger service stopped", flush=True)
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``riverrun retrain`` and ``riverrun trigger``."""
    p = sub.add_parser("retrain", help="a fresh model from a replay of the topics, as challenger")
    p.add_argument("--spec", default=None, help="model spec (default: the champion's)")
    start, stop = p.add_mutually_exclusive_group(), p.add_mutually_exclusive_group()
    start.add_argument(
        "--since", type=parse_time, default=None, help="first message time (epoch s or ISO-8601)"
    )
    stop.add_argument(
        "--until", type=parse_time, default=None, help="end of the range (epoch s or ISO-8601)"
    )
    start.add_argument(
        "--from-positions",
        default=None,
        metavar="TOPIC-P=OFFSET,...",
        help="first offsets, e.g. the positions of a drift event",
    )
    stop.add_argument(
        "--to-positions",
        default=None,
        metavar="TOPIC-P=OFFSET,...",
        help="stop offsets (default: the topics' current end); never past the learn flow's "
        "last reported positions",
    )
    p.add_argument("--reason", default="requested by hand", help="recorded with the version")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--alias",
        type=challenger_alias,
        default="challenger",
        help="challenger alias to point at the new version (default: challenger)",
    )
    p.add_argument(  # the trigger service's: its retrains run under the lock it holds
        "--lock-token", default="", help=argparse.SUPPRESS
    )
    add_flags(p, KAFKA_AND_REDIS)
    p.set_defaults(handler=retrain)

    p = sub.add_parser(
        "trigger", help="retrain, promote or roll back on drift, a slump, fresh data or a schedule"
    )
    add_flags(p, KAFKA_AND_REDIS + TRIGGERS)
    p.set_defaults(handler=trigger)
