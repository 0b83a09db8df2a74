"""The ensemble's weights: stacked per horizon step on its own block-refitted backtest, shrunk
toward equal weights; its calibration scores that backtest. And the AR members' lag range."""

import pickle

import numpy as np
import pandas as pd

from pefm.forecasting.calibration import HORIZON, MAX_ORIGINS, MIN_ORIGINS, outcomes
from pefm.forecasting.models import make_model
from pefm.forecasting.models.ensemble import _stacked


def test_stacking_weights_the_member_that_forecasts_and_shrinks_toward_equal():
    rng = np.random.default_rng(0)
    target = rng.normal(size=100)
    forecasts = np.column_stack([target + 0.1 * rng.normal(size=100), rng.normal(size=100), np.zeros(100), -target])
    weights = _stacked(forecasts, target)
    assert np.isclose(weights.sum(), 1.0) and (weights >= 0).all()
    # stacked: nearly all on the first member, none on the useless ones (whose weight is then only
    # the shrinkage's: M/T = 4/100 times 1/4)
    assert weights[0] > 0.94
    np.testing.assert_allclose(weights[[1, 3]], 0.01, atol=1e-6)
    # a missing outcome (past the data) is left out; too few outcomes for M weights: equal weights
    with_gap = np.append(target[:-1], np.nan)
    np.testing.assert_allclose(_stacked(forecasts, with_gap), weights, atol=0.01)
    np.testing.assert_allclose(_stacked(forecasts[:4], target[:4]), 0.25)


def _ar1(n: int, phi: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = np.zeros(n)
    for t in range(1, n):
        values[t] = phi * values[t - 1] + rng.normal()
    return pd.Series(10 + values, index=pd.date_range("1950-01-01", periods=n, freq="QS"))


def test_weights_are_per_step_and_follow_the_members_errors():
    """On an AR(1) with phi = 0.5 the AR member outweighs the naive one (whose errors are larger
    at every step) at every step, and each step's weights sum to one."""
    model = make_model("ensemble").fit(_ar1(240, 0.5, seed=1))
    weights = model.step_weights_
    assert weights.shape == (HORIZON, len(model.members_))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    members = list(model.members_)
    assert (weights[:, members.index("ar")] > weights[:, members.index("naive")]).all()
    # past the last step estimated, its weights: the forecast is still the weighted mean
    forecast = model.predict(HORIZON + 2)
    members_last = [m._predict(HORIZON + 2, (80,))[0][-1] for m in model.fitted_.values()]
    last = float(np.dot(weights[-1], members_last))
    assert np.isclose(forecast["mean"].iloc[-1], last)


def test_the_calibration_scores_the_ensembles_own_backtest():
    """The combination's forecasts from its backtest are what calibration scores (no second fit),
    over calibration's origins: the later half of the data, at most 250."""
    y = _ar1(240, 0.8, seed=3)
    model = make_model("ensemble").fit(y)
    values = y.to_numpy()
    held_out, means, scales = model.backtest_
    window = min(MAX_ORIGINS, len(values) // 2, len(values) - model.min_length)
    assert window >= MIN_ORIGINS
    rows = np.searchsorted(held_out, np.arange(len(values) - window, len(values)))
    expected = (outcomes(values, held_out[rows], HORIZON) - means[rows]) / scales[rows]
    np.testing.assert_allclose(model.calibration_.errors, expected, equal_nan=True)
    # the artifact leaves that backtest out (calibration has scored it) and forecasts the same
    restored = pickle.loads(model.to_bytes())
    assert not hasattr(restored, "backtest_")
    pd.testing.assert_frame_equal(restored.predict(8), model.predict(8))


def test_ar_searches_lags_up_to_ten_log10_n():
    """A monthly series whose only memory is a year back: the default lag range (10 log10 n, R's
    ar()) reaches lag 12; a range of 4 cannot."""
    rng = np.random.default_rng(4)
    values = np.zeros(400)
    for t in range(12, 400):
        values[t] = 0.7 * values[t - 12] + rng.normal()
    y = pd.Series(values, index=pd.date_range("1980-01-01", periods=400, freq="MS"))
    assert make_model("ar").fit(y).order_[0] >= 12
    assert make_model("ar", max_lag=4).fit(y).order_[0] <= 4


def test_an_artifact_saved_with_one_set_of_weights_still_forecasts():
    """Ensembles pickled before the weights were per step had only ``weights_``: they load and
    forecast with those weights at every step."""
    model = make_model("ensemble").fit(_ar1(120, 0.5, seed=5))
    old = pickle.loads(model.to_bytes())
    saved = dict(zip(old.members_, old.step_weights_[2], strict=True))
    old.__dict__["weights_"] = saved  # how they were kept
    del old.__dict__["step_weights_"]
    restored = pickle.loads(pickle.dumps(old))
    members = [m._predict(3, (80,))[0] for m in restored.fitted_.values()]
    expected = sum(w * m for w, m in zip(saved.values(), members, strict=True))
    np.testing.assert_allclose(restored.predict(3)["mean"], expected)
