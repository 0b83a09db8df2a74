"""Conformal calibration (forecasting/calibration.py): every model, through its own fit, gets
intervals that cover at their nominal level on long simulated samples."""

import copy
import math

import numpy as np
import pandas as pd
import pytest

from pefm.forecasting.base import BaseForecaster, ForecastInputError
from pefm.forecasting.calibration import MIN_ORIGINS, Calibration
from pefm.forecasting.models import MODEL_NAMES, make_model
from pefm.forecasting.models.naive import Naive

FAST = {"mlp": {"epochs": 20, "hidden": 32}}
STEPS = 4
REPLICATIONS = 10
TRAIN = 1000  # its last 250 points calibrate
AHEAD = 250  # fresh origins after the training data, where coverage is measured
# The mean model's error on a random walk, y_t - mean(y_1..t), grows with t: errors from any past
# stretch understate later ones, so no calibration from the past can hold (nor does it claim to).
# GARCH models returns: it refuses a random walk's levels and an AR(1)'s, and gets GARCH returns.
NOT_ON = {"random_walk": {"mean", "garch"}, "ar1": {"garch"}}


def simulate(process: str, n: int, k: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shocks = rng.normal(size=(n, k))
    values = np.zeros((n, k))
    if process == "garch":  # GARCH(1,1) returns in percent with Student t shocks
        omega, alpha, beta, variance = 0.05, 0.1, 0.85, 1.0
        for t in range(n):
            values[t] = 0.05 + np.sqrt(variance) * rng.standard_t(6, size=k) / np.sqrt(1.5)
            variance = omega + alpha * (values[t, 0] - 0.05) ** 2 + beta * variance
    else:
        phi = 0.6 if process == "ar1" else 1.0
        for t in range(1, n):
            values[t] = phi * values[t - 1] + shocks[t]
        values += 2.0 if process == "ar1" else 0.0
    index = pd.date_range("1800-01-01", periods=n, freq="MS")
    return pd.DataFrame(values, index=index, columns=[f"s{i}" for i in range(k)])


def _served(model: BaseForecaster, half: np.ndarray) -> np.ndarray:
    """Half-widths of shape ``(origins, steps, series)`` as predict() serves them: never
    narrowing with the step, but for a model whose spread may fall."""
    return half if model.spread_can_fall else np.maximum.accumulate(half, axis=1)


CASES = [(name, process) for name in MODEL_NAMES for process in ("ar1", "random_walk") if name not in NOT_ON[process]]
CASES.append(("garch", "garch"))


@pytest.mark.parametrize(("name", "process"), CASES)
def test_calibrated_intervals_cover_at_their_level(name: str, process: str):
    """Fit on 1,000 points, then forecast 1..4 steps from each of the next 250 origins (the
    parameters and calibration held, as a serving model would) in 10 independent samples: the
    80% and 95% intervals cover within 3 points of nominal, pooled over steps and samples."""
    inside = {80: [], 95: []}
    for replication in range(REPLICATIONS):
        model = make_model(name, **FAST.get(name, {}))
        data = simulate(process, TRAIN + AHEAD + STEPS, 3 if model.multivariate else 1, seed=replication)
        y = data if model.multivariate else data["s0"]
        model.fit(y.iloc[:TRAIN])
        assert model.calibration_ is not None
        values = data.to_numpy() if model.multivariate else data["s0"].to_numpy()
        origins = np.arange(TRAIN, TRAIN + AHEAD)
        # every origin's forecast at once, from a copy conditioned on the newer data as update() does
        means, scales = copy.deepcopy(model)._origin_forecasts(values, origins, STEPS)
        actual = np.stack([data.to_numpy()[origins + k] for k in range(STEPS)], axis=1)
        halves = {level: _served(model, model.calibration_.quantile(level)[:STEPS] * scales) for level in inside}
        for level, half in halves.items():
            inside[level].append(np.abs(actual - means) <= half)
        if replication == 0:  # the same intervals as the public predict() at the last origin
            last = model.update(y.iloc[: origins[-1]]).predict(STEPS)
            half = halves[95][-1]
            # (to 1%: updating ETS re-estimates its error variance from the newer data)
            np.testing.assert_allclose(last["hi-95"].to_numpy(), (means[-1] + half).T.ravel(), rtol=0.01)
    for level, hits in inside.items():
        coverage = float(np.mean(np.concatenate(hits)))
        assert abs(coverage - level / 100) <= 0.03, f"{name} on {process}: {level}% intervals cover {coverage:.3f}"


@pytest.mark.parametrize("name", ["ar", "ar_d1", "arima", "airline", "ets", "ets_seasonal", "ensemble", "garch"])
def test_closed_form_origin_forecasts_match_conditioning_and_predicting(name: str):
    """The models with a closed form for the forecasts from every origin (one filter pass)
    give what conditioning on each origin's data and predicting gives (the generic way)."""
    process = "garch" if name == "garch" else "random_walk"
    values = simulate(process, 400, 1, seed=11)["s0"].to_numpy()
    if name != "garch":
        values += 3 * np.sin(np.arange(400) * np.pi / 6)  # a yearly cycle for the seasonal members
    model = make_model(name)
    model._fit_values(values[:300], pd.offsets.MonthBegin())
    generic = copy.deepcopy(model)
    origins = np.arange(300, 400)
    means, scales = model._origin_forecasts(values, origins, 8)
    expected_means, expected_scales = BaseForecaster._origin_forecasts(generic, values, origins, 8)
    inside = (origins[:, None] + np.arange(8)) < len(values)  # past the data nothing is scored
    np.testing.assert_allclose(means[inside], expected_means[inside], rtol=1e-9, atol=1e-9)
    # the closed forms hold the scale at the first origin's (ETS re-estimates its error variance
    # as data arrive, MA terms' forecast variance converges: within 10% here)
    np.testing.assert_allclose(scales, expected_scales, rtol=0.1)


def test_conformal_quantile_is_the_finite_sample_rank_and_extrapolates_past_it():
    scores = np.arange(1, 20, dtype=float)  # 19 scores: 1..19
    calibration = Calibration(np.concatenate([scores, -scores])[:, None, None][:19])
    # rank ceil(20 * 0.8) = 16 of 19
    assert calibration.quantile(80)[0, 0] == 16
    assert calibration.quantile(95)[0, 0] == 19  # rank 19: the largest
    # 99% needs rank 20 of 19: the largest, widened by z_0.995 / z_0.975 (19 scores stand for 95%)
    assert math.isclose(calibration.quantile(99)[0, 0], 19 * 2.5758293035489 / 1.959963984540054, rel_tol=1e-9)
    # a NaN (a step past the data) is not a score
    with_gap = Calibration(np.append(scores, np.nan)[:, None, None])
    assert with_gap.quantile(80)[0, 0] == 16


def test_too_short_a_series_keeps_the_models_own_intervals():
    short = 2 * MIN_ORIGINS - 1  # half of it: too few origins
    model = make_model("ar").fit(simulate("ar1", short, 1, seed=1)["s0"])
    assert model.calibration_ is None
    _, own = model._predict(3, (80, 95))
    forecast = model.predict(3)
    np.testing.assert_allclose(forecast["hi-95"], own[95][1])
    assert make_model("ar").fit(simulate("ar1", short + 1, 1, seed=1)["s0"]).calibration_ is not None


def test_a_probe_that_cannot_be_fitted_leaves_the_models_own_intervals(caplog):
    """Calibration fits its probe on half the data; a model that needs more still fits (on all of
    it), with its own intervals and a warning, rather than failing."""

    class NeedsSixty(Naive):
        def _fit(self, values):
            if len(values) < 60:
                raise ForecastInputError("needs 60 points")
            super()._fit(values)

    y = simulate("random_walk", 100, 1, seed=2)["s0"]
    model = NeedsSixty().fit(y)
    assert model.calibration_ is None
    assert "needs 60 points" in caplog.text
    np.testing.assert_allclose(model.predict(2)["hi-95"], model._predict(2, (95,))[1][95][1])


def test_calibration_widens_intervals_a_model_gets_wrong():
    """The mean model assumes independent errors; on a persistent AR(1) its own 80% intervals
    cover far less, and calibration from its own errors restores them."""
    data = pd.Series(_persistent(2000), index=pd.date_range("1800-01-01", periods=2000, freq="MS"))
    model = make_model("mean", window=20).fit(data.iloc[:1500])
    mean, own = model._predict(1, (80,))
    calibrated = model.predict(1, levels=(80,))
    assert (calibrated["hi-80"] - calibrated["mean"]).iloc[0] > 1.3 * (own[80][1] - mean)[0]


def _persistent(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    values = np.zeros(n)
    for t in range(1, n):
        values[t] = 0.97 * values[t - 1] + rng.normal()
    return values


def test_step_dependence_is_read_off_the_errors():
    """For MA(1)-like errors (a random walk forecast by a model that knows nothing), the errors
    of step 1 and step 2 from one origin share a shock: psi_1 = 1, so corr = 1/sqrt(2)."""
    rng = np.random.default_rng(0)
    shocks = rng.normal(size=(5000, 3))
    errors = np.stack([shocks[:, 0], shocks[:, 0] + shocks[:, 1], shocks[:, 0] + shocks[:, 1] + shocks[:, 2]], axis=1)
    psi = Calibration(errors[:, :, None]).impulse(0)
    np.testing.assert_allclose(psi, [1, 1, 1], atol=0.05)
    independent = Calibration(shocks[:, :, None]).impulse(0)
    np.testing.assert_allclose(independent, [1, 0, 0], atol=0.05)


def test_half_widths_never_narrow_with_the_step_but_where_the_spread_can_fall():
    """Step 2's scores are smaller than step 1's (chance, on a short record): served intervals
    keep step 1's width there, both per step and for the running sums; a model whose spread may
    fall (GARCH's conditional variance) keeps each step's own."""
    rng = np.random.default_rng(3)
    errors = rng.normal(size=(200, 3, 1)) * np.array([1.0, 0.5, 2.0])[None, :, None]
    calibration = Calibration(errors, errors)
    mean = np.zeros((3, 1))
    own = {80: (-np.full((3, 1), 1.2815515655446004), np.full((3, 1), 1.2815515655446004))}  # scale 1
    for level in (80, 95):
        free = calibration.widen(mean, own, (level,), monotone=False)[level][1][:, 0]
        assert free[1] < free[0] < free[2]  # the scores as they fell
        served = calibration.widen(mean, own, (level,))[level][1][:, 0]
        np.testing.assert_allclose(served, [free[0], free[0], free[2]])
        _, running = calibration.widen_running(mean, own, (level,))
        assert np.all(np.diff(running[level][1][:, 0]) >= 0)


@pytest.mark.parametrize("name", ["ensemble", "ar", "ets"])
def test_served_intervals_never_narrow_with_the_horizon(name: str):
    """Through fit and predict, on a short AR(1) record whose step scores are noisy: the 80% and
    95% intervals, 12 steps ahead, are at least as wide at each step as at the one before."""
    data = simulate("ar1", 120, 1, seed=4)["s0"]
    forecast = make_model(name).fit(data).predict(12)
    for level in (80, 95):
        width = (forecast[f"hi-{level}"] - forecast[f"lo-{level}"]).to_numpy()
        assert np.all(np.diff(width) >= -1e-9), f"{name} {level}%: {np.round(width, 3)}"


def test_a_combination_with_a_garch_member_may_narrow_as_its_member_may():
    assert make_model("ensemble", members=("naive", "garch")).spread_can_fall
    assert not make_model("ensemble").spread_can_fall


def test_garch_intervals_narrow_after_turbulence():
    """GARCH's conditional variance falls back after a shock: its calibrated one-day intervals
    narrow step by step (``spread_can_fall``), as its own do."""
    data = simulate("garch", 1200, 1, seed=6)["s0"]
    data.iloc[-1] = 12.0  # a turbulent last day
    forecast = make_model("garch").fit(data).predict(8)
    width = (forecast["hi-95"] - forecast["lo-95"]).to_numpy()
    assert width[-1] < width[0]


def test_flat_data_keep_every_model_finite_and_the_ensemble_fits(caplog):
    """A constant series (a rate held at its floor, stored as its change): AR and ARIMA failed
    inside statsmodels with NaN parameters, which stopped the ensemble (and a whole bundle) when
    the series was flat in the half its members are backtested on; the models that fit got NaN
    bounds, their probe's zero scale turning every score into NaN."""
    index = pd.date_range("2000-01-01", periods=100, freq="MS")
    flat = pd.Series(np.zeros(100), index=index)
    for name in ("ar", "arima"):
        with pytest.raises(ForecastInputError, match="constant"):
            make_model(name).fit(flat)
    for name in ("naive", "mean", "ets", "ensemble"):
        model = make_model(name).fit(flat)
        assert model.calibration_ is None, name  # its own intervals stand
        assert np.isfinite(model.predict(3)[["lo-95", "hi-95"]].to_numpy()).all(), name
    rng = np.random.default_rng(3)
    half = pd.Series(np.r_[np.zeros(50), rng.normal(size=50)], index=index)
    ensemble = make_model("ensemble").fit(half)
    assert "ar" not in ensemble.members_ and "naive" in ensemble.members_
    assert np.isfinite(ensemble.predict(3)[["lo-95", "hi-95"]].to_numpy()).all()


@pytest.mark.parametrize("name", ["ets", "ensemble"])
def test_a_rise_after_a_flat_stretch_keeps_intervals_as_wide_as_the_naive_models(name: str):
    """A rate held at its floor for 100 months, then raised (US fed funds 2009-2015): ETS fitted
    on the flat stretch reports a scale of some 1e-16 (rounding's zero), not 0, and the ensemble
    weighs it in; the errors once the rate rises, divided by it, were scores of 1e17, and the
    95% intervals some 1e16 wide. Such a scale gives no score: the intervals stay within a small
    multiple of the naive model's."""
    values = np.r_[np.full(100, 0.25), 0.5 + 0.13 * np.arange(4)]
    y = pd.Series(values, index=pd.date_range("2000-01-01", periods=len(values), freq="MS"))
    naive = make_model("naive").fit(y).predict(8)
    forecast = make_model(name).fit(y).predict(8)
    width = (forecast["hi-95"] - forecast["lo-95"]).to_numpy()
    reference = (naive["hi-95"] - naive["lo-95"]).to_numpy()
    assert np.isfinite(width).all() and (width > 0).all()
    assert (width <= 3 * reference).all(), f"{name}: {width} against the naive model's {reference}"
