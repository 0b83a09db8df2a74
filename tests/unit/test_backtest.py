"""Backtests with known answers on simulated data."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.forecasting.backtest import BacktestSpec, backtest, cutoffs, median_ratio, relative_rmse, score
from pefm.forecasting.base import ForecastInputError
from pefm.forecasting.models import make_model


def quarterly(values: np.ndarray, name: str = "y") -> pd.Series:
    return pd.Series(values, index=pd.date_range("1960-01-01", periods=len(values), freq="QS"), name=name)


def test_cutoffs_are_the_last_windows_step_apart_leaving_h_after():
    index = pd.date_range("2000-01-01", periods=20, freq="QS")
    got = cutoffs(index, BacktestSpec(h=2, windows=3, step=2))
    assert list(got) == [index[13], index[15], index[17]]
    with pytest.raises(ForecastInputError, match="cannot hold"):
        cutoffs(index, BacktestSpec(h=1, windows=30))


def test_rows_carry_cutoff_and_are_scored_against_the_next_observations():
    y = quarterly(np.arange(30, dtype=float))
    out = backtest(make_model("naive"), y, BacktestSpec(h=2, windows=3))
    assert list(out.columns[:6]) == ["model", "series_id", "cutoff", "ds", "y", "mean"]
    assert len(out) == 6
    first = out[out["cutoff"] == y.index[25]]
    assert first["y"].tolist() == [26.0, 27.0]  # the two values after the cutoff
    assert first["mean"].tolist() == [25.0, 25.0]  # naive: the value at the cutoff


def test_scores_come_per_step_and_pooled_over_the_steps():
    """Naive on a straight line misses by k at step k: rmse@hk = mae@hk = k, MASE's one-step naive
    scale is 1 at every step; the plain names pool the rows of all steps."""
    y = quarterly(np.arange(30, dtype=float))
    [row] = score(backtest(make_model("naive"), y, BacktestSpec(h=3, windows=4)), y.to_frame()).to_dict("records")
    for k in (1, 2, 3):
        assert row[f"n@h{k}"] == 4
        assert row[f"rmse@h{k}"] == pytest.approx(k) and row[f"mae@h{k}"] == pytest.approx(k)
        assert row[f"mase@h{k}"] == pytest.approx(k)
        assert {f"coverage-80@h{k}", f"winkler-95@h{k}", f"pinball@h{k}", f"directional_accuracy@h{k}"} <= set(row)
    assert "rmse@h4" not in row and row["n"] == 12
    assert row["rmse"] == pytest.approx(np.sqrt((1 + 4 + 9) / 3))  # root of the mean per-step MSE
    assert row["mae"] == pytest.approx(2.0) and row["mase"] == pytest.approx(2.0)  # mean of the steps'
    assert row["pinball"] == pytest.approx(np.mean([row[f"pinball@h{k}"] for k in (1, 2, 3)]))
    assert row["winkler-80"] == pytest.approx(np.mean([row[f"winkler-80@h{k}"] for k in (1, 2, 3)]))


def test_a_publication_lag_is_scored_by_the_forecasts_dates():
    """The data known at each cutoff end 2, 1, 2 quarters before it: the forecast path starts after
    the last known point, and each row is scored against the value at its own date, not against
    the k-th value after the cutoff."""
    y = quarterly(np.arange(30, dtype=float) ** 2)  # y at position t is t^2

    def as_of(cutoff):
        at = y.index.get_loc(cutoff)
        return y.iloc[: at + 1 - (2 if at % 2 else 1)].to_frame()  # positions 25, 27: lag 2; 26: lag 1

    out = backtest(make_model("naive"), y, BacktestSpec(h=2, windows=3), as_of=as_of)
    assert list(out["cutoff"].dt.strftime("%Y-%m-%d").unique()) == ["1966-04-01", "1966-07-01", "1966-10-01"]
    # cutoff 25 knows up to 23: forecasts 24 and 25; cutoff 26 knows up to 25: 26, 27; cutoff 27 up to 25
    assert list(out["ds"]) == list(y.index[[24, 25, 26, 27, 26, 27]])
    assert out["mean"].tolist() == [23.0**2] * 2 + [25.0**2] * 4
    assert out["y"].tolist() == [576.0, 625.0, 676.0, 729.0, 676.0, 729.0]  # 24^2, 25^2, 26^2, 27^2, ...
    [row] = score(out, y.to_frame()).to_dict("records")
    errors_1, errors_2 = np.array([576 - 529, 676 - 625, 676 - 625]), np.array([625 - 529, 729 - 625, 729 - 625])
    assert row["rmse@h1"] == pytest.approx(np.sqrt(np.mean(errors_1**2)))  # 47, 51, 51
    assert row["rmse@h2"] == pytest.approx(np.sqrt(np.mean(errors_2**2)))  # 96, 104, 104
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean(np.r_[errors_1, errors_2] ** 2)))
    # MASE: the one-step naive MAE of 0^2 .. 25^2 (the data up to the first cutoff) is mean(1, 3, ..., 49) = 25
    assert row["mase@h1"] == pytest.approx(149 / 3 / 25) and row["mase@h2"] == pytest.approx(304 / 3 / 25)
    # direction from the last value before each path (the one naive repeats): up every time, forecast flat
    assert row["directional_accuracy"] == 0.0
    lo, hi = out["lo-95"].to_numpy(), out["hi-95"].to_numpy()
    inside = (out["y"] >= lo) & (out["y"] <= hi)
    assert row["coverage-95"] == pytest.approx(inside.mean())


def test_market_sessions_are_counted_from_the_first_forecast_date():
    """A business-daily series skips Thanksgiving: from Wednesday's close the forecast dated Thursday
    is scored against Friday's session and the next one against Monday's."""
    days = pd.bdate_range("2024-11-18", "2024-12-04")
    days = days[days != pd.Timestamp("2024-11-28")]
    frame = pd.Series(np.arange(len(days)) * 10.0, index=days, name="spx").to_frame()
    frame.attrs = {"frequency": Frequency.BUSINESS_DAILY}
    out = backtest(make_model("naive"), frame, BacktestSpec(h=2, windows=3))
    first = out[out["cutoff"] == pd.Timestamp("2024-11-27")]
    assert list(first["ds"].dt.strftime("%m-%d")) == ["11-28", "11-29"]
    assert first["y"].tolist() == [80.0, 90.0]  # the closes of Nov 29 and Dec 2
    assert out["y"].tolist() == [80.0, 90.0, 90.0, 100.0, 100.0, 110.0]


def test_each_series_of_a_group_is_backtested_on_its_own_frequency_and_calendar():
    """A group's attrs name each column's frequency and calendar: a market series backtested
    beside a quarterly one (or one on another exchange) is forecast on its own sessions, so its
    rows pair with its backtest alone (the gate matches rows by date)."""
    days = pd.bdate_range("2018-11-01", "2019-01-15")
    sessions = days[~days.isin(pd.to_datetime(["2018-11-22", "2018-12-05", "2018-12-25", "2019-01-01"]))]
    spx = pd.Series(np.linspace(100, 120, len(sessions)), index=sessions, name="spx")
    gdp = pd.Series(np.linspace(1, 2, 60), index=pd.date_range("2004-01-01", periods=60, freq="QS"), name="gdp")
    group = pd.concat([spx, gdp], axis=1)
    group.attrs = {
        "frequencies": {"spx": Frequency.BUSINESS_DAILY, "gdp": Frequency.QUARTERLY},
        "calendars": {"spx": "XNYS", "gdp": ""},
    }
    alone = spx.to_frame()
    alone.attrs = {"frequency": Frequency.BUSINESS_DAILY, "calendar": "XNYS"}
    spec = BacktestSpec(h=2, windows=30)
    together = backtest(make_model("naive"), group, spec)
    together = together[together["series_id"] == "spx"].reset_index(drop=True)
    pd.testing.assert_frame_equal(together, backtest(make_model("naive"), alone, spec))
    assert not together["ds"].isin(pd.to_datetime(["2018-12-05", "2018-12-25", "2019-01-01"])).any()
    assert backtest(make_model("naive"), group, BacktestSpec(h=1, windows=2))["series_id"].nunique() == 2
    oil = pd.Series(np.linspace(50, 60, len(days)), index=days, name="oil")  # business days, no exchange
    markets = pd.concat([spx, oil], axis=1)
    markets.attrs = {"frequency": Frequency.BUSINESS_DAILY, "calendars": {"spx": "XNYS", "oil": ""}}
    beside_oil = backtest(make_model("naive"), markets, spec)
    pd.testing.assert_frame_equal(beside_oil[beside_oil["series_id"] == "spx"].reset_index(drop=True), together)


def test_a_one_window_backtest_of_returns_scores_without_a_sharpe_ratio():
    """A Sharpe ratio needs two one-step returns: one window has one, so it is left out, not an error."""
    r = pd.Series(np.random.default_rng(3).normal(0, 1, 60), index=pd.bdate_range("2020-01-01", periods=60), name="r")
    frame = r.to_frame()
    frame.attrs = {"frequency": Frequency.BUSINESS_DAILY}
    for windows, has_sharpe in ((1, False), (3, True)):
        results = backtest(make_model("naive"), frame, BacktestSpec(h=2, windows=windows))
        scores = score(results, frame, returns={"r"})
        assert ("sharpe" in scores.columns and bool(scores["sharpe"].notna().all())) is has_sharpe
        assert scores["rmse"].notna().all()


def test_each_origin_sees_only_the_data_known_then():
    y = quarterly(np.arange(30, dtype=float))
    seen = []

    def as_of(cutoff):
        seen.append(cutoff)
        known = y.loc[:cutoff].copy()
        known.iloc[-1] = -1.0  # a first release that was later revised
        return known.to_frame()

    out = backtest(make_model("naive"), y, BacktestSpec(h=1, windows=4), as_of=as_of)
    assert seen == list(y.index[25:29])
    assert (out["mean"] == -1.0).all()  # forecasts used the vintage, not the revised value
    assert out["y"].tolist() == [26.0, 27.0, 28.0, 29.0]  # scored against the latest


def test_on_a_random_walk_nothing_beats_naive_by_a_margin():
    rng = np.random.default_rng(11)
    y = quarterly(np.cumsum(rng.normal(size=240)))
    results = pd.concat(
        backtest(make_model(name), y, BacktestSpec(h=1, windows=60), label=name)
        for name in ("naive", "ar_d1", "ets", "ensemble")
    )
    ratios = median_ratio(relative_rmse(score(results, y.to_frame())))
    assert ratios["naive"] == 1.0
    assert (ratios > 0.95).all(), ratios  # no model finds structure that is not there
    assert ratios["ensemble"] < 1.1


def test_on_an_ar1_the_models_recover_the_coefficient():
    rng = np.random.default_rng(5)
    values = np.zeros(600)
    for t in range(1, 600):
        values[t] = 0.7 * values[t - 1] + rng.normal()
    y = quarterly(values)
    arima = make_model("arima").fit(y)
    assert arima.order_[1] == 0
    assert arima.results_.arparams[0] == pytest.approx(0.7, abs=0.07)
    ar = make_model("ar").fit(y)
    assert ar.results_.arparams[0] == pytest.approx(0.7, abs=0.07)


def test_airline_recovers_its_moving_averages_and_refuses_a_long_cycle():
    """Simulated from the airline model itself, (1 - B^12) y_t = (1 + theta B)(1 + Theta B^12) e_t
    on growth rates (theta -0.4, Theta -0.6): one fit recovers both coefficients and no extra
    difference. A weekly cycle of 52 is refused by name (Fourier terms are the tool there)."""
    rng = np.random.default_rng(8)
    n, theta, big_theta = 600, -0.4, -0.6
    e = rng.normal(size=n + 13)
    ma = e[13:] + theta * e[12:-1] + big_theta * e[1:-12] + theta * big_theta * e[:-13]
    values = np.zeros(n)
    for t in range(n):
        values[t] = (values[t - 12] if t >= 12 else 0.0) + ma[t]
    y = pd.Series(values, index=pd.date_range("1950-01-01", periods=n, freq="MS"))
    model = make_model("airline").fit(y)
    assert model.order_ == (0, 0, 1) and model.seasonal_order_ == (0, 1, 1, 12)
    assert model.results_.maparams[0] == pytest.approx(theta, abs=0.08)
    assert model.results_.seasonalmaparams[0] == pytest.approx(big_theta, abs=0.08)
    weekly = pd.Series(values[:200], index=pd.date_range("2000-01-03", periods=200, freq="W-MON"))
    with pytest.raises(ForecastInputError, match="cycles of 2 to 24 periods, not 52"):
        make_model("airline").fit(weekly)


def test_arima_rejects_a_fit_at_the_edge_of_stationarity():
    """The T-bill rate through 2005Q1 (the bundled series, from statsmodels' macrodata): the stepwise search met an
    ARIMA(3,0,2) whose AR and MA roots sat on the unit circle, with a likelihood to match; kept, it
    forecast -2.5% with NaN intervals. Candidates with a root within 1.01 of the circle are refused,
    as auto.arima refuses them."""
    y = bundled(["tbilrate"])[0].load().loc[:"2005-01-01"]
    model = make_model("arima").fit(y)
    roots = np.concatenate([model.results_.arroots, model.results_.maroots])
    assert roots.size == 0 or np.abs(roots).min() >= 1.01, model.order_
    forecast = model.predict(4)
    assert np.isfinite(forecast[["lo-80", "hi-80", "lo-95", "hi-95"]].to_numpy()).all()
    assert 1.0 < forecast["mean"].iloc[0] < 4.0  # the rate stood at 2.69% then


def test_refit_every_k_keeps_parameters_between_refits():
    rng = np.random.default_rng(3)
    y = quarterly(np.cumsum(rng.normal(size=80)) * 0.1 + rng.normal(size=80))
    every = backtest(make_model("ets"), y, BacktestSpec(h=1, windows=6, refit_every=1))
    sparse = backtest(make_model("ets"), y, BacktestSpec(h=1, windows=6, refit_every=3))
    # the first origin of each refit block agrees; the others differ (fixed params, newer data)
    assert np.isclose(every["mean"].iloc[[0, 3]], sparse["mean"].iloc[[0, 3]]).all()
    assert not np.isclose(every["mean"].iloc[[1, 2]], sparse["mean"].iloc[[1, 2]]).all()


def test_sliding_windows_train_on_a_fixed_length():
    y = quarterly(np.r_[np.full(40, 100.0), np.arange(20, dtype=float)])
    out = backtest(make_model("mean"), y, BacktestSpec(h=1, windows=1, window="sliding", train_size=5))
    assert out["mean"].iloc[0] == pytest.approx(np.mean([14, 15, 16, 17, 18]))


def test_each_step_is_compared_with_the_naive_forecast_on_the_same_rows():
    """The naive forecast scored against itself has ratio 1 and a DM p-value of 1; a drift model
    on a noisy straight line beats it at every step, clearly (naive misses by about k at step k)."""
    rng = np.random.default_rng(3)
    y = quarterly(np.arange(80, dtype=float) + rng.normal(0, 0.1, 80))
    spec = BacktestSpec(h=3, windows=20)
    [naive] = score(backtest(make_model("naive"), y, spec), y.to_frame()).to_dict("records")
    [drift] = score(backtest(make_model("drift"), y, spec), y.to_frame()).to_dict("records")
    for k in (1, 2, 3):
        assert naive[f"rmse_ratio_naive@h{k}"] == pytest.approx(1.0) and naive[f"dm_p_naive@h{k}"] == 1.0
        assert drift[f"rmse_ratio_naive@h{k}"] < 0.3 and drift[f"dm_p_naive@h{k}"] < 0.001
    assert "dm_p_naive" not in drift  # a DM test needs one horizon: per step only
    assert drift["rmse_ratio_naive"] == pytest.approx(drift["rmse"] / naive["rmse"])
