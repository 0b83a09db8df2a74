"""GARCH on real S&P 500 daily returns: volatility-aware intervals, calibrated coverage, fixed-parameter
updates, simulated paths that agree with the analytic intervals, and clear refusals."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.forecasting.base import ForecastInputError
from pefm.forecasting.models import make_model
from pefm.forecasting.models.garch import Garch


@pytest.fixture(scope="module")
def returns() -> pd.Series:
    """S&P 500 daily log returns in percent, 1999-2018."""
    prices = bundled(["sp500"])[0].load()
    out = (100 * np.log(prices).diff()).dropna().rename("sp500")
    out.attrs["frequency"] = Frequency.BUSINESS_DAILY
    return out


def width(forecast: pd.DataFrame, level: int = 95) -> np.ndarray:
    return (forecast[f"hi-{level}"] - forecast[f"lo-{level}"]).to_numpy()


def test_fits_the_known_shape_of_equity_volatility(returns):
    model = make_model("garch").fit(returns)
    params = model.params_
    assert list(params.index) == ["mu", "omega", "alpha[1]", "beta[1]", "nu"]
    assert 0.9 < params["alpha[1]"] + params["beta[1]"] <= 1.0  # highly persistent volatility
    assert 3 < params["nu"] < 15  # fat tails
    # only parameters and data are kept, not arch's results object (which is about 10x larger)
    assert len(model.to_bytes()) < 2 * returns.to_numpy().nbytes


def test_intervals_are_wide_after_turbulence_and_narrow_after_calm(returns):
    crisis = make_model("garch").fit(returns[:"2008-10-15"]).predict(5)
    calm = make_model("garch").fit(returns[:"2017-06-30"]).predict(5)
    assert (width(crisis) > 4 * width(calm)).all()
    nested = (crisis["lo-95"] < crisis["lo-80"]) & (crisis["hi-80"] < crisis["hi-95"])
    assert nested.all()


def test_one_step_intervals_cover_95_percent_through_the_2008_crash(returns):
    start = returns.index.get_loc(returns["2008-09-01":].index[0])
    model = make_model("garch").fit(returns.iloc[:start])
    params = model.params_.copy()
    sd = returns.iloc[:start].std()
    garch_hits, constant_hits = [], []
    for i in range(start, start + 250):
        forecast = model.update(returns.iloc[:i]).predict(1)
        actual = returns.iloc[i]
        assert forecast["ds"].iloc[0] <= returns.index[i]  # the forecast is of the next trading day
        garch_hits.append(forecast["lo-95"].iloc[0] <= actual <= forecast["hi-95"].iloc[0])
        constant_hits.append(abs(actual - params["mu"]) <= 1.96 * sd)
    coverage = np.mean(garch_hits)
    assert 0.90 <= coverage <= 0.99, coverage  # measured: 0.928
    assert np.mean(constant_hits) < 0.8  # constant-volatility intervals fail here (measured: 0.648)
    pd.testing.assert_series_equal(model.params_, params)


def test_update_reconditions_without_reestimating(returns):
    head = returns.iloc[:-50]
    model = make_model("garch").fit(head)
    params, before = model.params_.copy(), model.predict(3)
    model.update(returns)
    after = model.predict(3)
    pd.testing.assert_series_equal(model.params_, params)
    assert after["ds"].iloc[0] > before["ds"].iloc[0]
    assert not np.allclose(width(after), width(before))
    # updating back to the training data gives back the original forecast exactly
    pd.testing.assert_frame_equal(model.update(head).predict(3), before)
    # a crash day appended raises tomorrow's volatility; a quiet day does not
    day = pd.bdate_range(head.index[-1], periods=2)[1]
    for shock, wider in ((-8.0, True), (0.0, False)):
        extended = pd.concat([head, pd.Series([shock], index=[day], name=head.name)])
        extended.attrs = head.attrs
        grown = bool(width(model.update(extended).predict(1))[0] > 1.5 * width(before)[0])
        assert grown is wider


def test_paths_match_the_analytic_intervals_and_are_reproducible(returns):
    model = make_model("garch").fit(returns[:"2011-08-31"])  # a turbulent cutoff: volatility decays
    forecast = model.predict(5, levels=(80, 95))
    paths = model.sample_paths(5, 20000, seed=3)
    assert paths.shape == (1, 20000, 5)
    for level in (80, 95):
        lo, hi = np.quantile(paths[0], [0.5 - level / 200, 0.5 + level / 200], axis=0)
        # Monte Carlo error of a tail quantile from 20,000 draws is about 1-2% of the interval,
        # stretched by the map onto the calibrated intervals where those widen faster in the tail
        np.testing.assert_allclose(lo, forecast[f"lo-{level}"], rtol=0.1)
        np.testing.assert_allclose(hi, forecast[f"hi-{level}"], rtol=0.1)
    assert np.abs(paths[0].mean(axis=0) - forecast["mean"].to_numpy()).max() < 0.1
    np.testing.assert_array_equal(model.sample_paths(5, 100, seed=3), model.sample_paths(5, 100, seed=3))
    assert not np.array_equal(model.sample_paths(5, 100, seed=3), model.sample_paths(5, 100, seed=4))
    restored = Garch.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(restored.sample_paths(5, 100, seed=3), model.sample_paths(5, 100, seed=3))
    assert model.sample_paths(2, 7).shape == (1, 7, 2)


def test_the_mean_forecast_is_the_constant_mean_or_zero(returns):
    model = make_model("garch").fit(returns.iloc[:500])
    np.testing.assert_allclose(model.predict(5)["mean"], model.params_["mu"])
    zero = make_model("garch", mean="zero").fit(returns.iloc[:500])
    assert "mu" not in zero.params_
    np.testing.assert_array_equal(zero.predict(3)["mean"], 0.0)


def test_gjr_and_normal_variants_fit(returns):
    gjr = make_model("garch", o=1).fit(returns.iloc[:1500])
    assert gjr.params_["gamma[1]"] > 0  # bad news raises volatility more than good news
    normal = make_model("garch", dist="normal").fit(returns.iloc[:1500])
    assert "nu" not in normal.params_
    mean, own = normal._predict(2, (80, 95))  # its own intervals, before calibration
    z95 = (own[95][1] - mean) / (own[80][1] - mean)
    np.testing.assert_allclose(z95, 1.959964 / 1.281552, rtol=1e-6)  # Gaussian quantiles


def test_bad_input_is_refused_clearly(returns):
    index = returns.index[:300]
    constant = pd.Series(0.5, index=index)
    constant.attrs = returns.attrs
    with pytest.raises(ForecastInputError, match="constant series"):
        Garch().fit(constant)
    with pytest.raises(ForecastInputError, match=r"too short.*at least 100"):
        Garch().fit(returns.iloc[:99])
    prices = bundled(["sp500"])[0].load().iloc[:300]
    prices.attrs = returns.attrs
    with pytest.raises(ForecastInputError, match="returns in percent"):
        Garch().fit(prices)
    with pytest.raises(ForecastInputError, match="returns in percent"):
        Garch().fit(returns / 100)
    with pytest.raises(ForecastInputError, match="dist must be one of normal, t"):
        Garch(dist="skewt").fit(returns)
    with pytest.raises(ForecastInputError, match="not fitted"):
        Garch().sample_paths(2, 10)
    with pytest.raises(ForecastInputError, match="n must be a positive integer"):
        Garch().fit(returns.iloc[:300]).sample_paths(2, 0)


def test_an_optimizer_that_stops_early_is_an_error_not_an_estimate(returns, monkeypatch):
    real = Garch._model

    def stopping_early(self, values):
        model = real(self, values)
        fit = model.fit
        model.fit = lambda **kwargs: fit(**kwargs, options={"maxiter": 2})
        return model

    monkeypatch.setattr(Garch, "_model", stopping_early)
    with pytest.raises(ValueError, match=r"did not converge.*Iteration limit"):
        Garch().fit(returns)
