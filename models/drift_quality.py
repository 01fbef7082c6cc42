"""How well a concept-drift detector does on streams whose drifts are known: detection
delay, missed drifts and false alarms, over many seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.datasets import open_stream
from models.drift import DriftWatch
from models.evaluation import Prequential
from models.learner import OnlineLearner, Slot
from models.schema import Event
from models.specs import build_model

MAX_DELAY = 2000  # an alarm later than this after a drift counts as a miss (and false)


@dataclass
class DriftQuality:
    """Detection figures over every run measured."""

    events: int = 0
    drifts: int = 0
    delays: list[int] = field(default_factory=list)
    missed: int = 0
    false_alarms: int = 0

    @property
    def mean_delay(self) -> float:
        """Mean events from a drift to its first alarm (detected drifts only)."""
        return sum(self.delays) / len(self.delays) if self.delays else 0.0

    @property
    def false_alarms_per_100k(self) -> float:
        """False alarms per 100,000 events."""
        return self.false_alarms * 100_000 / self.events if self.events else 0.0


def alarms(
    dataset: str,
    spec: str,
    seed: int,
    events: int,
    drift_every: int,
    detector: str = "adwin",
    min_gap: int = 1000,
) -> tuple[list[int], tuple[int, ...]]:
    """Positions of the concept-drift alarms on the champion, and the true drift positions."""
    stream = open_stream(dataset, seed=seed, events=events, drift_every=drift_every)
    watch = DriftWatch(detector, min_gap=min_gap, data_window=0)
    slot = Slot(spec, build_model(spec, stream.task, seed), Prequential(stream.task, 100))
    learner = OnlineLearner(stream.task, [slot], drift=watch)
    for i, (x, y) in enumerate(stream.samples):
        learner.on_event(Event(str(i), float(i), "", x, y))
    return [s.position - 1 for s in watch.signals], stream.drifts


def measure(
    dataset: str, spec: str, seeds: range, events: int, drift_every: int, detector: str = "adwin"
) -> DriftQuality:
    """Delays, misses and false alarms of ``detector`` on ``spec``'s errors over ``seeds``."""
    quality = DriftQuality()
    for seed in seeds:
        fired, drifts = alarms(dataset, spec, seed, events, drift_every, detector)
        quality.events += events
        quality.drifts += len(drifts)
        claimed = set()
        for pos in drifts:
            hit = next((a for a in fired if pos <= a < pos + MAX_DELAY), None)
            if hit is None:
                quality.missed += 1
            else:
                quality.delays.append(hit - pos)
                claimed.add(hit)
        quality.false_alarms += len([a for a in fired if a not in claimed])
    return quality
