"""The inference revision's model server in-process, on a real PostgreSQL: forecasts re-conditioned
on a value near the largest double, what-ifs that re-conditioning overtakes mid-request, and a
failed model load retried while a request reads its outcome."""

import asyncio
import logging
import math
import threading
from datetime import UTC, datetime

import pytest

from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.serving import whatif
from pefm.serving.cache import open_cache
from pefm.serving.freshness import condition_on_latest
from pefm.serving.http import ApiError
from pefm.serving.inference import LOAD_RETRY_SECONDS, InferenceService, ModelServer, check_request
from pefm.serving.observability import ServiceMetrics
from pefm.storage.database import Database
from tests.functions.conftest import TRAINED_AS_OF
from tests.signing_keys import VERIFY_KEYS

SERIES = ["realgdp", "unemp"]


@pytest.fixture
def served(db, conn):
    """realgdp and unemp to 2009, and an AR model trained on them as known on 2000-01-01, serving."""
    load_bundled(conn, bundled(SERIES))
    version, _ = train(conn, "ar", SERIES, as_of=TRAINED_AS_OF, spec=None)
    promote(conn, version.id)
    conn.commit()
    return version


def model_server(url: str) -> ModelServer:
    """A replica's model server with the serving version's precomputed forecasts loaded."""
    settings = Settings.from_env({"PEFM_DATABASE_URL": url, "PEFM_VERIFY_KEYS": VERIFY_KEYS})
    server = ModelServer(settings, Database(url, max_size=2), open_cache(settings, None))
    server.load()
    return server


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the level the value grows to
def test_re_conditioning_keeps_the_forecasts_when_the_new_ones_are_not_finite(db, conn, served, caplog):
    """realgdp's last value at 1e308 (finite, stored): its level forecast overflows, and the
    re-conditioned forecasts were swapped in, infinities and all, for every answer to fail on.
    realgdp keeps its forecasts, with a warning; unemp goes ahead."""
    from pefm.forecasting.registry import load_model
    from pefm.storage.signing import trusted_keys

    conn.execute(
        "INSERT INTO observations (series_id, ts, vintage, value) VALUES ('realgdp', '2009-10-01', now(), 1e308)"
    )
    conn.commit()
    model = load_model(conn, served.id, trusted_keys(Settings.from_env({"PEFM_VERIFY_KEYS": VERIFY_KEYS})))
    with caplog.at_level(logging.WARNING, logger="pefm.serving.freshness"):
        updates = condition_on_latest(model, db, SERIES)
    assert sorted(updates) == ["unemp"]
    assert "not re-conditioning realgdp: its forecasts are not finite numbers" in caplog.text


def test_precomputed_forecasts_that_are_not_finite_are_a_422(served, schema_url):
    """Re-conditioned forecasts holding an infinity (kept in the shared cache by a replica before
    they were refused) made every plain answer naming the series a 500; the model path answers
    such a forecast with a 422, and so does the precomputed one now."""
    server = model_server(schema_url)
    try:
        state = server.series["realgdp"]
        rows = [{**row, "space": space, "mean": math.inf} for space, kept in state.rows.items() for row in kept]
        server.recondition({"realgdp": (rows, state.anchor, datetime.now(UTC))})
        service = InferenceService(server.settings, server, ServiceMetrics("inference", "rev-1"), None)
        for body in ({"series_id": "realgdp"}, {"series_ids": ["unemp", "realgdp"]}):
            with pytest.raises(ApiError) as refused:
                asyncio.run(service._answer_text(check_request(body), False))
            assert (refused.value.status, refused.value.error) == (422, "no finite forecast")
            assert refused.value.details[0]["field"] == "series_id"
    finally:
        server.db.close()


def test_a_what_if_reads_the_data_of_the_state_it_was_given(served, schema_url):
    """Re-conditioned while a what-if was made, the series' newer data replaced those of the plain
    forecast the answer says (its data_as_of, and the key it is cached under)."""
    server = model_server(schema_url)
    try:
        server.wait_for_model()
        given = server.series["unemp"]  # as trained: the data known on 2000-01-01
        server.recondition({"unemp": ([], given.anchor, datetime.now(UTC))})  # lands mid-request: data to 2009
        history = [{"ts": "2000-01-01", "value": 9.0}]
        rows = whatif.model_forecast(server, "unemp", given, 1, (80,), None, None, history, "model")
        assert rows[0]["ds"] == "2000-04-01T00:00:00Z"  # the history extended the data of ``given``
    finally:
        server.db.close()


def test_a_failed_load_retried_while_a_request_reads_it_still_says_retry_after(served, schema_url):
    """A load failed for a reason that may pass (the database away). A request whose wait for it
    ended just as another request began the retry read the failure after the retry had cleared
    it: a 503 without Retry-After, as if the model could never load."""
    server = model_server(schema_url)
    server.db.close()  # the database away: the load fails, for a reason that may pass
    server.start_loading()
    server._loaded.wait(30)
    assert server.model is None and server._failed_at is not None
    retrying = threading.Event()
    server.load_model = retrying.wait  # the retry, under way until the test ends

    class RetriedMeanwhile(threading.Event):
        def wait(self, timeout=None):
            done = super().wait(timeout)
            server._failed_at -= LOAD_RETRY_SECONDS  # then another request, the retry due, begins it
            server.start_loading()
            return done

    server._loaded = RetriedMeanwhile()
    server._loaded.set()
    try:
        with pytest.raises(ApiError) as refused:
            server.model_json("unemp", server.series["unemp"], "model", 20, (80,), None, None, None)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": f"{LOAD_RETRY_SECONDS:.0f}"}
    finally:
        retrying.set()
