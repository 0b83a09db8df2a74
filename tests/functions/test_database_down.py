"""With the database gone: ingest answers 503 with Retry-After, inference keeps forecasting and
counts the prediction-log rows it could not write. Uses a database of its own, so it can stop it."""

import time

import httpx

from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.storage.database import open_database
from pefm.storage.embedded import EmbeddedPostgres
from tests.functions.conftest import TOKEN, register_model, start_function, stop


def test_database_down(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", database="pefm_down")
    url = server.start()
    with open_database(Settings(database_url=url)) as db, db.connection() as conn:
        load_bundled(conn, bundled(["realgdp"]))
    version = register_model(url, "naive", ["realgdp"])
    ingest = start_function("ingest", url, tmp_path, PEFM_INGEST_TOKEN=TOKEN)
    inference = start_function("inference", url, tmp_path, PEFM_MODEL_VERSION=version)
    body = {"series_id": "realgdp", "observations": [{"ts": "2009-10-01", "value": 13000.0}]}
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(timeout=30) as client:
            assert client.post(f"{ingest.url}/v1/observations", json=body, headers=auth).status_code == 200
            server.stop()  # the last handle: the server shuts down
            down = client.post(f"{ingest.url}/v1/observations", json=body, headers=auth)
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "5"
            assert down.json()["error"] == "the database is unavailable; retry later"
            for _ in range(3):
                forecast = client.post(f"{inference.url}/v1/forecast", json={"series_id": "realgdp", "horizon": 2})
                assert forecast.status_code == 200, forecast.text
            deadline = time.monotonic() + 15
            dropped = ""
            while time.monotonic() < deadline:
                metrics = client.get(f"{inference.url}/metrics").text
                dropped = [line for line in metrics.splitlines() if line.startswith("pefm_log_rows_dropped_total")]
                if any('table="predictions"' in line and not line.endswith(" 0.0") for line in dropped):
                    break
                time.sleep(0.3)
            assert any('table="predictions"' in line and not line.endswith(" 0.0") for line in dropped), dropped
            assert client.get(f"{inference.url}/health/liveness").status_code == 200
    finally:
        stop(ingest)
        stop(inference)
