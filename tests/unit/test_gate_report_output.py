"""``pefm gate``'s table shows every failure its count counts: a series the candidate does not
forecast, or a rule that could not run, fails the gates without a row of its own, and the
README's example said "gates failed (15 checks)" over six FAIL rows."""

from pefm.cli import console
from pefm.cli.forecasting import print_gate_report


def check(series: str, passed: bool) -> dict:
    return {
        "rule": "accuracy (Diebold-Mariano)",
        "series_id": series,
        "step": 1,
        "n": 12,
        "candidate": 1.0,
        "serving": 0.5,
        "statistic": 3.0,
        "p_value": 0.001,
        "p_adjusted": 0.01,
        "passed": passed,
    }


def test_failures_without_a_row_are_printed_after_the_table():
    dropped = "nasdaq: the serving model forecasts it, the candidate does not (promoting it would leave it unserved)"
    report = {
        "candidate": "mean-1",
        "serving": "bundle-1",
        "checks": [check("unemp", False), check("realgdp", True)],
        "windows": {"cutoffs": ["2004-10-01", "2007-07-01"], "h": 8, "serving_backtest": "stored"},
        "skipped": [],
        "failures": ["unemp h=1 (n=12): RMSE 1 vs 0.5", dropped],
    }
    with console.capture() as captured:
        print_gate_report(report)
    text = " ".join(captured.get().split())
    assert text.count("FAIL") == 1 and text.count("failed: ") == 1
    assert "failed: nasdaq: the serving model forecasts it, the candidate does not" in text
    assert "unemp h=1" not in text  # a failed check's reason is its row
