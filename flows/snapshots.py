"""The learn flow's link to the registry: checkpoints written from a background thread,
and a watcher of registry announcements.

The flow pickles and signs snapshots on its own thread (the only consistent point) and
hands the bytes over; registering them, moving aliases and retrying while Redis is down
happen off the per-event path. Each alias the flow serves (``champion``, ``challenger``,
``challenger-2``, ...) is a lineage: every checkpoint becomes a version whose parent is
the previous one, and the alias moves to it by compare-and-set. The in-memory models are
never lost: a failed write is retried with backoff until a newer snapshot replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from models.ab import CHAMPION
from models.registry import (
    CHANNEL,
    AliasMove,
    Conflict,
    Registry,
    RegistryError,
    VersionInfo,
    announcement,
)
from riverrun.metrics import SNAPSHOT_FAILURES, SNAPSHOT_LAST

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
RESUME_SCAN = 10_000  # audit entries read to find a resumed flow's own later moves


@dataclass(frozen=True)
class Lineage:
    """Where a resumed flow's lineage of an alias goes on (``head``), and what the flow's
    own later moves did that the resume undoes: ``promotions`` of the champion, leaving the
    alias at ``now`` (``undone`` is false when there is nothing to put back)."""

    head: int
    undone: bool = False
    now: int | None = None
    promotions: int = 0


def own_lineage(moves: list[AliasMove], alias: str, version: int, actor: str) -> Lineage:
    """``alias``'s lineage after ``version`` in ``moves`` (the audit, oldest first), if only
    ``actor`` moved it since: its newest checkpoint while on that lineage, and what to undo
    if the flow's own promotions (or demotions) left the alias elsewhere. Put-backs of
    earlier restarts bring it back onto the lineage (a flow can crash again before its
    next snapshot).

    >>> def move(to, action="checkpoint", actor="flow"):
    ...     return AliasMove("", "champion", None, to, action, actor, "", {}, 0.0)
    >>> own_lineage([move(1), move(2), move(3)], "champion", 1, "flow")
    Lineage(head=3, undone=False, now=None, promotions=0)
    >>> own_lineage([move(1), move(2), move(7, "promote"), move(8)], "champion", 1, "flow")
    Lineage(head=2, undone=True, now=8, promotions=1)
    >>> own_lineage([move(1), move(2), move(7, "promote", "ops")], "champion", 1, "flow")
    Lineage(head=1, undone=False, now=None, promotions=0)
    >>> put_back = [move(1), move(2), move(7, "promote"), move(8), move(2, "rollback")]
    >>> own_lineage(put_back, "champion", 1, "flow")
    Lineage(head=2, undone=False, now=None, promotions=0)
    >>> own_lineage([*put_back, move(3), move(9, "promote"), move(10)], "champion", 1, "flow")
    Lineage(head=3, undone=True, now=10, promotions=1)
    """
    since: list[AliasMove] = []
    for move in reversed(moves):
        if move.alias != alias:
            continue
        if move.to_version == version:
            break
        if move.actor != actor:
            return Lineage(version)  # someone else's move: the flow adopts what is there
        since.append(move)
    else:
        return Lineage(version)  # the move to ``version`` is older than the audit read
    head, off, promotions = version, False, 0
    for move in reversed(since):
        if move.action == "checkpoint":
            head = head if off else move.to_version or head  # a checkpoint names a version
            continue
        promotions += {"promote": 1, "rollback": -1}.get(move.action, 0)
        off = move.to_version != head
    if not off:
        return Lineage(head)
    return Lineage(head, undone=True, now=since[0].to_version, promotions=max(promotions, 0))


def is_shadowed(alias: str) -> bool:
    """Whether the learn flow runs the model under ``alias``: the champion and challengers."""
    return alias == CHAMPION or alias.startswith("challenger")


@dataclass
class Checkpoint:
    """A signed snapshot of the model under ``alias`` and what the registry should record."""

    alias: str
    signed: bytes
    spec: str
    task: str
    metrics: dict[str, float]
    events_seen: int
    positions: dict[str, int]
    params: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    features: frozenset[str] | None = None


class SnapshotWriter:
    """Registers checkpoints in a background thread; per alias, the newest waiting one wins."""

    def __init__(self, registry: Registry, model: str, actor: str) -> None:
        self.registry = registry
        self.model = model
        self.actor = actor
        self.failures = 0
        self._heads: dict[str, int] = {}
        self._conflicts: dict[str, int | None] = {}
        self._generation: dict[str, int] = {}
        self._jobs: dict[str, Checkpoint] = {}
        self._busy = False
        self._stopping = False
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Checkpoint) -> None:
        """Queue ``checkpoint``, replacing one of the same alias that is still waiting."""
        with self._lock:
            self._jobs[checkpoint.alias] = checkpoint
            self._lock.notify_all()

    def head(self, alias: str) -> int | None:
        """The newest version of ``alias``'s lineage that this writer knows of."""
        with self._lock:
            return self._heads.get(alias)

    def rebase(self, alias: str, version: int | None) -> None:
        """Continue ``alias`` from ``version`` (``None``: forget it); drop its waiting job."""
        with self._lock:
            self._jobs.pop(alias, None)
            self._generation[alias] = self._generation.get(alias, 0) + 1
            if version is None:
                self._heads.pop(alias, None)
            else:
                self._heads[alias] = version

    def take_conflicts(self) -> dict[str, int | None]:
        """Aliases someone else moved while we wrote, with where they point now."""
        with self._lock:
            conflicts, self._conflicts = self._conflicts, {}
            return conflicts

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or being written; ``False`` if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def stop(self) -> None:
        """Stop the thread once the job in hand is done (queued ones are dropped)."""
        with self._lock:
            self._stopping = True
            self._jobs.clear()
            self._lock.notify_all()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._lock:
                while not self._jobs and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                alias = CHAMPION if CHAMPION in self._jobs else next(iter(self._jobs))
                job = self._jobs.pop(alias)
                parent, generation = self._heads.get(alias), self._generation.get(alias, 0)
                self._busy = True
            try:
                self._write(job, parent, generation)
                backoff = 0.1
            except redis.RedisError as exc:
                self.failures += 1
                SNAPSHOT_FAILURES.labels(self.model).inc()
                log.warning("snapshot not written (%d failures), retrying: %s", self.failures, exc)
                with self._lock:
                    if alias not in self._jobs and generation == self._generation.get(alias, 0):
                        self._jobs[alias] = job  # nothing newer: retry this one
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:  # never lose the writer: the next checkpoint comes soon
                self.failures += 1
                SNAPSHOT_FAILURES.labels(self.model).inc()
                log.exception("snapshot of %s not written", alias)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, job: Checkpoint, parent: int | None, generation: int) -> None:
        info = self.write_now(job, parent)
        try:
            first = parent is None
            self.registry.move_alias(
                self.model,
                job.alias,
                info.version,
                expected=parent,
                actor=self.actor,
                action=("promote" if job.alias == CHAMPION else "set") if first else "checkpoint",
                reason=f"first {job.alias} of this flow" if first else "periodic checkpoint",
                evidence={"events_seen": job.events_seen, **job.metrics},
            )
        except Conflict as exc:
            with self._lock:
                if generation == self._generation.get(job.alias, 0):
                    self._conflicts[job.alias] = exc.current
            log.warning(
                "%s of %s was moved elsewhere (now v%s)", job.alias, self.model, exc.current
            )
            return
        with self._lock:
            if generation == self._generation.get(job.alias, 0):
                self._heads[job.alias] = info.version
        if job.alias == CHAMPION:  # the age the stale alert reads: the served model's
            SNAPSHOT_LAST.labels(self.model).set(time.time())
        try:
            self.registry.prune(self.model)
        except (redis.RedisError, RegistryError) as exc:  # the checkpoint is in: the next
            log.warning("old versions of %s not pruned: %s", self.model, exc)  # prunes

    def write_now(self, job: Checkpoint, parent: int | None) -> VersionInfo:
        """Register ``job`` as a new version with ``parent``, on the caller's thread."""
        return self.registry.register(
            self.model,
            None,
            spec=job.spec,
            task=job.task,
            metrics=job.metrics,
            events_seen=job.events_seen,
            positions=job.positions,
            parent=parent,
            tags=job.tags,
            params=job.params,
            signed=job.signed,
            features=job.features,
        )


class RegistryWatcher:
    """Listens to registry announcements and raises a flag when this model's aliases or
    A/B split change (other than by checkpoints)."""

    def __init__(self, client: redis.Redis, model: str) -> None:
        self.client = client
        self.model = model
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.1
            except redis.RedisError:
                pass
            except Exception:  # never stop following the registry
                log.exception("registry watcher of %s failed, listening again", self.model)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _listen(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            self.changed.set()  # moves made while we were not listening
            while not self._stop.is_set():
                move = announcement(pubsub.get_message(timeout=0.5)) or {}
                if move.get("model") == self.model and move.get("action") != "checkpoint":
                    self.changed.set()
        finally:
            pubsub.close()


class RegistryLink:
    """The registry as the learn step sees it: a writer of checkpoints, a watcher of
    changes made elsewhere, and the cadence of checkpoints."""

    def __init__(
        self, registry: Registry, model: str, *, every_labelled: int, every_seconds: float
    ) -> None:
        self.registry = registry
        self.model = model
        self.actor = f"learn-flow:{model}"
        self.every_labelled = every_labelled
        self.every_seconds = every_seconds
        self.writer = SnapshotWriter(registry, model, self.actor)
        self.watcher = RegistryWatcher(registry.client, model)
        self._next_at = time.monotonic() + every_seconds
        self._next_labelled = every_labelled

    def load_shadowed(
        self, started: dict[str, int] | None = None
    ) -> dict[str, tuple[VersionInfo, Any]]:
        """The champion and challengers the registry holds for this model, loaded; with
        ``started`` (``{alias: version}`` a restarted run began with), those versions.

        Empty if Redis cannot be reached (the flow then starts from its settings and
        registers later). A champion whose signature fails raises
        :class:`~models.signing.SignatureError`; such a challenger is skipped.
        """
        if started and (begun := self._load_started(started)) is not None:
            return begun
        try:
            aliases = self.registry.aliases(self.model)
        except redis.RedisError as exc:
            log.warning("registry unreachable at start, starting from the settings: %s", exc)
            return {}
        return {
            alias: loaded
            for alias in sorted(aliases, key=lambda a: a != CHAMPION)
            if is_shadowed(alias) and (loaded := self.load(alias, aliases[alias])) is not None
        }

    def _load_started(self, started: dict[str, int]) -> dict[str, tuple[VersionInfo, Any]] | None:
        """The versions a restarted run began with, or ``None`` if one cannot be loaded."""
        try:
            return {
                alias: self.registry.load_version(self.model, started[alias])
                for alias in sorted(started, key=lambda a: a != CHAMPION)
            }
        except Exception as exc:  # pruned since, Redis away, refused: the current ones, then
            log.warning(
                "cannot start %s again from the versions its run began with (%s): starting "
                "from the registry's current models, which learn the events read again twice",
                self.model,
                exc,
            )
            return None

    def load(self, alias: str, version: int) -> tuple[VersionInfo, Any] | None:
        """``(info, model)`` of a version; a bad challenger is logged and skipped."""
        try:
            return self.registry.load_version(self.model, version)
        except Exception as exc:
            if alias == CHAMPION:
                raise
            log.error(
                "cannot load %s v%s of %s, not shadowing it: %s", alias, version, self.model, exc
            )
            return None

    def resumed_heads(self, versions: dict[str, int]) -> dict[str, int]:
        """Where each alias's lineage goes on when the flow resumes from state that knew
        ``versions`` (``{alias: version}``); the audit stream is read once for all of them.

        A flow that crashed after its last Bytewax snapshot may have moved its aliases since.
        Its checkpoints stay in the lineage, which goes on from the newest of them (the
        replay learns the same events again). Its own promotions are put back, so that the
        replay decides them again: adopting the promoted model would feed it again events it
        had learned. Someone else's move since a version leaves it, for the flow to adopt.
        """
        try:
            moves = self.registry.history(self.model, count=RESUME_SCAN) if versions else []
        except redis.RedisError:
            return dict(versions)
        heads = {}
        for alias, version in versions.items():
            lineage = own_lineage(moves, alias, version, self.actor)
            if lineage.undone:
                self._put_back(alias, lineage)
            heads[alias] = lineage.head
        return heads

    def _put_back(self, alias: str, lineage: Lineage) -> None:
        """Move ``alias`` back from the flow's own promotions or demotions to its lineage:
        the champion by one rollback per promotion (the rollback list stays right)."""
        reason = (
            "the learn flow resumed from state saved before this move: its replay decides again"
        )
        now = lineage.now
        try:
            if alias == CHAMPION:
                for _ in range(lineage.promotions):
                    back = self.registry.rollback(
                        self.model, actor=self.actor, reason=reason, expected=now
                    )
                    now = back.to_version
            if now != lineage.head:
                self.registry.move_alias(
                    self.model,
                    alias,
                    lineage.head,
                    expected=now,
                    actor=self.actor,
                    reason=reason,
                    action="set",
                )
        except (redis.RedisError, RegistryError) as exc:
            log.error(
                "cannot put %s of %s back to v%s after the restart (%s): the flow adopts what "
                "the registry holds, which learns the events it replays again",
                alias,
                self.model,
                lineage.head,
                exc,
            )

    def due(self, labelled: int) -> bool:
        """Whether checkpoints are due after ``labelled`` labelled events: by count, or by
        time if the models learned since the last ones (an idle flow writes no copies)."""
        if labelled >= self._next_labelled:
            return True
        submitted_at = self._next_labelled - self.every_labelled  # the last ones' count
        return labelled > submitted_at and time.monotonic() >= self._next_at

    def submit(self, checkpoints: list[Checkpoint], labelled: int) -> None:
        """Hand checkpoints to the writer and schedule the next ones."""
        for checkpoint in checkpoints:
            self.writer.submit(checkpoint)
        self._next_at = time.monotonic() + self.every_seconds
        self._next_labelled = labelled + self.every_labelled

    def changed(self) -> bool:
        """Whether something was moved elsewhere since the last call (clears the signal)."""
        if self.watcher.changed.is_set():
            self.watcher.changed.clear()
            return True
        return False

    def final(self, timeout: float = 60.0) -> bool:
        """Wait for the queued checkpoints to be written."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Stop the writer and the watcher threads."""
        self.writer.stop()
        self.watcher.stop()
