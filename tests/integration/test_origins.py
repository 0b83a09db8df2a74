"""Forecasts at past origins: the backtest's forecasts are reused where they are what an as-of
request makes, and stored as-of forecasts are read back by shape."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.origins import store_forecast, stored_forecast
from pefm.forecasting.panel import load_panel
from pefm.forecasting.training import estimator, train
from pefm.storage.observations import last_changed, write_observations
from pefm.storage.series import SeriesMeta, upsert_series

SERIES = ["realgdp", "unemp"]
Q = Frequency.QUARTERLY


@pytest.fixture
def version(conn):
    load_bundled(conn, bundled(SERIES))
    trained, _ = train(conn, "ar", SERIES, as_of=datetime(2000, 1, 1, tzinfo=UTC), spec=BacktestSpec(h=2, windows=4))
    return trained


def test_a_backtest_forecast_is_the_as_of_forecast_of_its_cutoff_and_is_reused(conn, version):
    cutoff = pd.Timestamp("1999-01-01")  # one of the 4 backtest cutoffs (1998Q3 .. 1999Q2)
    known_at = datetime(1999, 4, 1, tzinfo=UTC)  # the end of 1999Q1: when that data were known
    rows = stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, known_at, "model", 2, (80, 95))
    assert rows is not None and [r["ds"] for r in rows] == ["1999-04-01T00:00:00Z", "1999-07-01T00:00:00Z"]
    # what the version's family makes when estimated on the data known then, computed here
    made = estimator(version.family, version.params).fit(load_panel(conn, SERIES, as_of=known_at)).predict(2)
    made = made[made["series_id"] == "unemp"]
    assert [r["mean"] for r in rows] == pytest.approx(made["mean"].tolist(), rel=1e-9)
    assert [r["hi-95"] for r in rows] == pytest.approx(made["hi-95"].tolist(), rel=1e-9)
    # not reused: longer than the backtest's h, level space, or before that data were known
    assert stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, known_at, "model", 3, (80,)) is None
    assert stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, known_at, "level", 2, (80,)) is None
    early = datetime(1999, 3, 1, tzinfo=UTC)
    assert stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, early, "model", 2, (80,)) is None
    # a revision known before the request's moment means other data: no reuse
    revised = pd.DataFrame({"series_id": ["unemp"], "ts": [pd.Timestamp("1998-10-01")], "value": [9.9]})
    write_observations(conn, revised, vintage=datetime(1999, 5, 1, tzinfo=UTC))
    later = datetime(1999, 6, 1, tzinfo=UTC)
    assert stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, later, "model", 2, (80,)) is None
    assert stored_forecast(conn, version, "unemp", Q, SERIES, cutoff, known_at, "model", 2, (80,)) is not None


def test_stored_forecasts_answer_requests_that_fit_their_shape(conn, version):
    cutoff, known_at = pd.Timestamp("1990-01-01"), datetime(1990, 5, 1, tzinfo=UTC)
    rows = [
        {"ds": f"{ds:%Y-%m-%d}T00:00:00Z", "mean": 1.0 + i, "lo-80": 0.0, "hi-80": 9.0, "lo-95": -1.0, "hi-95": 10.0}
        for i, ds in enumerate(pd.date_range("1990-04-01", periods=12, freq="QS"))
    ]
    made_from = last_changed(conn, SERIES, known_at)
    store_forecast(conn, version.id, "realgdp", cutoff, known_at, "level", (80, 95), rows, since=made_from)
    got = stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, known_at, "level", 3, (95,))
    assert got == [{"ds": r["ds"], "mean": r["mean"], "lo-95": -1.0, "hi-95": 10.0} for r in rows[:3]]
    assert stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, known_at, "level", 13, (95,)) is None
    assert stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, known_at, "level", 2, (50,)) is None
    # asked as of another moment with the same last observation: the same data, unless something
    # became known in between
    assert stored_forecast(
        conn, version, "realgdp", Q, SERIES, cutoff, datetime(1990, 6, 1, tzinfo=UTC), "level", 3, (95,)
    )
    revised = pd.DataFrame({"series_id": ["unemp"], "ts": [pd.Timestamp("1980-01-01")], "value": [1.0]})
    write_observations(conn, revised, vintage=datetime(1990, 5, 15, tzinfo=UTC))
    conn.commit()  # the remade forecast below is kept after the write, as a request after it would
    later = datetime(1990, 6, 1, tzinfo=UTC)
    assert stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, later, "level", 3, (95,)) is None
    # made again from the data known then, it takes the old one's place
    remade = [{**r, "mean": r["mean"] + 0.5} for r in rows]
    store_forecast(
        conn, version.id, "realgdp", cutoff, later, "level", (80, 95), remade, since=last_changed(conn, SERIES, later)
    )
    got = stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, later, "level", 3, (95,))
    assert [r["mean"] for r in got] == [r["mean"] for r in remade[:3]]


def test_reading_kept_forecasts_again_and_again_never_scans_all_observations(conn, version):
    """A replica reads kept forecasts request after request on the same pooled connection, where
    psycopg prepares a statement from its sixth run and PostgreSQL may then plan it once for any
    parameters. Planned so, the check for writes after a kept forecast scanned every observation
    of every series (its EXISTS looks cheap for an unknown series, and finds nothing), 45 ms per
    lookup beside 900k other rows; planned with its values it reads the series' index."""
    upsert_series(conn, SeriesMeta(id="daily", name="Daily", frequency=Frequency.DAILY))
    days = pd.date_range("1800-01-01", periods=50_000, freq="D")
    write_observations(conn, pd.DataFrame({"series_id": "daily", "ts": days, "value": 1.0}))
    conn.execute("ANALYZE observations")
    cutoff, known_at = pd.Timestamp("1990-01-01"), datetime(1990, 5, 1, tzinfo=UTC)
    rows = [{"ds": "1990-04-01T00:00:00Z", "mean": 1.0, "lo-80": 0.0, "hi-80": 2.0, "lo-95": -1.0, "hi-95": 3.0}]
    store_forecast(conn, version.id, "realgdp", cutoff, known_at, "level", (80, 95), rows, since=datetime.now(UTC))
    scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'observations'"
    with conn.transaction():  # the counts are this transaction's
        before = conn.execute(scans).fetchone()[0]
        for _ in range(20):
            assert stored_forecast(conn, version, "realgdp", Q, SERIES, cutoff, known_at, "level", 1, (80,))
        assert conn.execute(scans).fetchone()[0] == before


def test_a_monthly_series_backtested_beside_a_quarterly_one_sees_only_what_was_known_then(conn):
    """The loader read the whole group as known at the quarter's end: a monthly cutoff saw revisions
    published up to two months after it, and the backtest's forecasts, later served as as-of
    answers, were made from them."""
    from pefm.forecasting.training import run_backtest

    upsert_series(conn, SeriesMeta("mon", "mon", Frequency.MONTHLY))
    upsert_series(conn, SeriesMeta("qtr", "qtr", Frequency.QUARTERLY))
    months = pd.date_range("2000-01-01", periods=60, freq="MS")
    quarters = pd.date_range("1995-01-01", periods=60, freq="QS")
    for series_id, stamps, step in (("mon", months, "MS"), ("qtr", quarters, "QS")):
        for n, ts in enumerate(stamps):  # each value known once its period has ended
            rows = pd.DataFrame({"series_id": [series_id], "ts": [ts], "value": [float(n)]})
            write_observations(conn, rows, vintage=(ts + pd.tseries.frequencies.to_offset(step)).tz_localize("UTC"))
    revised = pd.DataFrame({"series_id": ["mon"], "ts": [pd.Timestamp("2004-07-01")], "value": [999.0]})
    write_observations(conn, revised, vintage=pd.Timestamp("2004-09-01", tz="UTC"))  # after August's cutoff
    spec = BacktestSpec(h=1, windows=6)
    together = run_backtest(conn, "naive", ["mon", "qtr"], spec, as_of=datetime(2005, 6, 1, tzinfo=UTC)).results
    row = together[(together["series_id"] == "mon") & (together["cutoff"] == pd.Timestamp("2004-07-01"))]
    assert row["mean"].tolist() == [54.0]  # July as known on 2004-08-01, not its September revision


def test_training_waits_for_a_write_stamped_before_it_began(db, conn):
    """A write stamped before training took its moment, but committed after training read the data,
    was missed while the version's data_as_of said it was known (and no replica re-conditioned on
    it): training waits for it, and sees it."""
    import threading

    upsert_series(conn, SeriesMeta("qtr", "qtr", Frequency.QUARTERLY))
    stamps = pd.date_range("1995-01-01", periods=40, freq="QS")
    write_observations(conn, pd.DataFrame({"series_id": "qtr", "ts": stamps, "value": range(40)}))
    conn.commit()
    trained = []
    with db.connection() as writer, writer.transaction():
        late = pd.DataFrame({"series_id": ["qtr"], "ts": [stamps[-1] + pd.offsets.QuarterBegin()], "value": [123.0]})
        write_observations(writer, late)  # stamped and holding its series' lock, not committed
        training = threading.Thread(target=lambda: trained.append(train(conn, "naive", ["qtr"], spec=None)[0]))
        training.start()
        training.join(3)
        assert training.is_alive()  # it waits for the write, which commits as the block ends
    training.join(60)
    with db.connection() as reader:
        assert load_panel(reader, ["qtr"], as_of=trained[0].data_as_of)["qtr"].iloc[-1] == 123.0
