"""The default model: a bundle of group models over the catalog, on a real database."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from pefm.config import get_settings
from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.bundle import BUNDLE
from pefm.forecasting.panel import default_series, load_panel
from pefm.forecasting.registry import load_model
from pefm.forecasting.training import train
from pefm.storage.model_versions import read_precomputed
from pefm.storage.observations import write_observations
from pefm.storage.series import SeriesMeta, upsert_series
from pefm.storage.signing import trusted_keys

# One series of each group the bundled catalog has.
MIXED = ["realgdp", "unemp", "aaa", "core_cpi", "sp500"]
AS_OF = datetime(2019, 6, 1, tzinfo=UTC)


@pytest.fixture
def loaded(conn):
    load_bundled(conn, bundled(MIXED))
    return conn


def test_a_bundle_forecasts_every_series_with_its_groups_family_and_backtests_each_on_its_own_dates(loaded):
    version, run = train(loaded, BUNDLE, default_series(loaded, BUNDLE), as_of=AS_OF, spec=BacktestSpec(windows=4))
    groups = {g["name"]: (g["family"], g["series_ids"]) for g in version.params["groups"]}
    assert groups == {
        "business-daily-returns": ("garch", ["sp500"]),
        "monthly": ("ensemble", ["aaa", "core_cpi"]),
        "quarterly": ("ensemble", ["realgdp", "unemp"]),
    }
    assert sorted(version.series_ids) == sorted(MIXED)
    # each series is backtested on the last 4 of its own dates, not on the union of all dates
    last = run.results.groupby("series_id")["cutoff"].max()
    assert last["realgdp"] == pd.Timestamp("2009-04-01") and last["sp500"] == pd.Timestamp("2018-12-28")
    assert run.results["y"].notna().all()
    assert "sharpe" in run.scores.set_index("series_id").loc["sp500"]
    # precomputed in both spaces for every series, each on its own calendar
    rows = pd.DataFrame(read_precomputed(loaded, version.id)["rows"])
    assert set(map(tuple, rows[["series_id", "space"]].drop_duplicates().to_numpy())) == {
        (s, space) for s in MIXED for space in ("model", "level")
    }
    first = rows.groupby(["space", "series_id"])["ds"].min()
    for space in ("model", "level"):
        assert first[space, "realgdp"] == "2009-10-01T00:00:00Z" and first[space, "aaa"] == "2019-01-01T00:00:00Z"
        assert first[space, "sp500"] == "2019-01-02T00:00:00Z"  # XNYS: after 2018-12-31, not New Year's Day
    # the artifact round-trips and hands out each series' member
    model = load_model(loaded, version.id, trusted_keys(get_settings()))
    assert type(model.for_series("sp500")).__name__ == "Garch"
    assert model.predict(2)["series_id"].value_counts().to_dict() == dict.fromkeys(MIXED, 2)


def test_a_new_series_joins_at_the_next_training_and_a_short_one_is_left_out_with_the_reason(loaded):
    """No code change: a catalog entry and its data are all a series needs to be forecast."""
    before, _ = train(loaded, BUNDLE, default_series(loaded, BUNDLE), as_of=AS_OF, spec=None)
    spending = bundled(["realcons"])[0].load()  # real data under a new id and a new unit
    upsert_series(loaded, SeriesMeta("consumption", "Consumption", Frequency.QUARTERLY, "bn US$", "log_diff_ann"))
    upsert_series(loaded, SeriesMeta("fresh", "A new monthly series", Frequency.MONTHLY, "index", "none"))
    write_observations(
        loaded, pd.DataFrame({"series_id": "consumption", "ts": spending.index, "value": spending.values})
    )
    months = pd.date_range("2018-01-01", periods=8, freq="MS")
    write_observations(loaded, pd.DataFrame({"series_id": "fresh", "ts": months, "value": range(8)}))
    # 40 quarters: enough to forecast (the ensemble needs 32), not for 12 backtest windows (43)
    upsert_series(loaded, SeriesMeta("young", "A young quarterly series", Frequency.QUARTERLY, "index", "none"))
    quarters = pd.date_range("2000-01-01", periods=40, freq="QS")
    young = spending.to_numpy()[-40:] / 100
    write_observations(loaded, pd.DataFrame({"series_id": "young", "ts": quarters, "value": young}))
    # a value its log transform refuses (ingest accepts it today): left out, not a failed training
    upsert_series(loaded, SeriesMeta("broken", "Broken", Frequency.QUARTERLY, "index", "log_diff_ann"))
    write_observations(loaded, pd.DataFrame({"series_id": "broken", "ts": quarters, "value": -young}))
    loaded.commit()
    spec = BacktestSpec(windows=12)
    after, run = train(loaded, BUNDLE, default_series(loaded, BUNDLE), as_of=datetime.now(UTC), spec=spec)
    assert "consumption" not in before.series_ids
    assert "consumption" in after.series_ids and "fresh" not in after.series_ids
    # forecast but not backtested: too few points for 12 windows, or (consumption, all loaded with
    # today's vintage) nothing known at the backtest's cutoffs; the bundled series are backtested
    backtested = set(run.results["series_id"])
    assert {"young", "consumption"} <= set(after.series_ids) and not {"young", "consumption"} & backtested
    assert {"realgdp", "unemp", "aaa", "core_cpi", "sp500"} <= backtested
    assert after.params["skipped"]["broken"] == "transform 'log_diff_ann' needs positive values; broken has some <= 0"
    assert after.params["skipped"]["fresh"].startswith("8 points after its transform; ensemble needs at least")
    quarterly = next(g for g in after.params["groups"] if g["name"] == "quarterly")
    assert "consumption" in quarterly["series_ids"]
    pre = pd.DataFrame(read_precomputed(loaded, after.id)["rows"])
    level = pre[(pre["series_id"] == "consumption") & (pre["space"] == "level")]
    assert level["mean"].iloc[0] == pytest.approx(spending.iloc[-1], rel=0.05)  # in the series' own units


def test_load_panel_keeps_each_series_last_level_as_its_anchor(loaded):
    panel = load_panel(loaded, ["realgdp", "sp500"], as_of=AS_OF)
    assert panel.attrs["anchors"]["realgdp"] == pytest.approx(bundled(["realgdp"])[0].load().iloc[-1])
    assert panel.attrs["anchors"]["sp500"] == pytest.approx(bundled(["sp500"])[0].load().iloc[-1])
    # and each series' exchange calendar; no calendar of the panel's own, as they do not share one
    assert panel.attrs["calendars"] == {"realgdp": "", "sp500": "XNYS"} and "calendar" not in panel.attrs
    assert load_panel(loaded, ["sp500"], as_of=AS_OF).attrs["calendar"] == "XNYS"
