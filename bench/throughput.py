"""Learn-flow throughput through Kafka against its baselines on the same events, the cost of
challengers, and scaling with Bytewax processes.

The learn flow runs as ``riverrun learn`` would (recovery on, a ``logreg`` champion and a
``logreg`` challenger). Flow throughput is events over the time between the first and the
last prediction on the topic (Kafka timestamps), so start-up is left out; wall time,
start-up included, is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.baselines import KernelModels, Models, bare_loop, kafka_loop, run_naive
from bench.harness import Report, timed
from bench.kafka_time import span
from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from riverrun.runner import run_learn
from riverrun.settings import Settings

CHAMPION, CHALLENGER = "logreg", "logreg"
BARE, KERNEL, CEILING, NAIVE, FLOW = (
    "bare River loop (no Kafka)",
    "bare loop on the flow's model path (shared scaler, kernels)",
    "plain Kafka loop around the flow's model path (no Bytewax, nothing else)",
    "naive Bytewax flow (per event, json)",
    "learn flow",
)
TOPICS = ("events", "labels", "predictions", "shadow", "deadletter", "drift")


@dataclass(frozen=True)
class Run:
    """One run over ``events`` events: steady events/s and wall seconds."""

    events: int
    per_second: float
    wall: float


def isolated(settings: Settings, tag: str, **overrides: Any) -> Settings:
    """Settings whose topics and model name belong to one benchmark run only."""
    return settings.override(
        {
            **{f"topic_{t}": f"{tag}-{t}" for t in TOPICS},
            "model_name": tag,
            "follow": False,
            "model_spec": CHAMPION,
            "challengers": (CHALLENGER,),
            **overrides,
        }
    )


def produce_stream(s: Settings, events: int, dataset: str, **request: Any) -> None:
    """Write ``events`` events of ``dataset`` (ids ``MODEL-N``) to the settings' topics."""
    produce(
        ProduceRequest(dataset, events, seed=s.seed, id_prefix=s.model_name, **request),
        s.bootstrap_servers,
        s.topic_events,
        s.topic_labels,
        partitions=s.partitions,
        progress=False,
    )


def produced(
    settings: Settings,
    events: int,
    dataset: str,
    tag: str,
    *,
    delay_labels: int = 0,
    **overrides: Any,
) -> Settings:
    """Isolated settings (``tag``, the dataset's task) whose topics hold ``events`` freshly
    produced events, with labels inline or ``delay_labels`` events late."""
    task = open_stream(dataset, seed=settings.seed, events=1).task
    s = isolated(settings, tag, task=task, **overrides)
    produce_stream(s, events, dataset, delay_labels=delay_labels)
    return s


def flow_run(settings: Settings, events: int, dataset: str, tag: str, **overrides: Any) -> Run:
    """The learn flow over ``events`` freshly produced events, to the end of them."""
    s = produced(settings, events, dataset, tag, **overrides)
    with timed() as t:
        run_learn(s)
    return Run(events, rate_of(s, events), t.seconds)


def rate_of(s: Settings, events: int) -> float:
    """Predictions/s on the settings' predictions topic, which must hold one per event."""
    out = span(s.bootstrap_servers, s.topic_predictions)
    if out.messages != events:
        raise RuntimeError(f"{s.topic_predictions} holds {out.messages} predictions, not {events}")
    return out.rate


def throughput(
    settings: Settings, *, events: int, rounds: int = 1, dataset: str = "agrawal"
) -> Report:
    """Events/s of the bare loops, the naive flow and the learn flow, and their ratios: each
    the best of ``rounds`` rounds that run all of them in turn (the least disturbed run, as
    the machine's noise only ever slows a run down), with the slowest beside it. The bare
    loop on the flow's model path is the floor under the flow's model work (the rest of
    the flow's time is its own machinery), and the plain Kafka loop around it the ceiling
    over any flow of these models here."""
    stream = open_stream(dataset, seed=settings.seed, events=events)
    task, specs = stream.task, (CHAMPION, CHALLENGER)
    samples = list(stream.samples)
    rates: dict[str, list[float]] = {BARE: [], KERNEL: [], CEILING: [], NAIVE: [], FLOW: []}
    for r in range(rounds):
        rates[BARE].append(events / bare_loop(samples, Models.build(specs, task, settings.seed)))
        kernel = KernelModels(Models.build(specs, task, settings.seed))
        rates[KERNEL].append(events / bare_loop(samples, kernel))
        rates[CEILING].append(ceiling_run(settings, events, dataset, f"tp-ceiling-{r}").per_second)
        rates[NAIVE].append(naive_run(settings, events, dataset, f"tp-naive-{r}").per_second)
        rates[FLOW].append(flow_run(settings, events, dataset, f"tp-flow-{r}").per_second)
    best = {name: max(each) for name, each in rates.items()}
    report = Report(
        "learn-flow throughput",
        {
            "events": events,
            "dataset": dataset,
            "models": f"{CHAMPION} + {CHALLENGER}, ADWIN",
            "rounds": rounds,
            "events_per_s_by_round": rates,
        },
    )
    for name, each in rates.items():
        report.add(
            setup=name,
            events_per_s=best[name],
            slowest_round=min(each),
            vs_bare=best[name] / best[BARE],
            vs_naive=best[name] / best[NAIVE],
        )
    return report


def naive_run(settings: Settings, events: int, dataset: str, tag: str) -> Run:
    """The naive flow over ``events`` freshly produced events, to the end of them."""
    s = produced(settings, events, dataset, tag)
    models = Models.build((CHAMPION, CHALLENGER), s.task, s.seed)
    wall = run_naive(s.bootstrap_servers, s.topic_events, s.topic_predictions, models)
    return Run(events, rate_of(s, events), wall)


def ceiling_run(settings: Settings, events: int, dataset: str, tag: str) -> Run:
    """The plain Kafka loop over ``events`` freshly produced events, to the end of them: the
    most any flow of these models could do here, Kafka in and out included."""
    s = produced(settings, events, dataset, tag)
    models = KernelModels(Models.build((CHAMPION, CHALLENGER), s.task, s.seed))
    sinks = [s.topic_predictions, s.topic_shadow]
    wall = kafka_loop(s.bootstrap_servers, s.topic_events, sinks, models)
    return Run(events, rate_of(s, events), wall)


def scaling(settings: Settings, *, events: int, dataset: str = "agrawal") -> Report:
    """Learn-flow events/s with 1 and 2 Bytewax processes on 2 partitions."""
    report = Report("scaling with processes", {"events": events, "dataset": dataset})
    alone = 0.0
    for processes in (1, 2):
        run = flow_run(
            settings, events, dataset, f"sc{processes}", processes=processes, partitions=2
        )
        alone = alone or run.per_second
        report.add(
            processes=processes,
            partitions=2,
            events_per_s=run.per_second,
            wall_s=run.wall,
            vs_one=run.per_second / alone,
        )
    return report


def challenger_cost(settings: Settings, *, events: int, dataset: str = "agrawal") -> Report:
    """Learn-flow events/s with 0, 1 and 3 ``logreg`` challengers, relative to none."""
    report = Report("cost of challengers", {"events": events, "dataset": dataset})
    alone = 0.0
    for n in (0, 1, 3):
        run = flow_run(
            settings, events, dataset, f"cc{n}", challengers=("logreg",) * n, auto_promote=False
        )
        alone = alone or run.per_second
        report.add(
            challengers=n, events_per_s=run.per_second, vs_champion_alone=run.per_second / alone
        )
    return report
