"""Every Prometheus metric riverrun exports, in one place.

Each process serves its own ``/metrics`` (a Bytewax cluster: one port per process), so
counters are per process and add up with ``sum()`` in PromQL. Names follow Prometheus
conventions: ``riverrun_*_total`` counters, base units (``_seconds``, ``_bytes``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from models.ab import CHAMPION
from riverrun.settings import host_port

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    0.1,
    0.5,
    1.0,
)

# -- the learn flow ------------------------------------------------------------------------
EVENTS_IN = Counter("riverrun_events_in_total", "Messages read from Kafka", ["topic"])
PREDICTIONS = Counter(
    "riverrun_predictions_total", "Predictions made, served or shadow", ["model", "role"]
)
DEADLETTERS = Counter(
    "riverrun_deadletters_total", "Messages sent to the dead-letter topic", ["reason"]
)
LABELLED = Counter("riverrun_labelled_total", "Labelled events learned", ["model"])
PENDING = Gauge("riverrun_pending_predictions", "Predictions waiting for a label", ["model"])
EXPIRED = Counter(
    "riverrun_expired_predictions_total", "Predictions whose label never came", ["model"]
)
MODEL_METRIC = Gauge(  # by alias, not version: checkpoints move the version every few seconds
    "riverrun_model_metric",
    "Prequential metric of a model (window: cumulative or rolling), once it has scored one",
    ["model", "alias", "role", "spec", "metric", "window"],
)
MODEL_VERSION = Gauge(
    "riverrun_model_version",
    "Registry version of each model the flow runs",
    ["model", "alias", "role", "spec"],
)
PREDICT_SECONDS = Histogram(
    "riverrun_predict_seconds",
    "Time to predict one event (sampled)",
    ["model", "role"],
    buckets=LATENCY_BUCKETS,
)
LEARN_SECONDS = Histogram(
    "riverrun_learn_seconds",
    "Time to learn one event (sampled)",
    ["model", "role"],
    buckets=LATENCY_BUCKETS,
)
DRIFT_EVENTS = Counter("riverrun_drift_events_total", "Drift detected", ["model", "kind", "source"])
PROMOTIONS = Counter(  # by the learn flow: its own, and others' when it adopts them
    "riverrun_promotions_total", "Challengers promoted to champion", ["model"]
)
MODEL_ERRORS = Counter(
    "riverrun_model_errors_total",
    "Challengers taken out because their code failed",
    ["model", "alias"],
)
ROLLBACKS = Counter(  # by the learn flow, when it adopts a champion rolled back elsewhere
    "riverrun_rollbacks_total", "Champions rolled back", ["model"]
)
RETRAINS = Counter("riverrun_retrains_total", "Full retrains, by outcome", ["model", "outcome"])
SNAPSHOT_LAST = Gauge(
    "riverrun_snapshot_last_success_timestamp_seconds",
    "Unix time of the last champion checkpoint written to the registry",
    ["model"],
)
SNAPSHOT_FAILURES = Counter(
    "riverrun_snapshot_failures_total", "Checkpoint writes that failed", ["model"]
)
REFUSED = Counter(
    "riverrun_snapshots_refused_total", "Snapshots refused for a bad signature", ["model"]
)
FEATURE_STORE_FAILURES = Counter(
    "riverrun_feature_store_failures_total",
    "Writes of entity features to the online store that failed (retried later)",
    ["model"],
)
CONSUMER_LAG = Gauge(
    "riverrun_consumer_lag_messages",
    "Messages behind the end of a partition",
    ["topic", "partition"],
)

# -- the gRPC server -----------------------------------------------------------------------
GRPC_REQUESTS = Counter(
    "riverrun_grpc_requests_total", "gRPC requests by method and status code", ["rpc", "code"]
)
GRPC_SECONDS = Histogram(
    "riverrun_grpc_request_seconds", "gRPC request latency", ["rpc"], buckets=LATENCY_BUCKETS
)
SERVED_VERSION = Gauge(
    "riverrun_served_model_version", "Version a server answers with", ["model", "role"]
)
SWAPS = Counter("riverrun_model_swaps_total", "Models swapped in by a server", ["model"])


def start_learn_counters(model: str, aliases: Iterable[str]) -> None:
    """Export at 0 the counters of ``model`` that the alert rules watch for an increase and
    that the learn flow would otherwise create at their first increment: refused
    signatures, failed checkpoints, and per model (``aliases``) concept drift and, for
    challengers, errors. A series first scraped at 1 has no earlier sample for
    ``increase()``, and the rules (deploy/prometheus/alerts.yml) take a new series for news
    only from a target scraped 5 minutes before or a process started in the last 10; a
    series at 0 from the start lets ``increase()`` see every increment."""
    REFUSED.labels(model)
    SNAPSHOT_FAILURES.labels(model)
    for alias in aliases:
        DRIFT_EVENTS.labels(model, "concept", alias)
        if alias != CHAMPION:  # only challengers are taken out for errors
            MODEL_ERRORS.labels(model, alias)


class MetricsPortError(RuntimeError):
    """The /metrics port cannot be bound; the message names it."""


def serve_metrics(port: int, host: str = "127.0.0.1", setting: str = "metrics_port") -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (``port=0``: don't).

    ``setting`` names the settings field of the port, for the error message.
    """
    if port <= 0:
        return
    try:
        start_http_server(port, addr=host)
    except socket.gaierror as exc:  # the host, not the port
        raise MetricsPortError(
            f"cannot serve /metrics on {host_port(host, port)}: no such address ({exc.strerror}); "
            "choose another with RIVERRUN_METRICS_HOST"
        ) from None
    except OSError as exc:
        raise MetricsPortError(
            f"cannot serve /metrics on {host_port(host, port)} ({exc.strerror}); "
            f"choose another port with RIVERRUN_{setting.upper()} (0 turns metrics off)"
        ) from None
    log.info("metrics on http://%s/metrics", host_port(host, port))
