"""Helpers of the gRPC tests: trained models in the registry, and a server on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import REGISTRY

from grpc_api.client import ScoringClient
from grpc_api.server import ScoringServer
from models.datasets import open_stream
from models.registry import Registry
from models.specs import build_model
from riverrun.settings import Settings


def registry(settings: Settings) -> Registry:
    """The registry the settings name."""
    return Registry.connect(settings.redis_url, settings.registry_key)


def trained(
    spec: str = "logreg", dataset: str = "phishing", events: int = 300, seed: int = 1
) -> tuple[Any, list[dict[str, float]]]:
    """A model that learned ``events`` events of ``dataset``, and those events' features."""
    stream = open_stream(dataset, seed=seed, events=events)
    model = build_model(spec, stream.task, seed)
    rows = []
    for x, y in stream.samples:
        model.learn_one(x, y)
        rows.append(x)
    return model, rows


def publish(
    settings: Settings,
    model: Any,
    *,
    alias: str = "champion",
    spec: str = "logreg",
    task: str = "binary",
    name: str | None = None,
) -> int:
    """Register ``model`` and point ``alias`` at it; returns the version."""
    reg = registry(settings)
    name = name or settings.model_name
    info = reg.register(name, model, spec=spec, task=task)
    reg.move_alias(name, alias, info.version, actor="test", reason="test")
    return info.version


@contextlib.contextmanager
def running(
    settings: Settings, *, models: Sequence[str] = (), follow_all: bool = False
) -> Iterator[tuple[ScoringServer, ScoringClient]]:
    """A started server on a free loopback port, and a client of it over a real channel.

    The session's Redis holds every earlier test's models (some tampered with on purpose),
    so the server serves only this test's own: the settings' ``serve_models`` if they name
    any, else ``models``, else the settings' model. ``follow_all`` serves every model of
    the registry, as a server with ``RIVERRUN_SERVE_MODELS`` unset does: for the answers
    that only such a server gives (``unknown model``), or on a Redis of the test's own.
    """
    overrides: dict[str, object] = {"serve_port": 0, "serve_metrics_port": 0}
    if follow_all:
        overrides["serve_models"] = ()
    elif not settings.serve_models:
        overrides["serve_models"] = tuple(models) or (settings.model_name,)
    server = ScoringServer(settings.override(overrides))
    with server, ScoringClient(server.target) as client:
        yield server, client


def requests_counted(rpc: str, code: str) -> float:
    """How many ``rpc`` requests ended with ``code`` in this process so far."""
    value = REGISTRY.get_sample_value("riverrun_grpc_requests_total", {"rpc": rpc, "code": code})
    return value or 0.0


def answer_or_none(client: ScoringClient, x: dict[str, float]) -> Any:
    """``client.predict(x)``, or ``None`` while the server refuses it: for waiting on a swap."""
    try:
        return client.predict(x)
    except grpc.RpcError:
        return None


def refusal(call: Any) -> grpc.RpcError:
    """The error ``call()`` raised (it must raise one)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call was answered, not refused")


def field_of(error: grpc.RpcError) -> str:
    """The ``riverrun-field`` trailing metadata of a refusal."""
    return dict(error.trailing_metadata() or ()).get("riverrun-field", "")  # type: ignore[attr-defined]
