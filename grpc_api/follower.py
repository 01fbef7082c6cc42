"""The server's link to the registry: load what each model's aliases point at, and follow
every announcement, off the request path.

A background thread subscribes to the registry channel, then reads every served model
(so no move made while it was not listening is missed), and again every
``sync_interval`` seconds in case an announcement was lost. An announcement of a model
makes it re-read that model at once: a changed alias is loaded (signature checked by the
registry), compiled into a scorer, and swapped in by replacing the model's record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis

from grpc_api.book import Loaded, Served
from models.ab import CHALLENGER, CHAMPION
from models.feature_store import FeatureStore
from models.features import FeatureSpec
from models.registry import CHANNEL, Registry, RegistryError, VersionInfo, announcement
from models.scorers import compile_scorer
from models.signing import SignatureError
from riverrun.metrics import REFUSED, SERVED_VERSION, SWAPS

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


class Follower:
    """Keeps ``served`` (model name to :class:`Served`) in step with the registry."""

    def __init__(
        self,
        registry: Registry,
        store_client: redis.Redis,
        *,
        models: Iterable[str] = (),
        sync_interval: float = 5.0,
    ) -> None:
        self.registry = registry
        self.store_client = store_client
        self.only = frozenset(models)
        self.sync_interval = sync_interval
        self.served: dict[str, Served] = {}
        self.ready = threading.Event()
        self._wanted = threading.Event()  # a request asked for a model not yet served
        self._refused: dict[tuple[str, int], tuple[Identity | None, str]] = {}  # by version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)

    def start(self) -> None:
        """Start following in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following (the models in memory stay); nothing to wait for if never started."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def serves(self, model: str) -> bool:
        """Whether this server is configured to serve ``model``."""
        return not self.only or model in self.only

    def exists(self, model: str) -> bool:
        """Whether the registry knows ``model`` (asks Redis: for error replies only)."""
        known = model in self.registry.models()
        if known:
            self._wanted.set()
        return known

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._follow()
            except redis.RedisError as exc:
                log.warning("registry unreachable, serving what is loaded: %s", exc)
            except Exception:  # whatever it was, keep following: never stop swapping
                log.exception("registry follower failed, serving what is loaded")
            else:
                backoff = 0.1
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _follow(self) -> None:
        pubsub = self.registry.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            next_sync = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_sync or self._wanted.is_set():
                    self._wanted.clear()
                    self.sync_all()
                    self.ready.set()
                    next_sync = time.monotonic() + self.sync_interval
                timeout = min(max(next_sync - time.monotonic(), 0.0), 0.2)
                message = pubsub.get_message(timeout=timeout)
                model = (announcement(message) or {}).get("model")
                if isinstance(model, str) and self.serves(model):
                    self.sync(model)
        finally:
            pubsub.close()

    def sync_all(self) -> None:
        """Re-read every served model."""
        names = self.only or frozenset(self.registry.models())
        for name in sorted(names | self.served.keys()):
            self.sync(name)

    def sync(self, name: str) -> None:
        """Re-read one model and swap what changed; a model whose registry entries this
        server cannot read keeps what is loaded, and keeps no other model from its turn."""
        try:
            self._sync(name)
        except redis.RedisError:
            raise  # a passing outage: the follower retries
        except Exception as exc:
            log.error("%s not re-read, serving what is loaded: %r", name, exc)

    def _sync(self, name: str) -> None:
        """Re-read one model's aliases, A/B split and feature spec; swap what changed."""
        aliases = self.registry.aliases(name)
        fraction = self.registry.ab_fraction(name)
        current = self.served.get(name)
        champion = self._version(name, CHAMPION, aliases.get(CHAMPION), current)
        # a challenger that serves nobody is not loaded: a big one would hold every request
        # up while it is unpickled, at each of its checkpoints
        wanted = aliases.get(CHALLENGER) if fraction > 0.0 else None
        challenger = self._version(name, CHALLENGER, wanted, current)
        store = current.store if current is not None and current.store else None
        store = store or FeatureStore(self.store_client, name)
        spec = store.read_spec() or FeatureSpec()
        ttl = store.read_ttl() if spec else 0.0
        refused = ""
        if champion is None and aliases.get(CHAMPION) is not None:
            version = aliases[CHAMPION]
            why = self._refused[(name, version)][1] if (name, version) in self._refused else "?"
            refused = f"v{version} was refused: {why}"
        record = Served(name, champion, challenger, fraction, spec, store, refused, ttl)
        if record != current:
            self.served[name] = record
        for role in (CHAMPION, CHALLENGER):  # once it serves: a failed read above swapped none
            _announce(name, role, getattr(current, role, None), getattr(record, role))

    def _version(
        self, name: str, role: str, version: int | None, current: Served | None
    ) -> Loaded | None:
        """The loaded version ``role`` points at: the one in memory if unchanged, else
        loaded now; the one in memory if the new one is refused."""
        before = getattr(current, role) if current is not None else None
        if version is None:
            return None
        try:
            stored: Identity | None = _identity(self.registry.info(name, version))
        except RegistryError:  # missing or unreadable: load_version refuses it below
            stored = None
        if before is not None and _identity(before.info) == stored:  # numbers recur after loss
            return before
        refused = self._refused.get((name, version))
        if refused is not None and refused[0] == stored:
            return before  # refused already, and said so
        try:
            info, model = self.registry.load_version(name, version)
            scorer = compile_scorer(model, info.task)
        except redis.RedisError:
            raise  # a passing outage: the follower retries, this version is not refused
        except Exception as exc:  # also a model whose code this server cannot import
            if isinstance(exc, SignatureError):
                REFUSED.labels(name).inc()
            self._refused[(name, version)] = (stored, str(exc))
            log.error(
                "%s %s v%s not loaded, keeping %s: %s",
                name,
                role,
                version,
                f"v{before.info.version}" if before else "nothing",
                exc,
            )
            return before
        return Loaded(info, scorer, role, time.time())


def _announce(name: str, role: str, before: Loaded | None, now: Loaded | None) -> None:
    """Count and log a swap of ``role`` from ``before`` to ``now``, and set the version gauge
    (or drop it: the role serves nothing now); nothing if the same version serves on."""
    if now is before:
        return
    if now is None:
        SERVED_VERSION.remove(name, role)
        return
    SWAPS.labels(name).inc()  # first: who sees the new version counts its swap
    SERVED_VERSION.labels(name, role).set(now.info.version)
    log.info("%s %s is now v%s (%s)", name, role, now.info.version, now.info.spec)


Identity = tuple[int, float, str]


def _identity(info: VersionInfo) -> Identity:
    """What tells one registered version from another: a number alone is reused when Redis
    restarts empty, so also when it was registered and the digest of its bytes."""
    return info.version, info.created_at, info.sha256
