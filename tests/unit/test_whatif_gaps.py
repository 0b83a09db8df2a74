"""What-if histories over a series with a missing period: the change across the gap is in no
period's stored value (NaN), so a history that fills the gap moved the level-space anchor by the
whole across-gap change (stored levels 100/110/-/130/140 filled with +5, +15: 160, not 140)."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.calendars import calendar_attrs
from pefm.data.frequency import Frequency
from pefm.data.transforms import apply_transform
from pefm.serving.http import ApiError
from pefm.serving.whatif import _with_history

Q = Frequency.QUARTERLY
LEVELS = pd.Series(
    [100.0, 110.0, 130.0, 140.0],  # 2009-07-01 missing
    index=pd.DatetimeIndex(["2009-01-01", "2009-04-01", "2009-10-01", "2010-01-01"]),
    name="gdp",
)


def panel(transform: str) -> pd.DataFrame:
    """The series as ``load_panel`` reads it: model space, anchored at its last stored level."""
    frame = apply_transform(LEVELS, transform, Q, keep_newest=True).to_frame()
    frame.attrs = {
        "anchors": {"gdp": float(LEVELS.iloc[-1])},
        "transforms": {"gdp": transform},
        "frequencies": {"gdp": Q.value},
        **calendar_attrs({"gdp": ""}),
    }
    return frame


def anchor(transform: str, history: list[dict], stored=lambda: LEVELS) -> float:
    return _with_history(panel(transform), "gdp", history, Q, stored).attrs["anchors"]["gdp"]


def test_a_history_that_fills_a_gap_with_the_stored_levels_leaves_the_anchor_there():
    assert anchor("diff", [{"ts": "2009-07-01", "value": 5.0}, {"ts": "2009-10-01", "value": 15.0}]) == 140.0
    # other levels through the gap move everything after it by the difference
    assert anchor("diff", [{"ts": "2009-07-01", "value": 5.0}, {"ts": "2009-10-01", "value": 25.0}]) == 150.0
    steps = [400 * np.log(115 / 110), 400 * np.log(130 / 115)]  # annualized log growth, quarterly
    history = [{"ts": "2009-07-01", "value": steps[0]}, {"ts": "2009-10-01", "value": steps[1]}]
    assert anchor("log_diff_ann", history) == pytest.approx(140.0, rel=1e-12)
    # through the end: the newest stored change is the last stored level's
    through = [*history[:1], {"ts": "2009-10-01", "value": steps[1]}, {"ts": "2010-01-01", "value": 0.0}]
    assert anchor("log_diff_ann", through) == pytest.approx(130.0, rel=1e-12)


def test_stored_changes_outside_the_history_are_kept_and_levels_read_only_for_a_gap():
    def unread() -> pd.Series:
        raise AssertionError("a history over stored changes only reads no levels")

    # replacing the change into 2009-04 (+10 -> +20); the change across the later gap is kept
    assert anchor("diff", [{"ts": "2009-04-01", "value": 20.0}], unread) == 150.0
    assert anchor("diff", [{"ts": "2010-04-01", "value": 7.0}], unread) == 147.0  # extended
    # a history ending inside the gap: the stored change across it is kept as well
    assert anchor("diff", [{"ts": "2009-07-01", "value": 5.0}]) == 145.0


def test_a_history_given_out_of_date_order_is_taken_in_date_order():
    """Taken in the order given, a history sent latest first moved the anchor by the whole change
    across the gap (160, not 140), and one whose first date followed a stored value after its
    last raised an IndexError: a 500 (found by the inference fuzz test)."""
    backwards = [{"ts": "2009-10-01", "value": 15.0}, {"ts": "2009-07-01", "value": 5.0}]
    assert anchor("diff", backwards) == anchor("diff", backwards[::-1]) == 140.0
    with pytest.raises(ApiError) as refused:  # 2009-04 then 2010-04: it leaves 2009-07 to 2010-01 out
        anchor("diff", [{"ts": "2010-04-01", "value": 7.0}, {"ts": "2009-04-01", "value": 20.0}])
    assert refused.value.status == 422 and refused.value.details[0]["field"] == "history[1].ts"
