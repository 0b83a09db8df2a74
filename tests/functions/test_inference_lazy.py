"""A replica that serves only precomputed forecasts stays small: it never imports pandas or the
model's libraries; the first request that needs the model loads them (and is then answered)."""

from pathlib import Path

import pytest

from tests.functions.conftest import register_model, start_function, stop, wait_for_model

HEAVY = ("pandas", "pyarrow", "scipy", "statsmodels", "torch")


@pytest.fixture(scope="module")
def inference(module_schema, tmp_path_factory):
    version = register_model(module_schema, "ar", ["realgdp", "unemp"])
    running = start_function("inference", module_schema, tmp_path_factory.mktemp("lazy"), PEFM_MODEL_VERSION=version)
    yield running
    stop(running)


def loaded(running) -> set[str]:
    """The heavy packages whose compiled extensions the function's process has mapped."""
    maps = Path(f"/proc/{running.process.pid}/maps").read_text()
    return {name for name in HEAVY if f"/site-packages/{name}/" in maps}


def test_precomputed_forecasts_import_nothing_heavy_until_the_model_is_needed(inference):
    with inference.client() as client:
        for _ in range(20):
            response = client.post("/v1/forecast", json={"series_ids": ["realgdp", "unemp"], "horizon": 4})
            assert response.status_code == 200, response.text
        assert client.get("/v1/forecast", params={"series_id": "unemp", "levels": "80"}).status_code == 200
        assert loaded(inference) == set()
        response = wait_for_model(client, {"series_id": "unemp", "horizon": 20, "levels": [50]})
        assert response.status_code == 200, response.text
        assert response.json()["forecasts"][0]["forecast"][19]["lo-50"] is not None
    assert "pandas" in loaded(inference)
