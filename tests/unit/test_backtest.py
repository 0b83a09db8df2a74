"""Backtests with known answers on simulated data."""

import numpy as np
import pandas as pd
import pytest

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
