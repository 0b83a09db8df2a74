"""Level space: each transform's inverse, the anchors it starts from, intervals calibrated on the
running sums of the steps (by simulation without calibration)."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.transforms import TRANSFORMS, apply_transform, model_space_unit
from pefm.forecasting.levels import anchor_at, invert, level_forecast, rebased_anchor
from pefm.forecasting.models import make_model

# A real series per frequency (positive, so every transform applies).
REAL = {
    "Q": ("realgdp", Frequency.QUARTERLY),
    "M": ("core_cpi", Frequency.MONTHLY),
    "B": ("sp500", Frequency.BUSINESS_DAILY),
}


def real(code: str) -> tuple[pd.Series, Frequency]:
    series_id, freq = REAL[code]
    return bundled([series_id])[0].load(), freq


def panel_of(levels: pd.Series, transform: str, freq: Frequency, series_id: str = "s") -> pd.DataFrame:
    """A one-series panel as load_panel builds it."""
    frame = apply_transform(levels, transform, freq).to_frame(series_id)
    frame.attrs = {
        "frequencies": {series_id: freq},
        "transforms": {series_id: transform},
        "anchors": {series_id: float(levels.iloc[-1])},
    }
    return frame


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("code", sorted(REAL))
def test_invert_undoes_each_transform(transform, code):
    levels, freq = real(code)
    levels = levels.iloc[-300:]
    steps = apply_transform(levels, transform, freq).to_numpy()
    back = invert(float(levels.iloc[0]), steps, transform, freq)
    expected = levels.to_numpy() if transform == "none" else levels.to_numpy()[1:]
    np.testing.assert_allclose(back, expected, rtol=1e-10)


@pytest.mark.parametrize("transform", ["diff", "log_diff_ann", "log_return"])
def test_level_mean_is_the_inverse_transform_of_the_mean_and_step_one_maps_the_interval(transform):
    levels, freq = real("Q")
    panel = panel_of(levels, transform, freq)
    model = make_model("ar").fit(panel["s"].rename("s").pipe(_with_freq, freq))
    forecast = model.predict(6, (80, 95))
    anchor = anchor_at(panel, "s", model.cutoff_)
    assert anchor == pytest.approx(float(levels.iloc[-1]))
    level = level_forecast(model, forecast, "s", anchor, transform, freq, (80, 95), simulations=20_000)
    mean = forecast["mean"].to_numpy()
    if transform == "diff":
        expected = anchor + np.cumsum(mean)
    elif transform == "log_diff_ann":
        expected = anchor * np.exp(np.cumsum(mean) / 400)
    else:
        expected = anchor * np.exp(np.cumsum(mean) / 100)
    np.testing.assert_allclose(level["mean"], expected, rtol=1e-12)
    # at step 1 a level interval is the model interval mapped through the (monotone) inverse
    for bound in ("lo-80", "hi-80", "lo-95", "hi-95"):
        mapped = invert(anchor, np.array([forecast[bound].iloc[0]]), transform, freq)[0]
        assert level[bound].iloc[0] == pytest.approx(mapped, rel=1e-9)
    # later steps widen: the steps' errors add up in the level
    width = (level["hi-95"] - level["lo-95"]).to_numpy()
    assert (np.diff(width) > 0).all()
    assert ((level["lo-95"] <= level["lo-80"]) & (level["hi-80"] <= level["hi-95"])).all()


def test_level_intervals_cover_at_their_level_when_the_steps_errors_are_dependent():
    """The mean model forecasts AR(1) changes (phi 0.6) as if they were independent, so its
    errors at neighbouring steps are correlated and the level's error (their running sum) is
    wider than its own steps suggest. Calibrated on the running sums, the level intervals still
    cover within 3 points of nominal: fit on 1,000 points, then forecast the level 1..4 steps
    ahead from each of the next 200 origins, in 5 independent samples."""
    steps, train, ahead = 4, 1000, 200
    inside = {80: [], 95: []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        changes = np.zeros(train + ahead + steps)
        for t in range(1, len(changes)):
            changes[t] = 0.6 * changes[t - 1] + rng.normal()
        levels = 100.0 + np.cumsum(changes)
        y = pd.Series(changes, index=pd.date_range("1800-01-01", periods=len(changes), freq="QS"), name="s")
        model = make_model("mean").fit(y.iloc[:train])
        for origin in range(train, train + ahead):
            model.update(y.iloc[:origin])
            level = level_forecast(
                model, model.predict(steps), "s", levels[origin - 1], "diff", Frequency.QUARTERLY, (80, 95)
            )
            actual = levels[origin : origin + steps]
            for lv in inside:
                inside[lv].append((level[f"lo-{lv}"] <= actual) & (actual <= level[f"hi-{lv}"]))
    for lv, hits in inside.items():
        coverage = float(np.mean(np.concatenate(hits)))
        assert abs(coverage - lv / 100) <= 0.03, f"{lv}% level intervals cover {coverage:.3f}"


def test_a_random_walk_level_interval_grows_like_the_square_root_of_the_horizon():
    """For changes forecast by their mean (iid), the level is a random walk: the default path
    sampler must add the steps' errors up, not treat each level step alone."""
    rng = np.random.default_rng(4)
    changes = pd.Series(rng.normal(0.0, 1.0, 400), index=pd.date_range("1900-01-01", periods=400, freq="QS"))
    model = make_model("mean").fit(changes)
    model.calibration_ = None  # the sampler's arithmetic, without the calibrated steps' sampling noise
    forecast = model.predict(16, (95,))
    level = level_forecast(model, forecast, changes.name or "y", 100.0, "diff", Frequency.QUARTERLY, (95,))
    width = (level["hi-95"] - level["lo-95"]).to_numpy()
    ratio = width[15] / width[0]
    assert ratio == pytest.approx(4.0, rel=0.1)  # sqrt(16)


@pytest.mark.parametrize("name", ["ar", "garch"])
def test_level_intervals_do_not_depend_on_how_many_steps_were_asked_for(name):
    """A 5-step answer is the first 5 steps of the 12-step one (the stored shape)."""
    code, transform = ("B", "log_return") if name == "garch" else ("Q", "log_diff_ann")
    levels, freq = real(code)
    panel = panel_of(levels.iloc[-2000:], transform, freq)
    model = make_model(name).fit(_with_freq(panel["s"].rename("s"), freq))
    anchor = anchor_at(panel, "s", model.cutoff_)
    short = level_forecast(model, model.predict(5, (80, 95)), "s", anchor, transform, freq, (80, 95))
    long = level_forecast(model, model.predict(12, (80, 95)), "s", anchor, transform, freq, (80, 95))
    pd.testing.assert_frame_equal(short, long.iloc[:5])


def test_anchor_at_a_cutoff_before_the_end_walks_back_the_later_steps():
    levels, freq = real("M")
    panel = panel_of(levels, "log_diff_ann", freq)
    cutoff = panel.index[-13]
    assert anchor_at(panel, "s", cutoff) == pytest.approx(float(levels.loc[cutoff]), rel=1e-10)


def test_a_what_if_history_moves_the_anchor_by_the_steps_it_replaces():
    levels, freq = real("Q")
    panel = panel_of(levels, "diff", freq)
    merged = panel.copy()
    start = panel.index[-2]
    merged.loc[start:, "s"] = [10.0, 20.0]
    old = panel["s"].iloc[-2:].sum()
    assert rebased_anchor(panel, merged, "s", panel.index[-2:], lambda: levels) == pytest.approx(
        float(levels.iloc[-1]) - old + 30.0
    )


def test_model_space_units_follow_the_transform():
    assert model_space_unit("percent", "none") == "percent"
    assert model_space_unit("percent", "diff") == "change in percent"
    assert model_space_unit("index points", "log_return") == "percent, log return"
    assert model_space_unit("billions of US$", "log_diff_ann") == "percent, annualized log growth"


def _with_freq(series: pd.Series, freq: Frequency) -> pd.Series:
    series.attrs = {"frequency": freq}
    return series
