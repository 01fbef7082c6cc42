"""Keeps the learn step's models and the registry in step.

Out: checkpoints of every model the flow runs, and promotions (the challenger's snapshot
becomes the champion by compare-and-set, with the evidence in the audit stream). In:
champions, challengers and the A/B split set by someone else (a manual promotion, a
rollback, a pushed or removed challenger), picked up within about a second.
"""

from __future__ import annotations

import logging
import math

import redis

from flows.snapshots import RESUME_SCAN, Checkpoint, RegistryLink, is_shadowed
from models.ab import CHALLENGER, CHAMPION
from models.drift import DriftWatch
from models.evaluation import Prequential
from models.learner import OnlineLearner, Slot
from models.promotion import Decision, PromotionPolicy
from models.registry import Conflict, Registry, RegistryError, model_params
from models.signing import SignatureError, check_key, dumps_signed
from models.specs import build_model
from riverrun.metrics import MODEL_ERRORS, PROMOTIONS, REFUSED, ROLLBACKS
from riverrun.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY = 250  # labelled events between promotion checks
COUNTED = {"promote": PROMOTIONS, "rollback": ROLLBACKS}  # champion moves, by audit action


def promotion_policy(settings: Settings) -> PromotionPolicy:
    """The promotion thresholds of the settings."""
    return PromotionPolicy(
        min_samples=settings.promote_min_samples,
        window=settings.promote_window,
        margin=settings.promote_margin,
        alpha=settings.promote_alpha,
        latency_budget=settings.promote_latency_budget,
        cooldown=settings.promote_cooldown,
    )


def challenger_alias(index: int) -> str:
    """``challenger``, ``challenger-2``, ``challenger-3``, ... for the settings' challengers."""
    return CHALLENGER if index == 0 else f"{CHALLENGER}-{index + 1}"


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


def new_learner(
    settings: Settings, link: RegistryLink, started: dict[str, int] | None = None
) -> OnlineLearner:
    """A learner with the registry's champion and challengers (or, with ``started``, the
    versions a restarted run began with), or fresh ones of the settings' specs when the
    registry has none yet."""
    task, window = settings.task, settings.rolling_window
    found = link.load_shadowed(started)
    for alias, (info, _model) in found.items():
        if info.task != task:
            raise RegistryError(
                f"{alias} v{info.version} of {settings.model_name!r} does "
                f"{info.task}, but this flow's task is {task}"
            )
    slots = [
        Slot(
            info.spec,
            model,
            Prequential(task, window),
            alias,
            info.version,
            learned=info.events_seen,
        )
        for alias, (info, model) in found.items()
    ]
    if CHAMPION not in found:
        model = build_model(settings.model_spec, task, settings.seed)
        slots.insert(0, Slot(settings.model_spec, model, Prequential(task, window)))
    elif settings.model_spec not in (Settings.model_spec, found[CHAMPION][0].spec):  # asked for
        log.warning(
            "the registry already has a champion for %s (%s): RIVERRUN_MODEL_SPEC=%s is "
            "ignored (push a model of that spec with riverrun registry push)",
            settings.model_name,
            found[CHAMPION][0].spec,
            settings.model_spec,
        )
    if len(found) > (CHAMPION in found) and settings.challengers:
        log.warning(
            "the registry already has challengers for %s: RIVERRUN_CHALLENGERS is "
            "ignored (push or remove challengers in the registry)",
            settings.model_name,
        )
    elif settings.challengers:
        slots += [
            Slot(
                spec,
                build_model(spec, task, settings.seed),
                Prequential(task, window),
                challenger_alias(i),
            )
            for i, spec in enumerate(settings.challengers)
        ]
    return learner_of(settings, slots)


def learner_of(settings: Settings, slots: list[Slot]) -> OnlineLearner:
    """A learner of ``slots`` (the champion first) with the settings' joins, contest, A/B
    split and drift detection, as the learn flow runs it."""
    return OnlineLearner(
        settings.task,
        slots,
        label_ttl=settings.label_ttl,
        max_pending=settings.max_pending,
        window=settings.rolling_window,
        policy=promotion_policy(settings),
        ab_fraction=settings.ab_fraction,
        drift=drift_watch(settings),
    )


def drift_watch(settings: Settings) -> DriftWatch | None:
    """The drift detectors the settings ask for, or ``None`` when both kinds are off."""
    if settings.drift_detector == "off" and not settings.data_drift_window:
        return None
    return DriftWatch(settings.drift_detector, settings.drift_min_gap, settings.data_drift_window)


class RegistrySync:
    """The learn step's registry duties, called between batches."""

    def __init__(self, settings: Settings, link: RegistryLink) -> None:
        self.settings = settings
        self.link = link
        self.key = check_key(settings.registry_key)
        self.model = settings.model_name
        self._broken: set[tuple[str, int]] = set()

    @property
    def registry(self) -> Registry:
        """The registry behind the link."""
        return self.link.registry

    def start(self, learner: OnlineLearner) -> None:
        """Continue the lineages of registered models; register fresh ones before serving."""
        known = {slot.alias: slot.version for slot in learner.slots if slot.version}
        for alias, head in self.link.resumed_heads(known).items():
            self.link.writer.rebase(alias, head)
        fresh = [slot for slot in learner.slots if not slot.version]
        if fresh:  # register them now, so that predictions name a version
            self.link.submit(
                [self._checkpoint(learner, slot) for slot in fresh], learner.counts.labelled
            )
            self._await_first_versions()
            self._pick_up_versions(learner)
        self._sync_ab(learner)

    def _await_first_versions(self) -> None:
        """Wait a little for the first models to be registered; with recovery on, until
        they are: a run killed before its first snapshot restarts from the versions it
        began with (``started-from.json``), and without them it would take up the models
        its crashed run went on to register, then learn the replayed events twice."""
        while not self.link.final(timeout=5.0):
            if self.settings.recovery_path is None:
                return  # they register later; predictions name no version until then
            log.warning(
                "waiting for the registry to take the first models of %s (is Redis up?): "
                "with recovery on, the flow starts from registered versions",
                self.model,
            )

    def tick(self, learner: OnlineLearner) -> None:
        """Follow changes made elsewhere, checkpoint."""
        self._set_aside_broken(learner)
        self._pick_up_versions(learner)
        conflicts = self.link.writer.take_conflicts()
        if conflicts or self.link.changed():
            self._reconcile(learner)
        if self.link.due(learner.counts.labelled):
            self.checkpoint_all(learner)

    def next_check(self, learner: OnlineLearner) -> float:
        """The labelled count of the next promotion check (``inf`` with auto-promotion off):
        every ``CHECK_EVERY`` labels from the stream's start, so that a resumed run, or one
        whose batches end elsewhere, decides at the same events."""
        if not self.settings.auto_promote:
            return math.inf
        return (learner.counts.labelled // CHECK_EVERY + 1) * CHECK_EVERY

    def check_promotion(self, learner: OnlineLearner) -> None:
        """Promote the challenger the policy picks now, if any."""
        candidate = learner.candidate()
        if candidate is not None:
            self._promote(learner, *candidate)

    def finish(self, learner: OnlineLearner) -> None:
        """The input ended: write every model's last checkpoint and wait for it."""
        self.checkpoint_all(learner)
        if not self.link.final():
            log.warning("the last checkpoints could not be written before the input ended")
        self._pick_up_versions(learner)

    def checkpoint_all(self, learner: OnlineLearner) -> None:
        """Queue a checkpoint of every model."""
        checkpoints = [self._checkpoint(learner, slot) for slot in learner.slots]
        self.link.submit(checkpoints, learner.counts.labelled)

    def _checkpoint(self, learner: OnlineLearner, slot: Slot, **tags: str) -> Checkpoint:
        return Checkpoint(
            alias=slot.alias,
            signed=dumps_signed(slot.model, self.key),
            spec=slot.spec,
            task=learner.task,
            metrics=slot.metrics.report(),
            events_seen=slot.learned,
            positions=dict(learner.positions),
            params=model_params(slot.model),
            tags=tags,
            features=learner.schema,
        )

    def _pick_up_versions(self, learner: OnlineLearner) -> None:
        for slot in learner.slots:
            head = self.link.writer.head(slot.alias)
            if head is not None:
                slot.version = head

    def _sync_ab(self, learner: OnlineLearner) -> None:
        """Follow the registry's split; the settings' seeds it only if nobody ever set one
        (a split set to 0 by hand stays 0)."""
        try:
            fraction = self.registry.ab_fraction(self.model)
            if self.settings.ab_fraction > 0.0 and not self.registry.ab_split_set(self.model):
                self.registry.set_ab_fraction(
                    self.model,
                    self.settings.ab_fraction,
                    actor=self.link.actor,
                    reason="flow settings",
                )
                fraction = self.settings.ab_fraction
        except redis.RedisError:
            return
        except RegistryError as exc:  # a value written by hand: the flow keeps its split
            log.error("%s: keeping the A/B split %g: %s", self.model, learner.ab_fraction, exc)
            return
        learner.ab_fraction = fraction

    def _set_aside_broken(self, learner: OnlineLearner) -> None:
        """Challengers whose code failed are out: never adopt those versions again."""
        broken, learner.broken = learner.broken, []
        writer = self.link.writer
        if broken:  # a checkpoint of it being written would move its alias past our clear
            self.link.final(timeout=5.0)
        for b in broken:
            MODEL_ERRORS.labels(self.model, b.alias).inc()
            log.error(
                "%s %s v%s failed and no longer runs here: %s", b.alias, b.spec, b.version, b.error
            )
            head = writer.head(b.alias)  # its newest checkpoint, maybe newer than b.version
            writer.rebase(b.alias, head)  # drops its waiting checkpoint
            self._broken.update((b.alias, v) for v in (b.version, head) if v)
            if head is not None:  # out of the registry too, so that no restart adopts it
                self._clear(b.alias, head, f"its code failed in the learn flow: {b.error}")

    def _reconcile(self, learner: OnlineLearner) -> None:
        """Adopt the champion, challengers and split the registry holds now."""
        try:
            aliases = self.registry.aliases(self.model)
            learner.ab_fraction = self.registry.ab_fraction(self.model)
        except redis.RedisError:
            self.link.watcher.changed.set()  # try again later
            return
        except RegistryError as exc:  # a value written by hand: the next change retries
            log.error("%s: keeping the models and split this flow runs: %s", self.model, exc)
            return
        if CHAMPION not in aliases and self.link.writer.head(CHAMPION) is not None:
            self._register_again(learner)
            return
        for alias, version in aliases.items():
            slot, head = learner.slot(alias), self.link.writer.head(alias)
            if slot is None and version == head:
                self._clear(alias, version, "no longer run by the learn flow")
                continue
            ours = slot is not None and version in (slot.version, head)
            if is_shadowed(alias) and not ours and (alias, version) not in self._broken:
                self._adopt(learner, alias, version)
        for slot in list(learner.slots[1:]):
            if slot.alias not in aliases and self.link.writer.head(slot.alias) is not None:
                learner.remove_challenger(slot.alias)
                self.link.writer.rebase(slot.alias, None)
                log.warning(
                    "stopped shadowing %s (%s): removed from the registry", slot.alias, slot.spec
                )

    def _clear(self, alias: str, version: int, reason: str) -> None:
        """Remove ``alias``, still at ``version`` of a model this flow no longer runs (one
        whose code failed, or the new champion's earlier snapshot after a promotion that
        keeps no old champion), so that no server serves it as a challenger; retried by
        :meth:`_reconcile` after an outage."""
        try:
            self.registry.move_alias(
                self.model,
                alias,
                None,
                expected=version,
                actor=self.link.actor,
                action="set",
                reason=reason,
            )
        except redis.RedisError:
            self.link.watcher.changed.set()  # try again later
            return
        except Conflict:
            self.link.watcher.changed.set()  # moved by someone else: adopt theirs next
        self.link.writer.rebase(alias, None)

    def _register_again(self, learner: OnlineLearner) -> None:
        """The registry no longer names the champion this flow wrote (Redis restarted empty,
        or the model's keys were deleted; no command removes a champion): register every
        model the flow runs again, as on a first start, so that servers have one to serve."""
        log.warning(
            "the registry has lost the champion of %s (did Redis restart empty?): "
            "registering this flow's models again",
            self.model,
        )
        self._broken.clear()  # by version number, and numbers start over
        for slot in learner.slots:
            self.link.writer.rebase(slot.alias, None)
        self.checkpoint_all(learner)
        self._sync_ab(learner)  # the split of the settings, as on a first start

    def _adopt(self, learner: OnlineLearner, alias: str, version: int) -> None:
        """Run the model someone else put under ``alias``."""
        try:
            info, model = self.registry.load_version(self.model, version)
        except redis.RedisError as exc:
            log.warning("cannot adopt %s v%s of %s yet: %s", alias, version, self.model, exc)
            self.link.watcher.changed.set()  # a passing outage: try again
            return
        except Exception as exc:  # also a model whose code this process cannot import
            if isinstance(exc, SignatureError):
                REFUSED.labels(self.model).inc()
            log.error("cannot adopt %s v%s of %s: %r", alias, version, self.model, exc)
            return
        window = self.settings.rolling_window
        slot = Slot(
            info.spec,
            model,
            Prequential(learner.task, window),
            alias,
            version,
            learned=info.events_seen,
        )
        if alias == CHAMPION:
            learner.replace_champion(slot)
        else:
            learner.put_challenger(slot)
        self.link.writer.rebase(alias, version)
        log.warning("now running %s v%s as %s, set in the registry", info.spec, version, alias)
        if alias == CHAMPION:
            self._count_champion_move(version)

    def _count_champion_move(self, version: int) -> None:
        """Count the promotion or rollback by someone else that made ``version`` the champion
        (the flow counts its own promotions as it makes them): found in the audit stream."""
        try:
            move = next(
                (
                    m
                    for m in self.registry.newest_moves(self.model, RESUME_SCAN)
                    if m.alias == CHAMPION
                    and m.to_version == version
                    and m.action in COUNTED
                    and m.actor != self.link.actor
                ),
                None,
            )
        except (redis.RedisError, ValueError, KeyError) as exc:  # never stops an adoption
            log.warning("champion move to v%s of %s not counted: %s", version, self.model, exc)
            return
        if move is not None:
            COUNTED[move.action].labels(self.model).inc()

    def _promote(self, learner: OnlineLearner, challenger: Slot, decision: Decision) -> None:
        """Swap in ``challenger`` if the registry agrees (compare-and-set on both aliases)."""
        if not self.link.final(timeout=10.0):
            log.warning(
                "promotion of %s postponed: checkpoints are not getting through", challenger.spec
            )
            return
        champion, keep = learner.champion, self.settings.promote_keep_old
        writer, actor = self.link.writer, self.link.actor
        try:
            new = writer.write_now(
                self._checkpoint(learner, challenger, promoted="true"),
                writer.head(challenger.alias),
            )
            self.registry.move_alias(
                self.model,
                CHAMPION,
                new.version,
                expected=writer.head(CHAMPION),
                actor=actor,
                reason=f"{challenger.spec} beat {champion.spec}: {decision.reason}",
                evidence=decision.evidence(),
                action="promote",
            )
        except (redis.RedisError, Conflict) as exc:
            log.warning("promotion of %s not done, the registry said: %s", challenger.spec, exc)
            self.link.watcher.changed.set()
            return
        old: int | None = None  # the champion moved: the swap is done, whatever follows
        alias_head = writer.head(challenger.alias)  # where the registry's alias points
        try:
            if keep:
                old = writer.write_now(
                    self._checkpoint(learner, champion, demoted="true"), writer.head(CHAMPION)
                ).version
            self.registry.move_alias(
                self.model,
                challenger.alias,
                old,
                expected=writer.head(challenger.alias),
                actor=actor,
                action="set",
                reason="the former champion, kept as a challenger" if keep else "promoted",
            )
            alias_head = old
        except (redis.RedisError, Conflict) as exc:
            # The alias still points at alias_head: after an outage the next checkpoint moves
            # it (or, with no old champion kept, _reconcile removes it); after someone else's
            # move, theirs is adopted (it differs from alias_head).
            log.warning(
                "promoted %s, but %s was not moved yet, the registry said: %s",
                challenger.spec,
                challenger.alias,
                exc,
            )
            if alias_head is not None:  # the new champion's earlier snapshot: never adopted
                self._broken.add((challenger.alias, alias_head))
            self.link.watcher.changed.set()
        writer.rebase(CHAMPION, new.version)
        writer.rebase(challenger.alias, alias_head)
        challenger.version = new.version
        learner.swap(challenger, decision, keep_old=keep)
        champion.version = old or champion.version
        PROMOTIONS.labels(self.model).inc()
        log.warning(
            "promoted %s v%s over %s: %s",
            challenger.spec,
            new.version,
            champion.spec,
            decision.reason,
        )
