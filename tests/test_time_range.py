"""Event times are taken from year 1 to the end of year 9999 (UTC), the times a date can be
told for: every time an entry point accepts can be filed by the offline store, which once
stopped the learn flow, at every restart, on a time in the year 17814."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from models.learner import LabelledRow
from models.offline_store import OfflineStore
from models.schema import EARLIEST_TIME, LATEST_TIME, InvalidInput, check_time


def test_the_first_and_last_times_taken_are_filed_by_date(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path, "binary", max_bytes=1)
    times = [check_time(EARLIEST_TIME), check_time(LATEST_TIME)]
    store.take([LabelledRow(f"r{i}", t, "e", {"x": 1.0}, True, []) for i, t in enumerate(times)])
    store.close()
    folders = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert folders == ["date=0001-01-01/hour=00", "date=9999-12-31/hour=23"]
    assert sum(pq.read_table(p).num_rows for p in tmp_path.rglob("*.parquet")) == 2


@pytest.mark.parametrize(
    "when",
    [
        math.nextafter(LATEST_TIME, math.inf),
        math.nextafter(EARLIEST_TIME, -math.inf),
        5e11,
        -1e11,
    ],
)
def test_times_past_the_dates_a_calendar_holds_are_refused(when: float) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_time(when)
    assert refused.value.reason == "bad_field"
