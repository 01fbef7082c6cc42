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

from flows.kafka_io import consumer, end_offsets, ensure_topics
from models.registry import Registry, RegistryError
from models.status import read_status
from models.triggers import Action, TriggerPolicy, Triggers
from riverrun.metrics import PROMOTIONS, RETRAINS, ROLLBACKS
from riverrun.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "trigger"
LOCK_SECONDS = 3600


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
    )


def retrain_argv(action: Action, alias: str) -> list[str]:
    """The ``riverrun retrain`` command line that carries out a retrain action."""
    argv = [sys.executable, "-m", "riverrun.cli", "retrain", "--reason", action.reason]
    argv += ["--alias", alias]
    if action.positions:
        argv += ["--from-positions", _positions(action.positions)]
    elif action.since is not None:
        argv += ["--since", f"{time.time() - action.since:.3f}"]
    if action.until:
        argv += ["--to-positions", _positions(action.until)]
    return argv


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
        self.lock = f"riverrun:trigger:{self.model}:retrain"
        self.offsets = f"riverrun:trigger:{self.model}:drift-offsets"
        self._worker: threading.Thread | None = None

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
            if self._worker is not None:
                self._worker.join()

    def _drift_consumer(self) -> Consumer:
        """A consumer of the drift topic that resumes where this service left off.

        Positions live in Redis (no consumer group: a group join can stall for minutes on
        some brokers), so drift events raised while the service was down still count; the
        first start begins at the end of the topic.
        """
        s = self.settings
        saved = {int(p): int(o) for p, o in self.registry.client.hgetall(self.offsets).items()}
        ends = end_offsets(s.bootstrap_servers, s.topic_drift)
        c = consumer(s.bootstrap_servers)
        c.assign([TopicPartition(s.topic_drift, p, saved.get(p, end)) for p, end in ends.items()])
        return c

    def _drift_event(self, message: Message) -> None:
        event = orjson.loads(message.value())  # type: ignore[arg-type]
        if event.get("model") == self.model:
            self.triggers.drift_event(event)
        try:
            next_offset = (message.offset() or 0) + 1
            self.registry.client.hset(self.offsets, str(message.partition()), next_offset)
        except redis.RedisError as exc:
            log.warning("cannot save the drift topic position: %s", exc)

    def step(self, now: float) -> None:
        """Decide on the latest status and carry out the actions."""
        try:
            status = read_status(self.registry.client, self.model)
        except redis.RedisError as exc:
            log.warning("cannot read the learn flow's status: %s", exc)
            return
        if status is None:
            return
        for action in self.triggers.decide(status, now):
            self._audit(action, "decided")
            carry_out: Callable[[Action], None] = getattr(self, f"_{action.kind}")
            carry_out(action)

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
        client = self.registry.client
        if not client.set(self.lock, ACTOR, nx=True, ex=LOCK_SECONDS):
            self._audit(action, "skipped, a retrain of this model already runs")
            return
        self.triggers.retrain_started(time.time())
        self._worker = threading.Thread(target=self._run_retrain, args=(action,), daemon=True)
        self._worker.start()

    def _run_retrain(self, action: Action) -> None:
        env = {**os.environ, **self.settings.to_env()}
        try:
            argv = retrain_argv(action, self.settings.trigger_retrain_alias)
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            outcome = "registered" if done.returncode == 0 else "failed"
            detail = (done.stdout if done.returncode == 0 else done.stderr).strip()[-500:]
            RETRAINS.labels(self.model, outcome).inc()
            self._audit(action, f"retrain {outcome} ({detail})")
        finally:
            self.registry.client.delete(self.lock)
            self.triggers.retrain_ended(time.time())

    def _promote(self, action: Action) -> None:
        reg = self.registry
        try:
            champion = reg.alias(self.model, "champion")
            challenger = reg.alias(self.model, action.alias)
            if champion is None or challenger is None:
                return
            reg.move_alias(
                self.model,
                "champion",
                challenger,
                expected=champion,
                actor=ACTOR,
                reason=action.reason,
                evidence=action.evidence,
            )
            reg.move_alias(
                self.model,
                action.alias,
                champion,
                expected=challenger,
                actor=ACTOR,
                reason="the former champion, kept as a challenger",
                action="set",
            )
            PROMOTIONS.labels(self.model).inc()
        except (redis.RedisError, RegistryError) as exc:
            self._audit(action, f"promotion failed ({exc})")

    def _rollback(self, action: Action) -> None:
        try:
            self.registry.rollback(self.model, actor=ACTOR, reason=action.reason)
            ROLLBACKS.labels(self.model).inc()
        except (redis.RedisError, RegistryError) as exc:
            self._audit(action, f"rollback failed ({exc})")
