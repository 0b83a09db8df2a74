"""What the broad run decides once every job has finished (``bench/broad_run.py``,
``bench/broad_score.py``): a model out of step with the baseline on a series, or a series with no
in-sample scale, is a failure named for that series; the run goes on to its tables and JSON. No
backtest runs here: the forecasts are built by hand."""

import numpy as np
import pandas as pd

from tests.bench_modules import bench_module

broad_run = bench_module("broad_run")
broad_score = bench_module("broad_score")

MONTHS = pd.date_range("2000-01-01", periods=60, freq="MS")


def _forecasts(history: pd.Series, mean: float, *, first: int = 46, windows: int = 6, shift: float = 0.0):
    """A model's rows on ``history``: ``windows`` origins from position ``first``, h=8, the value
    ``mean`` at every step, targets read off ``history`` (plus ``shift``)."""
    rows = []
    for origin in range(first, first + windows):
        for k in range(1, broad_run.H + 1):
            if origin + k < len(history):
                rows.append(
                    {
                        "series_id": history.name,
                        "cutoff": history.index[origin],
                        "ds": history.index[origin + k],
                        "y": history.iloc[origin + k] + shift,
                        "mean": mean,
                        **{f"lo-{lv}": mean - lv / 100 for lv in broad_run.LEVELS},
                        **{f"hi-{lv}": mean + lv / 100 for lv in broad_run.LEVELS},
                    }
                )
    return broad_run.with_steps(pd.DataFrame(rows))


def _histories():
    rng = np.random.default_rng(3)
    a = pd.Series(np.cumsum(rng.normal(size=60)), index=MONTHS, name="a")
    b = pd.Series(np.cumsum(rng.normal(size=60)), index=MONTHS, name="b")
    return a, b


def test_a_model_out_of_step_on_a_series_is_that_series_failure_not_a_crash():
    a, b = _histories()

    def both(mean, **on_b):
        return pd.concat([_forecasts(a, mean), _forecasts(b, mean, **on_b)], ignore_index=True)

    forecasts = {
        "naive": both(0.0),
        "sf_Naive": pd.concat([_forecasts(a, 0.5), _forecasts(b, 0.0)], ignore_index=True),  # a: other points
        "sf_AutoARIMA": both(1.0, shift=1.0),  # b: other targets (what a gap in the series did)
        "sf_AutoETS": both(1.0, first=45),  # b: other origins
    }
    kept, checked, failures = broad_run.check_alignment(forecasts)
    assert failures == [
        {"model": "sf_Naive", "series_id": "a", "error": "alignment: disagrees with PEFM's naive by up to 0.5"},
        {"model": "sf_AutoARIMA", "series_id": "b", "error": "alignment: targets differ from naive's"},
        {"model": "sf_AutoETS", "series_id": "b", "error": "alignment: origins differ from naive's"},
    ]
    assert checked == {"naive": 96, "sf_Naive": 96, "sf_AutoARIMA": 96, "sf_AutoETS": 96}
    assert set(kept["naive"]["series_id"]) == {"a", "b"}
    assert set(kept["sf_Naive"]["series_id"]) == {"b"}
    assert set(kept["sf_AutoARIMA"]["series_id"]) == set(kept["sf_AutoETS"]["series_id"]) == {"a"}
    # the failed pairs leave both series out of the aggregates, and the scores still come
    histories, seasons = {"a": a, "b": b}, {"a": 12, "b": 12}
    scores, scoring_failures = broad_score.score_all(kept, histories, seasons)
    assert scoring_failures == []
    assert broad_score.common_series(scores, list(kept), ["a", "b"], broad_run.H) == []


def test_a_series_flat_up_to_its_first_origin_is_named_and_left_out():
    """The scaled Winkler's divisor, the in-sample seasonal naive's MAE, is 0 there: it used to
    raise ZeroDivisionError, which nothing caught, after every job had run."""
    a, _ = _histories()
    rate = pd.Series(np.r_[np.full(47, 0.25), np.linspace(0.5, 3, 13)], index=MONTHS, name="rate")
    forecasts = {"naive": pd.concat([_forecasts(a, 0.0), _forecasts(rate, 0.25)], ignore_index=True)}
    histories, seasons = {"a": a, "rate": rate}, {"a": 12, "rate": 12}
    scores, failures = broad_score.score_all(forecasts, histories, seasons)
    assert failures == [
        {
            "model": "naive",
            "series_id": "rate",
            "error": "scoring: no in-sample scale: the seasonal naive (season length 12) fits all 47 points "
            "up to the first origin exactly",
        }
    ]
    assert broad_score.common_series(scores, ["naive"], ["a", "rate"], broad_run.H) == ["a"]
    # with every series failed there is nothing to aggregate: no targets, and no crash either
    only_rate = {"naive": _forecasts(rate, 0.25)}
    scores, failures = broad_score.score_all(only_rate, histories, seasons)
    assert scores.empty and len(failures) == 1
    agg = broad_score.aggregate(scores, broad_score.common_series(scores, ["naive"], ["rate"], broad_run.H))
    assert broad_score.targets(agg, {}, None) == []
