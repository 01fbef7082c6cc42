"""The scoring server: the service, standard health checking and reflection, TLS, metrics.

``riverrun serve`` runs :func:`serve`; tests and benchmarks start a :class:`ScoringServer`
on a free port. It binds to loopback unless told otherwise, and reports SERVING on the
health service once it has read the registry.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from types import FrameType

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_api.errors import ServeError, check_tls_pair, read_tls_file
from grpc_api.feedback import LabelPublisher
from grpc_api.follower import Follower
from grpc_api.proto import MAX_MESSAGE_BYTES, SERVICE
from grpc_api.service import ScoringService, add_to_server
from models.registry import Registry
from riverrun.metrics import serve_metrics
from riverrun.settings import Settings, host_port

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
STOP_CHECK = 0.1  # seconds between looks at a stop request while the start waits


class ScoringServer:
    """A running scoring server: the gRPC server, the registry follower and the publisher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        registry = Registry.connect(settings.redis_url, settings.registry_key)
        store_client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.follower = Follower(
            registry,
            store_client,
            models=settings.serve_models,
            sync_interval=settings.serve_sync_interval,
        )
        self.publisher = LabelPublisher(settings.bootstrap_servers, settings.topic_labels)
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(settings.serve_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
                # a client gone without closing its stream frees the stream's place (a ping
                # every minute, unanswered for 20 s), not hours later when TCP gives up
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
            ],
        )
        service = ScoringService(
            self.follower,
            self.publisher,
            default_model=settings.model_name,
            max_batch=settings.serve_max_batch,
            max_message_bytes=settings.max_message_bytes,
            waiting_calls=settings.serve_workers // 4,
        )
        add_to_server(service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self._bind()

    def _bind(self) -> int:
        s = self.settings
        address = host_port(s.serve_host, s.serve_port)
        credentials = None
        if s.serve_tls_cert:
            key = read_tls_file(s.serve_tls_key, "key")
            cert = read_tls_file(s.serve_tls_cert, "certificate")
            check_tls_pair(s.serve_tls_cert, s.serve_tls_key)
            credentials = grpc.ssl_server_credentials([(key, cert)])
        try:
            if credentials is not None:
                port = self.server.add_secure_port(address, credentials)
            else:
                port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc logs the cause itself
            port = 0
        if not port:
            raise ServeError(
                f"cannot listen on {address} (in use, or not an address of this machine); "
                "choose another with RIVERRUN_SERVE_HOST and RIVERRUN_SERVE_PORT"
            )
        return port

    @property
    def target(self) -> str:
        """``host:port`` a client dials."""
        return host_port(self.settings.serve_host, self.port)

    def start(
        self, ready_timeout: float = READY_TIMEOUT, stop: threading.Event | None = None
    ) -> ScoringServer:
        """Start serving; wait (up to ``ready_timeout``) until the registry has been read, or
        until ``stop`` is set (a Ctrl-C while an unreachable registry holds the start up)."""
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.follower.start()
        self.server.start()
        deadline = time.monotonic() + ready_timeout
        while not self.follower.ready.wait(STOP_CHECK):
            if stop is not None and stop.is_set():
                return self
            if time.monotonic() >= deadline:
                log.warning(
                    "registry not read within %.0f s; NOT_SERVING until it is", ready_timeout
                )
                threading.Thread(target=self._serve_when_ready, daemon=True).start()
                return self
        self._report_serving()
        return self

    def _serve_when_ready(self) -> None:
        self.follower.ready.wait()
        self._report_serving()

    def _report_serving(self) -> None:
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if not self.follower.only:
            return
        try:
            unknown = sorted(self.follower.only - set(self.follower.registry.models()))
        except redis.RedisError:
            return
        if unknown:  # a typo in RIVERRUN_SERVE_MODELS, or models not registered yet
            log.warning(
                "RIVERRUN_SERVE_MODELS names models the registry does not know (yet): %s; "
                "their requests are refused until they are registered",
                ", ".join(unknown),
            )

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, finish the requests in flight, stop following."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.follower.stop()
        self.publisher.close()

    def __enter__(self) -> ScoringServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def serve(settings: Settings, announce: Callable[[str], None] = log.info) -> int:
    """Run the server until SIGINT or SIGTERM, then stop gracefully; ``announce`` says where."""
    server = ScoringServer(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve_metrics(settings.serve_metrics_port, settings.metrics_host, "serve_metrics_port")
        server.start(stop=stop)
        if not stop.is_set():
            scheme = "TLS" if settings.serve_tls_cert else "plaintext"
            announce(f"serving riverrun.v1.Scoring on {server.target} ({scheme})")
            stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
