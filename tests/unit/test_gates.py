"""The validation gates on synthetic backtests whose truth is known: an indistinguishable candidate
passes (also over a whole panel), a significantly worse one fails with its test statistic and
p-value, backtests of other windows or other data are refused, and the policy file is checked."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pefm.forecasting.gates import MismatchedBacktests, PolicyError, evaluate, load_policy, with_steps

SERIES = ["realgdp", "unemp", "infl"]


def backtest(rng, truth: dict[str, np.ndarray], noise: float | dict[str, float], cutoffs=None, h: int = 1):
    """Backtest rows of a model whose h-step forecasts miss the truth by N(0, noise^2), with
    95% intervals of the matching width (so they cover about 95%)."""
    rows = []
    for series_id, y in truth.items():
        sd = noise[series_id] if isinstance(noise, dict) else noise
        dates = pd.date_range("1990-01-01", periods=len(y) + h, freq="D")
        for i, cutoff in enumerate(cutoffs if cutoffs is not None else dates[: len(y) - h + 1]):
            for k in range(h):
                position = min(i + k, len(y) - 1)
                mean = y[position] + rng.normal(0, sd)
                rows.append(
                    {
                        "series_id": series_id,
                        "cutoff": cutoff,
                        "ds": dates[position + 1],
                        "y": y[position],
                        "mean": mean,
                        "lo-95": mean - 1.96 * sd,
                        "hi-95": mean + 1.96 * sd,
                    }
                )
    return with_steps(pd.DataFrame(rows))


def truth(rng, series=SERIES, n=40):
    return {s: rng.normal(0, 3, n) for s in series}


def test_an_indistinguishable_candidate_passes():
    rng = np.random.default_rng(1)
    y = truth(rng)
    report = evaluate(load_policy(), backtest(rng, y, 1.0), backtest(rng, y, 1.0), candidate_id="b", serving_id="a")
    assert report["passed"] is True, report["failures"]
    dm = [c for c in report["checks"] if c["test"] == "diebold-mariano"]
    assert {c["series_id"] for c in dm} == set(SERIES)
    assert all(c["n"] == 40 and c["statistic"] is not None and 0 <= c["p_value"] <= 1 for c in dm)
    assert len(report["windows"]["cutoffs"]) == 40 and report["windows"]["h"] == 1


def test_indistinguishable_candidates_are_blocked_in_at_most_alpha_of_panels():
    """Holm over the panel: 200 panels of 8 series, candidate and serving equally good; a rule that
    tested each series at 5% would block about 1 - 0.95^8 = 34% of them."""
    rng = np.random.default_rng(7)
    rules = [r for r in load_policy() if r.test == "diebold-mariano"]
    series = [f"s{i}" for i in range(8)]
    blocked = 0
    for _ in range(200):
        y = truth(rng, series)
        blocked += not evaluate(rules, backtest(rng, y, 1.0), backtest(rng, y, 1.0))["passed"]
    assert blocked / 200 <= 0.05, blocked


def test_a_significantly_worse_candidate_fails_with_its_statistic_and_p_value():
    rng = np.random.default_rng(2)
    y = truth(rng)
    worse = {"realgdp": 2.5, "unemp": 1.0, "infl": 1.0}  # twice and a half the serving model's error on gdp
    report = evaluate(load_policy(), backtest(rng, y, worse), backtest(rng, y, 1.0), candidate_id="b", serving_id="a")
    assert report["passed"] is False
    failures = [c for c in report["checks"] if not c["passed"]]
    assert {(c["series_id"], c["test"]) for c in failures} == {
        ("realgdp", "diebold-mariano"),
        ("realgdp", "interval-score"),  # its intervals are honest, but 2.5 times as wide
    }
    [failure] = [c for c in failures if c["test"] == "diebold-mariano"]
    assert failure["statistic"] > 2 and failure["p_adjusted"] <= 0.05 and failure["candidate"] > failure["serving"]
    assert report["failures"][0].startswith("realgdp h=1 (n=40): RMSE")
    assert "DM-HLN t=" in report["failures"][0] and "significantly worse" in report["failures"][0]


def test_a_slightly_worse_candidate_within_the_tolerance_passes(tmp_path: Path):
    """Significance alone does not block: the loss must also exceed the tolerance."""
    rng = np.random.default_rng(3)
    y = {"realgdp": rng.normal(0, 3, 1500)}
    serving = backtest(rng, y, 1.0)
    candidate = serving.assign(mean=serving["mean"] + 0.1)  # 0.5% worse, but on 1500 windows
    policy = tmp_path / "gates.toml"
    policy.write_text('[[rule]]\ntest = "diebold-mariano"\ntolerance = 0.02\n')
    [check] = evaluate(load_policy(policy), candidate, serving)["checks"]
    assert check["p_adjusted"] <= 0.05 and check["passed"] and "tolerance" in check["reason"]
    policy.write_text('[[rule]]\ntest = "diebold-mariano"\ntolerance = 0\n')
    [check] = evaluate(load_policy(policy), candidate, serving)["checks"]
    assert not check["passed"]


def test_multi_step_backtests_are_tested_per_step():
    rng = np.random.default_rng(4)
    y = truth(rng, ["realgdp"])
    report = evaluate(load_policy(), backtest(rng, y, 1.0, h=3), backtest(rng, y, 1.0, h=3))
    dm = sorted((c for c in report["checks"] if c["test"] == "diebold-mariano"), key=lambda c: c["step"])
    assert [c["step"] for c in dm] == [1, 2, 3] and report["windows"]["h"] == 3
    assert [c["metric"] for c in dm] == ["rmse@h1", "rmse@h2", "rmse@h3"]  # the backtest's per-step names
    assert [c["reason"].split(" (")[0] for c in dm] == ["realgdp h=1", "realgdp h=2", "realgdp h=3"]
    scores = [c["metric"] for c in report["checks"] if c["test"] == "interval-score"]
    assert sorted(scores) == ["winkler-95@h1", "winkler-95@h2", "winkler-95@h3"]


def test_the_steps_too_few_windows_leave_untested_are_named():
    """Three windows of h=4: a Diebold-Mariano test at step k needs more than k windows, so steps
    3 and 4 go untested, and the report says so rather than passing them in silence."""
    rng = np.random.default_rng(5)
    y = truth(rng, ["realgdp"], n=6)
    cutoffs = pd.date_range("1990-01-01", periods=3, freq="D")
    report = evaluate(
        load_policy(), backtest(rng, y, 1.0, cutoffs=cutoffs, h=4), backtest(rng, y, 1.0, cutoffs=cutoffs, h=4)
    )
    assert sorted({c["step"] for c in report["checks"] if c["test"] == "diebold-mariano"}) == [1, 2]
    untested = [s["reason"] for s in report["skipped"] if s["reason"].startswith("h=")]
    assert len(untested) == 2 and all(r.startswith("h=3, 4 untested: too few windows") for r in untested)


def test_steps_are_counted_along_the_forecast_path_before_rows_without_actuals_are_dropped():
    """A stored window whose first target has no actual (a date the series lacks) keeps step 2 as
    step 2: the step is the row's place in the model's forecast path."""
    rows = pd.DataFrame(
        {
            "series_id": "realgdp",
            "cutoff": ["2000-01-01"] * 3,
            "ds": ["2000-04-01", "2000-07-01", "2000-10-01"],
            "y": [None, 2.0, 3.0],
            "mean": [1.0, 2.5, 2.5],
        }
    )
    framed = with_steps(rows)
    assert framed["step"].tolist() == [2, 3] and framed["y"].tolist() == [2.0, 3.0]


def test_backtests_on_other_cutoffs_or_other_data_are_refused():
    rng = np.random.default_rng(5)
    y = truth(rng)
    candidate = backtest(rng, y, 1.0)
    shifted = candidate.assign(
        cutoff=candidate["cutoff"] + pd.offsets.QuarterBegin(), ds=candidate["ds"] + pd.offsets.QuarterBegin()
    )
    with pytest.raises(MismatchedBacktests, match="different windows"):
        evaluate(load_policy(), candidate, shifted)
    fewer = candidate[candidate["cutoff"] > candidate["cutoff"].min()]
    with pytest.raises(MismatchedBacktests, match="only the candidate's"):
        evaluate(load_policy(), candidate, fewer)
    revised = candidate.assign(y=candidate["y"] + (candidate["series_id"] == "infl") * 0.25)
    with pytest.raises(MismatchedBacktests, match="different data"):
        evaluate(load_policy(), candidate, revised)


def test_the_sharpe_rule_compares_the_strategies_on_the_same_days():
    rng = np.random.default_rng(6)
    returns = {"sp500": rng.standard_t(4, 500)}
    serving = backtest(rng, returns, 0.5)  # knows the sign of most days
    same = backtest(rng, returns, 0.5)
    blind = backtest(rng, returns, 50.0)  # a coin flip
    rules = [r for r in load_policy() if r.test == "sharpe"]
    assert evaluate(rules, same, serving, returns={"sp500"})["passed"]
    report = evaluate(rules, blind, serving, returns={"sp500"})
    [check] = report["checks"]
    assert not check["passed"] and check["statistic"] < 0 and "JK-Memmel" in check["reason"]
    assert evaluate(rules, blind, serving)["skipped"][0]["reason"] == "no return series among the compared ones"


def test_intervals_worse_than_the_serving_models_fail_the_interval_score_rule():
    rng = np.random.default_rng(8)
    y = truth(rng)
    serving, candidate = backtest(rng, y, 1.0), backtest(rng, y, 1.0)
    rules = [r for r in load_policy() if r.test == "interval-score"]
    assert evaluate(rules, candidate, serving)["passed"]
    narrow = candidate.assign(**{"lo-95": candidate["mean"] - 0.3, "hi-95": candidate["mean"] + 0.3})
    report = evaluate(rules, narrow, serving)
    assert not report["passed"] and all(c["candidate"] > c["serving"] for c in report["checks"])
    assert "95% interval score" in report["failures"][0]


def test_the_optional_coverage_rule_is_an_exact_binomial_test(tmp_path: Path):
    rng = np.random.default_rng(8)
    candidate = backtest(rng, truth(rng), 1.0)
    policy = tmp_path / "gates.toml"
    policy.write_text('[[rule]]\ntest = "coverage"\nlevel = 95\n')
    assert evaluate(load_policy(policy), candidate, None)["passed"]  # needs no serving model
    narrow = candidate.assign(**{"lo-95": candidate["mean"] - 0.5, "hi-95": candidate["mean"] + 0.5})
    report = evaluate(load_policy(policy), narrow, None)
    assert not report["passed"] and all(c["candidate"] < 0.6 for c in report["checks"])


def test_without_a_serving_model_the_comparisons_are_skipped():
    rng = np.random.default_rng(9)
    report = evaluate(load_policy(), backtest(rng, truth(rng), 1.0), None)
    assert report["passed"] is True and report["checks"] == []
    assert {s["reason"] for s in report["skipped"]} == {"no serving model to compare with"}


def test_policy_files_are_validated_naming_the_rule(tmp_path: Path):
    bad = tmp_path / "gates.toml"
    bad.write_text('[[rule]]\nmetric = "rmse"\nrelative = "ratio"\n')
    with pytest.raises(PolicyError, match="rule 1: test must be one of"):
        load_policy(bad)
    bad.write_text('[[rule]]\ntest = "coverage"\nalpha = 0.05\ntolerance = 0.1\n')
    with pytest.raises(PolicyError, match=r"unknown field\(s\) for a coverage rule: \['tolerance'\]"):
        load_policy(bad)
    bad.write_text('[[rule]]\ntest = "diebold-mariano"\nalpha = 2\n')
    with pytest.raises(PolicyError, match="alpha must be in"):
        load_policy(bad)
    bad.write_text('[[rule]]\ntest = "coverage"\nlevel = "95"\n')
    with pytest.raises(PolicyError, match="level must be a number"):
        load_policy(bad)


def test_a_comparison_that_cannot_run_fails_rather_than_passes():
    """One window of h=8: no step had more windows than its h, so no test ran, and a candidate
    whose errors were ten times the serving model's passed with no check at all."""
    rng = np.random.default_rng(11)
    y = truth(rng, ["realgdp"], n=9)
    cutoffs = pd.date_range("1990-01-01", periods=1, freq="D")
    worse = backtest(rng, y, 10.0, cutoffs=cutoffs, h=8)
    report = evaluate(load_policy(), worse, backtest(rng, y, 1.0, cutoffs=cutoffs, h=8))
    assert report["passed"] is False and report["checks"] == []
    assert any(f.startswith("no comparison with the serving model could run on 1 window") for f in report["failures"])
    alone = evaluate(load_policy(), worse, None)  # nothing serves: nothing to compare with, as before
    assert alone["passed"] is True
    # a policy whose paired rules do not apply (the Sharpe rule, no return series) did not want windows
    sharpe = [r for r in load_policy() if r.test == "sharpe"]
    long = truth(rng, ["realgdp"])
    assert evaluate(sharpe, backtest(rng, long, 1.0, h=8), backtest(rng, long, 1.0, h=8))["passed"] is True


def test_a_series_only_the_serving_models_backtest_has_fails_the_candidate():
    """The candidate forecasts unemp but its backtest lacks it (too short for its model): unemp
    was compared nowhere, named nowhere, and the candidate passed."""
    rng = np.random.default_rng(12)
    y = truth(rng, ["realgdp", "unemp"])
    candidate = backtest(rng, {"realgdp": y["realgdp"]}, 1.0)
    report = evaluate(load_policy(), candidate, backtest(rng, y, 1.0))
    assert report["passed"] is False
    assert [f for f in report["failures"] if f.startswith("unemp:")] == [
        "unemp: the serving model's backtest has it and the candidate's does not: nothing compared them"
    ]
    dropped = evaluate(load_policy(), candidate, backtest(rng, y, 1.0), dropped=["unemp"])  # one failure, not two
    assert [f for f in dropped["failures"] if f.startswith("unemp:")] == [
        "unemp: the serving model forecasts it, the candidate does not (promoting it would leave unemp unserved)"
    ]


def test_cutoffs_a_horizon_apart_share_no_shocks_and_every_step_is_tested():
    """With cutoffs 4 periods apart, 4-step errors do not overlap: each step is tested with h=1
    (no Newey-West lags), not left untested or over-corrected as if cutoffs were a period apart."""
    rng = np.random.default_rng(13)
    y = truth(rng, ["realgdp"], n=6)
    cutoffs = pd.date_range("1990-01-01", periods=3, freq="D")
    pair = backtest(rng, y, 1.0, cutoffs=cutoffs, h=4), backtest(rng, y, 1.0, cutoffs=cutoffs, h=4)
    spaced = evaluate(load_policy(), *pair, spacing=4)
    assert sorted({c["step"] for c in spaced["checks"] if c["test"] == "diebold-mariano"}) == [1, 2, 3, 4]
    assert not [s for s in spaced["skipped"] if s["reason"].startswith("h=")]
    dense = evaluate(load_policy(), *pair)  # a period apart: steps 3 and 4 need more than 3 windows
    assert sorted({c["step"] for c in dense["checks"] if c["test"] == "diebold-mariano"}) == [1, 2]


def overlapping_backtest(rng, series, n: int = 40, h: int = 8, width: float = 1.0) -> pd.DataFrame:
    """Backtest rows of a random walk's h-step forecasts from cutoffs a period apart: the k-step
    errors of neighbouring cutoffs share k - 1 shocks. Its 95% intervals are ``width`` times the
    calibrated ones (1: they cover 95% at every step)."""
    rows = []
    dates = pd.date_range("1990-01-01", periods=n + h, freq="D")
    for series_id in series:
        shocks = rng.normal(size=n + h)
        for i in range(n):
            for k in range(1, h + 1):
                half = width * 1.959964 * np.sqrt(k)
                row = {"series_id": series_id, "cutoff": dates[i], "ds": dates[i + k], "mean": 0.0}
                rows.append(row | {"y": shocks[i : i + k].sum(), "lo-95": -half, "hi-95": half})
    return with_steps(pd.DataFrame(rows))


def test_the_coverage_rule_holds_its_size_on_overlapping_multi_step_errors(tmp_path: Path):
    """Overlapping k-step errors miss together: the binomial test of all 40 windows blocked
    calibrated intervals in 16% of series at k=8 and, over 3 series x 8 steps with Holm, in 18%
    of panels (alpha 5%). Tested on subsamples of windows that share no shocks, it holds alpha,
    and intervals far too narrow still fail."""
    policy = tmp_path / "gates.toml"
    policy.write_text('[[rule]]\ntest = "coverage"\nlevel = 95\n')
    rules = load_policy(policy)
    rng = np.random.default_rng(14)
    blocked = sum(not evaluate(rules, overlapping_backtest(rng, SERIES), None)["passed"] for _ in range(100))
    assert blocked / 100 <= 0.05, blocked
    narrow = evaluate(rules, overlapping_backtest(rng, ["realgdp"], width=0.4), None)
    assert not narrow["passed"]
    [check] = [c for c in narrow["checks"] if c["step"] == 8]
    assert check["subsamples"] == 8 and check["n"] == 40 and "binomial on 8 subsamples" in check["reason"]
    spaced = evaluate(rules, overlapping_backtest(rng, ["realgdp"]), None, spacing=8)  # share no shocks
    assert {c["subsamples"] for c in spaced["checks"]} == {1}


def test_a_rule_on_an_interval_level_the_backtests_lack_fails_naming_those_stored(tmp_path: Path):
    """A rule on 90% intervals, where the backtests store 95% ones, was skipped and a candidate five
    times worse passed with no check run."""
    rng = np.random.default_rng(15)
    y = truth(rng)
    candidate, serving = backtest(rng, y, 5.0), backtest(rng, y, 1.0)
    policy = tmp_path / "gates.toml"
    for test in ("interval-score", "coverage"):
        policy.write_text(f'[[rule]]\nname = "ninety"\ntest = "{test}"\nlevel = 90\n')
        report = evaluate(load_policy(policy), candidate, serving)
        assert report["passed"] is False and report["checks"] == []
        [failure] = report["failures"]
        assert failure.startswith("rule 'ninety' tests 90% intervals, which the") and "(levels stored: 95%)" in failure
    policy.write_text('[[rule]]\ntest = "interval-score"\nlevel = 90\n')
    alone = evaluate(load_policy(policy), candidate, None)  # nothing to compare with, as before
    assert alone["passed"] is True and alone["skipped"][0]["reason"] == "no serving model to compare with"


def test_a_rule_table_not_an_array_of_tables_or_an_infinite_number_is_refused(tmp_path: Path):
    """`[rule]` for `[[rule]]` crashed with AttributeError; `tolerance = inf` switched the rule off."""
    bad = tmp_path / "gates.toml"
    bad.write_text('[rule]\ntest = "coverage"\n')
    with pytest.raises(PolicyError, match=r"each rule must be a \[\[rule\]\] table"):
        load_policy(bad)
    bad.write_text('rule = ["coverage"]\n')
    with pytest.raises(PolicyError, match=r"each rule must be a \[\[rule\]\] table"):
        load_policy(bad)
    for field, value in (("tolerance", "inf"), ("cost", "nan"), ("alpha", "-inf")):
        test = "sharpe" if field == "cost" else "diebold-mariano"
        bad.write_text(f'[[rule]]\ntest = "{test}"\n{field} = {value}\n')
        with pytest.raises(PolicyError, match=f"rule 1: {field} must be finite, not {value}"):
            load_policy(bad)
