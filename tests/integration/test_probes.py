"""When the canary's probe takes blue's and green's answers for comparable: by the data each was
made from (``rollout.probes.unlike_data``), on a real PostgreSQL and real registered versions."""

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.training import train
from pefm.rollout.probes import unlike_data
from pefm.serving.inference import _utc_text
from pefm.storage.observations import write_observations

SERIES = ["realgdp", "unemp", "infl"]


@pytest.fixture
def revised(conn):
    """An AR (one model per series) and a VAR (the three together), then infl revised now: the
    moment of that write, to the microsecond."""
    load_bundled(conn, bundled(SERIES))
    spec = BacktestSpec(h=2, windows=4)
    ar, _ = train(conn, "ar", SERIES, as_of=datetime(2000, 1, 1, tzinfo=UTC), spec=spec)
    var, _ = train(conn, "var", SERIES, as_of=datetime(2000, 1, 1, tzinfo=UTC), spec=spec)
    conn.commit()
    time.sleep(3)  # the data loaded above are not "between" the moments the test asks about
    row = pd.DataFrame({"series_id": ["infl"], "ts": [pd.Timestamp("1990-01-01")], "value": [42.0]})
    written = write_observations(conn, row).vintage
    conn.commit()
    return ar, var, written


def answer(version, moment: datetime) -> dict:
    """What the probe reads of an answer: its version and the moment its data were read as of,
    written as a revision writes it."""
    return {"model_version": version if isinstance(version, str) else version.id, "data_as_of": _utc_text(moment)}


def test_only_a_change_of_what_the_series_is_estimated_with_makes_two_answers_unlike(conn, revised):
    ar, var, written = revised
    before, after = written - timedelta(seconds=2), written + timedelta(seconds=2)
    # univariate: unemp's forecast does not depend on infl's data, infl's does
    assert unlike_data(conn, [("unemp", answer(ar, before), answer(ar, after))]) == set()
    assert unlike_data(conn, [("infl", answer(ar, before), answer(ar, after))]) == {"infl"}
    # jointly estimated: unemp's forecast moves with infl's data
    assert unlike_data(conn, [("unemp", answer(var, before), answer(var, after))]) == {"unemp"}
    assert unlike_data(conn, [("unemp", answer(ar, before), answer(var, after))]) == {"unemp"}  # either version's group
    # a version the registry does not know: the series alone
    assert unlike_data(conn, [("unemp", answer("gone", before), answer("gone", after))]) == set()
    # stamps name their microsecond: a read a microsecond before the write and one at it are unlike, two from it alike
    tick = timedelta(microseconds=1)
    assert unlike_data(conn, [("infl", answer(ar, written - tick), answer(ar, written))]) == {"infl"}
    assert unlike_data(conn, [("infl", answer(ar, written), answer(ar, written + tick))]) == set()
    assert unlike_data(conn, [("infl", answer(ar, after), answer(ar, after))]) == set()  # the same moment
    assert unlike_data(conn, [("infl", {"data_as_of": None}, answer(ar, after))]) == set()  # unstamped
