from pathlib import Path

import pytest

from pefm.forecasting.gates import PolicyError, evaluate, load_policy

SERVING = {
    "realgdp": {"rmse": 2.0, "coverage-95": 0.95},
    "sp500": {"rmse": 1.0, "sharpe": 0.5, "coverage-95": 0.94},
}


def test_an_equal_candidate_passes():
    report = evaluate(load_policy(), SERVING, SERVING, candidate_id="b", serving_id="a")
    assert report["passed"] is True
    assert report["failures"] == []
    assert {c["rule"] for c in report["checks"]} == {
        "rmse no worse than 2%",
        "sharpe no more than 0.1 below",
        "95% intervals cover 80-100%",
    }


def test_a_worse_candidate_fails_with_a_readable_reason():
    worse = {
        "realgdp": {"rmse": 2.2, "coverage-95": 0.95},
        "sp500": {"rmse": 1.0, "sharpe": 0.3, "coverage-95": 0.6},
    }
    report = evaluate(load_policy(), worse, SERVING, candidate_id="b", serving_id="a")
    assert report["passed"] is False
    assert report["failures"] == [
        "realgdp: rmse 2.2 (serving 2) fails: <= 1.02 x serving = 2.04",
        "sp500: sharpe 0.3 (serving 0.5) fails: >= serving -0.1 = 0.4",
        "sp500: coverage-95 0.6 (serving 0.94) fails: in [0.8, 1]",
    ]


def test_without_a_serving_model_only_absolute_rules_apply():
    report = evaluate(load_policy(), SERVING, None)
    assert report["passed"] is True
    assert {c["metric"] for c in report["checks"]} == {"coverage-95"}
    assert {s["reason"] for s in report["skipped"]} == {"no serving model to compare with"}


def test_policy_files_are_validated_naming_the_rule(tmp_path: Path):
    bad = tmp_path / "gates.toml"
    bad.write_text('[[rule]]\nmetric = "rmse"\nrelative = "ratio"\n')
    with pytest.raises(PolicyError, match="rule 1: a ratio rule needs max"):
        load_policy(bad)
    bad.write_text('[[rule]]\nmetric = "rmse"\nmax = 1\ncolour = "red"\n')
    with pytest.raises(PolicyError, match="unknown field"):
        load_policy(bad)
    custom = tmp_path / "strict.toml"
    custom.write_text('[[rule]]\nname = "tight"\nmetric = "rmse"\nrelative = "ratio"\nmax = 0.9\n')
    report = evaluate(load_policy(custom), SERVING, SERVING)
    assert report["passed"] is False
