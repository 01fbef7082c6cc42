"""``riverrun trigger``: reads drift events and the learn flow's status, applies the trigger
policies, and carries out what they decide: full retrains (one at a time, each in its own
``riverrun retrain`` process), promotions and rollbacks. Every decision and its outcome
goes to the registry's audit stream with its reason."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis
from confluent_kafka import Consumer, Message, TopicPartition

from flows.kafka_io import consumer, ensure_topics, offsets_at
from flows.retrain_lock import RetrainLock, retrain_lock
from models.registry import Registry, RegistryError
from models.status import UnreadableStatus, read_status
from models.triggers import (
    DRIFT_TRIES,
    Action,
    BadDriftEvent,
    TriggerPolicy,
    Triggers,
    check_drift_event,
)
from riverrun.deathsig import guarded
from riverrun.metrics import RETRAINS
from riverrun.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "trigger"
RETRAIN_TIMEOUT = 3000.0
STOP_CHECK = 0.5  # seconds between looks at a stop request while a retrain runs


def trigger_policy(settings: Settings) -> TriggerPolicy:
    """The trigger policies of the settings."""
    return TriggerPolicy(
        on_drift=settings.trigger_on_drift,
        drift_wait=settings.trigger_drift_wait,
        slump_action=settings.trigger_slump_action,
        slump_metric=settings.trigger_slump_metric,
        slump_threshold=settings.trigger_slump_threshold,
        slump_for=settings.trigger_slump_for,
        fresh_every=settings.trigger_fresh_every,
        schedule_every=settings.trigger_schedule_every,
        cooldown=settings.trigger_cooldown,
        lookback=settings.trigger_lookback,
        alpha=settings.promote_alpha,
    )


def _run_until(
    argv: list[str],
    env: dict[str, str],
    stop: threading.Event,
    timeout: float,
    tick: Callable[[], None],
) -> subprocess.CompletedProcess[str] | str | None:
    """Run ``argv`` to its end, or stop it once ``stop`` is set (``None``) or it has run
    ``timeout`` seconds (saying so), calling ``tick`` meanwhile: a stopped service leaves no
    retrain behind, nor its lock held. The retrain gets SIGTERM if the service dies."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        guarded(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=STOP_CHECK)
                return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                if stop.is_set() or time.monotonic() > deadline:
                    break
                tick()
        child.terminate()
        try:
            child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
    return None if stop.is_set() else f"still running after {timeout:.0f} s: stopped"


def _next_try(again: bool) -> str:
    """What comes of a retrain that failed or could not start, for its audit entry."""
    return "next try after the cool-down" if again else f"given up after {DRIFT_TRIES} tries"


def retrain_argv(action: Action, alias: str, lock_token: str) -> list[str]:
    """The ``riverrun retrain`` command line that carries out a retrain action, under the
    lock held with ``lock_token``."""
    argv = [sys.executable, "-m", "riverrun.cli", "retrain", "--reason", action.reason]
    argv += ["--alias", alias, "--lock-token", lock_token, "--quiet"]
    if action.positions:
        argv += ["--from-positions", _positions(action.positions)]
    elif action.since is not None:
        argv += ["--since", f"{max(0.0, time.time() - action.since):.3f}"]  # 0: from the start
    if action.until:
        argv += ["--to-positions", _positions(action.until)]
    return argv


def _key(model: str, what: str) -> str:
    """The trigger service's Redis keys for ``model``, all under one prefix."""
    return f"riverrun:trigger:{model}:{what}"


def decided_key(model: str) -> str:
    """The Redis key of the labelled count of the last status the triggers acted on."""
    return _key(model, "decided")


def caught_up(client: redis.Redis, model: str, labelled: int) -> bool:
    """Whether the triggers of ``model`` have acted on the flow's status at ``labelled``
    labelled events (or later) and no retrain they started still runs: nothing more will
    come of the stream so far."""
    decided, running = client.mget(decided_key(model), retrain_lock(model))
    return decided is not None and int(decided) >= labelled and running is None


def _positions(positions: dict[str, int]) -> str:
    return ",".join(f"{where}={offset}" for where, offset in positions.items())


@dataclass
class TriggerService:
    """The loop of ``riverrun trigger`` for one model."""

    settings: Settings
    stop: threading.Event

    def __post_init__(self) -> None:
        s = self.settings
        self.model = s.model_name
        self.registry = Registry.connect(s.redis_url, s.registry_key)
        self.triggers = Triggers(trigger_policy(s), started=time.time())
        self.offsets = _key(self.model, "drift-offsets")  # next drift offset per partition
        self.state_key = _key(self.model, "state")  # what the policies noted: see _save_state
        self._worker: threading.Thread | None = None
        self._saved = b""
        self._load_state()

    def _load_state(self) -> None:
        """Take up what the policies had noted when the service last stopped: an armed
        drift (whose message is read already), the clocks of the cool-down and schedule."""
        try:
            raw = self.registry.client.get(self.state_key)
            if raw is not None:
                self.triggers.restore(orjson.loads(raw))
                self._saved = raw
        except redis.RedisError as exc:
            log.warning("cannot read the triggers' saved state, starting afresh: %s", exc)
        except (ValueError, AttributeError) as exc:  # not JSON, a bad field, not an object
            log.warning("ignoring the triggers' saved state %s: %s", self.state_key, exc)

    def _save_state(self) -> None:
        """Keep what the policies noted in Redis, if it changed, so that a restart of the
        service loses no armed drift and keeps its clocks."""
        state = orjson.dumps(self.triggers.state())
        if state == self._saved:
            return
        try:
            self.registry.client.set(self.state_key, state)
            self._saved = state
        except redis.RedisError as exc:
            log.warning("cannot save the triggers' state: %s", exc)

    def run(self, poll: float = 0.5) -> None:
        """Run until ``stop`` is set."""
        s = self.settings
        ensure_topics(s.bootstrap_servers, [s.topic_drift], s.partitions)
        drift = self._drift_consumer()
        try:
            while not self.stop.is_set():
                for message in drift.consume(100, poll):
                    if message.error() is None and message.value():
                        self._drift_event(message)
                self.step(time.time())
        finally:
            drift.close()
            self.stop.set()  # also when the loop failed: a running retrain stops with it
            if self._worker is not None:
                self._worker.join()
                self._save_state()  # its drift, armed again for the next start

    def _drift_consumer(self) -> Consumer:
        """A consumer of the drift topic that resumes where this service left off.

        Positions live in Redis (no consumer group: a group join can stall for minutes on
        some brokers), so drift events raised while the service was down still count; the
        first start reads the drift events of the last ``trigger_lookback`` seconds.
        """
        s = self.settings
        saved = {int(p): int(o) for p, o in self.registry.client.hgetall(self.offsets).items()}
        recent = offsets_at(s.bootstrap_servers, s.topic_drift, int(self._oldest() * 1000))
        c = consumer(s.bootstrap_servers)
        c.assign([TopicPartition(s.topic_drift, p, saved.get(p, at)) for p, at in recent.items()])
        return c

    def _oldest(self) -> float:
        """Drift events detected before this (epoch seconds) are too old to act on."""
        return time.time() - self.settings.trigger_lookback

    def _drift_event(self, message: Message) -> None:
        """Hand one drift-topic message to the policies if it is about this model and
        recent; skip (and log) one they cannot read. Its position is saved either way."""
        try:
            event = check_drift_event(orjson.loads(message.value()))  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, BadDriftEvent) as exc:
            where = f"{message.topic()}-{message.partition()} offset {message.offset()}"
            log.warning("skipped the drift-topic message at %s: %s", where, exc)
        else:
            if event.get("model") == self.model and event.get("detected_at", 0) >= self._oldest():
                self.triggers.drift_event(event)
                self._save_state()  # before the offset: a drift read is never lost
        try:
            next_offset = (message.offset() or 0) + 1
            self.registry.client.hset(self.offsets, str(message.partition()), next_offset)
        except redis.RedisError as exc:
            log.warning("cannot save the drift topic position: %s", exc)

    def step(self, now: float) -> None:
        """Decide on the latest status and carry out the actions."""
        try:
            status = read_status(self.registry.client, self.model)
        except (redis.RedisError, UnreadableStatus) as exc:
            log.warning("cannot read the learn flow's status: %s", exc)
            return
        if status is None:
            return
        for action in self.triggers.decide(status, now):
            self._audit(action, "decided")
            carry_out: Callable[[Action], None] = getattr(self, f"_{action.kind}")
            carry_out(action)
        self._save_state()
        try:  # a retrain decided above holds its lock by now: see caught_up
            self.registry.client.set(decided_key(self.model), status["labelled"])
        except redis.RedisError as exc:
            log.warning("cannot record the status the triggers acted on: %s", exc)

    def _slumped_champion(self, action: Action) -> int | None:
        """The champion's version now, if it is the model whose slump was seen (the status
        is a moment old; the flow's checkpoints move the alias to newer snapshots of it),
        else ``None``: a champion promoted or rolled back since is not the one that slumped."""
        seen = action.evidence.get("champion_version")
        if seen is None:
            return self.registry.alias(self.model, "champion")
        return self.registry.same_model(self.model, "champion", seen)

    def _audit(self, action: Action, outcome: str) -> None:
        try:
            self.registry.audit(
                self.model,
                f"trigger-{action.kind}",
                ACTOR,
                f"{outcome}: {action.reason}",
                {**action.evidence, "positions": action.positions, "since": action.since},
            )
        except redis.RedisError as exc:
            log.warning("cannot audit %s: %s", action.kind, exc)

    def _retrain(self, action: Action) -> None:
        lock = RetrainLock(self.registry.client, self.model)
        try:
            locked = lock.take()
        except redis.RedisError as exc:
            locked, why = False, f"skipped, Redis is unreachable ({exc})"
        else:
            why = "skipped, a retrain of this model already runs"
        if not locked:
            self._audit(action, f"{why}; {_next_try(self.triggers.retry(action, time.time()))}")
            return
        self.triggers.retrain_started(time.time())
        self._worker = threading.Thread(target=self._run_retrain, args=(action, lock), daemon=True)
        self._worker.start()

    def _run_retrain(self, action: Action, lock: RetrainLock) -> None:
        try:
            self._retrain_and_audit(action, lock)
        finally:  # whatever happened, the next retrain may start
            self.triggers.running = False
            lock.release()

    def _retrain_and_audit(self, action: Action, lock: RetrainLock) -> None:
        env = {**os.environ, **self.settings.to_env()}
        argv = retrain_argv(action, self.settings.trigger_retrain_alias, lock.token)
        try:
            done = _run_until(argv, env, self.stop, RETRAIN_TIMEOUT, lock.keep)
        except (OSError, ValueError) as exc:  # it could not start, or wrote no text
            done = f"cannot run it: {exc}"
        if done is None:  # stopped with the service: due again at its next start, no try spent
            self.triggers.retrain_ended(time.time(), action, tried=False)
            self._audit(action, "retrain stopped with the trigger service; due again at its start")
            return
        if isinstance(done, str):
            outcome, detail = "failed", done
        else:
            outcome = "registered" if done.returncode == 0 else "failed"
            detail = (done.stdout if done.returncode == 0 else done.stderr).strip()[-500:]
        failed = outcome == "failed"  # a failed retrain is due again after the cool-down
        again = self.triggers.retrain_ended(time.time(), action if failed else None)
        RETRAINS.labels(self.model, outcome).inc()
        note = f"retrain {outcome} ({detail})"
        self._audit(action, f"{note}; {_next_try(again)}" if failed else note)

    def _promote(self, action: Action) -> None:
        reg = self.registry
        try:
            champion = self._slumped_champion(action)
            seen = action.evidence.get("challenger_version")  # the one the contest tested
            challenger = (
                reg.alias(self.model, action.alias)
                if seen is None
                else reg.same_model(self.model, action.alias, seen)
            )
            if champion is None or challenger is None:
                self._audit(action, "not done: the champion or challenger moved since the slump")
                return
            reg.check_champion(self.model, challenger, champion)
            reg.move_alias(
                self.model,
                "champion",
                challenger,
                expected=champion,
                actor=ACTOR,
                reason=action.reason,
                evidence=action.evidence,
            )
        except (redis.RedisError, RegistryError) as exc:
            self._audit(action, f"promotion failed ({exc})")
            return
        try:  # the promotion is done: the old champion is only kept, if nobody moved the alias
            reg.move_alias(
                self.model,
                action.alias,
                champion,
                expected=challenger,
                actor=ACTOR,
                reason="the former champion, kept as a challenger",
                action="set",
            )
        except (redis.RedisError, RegistryError) as exc:
            self._audit(
                action, f"promoted; {action.alias} not moved to the former champion ({exc})"
            )

    def _rollback(self, action: Action) -> None:
        try:
            champion = self._slumped_champion(action)
            if champion is None:
                self._audit(action, "not done: the champion moved since the slump")
                return
            self.registry.check_rollback(self.model, champion)
            self.registry.rollback(self.model, actor=ACTOR, reason=action.reason, expected=champion)
        except (redis.RedisError, RegistryError) as exc:
            self._audit(action, f"rollback failed ({exc})")
