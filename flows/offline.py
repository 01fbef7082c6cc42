"""The learn flow's offline store, as the settings configure it."""

from __future__ import annotations

from pathlib import Path

from models.offline_store import OfflineStore
from riverrun.settings import Settings


def offline_store(settings: Settings, task: str) -> OfflineStore | None:
    """The store under ``offline_store_dir``, or ``None`` when it is off (empty)."""
    if not settings.offline_store_dir:
        return None
    return OfflineStore(
        Path(settings.offline_store_dir),
        task,
        max_bytes=settings.offline_store_max_bytes,
        max_seconds=settings.offline_store_max_seconds,
    )
