"""Snapshot cost: save and load through the signed Redis registry against plain pickle."""

from __future__ import annotations

import pickle
from typing import Any

import redis

from bench.harness import Report, best_of, timed
from models.datasets import open_stream
from models.registry import Registry
from models.specs import build_model
from riverrun.settings import Settings

SPECS = ("logreg", "hoeffding", "arf")


def _seconds(run: Any) -> float:
    with timed() as t:
        run()
    return t.seconds


def _measure(registry: Registry, model: Any, spec: str, repeats: int) -> dict[str, float]:
    name = f"bench-snapshot-{spec}"
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    version = registry.register(name, model, spec=spec, task="binary").version
    save = best_of(
        repeats, lambda: _seconds(lambda: registry.register(name, model, spec=spec, task="binary"))
    )
    load = best_of(repeats, lambda: _seconds(lambda: registry.load(name, version)))
    base_save = best_of(
        repeats, lambda: _seconds(lambda: pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    )
    base_load = best_of(repeats, lambda: _seconds(lambda: pickle.loads(blob)))
    for info in registry.versions(name):
        registry.client.delete(
            f"riverrun:registry:{name}:v:{info.version}",
            f"riverrun:registry:{name}:blob:{info.version}",
        )
    return {
        "size_kb": len(blob) / 1024,
        "save_ms": save * 1000,
        "load_ms": load * 1000,
        "pickle_save_ms": base_save * 1000,
        "pickle_load_ms": base_load * 1000,
        "save_vs_pickle": save / base_save,
        "load_vs_pickle": load / base_load,
    }


def snapshots(settings: Settings, *, events: int = 10_000, repeats: int = 3) -> Report:
    """Save/load times and sizes per spec after ``events`` events, and the ratio to pickle."""
    registry = Registry(redis.Redis.from_url(settings.redis_url), settings.registry_key)
    samples = list(open_stream("agrawal", seed=settings.seed, events=events).samples)
    report = Report("registry snapshots", {"events": events, "dataset": "agrawal"})
    for spec in SPECS:
        model = build_model(spec, "binary", settings.seed)
        for x, y in samples:
            model.learn_one(x, y)
        report.add(spec=spec, **_measure(registry, model, spec, repeats))
    return report
