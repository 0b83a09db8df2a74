"""What a forecast says it was made from, against writes that land while it is made: a
re-conditioning read "as of now" without waiting for a write already stamped, a kept as-of
forecast stamped with the moment it was stored, and a version's data taken as seen up to its
registration. Each let a write its data lack pass as seen, for good."""

import threading
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pefm.config import Settings
from pefm.data.frequency import Frequency, period_end
from pefm.forecasting.origins import stored_forecast
from pefm.forecasting.registry import promote
from pefm.forecasting.training import estimator, train
from pefm.serving import whatif
from pefm.serving.cache import open_cache
from pefm.serving.freshness import condition_on_latest
from pefm.serving.inference import ModelServer
from pefm.storage.observations import write_observations
from pefm.storage.series import SeriesMeta, upsert_series
from tests.signing_keys import VERIFY_KEYS

Q = Frequency.QUARTERLY
STAMPS = pd.date_range("1990-01-01", periods=60, freq="QS")  # to 2004-10-01


@pytest.fixture
def series(conn):
    """A quarterly series, each value known once its quarter ended."""
    upsert_series(conn, SeriesMeta("qtr", "qtr", Q))
    vintages = period_end(STAMPS, Q).tz_localize("UTC")
    values = 100.0 + np.random.default_rng(7).standard_normal(60).cumsum()
    write_observations(conn, pd.DataFrame({"series_id": "qtr", "ts": STAMPS, "value": values, "vintage": vintages}))
    conn.commit()
    return "qtr"


def test_re_conditioning_waits_for_a_write_stamped_before_it_reads(db, conn, series):
    """It read as of ``now()`` at once: a write stamped earlier, committed later, was missing from
    forecasts whose data_as_of came after its vintage."""
    from pefm.forecasting.panel import load_panel

    model = estimator("naive", {}).fit(load_panel(conn, [series]))
    updates = []
    with db.connection() as writer, writer.transaction():
        late = pd.DataFrame({"series_id": [series], "ts": [pd.Timestamp("2005-01-01")], "value": [7.0]})
        stamped = write_observations(writer, late).vintage  # holding its series' lock, not committed
        reading = threading.Thread(target=lambda: updates.append(condition_on_latest(model, db, [series])))
        reading.start()
        reading.join(2)
        assert reading.is_alive()  # it waits for the write, which commits as the block ends
    reading.join(60)
    rows, anchor, data_as_of = updates[0][series]
    assert data_as_of > stamped and anchor == 7.0
    assert rows[0]["ds"].startswith("2005-04-01")  # forecast from the new point


def test_a_kept_as_of_forecast_gives_way_to_a_write_backdated_while_it_was_made(db, conn, series):
    """The forecast was kept stamped with the moment it was stored: a backdated write committed
    while it was estimated came before that, so every later request took the kept forecast, which
    lacks the write, for the data known then."""
    version, _ = train(conn, "ar", [series], spec=None)
    promote(conn, version.id)
    conn.commit()
    settings = Settings.from_env({"PEFM_DATABASE_URL": db.url, "PEFM_VERIFY_KEYS": VERIFY_KEYS})
    server = ModelServer(settings, db, open_cache(settings, None))
    server.load()
    server.wait_for_model()
    as_of = datetime(2000, 2, 15, tzinfo=UTC)
    estimated_at = whatif._estimated_at

    def estimated_while_a_write_lands(*args, **kwargs):
        model = estimated_at(*args, **kwargs)
        with db.connection() as admin:  # an admin's correction of 1999, dated before as_of
            fix = pd.DataFrame({"series_id": [series], "ts": [pd.Timestamp("1999-07-01")], "value": [50.0]})
            write_observations(admin, fix, vintage=datetime(2000, 1, 15, tzinfo=UTC))
        return model

    whatif._estimated_at = estimated_while_a_write_lands
    try:
        changed = whatif.known_changed(server, series, as_of)
        whatif.model_forecast(server, series, server.series[series], 1, (80,), as_of, changed, None, "model")
    finally:
        whatif._estimated_at = estimated_at
    cutoff = pd.Timestamp("1999-10-01")  # the last value known on 2000-02-15
    assert stored_forecast(conn, version, series, Q, [series], cutoff, as_of, "model", 1, (80,)) is None


def test_training_holds_no_transaction_open_and_dates_its_version_by_its_read(db, conn, series):
    """Training held one transaction from its first read to its registration, with minutes of
    backtest and fit in between: its tables' locks held all along (a migration, and every query
    queued behind it, waited for it) and a server's ``idle_in_transaction_session_timeout`` ended
    it. Each read is now a transaction of its own, the registration is left for the caller to
    commit, and the version is dated by the moment its data were read: a write stamped during
    the backtest, backdated to a moment it covers, is one it did not see."""
    from psycopg.pq import TransactionStatus

    from pefm.forecasting.backtest import BacktestSpec
    from pefm.serving.freshness import changed_since_training

    between = []

    def on_window(cutoff):
        between.append(conn.info.transaction_status)
        if len(between) == 1:
            with db.connection() as writer:
                revision = {"series_id": [series], "ts": [STAMPS[10]], "value": [1.0]}
                write_observations(
                    writer, pd.DataFrame({**revision, "vintage": [pd.Timestamp("2001-01-01", tz="UTC")]})
                )

    version, _ = train(conn, "naive", [series], spec=BacktestSpec(h=1, windows=3), on_window=on_window)
    assert conn.info.transaction_status == TransactionStatus.INTRANS  # the registration, not committed
    conn.commit()
    assert len(between) == 3 and set(between) == {TransactionStatus.IDLE}, between
    assert version.created_at < datetime.now(UTC) and version.data_as_of == version.created_at
    assert changed_since_training(db, version) == {series}
