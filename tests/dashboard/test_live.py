"""The dashboard beside the services it reads when they are configured: the inference function as
a real process (``PEFM_ROUTER_URL``), and Debian's Prometheus scraping it (``PEFM_PROMETHEUS_URL``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from dashboard import data, views
from dashboard.app import create_app
from dashboard.state import ForecastView
from pefm.config import get_settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import Process
from pefm.rollout.providers import PrometheusProvider
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import fresh_schema
from tests.functions.conftest import start_function
from tests.prometheus import start_prometheus

SERIES = ["realgdp", "unemp"]


@pytest.fixture(scope="module")
def served(server_url: str) -> Iterator[tuple[Database, str]]:
    """A model registered on the data as of 2005, serving; the data go on to 2009."""
    with fresh_schema(server_url, "d") as url, Database(url, max_size=2) as db:
        with db.connection() as conn:
            migrate(conn)
            load_bundled(conn, bundled(SERIES))
            version, _ = train(conn, "ar", SERIES, as_of=datetime(2005, 1, 1, tzinfo=UTC), spec=None)
            promote(conn, version.id)
        create_app(db)
        yield db, version.id


@pytest.fixture(scope="module")
def inference(served, tmp_path_factory) -> Iterator[Process]:
    """The inference function serving that model; it conditions it on the data since (as it starts)."""
    db, version_id = served
    running = start_function("inference", db.url, tmp_path_factory.mktemp("inference"), PEFM_MODEL_VERSION=version_id)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def prometheus(served, tmp_path_factory) -> Iterator[PrometheusProvider]:
    """Debian's Prometheus scraping an inference function of its own, which no test asks for a
    forecast: it answers nothing but the scrapes, whichever tests ran before."""
    db, version_id = served
    scraped = start_function("inference", db.url, tmp_path_factory.mktemp("scraped"), PEFM_MODEL_VERSION=version_id)
    server = start_prometheus([scraped.url.removeprefix("http://")], tmp_path_factory.mktemp("prometheus"))
    yield PrometheusProvider(server.url)
    server.stop()
    scraped.stop()


def test_the_overview_counts_no_metrics_scrape_as_traffic(prometheus, served):
    """The function Prometheus scrapes has answered nothing but its scrapes: no traffic."""
    scrapes = 'sum(rate(pefm_requests_total{service="inference",route="/metrics"}[15m]))'
    deadline = time.monotonic() + 60
    while not prometheus.query(scrapes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert prometheus.query(scrapes) > 0  # the scrapes are counted by the function itself
    db, _ = served
    with db.connection() as conn:
        summary = data.overview(conn, prometheus=prometheus)
    assert summary["source"] == "Prometheus server"
    assert summary["requests_per_s"] == 0 and summary["share_2xx"] is None and summary["p95_ms"] is None


def test_the_latest_view_is_the_inference_apis_forecast_on_the_data_since(inference, served, monkeypatch):
    """The model was registered on data to 2004Q4; the function conditions it on the data to 2009Q3
    and the Forecasts page draws what it answers, from 2009Q4, stamped with when its data were read."""
    _, version_id = served
    body = {"series_id": "realgdp", "horizon": 4}
    deadline = time.monotonic() + 90
    while True:  # the function conditions the model in a worker process once it has started
        answer = httpx.post(f"{inference.url}/v1/forecast", json=body, timeout=10).json()
        if answer["forecasts"][0]["forecast"][0]["ds"].startswith("2009-10-01") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    monkeypatch.setenv("PEFM_ROUTER_URL", inference.url)
    get_settings.cache_clear()
    try:
        view = ForecastView(series=("realgdp",), version=version_id, horizon=4)
        figure, _ = views.forecast_view(view)
        frame = views.forecast_csv(view)
    finally:
        monkeypatch.delenv("PEFM_ROUTER_URL")
        get_settings.cache_clear()
    mean = next(t for t in figure.data if t.name == "forecast")
    assert [str(x)[:10] for x in mean.x] == ["2009-10-01", "2010-01-01", "2010-04-01", "2010-07-01"]
    assert list(mean.y) == pytest.approx([r["mean"] for r in answer["forecasts"][0]["forecast"]])
    assert not [a.text for a in figure.layout.annotations if "before the latest data" in a.text]
    assert set(frame["data_as_of"]) == {f"{datetime.fromisoformat(answer['forecasts'][0]['data_as_of']):%Y-%m-%d}"}
    assert frame["data_as_of"].iloc[0] != "2005-01-01"


def test_during_a_rollout_the_latest_view_is_the_serving_versions_forecast_every_time(served, tmp_path):
    """The local router sends each request to blue or green by their weights: the dashboard got the
    candidate's answer about half the time and drew the stored forecast instead, so the panel
    flipped from one refresh to the next. It asks the tagged revisions when the other answered."""
    from pefm.local.runtime import LocalRuntime
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import blue_green

    db, version_id = served
    with db.connection() as conn:
        candidate, _ = train(conn, "naive", SERIES, spec=None)  # registered, not promoted
    runtime = LocalRuntime(db.url, tmp_path / "runtime")
    try:
        runtime.start_revision("inference", "pefm-inference-dash-blue", model_version=version_id, replicas=1)
        runtime.start_revision("inference", "pefm-inference-dash-green", model_version=candidate.id, replicas=1)
        router = runtime.start_router("inference")
        LocalRouter(db, {}).set_traffic(
            "inference", blue_green("pefm-inference-dash-blue", "pefm-inference-dash-green", 50)
        )
        body = {"series_id": "realgdp", "horizon": 4}
        deadline = time.monotonic() + 30
        while httpx.post(f"{router.url}/_tag/green/v1/forecast", json=body).status_code != 200:
            assert time.monotonic() < deadline, "the router never routed the tags"
            time.sleep(0.5)  # it reads the traffic block every few hundred milliseconds
        answered = [data._ask(router.url, version_id, body, data.ask_deadline())[1] for _ in range(12)]
        assert answered == [""] * 12
        # the serving version's revision tagged green (a promotion in its grace period): still found
        LocalRouter(db, {}).set_traffic(
            "inference", blue_green("pefm-inference-dash-green", "pefm-inference-dash-blue", 50)
        )
        deadline = time.monotonic() + 30
        while (green := httpx.post(f"{router.url}/_tag/green/v1/forecast", json=body)).status_code != 200 or (
            green.json()["model_version"] != version_id
        ):
            assert time.monotonic() < deadline, "the router never read the new traffic block"
            time.sleep(0.1)
        assert [data._ask(router.url, version_id, body, data.ask_deadline())[1] for _ in range(4)] == [""] * 4
        # a version no revision serves is said so, not drawn
        part, why = data._ask(router.url, "ar-nosuch", body, data.ask_deadline())
        assert part is None and why.startswith("the inference API serves ") and why.endswith(", not ar-nosuch")
    finally:
        runtime.stop_all()
        LocalRouter(db, {}).retire_all("inference")
