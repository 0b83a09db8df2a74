"""The dashboard's data functions, figure builders and page renderers, on a real database."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from dashboard import data, views
from dashboard.app import create_app
from dashboard.components.figures import fan_chart
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.storage.model_versions import get_version

SERIES = ["realgdp", "unemp"]


@pytest.fixture
def served(db):
    with db.connection() as conn:
        load_bundled(conn, bundled(SERIES))
        version, _ = train(conn, "ar", SERIES, as_of=datetime(2005, 1, 1, tzinfo=UTC), spec=BacktestSpec(windows=8))
        promote(conn, version.id)
    app = create_app(db)
    return db, version.id, app


def test_overview_counts_series_and_reports_no_traffic_honestly(served):
    db, _, _ = served
    with db.connection() as conn:
        summary = data.overview(conn)
    assert summary["series"] == 2 and summary["newest"].year == 2009
    assert summary["requests_per_s"] == 0 and summary["success"] is None and summary["rollout"] is None
    cards = views.overview_cards(summary)
    texts = [c.children.children.children[1].children for c in cards]
    assert texts[0] == "2" and texts[2] == "-" and texts[5] == "none"


def test_fan_chart_has_nested_bands_and_flags_actuals_outside_them():
    ds = pd.date_range("2005-01-01", periods=4, freq="QS")
    forecast = pd.DataFrame(
        {"ds": ds, "mean": [1.0] * 4, "lo-80": [0.5] * 4, "hi-80": [1.5] * 4, "lo-95": [0.0] * 4, "hi-95": [2.0] * 4}
    )
    actuals = pd.Series([1.0, 1.2], index=pd.date_range("2004-07-01", periods=2, freq="QS"))
    realized = pd.Series([1.1, 5.0, 0.9, -3.0], index=ds)
    figure = fan_chart(actuals, forecast, "t", realized=realized)
    names = [t.name for t in figure.data]
    assert names.count("95% interval") == 1 and names.count("80% interval") == 1
    [outside] = [t for t in figure.data if t.name == "outside 95%"]
    assert list(outside.y) == [5.0, -3.0]


def test_forecast_page_changes_with_the_series_and_the_as_of_date(served):
    db, version_id, _ = served
    gdp, rows = views.forecast_view("realgdp", version_id, 4, None)
    unemp, _ = views.forecast_view("unemp", version_id, 4, None)
    assert gdp.layout.title.text.startswith("realgdp") and unemp.layout.title.text.startswith("unemp")
    gdp_mean = next(t for t in gdp.data if t.name == "forecast")
    assert len(gdp_mean.x) == 4 and str(gdp_mean.x[0])[:10] == "2005-01-01"
    actual_now = next(t for t in gdp.data if t.name == "actual")
    then, _ = views.forecast_view("realgdp", version_id, 4, "1990-01-01")
    actual_then = next(t for t in then.data if t.name == "actual")
    assert str(max(actual_then.x))[:4] == "1989" and str(max(actual_now.x))[:4] == "2009"
    assert {r["series_id"] for r in rows} == set(SERIES) and all("rmse" in r for r in rows)
    with db.connection() as conn:
        assert data.model_options(conn, "realgdp")[0]["value"] == version_id
        assert get_version(conn, version_id).status == "serving"


def test_the_app_serves_its_pages_and_local_assets(served):
    _, _, app = served
    client = app.server.test_client()
    for path in ("/", "/drift", "/serving"):
        assert client.get(path).status_code == 200
    page = client.get("/forecasts")
    assert page.status_code == 200 and b"PEFM" in page.data
    assert b"cdn." not in page.data  # Dash's JS and Bootstrap come from this server
    assert client.get("/assets/bootstrap.min.css").status_code == 200
    layout = client.get("/_dash-layout").get_json()
    assert "refresh" in str(layout)


def test_drift_page_lists_the_latest_report_and_a_score_history(served):
    from pefm.drift.monitor import check
    from pefm.drift.policy import DriftPolicy

    db, _, _ = served
    header, rows, figure = views.drift_view()
    assert header.startswith("no drift report yet") and rows == []
    with db.connection() as conn:
        check(conn, DriftPolicy.load())
        report = check(conn, DriftPolicy.load())
    header, rows, figure = views.drift_view("unemp", "volatility")
    assert header.startswith(f"report {report['id']}")
    assert {(r["series"], r["feature"]) for r in rows} >= {("realgdp", "value"), ("unemp", "volatility")}
    score = next(t for t in figure.data if t.name == "score")
    assert len(score.y) == 2 and figure.layout.title.text.startswith("unemp volatility")


def test_serving_page_shows_latency_and_errors_per_revision(served):
    db, _, _ = served
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
               SELECT 'inference', r, '/v1/forecast', 'POST', CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END, i
               FROM unnest(ARRAY['pefm-inference-blue', 'pefm-inference-green']) AS r, generate_series(1, 100) AS i"""
        )
    latency, rate, totals = views.serving_view()
    assert {t.name for t in latency.data} >= {"pefm-inference-blue p99", "pefm-inference-green p50"}
    assert {(t["revision"], t["requests"], t["errors_5xx"]) for t in totals} == {
        ("pefm-inference-blue", 100, 10),
        ("pefm-inference-green", 100, 10),
    }
    p99 = next(t for t in latency.data if t.name == "pefm-inference-blue p99")
    assert 98 <= p99.y[0] <= 100
    assert any(t.name == "pefm-inference-green 5xx" for t in rate.data)
