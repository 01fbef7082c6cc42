"""Bytewax recovery of the learn flow: where its partitions live, created on first start.

Model state, detector state, pending joins and Kafka offsets are Bytewax state of one
dataflow, snapshotted together every ``epoch_interval`` in ``settings.recovery_path``;
the same ``riverrun learn`` started again resumes from the last snapshot there.
"""

from __future__ import annotations

from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from riverrun.settings import Settings


def partitions(path: Path) -> list[Path]:
    """The recovery partitions in ``path`` (none if it does not exist)."""
    return sorted(path.glob("part-*.sqlite3"))


def prepare_recovery(settings: Settings) -> bool:
    """Create the partitions on first start (one per process); ``True`` if some exist already,
    so the flow resumes from them."""
    path = settings.recovery_path
    if path is None:
        return False
    if partitions(path):
        return True
    path.mkdir(parents=True, exist_ok=True, mode=0o700)  # Bytewax unpickles what is in it
    init_db_dir(path, settings.processes)
    return False


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Bytewax's recovery configuration for the settings (after :func:`prepare_recovery`)."""
    path = settings.recovery_path
    return None if path is None else RecoveryConfig(path)
