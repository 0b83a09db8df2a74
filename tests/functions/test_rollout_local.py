"""Blue-green rollouts end to end through the local runtime: real revision processes under
func-python, the real local router, the controller reading the request log (DatabaseProvider)."""

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pefm.data.fields import parse_timestamp
from pefm.forecasting.registry import promote, serving_version
from pefm.local.runtime import FUNCTIONS, LocalRuntime, record_revision, revision_alive
from pefm.rollout.analysis import Phase
from pefm.rollout.api import ControllerLoop
from pefm.rollout.controller import RolloutConflict, RolloutController, RolloutError
from pefm.rollout.local import LocalRouter
from pefm.rollout.probes import HttpProber
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.router import TrafficTarget
from pefm.rollout.spec import RolloutSpec
from pefm.storage import retrain_events
from pefm.storage.database import Database
from pefm.storage.model_versions import get_version, set_gate_report
from pefm.storage.roles import role_url
from tests.faults import faulty_env, late_env
from tests.functions.conftest import (
    ROOT,
    TRAINED_AS_OF,
    Load,
    conditioned_on_latest,
    register_model,
    tick_at_barrier,
)
from tests.signing_keys import VERIFY_KEYS

SERIES = ["realgdp", "unemp", "infl"]
SPEC = RolloutSpec(steps=(25, 50, 100), interval_seconds=0.5, threshold=2, min_requests=15, shadow_requests=3)


@pytest.fixture(scope="module")
def stack(module_schema, tmp_path_factory):
    """Blue serving an AR model behind the local router; candidates registered with passing gates."""
    versions = {
        name: register_model(module_schema, family, SERIES)
        for name, family in (("blue", "ar"), ("same", "ar"), ("different", "mean"))
    }
    db = Database(module_schema, max_size=4)
    with db.connection() as conn:
        for version in versions.values():
            set_gate_report(conn, version, {"passed": True, "checks": [], "failures": []})
        promote(conn, versions["blue"])  # register_model promoted each in turn: blue serves
    runtime = LocalRuntime(module_schema, tmp_path_factory.mktemp("runtime"))
    runtime.start_revision("inference", "pefm-inference-blue", model_version=versions["blue"])
    router_process = runtime.start_router("inference")
    router = LocalRouter(db, {"inference": router_process.url})
    router.set_traffic("inference", [TrafficTarget("pefm-inference-blue", 100, "blue")])
    controller = RolloutController(db, router, DatabaseProvider(db), HttpProber(db))
    yield runtime, router, controller, versions, db
    runtime.stop_all()
    db.close()


def roll(controller, rollout_id, ticks=120):
    for _ in range(ticks):
        decision = controller.tick(rollout_id)
        if decision and decision.state.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED):
            return decision.state
        time.sleep(SPEC.interval_seconds)
    return controller.get(rollout_id).state


def green(runtime, name, version, **env):
    runtime.start_revision("inference", name, model_version=version, env=env)
    return name


def reset(router, runtime, serving="pefm-inference-blue"):
    router.set_traffic("inference", [TrafficTarget(serving, 100, "blue")])


def back_to_blue(controller, rollout_id):
    """Roll a promoted green back: through its grace period a promotion is routed again by any
    controller that ticks (the rollout API's), so resetting the traffic alone would not hold."""
    if controller.get(rollout_id).state.phase is Phase.SUCCEEDED:
        controller.rollback(rollout_id)


def test_a_healthy_green_is_promoted_step_by_step_and_blue_stays_reachable(stack):
    runtime, router, controller, versions, _ = stack
    revision = green(runtime, "pefm-inference-green1", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        state = roll(controller, rollout_id)
    assert state.phase is Phase.SUCCEEDED and state.weight == 100
    advances = [e["weight"] for e in controller.events(rollout_id) if e["action"] in ("advance", "promote")]
    assert advances == [25, 50, 100, 100]  # every step once, in order, then promoted
    traffic = {t.tag: (t.revision, t.percent) for t in router.traffic("inference")}
    assert traffic["green"] == (revision, 100) and traffic["blue"] == ("pefm-inference-blue", 0)
    time.sleep(0.5)  # the router refreshes its table
    blue = httpx.post(f"{router.tag_url('inference', 'blue')}/v1/forecast", json={"series_id": "unemp"})
    assert blue.status_code == 200 and blue.headers["x-pefm-revision"] == "pefm-inference-blue"
    # the registry followed, in the same transaction as the promotion
    with stack[4].connection() as conn:
        assert serving_version(conn).id == versions["same"]
        assert get_version(conn, versions["blue"]).status == "retired"
    assert controller.get(rollout_id).routed_generation == controller.get(rollout_id).generation
    # rollback after a promotion is one call and instant, and the registry goes back with it
    assert controller.rollback(rollout_id).weight == 0
    assert {t.tag: t.percent for t in router.traffic("inference")}["blue"] == 100
    with stack[4].connection() as conn:
        assert serving_version(conn).id == versions["blue"]
        rejected = get_version(conn, versions["same"])
    assert rejected.status == "rejected" and rejected.status_reason == "rolled back by an operator"
    assert "registry: " in controller.events(rollout_id)[-1]["reason"]
    runtime.stop(revision)


def test_a_green_failing_10_percent_of_requests_is_rolled_back(stack):
    runtime, router, controller, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-faulty", versions["same"], **faulty_env(FUNCTIONS / "inference", 0.1))
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        state = roll(controller, rollout_id)
    assert state.phase is Phase.ROLLED_BACK and state.weight == 0
    last = controller.events(rollout_id)[-1]
    assert last["action"] == "rollback" and "success-rate" in last["reason"] and "threshold 2" in last["reason"]
    assert {t.tag: t.percent for t in router.traffic("inference")} == {"blue": 100, "green": 0, "latest": 0}
    assert f"registry: {versions['same']} rejected" in last["reason"]
    with stack[4].connection() as conn:
        assert get_version(conn, versions["same"]).status == "rejected"
    runtime.stop(revision)


def test_a_green_whose_forecasts_diverge_is_rolled_back_despite_perfect_http(stack):
    runtime, router, controller, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-diverging", versions["different"])
    rollout_id = controller.start("inference", revision, SPEC, versions["different"])
    with Load(router.url("inference"), SERIES) as load:
        state = roll(controller, rollout_id)
    assert state.phase is Phase.ROLLED_BACK
    last = controller.events(rollout_id)[-1]
    assert "divergence" in last["reason"]
    checks = {c["check"]: c["passed"] for c in last["checks"]}
    # divergence failed; the HTTP checks passed, or were not judged yet (divergence, measured on
    # replays, fails before min_requests; the request counts lag the log's flush)
    assert checks["divergence"] is False and checks.keys() == {"success-rate", "latency-p99", "divergence"}
    assert checks["success-rate"] is not False and checks["latency-p99"] is not False, checks
    assert all(s == 200 for s in load.statuses)
    runtime.stop(revision)


def test_with_no_traffic_the_analysis_waits_and_never_promotes(stack):
    runtime, router, controller, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-idle", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    for _ in range(6):
        controller.tick(rollout_id)
        time.sleep(0.2)
    rollout = controller.get(rollout_id)
    assert rollout.state.phase is Phase.PROGRESSING and rollout.state.weight == 25
    assert controller.events(rollout_id)[-1]["reason"].startswith("waiting for traffic")
    # pause and resume from the CLI, then roll back from it
    assert controller.pause(rollout_id).phase is Phase.PAUSED
    assert controller.tick(rollout_id).action == "hold"
    assert controller.resume(rollout_id).phase is Phase.PROGRESSING
    controller.rollback(rollout_id)
    runtime.stop(revision)


def test_synthetic_load_lets_an_idle_service_progress(stack):
    runtime, router, controller, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-synthetic", versions["same"])
    spec = RolloutSpec(
        steps=(50, 100), interval_seconds=0.5, threshold=2, min_requests=10, synthetic_load=30, shadow_requests=2
    )
    rollout_id = controller.start("inference", revision, spec, versions["same"])
    state = roll(controller, rollout_id, ticks=40)  # no client traffic at all: only the controller's load
    assert state.phase is Phase.SUCCEEDED, controller.events(rollout_id)[-1]["reason"]
    runtime.stop(revision)


def test_a_killed_controller_resumes_without_skipping_or_repeating_a_step(stack, module_schema, tmp_path):
    runtime, router, controller, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-resume", versions["same"])
    slow = RolloutSpec(steps=(25, 50, 100), interval_seconds=0.5, threshold=2, min_requests=15, shadow_requests=3)
    rollout_id = controller.start("inference", revision, slow, versions["same"])
    env = {
        "PEFM_DATABASE_URL": role_url(module_schema, "rollout"),  # what a rollout runner may do
        "PEFM_ROUTER_URL": router.url("inference"),
        "COLUMNS": "200",
        "PATH": "/usr/bin:/bin",
    }
    with Load(router.url("inference"), SERIES):
        first = subprocess.Popen(
            [sys.executable, "-m", "pefm.cli", "rollout", "run", str(rollout_id)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while controller.get(rollout_id).state.weight < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        first.kill()  # mid-rollout, no clean shutdown
        first.wait()
        killed_at = controller.get(rollout_id).state
        assert killed_at.phase is Phase.PROGRESSING and killed_at.weight in (50, 100)
        second = subprocess.run(
            [sys.executable, "-m", "pefm.cli", "rollout", "run", str(rollout_id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Succeeded, green 100%" in second.stdout
    advances = [e["weight"] for e in controller.events(rollout_id) if e["action"] in ("advance", "promote")]
    assert advances == [25, 50, 100, 100]
    runtime.stop(revision)


def progressing(controller, rollout_id):
    """Tick until the rollout is Progressing (smoke test and gates passed)."""
    for _ in range(40):
        controller.tick(rollout_id)
        if controller.get(rollout_id).state.phase is Phase.PROGRESSING:
            return
        time.sleep(SPEC.interval_seconds)
    raise AssertionError(controller.events(rollout_id)[-1]["reason"])


def test_an_operator_rollback_racing_a_tick_wins(stack, module_schema):
    """A tick reads Progressing, then blocks mid-observation (a barrier: the request log is locked,
    and the tick's metrics query waits on it); the operator rolls back meanwhile; the released tick
    finds the row changed and discards its decision instead of sending traffic back to green."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-race", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        progressing(controller, rollout_id)
        outcome = {}
        with psycopg.connect(module_schema) as barrier, Database(module_schema, max_size=4) as other:
            barrier.execute("LOCK TABLE request_log IN ACCESS EXCLUSIVE MODE")
            ticking = threading.Thread(target=lambda: outcome.update(decision=controller.tick(rollout_id)))
            ticking.start()
            tick_at_barrier(module_schema)
            operator = RolloutController(other, LocalRouter(other, {}), DatabaseProvider(other), prober=None)
            assert operator.rollback(rollout_id).phase is Phase.ROLLED_BACK  # at once: no tick to wait for
            assert {t.tag: t.percent for t in router.traffic("inference")}["blue"] == 100
            barrier.rollback()  # release the tick
            ticking.join(60)
    assert outcome["decision"].action == "hold" and "discarded" in outcome["decision"].reason
    rollout = controller.get(rollout_id)
    assert rollout.state.phase is Phase.ROLLED_BACK and rollout.state.weight == 0
    assert {t.tag: t.percent for t in router.traffic("inference")}["blue"] == 100
    assert controller.events(rollout_id)[-1]["action"] == "rollback"
    with db.connection() as conn:
        assert get_version(conn, versions["same"]).status == "rejected"
    runtime.stop(revision)


def pefm_status(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pefm.cli", "status"], env=env, capture_output=True, text=True, timeout=60
    )


class FlakyRouter(LocalRouter):
    """The local router, failing its next ``failures`` writes (fault injection)."""

    def __init__(self, db, urls, failures: int):
        super().__init__(db, urls)
        self.failures = failures

    def set_traffic(self, service, targets):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("router unreachable")
        super().set_traffic(service, targets)


def test_a_routing_failure_after_a_saved_rollback_is_healed_by_the_next_tick(stack):
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-flaky", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        progressing(controller, rollout_id)
    split = {t.tag: t.percent for t in router.traffic("inference")}
    assert split["green"] > 0
    flaky = RolloutController(db, FlakyRouter(db, router.router_urls, failures=1), DatabaseProvider(db), prober=None)
    assert flaky.rollback(rollout_id).phase is Phase.ROLLED_BACK  # saved, though the router failed
    assert {t.tag: t.percent for t in router.traffic("inference")} == split  # still split
    assert controller.pending() == [rollout_id]  # the controller loop knows it is not routed
    controller.tick(rollout_id)  # a finished rollout's tick reconciles the traffic
    assert {t.tag: t.percent for t in router.traffic("inference")}["blue"] == 100
    rollout = controller.get(rollout_id)
    assert rollout.routed_generation == rollout.generation
    runtime.stop(revision)


def test_a_routing_failure_when_a_rollout_starts_is_healed_by_the_next_tick(stack):
    """The rollout is stored before its first routing: a router failing then does not fail the
    start (the API answered 500 while the rollout existed, and a client retrying got a conflict);
    the controller loop routes it."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-flaky-start", versions["same"])
    flaky = RolloutController(db, FlakyRouter(db, router.router_urls, failures=1), DatabaseProvider(db), prober=None)
    rollout_id = flaky.start("inference", revision, SPEC, versions["same"])
    stored = controller.get(rollout_id)
    assert stored.routed_generation != stored.generation  # stored, not routed yet
    assert revision not in {t.revision for t in router.traffic("inference")}
    controller.tick(rollout_id)
    rollout = controller.get(rollout_id)
    assert rollout.routed_generation == rollout.generation
    green_target = {t.tag: (t.revision, t.percent) for t in router.traffic("inference")}["green"]
    assert green_target == (revision, rollout.state.weight)
    controller.rollback(rollout_id, "end of the test")
    runtime.stop(revision)


def test_a_second_rollout_of_the_same_service_conflicts(stack):
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    with db.connection() as conn:  # recorded, not started: the conflict is decided before anything runs
        for name in ("pefm-inference-one", "pefm-inference-two"):
            record_revision(conn, "inference", name, ["http://127.0.0.1:9"], model_version=versions["same"])
    first = controller.start("inference", "pefm-inference-one", SPEC, versions["same"])
    with pytest.raises(RolloutConflict) as conflict:
        controller.start("inference", "pefm-inference-two", SPEC, versions["same"])
    assert conflict.value.active_id == first and f"rollout {first} in progress" in str(conflict.value)
    controller.rollback(first)
    for name in ("pefm-inference-one", "pefm-inference-two"):
        router.retire("inference", name)


def test_after_the_grace_period_the_winner_alone_serves_and_the_loser_is_retired(stack, module_schema):
    runtime, router, _, versions, db = stack
    old = runtime.start_revision("inference", "pefm-inference-old", model_version=versions["blue"])
    router.set_traffic("inference", [TrafficTarget("pefm-inference-old", 100, "blue")])
    with db.connection() as conn:
        promote(conn, versions["blue"])
    controller = RolloutController(db, router, DatabaseProvider(db), HttpProber(db), grace_seconds=1)
    revision = green(runtime, "pefm-inference-winner", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        assert roll(controller, rollout_id).phase is Phase.SUCCEEDED
    assert revision_alive(old.process.pid, "pefm-inference-old")  # kept for an instant rollback
    time.sleep(1.1)
    controller.tick(rollout_id)
    assert router.traffic("inference") == [TrafficTarget(revision, 100, "blue")]
    assert not revision_alive(old.process.pid, "pefm-inference-old")
    assert router.revision_model_version("inference", "pefm-inference-old") is None  # forgotten
    assert [e["action"] for e in controller.events(rollout_id)][-2:] == ["promote", "finalize"]
    assert controller.pending() == []
    with pytest.raises(RolloutError, match="no longer runs"):
        controller.rollback(rollout_id)
    env = {"PEFM_DATABASE_URL": module_schema, "PEFM_ROUTER_URL": router.url("inference"), "COLUMNS": "200"}
    with db.connection() as conn:
        retrain_events.record(conn, "asked", retrain_events.REQUESTED, "the monitor requested a retraining: drift")
        conn.commit()
    status = pefm_status(env)
    with db.connection() as conn:
        conn.execute("DELETE FROM retrain_events WHERE run_id = 'asked'")
        conn.commit()
    assert status.returncode == 0 and "registry and traffic agree" in status.stdout, status.stdout + status.stderr
    assert f"serving model: {versions['same']}" in status.stdout
    assert "retraining requested by the drift monitor, not answered: the monitor requested a retraining: drift (" in (
        status.stdout
    )
    router.set_traffic("inference", [TrafficTarget("pefm-inference-blue", 100, "blue")])  # behind the registry's back
    status = pefm_status(env)
    assert status.returncode == 1
    assert f"pefm-inference-blue carries 100% and serves {versions['blue']}" in status.stderr
    with db.connection() as conn:
        promote(conn, versions["blue"])
    runtime.stop(revision)


ADMIN = "test-admin-token"


@pytest.fixture(scope="module")
def api(stack, module_schema, tmp_path_factory):
    from pefm.local.runtime import free_port, spawn

    _, router, _, _, _ = stack
    port = free_port()
    env = {
        "PEFM_DATABASE_URL": module_schema,
        "PEFM_ROUTER_URL": router.url("inference"),
        "PEFM_ADMIN_TOKEN": ADMIN,
        "PEFM_VERIFY_KEYS": VERIFY_KEYS,  # as `pefm up` gives it: it ticks rollouts too, and loads their models
    }
    process = spawn(
        [sys.executable, "-m", "pefm.cli", "serve", "rollout", "--port", str(port)],
        cwd=ROOT,
        env=env,
        log=tmp_path_factory.mktemp("api") / "api.log",
        ready_path="/health",
        name="rollout-api",
        port=port,
    )
    yield process
    process.stop()


def test_rollout_api_needs_the_admin_token_and_drives_manual_operations(stack, api):
    runtime, router, _, versions, _ = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-manual", versions["same"])
    auth = {"authorization": f"Bearer {ADMIN}"}
    with api.client() as client:
        body = {"green_revision": revision, "model_version": versions["same"]}
        assert client.post("/v1/rollouts", json=body).status_code == 401
        assert client.post("/v1/rollouts", json=body, headers={"authorization": "Bearer nope"}).status_code == 403
        # a revision that does not exist: refused by name, and no rollout holds the service waiting for it
        ghost = client.post("/v1/rollouts", json={"green_revision": "ghost-rev"}, headers=auth)
        assert ghost.status_code == 422 and ghost.json()["details"] == [
            {"field": "green_revision", "message": "inference has no revision 'ghost-rev'"}
        ]
        # nor does a model version the registry never held (the rollout could never end)
        typo = client.post("/v1/rollouts", json={**body, "model_version": "ar-typo"}, headers=auth)
        assert typo.status_code == 422 and typo.json()["details"] == [
            {"field": "model_version", "message": "no model version 'ar-typo' in the registry"}
        ]
        # nor a version the revision does not serve: the gates and the registry would judge and
        # promote a model that takes no traffic
        other = client.post("/v1/rollouts", json={**body, "model_version": versions["different"]}, headers=auth)
        assert other.status_code == 422 and other.json()["details"] == [
            {"field": "model_version", "message": f"{revision} serves {versions['same']}, not {versions['different']}"}
        ]
        # nor a field it does not take: a misspelt one was dropped, and "dry_run" started a real rollout
        typos = client.post("/v1/rollouts", json={"green_revision": revision, "model-version": "x"}, headers=auth)
        assert typos.status_code == 422 and typos.json()["details"] == [
            {
                "field": "model-version",
                "message": "unexpected field; a rollout takes green_revision, service, model_version",
            }
        ]
        # nor a service the router does not route: its rollout could never be ticked
        unrouted = client.post("/v1/rollouts", json={**body, "service": "ingest"}, headers=auth)
        assert unrouted.status_code == 422 and unrouted.json()["details"] == [
            {"field": "service", "message": "the router does not route 'ingest'"}
        ]
        created = client.post("/v1/rollouts", json=body, headers=auth)
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        again = client.post("/v1/rollouts", json=body, headers=auth)
        assert again.status_code == 409 and again.json()["active_rollout"] == rollout_id, again.text
        bad = client.post("/v1/rollouts", json={"green_revision": revision, "service": 7}, headers=auth)
        assert bad.status_code == 422 and bad.json()["details"] == [
            {"field": "service", "message": "expected a non-empty string"}
        ]
        assert client.post(f"/v1/rollouts/{rollout_id}/pause").status_code == 401
        paused = client.post(f"/v1/rollouts/{rollout_id}/pause", headers=auth).json()
        assert paused["phase"] == "Paused"
        assert client.post(f"/v1/rollouts/{rollout_id}/resume", headers=auth).json()["phase"] in (
            "Initializing",
            "Progressing",
        )
        promoted = client.post(f"/v1/rollouts/{rollout_id}/promote", headers=auth).json()
        assert promoted["phase"] == "Succeeded" and promoted["weight"] == 100
        assert {t.tag: t.percent for t in router.traffic("inference")}["green"] == 100
        detail = client.get(f"/v1/rollouts/{rollout_id}").json()
        assert [e["action"] for e in detail["events"]][:1] == ["start"] and "promote" in [
            e["action"] for e in detail["events"]
        ]
        metrics = client.get("/metrics").text
        assert f'pefm_rollout_weight{{revision="{revision}",service="inference"}} 100.0' in metrics
        assert f'pefm_rollout_phase{{phase="Succeeded",rollout="{rollout_id}",service="inference"}} 1.0' in metrics
        assert client.post(f"/v1/rollouts/{rollout_id}/explode", headers=auth).status_code == 404
        assert client.get("/v1/rollouts/99999").status_code == 404
    # the same operations from the CLI: an instant rollback after the promotion
    env = {"PEFM_DATABASE_URL": stack[4].url, "PEFM_ROUTER_URL": router.url("inference"), "COLUMNS": "200"}
    rolled = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "rollout", "rollback", str(rollout_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rolled.returncode == 0 and "RolledBack, green 0%" in rolled.stdout, rolled.stdout + rolled.stderr
    assert {t.tag: t.percent for t in router.traffic("inference")}["blue"] == 100
    shown = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "rollout", "status", str(rollout_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "rolled back by an operator" in shown.stdout
    runtime.stop(revision)


def test_prometheus_provider_against_a_real_prometheus(stack, tmp_path):
    """Debian's prometheus scraping two local revisions; the PromQL templates read them back."""
    from pefm.rollout.flagger import flagger_query
    from pefm.rollout.providers import MIN_WINDOW, PrometheusProvider
    from tests.prometheus import start_prometheus

    runtime, _, _, versions, _ = stack
    healthy = runtime.processes["pefm-inference-blue"]
    faults = faulty_env(FUNCTIONS / "inference", 0.25)
    name = "pefm-inference-prom-faulty"
    faulty = runtime.start_revision("inference", name, model_version=versions["same"], env=faults)
    server = start_prometheus([p.url.removeprefix("http://") for p in (healthy, faulty)], tmp_path)
    try:

        def send(n):
            with httpx.Client(timeout=10) as client:
                for i in range(n):
                    for p in (healthy, faulty):
                        client.post(f"{p.url}/v1/forecast", json={"series_id": SERIES[i % 3], "horizon": 2})

        send(4)  # the counters must exist in Prometheus before the measured traffic: increase() needs a baseline
        provider = PrometheusProvider(server.url)
        baseline = 'count(pefm_requests_total{route="/v1/forecast",revision=~"pefm-inference-(blue|prom-faulty)"})'
        deadline = time.monotonic() + 60
        while (provider.query(baseline) or 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        since = datetime.now(UTC) - timedelta(seconds=MIN_WINDOW)  # a younger step has no data of its own yet
        send(40)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            good = provider.revision_metrics("pefm-inference-blue", since)
            bad = provider.revision_metrics("pefm-inference-prom-faulty", since)
            if good.requests >= 40 and bad.requests >= 40 and bad.success_rate is not None:
                break
            time.sleep(1)
        assert good.requests >= 40 and good.success_rate == pytest.approx(1.0)
        # the latency histogram is labelled by status, as the counter is: the p99 leaves 4xx out
        labels = 'revision="pefm-inference-blue",route="/v1/forecast",status="200"'
        answered = "count(pefm_request_duration_seconds_count{" + labels + "})"
        assert provider.query(answered) == 1
        # a step begun now has no data of its own: the 40 requests just served belong to the step before
        assert provider.revision_metrics("pefm-inference-blue", datetime.now(UTC)).requests == 0
        assert bad.success_rate == pytest.approx(0.75, abs=0.05)
        assert good.p99_latency_ms is not None and 0 < good.p99_latency_ms < 5000
        assert provider.revision_metrics("pefm-inference-nonexistent", since).success_rate is None
        # Flagger's templates: the same numbers, and a revision that served nothing passes (Flagger
        # would count no value as a failed check; its webhooks make the weight wait instead)
        flagger = {
            (metric, revision): provider.query(
                flagger_query(metric).replace("{{ route }}", revision).replace("{{ interval }}", "60s")
            )
            for metric in ("success_rate", "p99_latency_ms")
            for revision in ("pefm-inference-prom-faulty", "pefm-inference-nonexistent")
        }
        assert flagger["success_rate", "pefm-inference-prom-faulty"] == pytest.approx(0.75, abs=0.05)
        assert 0 < flagger["p99_latency_ms", "pefm-inference-prom-faulty"] < 5000
        assert flagger["success_rate", "pefm-inference-nonexistent"] == 1
        assert flagger["p99_latency_ms", "pefm-inference-nonexistent"] == 0
        # the dashboard's Overview reads the same server when PEFM_PROMETHEUS_URL is set
        from dashboard.data import traffic_from_prometheus

        overview = traffic_from_prometheus(provider, 1)
        assert overview["source"] == "Prometheus server" and overview["requests_per_s"] > 0
        assert 0.8 <= overview["share_2xx"] < 1 and overview["share_5xx"] > 0  # one revision of two fails 25%
        assert overview["share_4xx"] == 0 and 0 < overview["p95_ms"] < 5000
    finally:
        server.stop()
        runtime.stop("pefm-inference-prom-faulty")


PASSED = {"passed": True, "checks": [], "failures": []}


def test_a_green_that_refuses_a_series_blue_serves_is_rolled_back(stack, module_schema):
    """Green's model dropped a series: the requests for it that blue answers, green refuses (409).
    Their replays had no divergence to give, and a check without a value made the rollout wait
    at its step for good; such a refusal now fails the divergence check."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    partial = register_model(module_schema, "ar", ["realgdp", "unemp"])  # no infl
    with db.connection() as conn:
        set_gate_report(conn, partial, PASSED)
        promote(conn, versions["blue"])  # register_model promoted the partial model
    revision = green(runtime, "pefm-inference-partial", partial)
    rollout_id = controller.start("inference", revision, SPEC, partial)
    with Load(router.url("inference"), SERIES):
        state = roll(controller, rollout_id)
    assert state.phase is Phase.ROLLED_BACK
    assert any("divergence inf outside" in e["reason"] for e in controller.events(rollout_id))
    with db.connection() as conn:
        assert serving_version(conn).id == versions["blue"]
    runtime.stop(revision)


def test_a_green_registered_unpinned_but_serving_another_version_fails_its_smoke_test(stack):
    """Compose registers its green without a version: a rollout naming one is taken at its word,
    so the smoke test checks what green answers from (it promoted a model green did not serve)."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    revision = green(runtime, "pefm-inference-unpinned", versions["different"])
    with db.connection() as conn:  # recorded as `pefm local register` without --model-version does
        urls, pids = conn.execute("SELECT urls, pids FROM local_revisions WHERE revision = %s", (revision,)).fetchone()
        record_revision(conn, "inference", revision, urls, pids=pids)
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    state = roll(controller, rollout_id)
    assert state.phase is Phase.ROLLED_BACK
    assert "smoke test" in controller.events(rollout_id)[-1]["reason"]
    with db.connection() as conn:
        assert serving_version(conn).id == versions["blue"]
        assert get_version(conn, versions["same"]).status != "serving"
    runtime.stop(revision)


def test_a_rollout_whose_tick_fails_holds_up_neither_the_others_nor_the_sweep(stack):
    """One round of the controller loop ticked the rollouts in one try: a rollout whose every tick
    failed stopped the others and the retiring of unrouted revisions, for good."""
    runtime, router, _, versions, db = stack
    reset(router, runtime)
    with db.connection() as conn:  # a second service, recorded only: its ticks fail anyway
        for name in ("pefm-other-blue", "pefm-other-green", "pefm-other-old"):
            record_revision(conn, "other", name, ["http://127.0.0.1:9"], model_version=versions["same"])
    both = LocalRouter(db, {**router.router_urls, "other": "http://127.0.0.1:9"})
    both.set_traffic("other", [TrafficTarget("pefm-other-old", 100, "blue")])
    both.set_traffic("other", [TrafficTarget("pefm-other-blue", 100, "blue")])  # old leaves the block

    class Failing(RolloutController):  # fault injection: every tick of the first rollout raises
        def tick(self, rollout_id):
            if rollout_id == stuck:
                raise ConnectionError("fault injected")
            return super().tick(rollout_id)

    controller = Failing(db, both, DatabaseProvider(db), HttpProber(db), grace_seconds=0)
    stuck = controller.start("other", "pefm-other-green", SPEC, versions["same"])
    revision = green(runtime, "pefm-inference-looped", versions["same"])
    rollout_id = controller.start("inference", revision, SPEC, versions["same"])
    loop = ControllerLoop(controller, every=0.1)
    try:
        for _ in range(20):
            loop.round()
            if controller.get(rollout_id).state.phase is not Phase.INITIALIZING:
                break
            time.sleep(SPEC.interval_seconds)
        assert controller.get(rollout_id).state.phase is Phase.PROGRESSING  # ticked past the stuck one
        assert controller.get(stuck).state.phase is Phase.INITIALIZING
        assert not both.has_revision("other", "pefm-other-old")  # and the sweep retired what left the block
    finally:
        controller.rollback(rollout_id)
        with db.connection() as conn:
            conn.execute("DELETE FROM rollout_events WHERE rollout_id = %s", (stuck,))
            conn.execute("DELETE FROM rollouts WHERE id = %s", (stuck,))
            conn.execute("DELETE FROM local_revisions WHERE service = 'other'")
            conn.execute("DELETE FROM local_traffic WHERE service = 'other'")
        runtime.stop(revision)


def test_a_rollback_saved_but_not_routed_is_routed_before_the_next_rollout_starts(stack):
    """The router failed the operator's rollback, so the rejected green still carried the traffic
    when the next rollout started: it became that rollout's blue, and the rollback was never
    routed (a superseded rollout routes nothing)."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    first = green(runtime, "pefm-inference-g1", versions["same"])
    rollout_id = controller.start("inference", first, SPEC, versions["same"])
    with Load(router.url("inference"), SERIES):
        assert roll(controller, rollout_id).phase is Phase.SUCCEEDED
    flaky = RolloutController(db, FlakyRouter(db, router.router_urls, failures=1), DatabaseProvider(db), prober=None)
    assert flaky.rollback(rollout_id).phase is Phase.ROLLED_BACK  # saved; the router failed
    assert {t.tag: t.percent for t in router.traffic("inference")}["green"] == 100
    second = green(runtime, "pefm-inference-g2", versions["blue"])
    next_id = controller.start("inference", second, SPEC, versions["blue"])
    assert controller.get(next_id).blue_revision == "pefm-inference-blue"
    assert controller.get(rollout_id).routed_generation == controller.get(rollout_id).generation
    controller.rollback(next_id)
    for revision in (first, second):
        runtime.stop(revision)


def test_an_operator_promotes_no_candidate_the_gates_failed(stack):
    """Promote took any rollout to 100% and made its candidate serve, failed gates and all; a
    cluster's operator can only approve a promotion Flagger waits for."""
    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    with db.connection() as conn:
        set_gate_report(conn, versions["different"], {"passed": False, "checks": [], "failures": ["dm"]})
    revision = green(runtime, "pefm-inference-ungated", versions["different"])
    rollout_id = controller.start("inference", revision, SPEC, versions["different"])
    try:
        with pytest.raises(RolloutError, match="failed its validation gates"):
            controller.promote(rollout_id)
        assert controller.get(rollout_id).state.phase is not Phase.SUCCEEDED
        with db.connection() as conn:
            assert serving_version(conn).id != versions["different"]
    finally:
        controller.rollback(rollout_id)
        with db.connection() as conn:
            set_gate_report(conn, versions["different"], PASSED)
        runtime.stop(revision)


def test_a_configuration_change_needs_no_gate_report(stack):
    """A green serving the serving version (a new configuration of the same model) passed
    Flagger's confirm-rollout but waited for good locally for a gate report it need not have."""
    runtime, router, controller, _, db = stack
    reset(router, runtime)
    with db.connection() as conn:
        serving = serving_version(conn).id
        report = get_version(conn, serving).gate_report
        conn.execute("UPDATE model_versions SET gate_report = NULL WHERE id = %s", (serving,))
    revision = green(runtime, "pefm-inference-config", serving)
    rollout_id = controller.start("inference", revision, SPEC, serving)
    try:
        for _ in range(20):  # the module's rollout API ticks it too: a tick may find the lock taken (None)
            controller.tick(rollout_id)
            if controller.get(rollout_id).state.phase is not Phase.INITIALIZING:
                break
            time.sleep(SPEC.interval_seconds)
        assert controller.get(rollout_id).state.phase is Phase.PROGRESSING, controller.events(rollout_id)[-1]
    finally:
        controller.rollback(rollout_id)
        with db.connection() as conn:
            conn.execute("UPDATE model_versions SET gate_report = %s WHERE id = %s", (Jsonb(report), serving))
        runtime.stop(revision)


def test_a_green_still_on_its_training_data_is_compared_once_it_has_caught_up(stack):
    """A revision forecasts from its training data until it has re-conditioned on what came
    later (``serving.freshness``), a moment after it starts; compared then, the same model as
    blue's diverges from it. The probe goes by the data each answer says it was made from
    (``data_as_of``), asks again while they were known differently, and compares the same model
    on the same data: no divergence. The catch-up is held 8 s here, so that the first analysis
    surely comes before it."""
    runtime, router, _, versions, db = stack
    reset(router, runtime)
    blue_url = runtime.processes["pefm-inference-blue"].url
    conditioned_on_latest(blue_url, SERIES)
    since = datetime.now(UTC)
    for series_id in SERIES:  # the request shapes the probe replays: what blue served, far enough
        # ahead that green's forecasts from its training data (to 1999) share dates with blue's
        assert httpx.post(f"{blue_url}/v1/forecast", json={"series_id": series_id, "horizon": 60}).status_code == 200
    revision = green(runtime, "pefm-inference-late", versions["same"], **late_env(FUNCTIONS / "inference", 8))
    try:
        green_url = runtime.processes[revision].url
        first = httpx.post(f"{green_url}/v1/forecast", json={"series_id": "unemp"}).json()["forecasts"][0]
        assert parse_timestamp(first["data_as_of"]) == TRAINED_AS_OF  # not caught up yet
        deadline = time.monotonic() + 15
        while not _served(db, "pefm-inference-blue", since, len(SERIES)):
            assert time.monotonic() < deadline, "blue's requests were not logged"
            time.sleep(0.2)
        judged = HttpProber(db, attempts=30).divergence(
            (blue_url, green_url), ("pefm-inference-blue", revision), since, samples=len(SERIES)
        )
        assert judged is not None and judged < 1e-6, judged
    finally:
        runtime.stop(revision)


def _served(db: Database, revision: str, since: datetime, series: int) -> bool:
    with db.connection() as conn:
        query = "SELECT count(DISTINCT series_id) FROM predictions WHERE revision = %s AND ts >= %s"
        return conn.execute(query, (revision, since)).fetchone()[0] >= series


def test_a_green_is_judged_by_its_divergence_beyond_what_its_gates_measured(stack):
    """A retrain after a real shift forecasts unlike blue (end to end, after a drift the monitor
    confirmed: 2.9 blue 95% widths, against the spec's 0.5), and the gates judged that difference.
    The gates also measure it, step by step and signed, between the two models on the same data;
    the canary then fails green only for straying from that. The mean model against blue's AR is
    the stand-in: rolled back on divergence with no measure (the test above), promoted with its
    gates' measure, rolled back when the measure leaves out the series it strays most on, and
    when the measure says the same distances the other way."""
    from pefm.forecasting.divergence import measured_divergence

    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    conditioned_on_latest(runtime.processes["pefm-inference-blue"].url, SERIES)
    with db.connection() as conn:
        promote(conn, versions["blue"])
        measured = measured_divergence(
            conn, get_version(conn, versions["different"]), get_version(conn, versions["blue"]), 60
        )
    paths = measured["series"]
    largest = {s: max(abs(d) for d in path) for s, path in paths.items()}
    assert set(paths) == set(SERIES) and max(largest.values()) > 0.5, largest  # beyond the spec's max alone
    worst = max(largest, key=largest.get)

    def rollout(name: str, expected: dict[str, list]) -> tuple[Phase, list[dict]]:
        with db.connection() as conn:
            report = {**PASSED, "serving": versions["blue"], "divergence": {**measured, "series": expected}}
            set_gate_report(conn, versions["different"], report)
        revision = green(runtime, name, versions["different"])
        conditioned_on_latest(runtime.processes[revision].url, SERIES)  # as the gates measured it
        rollout_id = controller.start("inference", revision, SPEC, versions["different"])
        try:
            with Load(router.url("inference"), SERIES):
                state = roll(controller, rollout_id)
            return state.phase, controller.events(rollout_id)
        finally:
            back_to_blue(controller, rollout_id)
            runtime.stop(revision)
            reset(router, runtime)

    def rolled_back_on_divergence(phase, events) -> bool:
        failed = [c for c in events[-1]["checks"] if c["passed"] is False]
        return phase is Phase.ROLLED_BACK and [c["check"] for c in failed] == ["divergence"]

    try:
        partly = {s: path for s, path in paths.items() if s != worst}
        assert rolled_back_on_divergence(*rollout("pefm-inference-partly", partly))
        mirrored = {s: [-d for d in path] for s, path in paths.items()}
        assert rolled_back_on_divergence(*rollout("pefm-inference-mirrored", mirrored))
        phase, events = rollout("pefm-inference-expected", paths)
        assert phase is Phase.SUCCEEDED, events[-3:]
        judged = [c["value"] for e in events for c in e.get("checks") or [] if c["check"] == "divergence"]
        assert judged and max(v for v in judged if v is not None) <= 0.5, judged
    finally:
        with db.connection() as conn:
            promote(conn, versions["blue"])
            set_gate_report(conn, versions["different"], PASSED)


def test_a_green_is_judged_against_the_gates_measure_taken_again_once_data_arrived(stack):
    """New data move both models' forecasts, and the distance between them with it. A quarter
    shifted as after a drift arrives after the gates measured the mean model against blue's AR:
    judged against the measure as the gates took it, the green the test above promoted strays
    beyond the tolerance; the canary takes the measure again on the data the revisions answer
    from, and promotes it. Last in the module: the quarter stays."""
    from pefm.forecasting.divergence import measured_divergence
    from pefm.storage.observations import read_series, write_observations

    runtime, router, controller, versions, db = stack
    reset(router, runtime)
    blue_url = runtime.processes["pefm-inference-blue"].url
    with db.connection() as conn:
        promote(conn, versions["blue"])
        measured = measured_divergence(
            conn, get_version(conn, versions["different"]), get_version(conn, versions["blue"]), 60
        )
        set_gate_report(conn, versions["different"], {**PASSED, "serving": versions["blue"], "divergence": measured})
        last = {s: read_series(conn, s) for s in SERIES}
        after = last["unemp"].index[-1] + pd.DateOffset(months=3)
        shift = {"realgdp": last["realgdp"].iloc[-1] * 0.9, "unemp": last["unemp"].iloc[-1] + 4, "infl": 9.0}
        quarter = pd.DataFrame({"series_id": list(shift), "ts": [after] * 3, "value": list(shift.values())})
        written = write_observations(conn, quarter).vintage
    revision = green(runtime, "pefm-inference-after-drift", versions["different"])
    try:
        green_url = runtime.processes[revision].url
        for url in (blue_url, green_url):  # both answer from the new quarter
            conditioned_on_latest(url, SERIES, since=written)
        since = datetime.now(UTC)
        for series_id in SERIES:
            assert httpx.post(f"{blue_url}/v1/forecast", json={"series_id": series_id, "horizon": 8}).status_code == 200
        deadline = time.monotonic() + 15
        while not _served(db, "pefm-inference-blue", since, len(SERIES)):
            assert time.monotonic() < deadline, "blue's requests were not logged"
            time.sleep(0.2)
        stale = HttpProber(db).divergence(
            (blue_url, green_url), ("pefm-inference-blue", revision), since, len(SERIES), lambda _: measured["series"]
        )
        assert stale is not None and stale > 0.5, stale  # the spec's tolerance
        rollout_id = controller.start("inference", revision, SPEC, versions["different"])
        with Load(router.url("inference"), SERIES):
            state = roll(controller, rollout_id)
        events = controller.events(rollout_id)
        back_to_blue(controller, rollout_id)
        assert state.phase is Phase.SUCCEEDED, [(e["action"], e.get("reason"), e.get("checks")) for e in events[-3:]]
        judged = [c["value"] for e in events for c in e.get("checks") or [] if c["check"] == "divergence"]
        assert judged and max(v for v in judged if v is not None) <= 0.5, (stale, judged)
    finally:
        runtime.stop(revision)
