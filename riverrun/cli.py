"""``riverrun``: the one command line of the project.

Each subcommand parses its flags into the shared :class:`~riverrun.settings.Settings`
(flags override ``RIVERRUN_*`` variables) and hands off to the module that does the work.
Known failures end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import select
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from confluent_kafka import KafkaException
from redis import RedisError

from flows.files import SourceError
from flows.kafka_io import KafkaUnavailable
from flows.produce import STREAM_EVENTS
from flows.retrain import RetrainError
from flows.retrain_lock import LockHeld
from grpc_api.errors import ServeError
from models.datasets import DATASETS, DRIFT_EVERY, DatasetError
from models.drift import DriftConfigError
from models.features import FeatureSpecError
from models.registry import RegistryError
from models.schema import InvalidInput
from models.signing import MissingKeyError, SignatureError
from models.specs import SpecError
from models.triggers import TriggerConfigError
from riverrun import evaluate_cmd, local_cmd, registry_cmd, retrain_cmd, serve_cmd, status_cmd
from riverrun.argtypes import count, nonempty, output_file, positive, rate
from riverrun.demo import DemoError
from riverrun.evaluate_cmd import EvaluateError
from riverrun.local import LauncherError
from riverrun.metrics import MetricsPortError
from riverrun.recovery import RecoveryStateError
from riverrun.runner import LearnProcessError, run_learn
from riverrun.serve_cmd import PredictError
from riverrun.settings import Settings, SettingsError, add_flags, from_args, hide_password

VERBOSITY = (logging.WARNING, logging.INFO, logging.DEBUG)  # by how many -v
KAFKA = ("bootstrap_servers",)
TOPICS = (
    "topic_events",
    "topic_labels",
    "topic_predictions",
    "topic_shadow",
    "topic_deadletter",
    "topic_drift",
    "partitions",
)
MODEL = ("model_name", "model_spec", "challengers", "task", "seed", "entity_features", "entity_ttl")
FLOW = (
    "rolling_window",
    "label_ttl",
    "max_pending",
    "max_message_bytes",
    "batch_size",
    "status_interval",
    "epoch_interval",
    "follow",
    "processes",
    "recovery_dir",
    "snapshot_every",
    "snapshot_interval",
    "registry_keep",
    "metrics_host",
    "metrics_port",
    "drift_detector",
    "drift_min_gap",
    "data_drift_window",
    "auto_promote",
    "ab_fraction",
    "promote_min_samples",
    "promote_window",
    "promote_margin",
    "promote_alpha",
    "promote_latency_budget",
    "promote_cooldown",
    "promote_keep_old",
    "offline_store_dir",
    "offline_store_max_bytes",
    "offline_store_max_seconds",
)

Handler = Callable[[argparse.Namespace, Settings], int]


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from flows.produce import ProduceRequest, produce

    if args.labels_topic and not args.delay_labels:
        raise SettingsError("--labels-topic sends delayed labels: give --delay-labels N too")
    if args.burst and not args.rate:
        raise SettingsError("--burst comes before the pace --rate sets: give --rate R too")
    req = ProduceRequest(
        dataset=args.dataset,
        events=args.events,
        seed=settings.seed,
        rate=args.rate,
        burst=args.burst,
        skip=args.skip,
        delay_labels=args.delay_labels,
        labels_topic=args.labels_topic,
        drift_every=args.drift_every,
        entities=args.entities,
        id_prefix=args.id_prefix,
    )
    summary = produce(
        req,
        settings.bootstrap_servers,
        settings.topic_events,
        settings.topic_labels,
        partitions=settings.partitions,
        progress=not args.quiet,
    )
    where = settings.topic_labels if args.labels_topic else settings.topic_events
    print(
        f"produced {summary.events} {summary.task} events to {settings.topic_events} "
        f"(ids {summary.id_prefix}-*) in {summary.seconds:.1f} s"
        + (f", {summary.labels} delayed labels to {where}" if summary.labels else "")
        + (f"; concept drifts at {', '.join(map(str, summary.drifts))}" if summary.drifts else "")
    )
    return 0


def _learn(args: argparse.Namespace, settings: Settings) -> int:
    return run_learn(settings)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from riverrun.demo import DemoRequest, run_demo

    req = DemoRequest(
        dataset=args.dataset,
        events=args.events,
        delay_labels=args.delay_labels,
        drift_every=args.drift_every,
        report_path=args.report,
    )
    return run_demo(req, settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from bench.run import BenchRequest, run_bench

    run_bench(BenchRequest(size=args.size, out=Path(args.out)), settings)
    return 0


def _add_stream_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="agrawal-drift",
        choices=sorted(DATASETS),
        help="stream to produce (default: agrawal-drift)",
    )
    p.add_argument(
        "--events",
        type=positive,
        default=STREAM_EVENTS,
        help=f"number of events (default: {STREAM_EVENTS}, or all of a smaller bundled dataset)",
    )
    p.add_argument(
        "--delay-labels",
        type=count,
        default=0,
        metavar="N",
        help="send each label N events after its event (default: inline)",
    )
    p.add_argument(
        "--drift-every",
        type=positive,
        default=None,
        metavar="N",
        help="events between drifts of agrawal-drift, agrawal-switch and sea-drift, or the "
        f"centre of sea-gradual's (default: {DRIFT_EVERY})",
    )


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other error of the command line
    (``--help`` still shows the usage); a negative number in any notation (``-1e-3``,
    ``-inf``) is a value to refuse by its type, not an unknown flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own (private) pattern of the negative numbers it takes as values, not
        # flags; Python 3.11's knows only -5 and -.5 (tests/test_registry.py: registry ab)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="riverrun", description="Streaming MLOps for models that learn online.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v what riverrun does, -vv also debug lines (librdkafka's among them)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local_cmd.add_parser(sub)
    registry_cmd.add_parser(sub)
    serve_cmd.add_parsers(sub)
    retrain_cmd.add_parsers(sub)
    evaluate_cmd.add_parser(sub)
    status_cmd.add_parser(sub)

    p = sub.add_parser("produce", help="write a dataset or synthetic stream to the events topic")
    _add_stream_flags(p)
    p.add_argument("--rate", type=rate, default=None, help="events per second (default: max)")
    p.add_argument(
        "--burst", type=count, default=0, metavar="N", help="the first N events at full speed"
    )
    p.add_argument(
        "--labels-topic",
        action="store_true",
        help="send delayed labels to the labels topic, keyed by event id",
    )
    p.add_argument("--entities", type=positive, default=100, help="distinct entity keys")
    p.add_argument(
        "--skip", type=count, default=0, metavar="N", help="leave out the first N events (resume)"
    )
    p.add_argument(
        "--id-prefix",
        type=nonempty,
        default=None,
        help="event id prefix (default: random)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(p, KAFKA + TOPICS + ("seed",))
    p.set_defaults(handler=_produce)

    p = sub.add_parser("learn", help="run the learn flow (Kafka in, predictions out)")
    add_flags(p, (*KAFKA, "redis_url", *TOPICS, *MODEL, *FLOW))
    p.set_defaults(handler=_learn)

    p = sub.add_parser("demo", help="the whole loop on a local broker and Redis")
    _add_stream_flags(p)
    p.add_argument(
        "--report", type=output_file, default=None, metavar="FILE", help="write the report as JSON"
    )
    p.add_argument("--model", dest="model_spec", default=None, help="champion spec (logreg)")
    add_flags(p, ("challengers", "seed", "entity_features", "rolling_window"))
    p.set_defaults(handler=_demo)

    p = sub.add_parser("bench", help="measure throughput and latency against baselines")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", dest="size", action="store_const", const="quick", help="under 3 minutes"
    )
    size.add_argument(
        "--smoke",
        dest="size",
        action="store_const",
        const="smoke",
        help="tiny: checks that every benchmark runs, its figures mean little",
    )
    p.set_defaults(size="full")
    p.add_argument("--out", default="bench/results/bench.json", help="where to write the JSON")
    add_flags(p, ("seed",))
    p.set_defaults(handler=_bench)
    return parser


# Failures the command line reports in one line: bad input, unreachable or refusing servers.
# Anything else is a bug and keeps its traceback.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    SettingsError,
    SpecError,
    DatasetError,
    DriftConfigError,
    TriggerConfigError,
    RetrainError,
    LockHeld,
    DemoError,
    FeatureSpecError,
    LauncherError,
    KafkaException,
    KafkaUnavailable,
    RegistryError,
    SignatureError,
    MissingKeyError,
    RedisError,
    MetricsPortError,
    RecoveryStateError,
    LearnProcessError,
    ServeError,
    PredictError,
    InvalidInput,
    EvaluateError,
    SourceError,
    status_cmd.StatusError,
)


def _gone_reader() -> int | None:
    """The file descriptor of stdout if it is a pipe whose reader closed it (``| head``
    took what it wanted), else ``None``."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # closed, or not a file of the system
        return None
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return fd if any(events & select.POLLERR for _, events in poll.poll(0)) else None


def reporting(command: str, work: Callable[[], int]) -> int:
    """Run ``work``; a known failure ends with one line on stderr and status 2, Ctrl-C with
    status 130, and a reader of the output that stops reading quietly with 141, as a shell
    tool would. Every process of ``riverrun COMMAND`` reports this way (a cluster's too)."""
    try:
        status = work()
        if sys.stdout is not None:  # None when started with stdout closed
            sys.stdout.flush()  # here, where a reader that went away is seen, not at exit
        return status
    except BrokenPipeError:
        stdout = _gone_reader()
        if stdout is None:  # another pipe or socket broke: a failure to report as ever
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout)  # nor at exit's flush
        return 128 + signal.SIGPIPE
    except KNOWN_ERRORS as exc:
        print(f"riverrun {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"riverrun {command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``riverrun`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=VERBOSITY[min(args.verbose, len(VERBOSITY) - 1)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler

    def work() -> int:
        settings = from_args(args)
        try:
            return handler(args, settings)
        except RedisError as exc:  # redis-py's text may not say which server
            raise RedisError(f"Redis at {hide_password(settings.redis_url)}: {exc}") from None

    return reporting(args.command, work)


if __name__ == "__main__":
    sys.exit(main())
