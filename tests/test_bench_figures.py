"""How the bench turns what it saw into figures (no servers: the arithmetic alone)."""

from __future__ import annotations

from bench.serving import Promoter


def test_a_promotion_answered_only_after_its_run_of_promotions_ended_is_left_out() -> None:
    """The last promotion of a round is answered only when the next round measures again,
    many seconds later: that is no swap time."""
    promoter = Promoter(registry=None, versions=[1, 2])  # type: ignore[arg-type]  # lags only
    promoter.promoted = [(0.0, 1), (1.0, 2)]
    promoter.stopped = [1.5]
    seen = [(0.004, 1), (0.5, 1), (20.0, 2)]
    assert promoter.lags(seen) == [0.004]
