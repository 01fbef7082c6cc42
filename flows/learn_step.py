"""The ``learn`` step: the champion and its challengers predict every event and learn every
label (test-then-train), and the registry's champion is kept in step with the flow."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from bytewax.operators import StatefulBatchLogic

from flows.codec import dead_letter, encode
from flows.kafka_io import Out
from flows.snapshots import Checkpoint, RegistryLink
from flows.status import StatusReporter
from models.evaluation import Prequential, predicted_label
from models.learner import OnlineLearner, Slot
from models.registry import Registry, RegistryError, model_params
from models.schema import Event, InvalidInput, LabelMessage
from models.signing import SignatureError, check_key, dumps_signed
from models.specs import build_model
from riverrun.metrics import REFUSED
from riverrun.settings import Settings

log = logging.getLogger(__name__)

Record = Event | LabelMessage


@dataclass(slots=True)
class LearnOut:
    """What the learn step emits for one batch."""

    predictions: list[Out] = field(default_factory=list)
    dead: list[Out] = field(default_factory=list)


class LearnLogic(StatefulBatchLogic[list[Record], LearnOut, bytes]):
    """Runs the :class:`OnlineLearner` over batches, encodes what it returns, and keeps the
    registry's champion in step (checkpoints out, champions moved elsewhere in)."""

    def __init__(self, settings: Settings, learner: OnlineLearner, link: RegistryLink) -> None:
        self.settings = settings
        self.learner = learner
        self.link = link
        self.key = check_key(settings.registry_key)
        self.status = StatusReporter(settings)
        self.classify = learner.task != "regression"
        if learner.champion.version:
            link.rebase(learner.champion.version)
        else:  # a fresh model: register it before serving, so predictions name a version
            self._checkpoint()
            if link.final(timeout=5.0):
                learner.champion.version = link.written_version() or 0

    def on_batch(self, values: list[list[Record]]) -> tuple[list[LearnOut], bool]:
        learner = self.learner
        out = LearnOut()
        predictions, dead = out.predictions, out.dead
        champion = learner.champion
        name = self.settings.model_name
        classify = self.classify
        positions = learner.positions
        for records in values:
            for rec in records:
                if type(rec) is not Event:
                    rejected = learner.on_label(rec)  # type: ignore[arg-type]
                    if rejected is not None:
                        dead.append(
                            dead_letter(
                                rec.origin,
                                "duplicate_label",
                                f"a label for event {rec.id!r} already waits",
                            )
                        )
                    continue
                try:
                    preds = learner.on_event(rec)
                except InvalidInput as exc:
                    dead.append(dead_letter(rec.origin, exc.reason, str(exc)))
                    continue
                y_pred = preds[champion.uid]
                payload: dict[str, Any] = {
                    "id": rec.id,
                    "entity": rec.entity,
                    "time": rec.time,
                    "model": name,
                    "version": champion.version,
                    "spec": champion.spec,
                    "role": "champion",
                }
                if classify:
                    payload["prediction"] = predicted_label(y_pred)
                    payload["proba"] = y_pred
                else:
                    payload["prediction"] = y_pred
                predictions.append(Out(rec.entity.encode(), encode(payload)))
            if records:
                origin = records[-1].origin
                positions[f"{origin.topic}-{origin.partition}"] = origin.offset + 1
        for label in learner.expire():
            dead.append(_unknown_label(label))
        self._sync_registry()
        self.status.maybe_write(learner)
        return [out], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[LearnOut], bool]:
        self._sync_registry()
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=1)

    def on_eof(self) -> tuple[list[LearnOut], bool]:
        out = LearnOut(dead=[_unknown_label(label) for label in self.learner.drain_orphans()])
        self._checkpoint()
        if not self.link.final():
            log.warning("the last checkpoint could not be written before the input ended")
        self._sync_registry()
        self.status.maybe_write(self.learner, force=True)
        return [out], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return dumps_signed(self.learner, self.key)

    def _sync_registry(self) -> None:
        champion = self.learner.champion
        written = self.link.written_version()
        if written is not None:
            champion.version = written
        moved = self.link.moved_elsewhere(champion.version)
        if moved is not None:
            self._adopt(moved)
        elif self.link.due(self.learner.counts.labelled):
            self._checkpoint()

    def _checkpoint(self) -> None:
        learner, champion = self.learner, self.learner.champion
        self.link.submit(
            Checkpoint(
                signed=dumps_signed(champion.model, self.key),
                spec=champion.spec,
                task=learner.task,
                metrics=champion.metrics.report(),
                events_seen=champion.learned,
                positions=dict(learner.positions),
                params=model_params(champion.model),
            ),
            learner.counts.labelled,
        )

    def _adopt(self, version: int) -> None:
        """Serve the champion someone else chose (a rollback or a manual promotion)."""
        try:
            info = self.link.registry.info(self.settings.model_name, version)
            model = self.link.registry.load(self.settings.model_name, version)
        except (redis.RedisError, RegistryError, SignatureError) as exc:
            if isinstance(exc, SignatureError):
                REFUSED.labels(self.settings.model_name).inc()
            log.error("cannot adopt champion v%s, keeping v%s: %s",
                      version, self.learner.champion.version, exc)  # fmt: skip
            return
        slot = Slot(info.spec, model, Prequential(self.learner.task, self.settings.rolling_window),
                    version=version)  # fmt: skip
        self.learner.replace_champion(slot)
        self.link.rebase(version)
        log.warning("now serving %s v%s, moved by someone else", info.spec, version)


def _unknown_label(label: LabelMessage) -> Out:
    return dead_letter(
        label.origin,
        "unknown_event_id",
        f"no prediction waits for event {label.id!r} (never seen, or expired after label_ttl)",
    )


def new_learner(settings: Settings, link: RegistryLink) -> OnlineLearner:
    """A learner whose champion is the registry's, or a fresh model of the settings' spec."""
    task = settings.task
    window = settings.rolling_window
    found = link.load_champion()
    if found is not None:
        info, model = found
        if info.task != task:
            raise RegistryError(
                f"champion v{info.version} of {settings.model_name!r} does {info.task}, "
                f"but this flow's task is {task}"
            )
        champion = Slot(info.spec, model, Prequential(task, window), version=info.version,
                        learned=info.events_seen)  # fmt: skip
        log.info("continuing from the registry's champion %s v%s", info.spec, info.version)
    else:
        model = build_model(settings.model_spec, task, settings.seed)
        champion = Slot(settings.model_spec, model, Prequential(task, window))
    return OnlineLearner(
        task, [champion], label_ttl=settings.label_ttl, max_pending=settings.max_pending
    )


def registry_link(settings: Settings) -> RegistryLink:
    """The flow's link to the registry named by the settings."""
    registry = Registry.connect(
        settings.redis_url, settings.registry_key, keep=settings.registry_keep
    )
    return RegistryLink(
        registry,
        settings.model_name,
        every_labelled=settings.snapshot_every,
        every_seconds=settings.snapshot_interval,
    )
