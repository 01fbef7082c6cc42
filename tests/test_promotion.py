"""The promotion policy, its gates, the cool-down, and false promotions (A/A)."""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any

from river import base
from scipy import stats

from models.contest import Contest
from models.datasets import open_stream
from models.evaluation import Prequential
from models.learner import OnlineLearner, Slot
from models.promotion import GateReport, PairedLosses, PromotionPolicy, decide, paired_test
from models.schema import Event
from models.specs import build_model

POLICY = PromotionPolicy(
    min_samples=500,
    window=2000,
    margin=0.02,
    alpha=0.01,
    block=50,
    latency_budget=0.002,
    cooldown=3000,
)


def _paired(n: int, champion: float, challenger: float, seed: int = 0) -> PairedLosses:
    rng = random.Random(seed)
    p = PairedLosses(POLICY.window)
    for _ in range(n):
        noise = rng.gauss(0, 0.3)
        p.add(champion + noise + rng.gauss(0, 0.1), challenger + noise + rng.gauss(0, 0.1))
    return p


def test_clearly_better_challenger_is_promoted_with_evidence() -> None:
    d = decide(POLICY, _paired(1000, 0.6, 0.4), GateReport())
    assert d.promote and d.gate is None
    assert d.n == 1000 and d.mean_difference > 0.15 and d.p_value < 1e-6 and d.statistic > 5
    assert set(d.evidence()) >= {"n", "mean_difference", "statistic", "p_value", "gate"}


def test_too_few_samples_too_small_a_margin_or_no_significance_block() -> None:
    assert "fewer than 500" in decide(POLICY, _paired(400, 0.6, 0.4), GateReport()).reason
    small = decide(POLICY, _paired(2000, 0.600, 0.595), GateReport())
    assert not small.promote and "margin" in small.reason
    noisy = PromotionPolicy(min_samples=100, window=2000, margin=0.0, alpha=0.01, block=50)
    d = decide(noisy, _paired(100, 0.52, 0.50, seed=3), GateReport())
    assert not d.promote and "p-value" in d.reason


def test_paired_losses_keep_the_newest_window_as_it_slides() -> None:
    rng = random.Random(7)
    pairs = [(rng.random(), rng.random()) for _ in range(23)]
    p = PairedLosses(window=7)
    for n, (champion, challenger) in enumerate(pairs, 1):
        p.add(champion, challenger)
        kept = pairs[max(0, n - 7) : n]
        diffs = [a - b for a, b in kept]
        assert len(p) == len(kept)
        assert math.isclose(p.mean_difference(), math.fsum(diffs) / len(kept), abs_tol=1e-12)
        assert math.isclose(p.champion_loss(), math.fsum(a for a, _ in kept) / len(kept))
        first = len(diffs) % 3
        blocks = [math.fsum(diffs[i : i + 3]) / 3 for i in range(first, len(diffs), 3)]
        assert p.block_means(3) == blocks
    p.clear()
    assert len(p) == 0 and p.mean_difference() == 0.0 and p.block_means(3) == []


def test_a_nan_or_infinite_loss_counts_only_while_it_is_in_the_window() -> None:
    for bad in (math.inf, -math.inf, math.nan):
        p = PairedLosses(window=4)
        for pair in [(0.0, bad), (1.0, 0.5), (1.0, 0.7), (0.8, 0.8)]:
            p.add(*pair)
        assert not math.isfinite(p.mean_difference()), bad
        p.add(0.6, 0.6)  # the bad one leaves: the means are exact again
        assert math.isclose(p.mean_difference(), (0.5 + 0.3 + 0.0 + 0.0) / 4)
        assert math.isclose(p.champion_loss(), (1.0 + 1.0 + 0.8 + 0.6) / 4)
    both = PairedLosses(window=4)
    for pair in [(math.inf, 0.0), (0.0, math.inf)]:  # +inf and -inf: math.fsum would raise
        both.add(*pair)
    assert math.isnan(both.mean_difference())


def test_a_challenger_is_not_promoted_on_an_infinite_loss_or_after_it() -> None:
    """One infinite loss of the challenger, then a challenger better by 10%, short of the
    50% margin: never promoted, while the loss is in the window or after it left."""
    policy = PromotionPolicy(min_samples=100, window=200, block=10, margin=0.5)
    p = PairedLosses(policy.window)
    p.add(0.5, math.inf)
    decisions = []
    for _ in range(400):
        p.add(1.0, 0.9)
        decisions.append(decide(policy, p, GateReport()))
    assert not any(d.promote for d in decisions)
    inside, after = decisions[150], decisions[-1]  # 152 and 200 paired events
    assert "NaN, infinite" in inside.reason and (inside.statistic, inside.p_value) == (0, 1)
    assert "margin" in after.reason and math.isclose(after.mean_difference, 0.1)


def test_an_infinite_champion_loss_is_no_evidence_for_a_promotion() -> None:
    p = _paired(1000, 0.6, 0.4)
    p.add(math.inf, 0.4)
    d = decide(POLICY, p, GateReport())
    assert not d.promote and "NaN, infinite" in d.reason


def test_losses_too_large_to_square_or_sum_are_no_evidence_and_no_crash() -> None:
    """A regression prediction 1e80 off has a squared error of 1e160, whose square, or a sum
    of a few, is beyond the float range (``**`` and ``math.fsum`` raise there)."""
    policy = PromotionPolicy(min_samples=100, window=200, block=10)
    p = PairedLosses(policy.window)
    for n in range(150):
        p.add(1.0, 1e160 if n == 3 else 0.5)
    d = decide(policy, p, GateReport())
    assert not d.promote and "margin" in d.reason  # the challenger's mean loss is huge
    assert paired_test([1e300, -1e300, 1e300])[1] > policy.alpha
    huge = PairedLosses(policy.window)
    for _ in range(150):
        huge.add(1e308, 0.5)
    d = decide(policy, huge, GateReport())
    assert not d.promote and "too large to sum" in d.reason


def test_each_gate_blocks_an_otherwise_clear_promotion() -> None:
    paired = _paired(1000, 0.6, 0.4)
    for gates, name in [
        (GateReport(non_finite=1), "non_finite"),
        (GateReport(latency=0.01), "latency"),
        (GateReport(classes_ok=False), "classes"),
    ]:
        d = decide(POLICY, paired, gates)
        assert not d.promote and d.gate == name


class _Oracle(base.Classifier):
    """Peeks at feature ``truth``: a challenger that is clearly better, with a flaw to choose."""

    def __init__(self, flaw: str = "") -> None:
        self.flaw = flaw

    def learn_one(self, x: dict, y: Any) -> None:
        pass

    def predict_proba_one(self, x: dict) -> dict[Any, float]:
        p = 0.9 if x["truth"] else 0.1
        if self.flaw == "nan" and x["i"] % 100 == 0:
            p = math.nan
        if self.flaw == "slow":
            time.sleep(0.003)
        if self.flaw == "classes":  # a class no label ever had
            return {True: p, False: 1 - p, "maybe": 0.0}
        return {True: p, False: 1 - p}


def _contest(challenger: Any, n: int = 1500) -> OnlineLearner:
    rng = random.Random(1)
    champion = build_model("logreg", "binary", 0)
    lr = OnlineLearner(
        "binary",
        [
            Slot("logreg", champion, Prequential("binary", 100)),
            Slot("oracle", challenger, Prequential("binary", 100), "challenger"),
        ],
        policy=POLICY,
    )
    for i in range(n):
        truth = rng.random() < 0.5
        features = {"i": float(i), "truth": float(truth), "noise": rng.random()}
        lr.on_event(Event(f"e{i}", float(i), "a", features, truth))
    return lr


def test_gates_block_flawed_challengers_in_the_learner() -> None:
    good = _contest(_Oracle())
    assert good.candidate() is not None, "the flawless oracle is promotable"
    for flaw, gate in [("nan", "non_finite"), ("slow", "latency"), ("classes", "classes")]:
        lr = _contest(_Oracle(flaw), n=600 if flaw == "slow" else 1500)
        assert lr.candidate() is None
        decision = lr.decisions()["challenger"]
        assert decision.gate == gate, (flaw, decision)
        if flaw != "nan":  # NaN outputs make NaN losses: only the gate can judge those
            assert decision.p_value < POLICY.alpha, "blocked by the gate, not by the evidence"


def test_identical_challenger_is_never_promoted_across_20_seeds() -> None:
    promotions = 0
    for seed in range(20):
        lr = OnlineLearner(
            "binary",
            [
                Slot("logreg", build_model("logreg", "binary", seed), Prequential("binary", 100)),
                Slot(
                    "logreg",
                    build_model("logreg", "binary", seed),
                    Prequential("binary", 100),
                    "challenger",
                ),
            ],
            policy=POLICY,
        )
        for i, (x, y) in enumerate(open_stream("sea-drift", seed=seed, events=3000).samples):
            lr.on_event(Event(str(i), float(i), "a", x, y))
            if i % 250 == 0 and (c := lr.candidate()) is not None:
                lr.swap(*c, keep_old=True)
                promotions += 1
        decision = lr.decisions()["challenger"]
        assert decision.mean_difference == 0.0 and "margin" in decision.reason, (seed, decision)
    assert promotions == 0


def test_equal_but_noisy_models_are_rarely_promoted() -> None:
    """Correlated losses of equally good models (AR(1) noise): false promotion rate <= 5%."""
    promoted = 0
    for trial in range(200):
        rng = random.Random(trial)
        p = PairedLosses(POLICY.window)
        a = b = 0.0
        for _ in range(POLICY.window):
            a = 0.95 * a + rng.gauss(0, 0.05)
            b = 0.95 * b + rng.gauss(0, 0.05)
            p.add(0.5 + a, 0.5 + b)
        promoted += decide(POLICY, p, GateReport()).promote
    assert promoted <= 10


def test_the_paired_test_is_students_one_sided_t_test_on_the_block_means() -> None:
    rng = random.Random(5)
    for k in (2, 3, 10, 100):
        means = [rng.gauss(0.01, 0.05) for _ in range(k)]
        t, p = paired_test(means)
        expected = stats.ttest_1samp(means, 0.0, alternative="greater")
        assert math.isclose(t, expected.statistic, rel_tol=1e-9)
        assert math.isclose(p, expected.pvalue, rel_tol=1e-9)


def test_equal_models_pass_the_test_at_alpha_with_the_fewest_blocks_allowed() -> None:
    """With the normal's tail, two blocks (promote_min_samples=100) of equal models passed
    at alpha=0.01 about 13% of the time."""
    rng = random.Random(6)
    passed = sum(paired_test([rng.gauss(0, 1), rng.gauss(0, 1)])[1] < 0.01 for _ in range(20_000))
    assert 0.007 < passed / 20_000 < 0.013


def test_cooldown_stops_flapping_between_alternating_models() -> None:
    def run(cooldown: int) -> list[int]:
        policy = PromotionPolicy(
            min_samples=200, window=1000, margin=0.02, alpha=0.01, block=50, cooldown=cooldown
        )
        contest = Contest(policy)
        champion, challenger = 1, 2
        contest.enter(champion)
        contest.enter(challenger)
        rng = random.Random(5)
        swaps = []
        for n in range(20_000):
            a_better = (n // 1500) % 2 == 0  # the better model alternates every 1,500 events
            loss = {1: 0.3 if a_better else 0.6, 2: 0.6 if a_better else 0.3}
            noise = rng.gauss(0, 0.05)
            losses = {champion: loss[champion] + noise, challenger: loss[challenger] + noise}
            contest.record(champion, losses, True)
            if n % 50 == 0 and contest.best(champion, n) is not None:
                champion, challenger = challenger, champion
                contest.swapped(n)
                swaps.append(n)
        return swaps

    eager = run(cooldown=0)
    assert len(eager) >= 10, "without a cool-down the two models flap"
    calm = run(cooldown=5000)
    assert len(calm) >= 2
    assert all(b - a >= 5000 for a, b in itertools.pairwise(calm))
