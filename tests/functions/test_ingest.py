"""The ingest function as a real process under func-python: every route, every error, auth."""

import json
import re
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import fresh_schema
from tests.functions.conftest import ADMIN_TOKEN, ROOT, TOKEN, count, start_function, stop

AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "content-type": "application/json"}
CSV = {**AUTH, "content-type": "text/csv"}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN_CSV = {**ADMIN, "content-type": "text/csv"}


@pytest.fixture(scope="module")
def ingest(module_schema, tmp_path_factory):
    running = start_function(
        "ingest",
        module_schema,
        tmp_path_factory.mktemp("ingest"),
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
        PEFM_MAX_BODY_BYTES="4096",
        K_REVISION="pefm-ingest-00001",
    )
    yield running
    stop(running)


@pytest.fixture
def client(ingest):
    with ingest.client() as c:
        yield c


def obs(series_id="realgdp", **values):
    return {"series_id": series_id, "observations": [{"ts": ts, "value": v} for ts, v in values.items()]}


def test_health_endpoints(client):
    assert client.get("/health/liveness").status_code == 200
    ready = client.get("/health/readiness")
    assert ready.status_code == 200 and ready.text == "OK"


def test_series_metadata_create_update_read(client, module_schema):
    body = {"name": "Payrolls", "frequency": "M", "unit": "thousands", "transform": "diff"}
    assert client.put("/v1/series/payems", json=body).status_code == 401
    assert client.put("/v1/series/payems", json=body, headers={"authorization": "Bearer nope"}).status_code == 403
    created = client.put("/v1/series/payems", json=body, headers=AUTH)
    assert created.status_code == 201 and created.json() == {"series_id": "payems", "created": True}
    updated = client.put("/v1/series/payems", json={**body, "unit": "persons"}, headers=AUTH)
    assert updated.status_code == 200 and updated.json()["created"] is False
    got = client.get("/v1/series/payems").json()
    assert got["unit"] == "persons" and got["frequency"] == "M"
    assert client.get("/v1/series/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"frequency": "M"}, "name"),
        ({"name": "x", "frequency": "fortnightly"}, "frequency"),
        ({"name": "x", "frequency": "M", "colour": "red"}, "colour"),
        ({"name": "x", "frequency": "M", "transform": "sqrt"}, "transform"),
        ({"name": 5, "frequency": "M"}, "name"),
    ],
)
def test_bad_series_metadata_is_422_naming_the_field(client, body, field):
    response = client.put("/v1/series/bad", json=body, headers=AUTH)
    assert response.status_code == 422
    assert field in {d["field"] for d in response.json()["details"]}
    assert client.get("/v1/series/bad").status_code == 404  # nothing written


def test_json_insert_revise_unchanged(client, module_schema):
    first = client.post("/v1/observations", json=obs(**{"2009-10-01": 13000.0}), headers=AUTH)
    assert first.status_code == 200, first.text
    assert first.json()["inserted"] == 1 and first.json()["series"] == ["realgdp"]
    same = client.post("/v1/observations", json=obs(**{"2009-10-01": 13000.0}), headers=AUTH)
    assert same.json()["unchanged"] == 1
    vintage = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    sent = datetime.now(UTC)
    revised = client.post(
        "/v1/observations", json={**obs(**{"2009-10-01": 13001.5}), "vintage": vintage.isoformat()}, headers=AUTH
    )
    answer = revised.json()
    stored = datetime.fromisoformat(answer.pop("vintage"))
    assert answer == {"inserted": 0, "revised": 1, "unchanged": 0, "series": ["realgdp"]}
    # the sender's clock ran 5 s ahead: known from now, by the ingest clock (a vintage still ahead
    # when the replicas re-conditioned on the announced data left the value out of their forecasts)
    assert sent <= stored < vintage
    with psycopg.connect(module_schema) as conn:
        latest = conn.execute(
            "SELECT max(vintage) FROM observations WHERE series_id = 'realgdp' AND ts = '2009-10-01'"
        ).fetchone()[0]
    assert latest == stored


def test_vintages_are_not_in_the_future_and_backdated_only_by_an_admin(client, module_schema):
    """A vintage from the future would stay "latest" over every later revision (one dated 2199 froze
    a series); one from the past rewrites what as-of reads returned, so only an admin may send it."""
    before = count(module_schema, "observations")
    future = {**obs(**{"2009-10-01": 1.0}), "vintage": "2199-01-01T00:00:00Z"}
    assert_error(client.post("/v1/observations", json=future, headers=AUTH), 422, "vintage")
    past = {**obs(**{"2009-10-01": 2.0}), "vintage": "2015-01-01T00:00:00Z"}
    assert_error(client.post("/v1/observations", json=past, headers=AUTH), 422, "vintage")
    csv = "DATE,UNEMP\n2010-01-01,9.8\n"
    assert_error(client.post("/v1/observations?vintage=2010-05-01", content=csv, headers=CSV), 422, "vintage")
    # and never before its values' periods began, not even an admin's: the future would leak into as-of reads
    early = {**obs(**{"2009-07-01": 2.0, "2009-10-01": 2.0}), "vintage": "2009-08-01T00:00:00Z"}
    refused = client.post("/v1/observations?backdate=1", json=early, headers=ADMIN)
    assert_error(refused, 422, "observations[1].ts")
    assert "after the vintage (2009-08-01 00:00:00 UTC)" in refused.json()["details"][0]["message"]
    assert len(refused.json()["details"]) == 1
    late = client.post("/v1/observations?vintage=1999-01-01&backdate=1", content=csv, headers=ADMIN_CSV)
    assert_error(late, 422, "date")
    assert late.json()["details"][0]["line"] == 2
    ahead = client.post("/v1/observations", json=obs(**{"2009-10-01": 2.0, "2199-01-01": 2.0}), headers=AUTH)
    assert_error(ahead, 422, "observations[1].ts")  # no vintage given: now's
    assert client.post("/v1/observations?backdate=1", json=past, headers=AUTH).status_code == 403  # not the admin's
    assert_error(client.post("/v1/observations?backdate=yes", json=past, headers=ADMIN), 422, "backdate")
    assert count(module_schema, "observations") == before
    assert client.post("/v1/observations?backdate=1", json=past, headers=ADMIN).status_code == 200


def test_the_frequency_and_transform_of_a_series_with_data_are_fixed(client, module_schema):
    """Its stored values were checked against (and are read through) them: a change is a 409 and
    changes nothing; the other fields still change."""
    current = client.get("/v1/series/realgdp").json()
    body = {k: current[k] for k in ("name", "frequency", "unit", "transform", "source", "description")}
    for change in ({"frequency": "M"}, {"transform": "diff"}):
        response = client.put("/v1/series/realgdp", json={**body, **change}, headers=AUTH)
        assert response.status_code == 409, response.text
        [field] = change
        assert response.json()["details"] == [{"field": field, "message": "fixed once data are stored"}]
    assert {k: client.get("/v1/series/realgdp").json()[k] for k in body} == body
    renamed = client.put("/v1/series/realgdp", json={**body, "description": "real GDP"}, headers=AUTH)
    assert renamed.status_code == 200 and client.get("/v1/series/realgdp").json()["description"] == "real GDP"


def test_a_value_the_series_transform_cannot_take_is_refused(client, module_schema):
    """realgdp is stored as levels and modelled as annualised log growth: 0 or less has no log."""
    before = count(module_schema, "observations")
    response = client.post("/v1/observations", json=obs(**{"2010-01-01": 13000.0, "2010-04-01": -1.0}), headers=AUTH)
    assert_error(response, 422, "observations[1].value")
    response = client.post("/v1/observations", content="DATE,REALGDP\n2010-01-01,0\n", headers=CSV)
    assert_error(response, 422, "value")
    assert count(module_schema, "observations") == before


def test_a_weekly_series_keeps_the_weekday_of_its_stored_points(client, module_schema):
    """Weekly points fall on one weekday: within a payload, and against what is stored (a streamed
    Friday after Saturdays made two points in one week), as a JSON event and as a CSV line."""
    meta = {"name": "Claims", "frequency": "W", "unit": "thousands", "transform": "none"}
    assert client.put("/v1/series/claims", json=meta, headers=AUTH).status_code == 201
    saturdays = {"2024-01-06": 200.0, "2024-01-13": 210.0}
    assert client.post("/v1/observations", json=obs("claims", **saturdays), headers=AUTH).status_code == 200
    before = count(module_schema, "observations")
    friday = client.post("/v1/observations", json=obs("claims", **{"2024-01-19": 220.0}), headers=AUTH)
    assert_error(friday, 422, "observations[0].ts")
    assert "Saturday" in friday.json()["details"][0]["message"], friday.text
    csv = client.post("/v1/observations", content="DATE,CLAIMS\n2024-01-19,220\n", headers=CSV)
    assert_error(csv, 422, "date")
    assert count(module_schema, "observations") == before
    saturday = client.post("/v1/observations", json=obs("claims", **{"2024-01-20": 220.0}), headers=AUTH)
    assert saturday.status_code == 200 and saturday.json()["inserted"] == 1, saturday.text


def test_a_first_weekly_load_waits_for_one_under_way_and_keeps_its_weekday(client, module_schema):
    """Two first loads of one weekly series on different weekdays each found no stored point to
    take the weekday from, and both were stored: the check read the anchor before the writers'
    turn on the series. Here one load holds the turn (its Monday written, not committed) while the
    ingest function's Tuesday arrives: the Tuesday waits, then is refused against the Monday."""
    import threading

    from pefm.storage.observations import take_turn

    meta = {"name": "Claims", "frequency": "W", "unit": "thousands", "transform": "none"}
    assert client.put("/v1/series/claims2", json=meta, headers=AUTH).status_code == 201
    answers = []
    with psycopg.connect(module_schema) as first:
        take_turn(first, ["claims2"])
        first.execute(
            "INSERT INTO observations (series_id, ts, vintage, value) VALUES ('claims2', '2024-01-08', now(), 1)"
        )
        tuesday = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/observations", json=obs("claims2", **{"2024-01-16": 2.0}), headers=AUTH)
            )
        )
        tuesday.start()
        tuesday.join(2.0)
        assert tuesday.is_alive(), answers  # waiting for the first load's turn
        first.commit()
    tuesday.join(30)
    assert_error(answers[0], 422, "observations[0].ts")
    assert "Monday" in answers[0].json()["details"][0]["message"], answers[0].text


def assert_error(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert field in {d.get("field") for d in response.json()["details"]}, response.json()


def test_many_series_in_one_payload(client):
    body = {"series": [obs("unemp", **{"2009-10-01": 10.0}), obs("infl", **{"2009-10-01": 1.5})]}
    response = client.post("/v1/observations", json=body, headers=AUTH)
    assert response.status_code == 200 and sorted(response.json()["series"]) == ["infl", "unemp"]


def test_csv_upload_with_a_vintage(client):
    csv = "DATE,UNEMP\n2010-01-01,9.8\n2010-04-01,.\n"
    response = client.post("/v1/observations?vintage=2010-05-01&backdate=1", content=csv, headers=ADMIN_CSV)
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1 and response.json()["vintage"].startswith("2010-05-01")


def test_cloudevents_binary_and_structured(client):
    binary = {
        **AUTH,
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": "dev.pefm.observations",
        "ce-source": "test",
        "ce-id": "1",
    }
    response = client.post("/v1/observations", content=json.dumps(obs("infl", **{"2010-01-01": 2.0})), headers=binary)
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    structured = {
        "specversion": "1.0",
        "type": "dev.pefm.observations",
        "source": "test",
        "id": "2",
        "datacontenttype": "application/json",
        "data": obs("infl", **{"2010-04-01": 2.5}),
    }
    response = client.post(
        "/v1/observations", json=structured, headers={**AUTH, "content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    wrong = client.post(
        "/v1/observations",
        content=json.dumps(obs("infl", **{"2010-07-01": 1.0})),
        headers={**binary, "ce-type": "com.example.other"},
    )
    assert wrong.status_code == 422 and wrong.json()["details"][0]["field"] == "type"
    # CSV as a structured event's string data: the string itself (it came back JSON-quoted)
    csv_event = {**structured, "id": "3", "datacontenttype": "text/csv", "data": "DATE,INFL\n2010-07-01,1.5\n"}
    response = client.post(
        "/v1/observations", json=csv_event, headers={**AUTH, "content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    # a required attribute missing or empty, a time that is none: 400 naming it (as its header)
    data = json.dumps(obs("infl", **{"2010-10-01": 1.0}))
    for headers, field in (
        ({k: v for k, v in binary.items() if k != "ce-id"}, "ce-id"),
        ({**binary, "ce-source": ""}, "ce-source"),
        ({**binary, "ce-time": "not-a-time"}, "ce-time"),
    ):
        response = client.post("/v1/observations", content=data, headers=headers)
        assert response.status_code == 400 and response.json()["details"][0]["field"] == field, response.text
    # a vintage as a query parameter is a CSV upload's: on JSON it was silently dropped (stamped now)
    for headers, body in ((JSON, data), ({**binary, "content-type": "text/csv"}, "DATE,INFL\n2010-10-01,1.0\n")):
        response = client.post("/v1/observations?vintage=2010-05-01", content=body, headers=headers)
        assert response.status_code == 422 and response.json()["details"][0]["field"] == "vintage", response.text
    # the event's vintage attribute applies to JSON data as to CSV (it was ignored); one that
    # contradicts the data's own is refused
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    response = client.post("/v1/observations", content=data, headers={**binary, "ce-id": "4", "ce-vintage": soon})
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["vintage"]) <= datetime.fromisoformat(soon)  # not after now
    later = json.dumps({**obs("infl", **{"2011-01-01": 1.0}), "vintage": "2011-02-01T00:00:00Z"})
    response = client.post("/v1/observations", content=later, headers={**binary, "ce-id": "5", "ce-vintage": soon})
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "vintage", response.text
    for attribute, value in (("id", ""), ("time", "yesterday")):
        response = client.post(
            "/v1/observations",
            json={**structured, attribute: value},
            headers={**AUTH, "content-type": "application/cloudevents+json"},
        )
        assert response.status_code == 400 and response.json()["details"][0]["field"] == attribute, response.text


BAD = [
    ("malformed json", 400, "application/json", b'{"series_id": ', "body"),
    (
        "nan",
        400,
        "application/json",
        b'{"series_id":"realgdp","observations":[{"ts":"2011-01-01","value":NaN}]}',
        "body",
    ),
    ("wrong content type", 415, "text/plain", b"realgdp 1", "content-type"),
    ("csv not utf-8", 400, "text/csv", b"DATE,UNEMP\n2104-01-01,5\xff\n", "body"),  # malformed, as JSON's is
    ("missing field", 422, "application/json", json.dumps({"series_id": "realgdp"}).encode(), "observations"),
    (
        "extra field",
        422,
        "application/json",
        json.dumps({**obs(**{"2011-01-01": 1.0}), "colour": "red"}).encode(),
        "colour",
    ),
    (
        "extra observation field",
        422,
        "application/json",
        json.dumps({"series_id": "realgdp", "observations": [{"ts": "2011-01-01", "value": 1, "x": 2}]}).encode(),
        "observations[0].x",
    ),
    (
        "non-numeric",
        422,
        "application/json",
        json.dumps({"series_id": "realgdp", "observations": [{"ts": "2011-01-01", "value": "1.5"}]}).encode(),
        "observations[0].value",
    ),
    (
        "bad timestamp",
        422,
        "application/json",
        json.dumps({"series_id": "realgdp", "observations": [{"ts": "yesterday", "value": 1}]}).encode(),
        "observations[0].ts",
    ),
    (
        "duplicate timestamps",
        422,
        "application/json",
        json.dumps(
            {
                "series_id": "realgdp",
                "observations": [{"ts": "2011-01-01", "value": 1}, {"ts": "2011-01-01", "value": 2}],
            }
        ).encode(),
        "observations[1].ts",
    ),
    (
        "off frequency",
        422,
        "application/json",
        json.dumps(obs(**{"2011-01-01": 1.0, "2011-02-01": 2.0})).encode(),
        "observations[1].ts",
    ),
    ("unknown series", 404, "application/json", json.dumps(obs("nope", **{"2011-01-01": 1.0})).encode(), "series_id"),
    ("csv bad value", 422, "text/csv", b"DATE,REALGDP\n2011-01-01,1\n2011-04-01,abc\n", "value"),
    (
        "too large",
        413,
        "application/json",
        json.dumps(obs(**{f"{y}-01-01": 1.0 for y in range(1800, 2100)})).encode(),
        None,
    ),
]


@pytest.mark.parametrize(("case", "status", "content_type", "body", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    client, module_schema, case, status, content_type, body, field
):
    before = count(module_schema, "observations")
    response = client.post("/v1/observations", content=body, headers={**AUTH, "content-type": content_type})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"]
    if field:
        assert field in {d.get("field") for d in payload["details"]}, payload
    assert count(module_schema, "observations") == before


def test_writes_need_the_token(client, module_schema):
    before = count(module_schema, "observations")
    body = obs(**{"2012-01-01": 1.0})
    assert client.post("/v1/observations", json=body).status_code == 401
    assert client.post("/v1/observations", json=body, headers={"authorization": "Basic abc"}).status_code == 401
    assert client.post("/v1/observations", json=body, headers={"authorization": "Bearer wrong"}).status_code == 403
    assert count(module_schema, "observations") == before


def test_a_rate_limit_is_one_budget_per_token_however_its_header_is_spaced(server_url, tmp_path):
    """The caller was its Authorization header as sent: "Bearer  <token>", with one more space
    each time, passed the same token check under a new name, and a fresh budget with it."""
    if time.time() % 86400 > 86340:  # not across a window's end (midnight UTC)
        time.sleep(86400 - time.time() % 86400 + 1)
    with fresh_schema(server_url, "f") as url:  # a start of its own: not one more in the module's schema
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)
        running = start_function("ingest", url, tmp_path, PEFM_INGEST_TOKEN=TOKEN, PEFM_RATE_LIMIT="3/86400")
        try:
            with running.client() as c:
                body = {"name": "x", "frequency": "Q"}
                statuses = [
                    c.put(
                        "/v1/series/limited", json=body, headers={"authorization": f"bearer{' ' * n}{TOKEN}"}
                    ).status_code
                    for n in range(1, 6)
                ]
            assert statuses == [201, 200, 200, 429, 429]
        finally:
            stop(running)


def test_unknown_routes_and_methods_are_json_errors(client):
    assert client.get("/v2/nothing").json()["error"].startswith("no route")
    assert client.delete("/v1/observations").status_code == 405


def test_metrics_and_openapi(client, module_schema):
    client.post("/v1/observations", json=obs(**{"2009-10-01": 13000.0}), headers=AUTH)

    def refused() -> float:
        found = re.search(r'^pefm_ingest_refused_total\{status="422"\} (\S+)$', client.get("/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0

    before = refused()
    for _ in range(2):  # refused for what they hold: counted as writes, not as rows
        client.post("/v1/observations", json=obs(**{"2009-10-02": 1.0, "2009-10-03": 2.0}), headers=AUTH)
    client.post("/v1/observations", json=obs(**{"2009-10-01": 1.0}))  # no token: not counted
    assert refused() == before + 2
    text = client.get("/metrics").text
    assert 'refused_total{status="401"}' not in text
    assert (
        'pefm_requests_total{method="POST",revision="pefm-ingest-00001",route="/v1/observations",'
        'service="ingest",status="200"}'
    ) in text
    assert "pefm_request_duration_seconds_bucket" in text
    assert 'pefm_ingest_rows_total{outcome="unchanged"}' in text
    assert "pefm_start_to_ready_seconds" in text
    committed = json.loads((ROOT / "src/pefm/serving/openapi/ingest.json").read_text())
    assert client.get("/openapi.json").json() == committed


def test_requests_are_logged_off_the_request_path(client, module_schema):
    client.get("/v1/series/realgdp")
    import time

    deadline = time.monotonic() + 5
    while count(module_schema, "request_log") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(module_schema, "request_log") > 0


def test_the_start_is_recorded_for_the_dashboard(client, module_schema):
    """Each start (a cold start on Knative) lands in revision_starts with its start-to-ready time,
    the same number /metrics reports."""
    import re
    import time

    import psycopg

    deadline = time.monotonic() + 5  # written off the start path, by the log writer
    while count(module_schema, "revision_starts") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    with psycopg.connect(module_schema) as conn:
        rows = conn.execute(
            "SELECT revision, start_to_ready_s FROM revision_starts WHERE service = 'ingest'"
        ).fetchall()
    [(revision, seconds)] = rows
    exported = re.search(
        r'pefm_start_to_ready_seconds\{[^}]*revision="([^"]+)"[^}]*\} (\S+)', client.get("/metrics").text
    )
    assert revision == exported.group(1) and seconds == float(exported.group(2)) and 0 < seconds < 60


def test_func_yaml_valid_against_the_shared_schema():
    import jsonschema
    import yaml

    schema = json.loads((ROOT.parent / "shared/func-schema/func_yaml-schema.json").read_text())
    for name in ("ingest", "inference", "monitor"):
        spec = yaml.safe_load((ROOT / "functions" / name / "func.yaml").read_text())
        spec["created"] = spec["created"].isoformat() if hasattr(spec["created"], "isoformat") else spec["created"]
        jsonschema.validate(spec, schema)
        assert spec["specVersion"] == "0.36.0" and spec["runtime"] == "python"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**spec, "deploy": {"options": {"scale": {"min": "zero"}}}}, schema)
