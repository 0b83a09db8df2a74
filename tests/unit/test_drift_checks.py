"""The drift checks on simulated data: quiet on stable panels, loud on a break, and computing
exactly the score Evidently reports."""

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pefm.drift.calibration import stable_input_false_alarms
from pefm.drift.checks import evidently_drift, features, one_step_forecasts, predicted_changes, rmse
from pefm.drift.policy import DriftPolicy
from pefm.drift.significance import (
    MIN_EXCEEDANCES,
    Null,
    accuracy_p_value,
    flag,
    sequence_null,
    wasserstein_normed,
    window_nulls,
)


def test_a_stable_eight_series_panel_raises_an_alarm_in_at_most_5_percent_of_checks():
    """The whole panel, not each series: 16 tests at 5% each would alarm in over half of the
    checks; Benjamini-Hochberg over the panel keeps it at alpha."""
    policy = replace(DriftPolicy.load(), simulations=1000)
    flagged, rate = stable_input_false_alarms(policy, checks=120, series=8, seed=11)
    assert rate <= 0.05, f"{flagged} of 120 stable panel checks raised an alarm"


def test_a_level_shift_and_a_volatility_jump_are_flagged_in_a_panel():
    rng = np.random.default_rng(3)
    policy = DriftPolicy.load()
    tests = []
    for member in range(8):
        calm = rng.normal(0, 1, 53)
        if member == 0:  # a recession: lower growth, far more volatile
            calm[41:] = rng.normal(-3, 3, 12)
        frame = features(pd.Series(calm), "log_diff_ann")
        reference, current = frame.iloc[:40], frame.iloc[-12:]
        nulls = window_nulls(
            reference["value"].to_numpy(), 12, 12, level=False, simulations=2000, seed_text=str(member)
        )
        for feature in ("value", "volatility"):
            score = wasserstein_normed(reference[feature].to_numpy(), current[feature].to_numpy())[0]
            tests.append(({"member": member, "p_value": nulls[feature].p_value(score)}, nulls[feature]))
    level = flag(tests, policy.alpha)
    assert level == pytest.approx(2 * 0.05 / 16)  # Benjamini-Hochberg: two of 16 flagged
    assert [(s["member"], s["drifted"]) for s, _ in tests if s["drifted"]] == [(0, True), (0, True)]
    assert all(s["threshold"] > 0 for s, _ in tests)


def test_our_score_is_evidentlys_and_levels_are_differenced():
    rng = np.random.default_rng(0)
    reference, current = pd.DataFrame({"value": rng.normal(0, 1, 40)}), pd.DataFrame({"value": rng.normal(1, 2, 12)})
    [result], snapshot = evidently_drift(reference, current, [("value", "wasserstein")])
    assert result["score"] == pytest.approx(wasserstein_normed(reference["value"].to_numpy(), current["value"])[0])
    assert snapshot["metrics"][0]["config"]["method"] == "wasserstein"
    assert result["reference"] == reference["value"].round(6).tolist() and result["current_n"] == 12
    level = pd.Series([5.0, 5.5, 6.0, 6.5, 7.0])
    assert features(level, "none")["value"].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert features(level, "log_diff_ann")["value"].tolist() == [5.5, 6.0, 6.5, 7.0]


def test_nulls_are_deterministic_and_widen_with_persistence():
    rng = np.random.default_rng(1)
    white = rng.normal(size=40)
    persistent = np.zeros(40)
    for t in range(1, 40):
        persistent[t] = 0.9 * persistent[t - 1] + rng.normal()
    a = sequence_null(white, 12, 12, simulations=1000, seed_text="x")
    b = sequence_null(white, 12, 12, simulations=1000, seed_text="x")
    assert np.array_equal(a.scores, b.scores)
    wide = sequence_null(persistent, 12, 12, simulations=1000, seed_text="x")
    assert wide.critical(0.05) > a.critical(0.05)
    assert a.p_value(a.critical(0.05)) == pytest.approx(0.05, abs=0.01)


def test_realized_accuracy_is_a_permutation_test_that_holds_whatever_the_tails():
    rng = np.random.default_rng(4)
    backtest = rng.normal(0, 1, 20)
    p = accuracy_p_value(rng.normal(0, 4, 8), backtest, permutations=2000, seed_text="a")
    assert p < 0.002
    assert accuracy_p_value(np.zeros(8), backtest, permutations=2000, seed_text="a") == pytest.approx(1.0)
    # Cauchy errors, same distribution in the backtest and since: rejected at 5% about 5% of the time
    rejected = [
        accuracy_p_value(rng.standard_cauchy(8), rng.standard_cauchy(20), permutations=500, seed_text=str(i)) <= 0.05
        for i in range(400)
    ]
    assert np.mean(rejected) <= 0.07


def test_p_values_past_the_simulated_scores_come_from_a_fitted_tail():
    """5,000 draws put a Monte Carlo p-value at 1/5001 or above, yet Benjamini-Hochberg over 400
    tests (a hundred series) needs 0.05/400 of a lone drifted signal. Past the last ten simulated
    scores the generalized Pareto tail answers: near the truth for an exponential null, above it
    (conservative) for a Gaussian one, and small enough to flag."""
    from scipy.stats import norm

    rng = np.random.default_rng(8)
    exponential = Null(rng.exponential(size=5000))
    assert exponential.p_value(1.0) == (1 + np.sum(exponential.scores >= 1.0)) / 5001  # the draws answer
    p = exponential.p_value(12.0)
    assert np.exp(-12.0) / 3 < p < 3 * np.exp(-12.0) and p < 1 / 5001
    assert exponential.p_value(13.0) < p
    assert exponential.critical(1e-6) == pytest.approx(-np.log(1e-6), rel=0.15)
    gaussian = Null(rng.normal(size=5000))
    assert norm.sf(5.0) < gaussian.p_value(5.0) < 1 / 5001
    tests = [({"p_value": gaussian.p_value(0.1)}, gaussian) for _ in range(399)]
    tests.append(({"p_value": gaussian.p_value(7.0)}, gaussian))
    flag(tests, 0.05)
    assert [signal["drifted"] for signal, _ in tests].count(True) == 1 and tests[-1][0]["drifted"]
    assert tests[-1][0]["threshold"] < 7.0
    # never above what the draws alone give, and falling as the score grows: a light-tailed (uniform)
    # null's exponential tail would give more than the count where the tail takes over
    uniform = Null(rng.uniform(size=5000))
    edge = np.sort(uniform.scores)[-MIN_EXCEEDANCES]
    ladder = [uniform.p_value(edge + d) for d in (-1e-9, 0.0, 1e-9, 1e-4, 0.5)]
    assert ladder == sorted(ladder, reverse=True), ladder
    assert uniform.p_value(uniform.scores.max()) <= 2 / 5001
    few = Null(rng.exponential(size=500))  # too few draws to spare a tail: the draws alone
    assert few.p_value(12.0) == 1 / 501


def test_report_rows_flatten_every_signal():
    from pefm.drift.monitor import report_rows

    series = {
        "gdp": {
            "input": [
                {
                    "feature": "value",
                    "method": "wasserstein",
                    "score": 2.0,
                    "threshold": 1.3,
                    "p_value": 0.001,
                    "drifted": True,
                }
            ],
            "accuracy": {"ratio": 1.5, "method": "permutation", "threshold": None, "p_value": 0.2, "drifted": False},
            "prediction": {
                "method": "wasserstein",
                "score": 0.2,
                "threshold": 1.3,
                "p_value": 0.7,
                "drifted": False,
            },
        }
    }
    rows = report_rows(series)
    assert [(r["feature"], r["method"], r["score"], r["drifted"]) for r in rows] == [
        ("value", "wasserstein", 2.0, True),
        ("realized / backtest RMSE", "permutation", 1.5, False),
        ("one-step forecasts", "wasserstein", 0.2, False),
    ]
    assert [r["p_value"] for r in rows] == [0.001, 0.2, 0.7]


def test_a_level_models_forecasts_are_compared_as_the_changes_they_predict():
    """A random walk served by an AR model of its changes, long after training, with no drift:
    its forecast levels wander off the backtest's as the series does (the AR(1) null of a level,
    pulled back to its mean, alarmed in over a quarter of the checks 200 points on); the changes
    they predict do not."""
    alarms = {"levels": 0, "changes": 0}
    cases, reference, current, gap = 100, 40, 12, 200
    for case in range(cases):
        rng = np.random.default_rng(case)
        y = pd.Series(np.cumsum(rng.normal(size=reference + gap + 2)), index=pd.RangeIndex(reference + gap + 2))
        forecasts = (y + 0.3 * y.diff()).shift(1).dropna()  # each made from the points before it
        old, new = forecasts.iloc[:reference], forecasts.iloc[-current:]
        for kind, (a, b) in {
            "levels": (old, new),
            "changes": (predicted_changes(old, y), predicted_changes(new, y)),
        }.items():
            null = sequence_null(a.to_numpy(), gap, len(b), simulations=400, seed_text=f"{kind}{case}")
            score = wasserstein_normed(a.to_numpy()[None, :], b.to_numpy()[None, :])[0]
            alarms[kind] += null.p_value(score) < 0.05
    assert alarms["changes"] <= 0.1 * cases, alarms
    assert alarms["levels"] >= 0.2 * cases, alarms  # what the test of levels did


def test_rmse_of_huge_finite_errors_does_not_overflow():
    assert rmse(np.array([1e160, -1e160])) == pytest.approx(1e160)
    assert rmse(np.array([3.0, 4.0])) == pytest.approx(np.sqrt(12.5)) and rmse(np.zeros(3)) == 0.0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x = 1\n", "unknown key 'x'"),  # had been accepted: every default in force, unsaid
        ("[panel]\nalpa = 0.1\n", "unknown key panel.alpa"),
        ("panel = 5\n", "[panel] must be a table"),
        ("[trigger]\nconsecutive = true\n", "consecutive must be an integer"),
    ],
)
def test_a_drift_policy_with_a_key_it_does_not_know_is_refused(tmp_path, text, says):
    from pefm.config import ConfigError

    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(says)):
        DriftPolicy.load(path)


def test_a_joint_models_one_step_forecasts_on_a_ragged_edge_are_of_their_own_dates():
    """A VAR of two series, one published five quarters ahead of the other: its data end at their
    common last date, so past the quarter after it the next step was that quarter's forecast,
    paired with each later value. Only the values its data reach in one step have a forecast, the
    same as with both series complete (each is conditioned on the data before it)."""
    from pefm.data.frequency import Frequency
    from pefm.forecasting.models import make_model

    rng = np.random.default_rng(0)
    quarters = pd.date_range("1990-01-01", periods=66, freq="QS")
    panel = pd.DataFrame(rng.normal(size=(66, 2)), columns=["a", "b"], index=quarters)
    panel.attrs = {"frequencies": {"a": Frequency.QUARTERLY, "b": Frequency.QUARTERLY}}
    model = make_model("var").fit(panel.iloc[:60])  # trained to 2004Q4
    ragged = panel.copy()
    ragged.loc["2005-04-01":, "b"] = np.nan  # b known to 2005Q1, a to 2006Q2
    ragged.attrs = panel.attrs
    complete = one_step_forecasts(model, panel, "a", model.cutoff_)
    steps = one_step_forecasts(model, ragged, "a", model.cutoff_)
    assert len(complete) == 6 and list(steps.index) == list(pd.to_datetime(["2005-01-01", "2005-04-01"]))
    pd.testing.assert_frame_equal(steps, complete.loc[steps.index])


def test_no_errors_or_a_score_that_is_no_number_is_no_evidence_of_drift():
    """The mean square of no errors is NaN, which no draw compares as at least as large as: a
    model checked before a value arrived since training got the smallest p-value there is, and an
    accuracy signal of ratio 0 under a policy that allowed no errors."""
    from pefm.drift.monitor import _accuracy

    rng = np.random.default_rng(5)
    assert Null(rng.exponential(size=5000)).p_value(float("nan")) == 1.0
    backtest = rng.normal(size=40)
    with pytest.raises(ValueError, match="min_errors >= 2"):  # a policy built in code too
        replace(DriftPolicy.load(), accuracy_min_errors=0)
    policy = replace(DriftPolicy.load(), accuracy_min_errors=2, simulations=500)
    for n in (0, 1):
        steps = pd.DataFrame({"error": rng.normal(size=n)})
        assert _accuracy("s", backtest, steps, policy) is None
    assert _accuracy("s", backtest, pd.DataFrame({"error": rng.normal(size=2)}), policy)["errors"] == 2


@pytest.mark.parametrize("text", ["min_errors = 0\n", "min_errors = 1\n", "window = 0\n", "window = 3\n"])
def test_a_drift_policy_that_tests_accuracy_on_too_few_errors_is_refused(tmp_path, text):
    """min_errors = 0 tested no errors at all, and a window of 0 took every error since training."""
    from pefm.config import ConfigError

    path = tmp_path / "policy.toml"
    path.write_text(f"[accuracy]\n{text}")
    with pytest.raises(ConfigError, match=re.escape("need [accuracy] min_errors >= 2 and window >= min_errors")):
        DriftPolicy.load(path)
    path.write_text("[accuracy]\nwindow = 2\nmin_errors = 2\n")
    assert DriftPolicy.load(path).accuracy_window == 2
