"""An unpinned inference revision serves the registry's serving version whenever its replicas
started: a promotion is followed (the version loaded, then swapped in) within seconds. A real
process under func-python on a real PostgreSQL; the promotion is the registry's own."""

import re
import time

import pytest

from tests.functions.conftest import register_model, start_function, stop


@pytest.fixture(scope="module")
def unpinned(module_schema, tmp_path_factory):
    first = register_model(module_schema, "ar", ["unemp", "infl", "realgdp"])
    running = start_function("inference", module_schema, tmp_path_factory.mktemp("unpinned"))
    yield running, first
    stop(running)


def served_version(client) -> str:
    return client.post("/v1/forecast", json={"series_id": "unemp", "horizon": 2}).headers["x-pefm-model-version"]


def model_info(client) -> set[str]:
    return set(re.findall(r'^pefm_model_info\{[^}]*version="([^"]+)"', client.get("/metrics").text, re.M))


def test_an_unpinned_revision_follows_a_promotion(module_schema, unpinned):
    """Its replicas had served the version serving when each started: after a promotion, replicas
    started before it and after it served different models under one revision."""
    running, first = unpinned
    with running.client() as client:
        assert served_version(client) == first and model_info(client) == {first}
        second = register_model(module_schema, "mean", ["unemp", "infl"])
        deadline = time.monotonic() + 30
        while (served := served_version(client)) != second:
            assert served == first and time.monotonic() < deadline, served
            time.sleep(0.2)
        assert model_info(client) == {second}
        dropped = client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 2})
        assert dropped.status_code == 409, dropped.text  # the promoted version does not forecast it
