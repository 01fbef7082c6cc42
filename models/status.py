"""The learn flow's latest status in Redis: counts and every model's metrics.

The flow writes it every few seconds and when its input ends; the demo, the trigger
service and operators read it. It is a convenience view, never the source of truth:
Bytewax recovery and the registry are.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis


def status_key(model_name: str) -> str:
    """The Redis key holding a model's status."""
    return f"riverrun:status:{model_name}"


def write_status(client: redis.Redis, model_name: str, status: dict[str, Any]) -> None:
    """Replace the model's status with ``status`` (JSON)."""
    client.set(status_key(model_name), orjson.dumps(status, option=orjson.OPT_NON_STR_KEYS))


class UnreadableStatus(ValueError):
    """The status key holds what no flow writes: not JSON, no JSON object, or fields of
    other types than a flow's."""


def read_status(
    client: redis.Redis, model_name: str, *, shaped: bool = True
) -> dict[str, Any] | None:
    """The model's last status, or ``None`` if no flow has written one;
    :class:`UnreadableStatus` for a key something else wrote (``shaped=False``: any JSON
    object, to show as it is)."""
    raw = client.get(status_key(model_name))
    if raw is None:
        return None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableStatus(
            f"the status of model {model_name!r} in Redis is not JSON: {exc}"
        ) from None
    if not isinstance(status, dict):
        raise UnreadableStatus(f"the status of model {model_name!r} in Redis is no JSON object")
    wrong = _misshapen(status) if shaped else ""
    if wrong:
        raise UnreadableStatus(f"the status of model {model_name!r} in Redis has {wrong}")
    return status


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _misshapen(status: dict[str, Any]) -> str:
    """What in ``status`` is not as a flow writes it, among the fields its readers act on
    (the trigger service's policies), else ``""``."""
    if not _number(status.get("labelled")):
        return "no number for 'labelled'"
    if "written_at" in status and not _number(status["written_at"]):
        return "no number for 'written_at'"
    positions = status.get("positions", {})
    if not isinstance(positions, dict) or not all(type(o) is int for o in positions.values()):
        return "no map of partitions to offsets for 'positions'"
    models = status.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        return "no list of objects for 'models'"
    for model in models:
        metrics = model.get("metrics", {})
        if not isinstance(metrics, dict) or not all(  # null: NaN or infinite
            v is None or _number(v) for v in metrics.values()
        ):
            return "a model whose 'metrics' are not numbers"
        if "n" in metrics and not _number(metrics["n"]):
            return "a model whose scored count 'n' is no number"
    contest = status.get("contest", {})
    if not isinstance(contest, dict) or not all(isinstance(e, dict) for e in contest.values()):
        return "no map of objects for 'contest'"
    for entry in contest.values():
        if not isinstance(entry.get("promote", False), bool) or not all(
            entry.get(name) is None or _number(entry[name])
            for name in ("mean_difference", "p_value")
        ):
            return "a contest entry whose 'promote', 'mean_difference' or 'p_value' is askew"
    return ""
