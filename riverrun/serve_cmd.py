"""``riverrun serve`` (the gRPC scoring server) and ``riverrun predict`` (its client)."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from riverrun.argtypes import rate
from riverrun.settings import Settings, add_flags

SERVE = (
    "serve_host",
    "serve_port",
    "serve_models",
    "serve_workers",
    "serve_max_batch",
    "serve_sync_interval",
    "serve_tls_cert",
    "serve_tls_key",
    "serve_metrics_port",
    "metrics_host",
    "redis_url",
    "bootstrap_servers",
    "topic_labels",
    "model_name",
)
CLIENT = ("serve_host", "serve_port", "serve_tls_ca")


class PredictError(RuntimeError):
    """The server refused the request or could not be reached: its status and message."""


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from grpc_api.server import serve

    return serve(settings, announce=lambda line: print(line, flush=True))


def _value(raw: str) -> Any:
    """A number if ``raw`` reads as one (``nan`` too: the server refuses it by name), else
    whatever JSON it is, else the text itself (refused by the check that names it)."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def parse_features(items: list[str]) -> dict[str, Any]:
    """A JSON object, or ``NAME=VALUE`` items.

    >>> parse_features(["a=1", "b=x"])
    {'a': 1.0, 'b': 'x'}
    """
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            return dict(orjson.loads(items[0]))
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a valid JSON object: {exc}") from None
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE or a JSON object, got {item!r}")
        out[name] = _value(raw)
    return out


def _predict(args: argparse.Namespace, settings: Settings) -> int:
    import grpc

    from grpc_api.client import ScoringClient

    try:
        features = parse_features(args.features)
    except ValueError as exc:  # orjson's errors are ValueErrors too
        raise PredictError(f"features: {exc}") from None
    with ScoringClient.from_settings(settings, timeout=args.timeout) as client:
        try:
            answer = client.predict(
                features, entity=args.entity, model=args.model, id=args.id, time=args.time
            )
        except grpc.RpcError as exc:
            raise PredictError(f"{exc.code().name}: {exc.details()}") from None
    if args.json:
        print(orjson.dumps(answer.__dict__).decode())
        return 0
    proba = ", ".join(f"{k}={v:.4f}" for k, v in answer.proba.items())
    print(
        f"{answer.model} v{answer.version} ({answer.arm}): {answer.prediction}"
        + (f"  [{proba}]" if proba else "")
    )
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``riverrun serve`` and ``riverrun predict``."""
    p = sub.add_parser("serve", help="the gRPC scoring server (champions from the registry)")
    add_flags(p, SERVE)
    p.set_defaults(handler=_serve)

    p = sub.add_parser("predict", help="score one event with a running gRPC server")
    p.add_argument(
        "features", nargs="+", metavar="FEATURES", help="NAME=VALUE items, or one JSON object"
    )
    p.add_argument("--model", default="", help="model name (default: the server's)")
    p.add_argument("--entity", default="", help="entity key (A/B arm, entity features)")
    p.add_argument("--id", default="", help="event id, for feedback later")
    p.add_argument("--time", type=float, default=0.0, help="event time, epoch s (default: now)")
    p.add_argument("--timeout", type=rate, default=10.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_flags(p, CLIENT)
    p.set_defaults(handler=_predict)
