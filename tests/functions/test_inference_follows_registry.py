"""An unpinned inference revision serves the registry's serving version whenever its replicas
started: a promotion is followed (the version loaded, then swapped in) within seconds, and the
re-conditioning of the version before ends; a promoted version it cannot load leaves the one
before serving. A real process under func-python on a real PostgreSQL; the promotion is the
registry's own."""

import re
import time

import pytest

from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.storage.database import Database
from tests.functions.conftest import TRAINED_AS_OF, register_model, start_function, stop


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


def follows(client, before: str, promoted: str, timeout: float = 30) -> None:
    """Wait until the replica serves ``promoted``, serving ``before`` until then."""
    deadline = time.monotonic() + timeout
    while (served := served_version(client)) != promoted:
        assert served == before and time.monotonic() < deadline, served
        time.sleep(0.2)


def wait_for_log(running, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in running.log.read_text():
        assert time.monotonic() < deadline, running.log.read_text()[-3000:]
        time.sleep(0.2)


def test_an_unpinned_revision_follows_a_promotion(module_schema, unpinned):
    """Its replicas had served the version serving when each started: after a promotion, replicas
    started before it and after it served different models under one revision."""
    running, first = unpinned
    with running.client() as client:
        assert served_version(client) == first and model_info(client) == {first}
        second = register_model(module_schema, "mean", ["unemp", "infl"])
        follows(client, first, second)
        assert model_info(client) == {second}
        dropped = client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 2})
        assert dropped.status_code == 409, dropped.text  # the promoted version does not forecast it
    wait_for_log(running, f"re-conditioning of {first} ended")  # its listener and worker with it
    assert f"re-conditioning of {second} ended" not in running.log.read_text()


def test_a_promoted_version_it_cannot_load_leaves_the_one_before_serving(module_schema, unpinned):
    """A version whose signature does not verify here (as one signed by a key this replica does
    not trust) is logged as an error; the version before serves on, and the next promotion is
    followed."""
    running, _ = unpinned
    with running.client() as client:
        before = served_version(client)
        with Database(module_schema, max_size=1) as db, db.connection() as conn:
            forged, _ = train(conn, "naive", ["unemp"], as_of=TRAINED_AS_OF, spec=None, params={})
            conn.execute("UPDATE model_versions SET artifact_signature = %s WHERE id = %s", (bytes(64), forged.id))
            conn.commit()
            promote(conn, forged.id)
        wait_for_log(running, f"cannot serve {forged.id}, promoted in the registry: {before} serves on")
        assert served_version(client) == before and model_info(client) == {before}
        follows(client, before, register_model(module_schema, "naive", ["unemp", "infl"]))
