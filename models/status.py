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
    """The status key holds what no flow writes: not JSON, or no JSON object."""


def read_status(client: redis.Redis, model_name: str) -> dict[str, Any] | None:
    """The model's last status, or ``None`` if no flow has written one;
    :class:`UnreadableStatus` for a key something else wrote."""
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
    return status
