"""The serving benchmarks' alternating rounds (``bench/harness.py``'s helpers, which
``bench/serve.py``, ``bench/stream.py`` and ``bench/router.py`` share) and ``bench/serve.py``'s
verdicts on issue 20's targets."""

from tests.bench_modules import bench_module

harness = bench_module("harness")
serve = bench_module("serve")


def test_rounds_alternate_which_side_goes_first_and_warm_up_before_each_run():
    calls = []

    def side(name):
        def run(seconds):
            calls.append((name, seconds))
            return {"rps": float(len(calls)), "p99_ms": 1.0}

        return harness.warmed(run, duration=2, warm_up=1)

    results = harness.alternate({"anchor": side("anchor"), "ours": side("ours")}, rounds=3)
    assert [name for name, seconds in calls if seconds == 2] == ["anchor", "ours", "ours", "anchor", "anchor", "ours"]
    assert [seconds for _, seconds in calls] == [1, 2] * 6  # every measured run right after its warm-up
    assert [run["rps"] for run in results["anchor"]] == [2.0, 8.0, 10.0]  # in round order
    assert harness.round_order(["a", "b", "c"], 1) == ["c", "b", "a"]  # every pair swaps places


def test_the_ratio_is_the_median_of_per_round_ratios():
    anchor = [{"rps": 100.0, "p99_ms": 4.0}, {"rps": 200.0, "p99_ms": 2.0}, {"rps": 100.0, "p99_ms": 3.0}]
    ours = [{"rps": 90.0, "p99_ms": 6.0}, {"rps": 100.0, "p99_ms": 5.0}, {"rps": 70.0, "p99_ms": 3.0}]
    assert harness.median_of(ours, "rps") == 90.0
    assert harness.ratios(ours, anchor) == [0.9, 0.5, 0.7]
    assert harness.median_ratio(ours, anchor) == 0.7  # not 90 / 100, the ratio of the medians
    assert harness.median_ratio(ours, anchor, "p99_ms") == 1.5
    assert harness.spread([0.9, 0.5, 0.7]) == "(0.50-0.90)"


def _serve_results(**changes):
    r = {
        "forecast_rps_ratio": 0.83,
        "forecast_p99_ratio": 1.7,
        "whatif_p99_ms": 11.0,
        "cold_start_ratio": 1.9,
        "ingest_ratio": 0.8,
    }
    return {**r, **changes}


def test_serve_judges_issue_20s_targets():
    assert all(serve.verdicts(_serve_results()).values())
    assert serve.verdicts(_serve_results(forecast_rps_ratio=0.8))["throughput"]  # at least 0.80
    assert not serve.verdicts(_serve_results(forecast_rps_ratio=0.799))["throughput"]
    assert serve.verdicts(_serve_results(forecast_p99_ratio=2.0))["p99"]  # at most twice
    assert not serve.verdicts(_serve_results(forecast_p99_ratio=2.01))["p99"]
    assert not serve.verdicts(_serve_results(whatif_p99_ms=25.1))["what-if p99"]
    assert not serve.verdicts(_serve_results(cold_start_ratio=2.05))["cold start"]
    assert not serve.verdicts(_serve_results(ingest_ratio=0.49))["ingest"]
    assert serve.target(_serve_results(forecast_p99_ratio=2.3), "p99") == "p99 <= 2x anchor's: FAIL"
    met = serve.verdicts(_serve_results(forecast_p99_ratio=2.3, cold_start_ratio=2.1))
    assert serve.verdict_line(met) == "issue 20's targets: NOT met: p99, cold start; ingest vs COPY: met"
    assert serve.verdict_line(serve.verdicts(_serve_results())) == "issue 20's targets: all 4 met; ingest vs COPY: met"
