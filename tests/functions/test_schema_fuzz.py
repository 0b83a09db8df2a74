"""Schemathesis against each service's served OpenAPI document (ingest, inference, monitor under
func-python, the rollout API under hypercorn): schema-driven requests, valid and invalid, at
least 5,000 to each. No answer may be a 500, every answer must match the document (status,
content type, body schema), every error is JSON, and a refused write leaves the tables as they
were."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pefm.config import Settings
from pefm.rollout.api import create_rollout_app
from pefm.rollout.controller import RolloutController
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database
from tests.functions.conftest import TOKEN, register_model, start_function, stop
from tests.functions.test_flagger_webhooks import _serve

SERIES = ["realgdp", "unemp", "infl"]
ADMIN = "fuzz-admin-token"
REQUESTS = 5_000  # at least this many to each service
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
# the tables a refused write must leave as they were, per service
WRITES = {
    "ingest": ("observations", "series"),
    "monitor": ("drift_reports",),
    "rollout": ("rollouts", "rollout_events"),
}


def counts(url: str, tables: tuple[str, ...]) -> tuple[int, ...]:
    with psycopg.connect(url) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables)


@pytest.fixture(scope="module")
def services(module_schema, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema-fuzz")
    version = register_model(module_schema, "ar", SERIES)
    token = {"PEFM_INGEST_TOKEN": TOKEN, "PEFM_ADMIN_TOKEN": ADMIN, "PEFM_MAX_BODY_BYTES": "65536"}
    running = {
        "ingest": start_function("ingest", module_schema, tmp, **token),
        "inference": start_function("inference", module_schema, tmp, PEFM_MODEL_VERSION=version),
        "monitor": start_function("monitor", module_schema, tmp, PEFM_ADMIN_TOKEN=ADMIN),
    }
    db = Database(module_schema, max_size=2)
    controller = RolloutController(db, None, DatabaseProvider(db), prober=None)
    settings_ = Settings(admin_token=ADMIN, database_url=module_schema, max_body_bytes=65536)
    url, halt = _serve(create_rollout_app(settings_, controller, RolloutSpec()))
    # one drift check first: its first call imports Evidently and the models (seconds on a busy
    # machine), which is not what the fuzzing measures; schemathesis gives each call 10 s
    warm = httpx.post(
        f"{running['monitor'].url}/v1/drift/check", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300
    )
    assert warm.status_code == 200, warm.text
    urls = {name: process.url for name, process in running.items()} | {"rollout": url}
    yield urls
    halt()
    db.close()
    for process in running.values():
        stop(process)


def fuzz(services, service: str, database: str, headers: dict[str, str]) -> int:
    """Every operation of the service's served document, fed schemathesis' valid and invalid
    cases (hypothesis); the requests sent."""
    schema = schemathesis.openapi.from_url(f"{services[service]}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    rich = [op for op in operations if op.body or op.path_parameters or op.query]
    per_operation = REQUESTS // max(1, len(rich)) + 200
    sent = 0
    for operation in operations:
        modes = [operation.as_strategy(GenerationMode.POSITIVE)]
        if operation in rich:
            modes.append(operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(FUZZ, max_examples=per_operation if operation in rich else 20)
        @given(case=st.one_of(modes))
        def run(case) -> None:
            nonlocal sent
            call(case, service, database, headers)
            sent += 1

        run()
    return sent


def call(case, service: str, database: str, headers: dict[str, str]) -> None:
    tables = WRITES.get(service, ())
    before = counts(database, tables) if tables and case.method != "GET" else None
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text[:300]
        assert isinstance(response.json()["error"], str)
        if before is not None:
            assert counts(database, tables) == before, f"{case.method} {case.path} wrote rows and answered an error"


def test_ingest(services, module_schema):
    assert fuzz(services, "ingest", module_schema, {"Authorization": f"Bearer {TOKEN}"}) >= REQUESTS


def test_inference(services, module_schema):
    assert fuzz(services, "inference", module_schema, {}) >= REQUESTS


def test_monitor(services, module_schema):
    assert fuzz(services, "monitor", module_schema, {"Authorization": f"Bearer {ADMIN}"}) >= REQUESTS


def test_rollout_api(services, module_schema):
    assert fuzz(services, "rollout", module_schema, {"Authorization": f"Bearer {ADMIN}"}) >= REQUESTS
