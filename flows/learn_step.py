"""The ``learn`` step: the champion and its challengers predict every event and learn every
label (test-then-train); served predictions go to ``predictions``, the others to
``shadow-predictions``; the registry is kept in step between batches."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from flows.codec import dead_letter, encode
from flows.kafka_io import Out
from flows.offline import offline_store
from flows.registry_sync import RegistrySync
from flows.status import StatusReporter
from models.evaluation import predicted_label
from models.learner import ModelError, OnlineLearner, Slot
from models.schema import Event, InvalidInput, LabelMessage, Record
from models.signing import check_key, dumps_signed
from riverrun.metrics import DRIFT_EVENTS, start_learn_counters
from riverrun.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LearnOut:
    """What the learn step emits for one batch."""

    predictions: list[Out] = field(default_factory=list)
    shadow: list[Out] = field(default_factory=list)
    dead: list[Out] = field(default_factory=list)
    drift: list[Out] = field(default_factory=list)


class LearnLogic(StatefulBatchLogic[list[Record], LearnOut, bytes]):
    """Runs the :class:`OnlineLearner` over batches and encodes what it returns."""

    def __init__(self, settings: Settings, learner: OnlineLearner, sync: RegistrySync) -> None:
        self.settings = settings
        self.learner = learner
        self.sync = sync
        self.key = check_key(settings.registry_key)
        self.status = StatusReporter(settings, learner)
        self.classify = learner.task != "regression"
        self.offline = offline_store(settings, learner.task)
        learner.keep_rows = self.offline is not None  # also for a learner from recovery
        self.ended = False
        start_learn_counters(settings.model_name, [slot.alias for slot in learner.slots])
        sync.start(learner)  # may fail a first checkpoint: its counter is exported already

    def _describe(self, slot: Slot) -> bytes:
        """What every prediction of ``slot`` says about the model that made it, as the start
        of a JSON object that :meth:`_payload` completes."""
        model = {
            "model": self.settings.model_name,
            "alias": slot.alias,
            "version": slot.version,
            "spec": slot.spec,
            "role": slot.role,
        }
        return encode(model)[:-1] + b","  # encode writes one compact object, no newline

    def _payload(self, fields: dict[str, Any], model: bytes, y_pred: Any) -> bytes:
        """One prediction message: the ``model`` part and the event's ``fields``, into which
        this writes the prediction (the same dict serves every model of the event)."""
        if self.classify:
            fields["prediction"] = predicted_label(y_pred)
            fields["proba"] = y_pred
        else:
            fields["prediction"] = y_pred
        return model + encode(fields)[1:]

    def on_batch(self, values: list[list[Record]]) -> tuple[list[LearnOut], bool]:
        """Predict every event, learn every joined label, keep the registry in step."""
        learner = self.learner
        out = LearnOut()
        dead = out.dead
        positions, drift = learner.positions, learner.drift
        stamps: list[dict[str, int]] = []  # where each drift signal of the batch was raised
        described: dict[int, bytes] = {}  # versions change only at a promotion
        check_at = self.sync.next_check(learner)
        for batch in values:
            records = self._unlearned(batch) if batch else batch
            for rec in records:
                if type(rec) is Event:
                    self._predict(rec, out, described)
                else:
                    self._join(rec, dead)  # type: ignore[arg-type]
                if drift is not None and len(drift.signals) > len(stamps):
                    self._stamp(stamps, rec)
                if learner.counts.labelled >= check_at:  # at this event, however batched
                    positions[rec.origin.part] = rec.origin.offset + 1
                    self.sync.check_promotion(learner)
                    described.clear()
                    check_at = self.sync.next_check(learner)
            if records:
                origin = records[-1].origin
                positions[origin.part] = origin.offset + 1
        for label in learner.expire():
            dead.append(_unknown_label(label))
        out.drift = self._drift_events(stamps)
        if self.offline is not None:
            self.offline.take(learner.rows)
        self.sync.tick(learner)
        self.status.maybe_write(learner)
        return [out], StatefulBatchLogic.RETAIN

    def _join(self, label: LabelMessage, dead: list[Out]) -> None:
        """Give ``label`` to the learner, or dead-letter it if the learner refuses it."""
        try:
            self.learner.on_label(label)
        except InvalidInput as exc:
            dead.append(dead_letter(label.origin, exc.reason, str(exc)))

    def _unlearned(self, records: list[Record]) -> list[Record]:
        """``records`` (one source partition's, in offset order) without those the learner's
        state already went past. A resumed source should start where the state was saved;
        should it start earlier, learning those records again would count their labels
        twice, so they are dropped (and logged)."""
        origin = records[0].origin
        part = origin.part
        past = self.learner.positions.get(part, 0)
        if origin.offset >= past:
            return records
        unlearned = [rec for rec in records if rec.origin.offset >= past]
        log.warning(
            "%s: skipped %d records before offset %d, which the resumed learner already learned",
            part,
            len(records) - len(unlearned),
            past,
        )
        return unlearned

    def _predict(self, event: Event, out: LearnOut, described: dict[int, bytes]) -> None:
        """Every model's prediction of ``event``: the served one and the shadow ones, or a
        dead letter if the event cannot be served."""
        try:
            preds, served = self.learner.on_event(event)
        except InvalidInput as exc:
            out.dead.append(dead_letter(event.origin, exc.reason, str(exc)))
            return
        except ModelError as exc:
            out.dead.append(dead_letter(event.origin, "model_error", str(exc)))
            return
        key = event.entity.encode()
        fields = {"id": event.id, "entity": event.entity, "time": event.time}
        for slot in self.learner.slots:
            model = described.get(slot.uid) or described.setdefault(slot.uid, self._describe(slot))
            message = Out(key, self._payload(fields, model, preds[slot.uid]))
            (out.predictions if slot is served else out.shadow).append(message)

    def on_notify(self) -> tuple[list[LearnOut], bool]:
        """Tick the registry and status while the stream is quiet."""
        if self.offline is not None:
            self.offline.rotate()  # files are written on time when the stream is quiet
        self.sync.tick(self.learner)
        self.status.maybe_write(self.learner)  # figures stay fresh when the stream is quiet
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Every second while the input runs: checkpoints and registry changes of a quiet
        stream are not held up."""
        return None if self.ended else datetime.now(UTC) + timedelta(seconds=1)

    def _stamp(self, stamps: list[dict[str, int]], rec: Record) -> None:
        """Note the Kafka positions just past ``rec`` for the drift signals it raised, and
        past the event itself for a concept drift found by a label that came later: a
        retrain of that drift starts there, not at the end of a (possibly long) batch, nor
        at events whose labels are still to come."""
        origin, drift = rec.origin, self.learner.drift
        assert drift is not None
        here = {**self.learner.positions, origin.part: origin.offset + 1}
        for signal in drift.signals[len(stamps) :]:
            if signal.where is None:
                stamps.append(here)
            else:
                topic, partition, offset = signal.where
                stamps.append({**here, f"{topic}-{partition}": offset + 1})

    def _drift_events(self, stamps: list[dict[str, int]]) -> list[Out]:
        """The drift alarms of the batch, as messages for the drift topic (and counted)."""
        drift = self.learner.drift
        if drift is None or not drift.signals:
            return []
        signals, drift.signals = drift.signals, []
        stamps += [dict(self.learner.positions)] * (len(signals) - len(stamps))  # none missed
        name = self.settings.model_name
        out = []
        for signal, positions in zip(signals, stamps, strict=True):
            slot = self.learner.slot(signal.source)
            model = {"spec": slot.spec, "version": slot.version} if slot else {}
            payload = {
                "model": name,
                **signal.to_dict(),
                **model,
                "positions": positions,
                "detected_at": time.time(),
            }
            DRIFT_EVENTS.labels(name, signal.kind, signal.source).inc()
            out.append(Out(name.encode(), encode(payload)))
        return out

    def on_eof(self) -> tuple[list[LearnOut], bool]:
        """Dead-letter labels that never found their event; write the last checkpoints.
        With recovery on, labels still within their wait are kept, as predictions waiting
        for theirs are: the next run resumes with them, and their events may come then."""
        learner = self.learner
        ended = learner.expire() if self.settings.recovery_path else learner.drain_orphans()
        out = LearnOut(dead=[_unknown_label(label) for label in ended])
        if self.offline is not None:
            self.offline.close()
        self.sync.finish(self.learner)
        self.sync.link.close()
        self.ended = True
        self.status.maybe_write(self.learner, force=True)
        return [out], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        """The signed learner, for Bytewax recovery."""
        return dumps_signed(self.learner, self.key)


def _unknown_label(label: LabelMessage) -> Out:
    return dead_letter(
        label.origin,
        "unknown_event_id",
        f"no prediction waits for event {label.id!r} (never seen, or expired after label_ttl)",
    )
