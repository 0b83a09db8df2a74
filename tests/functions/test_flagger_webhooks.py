"""PEFM's Flagger webhooks over real HTTP: the rollout API served by hypercorn, called with
Flagger's documented payloads ({name, namespace, phase, checksum, metadata}); the canary and
primary revisions are real inference processes under func-python on a real PostgreSQL.

The Kubernetes API is a mock (``FakeKubernetes``): no cluster runs here. It holds the objects
Flagger and Knative would (the Service with Flagger's primary-revision annotation and
``status.latestCreatedRevisionName``, the Revisions' env, the Canary) and applies merge patches.
The revisions' in-cluster URLs are the local processes' URLs (``LocalCluster.url``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from pefm.config import Settings
from pefm.forecasting.registry import promote, serving_version
from pefm.local.runtime import LocalRuntime, free_port
from pefm.rollout.api import create_rollout_app
from pefm.rollout.cluster import KnativeCluster
from pefm.rollout.controller import RolloutController
from pefm.rollout.probes import HttpProber
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.spec import RolloutSpec
from pefm.rollout.webhooks import NO_DIVERGENCE, FlaggerHooks, FlaggerOperator
from pefm.storage.database import Database
from pefm.storage.model_versions import get_version, set_gate_report
from tests.fake_kubernetes import SERVICE, FakeKubernetes
from tests.functions.conftest import conditioned_on_latest, register_model

SERIES = ["realgdp", "unemp", "infl"]
TOKEN, ADMIN = "test-webhook-token", "test-admin-token"
SPEC = RolloutSpec(min_requests=5, shadow_requests=3)


class LocalCluster(KnativeCluster):
    """A revision's in-cluster URL is its local process here."""

    def __init__(self, api, runtime: LocalRuntime):
        super().__init__(api, "pefm")
        self.runtime = runtime

    def url(self, name: str) -> str:
        return self.runtime.processes[name].url


@pytest.fixture(scope="module")
def cluster(module_schema, tmp_path_factory):
    versions = {
        name: register_model(module_schema, family, SERIES)
        for name, family in (("blue", "ar"), ("same", "ar"), ("different", "mean"), ("ungated", "ar"))
    }
    db = Database(module_schema, max_size=6)
    with db.connection() as conn:
        for name in ("same", "different"):
            set_gate_report(conn, versions[name], {"passed": True, "checks": [], "failures": []})
    runtime = LocalRuntime(module_schema, tmp_path_factory.mktemp("runtime"))
    names = {"blue": "pefm-inference-00001", "same": "pefm-inference-00002", "different": "pefm-inference-00003"}
    names["ungated"] = "pefm-inference-00004"
    api = FakeKubernetes()
    for key, revision in names.items():
        runtime.start_revision("inference", revision, model_version=versions[key])
        api.revision(revision, versions[key])
    template = {"metadata": {}, "spec": {"containers": [{"image": "ghcr.io/pefm/inference:1", "env": []}]}}
    api.objects[("services", SERVICE)] = {"metadata": {"annotations": {}}, "spec": {"template": template}, "status": {}}
    api.objects[("canaries", SERVICE)] = {"spec": {"targetRef": {"name": SERVICE}}}
    k8s = LocalCluster(api, runtime)
    settings = Settings(webhook_token=TOKEN, admin_token=ADMIN, database_url=module_schema)
    controller = RolloutController(db, None, DatabaseProvider(db), HttpProber(db))
    hooks = FlaggerHooks(db, k8s, controller.prober, controller.provider, SPEC)
    app = create_rollout_app(settings, controller, SPEC, hooks, FlaggerOperator(db, k8s))
    url, stop = _serve(app)
    yield {"url": url, "api": api, "db": db, "versions": versions, "names": names, "runtime": runtime}
    stop()
    runtime.stop_all()
    db.close()


def _serve(app) -> tuple[str, Any]:
    """The app on a real socket (hypercorn, as `pefm serve rollout` runs it) on its own thread."""
    import hypercorn.asyncio
    import hypercorn.config

    port = free_port()
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    done = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(hypercorn.asyncio.serve(app, config, shutdown_trigger=done.wait),)
    )
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.HTTPError:
            threading.Event().wait(0.1)

    def stop() -> None:
        loop.call_soon_threadsafe(done.set)
        thread.join(10)

    return url, stop


@pytest.fixture
def fresh(cluster):
    """Blue serves and no rollout is left unfinished by an earlier test."""
    with cluster["db"].connection() as conn:
        promote(conn, cluster["versions"]["blue"])
        conn.execute("DELETE FROM rollouts")
    cluster["api"].patches.clear()
    cluster["api"].objects[("canaries", SERVICE)].pop("status", None)
    return cluster


def hook(cluster, name: str, checksum: str, phase: str = "Progressing", token: str | None = TOKEN, **metadata):
    payload = {"name": SERVICE, "namespace": "pefm", "phase": phase, "checksum": checksum, "metadata": metadata}
    if token is not None:
        payload["metadata"]["token"] = token
    return httpx.post(f"{cluster['url']}/v1/flagger/{name}", json=payload, timeout=60)


def serve_requests(url: str, n: int) -> None:
    for i in range(n):
        series = SERIES[i % len(SERIES)]
        assert httpx.post(f"{url}/v1/forecast", json={"series_id": series, "horizon": 4}).status_code == 200


def status_of(cluster, key: str) -> str:
    with cluster["db"].connection() as conn:
        return get_version(conn, cluster["versions"][key]).status


def test_webhooks_need_the_token_and_flaggers_payload(fresh):
    assert hook(fresh, "confirm-rollout", "c0", token=None).status_code == 401
    assert hook(fresh, "confirm-rollout", "c0", token="wrong").status_code == 403
    bad = httpx.post(f"{fresh['url']}/v1/flagger/confirm-rollout", json={"name": SERVICE, "namespace": 7})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "namespace"
    assert httpx.post(f"{fresh['url']}/v1/flagger/confirm-rollout", content=b"{").status_code == 400
    assert hook(fresh, "no-such-hook", "c0").status_code == 404


def test_confirm_rollout_refuses_a_candidate_without_a_passed_gate(fresh):
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["blue"])  # Flagger initialised: nothing to canary yet
    assert hook(fresh, "confirm-rollout", "c1").status_code == 200
    fresh["api"].route(names["blue"], names["ungated"])
    refused = hook(fresh, "confirm-rollout", "c1")
    assert refused.status_code == 403 and "no gate report" in refused.json()["reason"]
    with fresh["db"].connection() as conn:
        set_gate_report(conn, fresh["versions"]["ungated"], {"passed": False, "checks": [], "failures": ["dm"]})
    refused = hook(fresh, "confirm-rollout", "c1")
    assert refused.status_code == 403 and "failed its validation gates" in refused.json()["reason"]
    with fresh["db"].connection() as conn:
        set_gate_report(conn, fresh["versions"]["ungated"], {"passed": True, "checks": [], "failures": []})
    assert hook(fresh, "confirm-rollout", "c1").status_code == 200
    rollout = httpx.get(f"{fresh['url']}/v1/rollouts/{refused.json()['rollout']}").json()
    assert rollout["engine"] == "flagger" and rollout["canary"] == "pefm/pefm-inference"
    assert (rollout["blue_revision"], rollout["green_revision"]) == (names["blue"], names["ungated"])
    reasons = [e["reason"] for e in rollout["events"] if e["action"] == "confirm-rollout"]
    assert len(reasons) == 3  # refused twice for different reasons, then passed; repeats not recorded


def test_a_healthy_canary_passes_smoke_traffic_and_divergence_then_promotion_settles_the_registry_once(fresh):
    names, versions = fresh["names"], fresh["versions"]
    fresh["api"].route(names["blue"], names["same"])
    assert hook(fresh, "confirm-rollout", "c2").status_code == 200
    assert hook(fresh, "pre-rollout", "c2").status_code == 200
    assert hook(fresh, "confirm-traffic-increase", "c2").status_code == 200  # 0% -> first step needs none
    message = "Advance pefm-inference.pefm canary weight 10"
    assert hook(fresh, "event", "c2", eventMessage=message, eventType="Normal").status_code == 200
    waiting = hook(fresh, "confirm-traffic-increase", "c2")
    assert waiting.status_code == 403 and "0 of 5 requests" in waiting.json()["reason"]
    serve_requests(fresh["runtime"].processes[names["same"]].url, 6)
    serve_requests(fresh["runtime"].processes[names["blue"]].url, 6)
    assert _eventually(lambda: hook(fresh, "confirm-traffic-increase", "c2").status_code == 200)
    rollout = hook(fresh, "rollout", "c2")
    assert rollout.status_code == 200 and "divergence 0 within" in rollout.json()["reason"]
    assert hook(fresh, "confirm-promotion", "c2").status_code == 200
    assert hook(fresh, "rollback", "c2").status_code == 403

    early = hook(fresh, "post-rollout", "c2", phase="Succeeded")  # Flagger has not pinned green yet
    assert early.status_code == 409 and status_of(fresh, "same") != "serving"
    fresh["api"].route(names["same"], names["same"])  # Flagger promoted: green is the primary
    with ThreadPoolExecutor(4) as pool:  # Flagger retrying, some calls at once
        answers = list(pool.map(lambda _: hook(fresh, "post-rollout", "c2", phase="Succeeded"), range(4)))
    assert all(a.status_code == 200 for a in answers)
    assert sum("already settled" not in a.json()["reason"] for a in answers) == 1
    assert status_of(fresh, "same") == "serving" and status_of(fresh, "blue") == "retired"
    with fresh["db"].connection() as conn:
        settled = conn.execute(
            "SELECT count(*) FROM rollout_events WHERE action = 'post-rollout' AND rollout_id = %s",
            (rollout.json()["rollout"],),
        ).fetchone()[0]
        phase, weight = conn.execute(
            "SELECT phase, weight FROM rollouts WHERE id = %s", (rollout.json()["rollout"],)
        ).fetchone()
    assert settled == 1 and (phase, weight) == ("Succeeded", 100)
    assert any(f"{versions['same']} serving" in a.json()["reason"] for a in answers)


def test_pefm_status_compares_the_registry_with_what_the_cluster_routes(fresh):
    from pefm.rollout.cluster import ClusterTraffic
    from pefm.rollout.status import service_status

    names, versions, db = fresh["names"], fresh["versions"], fresh["db"]
    controller = RolloutController(db, None, DatabaseProvider(db), HttpProber(db))
    k8s = KnativeCluster(fresh["api"], "pefm")
    fresh["api"].route(names["blue"], names["blue"])
    status = service_status(controller, "inference", ClusterTraffic(k8s, versions["blue"]))
    assert status.agrees and [(t.revision, t.percent) for t in status.targets] == [(names["blue"], 100)]
    with db.connection() as conn:
        promote(conn, versions["same"])  # by hand, behind the cluster's back
    status = service_status(controller, "inference", ClusterTraffic(k8s, versions["same"]))
    assert not status.agrees and any(versions["blue"] in p for p in status.problems)


def test_a_divergent_canary_fails_the_rollout_hook(fresh):
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["different"])
    assert hook(fresh, "confirm-rollout", "c3").status_code == 200
    before = _predictions(fresh, names["blue"])
    serve_requests(fresh["runtime"].processes[names["blue"]].url, 6)
    assert _eventually(lambda: _predictions(fresh, names["blue"]) >= before + 6)
    failed = hook(fresh, "rollout", "c3")
    assert failed.status_code == 412 and "divergence" in failed.json()["reason"]
    assert "outside [-inf, 0.5]" in failed.json()["reason"]


def test_a_canary_diverging_only_as_its_gates_measured_passes_the_rollout_hook(fresh):
    """The same rule as the local controller's: the divergence the gates measured between the
    canary's model and blue's, on the same data, is expected; only what goes beyond it counts."""
    from pefm.forecasting.divergence import measured_divergence

    names, versions, db = fresh["names"], fresh["versions"], fresh["db"]
    with db.connection() as conn:
        theirs, mine = get_version(conn, versions["blue"]), get_version(conn, versions["different"])
        measured = measured_divergence(conn, mine, theirs, 60)
        report = {"passed": True, "checks": [], "failures": [], "serving": theirs.id, "divergence": measured}
        set_gate_report(conn, mine.id, report)
    for key in ("blue", "different"):  # as revisions that have run for a while are
        conditioned_on_latest(fresh["runtime"].processes[names[key]].url, SERIES)
    try:
        fresh["api"].route(names["blue"], names["different"])
        assert hook(fresh, "confirm-rollout", "c15").status_code == 200
        before = _predictions(fresh, names["blue"])
        serve_requests(fresh["runtime"].processes[names["blue"]].url, 6)
        assert _eventually(lambda: _predictions(fresh, names["blue"]) >= before + 6)
        passed = hook(fresh, "rollout", "c15")  # the same canary fails without the measure (above)
        reason = passed.json()["reason"]
        assert passed.status_code == 200 and "within [-inf, 0.5] (distance from what the gates measured" in reason, (
            reason
        )
    finally:
        with db.connection() as conn:
            set_gate_report(conn, versions["different"], {"passed": True, "checks": [], "failures": []})


def test_the_operators_rollback_gate_and_a_failed_rollout_restore_blue(fresh):
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c4").json()["rollout"]
    hook(fresh, "event", "c4", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    assert hook(fresh, "rollback", "c4").status_code == 403
    act = f"{fresh['url']}/v1/rollouts/{rollout_id}/rollback"
    assert httpx.post(act).status_code == 401
    assert httpx.post(act, headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    opened = hook(fresh, "rollback", "c4")
    assert opened.status_code == 200 and "operator" in opened.json()["reason"]
    assert hook(fresh, "post-rollout", "c4", phase="Failed").status_code == 200  # primary stayed blue
    assert status_of(fresh, "same") == "rejected" and status_of(fresh, "blue") == "serving"
    assert hook(fresh, "pre-rollout", "c4").status_code == 409  # finished: no more checks


def test_pause_suspends_the_canary_and_manual_promotion_waits_for_an_operator(fresh):
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c5").json()["rollout"]
    admin = {"authorization": f"Bearer {ADMIN}"}
    paused = httpx.post(f"{fresh['url']}/v1/rollouts/{rollout_id}/pause", headers=admin)
    assert paused.status_code == 200 and paused.json()["phase"] == "Paused"
    assert fresh["api"].objects[("canaries", SERVICE)]["spec"]["suspend"] is True
    resumed = httpx.post(f"{fresh['url']}/v1/rollouts/{rollout_id}/resume", headers=admin)
    assert resumed.status_code == 200 and fresh["api"].objects[("canaries", SERVICE)]["spec"]["suspend"] is False

    with fresh["db"].connection() as conn:  # the spec a rollout runs under is stored with it
        conn.execute(
            "UPDATE rollouts SET spec = spec || '{\"manual_promotion\": true}'::jsonb WHERE id = %s", (rollout_id,)
        )
    assert hook(fresh, "confirm-promotion", "c5").status_code == 403
    assert httpx.post(f"{fresh['url']}/v1/rollouts/{rollout_id}/promote", headers=admin).status_code == 200
    assert hook(fresh, "confirm-promotion", "c5").status_code == 200


def test_a_rollback_of_a_paused_rollout_resumes_the_canary_so_that_flagger_asks_its_gate(fresh):
    """Flagger asks no hook of a suspended Canary: a rollback of a paused rollout with traffic on
    green had been recorded, answered 200, and left green its share until someone resumed. Once
    Flagger promotes, a rollback is refused: it asks no rollback gate then."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c9").json()["rollout"]
    hook(fresh, "event", "c9", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.post(f"{fresh['url']}/v1/rollouts/{rollout_id}/pause", headers=admin).json()["phase"] == "Paused"
    rolled_back = httpx.post(f"{fresh['url']}/v1/rollouts/{rollout_id}/rollback", headers=admin)
    assert rolled_back.status_code == 200 and rolled_back.json()["phase"] == "Progressing", rolled_back.text
    assert fresh["api"].objects[("canaries", SERVICE)]["spec"]["suspend"] is False
    opened = hook(fresh, "rollback", "c9")
    assert opened.status_code == 200 and "operator" in opened.json()["reason"]

    fresh["api"].route(names["blue"], names["different"])
    promoting = hook(fresh, "confirm-rollout", "c10").json()["rollout"]
    hook(fresh, "event", "c10", eventMessage="Advance pefm-inference.pefm canary weight 100", eventType="Normal")
    hook(fresh, "event", "c10", phase="Promoting", eventMessage="Copying pefm-inference.pefm template spec")
    refused = httpx.post(f"{fresh['url']}/v1/rollouts/{promoting}/rollback", headers=admin)
    assert refused.status_code == 409 and "Promoting" in refused.json()["error"], refused.text


def test_a_new_revision_during_a_rollout_supersedes_it(fresh):
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["ungated"])
    first = hook(fresh, "confirm-rollout", "c6").json()["rollout"]
    fresh["api"].route(names["blue"], names["same"])  # a newer template: Flagger restarts the analysis
    # Flagger calls confirm-rollout before it records the new revision: with the old checksum
    second = hook(fresh, "confirm-rollout", "c6").json()["rollout"]
    assert second != first
    old = httpx.get(f"{fresh['url']}/v1/rollouts/{first}").json()
    assert old["phase"] == "Failed" and "superseded" in old["events"][-1]["reason"]
    assert status_of(fresh, "ungated") == "rejected"


def _predictions(cluster, revision: str) -> int:
    with cluster["db"].connection() as conn:
        return conn.execute("SELECT count(*) FROM predictions WHERE revision = %s", (revision,)).fetchone()[0]


def _eventually(check, timeout: float = 15.0) -> bool:
    deadline = threading.Event()
    for _ in range(int(timeout / 0.25)):
        if check():
            return True
        deadline.wait(0.25)
    return False


@pytest.mark.parametrize("outcome", ["Succeeded", "Failed"])
def test_rollout_start_on_a_cluster_deploys_then_follows_flagger_and_pefms_record(fresh, monkeypatch, outcome):
    """`pefm rollout start --watch` with PEFM_KNATIVE_NAMESPACE: the template patch, then the Canary
    followed to its end and PEFM's record of it. Knative and Flagger are simulated by a thread (no
    cluster here): it creates the revision for the patched template and drives PEFM's webhooks over
    HTTP as Flagger would, then sets the Canary's final phase."""
    from typer.testing import CliRunner

    import pefm.cli.rollout as rollout_cli
    from pefm.cli import app
    from pefm.config import get_settings

    names, versions, api = fresh["names"], fresh["versions"], fresh["api"]
    api.route(names["blue"], names["blue"])
    api.objects[("canaries", SERVICE)]["status"] = {"phase": "Initialized", "lastAppliedSpec": "s0"}
    canary_status = api.objects[("canaries", SERVICE)]["status"]

    def knative_and_flagger() -> None:
        for _ in range(200):
            if any(plural == "services" for plural, _, _ in api.patches):
                break
            threading.Event().wait(0.1)
        service = api.objects[("services", SERVICE)]
        service["status"]["observedGeneration"] = service["metadata"]["generation"]
        api.route(names["blue"], names["same"])  # the revision Knative made of the new template
        assert hook(fresh, "confirm-rollout", "s0").status_code == 200  # with the old checksum
        canary_status.update(phase="Progressing", lastAppliedSpec="s1")
        assert hook(fresh, "pre-rollout", "s1").status_code == 200
        if outcome == "Succeeded":
            api.route(names["same"], names["same"])
        canary_status.update(phase=outcome)
        hook(fresh, "post-rollout", "s1", phase=outcome)

    failures = []

    def simulate() -> None:
        try:
            knative_and_flagger()
        except Exception as exc:  # reported by the test, not lost on the thread
            failures.append(exc)

    simulation = threading.Thread(target=simulate)
    simulation.start()
    monkeypatch.setattr(rollout_cli, "cluster", lambda: KnativeCluster(api, "pefm"))
    monkeypatch.setenv("PEFM_DATABASE_URL", fresh["db"].url)
    monkeypatch.setenv("PEFM_KNATIVE_NAMESPACE", "pefm")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["rollout", "start", "--model-version", fresh["versions"]["same"], "--watch", "--timeout", "120"]
        )
    finally:
        get_settings.cache_clear()
        simulation.join(30)
    assert not failures, (failures, result.output, repr(result.exception))
    [(_, _, body)] = [p for p in api.patches if p[0] == "services"]
    env = body["spec"]["template"]["spec"].get("containers", [{}])[0].get("env", [])
    assert {"name": "PEFM_MODEL_VERSION", "value": versions["same"]} in env
    output = " ".join(result.output.split())  # rich wraps long lines
    assert f"revision {names['same']} serves {versions['same']}" in output
    assert f"pefm-inference: {outcome}" in output
    if outcome == "Succeeded":
        assert result.exit_code == 0, result.output
        assert f"{versions['same']} serving" in output and status_of(fresh, "same") == "serving"
    else:
        assert result.exit_code == 1, result.output
        assert f"{versions['same']} rejected" in output and status_of(fresh, "blue") == "serving"


def test_webhook_payloads_naming_what_is_not_there_get_json_errors_not_500s(fresh):
    """An unknown Canary, another namespace, a control character, a weight no percent: each was
    a 500 (the Kubernetes API's 404, the database refusing the value, int() refusing 5,000 digits)."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    for message in ("canary weight 99999999999999999999", "canary weight 500", "canary weight " + "9" * 5000):
        answer = hook(fresh, "event", "c9", eventMessage=message)
        assert answer.status_code == 200, answer.text
        with fresh["db"].connection() as conn:
            assert conn.execute(
                "SELECT weight FROM rollouts WHERE id = %s", (answer.json()["rollout"],)
            ).fetchone() == (0,)
    url = f"{fresh['url']}/v1/flagger/confirm-rollout"
    token = {"token": TOKEN}
    for payload, status, field in (
        ({"name": "nope", "namespace": "pefm", "metadata": token}, 404, "name"),
        ({"name": SERVICE, "namespace": "elsewhere", "metadata": token}, 404, "namespace"),
        ({"name": SERVICE, "namespace": "pe\x00fm", "metadata": token}, 422, "namespace"),
        (
            {"name": SERVICE, "namespace": "pefm", "metadata": {**token, "eventMessage": "a\x00b"}},
            422,
            "metadata.eventMessage",
        ),
    ):
        answer = httpx.post(url, json=payload, timeout=30)
        assert answer.status_code == status and answer.headers["content-type"] == "application/json", answer.text
        assert field in {d["field"] for d in answer.json()["details"]}, answer.json()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"[" * 30_000 + b"]" * 30_000, 400, "body"),  # under the API's 64 KiB
        (b'{"name":"a","name":"b","namespace":"pefm"}', 400, "body"),
        (b'{"name":["x"],"namespace":"pefm","phase":"Progressing"}', 422, "name"),
    ],
    ids=["nested 30,000 deep", "duplicate keys", "a list for a name"],
)
def test_hostile_webhook_bodies_get_json_errors(cluster, body, status, field):
    response = httpx.post(
        f"{cluster['url']}/v1/flagger/confirm-rollout", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status and response.headers["content-type"] == "application/json", response.text
    assert field in {d["field"] for d in response.json()["details"]}


def test_a_promotion_reported_after_a_newer_revision_appeared_settles_the_promoted_model(fresh):
    """Flagger promoted the canary (it is the primary) while a deploy made a newer revision: its
    post-rollout was taken for the newer revision's, which superseded the promoted rollout and
    rejected the model now carrying the traffic; every retry then got 409."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    first = hook(fresh, "confirm-rollout", "c8").json()["rollout"]
    assert hook(fresh, "pre-rollout", "c8").status_code == 200
    fresh["api"].route(names["same"], names["different"])  # `same` promoted; 00003 is the newest revision
    answer = hook(fresh, "post-rollout", "c8", phase="Succeeded")
    assert answer.status_code == 200 and answer.json()["rollout"] == first, answer.text
    assert status_of(fresh, "same") == "serving" and status_of(fresh, "blue") == "retired"
    with fresh["db"].connection() as conn:
        assert serving_version(conn).id == fresh["versions"]["same"]
        assert conn.execute("SELECT count(*) FROM rollouts").fetchone()[0] == 1  # nothing made, nothing superseded


def test_no_divergence_to_judge_is_no_failed_check_and_the_weight_waits(fresh):
    """The same meaning of "no data" as the local controller's: a `rollout` answer without
    forecasts to compare is not a failed check (Flagger counted it toward a rollback), and the
    weight waits at confirm-traffic-increase until there are some."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    assert hook(fresh, "confirm-rollout", "c7").status_code == 200
    hook(fresh, "event", "c7", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    quiet = hook(fresh, "rollout", "c7")  # nothing served since the step began
    assert quiet.status_code == 200 and "no forecasts" in quiet.json()["reason"], quiet.text
    serve_requests(fresh["runtime"].processes[names["same"]].url, 6)
    serve_requests(fresh["runtime"].processes[names["blue"]].url, 6)
    assert _eventually(
        lambda: hook(fresh, "confirm-traffic-increase", "c7").json()["reason"].startswith("waiting for data")
    )
    assert hook(fresh, "rollout", "c7").status_code == 200
    assert hook(fresh, "confirm-traffic-increase", "c7").status_code == 200


def test_the_rollback_gate_with_no_rollout_does_not_signal_one(fresh):
    """A 2xx from the rollback gate is Flagger's signal to roll back: with no new revision (the
    primary is the latest) there is nothing to roll back, and the answer must not be a go."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["blue"])
    answer = hook(fresh, "rollback", "c10")
    assert answer.status_code == 403 and "no rollout" in answer.json()["reason"], answer.text
    assert hook(fresh, "confirm-traffic-increase", "c10").status_code == 200  # other gates: nothing to hold


def test_an_event_about_a_newer_revision_leaves_the_rollout_under_way_alone(fresh):
    """Only confirm-rollout and pre-rollout start a rollout (and supersede the one under way); an
    event names no revision, so one that arrives after a deploy made a newer revision is not
    Flagger restarting, and the rollout under way keeps going."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    first = hook(fresh, "confirm-rollout", "c11").json()["rollout"]
    fresh["api"].route(names["blue"], names["different"])  # a deploy while the first is analysed
    hook(fresh, "event", "c11", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    with fresh["db"].connection() as conn:
        rows = conn.execute("SELECT id, phase FROM rollouts ORDER BY id").fetchall()
    assert rows == [(first, "Initializing")], rows
    started = hook(fresh, "confirm-rollout", "c12").json()["rollout"]  # Flagger restarting on it
    with fresh["db"].connection() as conn:
        rows = conn.execute("SELECT id, phase FROM rollouts ORDER BY id").fetchall()
    assert rows == [(first, "Failed"), (started, "Initializing")], rows


def test_promotion_waits_for_the_canary_to_serve_at_its_last_step(fresh):
    """The last step is judged on data as every other is: confirm-promotion waits (403) while the
    canary has served fewer than min_requests since its weight changed, or while the last
    `rollout` answer had no divergence to judge, as confirm-traffic-increase does."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    assert hook(fresh, "confirm-rollout", "c13").status_code == 200
    hook(fresh, "event", "c13", eventMessage="Advance pefm-inference.pefm canary weight 50", eventType="Normal")
    assert NO_DIVERGENCE in hook(fresh, "rollout", "c13").json()["reason"]  # nothing served yet
    waiting = hook(fresh, "confirm-promotion", "c13")
    assert waiting.status_code == 403 and waiting.json()["reason"].startswith("waiting for traffic"), waiting.text
    serve_requests(fresh["runtime"].processes[names["same"]].url, 6)
    serve_requests(fresh["runtime"].processes[names["blue"]].url, 6)
    assert _eventually(lambda: hook(fresh, "confirm-promotion", "c13").json()["reason"].startswith("waiting for data"))
    assert hook(fresh, "rollout", "c13").status_code == 200  # divergence judged on the replayed forecasts
    promoted = hook(fresh, "confirm-promotion", "c13")
    assert promoted.status_code == 200 and promoted.json()["reason"] == "promotion needs no approval", promoted.text


def test_a_kubernetes_api_that_fails_or_a_canary_without_a_target_is_a_json_error_not_a_500(fresh):
    """The webhooks and the operator's actions read and patch the cluster: an API server that
    refuses (RBAC) or is down answered a 500 with a traceback; now a 503 saying so, which Flagger
    retries. A Canary naming no target is a 409 naming it."""
    names, api = fresh["names"], fresh["api"]
    api.route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c14").json()["rollout"]
    api.failing = 403
    try:
        refused = hook(fresh, "confirm-traffic-increase", "c14")
        assert refused.status_code == 503 and "Kubernetes API answered 403" in refused.json()["error"], refused.text
        act = httpx.post(
            f"{fresh['url']}/v1/rollouts/{rollout_id}/pause", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30
        )
        assert act.status_code == 503 and "Kubernetes API" in act.json()["error"], act.text
    finally:
        api.failing = None
    api.objects[("canaries", "untargeted")] = {"spec": {}}
    payload = {"name": "untargeted", "namespace": "pefm", "phase": "Progressing", "metadata": {"token": TOKEN}}
    untargeted = httpx.post(f"{fresh['url']}/v1/flagger/confirm-rollout", json=payload, timeout=30)
    assert untargeted.status_code == 409 and "targetRef" in untargeted.json()["error"], untargeted.text


def test_a_canary_is_judged_against_the_gates_measure_taken_again_once_data_arrived(fresh):
    """The local controller's rule on a cluster too (``rollout.probes.GatedExpectation``): a quarter
    shifted as after a drift arrives after the gates measured the canary's model against blue's;
    against the measure as taken, the canary strays beyond the tolerance, and the rollout hook
    takes the measure again on the data both revisions answer from. Last in the module: the
    quarter stays."""
    from datetime import UTC, datetime

    import pandas as pd

    from pefm.forecasting.divergence import measured_divergence
    from pefm.storage.observations import read_series, write_observations

    names, versions, db, runtime = fresh["names"], fresh["versions"], fresh["db"], fresh["runtime"]
    blue_url, green_url = (runtime.processes[names[key]].url for key in ("blue", "different"))
    with db.connection() as conn:
        theirs, mine = get_version(conn, versions["blue"]), get_version(conn, versions["different"])
        measured = measured_divergence(conn, mine, theirs, 60)
        report = {"passed": True, "checks": [], "failures": [], "serving": theirs.id, "divergence": measured}
        set_gate_report(conn, mine.id, report)
        last = {s: read_series(conn, s) for s in SERIES}
        after = last["unemp"].index[-1] + pd.DateOffset(months=3)
        shift = {"realgdp": last["realgdp"].iloc[-1] * 0.9, "unemp": last["unemp"].iloc[-1] + 4, "infl": 9.0}
        quarter = pd.DataFrame({"series_id": list(shift), "ts": [after] * 3, "value": list(shift.values())})
        written = write_observations(conn, quarter).vintage
    try:
        for url in (blue_url, green_url):  # both answer from the new quarter
            conditioned_on_latest(url, SERIES, since=written)
        fresh["api"].route(names["blue"], names["different"])
        assert hook(fresh, "confirm-rollout", "c16").status_code == 200
        since, before = datetime.now(UTC), _predictions(fresh, names["blue"])
        serve_requests(blue_url, 6)
        assert _eventually(lambda: _predictions(fresh, names["blue"]) >= before + 6)
        stale = HttpProber(db).divergence(
            (blue_url, green_url), (names["blue"], names["different"]), since, 3, lambda _: measured["series"]
        )
        assert stale is not None and stale > 0.5, stale  # SPEC's tolerance
        passed = hook(fresh, "rollout", "c16")
        reason = passed.json()["reason"]
        assert passed.status_code == 200 and "within [-inf, 0.5] (distance from what the gates measured" in reason, (
            stale,
            reason,
        )
    finally:
        with db.connection() as conn:
            set_gate_report(conn, versions["different"], {"passed": True, "checks": [], "failures": []})


def test_an_operators_rollback_before_any_traffic_ends_the_rollout_at_once(fresh):
    """Flagger asks the rollback gate only once its analysis began: a rollout waiting at
    confirm-rollout (an ungated candidate) took the operator's rollback (200) and never ended."""
    names, ungated = fresh["names"], fresh["versions"]["ungated"]
    with fresh["db"].connection() as conn:  # a candidate whose gates failed, as nothing settled it yet
        set_gate_report(conn, ungated, {"passed": False, "checks": [], "failures": ["dm"]})
        conn.execute("UPDATE model_versions SET status = 'candidate' WHERE id = %s", (ungated,))
    fresh["api"].route(names["blue"], names["ungated"])
    refused = hook(fresh, "confirm-rollout", "c20")
    assert refused.status_code == 403, refused.text
    act = f"{fresh['url']}/v1/rollouts/{refused.json()['rollout']}/rollback"
    answer = httpx.post(act, headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200 and answer.json()["phase"] == "Failed", answer.text
    assert status_of(fresh, "ungated") == "rejected" and status_of(fresh, "blue") == "serving"
    assert hook(fresh, "confirm-rollout", "c20").status_code == 409
    assert hook(fresh, "rollback", "c20").status_code == 200  # were Flagger analysing: it goes back
    # its Canary deleted meanwhile: nothing carries traffic, and the rollback still ends it
    with fresh["db"].connection() as conn:
        conn.execute("UPDATE model_versions SET status = 'candidate' WHERE id = %s", (ungated,))
    fresh["api"].route(names["blue"], names["same"])
    started = hook(fresh, "confirm-rollout", "c20").json()["rollout"]
    canary = fresh["api"].objects.pop(("canaries", SERVICE))
    try:
        gone = httpx.post(
            f"{fresh['url']}/v1/rollouts/{started}/rollback", headers={"authorization": f"Bearer {ADMIN}"}
        )
    finally:
        fresh["api"].objects[("canaries", SERVICE)] = canary
    assert gone.status_code == 200 and gone.json()["phase"] == "Failed", gone.text


def test_the_gates_refuse_a_latest_revision_that_confirm_rollout_never_saw(fresh):
    """Flagger promotes whatever revision is the latest: a deploy after confirm-rollout made one that
    the rollout's gates waved through as "no new revision", and it was promoted unchecked."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    assert hook(fresh, "confirm-rollout", "c21").status_code == 200
    fresh["api"].route(names["blue"], names["ungated"])
    for gate in ("rollout", "confirm-traffic-increase", "confirm-promotion"):
        answer = hook(fresh, gate, "c21")
        assert answer.status_code == 403 and "confirm-rollout" in answer.json()["reason"], (gate, answer.text)


def test_a_promoted_rollout_whose_post_rollout_was_lost_is_settled_as_promoted(fresh):
    """The next revision's confirm-rollout supersedes the rollout still open; the one Flagger had
    promoted (its canary is the primary) was marked Failed and its model, serving all traffic,
    rejected."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"])
    first = hook(fresh, "confirm-rollout", "c22").json()["rollout"]
    fresh["api"].route(names["same"], names["different"])  # promoted; post-rollout never arrived
    assert hook(fresh, "confirm-rollout", "c22").status_code == 200
    old = httpx.get(f"{fresh['url']}/v1/rollouts/{first}").json()
    assert old["phase"] == "Succeeded", old
    assert status_of(fresh, "same") == "serving" and status_of(fresh, "blue") == "retired"


def test_the_canary_weight_follows_the_canary_status_when_an_event_was_lost(fresh):
    """Flagger sends each event once: with the "canary weight 10" event lost, the step's traffic
    was judged at 0% and confirm-traffic-increase let the weight rise with nothing served."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["same"], weight=10)
    assert hook(fresh, "confirm-rollout", "c23").status_code == 200
    fresh["api"].objects[("canaries", SERVICE)]["status"] = {"phase": "Progressing", "canaryWeight": 10}
    waiting = hook(fresh, "confirm-traffic-increase", "c23")
    assert waiting.status_code == 403 and waiting.json()["reason"].startswith("waiting for traffic"), waiting.text
    rollout = httpx.get(f"{fresh['url']}/v1/rollouts/{waiting.json()['rollout']}").json()
    assert rollout["weight"] == 10 and rollout["phase"] == "Progressing", rollout


def test_a_revision_flagger_restarts_on_is_gated_at_pre_rollout(fresh):
    """A new revision during an analysis: Flagger restarts at pre-rollout and never asks
    confirm-rollout (only a Canary waiting to start does), so pre-rollout's smoke test alone let
    a candidate whose gates failed take traffic."""
    names, ungated = fresh["names"], fresh["versions"]["ungated"]
    with fresh["db"].connection() as conn:
        set_gate_report(conn, ungated, {"passed": False, "checks": [], "failures": ["dm"]})
    fresh["api"].route(names["blue"], names["ungated"])
    refused = hook(fresh, "pre-rollout", "c24")
    assert refused.status_code == 403 and "validation gates" in refused.json()["reason"], refused.text
    with fresh["db"].connection() as conn:
        set_gate_report(conn, ungated, {"passed": True, "checks": [], "failures": []})
    assert hook(fresh, "pre-rollout", "c24").status_code == 200  # gates and smoke test passed


def test_an_operators_rollback_waits_for_flagger_when_the_canary_carries_traffic_no_event_told(fresh):
    """Before any event PEFM saw the rollout at step -1, but Flagger had moved 10% to the canary
    (its event lost): ending the rollout at once settled the registry while the canary still took
    traffic. The rollback is left to Flagger's rollback gate."""
    names = fresh["names"]
    with fresh["db"].connection() as conn:  # as nothing settled it yet
        conn.execute("UPDATE model_versions SET status = 'candidate' WHERE id = %s", (fresh["versions"]["same"],))
    fresh["api"].route(names["blue"], names["same"], weight=10)
    rollout_id = hook(fresh, "confirm-rollout", "c25").json()["rollout"]
    fresh["api"].objects[("canaries", SERVICE)]["status"] = {"phase": "Progressing", "canaryWeight": 10}
    act = f"{fresh['url']}/v1/rollouts/{rollout_id}/rollback"
    answer = httpx.post(act, headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200 and answer.json()["phase"] != "Failed", answer.text
    assert status_of(fresh, "same") == "candidate"
    assert hook(fresh, "rollback", "c25").status_code == 200  # Flagger's gate opens: it rolls back


def test_a_canarys_service_or_revision_gone_is_a_404_naming_it_not_a_500(fresh, monkeypatch):
    """The Kubernetes API's 404 for the Canary's target Service, or for a revision Knative had
    collected, escaped as a raw ApiException: a 500 with a traceback. An operator's action on a
    rollout whose Canary was deleted was one too."""
    from kubernetes.client.exceptions import ApiException

    names, api = fresh["names"], fresh["api"]
    api.route(names["blue"], "pefm-inference-00099")  # a revision the API no longer has
    gone = hook(fresh, "confirm-rollout", "c30")
    assert gone.status_code == 404 and gone.json()["details"] == [
        {"field": "name", "message": f"no Knative Revision pefm/pefm-inference-00099 (for the Canary pefm/{SERVICE})"}
    ], gone.text
    api.route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c30").json()["rollout"]
    service = api.objects.pop(("services", SERVICE))
    try:
        gone = hook(fresh, "confirm-traffic-increase", "c30")
    finally:
        api.objects[("services", SERVICE)] = service
    assert gone.status_code == 404 and f"no Knative Service pefm/{SERVICE}" in gone.json()["error"], gone.text

    patch = api.patch_namespaced_custom_object

    def as_the_api_server(group, version, namespace, plural, name, body):  # the fake's KeyError: a 404
        if (plural, name) not in api.objects:
            raise ApiException(status=404, reason="Not Found")
        return patch(group, version, namespace, plural, name, body)

    monkeypatch.setattr(api, "patch_namespaced_custom_object", as_the_api_server)
    canary = api.objects.pop(("canaries", SERVICE))
    try:
        act = f"{fresh['url']}/v1/rollouts/{rollout_id}/pause"
        paused = httpx.post(act, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    finally:
        api.objects[("canaries", SERVICE)] = canary
    assert paused.status_code == 409 and paused.json()["error"] == f"no Canary pefm/{SERVICE}", paused.text


def _post_rollouts(cluster, rollout_id: int) -> int:
    with cluster["db"].connection() as conn:
        return conn.execute(
            "SELECT count(*) FROM rollout_events WHERE action = 'post-rollout' AND rollout_id = %s", (rollout_id,)
        ).fetchone()[0]


def test_the_event_reporting_a_promotion_settles_the_rollout_when_its_post_rollout_was_lost(fresh):
    """Flagger calls post-rollout once (with a few retries): with the rollout API away meanwhile,
    the rollout stayed Progressing, the registry kept blue while the cluster served green, and
    `pefm status` failed until the next revision. Flagger's event of the promotion (the Canary's
    phase Succeeded) settles it as post-rollout would; a late post-rollout changes nothing."""
    names, versions = fresh["names"], fresh["versions"]
    with fresh["db"].connection() as conn:  # as nothing settled it yet
        conn.execute("UPDATE model_versions SET status = 'candidate' WHERE id = %s", (versions["same"],))
    fresh["api"].route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c31").json()["rollout"]
    hook(fresh, "event", "c31", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    early = hook(fresh, "event", "c31", phase="Succeeded", eventMessage="Confirm-rollout check passed")
    assert early.status_code == 200 and status_of(fresh, "same") == "candidate"  # the primary is still blue
    fresh["api"].route(names["same"], names["same"])  # Flagger promoted; its post-rollout never came
    message = "Promotion completed! Scaling down pefm-inference.pefm"
    assert hook(fresh, "event", "c32", phase="Succeeded", eventMessage=message).status_code == 200
    rollout = httpx.get(f"{fresh['url']}/v1/rollouts/{rollout_id}").json()
    assert (rollout["phase"], rollout["weight"]) == ("Succeeded", 100), rollout
    assert status_of(fresh, "same") == "serving" and status_of(fresh, "blue") == "retired"
    assert _post_rollouts(fresh, rollout_id) == 1  # what `pefm rollout start --watch` waits for
    late = hook(fresh, "post-rollout", "c32", phase="Succeeded")
    assert late.status_code == 200 and "already settled" in late.json()["reason"], late.text
    assert _post_rollouts(fresh, rollout_id) == 1


def test_flaggers_rollback_event_settles_the_rollout_and_a_stale_failed_phase_does_not(fresh):
    """An event carries the Canary's phase as Flagger holds it: after a failed rollout, the events
    about the next revision's confirm-rollout still say Failed, and must not fail the new rollout
    (it runs against the same primary). Flagger's event of its rollback ends one as Failed."""
    names, versions = fresh["names"], fresh["versions"]
    with fresh["db"].connection() as conn:
        conn.execute("UPDATE model_versions SET status = 'candidate' WHERE id = %s", (versions["same"],))
    fresh["api"].route(names["blue"], names["same"])
    rollout_id = hook(fresh, "confirm-rollout", "c33").json()["rollout"]
    stale = hook(
        fresh, "event", "c33", phase="Failed", eventMessage="Confirm-rollout check pefm-confirm-rollout passed"
    )
    assert stale.status_code == 200 and stale.json()["rollout"] == rollout_id, stale.text
    assert httpx.get(f"{fresh['url']}/v1/rollouts/{rollout_id}").json()["phase"] == "Initializing"
    message = "Canary failed! Scaling down pefm-inference.pefm"
    assert hook(fresh, "event", "c33", phase="Failed", eventMessage=message, eventType="Warning").status_code == 200
    assert httpx.get(f"{fresh['url']}/v1/rollouts/{rollout_id}").json()["phase"] == "Failed"
    assert status_of(fresh, "same") == "rejected" and status_of(fresh, "blue") == "serving"
    late = hook(fresh, "post-rollout", "c33", phase="Failed")  # Flagger's, after it scaled the canary down
    assert late.status_code == 200 and "already settled" in late.json()["reason"], late.text
    assert _post_rollouts(fresh, rollout_id) == 1


def test_a_canary_left_without_traffic_for_max_wait_seconds_fails_the_rollout_hook(fresh):
    """Flagger holds the weight at confirm-traffic-increase for as long as that gate says no: a
    canary deployed in a quiet hour held the service, and every revision after it, for good. Past
    ``max_wait_seconds`` since its weight changed (a second, in the rollout's stored spec here),
    the ``rollout`` hook fails, and Flagger counts each failure towards its threshold."""
    names = fresh["names"]
    fresh["api"].route(names["blue"], names["ungated"])  # a revision no earlier test sent requests
    with fresh["db"].connection() as conn:
        set_gate_report(conn, fresh["versions"]["ungated"], {"passed": True, "checks": [], "failures": []})
    assert hook(fresh, "confirm-rollout", "c20").status_code == 200
    with fresh["db"].connection() as conn:
        conn.execute("UPDATE rollouts SET spec = jsonb_set(spec, '{max_wait_seconds}', '1')")
    hook(fresh, "event", "c20", eventMessage="Advance pefm-inference.pefm canary weight 10", eventType="Normal")
    assert hook(fresh, "rollout", "c20").status_code == 200  # a quiet start is no failure
    time.sleep(1.1)
    overdue = hook(fresh, "rollout", "c20")
    assert overdue.status_code == 412, overdue.text
    reason = overdue.json()["reason"]
    assert reason.startswith("nothing to judge for 1 s (max_wait_seconds): waiting for traffic: 0 of 5"), reason
    assert hook(fresh, "confirm-traffic-increase", "c20").status_code == 403  # the weight still waits
