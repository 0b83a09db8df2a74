"""The bundled loaders read the real datasets from the installed packages (offline)."""

import pandas as pd
import pytest

from pefm.data.bundled import BUNDLED, bundled
from pefm.data.frequency import Frequency, off_frequency

EXPECTED = {
    # id: (frequency, first, last, count)
    "realgdp": (Frequency.QUARTERLY, "1959-01-01", "2009-07-01", 203),
    "infl": (Frequency.QUARTERLY, "1959-04-01", "2009-07-01", 202),
    "realint": (Frequency.QUARTERLY, "1959-04-01", "2009-07-01", 202),
    "sp500": (Frequency.BUSINESS_DAILY, "1999-01-04", "2018-12-31", 5031),
    "nasdaq": (Frequency.BUSINESS_DAILY, "1999-01-04", "2018-12-31", 5031),
    "core_cpi": (Frequency.MONTHLY, "1957-01-01", "2018-11-01", 743),
    "aaa": (Frequency.MONTHLY, "1919-01-01", "2018-12-01", 1200),
    "baa": (Frequency.MONTHLY, "1919-01-01", "2018-12-01", 1200),
    "wti": (Frequency.BUSINESS_DAILY, "1986-01-02", "2019-01-03", 8321),  # 290 holidays dropped
}


@pytest.mark.parametrize("series_id", sorted(EXPECTED))
def test_bundled_series_have_the_right_shape_and_frequency(series_id: str):
    freq, first, last, count = EXPECTED[series_id]
    [item] = bundled([series_id])
    values = item.load()
    assert item.meta.frequency is freq
    assert (values.index[0], values.index[-1], len(values)) == (
        pd.Timestamp(first),
        pd.Timestamp(last),
        count,
    )
    assert values.index.is_monotonic_increasing and values.index.is_unique
    assert values.notna().all()
    assert not off_frequency(values.index, freq).any()


def test_every_macrodata_series_the_panel_needs_is_bundled():
    ids = {b.meta.id for b in BUNDLED}
    assert {
        "realgdp",
        "realcons",
        "realinv",
        "realgovt",
        "realdpi",
        "cpi",
        "m1",
        "tbilrate",
        "unemp",
        "infl",
        "realint",
        "sp500",
        "nasdaq",
        "core_cpi",
        "aaa",
        "baa",
        "wti",
    } <= ids


def test_values_are_the_published_ones():
    [gdp] = bundled(["realgdp"])
    assert gdp.load().iloc[0] == 2710.349  # 1959Q1 real GDP in macrodata
    [sp] = bundled(["sp500"])
    assert sp.load().loc["2018-12-31"] == pytest.approx(2506.85, abs=0.01)


def test_unknown_bundled_id_is_refused():
    with pytest.raises(ValueError, match="not a bundled series: gdp"):
        bundled(["gdp"])
