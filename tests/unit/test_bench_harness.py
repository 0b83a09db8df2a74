"""What the benchmarks' helpers decide from their inputs: wrk's errors (``bench/harness.py``), the
soak's per-event check and its verdict (``bench/stream.py``), the CPU seconds the broad run compares
(``bench/broad_run.py``). No wrk, function or database is started here."""

from datetime import UTC, datetime

import pytest

from tests.bench_modules import bench_module

harness = bench_module("harness")

WRK_CLEAN = """Running 6s test @ http://127.0.0.1:18765/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.57ms   13.73ms 214.12ms   97.89%
  Latency Distribution
     50%   44.01ms
     75%   44.21ms
     90%   48.00ms
     99%  111.72ms
  1000 requests in 6.00s, 111.22KB read
Requests/sec:    166.61
Transfer/sec:     18.53KB
"""
WRK_TIMEOUTS = WRK_CLEAN.replace(
    "  1000 requests in 6.00s, 111.22KB read\n",
    "  1000 requests in 6.00s, 111.22KB read\n  Socket errors: connect 0, read 3, write 0, timeout 11\n",
)
WRK_NON2XX = WRK_CLEAN.replace(
    "  1000 requests in 6.00s, 111.22KB read\n",
    "  1000 requests in 6.00s, 111.22KB read\n  Non-2xx or 3xx responses: 90\n",
)


def test_a_clean_wrk_run_has_no_errors():
    result = harness.parse_wrk(WRK_CLEAN, "u")
    assert (result["rps"], result["p50_ms"], result["p99_ms"]) == (166.61, 44.01, 111.72)
    assert result["errors"] == result["non2xx"] == 0
    assert result["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}


def test_socket_errors_raise_unless_allowed_and_are_counted():
    with pytest.raises(RuntimeError, match="read 3, write 0, timeout 11"):
        harness.parse_wrk(WRK_TIMEOUTS, "u")
    result = harness.parse_wrk(WRK_TIMEOUTS, "u", errors_ok=True)
    assert result["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 11}
    assert result["errors"] == 14


def test_error_answers_raise_unless_allowed_and_are_counted():
    with pytest.raises(RuntimeError, match="90 non-2xx"):
        harness.parse_wrk(WRK_NON2XX, "u")
    assert harness.parse_wrk(WRK_NON2XX, "u", errors_ok=True)["non2xx"] == 90


def test_a_socket_errors_line_of_another_form_is_not_read_as_none():
    with pytest.raises(RuntimeError, match="not in the expected form"):
        harness.parse_wrk(WRK_CLEAN + "  Socket errors: connect 1, read 2\n", "u", errors_ok=True)


stream = bench_module("stream")


def test_the_soak_compares_event_by_event_not_net_counts(tmp_path):
    at = [datetime(2026, 1, 1, 0, 0, 0, k, tzinfo=UTC) for k in range(3)]
    (tmp_path / "acks.0").write_text(f"s_0 {at[0].isoformat()}\ns_0 {at[1].isoformat()}\n")
    (tmp_path / "acks.1").write_text("")
    acknowledged = stream.read_acks(tmp_path / "acks", threads=2)
    assert acknowledged == {("s_0", at[0]), ("s_0", at[1])}
    # one acknowledged event lost, one unacknowledged stored: a net count would show 0 lost
    assert stream.compare_events(acknowledged, {("s_0", at[0]), ("s_0", at[2])}) == {
        "lost": 1,
        "stored_unacknowledged": 1,
    }


def _results(**changes):
    clean = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    r = {
        "events_answers": {"ok": 100, "rejected": 0, "other": 0},
        "events_socket_errors": clean,
        "soak_answers": {"ok": 90, "rejected": 10, "other": 0},
        "soak_socket_errors": clean,
        "soak_lost": 0,
        "soak_refused_written": 0,
    }
    return {**r, **changes}


def test_a_clean_run_passes_and_errors_in_the_events_run_fail_it():
    assert stream.judge(_results()) == []
    (failure,) = stream.judge(_results(events_answers={"ok": 100, "rejected": 2, "other": 1}))
    assert "2 refused, 1 other" in failure
    timeouts = {"connect": 0, "read": 0, "write": 0, "timeout": 4}
    assert stream.judge(_results(events_socket_errors=timeouts))
    assert stream.judge(_results(soak_socket_errors=timeouts))
    assert stream.judge(_results(soak_lost=1)) == ["1 acknowledged events are not stored"]
    assert stream.judge(_results(soak_answers={"ok": 0, "rejected": 17185, "other": 0}))


broad_run = bench_module("broad_run")


def test_cpu_seconds_count_only_the_scored_series():
    Outcome = broad_run.Outcome
    outcomes = [
        Outcome("a", ("x",), "f", seconds=1.0, cpu_seconds=1.0),
        Outcome("a", ("y",), "f", seconds=5.0, cpu_seconds=5.0),  # y is not scored: b failed on it
        Outcome("b", ("x",), "f", seconds=2.0, cpu_seconds=2.0),
        Outcome("b", ("y",), "f", error="boom"),
        Outcome("c", ("x", "y"), "f", seconds=3.0, cpu_seconds=3.0),  # joint: counted whole, named
    ]
    cpu, wall, straddling = broad_run.seconds_on(outcomes, ["a", "b", "c"], ["x"])
    assert cpu == wall == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert straddling == ["c: x,y"]
