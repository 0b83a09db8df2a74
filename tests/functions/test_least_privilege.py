"""The functions as real processes, with what they are denied: they connect as their own roles,
load only artifacts the trainer signed, never migrate, and cannot be told to inject faults."""

from __future__ import annotations

import hashlib
import time

import httpx
import psycopg

from pefm.local.runtime import FUNCTIONS
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import fresh_schema
from tests.faults import faulty_env
from tests.functions.conftest import TOKEN, register_model, start_function, stop

SERIES = ["realgdp", "unemp", "infl"]
ALIVE = "/health/liveness"  # started without waiting to be ready: these are not expected to be


def refusal_at_start(module_schema, tmp_path, version: str, **env: str) -> str:
    """Start inference pinned to `version` (with `env`); it must not become ready and must answer
    503. Returns the 503's error."""
    running = start_function("inference", module_schema, tmp_path, ready_path=ALIVE, PEFM_MODEL_VERSION=version, **env)
    try:
        time.sleep(1.0)
        with running.client() as client:
            assert client.get("/health/readiness").status_code != 200
            response = client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 2})
        assert response.status_code == 503
        return response.json()["error"]
    finally:
        stop(running)


def test_inference_refuses_a_model_the_trainer_did_not_sign(module_schema, tmp_path):
    """Someone with SQL access swaps in a pickle that runs a command, with a matching sha256: the
    revision never becomes ready, says why, and never unpickles it."""
    version = register_model(module_schema, "naive", SERIES)
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with psycopg.connect(module_schema) as conn:
        conn.execute(
            "UPDATE model_versions SET artifact = %s, artifact_sha256 = %s WHERE id = %s",
            (evil, hashlib.sha256(evil).hexdigest(), version),
        )
    assert "signature does not match" in refusal_at_start(module_schema, tmp_path, version)
    assert not marker.exists()


def test_inference_refuses_precomputed_forecasts_the_trainer_did_not_sign(module_schema, tmp_path):
    """Someone with SQL access changes a forecast stored beside a signed artifact (what a revision
    serves before its model loads): the revision never becomes ready and says why."""
    version = register_model(module_schema, "naive", SERIES)
    with psycopg.connect(module_schema) as conn:
        conn.execute(
            "UPDATE model_versions SET precomputed = jsonb_set(precomputed, '{rows,0,mean}', '1e6') WHERE id = %s",
            (version,),
        )
    error = refusal_at_start(module_schema, tmp_path, version)
    assert "precomputed forecasts" in error and "signed sha256" in error


def test_inference_with_a_shared_cache_but_not_its_key_never_becomes_ready(module_schema, tmp_path):
    """A replica given Redis without PEFM_CACHE_KEY could neither check what others keep there nor
    tag what it keeps: it says so instead of serving (the key is added to the Secret, not skipped)."""
    version = register_model(module_schema, "naive", SERIES)
    error = refusal_at_start(module_schema, tmp_path, version, PEFM_REDIS_URL="redis://127.0.0.1:9/0")
    assert "PEFM_CACHE_KEY" in error, error


def test_a_function_waits_for_the_migrator_and_never_migrates(server_url, tmp_path):
    with fresh_schema(server_url, "m") as url:
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)  # the roles and their grants exist on this server from here on
            conn.execute("DROP TABLE origin_forecasts")
            conn.execute("DELETE FROM schema_migrations WHERE version = 11")  # one migration pending again
        running = start_function("ingest", url, tmp_path, ready_path=ALIVE, PEFM_INGEST_TOKEN=TOKEN)
        try:
            time.sleep(1.0)
            with running.client() as client:
                response = client.put("/v1/series/x", json={"name": "x", "frequency": "Q"})
                assert response.status_code == 503 and "pefm db migrate" in response.json()["error"]
            with psycopg.connect(url) as conn:  # it did not migrate itself (its role could not)
                assert conn.execute("SELECT to_regclass('origin_forecasts')").fetchone()[0] is None
            with Database(url, max_size=1) as db, db.connection() as conn:
                migrate(conn)  # the migrator's step
            deadline = time.monotonic() + 20
            while httpx.get(f"{running.url}/health/readiness").status_code != 200:
                assert time.monotonic() < deadline, running.log.read_text()[-2000:]
                time.sleep(0.2)
            headers = {"authorization": f"Bearer {TOKEN}"}
            response = httpx.put(f"{running.url}/v1/series/x", json={"name": "x", "frequency": "Q"}, headers=headers)
            assert response.status_code in (200, 201), response.text
        finally:
            stop(running)


def test_faults_are_injected_only_by_the_test_shim_and_functions_run_as_their_roles(module_schema, tmp_path):
    """PEFM_FAULT_RATE on a normal start does nothing (no setting switches faults on); the same
    revision with tests/faults on its path fails its share. Meanwhile the server sees the
    revision connected as pefm_inference."""
    version = register_model(module_schema, "naive", SERIES)
    body = {"series_id": "realgdp", "horizon": 2}
    plain = start_function("inference", module_schema, tmp_path, PEFM_MODEL_VERSION=version, PEFM_FAULT_RATE="1")
    try:
        with plain.client() as client:
            assert {client.post("/v1/forecast", json=body).status_code for _ in range(20)} == {200}
        with psycopg.connect(module_schema) as conn:
            users = {r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE usename LIKE 'pefm_%'")}
        assert "pefm_inference" in users
    finally:
        stop(plain)
    shim = faulty_env(FUNCTIONS / "inference", 0.5)
    faulty = start_function("inference", module_schema, tmp_path, PEFM_MODEL_VERSION=version, **shim)
    try:
        with faulty.client() as client:
            statuses = [client.post("/v1/forecast", json=body).status_code for _ in range(20)]
        assert statuses.count(500) == 10 and statuses.count(200) == 10
    finally:
        stop(faulty)
