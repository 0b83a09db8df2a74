"""The drift check on a real database: a check on data that did not change counts once toward a
breach, and the prediction signal moves as new data arrive (it used to compare precomputed
forecasts that never change)."""

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.drift.monitor import check
from pefm.drift.policy import DriftPolicy
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.storage.observations import write_observations

SERIES = ["realgdp", "unemp", "infl"]


# a policy that calls nearly everything drift, so that what is tested is the counting
EAGER = replace(DriftPolicy.load(), alpha=0.99, simulations=500, consecutive=2)


def served_until_2007(conn, family: str = "ar") -> Callable[[str], None]:
    """An AR model (or ``family``) trained on the series up to 2006 and serving; a function that
    makes a quarter of the real data arrive (known at the quarter's end), four of which have."""
    items = bundled(SERIES)
    full = {b.meta.id: b.load() for b in items}
    load_bundled(conn, items)
    conn.execute("DELETE FROM observations WHERE ts >= '2007-01-01'")
    conn.commit()
    version, _ = train(conn, family, SERIES, spec=BacktestSpec(h=1, windows=12), as_of=datetime.now(UTC))
    promote(conn, version.id)
    conn.commit()

    def arrive(quarter: str) -> None:
        ts = pd.Timestamp(quarter)
        rows = pd.DataFrame([{"series_id": s, "ts": ts, "value": float(full[s].loc[ts])} for s in SERIES])
        write_observations(conn, rows, vintage=ts + pd.offsets.QuarterBegin(startingMonth=1))
        conn.commit()

    for quarter in ("2007-01-01", "2007-04-01", "2007-07-01", "2007-10-01"):
        arrive(quarter)
    return arrive


def test_repeated_checks_on_unchanged_data_count_once_toward_a_breach(conn):
    arrive = served_until_2007(conn)
    first = check(conn, EAGER)
    again = check(conn, EAGER)  # nothing arrived in between
    assert first["drifted_series"] and again["drifted_series"]
    assert not first["breach"] and not again["breach"]  # two checks, one state of the data
    arrive("2008-01-01")
    later = check(conn, EAGER)
    assert later["drifted_series"] and later["breach"]  # the second drifted check on new data
    # the model's one-step forecasts since training: one more forecast, a new score
    assert (
        later["series"]["realgdp"]["prediction"]["current_n"]
        == first["series"]["realgdp"]["prediction"]["current_n"] + 1
    )
    assert later["series"]["realgdp"]["prediction"]["score"] != first["series"]["realgdp"]["prediction"]["score"]
    stored = conn.execute("SELECT count(DISTINCT data_sha256), count(*) FROM drift_reports").fetchone()
    assert stored == (2, 3)
    # requested (as the monitor records it), then checked again past the cool-down with nothing new:
    # the breach stands, but it is no new evidence (every schedule's check requested one more
    # retraining each cool-down); new data of a drifted series are
    from pefm.drift.monitor import due_for_retraining
    from pefm.storage import retrain_events

    assert due_for_retraining(conn, later, EAGER)[0]
    made = {"model_version": later["model_version"], "evidence": later["evidence"]}
    retrain_events.record(conn, "request", retrain_events.REQUESTED, "drift", details=made)
    conn.execute("UPDATE retrain_events SET ts = now() - interval '25 hours'")
    same = check(conn, EAGER)
    assert same["breach"] and same["evidence"] == later["evidence"]
    assert due_for_retraining(conn, same, EAGER) == (False, "a retraining was requested on these data already")
    arrive("2008-04-01")
    newer = check(conn, EAGER)
    assert newer["breach"] and due_for_retraining(conn, newer, EAGER)[0]


def test_new_data_in_one_series_is_no_new_evidence_of_anothers_drift(conn):
    """The streak was of the whole model's data: a series that drifted once, then new data in
    another series, made two drifted checks "each on new data" and a breach on one alarm."""
    from psycopg.types.json import Jsonb

    from pefm.drift.monitor import _persisted

    served_until_2007(conn)
    version = conn.execute("SELECT id FROM model_versions WHERE status = 'serving'").fetchone()[0]

    def stored(whole: str, **series: tuple[str, bool]) -> None:
        entries = {s: {"data_sha256": digest, "drifted": drifted} for s, (digest, drifted) in series.items()}
        conn.execute(
            """INSERT INTO drift_reports (model_version, data_as_of, series, drifted_series, breach, evidently,
                                          data_sha256)
               VALUES (%s, now(), %s, %s, false, '{}', %s)""",
            (version, Jsonb(entries), [s for s, (_, d) in series.items() if d], whole),
        )

    stored("w1", realgdp=("r1", True), infl=("i1", False))
    # now: infl has new data (i2), realgdp has not (r1): realgdp's one alarm is not confirmed
    assert not _persisted(conn, version, {"realgdp": "r1"}, 2)
    assert _persisted(conn, version, {"realgdp": "r2"}, 2)  # realgdp's own new data, drifted again
    assert not _persisted(conn, version, {"infl": "i2"}, 2)  # infl did not drift before
    stored("w2", realgdp=("r1", True), infl=("i2", True))  # the same realgdp data, checked again
    assert _persisted(conn, version, {"infl": "i3"}, 2) and not _persisted(conn, version, {"realgdp": "r1"}, 2)
    # the breach's evidence is the series whose drift persisted, not a one-off alarm beside it
    # (new evidence each time one appeared, so the same breach was requested again)
    assert _persisted(conn, version, {"realgdp": "r2", "infl": "i3", "unemp": "u1"}, 2) == ["realgdp", "infl"]
    # a verdict on the same data flipped: the run does not count as drifted (it was skipped)
    stored("w3", realgdp=("r4", True))
    stored("w4", realgdp=("r4", False))
    assert _persisted(conn, version, {"realgdp": "r4"}, 2) == []


@pytest.mark.parametrize("family", ["ar", "ets"])
def test_a_revision_no_signal_reads_is_no_new_data_and_one_they_read_is(conn, family):
    """A series' digest was of its whole history: a benchmark revision of 1962, decades before
    both windows, moved no score, yet made the next check one on new data (one alarm a breach, and
    a retraining requested on these data requested again). AR and ETS filter the whole history,
    so their forecasts move in their last digits (ETS's past 12 significant digits): that is no
    new data either."""

    def revise(quarter: str) -> None:
        known = conn.execute("SELECT series_id, value FROM observations WHERE ts = %s", (quarter,)).fetchall()
        rows = pd.DataFrame([{"series_id": s, "ts": pd.Timestamp(quarter), "value": v + 0.01} for s, v in known])
        write_observations(conn, rows)
        conn.commit()

    served_until_2007(conn, family)
    first = check(conn, EAGER)
    assert first["drifted_series"] == SERIES and not first["breach"]
    revise("1962-01-01")
    old = check(conn, EAGER)
    assert old["drifted_series"] == SERIES and not old["breach"]
    revise("2007-07-01")  # in the current window
    recent = check(conn, EAGER)
    assert recent["breach"] and set(recent["evidence"]) == set(SERIES)


def test_a_check_of_some_series_or_one_left_out_is_no_step_toward_a_breach(conn):
    """A check of some series only, or one that had to leave a series out (a value its log
    transform refuses), is reported but not counted: the streak is of checks of the whole model
    (a subset's check made the next full one a breach on data it had already seen). The report
    prints, accuracy signals (no threshold: a permutation test) and all."""
    from pefm.cli.drift import _print

    served_until_2007(conn)
    some = check(conn, EAGER, series=["realgdp"])
    assert some["drifted_series"] == ["realgdp"] and not some["breach"]
    whole = check(conn, EAGER)
    assert whole["drifted_series"] and not whole["breach"]  # the first check of the whole model
    assert any(entry["accuracy"] for entry in whole["series"].values())
    _print(whole)

    # a zero where realgdp's log transform needs a positive value: left out, the others checked
    bad = pd.DataFrame([{"series_id": "realgdp", "ts": pd.Timestamp("2008-01-01"), "value": 0.0}])
    write_observations(conn, bad)
    conn.commit()
    partial = check(conn, EAGER)
    assert set(partial["skipped"]) == {"realgdp"} and set(partial["series"]) == {"unemp", "infl"}
    assert not partial["breach"]
    stored = conn.execute("SELECT data_sha256 IS NULL FROM drift_reports ORDER BY id").fetchall()
    assert [row[0] for row in stored] == [True, False, True]


def test_the_cool_down_counts_a_retraining_the_monitor_requested(conn):
    """A breach is due for retraining unless one trained a candidate, or was requested by the
    monitor (its ``requested`` row goes in before any job runs: the job's own rows may come late or
    never), within the cool-down; a job that stood aside, or found its job up-to-date (the daily
    scheduled run, most days), trained nothing and holds no request back."""
    from pefm.drift.monitor import due_for_retraining

    breach = {"breach": True, "drifted_series": ["unemp"], "evidence": {"unemp": "u1"}}
    assert due_for_retraining(conn, {"breach": False, "drifted_series": []}, EAGER) == (False, "no breach")
    assert due_for_retraining(conn, breach, EAGER)[0]
    events = "INSERT INTO retrain_events (run_id, step, reason, ts) VALUES (%s, %s, 'test', now() - %s::interval)"
    conn.execute(events, ("a", "skipped", "1 hour"))
    assert due_for_retraining(conn, breach, EAGER)[0]  # standing aside is no retraining
    for step in ("start", "up-to-date"):
        conn.execute(events, ("daily", step, "1 hour"))
    assert due_for_retraining(conn, breach, EAGER)[0]  # nor is a run that found nothing new to train
    conn.execute(events, ("b", "requested", "1 hour"))
    due, why = due_for_retraining(conn, breach, EAGER)
    assert not due and why.startswith("cool-down")
    conn.execute("UPDATE retrain_events SET ts = now() - interval '25 hours' WHERE run_id = 'b'")
    assert due_for_retraining(conn, breach, EAGER)[0]  # 24 hours on
    conn.execute(events, ("c", "start", "2 hours"))
    conn.execute(events, ("c", "trained", "2 hours"))
    assert not due_for_retraining(conn, breach, EAGER)[0]


def test_a_request_is_answered_only_by_a_run_started_after_it_that_did_its_work(conn):
    """``pending_request``: a run that began before the request (its data may predate the breach),
    a dry run (not counted: asking what a run would do changes nothing), one that failed (even after
    deploying: its rollout never started) or stopped part-way leaves it pending, counted; the first
    run started since that reaches an outcome answers it; the latest request is named; runs that
    stood aside before starting are not counted, and the latest is named (not listed among the runs:
    on a cluster one comes every quarter of an hour while a rollout lasts); after ``ATTEMPTS`` runs
    that left it unanswered it is given up."""
    from pefm.storage import retrain_events

    def event(run_id: str, step: str, minutes_ago: int, reason: str = "test", details: str = "{}") -> None:
        conn.execute(
            "INSERT INTO retrain_events (run_id, step, reason, ts, details)"
            " VALUES (%s, %s, %s, now() - %s * interval '1 minute', %s)",
            (run_id, step, reason, minutes_ago, details),
        )

    assert retrain_events.pending_request(conn) is None
    event("before", "start", 60)
    event("request", retrain_events.REQUESTED, 50, "the monitor requested a retraining: drift in unemp")
    event("before", "gates-failed", 40)  # began before the request: it does not answer it
    unanswering = {"dry": ["start", "dry-run"], "rollout failed": ["start", "trained", "deployed", "failed"]}
    for run_id, steps in unanswering.items():
        for step in steps:
            event(run_id, step, 30)
    event("no deploy", "start", 30, details='{"deploy": false}')  # its candidate left for a run that deploys
    for step in ("trained", "gates-passed"):
        event("no deploy", step, 30)
    pending = retrain_events.pending_request(conn)
    assert pending.reason == "the monitor requested a retraining: drift in unemp"
    assert pending.attempts == 1  # the run that failed; not the dry run, nor the one that did not deploy
    assert pending.at.tzinfo is not None
    event("answer", "start", 20)
    event("answer", "up-to-date", 20)
    assert retrain_events.pending_request(conn) is None
    event("aside before the request", "skipped", 12, "another retraining is running")
    event("later", retrain_events.REQUESTED, 10, "the monitor requested a retraining: drift in infl")
    assert retrain_events.pending_request(conn) == (pending_at(conn, "later"), pending_reason(conn, "later"), 0, None)
    event("behind a rollout", "skipped", 8, "rollout 3 is under way")  # stood aside before starting: not counted
    event("behind a rollout, later", "skipped", 7, "rollout 3 is under way, still")
    pending = retrain_events.pending_request(conn)
    assert pending.attempts == 0 and pending.stood_aside == (
        pending_at(conn, "behind a rollout, later"),
        "rollout 3 is under way, still",
    )
    aside_at = f"{pending.stood_aside[0]:%Y-%m-%d %H:%M}"
    assert pending.describe().endswith(f"; the latest run stood aside at {aside_at} UTC: rollout 3 is under way, still")
    assert [run["why"] for run in retrain_events.recent_runs(conn)][:1] == [pending_reason(conn, "later")]  # not listed
    for run_id, steps in {"failed": ["start", "failed"], "killed": ["start", "trained"]}.items():
        for step in steps:
            event(run_id, step, 5)
    assert retrain_events.pending_request(conn).attempts == retrain_events.ATTEMPTS - 1
    event("raised before its start", "failed", 1)  # counted too
    assert retrain_events.pending_request(conn) is None  # given up: it would be retried for good
    given_up = retrain_events.given_up_request(conn)
    assert given_up.attempts == retrain_events.ATTEMPTS and "given up after 3 runs" in given_up.describe()
    for step in ("start", "trained", "skipped"):  # stood aside after training: a run, listed
        event("aside after training", step, 0)
    assert retrain_events.recent_runs(conn)[0]["steps"] == ["start", "trained", "skipped"]


def pending_at(conn, run_id: str):
    return conn.execute("SELECT ts FROM retrain_events WHERE run_id = %s", (run_id,)).fetchone()[0]


def pending_reason(conn, run_id: str) -> str:
    return conn.execute("SELECT reason FROM retrain_events WHERE run_id = %s", (run_id,)).fetchone()[0]


def test_a_request_about_a_version_that_no_longer_serves_is_superseded(conn):
    """The request named no version: made about V1, it was answered after V2 had been promoted (by
    hand, or a rollout), by a retraining of V2, which nothing had checked."""
    from psycopg.types.json import Jsonb

    from pefm.storage import retrain_events

    served_until_2007(conn)
    v1 = conn.execute("SELECT id FROM model_versions WHERE status = 'serving'").fetchone()[0]
    why = "the monitor requested a retraining: drift in unemp for 2 checks"
    retrain_events.record(conn, "request", retrain_events.REQUESTED, why, details={"model_version": v1})
    assert retrain_events.pending_request(conn).reason == why
    v2, _ = train(conn, "naive", SERIES, spec=None)
    promote(conn, v2.id)
    assert retrain_events.pending_request(conn) is None
    promote(conn, v1)  # V1 serves again (a rollback): its request stands again
    assert retrain_events.pending_request(conn).reason == why
    conn.execute(  # one made before requests named their version is pending as before
        "UPDATE retrain_events SET details = %s WHERE run_id = 'request'", (Jsonb({}),)
    )
    promote(conn, v2.id)
    assert retrain_events.pending_request(conn).reason == why


def test_a_huge_but_finite_value_is_checked_and_stored(conn):
    """Ingest takes any finite number: its squared error overflowed to inf, which JSON cannot hold,
    and every check failed (a 500 from the monitor) until the value was corrected."""
    served_until_2007(conn)
    rows = pd.DataFrame([{"series_id": "unemp", "ts": pd.Timestamp("2008-01-01"), "value": 1e160}])
    write_observations(conn, rows, vintage=pd.Timestamp("2008-04-01", tz="UTC"))
    conn.commit()
    report = check(conn, EAGER)
    accuracy = report["series"]["unemp"]["accuracy"]
    assert "unemp" in report["drifted_series"] and np.isfinite(accuracy["realized_rmse"])
    stored = conn.execute(
        "SELECT series -> 'unemp' -> 'accuracy' ->> 'ratio' FROM drift_reports WHERE id = %s", (report["id"],)
    )
    assert float(stored.fetchone()[0]) > 1e100


def test_a_breach_whose_request_was_given_up_is_asked_about_again_after_the_cool_down(conn):
    """Given up after its attempts, the request was gone, and the same breach was 'requested
    already': a confirmed drift went unretrained, and unsaid, until new data came."""
    from pefm.drift.monitor import due_for_retraining
    from pefm.storage import retrain_events

    served_until_2007(conn)
    version = conn.execute("SELECT id FROM model_versions WHERE status = 'serving'").fetchone()[0]
    breach = {"breach": True, "model_version": version, "evidence": {"unemp": "u1"}}
    retrain_events.record(conn, "req", retrain_events.REQUESTED, "drift", details=breach)
    for attempt in range(retrain_events.ATTEMPTS):
        retrain_events.record(conn, f"run{attempt}", "failed", "the gate policy cannot be read")
    conn.execute("UPDATE retrain_events SET ts = now() - interval '25 hours'")
    due, why = due_for_retraining(conn, breach, EAGER)
    assert due and "asked again" in why and "given up after 3 runs" in why
    conn.execute("DELETE FROM retrain_events WHERE step = 'failed'")
    assert due_for_retraining(conn, breach, EAGER) == (False, "a retraining was requested on these data already")


def test_a_monitor_app_built_again_after_a_failed_start_keeps_its_gauges(db, conn):
    """A start that met a database error is retried by building the app again: registering the drift
    gauges a second time raised DuplicateTimeseries, and the monitor stayed not ready for good. Built
    again, it shows the serving version's last check."""
    from pefm.config import Settings
    from pefm.serving.monitor import create_monitor_app
    from pefm.serving.observability import ServiceMetrics

    served_until_2007(conn)
    report = check(conn, EAGER)
    metrics = ServiceMetrics("monitor", "pefm-monitor-00001")
    for _ in range(2):
        create_monitor_app(Settings(), db, metrics, {})
    exposed = metrics.prometheus.drift.detected.collect()[0].samples
    assert {s.labels["series_id"]: s.value for s in exposed} == {
        s: float(e["drifted"]) for s, e in report["series"].items()
    }


def test_a_monitors_check_prunes_the_drift_reports_past_the_retention_once_a_day(db, conn):
    """Drift reports, each with its Evidently snapshot, had grown without end: the monitor deletes
    those past the retention (each version's latest kept), at its first check and a day later."""
    from pefm.config import Settings
    from pefm.serving.monitor import MonitorService
    from pefm.serving.observability import ServiceMetrics

    def reports() -> list[int]:
        return [r[0] for r in conn.execute("SELECT id FROM drift_reports ORDER BY id")]

    def age_them() -> None:
        conn.execute("UPDATE drift_reports SET created_at = now() - interval '100 days'")
        conn.commit()

    served_until_2007(conn)
    check(conn, EAGER)
    age_them()
    service = MonitorService(Settings(), db, ServiceMetrics("monitor", "pefm-monitor-00001"))
    second = service._run()["id"]
    assert reports() == [second]
    age_them()
    third = service._run()["id"]  # the same day: not pruned again
    assert reports() == [second, third]
    age_them()
    service._pruned -= 86400
    fourth = service._run()["id"]
    assert reports() == [fourth]


def test_a_stopping_monitor_ends_the_retraining_it_started_and_what_that_started(db):
    """`pefm up`'s Ctrl-C stopped the monitor, and the retraining it had started ran on, to start
    revisions after the stack had retired its own. The function's stop ends it, and its group."""
    import subprocess

    from pefm.config import Settings
    from pefm.serving.function import ServiceFunction
    from pefm.serving.monitor import create_monitor_app
    from pefm.serving.observability import ServiceMetrics

    app = create_monitor_app(Settings(), db, ServiceMetrics("monitor", "pefm-monitor-00001"), {})
    service = app.state.monitor
    service.close()  # nothing started: nothing to end
    # as the monitor starts one: a session of its own; here a shell that started a process too
    retraining = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    service._retraining = retraining
    function = ServiceFunction("monitor")
    function._on_stop = service.close  # as _build sets it
    function.stop()
    assert retraining.poll() is not None
    assert _running_in_group(retraining.pid) == []  # the sleep it started is gone with it


def _running_in_group(pgid: int) -> list[int]:
    """The live processes of a process group (a zombie left for init to reap is not one)."""
    from pathlib import Path

    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            running.append(int(stat.parent.name))
    return running
