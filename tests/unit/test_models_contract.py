"""One contract, every model: shape, nesting, reproducibility, serialization, bad input."""

import numpy as np
import pandas as pd
import pytest

from pefm.forecasting.base import ForecastInputError, is_seasonal
from pefm.forecasting.models import MODEL_NAMES, make_model

# Settings that keep the contract quick; the defaults are exercised by the benchmark.
FAST = {"mlp": {"epochs": 20, "hidden": 32}, "ensemble": {"window": 8}}
COLUMNS = ["series_id", "ds", "mean", "lo-80", "hi-80", "lo-95", "hi-95"]


def simulated(n: int = 120, k: int = 1, seed: int = 7) -> pd.DataFrame:
    """AR(1) series around 2 with cross-correlated shocks, on quarter starts."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(size=(n, k)) @ np.linalg.cholesky(0.5 * np.eye(k) + 0.5)
    values = np.zeros((n, k))
    for t in range(1, n):
        values[t] = 0.6 * values[t - 1] + shocks[t]
    index = pd.date_range("1990-01-01", periods=n, freq="QS")
    return pd.DataFrame(values + 2.0, index=index, columns=[f"s{i}" for i in range(k)])


def garch_returns(n: int = 300, seed: int = 7) -> pd.Series:
    """GARCH(1,1) returns in percent with Student t shocks, on quarter starts (the dates are only labels)."""
    rng = np.random.default_rng(seed)
    omega, alpha, beta = 0.05, 0.1, 0.85
    values, variance = np.zeros(n), omega / (1 - alpha - beta)
    for t in range(n):
        values[t] = 0.05 + np.sqrt(variance) * rng.standard_t(6) / np.sqrt(1.5)
        variance = omega + alpha * (values[t] - 0.05) ** 2 + beta * variance
    index = pd.date_range("1950-01-01", periods=n, freq="QS")
    return pd.Series(values, index=index, name="s0")


def data_for(name: str, n: int = 120):
    model = make_model(name, **FAST.get(name, {}))
    if name == "garch":  # a volatility model: returns with volatility clusters, and more of them
        return model, garch_returns()
    return model, (simulated(n, k=3) if model.multivariate else simulated(n)["s0"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forecast_frame_contract(name: str):
    model, y = data_for(name)
    forecast = model.fit(y).predict(4)
    assert list(forecast.columns) == COLUMNS
    series = list(y.columns) if isinstance(y, pd.DataFrame) else ["s0"]
    assert forecast["series_id"].unique().tolist() == series
    assert len(forecast) == 4 * len(series)
    assert not forecast.isna().any().any()
    expected_ds = pd.date_range(y.index[-1], periods=5, freq="QS")[1:]
    for _, group in forecast.groupby("series_id"):
        assert list(group["ds"]) == list(expected_ds)
    nested = (
        (forecast["lo-95"] <= forecast["lo-80"])
        & (forecast["lo-80"] <= forecast["mean"])
        & (forecast["mean"] <= forecast["hi-80"])
        & (forecast["hi-80"] <= forecast["hi-95"])
    )
    assert nested.all()
    assert (forecast["hi-95"] > forecast["lo-95"]).all()
    assert all(k.endswith("_") for k in vars(model) if k not in model.get_params())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reproducible_and_serializable(name: str):
    model, y = data_for(name)
    first = model.fit(y).predict(3, levels=(50, 90))
    again = model.clone().fit(y).predict(3, levels=(50, 90))
    pd.testing.assert_frame_equal(first, again)
    restored = type(model).from_bytes(model.to_bytes())
    pd.testing.assert_frame_equal(restored.predict(3, levels=(50, 90)), first)
    assert restored.get_params() == model.get_params()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bad_input_is_refused(name: str):
    model, y = data_for(name)
    with pytest.raises(ForecastInputError, match="too short"):
        model.clone().fit(y.iloc[: model.min_length - 1])
    holed = y.copy()
    holed.iloc[len(y) // 2] = np.nan
    with pytest.raises(ForecastInputError, match="missing or infinite"):
        model.clone().fit(holed)
    fitted = model.fit(y)
    for h in (0, -1, 1.5, True):
        with pytest.raises(ForecastInputError, match="h must be a positive integer"):
            fitted.predict(h)
    with pytest.raises(ForecastInputError, match="levels"):
        fitted.predict(2, levels=(80, 100))
    with pytest.raises(ForecastInputError, match="not fitted"):
        model.clone().predict(2)


# A value each model cannot use, one per limited parameter (some were taken: mean window=1 gave
# NaN intervals, seasonal_naive season=-1 a one-point "season", ets trends='x' plain SES).
UNUSABLE = [
    ("ar", "max_lag", -1), ("ar", "d", 2), ("mean", "window", 1), ("seasonal_naive", "season", -1),
    ("arima", "max_p", -1), ("arima", "max_q", 1.5), ("arima", "alpha", 2.0), ("airline", "max_d", 3),
    ("ets", "trends", "x"), ("ets", "seasonal", 1), ("garch", "p", 0), ("garch", "vol", "egarch"),
    ("var", "max_lags", 0), ("mlp", "hidden", 0), ("mlp", "epochs", 2.5), ("mlp", "learning_rate", -1e-3),
    ("mlp", "weight_decay", float("nan")), ("mlp", "device", "tpu"), ("ensemble", "members", ()),
    ("ensemble", "members", ("naive", "var")), ("ensemble", "seasonal_members", ("nosuch",)),
    ("ensemble", "weighting", "median"), ("ensemble", "window", -1), ("ensemble", "members", 5),
    ("ensemble", "members", "naive"), ("ensemble", "seasonal_members", None),
]  # fmt: skip
# Values the models have always taken, some stored in the registry's versions: 0 for "choose it"
# (each model read it so), numpy's numbers, more AR terms than auto.arima's default search.
USABLE = [
    ("ar", "max_lag", 0), ("ar", "d", np.int64(1)), ("mean", "window", 0), ("seasonal_naive", "season", 0),
    ("ensemble", "window", 0), ("ets", "seasonal", np.True_), ("arima", "max_p", 8), ("garch", "q", np.int64(2)),
    ("ensemble", "members", ["naive", "mean"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "param", "value"), UNUSABLE)
def test_a_parameter_value_the_model_cannot_use_is_refused_before_any_data(name: str, param: str, value):
    with pytest.raises(ForecastInputError, match=f"{name}: {param}"):
        make_model(name, **{param: value})
    model, y = data_for(name)
    setattr(model, param, value)  # set after construction, as unpickling would: fit checks again
    with pytest.raises(ForecastInputError, match=f"{name}: {param}"):
        model.fit(y)


@pytest.mark.parametrize(("name", "param", "value"), USABLE)
def test_a_value_the_models_have_always_taken_is_taken(name: str, param: str, value):
    make_model(name, **{param: value}).check_params()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_takes_its_own_defaults(name: str):
    model = make_model(name)
    model.check_params()
    assert make_model(name, **model.get_params()).get_params() == model.get_params()


def test_update_conditions_on_new_data_without_refitting():
    y = simulated(120)["s0"]
    model = make_model("ar").fit(y.iloc[:100])
    params = model.results_.params.copy()
    model.update(y)
    assert np.array_equal(model.results_.params, params)
    refitted = make_model("ar").fit(y)
    # same parameters, newer data: the forecast starts from the newer end
    assert model.predict(1)["ds"].iloc[0] == refitted.predict(1)["ds"].iloc[0]


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "garch"])
def test_update_keeps_the_estimated_spread_whatever_the_new_data(name: str):
    """Re-conditioning (new data, a what-if history) moves a model's state, never its estimates:
    naive, mean, drift and seasonal naive refitted on update, so one outlier in a what-if's
    history made naive's sigma four times wider and, through the ensemble's scale, every
    calibrated interval. (GARCH's conditional variance follows the data by design.)"""
    model, y = data_for(name)
    model.fit(y)
    after = y.iloc[-1:].set_axis(y.index[-1:] + pd.DateOffset(months=3))
    usual, outlier = (model.update(pd.concat([y, after + jump])).predict(4) for jump in (0.0, 40.0))
    width = lambda f: (f["hi-80"] - f["lo-80"]).to_numpy()  # noqa: E731
    np.testing.assert_allclose(width(outlier), width(usual), rtol=1e-9)


def test_the_ensemble_adds_seasonal_members_only_for_seasonal_data():
    """The M4 seasonality test on first differences: a monthly cycle is seasonal, a persistent
    AR(1) (whose levels correlate at every lag) is not; the ensemble weighs seasonal naive,
    seasonal ETS and the airline model only in the first case, where the combination forecasts
    the cycle."""
    rng = np.random.default_rng(2)
    index = pd.date_range("1990-01-01", periods=240, freq="MS")
    cycle = pd.Series(5 * np.sin(np.arange(240) * np.pi / 6) + rng.normal(size=240), index=index)
    persistent = pd.Series(np.cumsum(rng.normal(size=240)) * 0.2 + simulated(240)["s0"].to_numpy(), index=index)
    assert is_seasonal(cycle.to_numpy(), 12) and not is_seasonal(persistent.to_numpy(), 12)
    assert not is_seasonal(cycle.to_numpy(), 1)  # no season to test
    seasonal = make_model("ensemble").fit(cycle)
    seasonal_members = {"seasonal_naive", "ets_seasonal", "airline"}
    assert set(seasonal.weights_) == {"naive", "mean", "ar", "ar_d1", "ets"} | seasonal_members
    assert sum(seasonal.weights_[m] for m in seasonal_members) > 0.2  # a share of the cycle
    cycle_ahead = 5 * np.sin(np.arange(240, 252) * np.pi / 6)
    assert np.corrcoef(seasonal.predict(12)["mean"], cycle_ahead)[0, 1] > 0.95  # the forecast follows the cycle
    plain = make_model("ensemble").fit(persistent)
    assert set(plain.weights_) == {"naive", "mean", "ar", "ar_d1", "ets"}


def test_the_ensemble_leaves_the_airline_model_out_of_a_52_week_cycle():
    """The airline model takes cycles of up to 24 periods (a 52-week one would fit 106 states);
    weekly data with a yearly cycle get the other seasonal members."""
    rng = np.random.default_rng(4)
    index = pd.date_range("2000-01-03", periods=400, freq="W-MON")
    cycle = pd.Series(5 * np.sin(np.arange(400) * 2 * np.pi / 52) + 0.3 * rng.normal(size=400), index=index)
    model = make_model("ensemble", window=40).fit(cycle)
    assert {"seasonal_naive", "ets_seasonal"} <= set(model.weights_)
    assert "airline" not in model.weights_


def test_business_anchored_offsets_have_their_kinds_season():
    """BME, BMS and BQE start with B, read as business daily: a monthly series indexed at business
    month ends got a season of 5 for its seasonal members."""
    from pandas.tseries.frequencies import to_offset

    from pefm.forecasting.base import season_length

    assert {f: season_length(to_offset(f)) for f in ("BME", "BMS", "BQE", "BYE", "B", "MS", "QS-OCT", "C")} == {
        "BME": 12,
        "BMS": 12,
        "BQE": 4,
        "BYE": 1,
        "B": 5,
        "MS": 12,
        "QS-OCT": 4,
        "C": 1,
    }


def test_a_multivariate_update_reads_its_columns_by_name():
    """A VAR conditioned on a frame of the same series in another order read each column as the
    other series, and answered with their forecasts swapped."""
    rng = np.random.default_rng(4)
    index = pd.date_range("2000-01-01", periods=80, freq="QS")
    frame = pd.DataFrame({"infl": rng.normal(2, 1, 80), "unemp": rng.normal(6, 1, 80)}, index=index)
    model = make_model("var").fit(frame)
    expected = model.predict(2)
    swapped = model.update(frame[["unemp", "infl"]]).predict(2)
    pd.testing.assert_frame_equal(swapped, expected)
    with pytest.raises(ForecastInputError, match="fitted on"):
        model.update(frame.rename(columns={"infl": "cpi"}))
    numbered = frame.set_axis([0, 1], axis=1)  # columns that are not text: named as the fit named them
    again = make_model("var").fit(numbered)
    before = again.predict(2)
    pd.testing.assert_frame_equal(again.update(numbered[[1, 0]]).predict(2), before)


def test_an_mlp_saved_for_a_gpu_loads_on_a_machine_without_one():
    """`device="cuda"` was kept as is when loaded: on a CPU machine, torch refused to load it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nothing falls back")
    rng = np.random.default_rng(5)
    y = pd.Series(rng.normal(size=120).cumsum(), index=pd.date_range("2000-01-01", periods=120, freq="MS"))
    model = make_model("mlp", epochs=2, hidden=8).fit(y)
    expected = model.predict(2)
    model.device = "cuda"  # as trained on a GPU
    restored = type(model).from_bytes(model.to_bytes())
    assert restored.device_ == "cpu"
    pd.testing.assert_frame_equal(restored.predict(2), expected)


def test_an_mlp_asked_past_its_horizon_names_the_horizon():
    """A request's horizon is at fault: the what-if answer had named series_id."""
    from pefm.forecasting.base import ForecastInputError

    rng = np.random.default_rng(6)
    y = pd.Series(rng.normal(size=120).cumsum(), index=pd.date_range("2000-01-01", periods=120, freq="MS"))
    model = make_model("mlp", epochs=2, hidden=8).fit(y)
    with pytest.raises(ForecastInputError, match="at most") as refused:
        model.predict(model.horizon + 1)
    assert refused.value.field == "horizon"
