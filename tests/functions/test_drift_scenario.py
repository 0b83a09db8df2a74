"""Drift on the real data: a model trained on macrodata up to 1999Q4 serves while the 2000s arrive
quarter by quarter through the ingest function; the 2008 break is flagged; retraining yields a
candidate that is recorded but not deployed when it fails the gates, and a green revision with a
rollout when it passes."""

import threading
import uuid

import httpx
import pandas as pd
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.drift.monitor import check, due_for_retraining
from pefm.drift.policy import DriftPolicy
from pefm.drift.retrain import LocalDeployer, retrain
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.panel import MACRO_PANEL
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import LocalRuntime
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.probes import HttpProber
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.router import TrafficTarget
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import with_schema
from tests.functions.conftest import TOKEN, start_function, stop

SPEC = BacktestSpec(h=1, windows=20)
CRISIS = {"realgdp", "realinv", "unemp"}


@pytest.fixture(scope="module")
def replay(server_url, tmp_path_factory):
    schema = f"d_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_schema(server_url, schema)
    db = Database(url, max_size=4)
    items = bundled(list(MACRO_PANEL))
    full = {b.meta.id: b.load() for b in items}
    with db.connection() as conn:
        migrate(conn)
        load_bundled(conn, items)
        conn.execute("DELETE FROM observations WHERE ts >= '2000-01-01'")  # the 2000s arrive later
        conn.commit()
        serving, _ = train(conn, "ar", list(MACRO_PANEL), spec=SPEC)
        promote(conn, serving.id)
    ingest = start_function("ingest", url, tmp_path_factory.mktemp("drift"), PEFM_INGEST_TOKEN=TOKEN)
    policy = DriftPolicy.load()
    reports = {}
    with httpx.Client(timeout=60) as client:
        quarters = sorted({ts for s in full.values() for ts in s.index if ts.year >= 2000})
        for quarter in quarters:
            body = {
                "series": [
                    {
                        "series_id": s,
                        "observations": [{"ts": f"{quarter:%Y-%m-%d}", "value": float(full[s].loc[quarter])}],
                    }
                    for s in MACRO_PANEL
                    if quarter in full[s].index
                ],
                # each quarter becomes known when it ends, as the bundled history does: backtests of
                # later candidates then see the 2000s as they were known at each cutoff
                "vintage": (quarter + pd.offsets.QuarterBegin(startingMonth=1)).strftime("%Y-%m-%dT00:00:00Z"),
            }
            response = client.post(
                f"{ingest.url}/v1/observations", json=body, headers={"authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 200, response.text
            with db.connection() as conn:
                reports[f"{quarter.year}Q{(quarter.month - 1) // 3 + 1}"] = check(conn, policy)
    stop(ingest)
    yield db, url, serving, reports, policy
    db.close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_2008_break_is_flagged_and_named(replay):
    _, _, serving, reports, _ = replay
    assert len(reports) == 39  # 2000Q1 .. 2009Q3
    assert all(not reports[q]["drifted_series"] for q in ("2000Q1", "2000Q2", "2000Q3", "2000Q4"))
    crisis = set().union(*(reports[q]["drifted_series"] for q in ("2008Q4", "2009Q1", "2009Q2", "2009Q3")))
    assert crisis >= CRISIS, crisis
    last = reports["2009Q3"]
    assert last["breach"] and last["model_version"] == serving.id
    gdp = last["series"]["realgdp"]
    assert gdp["drifted"] and gdp["accuracy"]["ratio"] >= 2.0
    assert {f["feature"] for f in gdp["input"]} == {"value", "volatility"}
    assert all(f["method"] == "wasserstein" for f in gdp["input"])


def test_the_report_is_stored_with_the_evidently_snapshot(replay):
    db, _, _, reports, policy = replay
    with db.connection() as conn:
        row = conn.execute(
            "SELECT drifted_series, evidently FROM drift_reports WHERE id = %s", (reports["2009Q3"]["id"],)
        ).fetchone()
        due, why = due_for_retraining(conn, reports["2009Q3"], policy)
    assert set(row[0]) >= CRISIS
    assert row[1]["realgdp"]["metrics"][0]["config"]["method"] == "wasserstein"
    assert due and "for 2 checks" in why


def test_a_candidate_failing_the_gates_is_recorded_and_not_deployed(replay):
    db, _, _, _, _ = replay
    outcome = retrain(db, model="ar", spec=SPEC, deployer=LocalDeployer(None), reason="drift in the 2000s")
    # trained on data through 2009Q3, its backtest includes the crisis: worse than the 1990s model
    assert outcome["status"] == "gates-failed" and outcome["failures"]
    with db.connection() as conn:
        status, report = conn.execute(
            "SELECT status, gate_report FROM model_versions WHERE id = %s", (outcome["candidate"],)
        ).fetchone()
        steps = [
            r[0]
            for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id", (outcome["run_id"],))
        ]
    assert status == "candidate" and report["passed"] is False
    assert steps == ["start", "trained", "gates-failed"]
    again = retrain(db, model="ar", spec=SPEC, reason="again")
    assert again["status"] == "up-to-date" and again["candidate"] == outcome["candidate"]  # idempotent


def test_a_passing_candidate_becomes_a_green_revision_and_a_rollout_starts(replay, tmp_path):
    db, url, serving, _, _ = replay
    lenient = tmp_path / "gates.toml"
    lenient.write_text('[[rule]]\nname = "rmse within 10x"\nmetric = "rmse"\nrelative = "ratio"\nmax = 10\n')
    runtime = LocalRuntime(url, tmp_path / "logs")
    try:
        blue = runtime.start_revision("inference", "pefm-inference-drift-blue", model_version=serving.id)
        router_process = runtime.start_router("inference")
        router = LocalRouter(db, {"inference": router_process.url})
        router.set_traffic("inference", [TrafficTarget(blue.name, 100, "blue")])
        controller = RolloutController(db, router, DatabaseProvider(db), HttpProber(router, db))
        spec = RolloutSpec(steps=(50, 100), interval_seconds=0.5, min_requests=5)
        outcome = retrain(
            db,
            model="ar_d1",
            spec=SPEC,
            deployer=LocalDeployer(runtime),
            gate_policy=lenient,
            start_rollout=lambda revision, version: controller.start("inference", revision, spec, version.id),
        )
        assert outcome["status"] == "deployed", outcome
        rollout = controller.get(outcome["rollout"])
        assert rollout.green_revision == outcome["revision"] and rollout.state.weight == 0
        assert {t.tag: (t.revision, t.percent) for t in router.traffic("inference")}["green"] == (
            outcome["revision"],
            0,
        )
        health = httpx.get(f"{runtime.processes[outcome['revision']].url}/health/readiness", timeout=10)
        assert health.status_code == 200
    finally:
        runtime.stop_all()


def test_two_retrains_at_once_yield_one_candidate(replay):
    db, _, _, _, _ = replay
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM model_versions WHERE family = 'drift'").fetchone()[0]
    outcomes = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(retrain(db, model="drift", spec=SPEC))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses in (
        ["gates-failed", "skipped"],
        ["gates-passed", "skipped"],
        ["gates-failed", "up-to-date"],
        ["gates-passed", "up-to-date"],
    ), statuses
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM model_versions WHERE family = 'drift'").fetchone()[0] == before + 1


def test_a_crash_mid_retrain_leaves_no_half_registered_model(replay, monkeypatch):
    db, _, _, _, _ = replay
    from pefm.storage import model_versions

    def crash(*args, **kwargs):
        raise RuntimeError("power cut while registering")

    monkeypatch.setattr(model_versions, "insert_version", crash)
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    with pytest.raises(RuntimeError, match="power cut"):
        retrain(db, model="naive", spec=SPEC)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == before
        assert (
            conn.execute(
                "SELECT count(*) FROM model_versions WHERE artifact IS NULL OR precomputed IS NULL"
            ).fetchone()[0]
            == 0
        )
