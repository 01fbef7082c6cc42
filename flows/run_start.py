"""The model versions a recoverable learn run started from, kept with its recovery state.

Bytewax resumes the learn step from its newest committed snapshot. A run killed before its
first commit (a backlog read in one long first epoch, say) has none, so it reads its topics
from the start again, while the registry may already hold newer checkpoints of that same
run, which learned part of what is read again. Such a restart begins from the versions
recorded here instead, so every label is still learned once; its lineage goes on from the
run's newest checkpoint. The file lives and dies with the recovery partitions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from riverrun.settings import Settings

log = logging.getLogger(__name__)

FILE_NAME = "started-from.json"


def _path(settings: Settings) -> Path | None:
    """Where the record goes: the recovery directory, once the runner has created it."""
    directory = settings.recovery_path
    return None if directory is None or not directory.is_dir() else directory / FILE_NAME


def read_start(settings: Settings) -> dict[str, int] | None:
    """``{alias: version}`` this run started from; ``None`` for a new run or without recovery."""
    path = _path(settings)
    if path is None or not path.exists():
        return None
    try:
        found = orjson.loads(path.read_bytes())
        return {str(alias): int(version) for alias, version in found.items()}
    except (OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        log.warning("ignoring %s, which does not hold versions: %s", path, exc)
        return None


def record_start(settings: Settings, versions: dict[str, int]) -> None:
    """Keep ``versions`` as where this run started, unless a start is recorded already."""
    path = _path(settings)
    if path is None or path.exists():
        return
    tmp = path.with_name(f"{FILE_NAME}.tmp")
    tmp.write_bytes(orjson.dumps(versions))
    tmp.chmod(0o600)
    tmp.replace(path)
