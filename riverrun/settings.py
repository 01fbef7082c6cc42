"""The one typed settings object: read from ``RIVERRUN_*`` environment variables and CLI flags.

Every process of riverrun (the CLI, the Bytewax workers, the gRPC server) builds its
configuration here, so a value means the same thing everywhere and can be handed to a
child process with :meth:`Settings.to_env`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from redis.connection import parse_url

from models.ab import check_new_model_alias
from models.promotion import PromotionPolicy
from models.registry import RegistryError, check_model_name
from models.schema import TASKS
from models.triggers import SLUMP_ACTIONS, slump_metrics

log = logging.getLogger(__name__)

ENV_PREFIX = "RIVERRUN_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


# Numeric settings and the rule each group keeps: (names, holds, what the rule says).
TEN_YEARS = 315_360_000
_POSITIVE_SECONDS = (
    "label_ttl",
    "status_interval",
    "epoch_interval",
    "snapshot_interval",
    "serve_sync_interval",
    "offline_store_max_seconds",
    "trigger_lookback",
    "promote_latency_budget",
)
_BOUNDS: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (
        (
            "partitions",
            "rolling_window",
            "max_pending",
            "batch_size",
            "processes",
            "snapshot_every",
            "registry_keep",
            "promote_cooldown",
            "serve_max_batch",
            "offline_store_max_bytes",
            "max_message_bytes",
        ),
        lambda value: value >= 1,
        "must be at least 1",
    ),
    (_POSITIVE_SECONDS, lambda value: value > 0, "must be positive"),
    (
        ("processes",),
        lambda value: value <= 256,
        "must be at most 256 (each is a Python process with a port of its own)",
    ),
    (("promote_alpha",), lambda value: 0 < value < 1, "must lie between 0 and 1 (a p-value)"),
    (
        ("promote_margin",),
        lambda value: 0 <= value < 1,
        "must lie from 0 up to 1 (a share of the champion's loss; 1 or more never promotes)",
    ),
    (
        ("serve_workers",),
        lambda value: value >= 4,
        "must be at least 4: open streams and labels waiting on Kafka may each hold a quarter "
        "of the threads, and scoring keeps the rest",
    ),
    (("drift_min_gap",), lambda value: value >= 0, "must be at least 0"),
    (
        ("trigger_drift_wait", "trigger_slump_for", "trigger_cooldown"),
        lambda value: value >= 0,
        "must be at least 0 (0: at once)",
    ),
    (
        ("trigger_fresh_every", "trigger_schedule_every", "data_drift_window", "entity_ttl"),
        lambda value: value >= 0,
        "must be at least 0 (0: off)",
    ),
    (  # past this, clocks and Kafka's millisecond times overflow
        (
            *_POSITIVE_SECONDS,
            "entity_ttl",
            "trigger_drift_wait",
            "trigger_slump_for",
            "trigger_cooldown",
            "trigger_schedule_every",
        ),
        lambda value: value <= TEN_YEARS,
        f"must be at most {TEN_YEARS:,} (seconds: ten years)",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every riverrun command.

    >>> s = Settings.from_env({"RIVERRUN_MODEL_SPEC": "arf", "RIVERRUN_SEED": "7"})
    >>> (s.model_spec, s.seed)
    ('arf', 7)
    """

    bootstrap_servers: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers (host:port,...)")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "Redis URL of the registry and stores")
    topic_events: str = _setting("events", "topic of incoming events (and inline labels)")
    topic_labels: str = _setting("labels", "topic of delayed labels keyed by event id")
    topic_predictions: str = _setting("predictions", "topic of served predictions")
    topic_shadow: str = _setting("shadow-predictions", "topic of challengers' predictions")
    topic_deadletter: str = _setting("deadletter", "topic of rejected input, with the reason")
    topic_drift: str = _setting("drift", "topic of drift events")
    partitions: int = _setting(1, "partitions of topics riverrun creates")
    model_name: str = _setting("default", "name of the model the flow learns and serves")
    model_spec: str = _setting("logreg", "champion spec: a built-in name or package.module:factory")
    challengers: tuple[str, ...] = _setting((), "challenger specs, comma separated")
    task: str = _setting("binary", "learning task: binary, multiclass or regression")
    entity_features: tuple[str, ...] = _setting(
        (), "per-entity features: count, since_last, mean:FIELD (comma separated)"
    )
    entity_ttl: float = _setting(
        0.0, "seconds of event time an idle entity's aggregates are kept (0: for ever)"
    )
    seed: int = _setting(42, "random seed of models and producers")
    rolling_window: int = _setting(1000, "window of rolling metrics, in labelled events")
    label_ttl: float = _setting(3600.0, "seconds of event time a prediction waits for its label")
    max_pending: int = _setting(200_000, "most predictions waiting for a label (oldest expire)")
    max_message_bytes: int = _setting(65_536, "larger messages are dead-lettered")
    batch_size: int = _setting(1000, "most Kafka messages read per poll of a partition")
    status_interval: float = _setting(2.0, "seconds between status updates of the flow")
    epoch_interval: float = _setting(1.0, "seconds between Bytewax epochs (and snapshots)")
    follow: bool = _setting(True, "keep following the topics (false: stop at their current end)")
    processes: int = _setting(1, "Bytewax processes of the learn flow")
    recovery_dir: str = _setting(
        "~/.local/state/riverrun/recovery",
        "Bytewax recovery: state snapshots under DIR/MODEL_NAME, resumed on restart (empty: off)",
    )
    auto_promote: bool = _setting(True, "promote a challenger when the policy says so")
    promote_min_samples: int = _setting(1000, "paired labelled events before any promotion")
    promote_window: int = _setting(5000, "most recent paired events the promotion test uses")
    promote_margin: float = _setting(0.02, "least loss improvement, relative to the champion")
    promote_alpha: float = _setting(0.01, "significance of the one-sided paired test")
    promote_latency_budget: float = _setting(
        0.005, "most seconds a challenger may take per prediction"
    )
    promote_cooldown: int = _setting(5000, "labelled events after a swap before the next")
    promote_keep_old: bool = _setting(True, "keep the old champion as a challenger")
    ab_fraction: float = _setting(0.0, "fraction of entities the challenger serves (A/B)")
    drift_detector: str = _setting(
        "adwin", "concept-drift detector on each model's error: adwin, page_hinkley, ddm, off"
    )
    drift_min_gap: int = _setting(1000, "fewest events between two drift alarms of one source")
    data_drift_window: int = _setting(
        5000, "events per window of the PSI data-drift check (0 turns it off)"
    )
    trigger_on_drift: bool = _setting(True, "retrain when the champion's concept drifts")
    trigger_drift_wait: int = _setting(
        1000, "labelled events after a drift before its retrain starts (data to learn from)"
    )
    trigger_slump_action: str = _setting(
        "off", "on a performance slump: off, retrain, promote (a better challenger), rollback"
    )
    trigger_slump_metric: str = _setting("rolling_accuracy", "the champion metric a slump watches")
    trigger_slump_threshold: float = _setting(0.7, "a slump is a metric worse than this")
    trigger_slump_for: float = _setting(600.0, "seconds a slump lasts before it triggers")
    trigger_fresh_every: int = _setting(0, "retrain every N new labelled events (0: off)")
    trigger_schedule_every: float = _setting(0.0, "retrain every T seconds (0: off)")
    trigger_cooldown: float = _setting(
        300.0, "seconds after a retrain (or a slump's promotion or rollback) before the next"
    )
    trigger_retrain_alias: str = _setting(
        "challenger-retrain", "alias a triggered retrain's model enters the contest under"
    )
    trigger_lookback: float = _setting(
        3600.0, "seconds of events a fresh-data, scheduled or slump retrain replays"
    )
    snapshot_every: int = _setting(10_000, "labelled events between champion checkpoints")
    snapshot_interval: float = _setting(30.0, "most seconds between champion checkpoints")
    registry_keep: int = _setting(20, "recent versions (and alias moves) retention keeps")
    metrics_host: str = _setting("127.0.0.1", "address /metrics listens on")
    metrics_port: int = _setting(
        9800, "port of the learn flow's /metrics (process K uses port+K; 0 turns it off)"
    )
    trigger_metrics_port: int = _setting(
        9850, "port of the trigger service's /metrics (0 turns it off)"
    )
    serve_host: str = _setting(
        "127.0.0.1", "address of the gRPC server: where it binds, and where clients connect"
    )
    serve_port: int = _setting(50051, "port of the gRPC server (0: any free port)")
    serve_models: tuple[str, ...] = _setting(
        (), "models the gRPC server serves, comma separated (empty: every registry model)"
    )
    serve_workers: int = _setting(16, "threads of the gRPC server answering requests")
    serve_max_batch: int = _setting(10_000, "most rows in one PredictBatch call")
    serve_sync_interval: float = _setting(
        5.0, "seconds between the gRPC server's full re-reads of the registry"
    )
    serve_tls_cert: str = _setting("", "PEM certificate file of the gRPC server (TLS with the key)")
    serve_tls_key: str = _setting("", "PEM private key file of the gRPC server")
    serve_tls_ca: str = _setting("", "PEM root certificate file a gRPC client trusts (TLS)")
    serve_metrics_port: int = _setting(9900, "port of the gRPC server's /metrics (0 turns it off)")
    offline_store_dir: str = _setting(
        "", "folder of the offline store: labelled examples as Parquet (empty: off)"
    )
    offline_store_max_bytes: int = _setting(
        64 << 20, "about how many bytes of memory an hour's rows take before they are written"
    )
    offline_store_max_seconds: float = _setting(
        300.0, "most seconds rows wait in memory before an offline store file is written"
    )
    registry_key: str = _setting("", "HMAC key that signs model snapshots", secret=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``RIVERRUN_<FIELD>``; unset variables keep their defaults."""
        return cls(**_env_values(env)).validated()

    def override(self, values: Mapping[str, Any]) -> Settings:
        """Return a copy with the non-``None`` entries of ``values`` (e.g. parsed flags)."""
        known = {f.name for f in dataclasses.fields(self)}
        changes = {k: v for k, v in values.items() if k in known and v is not None}
        return dataclasses.replace(self, **changes).validated()

    @property
    def recovery_path(self) -> Path | None:
        """This flow's recovery directory, ``recovery_dir/model_name`` (``None``: recovery off):
        one per model name, since Bytewax must not mix two dataflows' state."""
        if not self.recovery_dir:
            return None
        return Path(self.recovery_dir).expanduser() / self.model_name

    def to_env(self) -> dict[str, str]:
        """The ``RIVERRUN_*`` variables that reproduce these settings in a child process."""
        out = {}
        for name in _fields(type(self)):
            value = getattr(self, name)
            out[env_name(name)] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out

    def validated(self) -> Settings:
        """Check values that would otherwise fail far from their cause."""
        if self.task not in TASKS:
            raise SettingsError(
                f"{env_name('task')}={self.task!r}: expected binary, multiclass or regression"
            )
        for f in dataclasses.fields(self):  # the rules of a kind of setting
            name, value = f.name, getattr(self, f.name)
            if isinstance(value, float) and value != value:
                raise SettingsError(f"{env_name(name)} is NaN: expected a number")
            if isinstance(value, float) and math.isinf(value):
                raise SettingsError(f"{env_name(name)} is {value}: expected a finite number")
            if name.startswith("topic_") and not value:
                raise SettingsError(f"{env_name(name)} is empty: expected a topic name")
            if name.endswith("_port") and not 0 <= value <= 65535:
                raise SettingsError(f"{env_name(name)} must be a port number, 0 to 65535")
        for names, holds, rule in _BOUNDS:
            for name in names:
                if not holds(getattr(self, name)):
                    raise SettingsError(f"{env_name(name)} {rule}")
        self._check_promotion()
        for name in ("topic_predictions", "topic_shadow", "topic_deadletter", "topic_drift"):
            if getattr(self, name) in (self.topic_events, self.topic_labels):
                raise SettingsError(
                    f"{env_name(name)}={getattr(self, name)!r} is a topic the flow reads: its "
                    "outputs would come back as input, for ever"
                )
        try:
            check_new_model_alias(self.trigger_retrain_alias, "a retrained model")
        except ValueError as exc:
            raise SettingsError(f"{env_name('trigger_retrain_alias')}: {exc}") from None
        try:
            check_model_name(self.model_name)
        except RegistryError as exc:
            raise SettingsError(f"{env_name('model_name')}={exc}") from None
        if self.metrics_port and self.metrics_port + self.processes - 1 > 65535:
            raise SettingsError(
                f"{env_name('metrics_port')}: learn process K serves /metrics on port + K, past "
                f"65535 with {self.processes} processes"
            )
        if self.drift_detector == "ddm" and self.task == "regression":
            raise SettingsError(
                f"{env_name('drift_detector')}=ddm watches a 0/1 error, not a regressor's:"
                " use adwin or page_hinkley"
            )
        if self.trigger_slump_action not in SLUMP_ACTIONS:
            raise SettingsError(
                f"{env_name('trigger_slump_action')}={self.trigger_slump_action!r}: use one of "
                f"{', '.join(SLUMP_ACTIONS)}"
            )
        watched = slump_metrics(self.task)
        if self.trigger_slump_action != "off" and self.trigger_slump_metric not in watched:
            raise SettingsError(
                f"{env_name('trigger_slump_metric')}={self.trigger_slump_metric!r}: the status "
                f"of a {self.task} model does not report it; use one of {', '.join(watched)}"
            )
        if not 0.0 <= self.ab_fraction <= 1.0:
            raise SettingsError(f"{env_name('ab_fraction')} must be within [0, 1]")
        _check_redis_url(self.redis_url)
        if bool(self.serve_tls_cert) != bool(self.serve_tls_key):
            raise SettingsError(
                f"{env_name('serve_tls_cert')} and {env_name('serve_tls_key')} go together"
            )
        return self

    def _check_promotion(self) -> None:
        """Refuse promotion thresholds that the test cannot use, or that no window meets."""
        block = PromotionPolicy.block
        if self.promote_min_samples < 2 * block:
            raise SettingsError(
                f"{env_name('promote_min_samples')} must be at least {2 * block}: the paired "
                f"test compares means of blocks of {block} events, and needs two"
            )
        if self.promote_window < self.promote_min_samples:
            raise SettingsError(
                f"{env_name('promote_window')}={self.promote_window} is below "
                f"{env_name('promote_min_samples')}={self.promote_min_samples}: the window "
                "would never hold enough paired events to promote"
            )

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name == "redis_url":
                value = hide_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def _check_redis_url(url: str) -> None:
    """Refuse a Redis URL that redis-py would refuse only on connecting, or quietly misread
    (a database that is no number means database 0 to it)."""

    def refused(reason: str) -> SettingsError:
        return SettingsError(f"{env_name('redis_url')}={hide_password(url)!r}: {reason}")

    try:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise refused("expected a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix":
            if not _is_port(parts):
                raise refused("the port is no number from 1 to 65535")
            db = unquote(parts.path).replace("/", "")
            if db and "db" not in parse_qs(parts.query) and not _is_int(db):  # as redis-py
                raise refused(f"database {db!r} is no number")
        parse_url(url)
    except SettingsError:
        raise
    except ValueError as exc:
        raise refused(str(exc)) from None


def _is_port(parts: SplitResult) -> bool:
    try:
        port = parts.port
    except ValueError:  # no number, or beyond 65535
        return False
    return port is None or port > 0


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC and Kafka clients take it: an IPv6 address in brackets.

    >>> host_port("::1", 50051), host_port("127.0.0.1", 50051), host_port("[::1]", 1)
    ('[::1]:50051', '127.0.0.1:50051', '[::1]:1')
    """
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def hide_password(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (the rest as it was written).

    >>> hide_password("redis://user:secret@h:6379/0?password=again")
    'redis://user:***@h:6379/0?password=***'
    >>> hide_password("REDIS://[::1")
    'REDIS://[::1'
    """
    hidden = re.sub(r"^([A-Za-z]+://[^:/@]*):[^/]*@", r"\1:***@", url)
    return re.sub(r"(?<=password=)[^&]*", "***", hidden)


def env_name(field_name: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field_name.upper()


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add ``--kebab-case`` flags for the named settings; unset flags parse as ``None``."""
    fields = _fields(Settings)
    for name in names:
        f, kind = fields[name]
        flag = flag_name(name)
        help_text = f"{f.metadata['help']} [env: {env_name(name)}]"
        if kind is tuple:
            parser.add_argument(
                flag, dest=name, action="append", default=None, metavar="SPEC", help=help_text
            )
        elif kind is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, overridden by whichever flags were given; a wrong
    value that came from a flag is reported under the flag's name."""
    fields = _fields(Settings)
    flags = {}
    for name, value in vars(args).items():
        if name in fields and value is not None:
            is_tuple = fields[name][1] is tuple
            flags[name] = _split_specs(value) if is_tuple else value
    try:
        return Settings(**{**_env_values(env, skip=flags), **flags}).validated()
    except SettingsError as exc:
        message = str(exc)
        for name in flags:
            message = re.sub(rf"\b{env_name(name)}\b", flag_name(name), message)
        raise SettingsError(message) from None


def flag_name(field_name: str) -> str:
    """The command-line flag of a settings field."""
    return "--" + field_name.replace("_", "-")


def split_list(raw: str) -> tuple[str, ...]:
    """The items of a comma-separated list, stripped, empty ones left out: flags and
    ``RIVERRUN_*`` variables read ``"arf, logreg"`` alike."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _split_specs(items: list[str]) -> tuple[str, ...]:
    return tuple(part for item in items for part in split_list(item))


def _env_values(env: Mapping[str, str] | None, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields set by ``RIVERRUN_*`` variables in ``env`` (default: the process's), parsed;
    fields in ``skip`` (given as flags) are not read."""
    env = os.environ if env is None else env
    values = {}
    fields = _fields(Settings)
    for field_name, (_f, kind) in fields.items():
        name = env_name(field_name)
        if name in env and field_name not in skip:
            values[field_name] = _parse(kind, env[name], name)
    _warn_unknown(env, [env_name(f) for f in fields])
    return values


_warned: set[str] = set()


def _warn_unknown(env: Mapping[str, str], known: list[str]) -> None:
    """Warn, once a process, of each ``RIVERRUN_*`` variable that is no setting: a misspelt
    name would otherwise leave its setting at the default without a word."""
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and name not in _warned:
            _warned.add(name)
            suffixes = [k.removeprefix(ENV_PREFIX) for k in known]  # the prefix matches all
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            log.warning("ignoring %s: riverrun has no such setting%s", name, hint)


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], type]]:
    hints = get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        out[f.name] = (f, tuple if getattr(hint, "__origin__", None) is tuple else hint)
    return out


def _parse(kind: type, raw: str, name: str) -> Any:
    if kind is tuple:
        return split_list(raw)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}={raw!r}: expected true or false")
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected {kind.__name__}") from None
