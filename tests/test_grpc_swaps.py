"""Live swaps: 50 promotions under continuous load from several client threads, not one
failed request, every answer from a version that was serving, and each new champion
answering in its turn (how soon is measured by the benchmark, bench/serving.py)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from grpc_api.client import ScoringClient
from models.datasets import open_stream
from models.specs import build_model
from tests.helpers import wait_for
from tests.serving import registry, running

PROMOTIONS = 50
THREADS = 4


@dataclass
class Call:
    """One answered request: when it was sent and answered, and who answered."""

    sent: float
    answered: float
    version: int
    p_true: float


def _versions(settings: Any) -> tuple[dict[int, float], dict[str, float]]:
    """51 versions of one logreg, each 10 events further on: P(true) of a probe by version."""
    reg = registry(settings)
    model = build_model("logreg", "binary", 0)
    samples = open_stream("phishing", seed=0, events=(PROMOTIONS + 1) * 10).samples
    probe: dict[str, float] = {}
    expected = {}
    for i, (x, y) in enumerate(samples):
        probe = probe or x
        model.learn_one(x, y)
        if i % 10 == 9:
            info = reg.register(settings.model_name, model, spec="logreg", task="binary")
            expected[info.version] = model.predict_proba_one(probe)[True]
    return expected, probe


def test_fifty_promotions_under_load_fail_no_request(make_settings: Any) -> None:
    s = make_settings()
    expected, probe = _versions(s)
    versions = sorted(expected)
    reg = registry(s)
    reg.move_alias(s.model_name, "champion", versions[0], actor="test", reason="first")
    stop = threading.Event()
    calls: list[list[Call]] = [[] for _ in range(THREADS)]
    failures: list[str] = []

    with running(s) as (server, client):

        def load(out: list[Call]) -> None:
            with ScoringClient(server.target) as own:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        answer = own.predict(probe)
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
                        continue
                    out.append(Call(sent, time.monotonic(), answer.version, answer.proba["true"]))

        threads = [threading.Thread(target=load, args=(c,)) for c in calls]
        for t in threads:
            t.start()
        promoted_at = {versions[0]: 0.0}
        seen_at: dict[int, float] = {}
        try:
            wait_for(lambda: all(calls), 10, "every client thread to be answered")
            for version in versions[1:]:
                promoted_at[version] = time.monotonic()
                reg.move_alias(s.model_name, "champion", version, actor="test", reason="load")
                answers_now = lambda v=version: client.predict(probe).version == v  # noqa: E731
                wait_for(answers_now, 30, f"v{version} to answer after its promotion", every=0.001)
                seen_at[version] = time.monotonic()
                wait_for(  # each champion serves the load before the next swap: it never stops
                    lambda v=version: any(c.version == v for got in calls for c in got[-50:]),
                    10,
                    f"the load to be answered by v{version}",
                    every=0.001,
                )
        finally:
            stop.set()
            for t in threads:
                t.join()

    assert failures == [], failures[:5]
    answered = [c for per_thread in calls for c in per_thread]
    assert {c.version for c in answered} == set(versions), "every champion served the load"
    successor = dict(itertools.pairwise(versions))
    for call in answered:
        # The version served from its promotion until this server had swapped in the next.
        began = promoted_at[call.version]
        until = seen_at.get(successor.get(call.version, -1), float("inf"))
        assert began <= call.answered and call.sent <= until, (call, began, until)
        assert abs(call.p_true - expected[call.version]) <= 1e-12, "answer and version agree"
    for per_thread in calls:
        served = [c.version for c in per_thread]
        assert served == sorted(served), "a thread never goes back to an older version"
