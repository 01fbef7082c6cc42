"""The learn flow's link to the registry: champion checkpoints written from a background
thread, and a watcher of registry announcements.

The flow pickles and signs a snapshot on its own thread (the only consistent point) and
hands the bytes over; registering them, moving the alias and retrying while Redis is down
happen off the per-event path. The in-memory model is never lost: a failed write is
retried with backoff until a newer snapshot replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from models.registry import CHANNEL, Conflict, Registry
from riverrun.metrics import SNAPSHOT_FAILURES, SNAPSHOT_LAST

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


@dataclass
class Checkpoint:
    """A signed snapshot of the champion and what the registry should record about it."""

    signed: bytes
    spec: str
    task: str
    metrics: dict[str, float]
    events_seen: int
    positions: dict[str, int]
    params: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class WriterState:
    """What the writer thread reports back to the flow."""

    version: int | None = None  # the champion version this flow's lineage is at
    conflict: int | None = None  # the version someone else moved the champion to
    failures: int = 0
    written: int = 0


class SnapshotWriter:
    """Registers checkpoints in a background thread; the newest waiting one wins.

    Each checkpoint becomes a version whose parent is the previous one this writer wrote
    (or ``start``), and the champion alias moves to it by compare-and-set. ``rebase``
    restarts the lineage from a champion chosen elsewhere.
    """

    def __init__(self, registry: Registry, model: str, actor: str, start: int | None) -> None:
        self.registry = registry
        self.model = model
        self.actor = actor
        self.state = WriterState(version=start)
        self._lock = threading.Condition()
        self._job: Checkpoint | None = None
        self._busy = False
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Checkpoint) -> None:
        """Queue ``checkpoint``, replacing one that is still waiting."""
        with self._lock:
            self._job = checkpoint
            self._lock.notify_all()

    def rebase(self, version: int) -> None:
        """Continue the lineage from ``version``; drop checkpoints of the previous champion."""
        with self._lock:
            self._job = None
            self._generation += 1
            self.state.version = version

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or being written; ``False`` if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._job is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._lock:
                while self._job is None:
                    self._lock.wait()
                job, self._job, self._busy = self._job, None, True
                parent, generation = self.state.version, self._generation
            try:
                self._write(job, parent, generation)
                backoff = 0.1
            except redis.RedisError as exc:
                self.state.failures += 1
                SNAPSHOT_FAILURES.labels(self.model).inc()
                log.warning("snapshot not written (%d failures), retrying: %s",
                            self.state.failures, exc)  # fmt: skip
                with self._lock:
                    if self._job is None and generation == self._generation:
                        self._job = job  # nothing newer: retry this one
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, job: Checkpoint, parent: int | None, generation: int) -> None:
        info = self.registry.register(
            self.model, None, spec=job.spec, task=job.task, metrics=job.metrics,
            events_seen=job.events_seen, positions=job.positions, parent=parent,
            tags=job.tags, params=job.params, signed=job.signed,
        )  # fmt: skip
        first = parent is None
        try:
            self.registry.move_alias(
                self.model, "champion", info.version,
                expected=parent, actor=self.actor,
                action="promote" if first else "checkpoint",
                reason="first model of this name" if first else "periodic checkpoint",
                evidence={"events_seen": job.events_seen, **job.metrics},
            )  # fmt: skip
        except Conflict as exc:
            with self._lock:
                if generation == self._generation:
                    self.state.conflict = exc.current
            log.warning("champion of %s was moved elsewhere (now v%s)", self.model, exc.current)
            return
        with self._lock:
            if generation == self._generation:
                self.state.version = info.version
                self.state.written += 1
        SNAPSHOT_LAST.labels(self.model).set(time.time())
        self.registry.prune(self.model)


class RegistryWatcher:
    """Listens to registry announcements and raises a flag when this model's aliases move."""

    def __init__(self, client: redis.Redis, model: str, actor: str) -> None:
        self.client = client
        self.model = model
        self.actor = actor
        self.changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.changed.set()  # moves made while we were not listening
                backoff = 0.1
                for message in pubsub.listen():
                    move = orjson.loads(message["data"])
                    if move.get("model") == self.model and move.get("action") != "checkpoint":
                        self.changed.set()
            except redis.RedisError:
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


class RegistryLink:
    """Everything the learn step does with the registry, behind three calls.

    ``load_champion`` finds the registry's champion at start, ``due``/``submit`` write
    checkpoints, ``moved_elsewhere``/``rebase`` follow a champion chosen by someone else,
    and ``final`` waits for the last checkpoint when the input ends.
    """

    def __init__(
        self,
        registry: Registry,
        model: str,
        *,
        every_labelled: int,
        every_seconds: float,
    ) -> None:
        self.registry = registry
        self.model = model
        self.actor = f"learn-flow:{model}"
        self.every_labelled = every_labelled
        self.every_seconds = every_seconds
        self.writer = SnapshotWriter(registry, model, self.actor, None)
        self.watcher = RegistryWatcher(registry.client, model, self.actor)
        self._next_at = time.monotonic() + every_seconds
        self._next_labelled = every_labelled
        self._submitted: int | None = None

    def load_champion(self) -> tuple[Any, Any] | None:
        """``(info, model)`` of the registry's champion, or ``None`` if there is none (or
        Redis cannot be reached: the flow then starts fresh and registers later).

        A champion whose signature fails raises :class:`~models.signing.SignatureError`.
        """
        try:
            return self.registry.load_alias(self.model, "champion")
        except redis.RedisError as exc:
            log.warning("registry unreachable at start, starting from the spec: %s", exc)
            return None

    def due(self, labelled: int) -> bool:
        """Whether a checkpoint is due after ``labelled`` labelled events."""
        return labelled >= self._next_labelled or time.monotonic() >= self._next_at

    def submit(self, checkpoint: Checkpoint, labelled: int) -> None:
        """Hand a checkpoint to the writer and schedule the next one."""
        self.writer.submit(checkpoint)
        self._next_at = time.monotonic() + self.every_seconds
        self._next_labelled = labelled + self.every_labelled

    def written_version(self) -> int | None:
        """The version of the champion's lineage the registry holds last."""
        return self.writer.state.version

    def rebase(self, version: int) -> None:
        """The champion is now ``version``, chosen elsewhere: continue its lineage."""
        self.writer.rebase(version)

    def moved_elsewhere(self, ours: int) -> int | None:
        """The champion version someone else set, if it is not ours; clears the signal."""
        conflict, self.writer.state.conflict = self.writer.state.conflict, None
        if conflict is not None:
            return conflict
        if not self.watcher.changed.is_set():
            return None
        self.watcher.changed.clear()
        try:
            current = self.registry.alias(self.model, "champion")
        except redis.RedisError:
            self.watcher.changed.set()  # try again later
            return None
        if current is None or current in (ours, self.writer.state.version):
            return None
        return current

    def final(self, timeout: float = 60.0) -> bool:
        """Wait for the last checkpoint to be written."""
        return self.writer.flush(timeout)
