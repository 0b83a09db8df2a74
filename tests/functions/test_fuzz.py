"""Property-based fuzzing of both functions (hypothesis): at least 1,000 generated requests each,
valid and malformed mixed. No request may get a 5xx, and a rejected write must leave the
observations exactly as they were."""

import json

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.functions.conftest import TOKEN, register_model, start_function, stop

SERIES = ["realgdp", "unemp", "infl"]
AUTH = {"authorization": f"Bearer {TOKEN}"}
RUNS = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

quarters = st.builds(lambda y, q: f"{y}-{q:02d}-01", st.integers(1950, 2030), st.sampled_from([1, 4, 7, 10]))
timestamps = st.one_of(
    quarters,
    st.dates().map(str),
    st.sampled_from(["2020-01-01T00:00:00Z", "2020-01-01T05:00:00+05:00", "2020-13-01", "", "NaN", "1e9"]),
    st.integers(),
    st.none(),
)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-(10**30), 10**30),
    st.sampled_from(["1.5", None, True, [], {}]),
)
observation = st.one_of(
    st.fixed_dictionaries({"ts": timestamps, "value": values}),
    st.fixed_dictionaries({"ts": quarters, "value": st.floats(-1e6, 1e6)}),
    st.dictionaries(st.sampled_from(["ts", "value", "extra"]), st.one_of(timestamps, values), max_size=3),
    st.integers(),
)
series_ids = st.one_of(st.sampled_from([*SERIES, "nope"]), st.text(max_size=70), st.integers())
one_series = st.fixed_dictionaries(
    {"series_id": series_ids, "observations": st.lists(observation, max_size=12)},
    optional={"vintage": st.one_of(timestamps, st.just("2031-01-01T00:00:00Z")), "colour": st.text(max_size=3)},
)
payload = st.one_of(
    one_series,
    st.fixed_dictionaries({"series": st.lists(one_series, max_size=3)}),
    st.one_of(st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3), st.none()),
)
valid_payload = st.fixed_dictionaries(
    {
        "series_id": st.sampled_from(SERIES),
        "observations": st.lists(
            st.fixed_dictionaries({"ts": quarters, "value": st.floats(-1e6, 1e6)}),
            min_size=1,
            max_size=6,
            unique_by=lambda o: o["ts"],
        ),
    },
)
csv_body = st.one_of(
    st.builds(
        lambda rows: "DATE,REALGDP\n" + "\n".join(f"{d},{v}" for d, v in rows),
        st.lists(st.tuples(timestamps, st.one_of(values, st.just("."))), max_size=8),
    ),
    st.text(max_size=200),
)
# what broke parsers before (issue 18): deep nesting, any script's digits, NULs and control
# characters, huge fields, bodies at and just past the 8,192-byte limit these functions get
hostile_body = st.one_of(
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=6).map(
        lambda digits: f"DATE,REALGDP\n2011-01-01,{digits}\n"
    ),
    st.text(alphabet="\x00\x01\x1f\x7f", min_size=1, max_size=3).map(lambda s: f"DATE,REALGDP\n2011-01-01,1{s}\n"),
    st.integers(1, 9_000).map(lambda n: '{"series_id":"' + "a" * n + '","observations":[]}'),
    st.integers(8_100, 8_300).map(lambda n: "DATE,REALGDP\n" + "1" * (n - 13)),
)
content_types = st.sampled_from(["application/json", "text/csv", "text/plain", "application/cloudevents+json", ""])


@pytest.fixture(scope="module")
def functions(module_schema, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    version = register_model(module_schema, "ar", SERIES)
    ingest = start_function("ingest", module_schema, tmp, PEFM_INGEST_TOKEN=TOKEN, PEFM_MAX_BODY_BYTES="8192")
    inference = start_function("inference", module_schema, tmp, PEFM_MODEL_VERSION=version)
    yield ingest, inference
    stop(ingest)
    stop(inference)


def snapshot(conn: psycopg.Connection) -> tuple:
    return conn.execute("SELECT count(*), coalesce(sum(value), 0), max(ingested_at) FROM observations").fetchone()


def test_ingest_fuzz(functions, module_schema):
    ingest, _ = functions
    statuses: dict[int, int] = {}
    with (
        httpx.Client(base_url=ingest.url, timeout=30) as client,
        psycopg.connect(module_schema, autocommit=True) as conn,
    ):
        requests = st.one_of(
            st.tuples(st.one_of(payload.map(json.dumps), csv_body), content_types, st.booleans()),
            st.tuples(valid_payload.map(json.dumps), st.just("application/json"), st.just(True)),
            st.tuples(hostile_body, content_types, st.just(True)),
        )

        @RUNS
        @given(request=requests)
        def run(request):
            body, content_type, auth = request
            before = snapshot(conn)
            headers = {"content-type": content_type, **(AUTH if auth else {})}
            response = client.post("/v1/observations", content=body.encode(), headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, response.text
            if response.status_code != 200:
                assert response.headers["content-type"] == "application/json", response.text
                assert response.json()["error"]
                assert snapshot(conn) == before, response.text  # no partial writes

        run()
    assert sum(statuses.values()) >= 1000
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0  # the fuzz reached both outcomes


forecast_request = st.fixed_dictionaries(
    {},
    optional={
        "series_id": st.one_of(st.sampled_from([*SERIES, "nope"]), st.text(max_size=5), st.integers()),
        "series_ids": st.lists(st.sampled_from([*SERIES, "nope"]), max_size=4),
        "horizon": st.one_of(st.integers(-2, 70), st.text(max_size=2), st.none()),
        "levels": st.one_of(st.lists(st.integers(-5, 105), max_size=4), st.integers()),
        "as_of": st.one_of(st.sampled_from(["1980-01-01", "2000-01-01T00:00:00Z", "1700-01-01", "x"]), st.none()),
        "history": st.one_of(
            st.lists(observation, max_size=4),
            st.lists(st.fixed_dictionaries({"ts": quarters, "value": st.floats(-100, 100)}), max_size=6),
        ),
        "extra": st.integers(),
    },
)


def test_inference_fuzz(functions):
    _, inference = functions
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=inference.url, timeout=30) as client:
        # wait until the model itself has loaded, so 503 "still loading" cannot mask a 500
        for _ in range(300):
            if client.post("/v1/forecast", json={"series_id": "unemp", "levels": [50]}).status_code != 503:
                break

        @RUNS
        @given(body=st.one_of(forecast_request.map(json.dumps), st.text(max_size=30)))
        def run(body):
            response = client.post("/v1/forecast", content=body.encode(), headers={"content-type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, response.text

        run()
    assert sum(statuses.values()) >= 1000
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0
