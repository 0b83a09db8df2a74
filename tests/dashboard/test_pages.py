"""The dashboard's data functions, figure builders and page renderers, on a real database."""

from datetime import UTC, datetime

import pandas as pd
import pytest
from psycopg.types.json import Jsonb

from dashboard import data, views
from dashboard.app import create_app
from dashboard.components.figures import fan_chart
from dashboard.demo import blue_serving
from pefm.config import get_settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.rollout.spec import RolloutSpec
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
    assert summary["source"] == "request log"
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
    gdp, compared, rows = views.forecast_view("realgdp", version_id, 4, None)
    unemp, _, _ = views.forecast_view("unemp", version_id, 4, None)
    assert compared is None
    assert gdp.layout.title.text.startswith("realgdp") and unemp.layout.title.text.startswith("unemp")
    gdp_mean = next(t for t in gdp.data if t.name == "forecast")
    assert len(gdp_mean.x) == 4 and str(gdp_mean.x[0])[:10] == "2005-01-01"
    actual_now = next(t for t in gdp.data if t.name == "actual")
    then, _, _ = views.forecast_view("realgdp", version_id, 4, "1990-01-01")
    actual_then = next(t for t in then.data if t.name == "actual")
    assert str(max(actual_then.x))[:4] == "1989" and str(max(actual_now.x))[:4] == "2009"
    assert {r["series_id"] for r in rows} == set(SERIES) and all("rmse" in r for r in rows)
    with db.connection() as conn:
        assert data.model_options(conn, "realgdp")[0]["value"] == version_id
        assert get_version(conn, version_id).status == "serving"


def test_the_app_serves_its_pages_and_local_assets(served):
    _, _, app = served
    client = app.server.test_client()
    assert client.get("/health").data == b"OK"
    for path in ("/", "/drift", "/serving", "/rollouts"):
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
    header, rows, *_ = views.drift_view()
    assert header.startswith("no drift report yet") and rows == []
    with db.connection() as conn:
        check(conn, DriftPolicy.load())
        report = check(conn, DriftPolicy.load())
    header, rows, figure, histograms, accuracy = views.drift_view("unemp", "volatility")
    assert header.startswith(f"report {report['id']}")
    assert {(r["series"], r["feature"]) for r in rows} >= {("realgdp", "value"), ("unemp", "volatility")}
    score = next(t for t in figure.data if t.name == "score")
    assert len(score.y) == 2 and figure.layout.title.text.startswith("unemp volatility")
    # the histograms show exactly the windows the check compared (40 training periods, 12 recent)
    [compared] = [f for f in report["series"]["unemp"]["input"] if f["feature"] == "volatility"]
    reference, current = (next(t for t in histograms.data if t.name == n) for n in ("reference", "current"))
    assert list(reference.x) == compared["reference"] and list(current.x) == compared["current"]
    assert (len(reference.x), len(current.x)) == (compared["reference_n"], compared["current_n"])
    # realized error per check against the backtest's RMSE (the model was fit on data to 2005)
    realized = next(t for t in accuracy.data if t.name == "realized RMSE")
    expected = next(t for t in accuracy.data if t.name == "backtest RMSE")
    assert len(realized.y) == 2 and realized.y[0] == report["series"]["unemp"]["accuracy"]["realized_rmse"]
    assert expected.y[0] == report["series"]["unemp"]["accuracy"]["backtest_rmse"]


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
    assert not any(t.name == "cold start" for t in latency.data)


def test_serving_charts_mark_cold_starts_and_promotions(served):
    db, _, _ = served
    controller = blue_serving(db)
    rollout_id = controller.start("inference", "pefm-inference-green", RolloutSpec())
    controller.promote(rollout_id)
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO revision_starts (service, revision, start_to_ready_s)
               VALUES ('inference', 'pefm-inference-green', 0.41)"""
        )
    latency, rate, _ = views.serving_view()
    for figure in (latency, rate):
        [start] = [t for t in figure.data if t.name == "cold start"]
        [promoted] = [t for t in figure.data if t.name == "promote"]
        assert list(start.text) == ["pefm-inference-green ready in 0.41 s"]
        assert promoted.text[0].startswith("promote pefm-inference-green")
        assert len(figure.layout.shapes) == 2  # one line per marker


def test_rollouts_page_shows_the_split_over_time_checks_and_events(served):
    db, _, _ = served
    assert views.rollout_view(None)[2].startswith("no rollout yet")
    controller = blue_serving(db)
    spec = RolloutSpec()
    rollout_id = controller.start("inference", "pefm-inference-green", spec)
    with db.connection() as conn:  # an analysed step at 25%, stored as the controller stores one
        checks = [c.judge(v) for c, v in zip(spec.checks, [0.995, 900.0], strict=False)]
        conn.execute("UPDATE rollouts SET phase = 'Progressing', step = 0, weight = 25 WHERE id = %s", (rollout_id,))
        conn.execute(
            """INSERT INTO rollout_events (rollout_id, action, phase, step, weight, failed_checks, reason, checks)
               VALUES (%s, 'hold', 'Progressing', 0, 25, 1, 'check failed', %s)""",
            (rollout_id, Jsonb(checks)),
        )
    controller.pause(rollout_id)
    options, chosen, weights, traffic, rows, log = views.rollout_view(None)
    assert chosen == rollout_id and options[0]["value"] == rollout_id
    assert weights == "Paused: pefm-inference-blue (blue) 75% / pefm-inference-green (green) 25%"
    blue, green = traffic.data
    assert list(green.y) == [e["green %"] for e in reversed(log)] and list(blue.y) == [100 - w for w in green.y]
    assert [(r["check"], r["result"]) for r in rows] == [("success-rate", "pass"), ("latency-p99", "FAIL")]
    assert [e["action"] for e in log][:2] == ["pause", "hold"]


def test_rollout_buttons_refuse_without_an_api_or_a_rollout(served, monkeypatch):
    monkeypatch.delenv("PEFM_ROLLOUT_API_URL", raising=False)
    get_settings.cache_clear()
    assert views.rollout_action(1, "promote", "t") == (False, "no rollout API configured (PEFM_ROLLOUT_API_URL)")
    monkeypatch.setenv("PEFM_ROLLOUT_API_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    assert views.rollout_action(None, "promote", "t") == (False, "no rollout chosen")
    done, message = views.rollout_action(1, "promote", "t")
    assert not done and message.startswith("rollout API unreachable")
    get_settings.cache_clear()


def test_forecasts_compare_two_versions_with_their_backtests(served):
    db, serving_id, _ = served
    with db.connection() as conn:
        candidate, _ = train(
            conn, "naive", SERIES, as_of=datetime(2005, 1, 1, tzinfo=UTC), spec=BacktestSpec(windows=8)
        )
        version = get_version(conn, serving_id)
    chart, compared, rows = views.forecast_view("realgdp", serving_id, 4, None, candidate.id)
    assert chart.layout.title.text.startswith(f"realgdp: {serving_id} (serving)")
    assert compared.layout.title.text.startswith(f"realgdp: {candidate.id} (candidate)")
    backtest = next(t for t in chart.data if t.name == "backtest forecast")
    stored = data.backtest_forecasts(version, "realgdp")
    assert len(stored) == 8 and list(backtest.y) == list(stored["mean"])
    assert list(backtest.customdata) == list(stored["cutoff"].dt.strftime("%Y-%m-%d"))
    assert [(r["series_id"], r["version"]) for r in rows] == [
        ("realgdp", serving_id),
        ("realgdp", candidate.id),
        ("unemp", serving_id),
        ("unemp", candidate.id),
    ]
