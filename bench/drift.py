"""Concept-drift detection quality on streams with known abrupt drifts, over 10 seeds."""

from __future__ import annotations

from bench.harness import Report
from models.drift_quality import measure


def detection(*, detectors: tuple[str, ...] = ("adwin",), seeds: int = 10) -> Report:
    """Mean delay, misses and false alarms per 100,000 events, with and without drift."""
    report = Report(
        "concept-drift detection",
        {
            "dataset": "agrawal-switch",
            "model": "logreg",
            "seeds": seeds,
            "drift_every": 5000,
            "events": 25_000,
            "control_events": 20_000,
        },
    )
    for detector in detectors:
        drifting = measure("agrawal-switch", "logreg", range(seeds), 25_000, 5000, detector)
        control = measure("agrawal-switch", "logreg", range(seeds), 20_000, 10**9, detector)
        report.add(
            detector=detector,
            drifts=drifting.drifts,
            missed=drifting.missed,
            mean_delay=drifting.mean_delay,
            max_delay=max(drifting.delays, default=0),
            false_alarms_per_100k=drifting.false_alarms_per_100k,
            control_false_alarms_per_100k=control.false_alarms_per_100k,
        )
    return report
