"""The monitor function as a real func-python process, under the wrapper its func.yaml's
``invoke`` selects (what a ``func`` build runs): drift checks by token and by CloudEvent, reports
over HTTP, drift gauges in /metrics."""

import json
import socket

import pytest

from tests.functions.conftest import ROOT, register_model, start_function, stop

ADMIN = "monitor-admin-token"
EVENTS = "monitor-event-token"


@pytest.fixture(scope="module")
def monitor(module_schema, tmp_path_factory):
    register_model(module_schema, "ar", ["realgdp", "unemp", "infl"])
    running = start_function(
        "monitor", module_schema, tmp_path_factory.mktemp("monitor"), PEFM_ADMIN_TOKEN=ADMIN, PEFM_EVENT_TOKEN=EVENTS
    )
    yield running
    stop(running)


def test_func_yaml_serves_http_so_the_app_sees_cloudevents_and_metrics():
    import yaml

    assert yaml.safe_load((ROOT / "functions" / "monitor" / "func.yaml").read_text())["invoke"] == "http"


def test_checks_need_the_admin_token_or_a_known_cloudevent_with_the_event_token(monitor):
    with monitor.client() as client:
        assert client.get("/v1/drift/reports/latest").status_code == 404
        assert client.post("/v1/drift/check").status_code == 401
        assert client.post("/v1/drift/check", headers={"authorization": "Bearer nope"}).status_code == 403
        report = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"})
        assert report.status_code == 200, report.text
        body = report.json()
        assert set(body["series"]) == {"realgdp", "unemp", "infl"} and body["retrain"]["due"] is False
        unemp = body["series"]["unemp"]
        assert {f["feature"] for f in unemp["input"]} == {"value", "volatility"}
        assert unemp["accuracy"] is None  # registered without a backtest: no expectation to compare with
        ping = {  # what knative/eventing/ping.yaml's PingSource delivers (binary mode)
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.sources.ping",
            "ce-source": "/apis/v1/namespaces/pefm/pingsources/pefm-drift-check",
            "ce-id": "5f2b7c1e-3a2d-4f7e-9a51-0c6e0b8a4d11",
            "ce-time": "2026-12-02T06:00:00Z",
            "content-type": "application/json",
        }
        # a CloudEvent costs a check (seconds of CPU, maybe a retrain): headers alone do not get one
        assert client.post("/v1/drift/check", content=b'{"reason": "schedule"}', headers=ping).status_code == 401
        forged = {**ping, "authorization": f"Bearer {ADMIN}"}  # the admin token is not the event token
        assert client.post("/v1/drift/check", content=b'{"reason": "schedule"}', headers=forged).status_code == 403
        ping["authorization"] = f"Bearer {EVENTS}"
        scheduled = client.post("/v1/drift/check", content=b'{"reason": "schedule"}', headers=ping)
        assert scheduled.status_code == 200 and scheduled.json()["series"]
        other = client.post("/v1/drift/check", content=b"{}", headers={**ping, "ce-type": "com.example.x"})
        assert other.status_code == 422
        latest = client.get("/v1/drift/reports/latest").json()
        assert latest["id"] == body["id"] + 1
        assert client.get(f"/v1/drift/reports/{body['id']}").json()["model_version"] == body["model_version"]
        assert client.get("/v1/drift/reports/99999").status_code == 404
        metrics = client.get("/metrics").text
        assert 'pefm_drift_score{feature="value",series_id="realgdp"}' in metrics
        assert 'pefm_drift_detected{series_id="unemp"}' in metrics
        committed = json.loads((ROOT / "src/pefm/serving/openapi/monitor.json").read_text())
        assert client.get("/openapi.json").json() == committed


def test_a_caller_without_the_token_is_refused_before_its_body_is_read(monitor):
    """The headers decide who may ask: a tokenless request announcing a large body that never
    comes is a 401 at once (it was read first: held until the body timeout, then a 408)."""
    port = int(monitor.url.rsplit(":", 1)[1])
    for extra in ("", "ce-type: dev.knative.sources.ping\r\nce-specversion: 1.0\r\n"):
        # the socket's 10 s timeout is under the body timeout (PEFM_BODY_TIMEOUT_SECONDS, 30 s by
        # default): a request held for its body raises there rather than being answered
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                f"POST /v1/drift/check HTTP/1.1\r\nHost: x\r\n{extra}content-type: application/json\r\n"
                "content-length: 900000\r\n\r\n".encode()
            )
            head = conn.recv(4096).decode("latin-1")
            assert head.startswith("HTTP/1.1 401"), head


def test_a_report_id_of_thousands_of_digits_is_a_json_404(monitor):
    """It was a 500: Starlette's int convertor hands int() more digits than it takes (4,300)."""
    with monitor.client() as client:
        for report_id in ("9" * 5000, "9" * 20, "9223372036854775807"):
            response = client.get(f"/v1/drift/reports/{report_id}")
            assert response.status_code == 404 and response.json()["error"], (report_id[:20], response.text[:200])


def test_an_ingest_announces_itself_and_the_monitor_checks(monitor, module_schema, tmp_path):
    import time

    from tests.functions.conftest import TOKEN

    with monitor.client() as client:
        before = client.get("/v1/drift/reports/latest")
        last = before.json()["id"] if before.status_code == 200 else 0
    ingest = start_function(
        "ingest",
        module_schema,
        tmp_path,
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_EVENT_TOKEN=EVENTS,
        K_SINK=f"{monitor.url}/v1/drift/check",
    )
    try:
        with ingest.client() as client:
            body = {"series_id": "unemp", "observations": [{"ts": "2010-04-01", "value": 9.7}]}
            assert (
                client.post("/v1/observations", json=body, headers={"authorization": f"Bearer {TOKEN}"}).status_code
                == 200
            )
        deadline = time.monotonic() + 30
        latest = last
        with monitor.client() as client:
            while latest == last and time.monotonic() < deadline:
                response = client.get("/v1/drift/reports/latest")
                latest = response.json()["id"] if response.status_code == 200 else last
                time.sleep(0.3)
        assert latest > last  # the CloudEvent reached the monitor, which ran a check
    finally:
        stop(ingest)


def test_an_announcement_the_monitor_refuses_is_logged_with_its_status(monitor, module_schema, tmp_path):
    """An event token the monitor does not take: no drift check follows any ingest, and ingest
    dropped the 401 without a word (it logged only a monitor it could not reach)."""
    import time

    from tests.functions.conftest import TOKEN

    ingest = start_function(
        "ingest",
        module_schema,
        tmp_path,
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_EVENT_TOKEN="not-the-monitors-token",
        K_SINK=f"{monitor.url}/v1/drift/check",
    )
    try:
        with ingest.client() as client:
            body = {"series_id": "unemp", "observations": [{"ts": "2010-07-01", "value": 9.5}]}
            response = client.post("/v1/observations", json=body, headers={"authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200, response.text
        deadline = time.monotonic() + 30
        while "refused the announcement" not in ingest.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        said = [line for line in ingest.log.read_text().splitlines() if "refused the announcement" in line]
        assert said and f"{monitor.url}/v1/drift/check refused the announcement of ingested observations: 40" in said[0]
    finally:
        stop(ingest)


def test_a_burst_of_check_requests_costs_two_checks_not_one_each(monitor, module_schema):
    """Ingest announces every write: seven in half a second each ran a full drift check, all at
    once on two cores. Requests while a check runs now share the next one."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.functions.conftest import count

    before = count(module_schema, "drift_reports")
    event = {
        "authorization": f"Bearer {EVENTS}",
        "ce-specversion": "1.0",
        "ce-type": "dev.pefm.observations.ingested",
        "ce-source": "pefm-ingest",
        "content-type": "application/json",
    }

    def announce(n: int) -> httpx.Response:
        headers = {**event, "ce-id": f"burst-{n}"}
        return httpx.post(f"{monitor.url}/v1/drift/check", json={"series": ["unemp"]}, headers=headers, timeout=60)

    with ThreadPoolExecutor(7) as pool:
        answers = list(pool.map(announce, range(7)))
    assert [a.status_code for a in answers] == [200] * 7, [a.text for a in answers]
    made = count(module_schema, "drift_reports") - before
    assert 1 <= made <= 2 and len({a.json()["id"] for a in answers}) == made, made


def test_the_gauges_show_the_latest_check_only(monitor, module_schema):
    """Once another model serves (here: one of infl only, replacing the model of three series),
    a check's gauges are its own series': the series the earlier model watched are gone from
    /metrics, not left at their last values."""
    with monitor.client() as client:
        assert client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert 'pefm_drift_detected{series_id="realgdp"}' in client.get("/metrics").text
    register_model(module_schema, "ar", ["infl"])
    with monitor.client() as client:
        report = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"})
        assert report.status_code == 200 and set(report.json()["series"]) == {"infl"}
        metrics = client.get("/metrics").text
    assert 'pefm_drift_detected{series_id="infl"}' in metrics
    assert 'series_id="realgdp"' not in metrics and 'series_id="unemp"' not in metrics


def test_a_check_before_any_model_serves_is_a_409_not_a_500(server_url, tmp_path):
    """A cluster before its bootstrap Job: every schedule and every ingest asks for a check, and
    each got a 500 with a traceback in the log."""
    from pefm.storage.database import Database
    from pefm.storage.migrate import migrate
    from tests.conftest import fresh_schema

    with fresh_schema(server_url, "m") as url:
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)
        running = start_function("monitor", url, tmp_path, PEFM_ADMIN_TOKEN=ADMIN, PEFM_EVENT_TOKEN=EVENTS)
        try:
            with running.client() as client:
                answer = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"})
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] == "no serving model to monitor: promote one first"
            assert "Traceback" not in running.log.read_text()
        finally:
            stop(running)


def test_a_new_replica_shows_the_latest_stored_check(monitor, module_schema, tmp_path_factory):
    """Scaled from zero, or started after another replica ran the check: the gauges come from the
    stored report (a new replica had shown no breach and no series until it ran a check itself)."""
    with monitor.client() as client:
        report = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"})
        assert report.status_code == 200
    fresh = start_function("monitor", module_schema, tmp_path_factory.mktemp("fresh"), PEFM_ADMIN_TOKEN=ADMIN)
    try:
        with fresh.client() as client:
            metrics = client.get("/metrics").text
    finally:
        stop(fresh)
    for series_id, entry in report.json()["series"].items():
        assert f'pefm_drift_detected{{series_id="{series_id}"}} {float(entry["drifted"])}' in metrics
    assert f"pefm_drift_breach {float(report.json()['breach'])}" in metrics


def test_a_serving_model_it_cannot_trust_is_a_503_that_says_so(monitor, module_schema, tmp_path_factory):
    """A monitor that trusts another key (a key rotated on one side only): every check had been
    an opaque 500, as inference answers a 503 naming the cause."""
    from pefm.storage.signing import generate

    _, other_keys = generate()
    wary = start_function(
        "monitor", module_schema, tmp_path_factory.mktemp("wary"), PEFM_ADMIN_TOKEN=ADMIN, PEFM_VERIFY_KEYS=other_keys
    )
    try:
        with wary.client() as client:
            answer = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN}"})
    finally:
        stop(wary)
    assert answer.status_code == 503 and "could not be loaded" in answer.json()["error"], answer.text


def test_announcements_to_a_sink_that_never_answers_hold_one_thread(module_schema, tmp_path):
    """Each write that changed data started a thread and a connection to announce it, each waiting
    its 30 s on a sink that accepts and never answers: hundreds piled up under a stream."""
    import re
    from pathlib import Path

    from tests.functions.conftest import TOKEN

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1000)
        sink = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        ingest = start_function("ingest", module_schema, tmp_path, PEFM_INGEST_TOKEN=TOKEN, K_SINK=sink)

        def threads() -> int:
            status = Path(f"/proc/{ingest.process.pid}/status").read_text()
            return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))

        try:
            with ingest.client() as client:
                auth = {"authorization": f"Bearer {TOKEN}"}
                client.post("/v1/observations", json={"series_id": "unemp", "observations": []}, headers=auth)
                before = threads()
                for n in range(60):  # each a revision: data changed, announced
                    body = {"series_id": "unemp", "observations": [{"ts": "2010-07-01", "value": 9.0 + n % 2}]}
                    assert client.post("/v1/observations", json=body, headers=auth).status_code == 200
                assert threads() <= before + 2, (before, threads())
        finally:
            stop(ingest)
