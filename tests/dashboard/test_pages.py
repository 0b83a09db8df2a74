"""The dashboard's data functions, figure builders and page renderers, on a real database."""

import json
import re
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from dashboard import data, views
from dashboard.app import HERE, create_app
from dashboard.components.figures import Panel, forecast_panels, number, period_label
from dashboard.demo import blue_serving
from dashboard.state import ForecastView
from pefm.config import get_settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.data.transforms import model_space_unit
from pefm.drift.policy import DriftPolicy
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.rollout.spec import RolloutSpec
from pefm.storage.model_versions import get_version, read_precomputed
from pefm.storage.observations import write_observations
from pefm.storage.series import get_series

SERIES = ["realgdp", "unemp"]
AS_OF = datetime(2005, 1, 1, tzinfo=UTC)
SPEC = BacktestSpec(h=4, windows=8)


@pytest.fixture
def served(db):
    with db.connection() as conn:
        load_bundled(conn, bundled([*SERIES, "aaa"]))  # aaa: loaded, never trained on
        version, _ = train(conn, "ar", SERIES, as_of=AS_OF, spec=SPEC)
        promote(conn, version.id)
    app = create_app(db)
    return db, version.id, app


@pytest.fixture
def current(served):
    """A candidate trained on all the data: its stored forecast starts after the last observation."""
    db, _, _ = served
    with db.connection() as conn:
        version, _ = train(conn, "ar", SERIES, spec=SPEC)
    return version


def panel_traces(figure, row: int) -> dict:
    """The named traces of one panel (row) of the Forecasts chart."""
    axis = "x" if row == 1 else f"x{row}"
    return {t.name: t for t in figure.data if t.xaxis == axis and t.name}


def test_overview_counts_series_and_reports_no_traffic_honestly(served):
    db, version_id, _ = served
    with db.connection() as conn:
        summary = data.overview(conn)
    assert summary["series"] == 3 and summary["serving"]["id"] == version_id
    # freshness per frequency: the quarterly panel ends in 2009, the monthly series in 2018
    newest = {g["frequency"]: (g["series"], f"{g['newest']:%Y}") for g in summary["freshness"]}
    assert newest == {"monthly": (1, "2018"), "quarterly": (2, "2009")}
    assert summary["requests_per_s"] == 0 and summary["share_2xx"] is None and summary["rollout"] is None
    assert summary["source"] == "request log" and summary["drift"] is None
    cards = views.overview_cards(summary)
    assert len(cards) == 7
    values = {
        c.children.children.children.children[0].children: c.children.children.children.children[1].children
        for c in cards
    }
    assert values["Serving model"] == version_id and values["Inference answers"] == "2xx -"
    assert values["Drift"] == "no check yet" and values["Rollout"] == "none"
    assert [c.children.href for c in cards] == [
        "/models",
        "/forecasts",
        "/serving",
        "/serving",
        "/serving",
        "/drift",
        "/rollouts",
    ]


def test_overview_traffic_is_the_inference_service_alone_by_answer_class(served):
    """A slow drift check on the monitor must not move inference's p95; 4xx answers show as such."""
    db, _, _ = served
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
               SELECT 'inference', 'pefm-inference-blue', '/v1/forecast', 'POST',
                      CASE WHEN i <= 28 THEN 422 WHEN i <= 30 THEN 500 ELSE 200 END, 5
               FROM generate_series(1, 100) AS i"""
        )
        conn.execute(
            """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
               VALUES ('monitor', 'pefm-monitor-local', '/v1/drift/check', 'POST', 200, 5392)"""
        )
        summary = data.overview(conn)
    assert (summary["share_2xx"], summary["share_4xx"], summary["share_5xx"]) == pytest.approx((0.70, 0.28, 0.02))
    assert summary["p95_ms"] == 5.0 and summary["requests_per_s"] == pytest.approx(100 / 900)


def test_forecast_panels_nest_the_bands_and_flag_outcomes_outside_them():
    ds = pd.date_range("2005-01-01", periods=4, freq="QS")
    forecast = pd.DataFrame(
        {"ds": ds, "mean": [1.0] * 4, "lo-80": [0.5] * 4, "hi-80": [1.5] * 4, "lo-95": [0.0] * 4, "hi-95": [2.0] * 4}
    )
    history = pd.Series([1.0, 1.2], index=pd.date_range("2004-07-01", periods=2, freq="QS"))
    outcomes = pd.Series([1.1, 5.0, 0.9, -3.0], index=ds)
    panel = Panel("s", "s: a series", "percent", "Q", history, forecast, "v1 (serving)", outcomes=outcomes)
    figure = forecast_panels([panel], "t", uirevision="s|level")
    names = [t.name for t in figure.data]
    assert names.count("95% interval") == 1 and names.count("80% interval") == 1
    [outside] = [t for t in figure.data if t.name == "outside 95%"]
    assert list(outside.y) == [5.0, -3.0]
    [mean] = [t for t in figure.data if t.name == "forecast"]
    assert mean.customdata[0] == "mean 1, 80%: 0.5 to 1.5, 95%: 0 to 2"  # the mean and both bounds
    assert figure.layout.xaxis.hoverformat == "%Y Q%q" and figure.layout.yaxis.title.text == "percent"
    assert figure.layout.uirevision == "s|level"


def test_numbers_and_periods_read_as_an_analyst_reads_them():
    values = (13059.4567, 123.456, 6.977574, 0.0123456, -0.5, float("nan"))
    assert [number(v) for v in values] == ["13,059", "123", "6.98", "0.0123", "-0.5", "-"]
    assert period_label(pd.Timestamp("2012-01-01"), "Q") == "2012Q1"
    assert period_label(pd.Timestamp("2012-04-01"), "M") == "Apr 2012"


def test_a_view_survives_its_url_and_a_bad_link_falls_back_to_defaults():
    view = ForecastView(series=("realgdp", "unemp"), version="v1", horizon=4, as_of="1990-06-15", space="model")
    fragment = view.to_fragment()
    assert fragment == "#series=realgdp,unemp&version=v1&h=4&as_of=1990-06-15&space=model"
    assert ForecastView.from_fragment(fragment) == view
    assert ForecastView().to_fragment() == ""
    bad = ForecastView.from_fragment("#series=,a,a,b,c,d,e&h=99&as_of=1990-13-45&space=log&version=")
    assert bad == ForecastView(series=("a", "b", "c", "d"))  # four at most, no duplicates; the rest defaults
    # a page's controls come from the client too: whatever it sends is checked the same way
    sent = ForecastView.checked({"a": 1}, "v\x00", 7, "010" + "0" * 5000, "zzzz", "log")
    assert sent == ForecastView()
    assert ForecastView.checked(["realgdp", 5, "Bad Id"], "v1", None, 12, "2001-02-03T00:00", "model") == ForecastView(
        series=("realgdp",), version="v1", horizon=12, as_of="2001-02-03", space="model"
    )


def test_forecasts_draw_in_the_series_units_or_in_model_space(served, current):
    db, _, _ = served
    version_id = current.id
    level, rows = views.forecast_view(ForecastView(series=("realgdp",), version=version_id, horizon=4))
    model, _ = views.forecast_view(ForecastView(series=("realgdp",), version=version_id, horizon=4, space="model"))
    with db.connection() as conn:
        stored = read_precomputed(conn, version_id)["rows"]
        unit = get_series(conn, "realgdp").unit
    for figure, space in ((level, "level"), (model, "model")):
        mean = panel_traces(figure, 1)["forecast"]
        expected = [r["mean"] for r in stored if r["series_id"] == "realgdp" and r["space"] == space][:4]
        assert list(mean.y) == pytest.approx(expected)
        assert str(mean.x[0])[:10] == "2009-10-01"  # the quarter after the last one observed
    assert level.layout.yaxis.title.text == unit
    assert model.layout.yaxis.title.text == model_space_unit(unit, "log_diff_ann")
    assert level.layout.title.text == f"latest data · {version_id} (candidate)"
    assert max(panel_traces(level, 1)["actual"].y) > 10_000  # billions of dollars, not growth rates
    # the accuracy table: the version's backtest of the series per step, then pooled
    assert [r["h"] for r in rows] == ["1", "2", "3", "4", "all"]
    assert {"rmse_ratio_naive", "dm_p_naive", "coverage-80", "weak"} <= set(rows[0])
    assert rows[-1]["dm_p_naive"] is None  # a DM test is per step


def test_several_series_draw_as_small_multiples_and_an_uncovered_one_says_why(served, current):
    db, version_id, _ = served
    figure, rows = views.forecast_view(ForecastView(series=("realgdp", "unemp", "aaa"), version=current.id))
    with db.connection() as conn:
        catalog = {s.id: s for s in data.catalog(conn)}
        options = {o["value"]: o for o in data.series_options(list(catalog.values()))}
    titles = [a.text for a in figure.layout.annotations]
    assert titles[:3] == [f"{s}: {catalog[s].name}" for s in ("realgdp", "unemp", "aaa")]
    assert "forecast" in panel_traces(figure, 1) and "forecast" in panel_traces(figure, 2)
    assert "forecast" not in panel_traces(figure, 3) and "actual" in panel_traces(figure, 3)
    [why] = [a.text for a in figure.layout.annotations if a.text.startswith("no forecast")]
    assert why == (
        f"no forecast: the serving model {version_id} was trained without it (data as of 2005-01-01); "
        "the next training includes it"
    )
    assert {r["series_id"] for r in rows} == set(SERIES)
    assert catalog["aaa"].version is None and catalog["realgdp"].version == version_id
    assert options["aaa"]["label"].endswith("(no forecast)") and options["aaa"]["title"] == catalog["aaa"].why_not


def test_an_intraday_series_is_not_promised_to_the_next_training(served):
    """Training never takes intraday series (README): "the next training includes it" was false."""
    from pefm.data.frequency import Frequency
    from pefm.storage.observations import write_observations
    from pefm.storage.series import SeriesMeta, upsert_series

    db, _, _ = served
    stamps = pd.date_range("2026-03-02 14:30", periods=30, freq="1min", tz="UTC")
    with db.connection() as conn:
        upsert_series(conn, SeriesMeta(id="spy.1min", name="SPY one-minute closes", frequency=Frequency.MINUTE))
        frame = pd.DataFrame({"series_id": "spy.1min", "ts": stamps, "value": range(30)})
        write_observations(conn, frame, vintage=datetime(2026, 3, 3, tzinfo=UTC))
        why = {s.id: s.why_not for s in data.catalog(conn)}
    assert why["spy.1min"] == "intraday series are stored and served as data; the models do not forecast them yet"
    assert why["aaa"].endswith("the next training includes it")


def test_as_of_shows_the_forecast_made_from_that_origin_and_the_outcomes_since(served):
    """Known on 2003-02-15: realgdp up to 2002Q4 (each quarter is stored when it ends), the origin
    of a backtest window whose forecast the registry kept; the outcomes follow it."""
    db, version_id, _ = served
    view = ForecastView(series=("realgdp",), version=version_id, horizon=4, as_of="2003-02-15", space="model")
    figure, _ = views.forecast_view(view)
    traces = panel_traces(figure, 1)
    assert str(max(traces["actual"].x))[:10] == "2002-10-01"
    with db.connection() as conn:
        backtest = get_version(conn, version_id).backtest["forecasts"]["realgdp"]
    stored = [r for r in backtest if r["cutoff"] == "2002-10-01"]
    assert list(traces["forecast"].y) == pytest.approx([r["mean"] for r in stored])
    assert [str(x)[:10] for x in traces["outcome"].x] == ["2003-01-01", "2003-04-01", "2003-07-01", "2003-10-01"]
    assert list(traces["outcome"].y) == pytest.approx([r["y"] for r in stored])
    [origin] = figure.layout.shapes
    assert str(origin.x0)[:10] == "2002-10-01"
    assert any(a.text == "origin 2002Q4" for a in figure.layout.annotations)
    # more steps than the backtest kept (it has h=4): those four, said so, rather than none
    figure, _ = views.forecast_view(replace(view, horizon=6))
    assert list(panel_traces(figure, 1)["forecast"].y) == pytest.approx([r["mean"] for r in stored])
    notes = [a.text for a in figure.layout.annotations if "steps asked" in a.text]
    assert notes == ["4 of the 6 steps asked: the registry keeps 4 from past origins"]
    # a moment with no stored forecast and no inference API to ask: the origin, and why nothing is drawn
    figure, _ = views.forecast_view(replace(view, as_of="1990-06-15"))
    notes = [a.text for a in figure.layout.annotations if a.text.startswith("no forecast")]
    assert notes == [  # it had said the inference API computes it, with none configured
        "no forecast from this origin: not kept by the registry, and no inference API (PEFM_ROUTER_URL) to compute it"
    ]
    assert any(a.text == "origin 1990Q1" for a in figure.layout.annotations)
    # before the series began: nothing known, and it says so
    figure, _ = views.forecast_view(replace(view, as_of="1940-01-01"))
    notes = [a.text for a in figure.layout.annotations if a.text.startswith("no forecast")]
    assert notes == ["no forecast from this origin: nothing of realgdp was known on 1940-01-01"]


def test_the_csv_carries_its_metadata_and_an_uncovered_series_gives_an_empty_table(served, current):
    frame = views.forecast_csv(ForecastView(series=("realgdp", "aaa"), version=current.id, horizon=3))
    assert list(frame.columns[:9]) == [
        "series_id",
        "model_version",
        "space",
        "unit",
        "transform",
        "data_as_of",
        "origin",
        "ds",
        "mean",
    ]
    assert len(frame) == 3 and set(frame["series_id"]) == {"realgdp"}
    assert frame["data_as_of"].iloc[0] == f"{current.data_as_of:%Y-%m-%d}" and frame["space"].iloc[0] == "level"
    assert frame["transform"].iloc[0] == "none"  # level values: the stored units
    empty = views.forecast_csv(ForecastView(series=("aaa",)))
    assert empty.empty and "mean" in empty.columns


def test_the_app_serves_its_pages_and_local_assets(served):
    _, _, app = served
    client = app.server.test_client()
    assert client.get("/health").data == b"OK"
    for path in ("/", "/models", "/drift", "/serving", "/rollouts"):
        assert client.get(path).status_code == 200
    page = client.get("/forecasts")
    assert page.status_code == 200 and b"PEFM" in page.data
    assert b"cdn." not in page.data  # Dash's JS and Bootstrap come from this server
    assert client.get("/assets/bootstrap.min.css").status_code == 200
    assert b"plotly-cartesian.min.js" in page.data  # plotly.js, the cartesian bundle, from here too
    layout = client.get("/_dash-layout").get_json()
    assert "refresh" in str(layout)


def test_the_vendored_plotly_bundle_is_the_version_the_plotly_package_targets():
    """The figures are built by the Python ``plotly`` package for one plotly.js version; the
    cartesian bundle served in its place must be that version (upgrade both together)."""
    from plotly.offline import get_plotlyjs_version

    header = (HERE / "assets" / "plotly-cartesian.min.js").read_text()[:200]
    assert f"plotly.js (cartesian - minified) v{get_plotlyjs_version()}" in header


def test_drift_page_lists_the_latest_report_and_a_score_history(served):
    from pefm.drift.monitor import check

    db, _, _ = served
    header, rows, options, _, score, _, accuracy, legend = views.drift_view()
    assert header.startswith("no drift report yet") and rows == [] and options == []
    assert score.layout.annotations[0].text == "no drift check of this signal yet"
    assert [item.children for item in legend[:2]] == ["value", DriftPolicy.load().signals["value"]]
    with db.connection() as conn:
        check(conn, DriftPolicy.load())
        report = check(conn, DriftPolicy.load())
    header, rows, options, chosen, figure, histograms, accuracy, _ = views.drift_view("unemp|volatility")
    assert chosen == "unemp|volatility" and {"label": "unemp · volatility", "value": chosen} in options
    assert header.startswith(f"report {report['id']}")
    assert {(r["series"], r["feature"]) for r in rows} >= {("realgdp", "value"), ("unemp", "volatility")}
    score = next(t for t in figure.data if t.name == "score")
    assert len(score.y) == 2 and figure.layout.title.text.startswith("unemp volatility")
    assert figure.layout.yaxis.title.text == "normed Wasserstein distance"
    assert figure.layout.xaxis.hoverformat == "%Y-%m-%d %H:%M"  # checks to the minute, not milliseconds
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
            """INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)
               SELECT now() - interval '30 minutes', 'inference', r, '/v1/forecast', 'POST',
                      CASE WHEN i % 10 = 0 THEN 500 WHEN i % 10 = 1 THEN 404 ELSE 200 END, i
               FROM unnest(ARRAY['pefm-inference-blue', 'pefm-inference-green']) AS r, generate_series(1, 100) AS i"""
        )
    latency, rate, totals = views.serving_view(60)
    assert {t.name for t in latency.data} >= {"blue p99", "green p50"}  # short labels; hovers name the revision
    assert {(t["label"], t["revision"], t["requests"], t["errors_4xx"], t["errors_5xx"]) for t in totals} == {
        ("blue", "pefm-inference-blue", 100, 10, 10),
        ("green", "pefm-inference-green", 100, 10, 10),
    }
    p99 = next(t for t in latency.data if t.name == "blue p99")
    busy = [y for y in p99.y if y is not None and y == y]
    assert len(busy) == 1 and 98 <= busy[0] <= 100  # one busy minute; the others are gaps, not lines
    blue_rate = next(t for t in rate.data if t.name == "blue req/s")
    assert len(blue_rate.y) >= 60 and sorted(blue_rate.y)[:-1] == [0] * (len(blue_rate.y) - 1)  # zero-filled
    assert {t.name for t in rate.data} >= {"blue 4xx", "blue 5xx", "green 4xx"}
    assert not any(t.name == "cold start" for t in latency.data)
    assert len(views.serving_view(15)[2]) == 0  # 30 minutes ago is outside the last 15


def test_a_steady_request_rate_is_drawn_steady_to_both_ends_of_the_window(served):
    """One request a second for two hours: the first bucket (cut by the window's start) and the
    current one (just begun) were divided by a whole bucket, and drew 0.2-0.8 req/s."""
    db, _, _ = served
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)
               SELECT now() - make_interval(secs => i + 0.5), 'inference', 'pefm-inference-blue', '/v1/forecast',
                      'POST', 200, 5
               FROM generate_series(0, 7199) AS i"""
        )
        now = conn.execute("SELECT now()").fetchone()[0]  # the transaction's: the one the query reads
        for minutes, bucket in ((60, 60), (360, 300), (1440, 900)):
            frame = data.serving_latency(conn, minutes=minutes, bucket_seconds=bucket)
            # every bucket of the window is there (one revision), the one cut by its start included
            assert abs(len(frame) - minutes * 60 / bucket) <= 1, (minutes, len(frame))
            checked = 0
            for when, rate in zip(frame["bucket"], frame["rate"], strict=True):
                begins = max(when, now - timedelta(minutes=minutes))
                if begins < now - timedelta(hours=2):  # before the first request, or the bucket it falls in
                    continue
                span = (min(when + timedelta(seconds=bucket), now) - begins).total_seconds()
                if span >= 10:  # a count in a span of d seconds is d, give or take one
                    assert rate == pytest.approx(1.0, abs=1.5 / span), (minutes, when, rate)
                    checked += 1
            # the buckets within the two hours of requests, all but the current one if it has just begun
            within = min(minutes, 120) * 60 / bucket
            assert within - 2 <= checked <= within + 1, (minutes, checked)


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
    nothing = views.rollout_view(None)
    assert nothing[2].startswith("no rollout yet") and nothing[-1] == set()  # every action disabled
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
    options, chosen, weights, traffic, rows, log, allowed = views.rollout_view(None)
    assert allowed == {"promote", "resume", "rollback"}  # paused: it can be resumed, not paused again
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
    # the action comes from the client: a path of its own is not sent on to the API
    crafted = "promote/../../../flagger/event?x="
    assert views.rollout_action(1, crafted, "t") == (False, f"no action {crafted!r}")
    get_settings.cache_clear()


def test_forecasts_compare_two_versions_with_their_backtests(served):
    db, serving_id, _ = served
    with db.connection() as conn:
        candidate, _ = train(conn, "naive", SERIES, spec=SPEC)  # on all the data: its forecast is ahead
        version = get_version(conn, serving_id)
    view = ForecastView(series=("realgdp",), version=serving_id, compare=candidate.id, horizon=4, space="model")
    chart, rows = views.forecast_view(view)
    traces = panel_traces(chart, 1)
    compared = traces[f"compared: {candidate.id} (candidate)"]
    assert len(set(compared.y)) == 1  # naive: the last value at every step
    backtest = traces["backtest forecast"]
    stored = data.backtest_forecasts(version, "realgdp")
    one_step = stored[stored["ds"] == stored.groupby("cutoff")["ds"].transform("min")]  # one point per cutoff
    assert len(one_step) == 8 and list(backtest.y) == list(one_step["mean"])
    assert list(backtest.customdata) == list(one_step["cutoff"].dt.strftime("%Y-%m-%d"))
    steps = ("1", "2", "3", "4", "all")
    assert [(r["version"], r["h"]) for r in rows] == [(serving_id, h) for h in steps] + [
        (candidate.id, h) for h in steps
    ]
    naive_rows = [r for r in rows if r["version"] == candidate.id]
    assert all(r["rmse_ratio_naive"] == 1.0 and r["dm_p_naive"] in (1.0, None) for r in naive_rows)


def test_drift_shows_the_latest_check_of_the_whole_model_and_an_empty_report_says_so(served):
    """A check of some series (``pefm drift check -s``), or of a mistyped one that checks none, does
    not stand for the model on the Overview or the Drift page; a report of nothing is an empty state."""
    from pefm.drift.monitor import check

    db, _, _ = served
    with db.connection() as conn:
        whole = check(conn, DriftPolicy.load())
        subset = check(conn, DriftPolicy.load(), series=["nosuch"])
        assert subset["series"] == {}
        summary = data.overview(conn)
    assert summary["drift"]["series"] == 2 and summary["drift"]["at"] == datetime.fromisoformat(whole["created_at"])
    header, rows, options, *_ = views.drift_view()
    assert header.startswith(f"report {whole['id']} ") and rows and options
    with db.connection() as conn:
        conn.execute("DELETE FROM drift_reports WHERE id <> %s", (subset["id"],))
    header, rows, options, chosen, score, *_ = views.drift_view()
    assert header.startswith(f"report {subset['id']} ") and "checked no series" in header
    assert rows == [] and options == [] and chosen is None
    assert score.layout.annotations[0].text == "no drift check of this signal yet"


def test_after_a_promotion_the_drift_page_says_the_serving_model_is_not_checked_yet(served):
    """The latest check is of the model that served then: after a promotion it is shown, saying
    so, until the monitor checks the new one."""
    from pefm.drift.monitor import check

    db, first, _ = served
    with db.connection() as conn:
        before = check(conn, DriftPolicy.load())
        newer, _ = train(conn, "naive", SERIES, as_of=AS_OF, spec=None)
        promote(conn, newer.id)
        summary = data.overview(conn)
    assert summary["drift"]["model_version"] == first and summary["serving"]["id"] == newer.id
    assert ", of another model" in _drift_card(summary)
    header, *_ = views.drift_view()
    assert header.startswith(f"report {before['id']} ") and f"on {first}:" in header
    assert header.endswith(f"; {newer.id} serves now and has not been checked since it began serving"), header
    with db.connection() as conn:
        after = check(conn, DriftPolicy.load())
        summary = data.overview(conn)
    header, *_ = views.drift_view()
    assert header.startswith(f"report {after['id']} ") and "not been checked" not in header, header
    assert "another model" not in _drift_card(summary)


def test_the_drift_page_shows_a_request_until_a_retraining_answers_it_then_that_run(served):
    """The monitor's request waits on the page, named with its reason and the latest run that stood
    aside (not listed: a cluster adds one every quarter of an hour while a rollout lasts), until a
    retraining answers it (one that passes the gates without deploying does not); the run is listed
    above the request with its steps, candidate, why and how it ended."""
    from pefm.drift.retrain import retrain
    from pefm.storage import retrain_events

    db, _, _ = served
    note, empty = views.retraining_view()
    assert note == "" and "No retraining yet" in repr(empty)
    why = "the monitor requested a retraining: drift in unemp for 2 checks"
    with db.connection() as conn:
        retrain_events.record(conn, "request-1", retrain_events.REQUESTED, why)
    note, table = views.retraining_view()
    assert note.startswith(f"Not answered yet: {why} (") and note.endswith(" UTC)"), note
    with db.connection() as conn:  # the on-drift CronJob's run, every quarter of an hour while a rollout lasts
        retrain_events.record(conn, "aside-1", "skipped", "rollout 7 is under way")
    note, table = views.retraining_view()
    assert note.startswith(f"Not answered yet: {why} (") and note.endswith(" UTC: rollout 7 is under way"), note
    assert [(r["steps"], r["why"], r["how it ended"]) for r in table.data] == [("requested", why, "")]
    outcome = retrain(db, spec=SPEC, if_requested=True)  # what serves (AR on realgdp and unemp), again
    assert outcome["status"] in ("gates-passed", "gates-failed"), outcome
    note, table = views.retraining_view()
    if outcome["status"] == "gates-failed":  # answered: the candidate was judged
        assert note == ""
    else:  # passed but not deployed (no deployer, as --no-deploy): left for a run that deploys it
        assert note.startswith(f"Not answered yet: {why} ("), note
    run, request = table.data
    assert run["steps"] == f"start → trained → {outcome['status']}" and run["candidate"] == outcome["candidate"]
    assert run["why"].startswith("retraining ar on 2 series") and why in run["why"]
    ended = "not deployed: " if outcome["status"] == "gates-failed" else f"{outcome['candidate']} passed the gates"
    assert run["how it ended"].startswith(ended), run
    assert request["steps"] == "requested" and run["began"] >= request["began"]


def test_a_refresh_leaves_the_retraining_table_alone_until_its_rows_change(served):
    """Rebuilt on every 20-second refresh, the table went back to its first page and lost its sorting."""
    import json
    import sys

    import dash
    import plotly
    from dash import no_update

    from pefm.storage import retrain_events

    # the module as the app loaded it (imported again by its dotted name, Dash would find two /drift pages)
    page = sys.modules[next(p["module"] for p in dash.page_registry.values() if p["path"] == "/drift")]

    db, _, _ = served
    with db.connection() as conn:
        retrain_events.record(conn, "request-1", retrain_events.REQUESTED, "drift in unemp for 2 checks")
    note, table = page.update_retraining(1, None)
    shown = json.loads(json.dumps(table, cls=plotly.utils.PlotlyJSONEncoder))  # as the browser holds it
    shown["props"]["page_current"] = 1  # and as the analyst left it
    assert page.update_retraining(2, shown) == (note, no_update)
    with db.connection() as conn:
        retrain_events.record(conn, "request-2", retrain_events.REQUESTED, "drift in realgdp for 2 checks")
    note, again = page.update_retraining(3, shown)
    assert again is not no_update and len(again.data) == 2


def _drift_card(summary: dict) -> str:
    [card] = [c for c in views.overview_cards(summary) if c.children.href == "/drift"]
    return repr(card)


def test_the_latest_view_never_draws_a_forecast_of_a_period_already_observed(served):
    """The serving model was registered on data to 2004Q4; realgdp is known to 2005Q2 now. Without
    the inference API (which conditions the model on the new data), the stored forecast is drawn
    from 2005Q3 on only, and the page says it was made before the latest data."""
    db, version_id, _ = served
    with db.connection() as conn:
        conn.execute("DELETE FROM observations WHERE series_id = 'realgdp' AND ts > '2005-04-01'")
        conn.commit()
    view = ForecastView(series=("realgdp", "unemp"), version=version_id, horizon=4)
    figure, _ = views.forecast_view(view)
    realgdp, unemp = panel_traces(figure, 1), panel_traces(figure, 2)
    assert str(max(realgdp["actual"].x))[:10] == "2005-04-01"
    assert [str(x)[:10] for x in realgdp["forecast"].x] == ["2005-07-01", "2005-10-01"]
    notes = [a.text for a in figure.layout.annotations if "before the latest data" in a.text]
    assert notes == [
        f"{version_id} forecast from the data as of 2005-01-01, before the latest data: 2 step(s) already "
        "observed left out (no inference API (PEFM_ROUTER_URL) to condition it on them)",
        f"no forecast beyond the latest data: {version_id} forecast from the data as of 2005-01-01, before the "
        "latest data (no inference API (PEFM_ROUTER_URL) to condition it on them)",
    ]
    assert "forecast" not in unemp  # unemp is known to 2009: every step of it is observed
    frame = views.forecast_csv(view)
    assert list(frame["ds"]) == ["2005-07-01", "2005-10-01"] and set(frame["series_id"]) == {"realgdp"}


def test_as_of_a_date_counts_what_became_known_during_that_day(served):
    """The picker offers up to the day of the newest data: data stored at 15:00 on that day are
    known as of it."""
    db, version_id, _ = served
    frame = pd.DataFrame({"series_id": ["realgdp"], "ts": [pd.Timestamp("2009-10-01", tz="UTC")], "value": [13_000.0]})
    with db.connection() as conn:
        write_observations(conn, frame, vintage=datetime(2010, 1, 20, 15, tzinfo=UTC))
        conn.commit()
        [realgdp] = [s for s in data.catalog(conn) if s.id == "realgdp"]
    assert f"{realgdp.known_since:%Y-%m-%d}" == "2010-01-20"
    figure, _ = views.forecast_view(ForecastView(series=("realgdp",), version=version_id, as_of="2010-01-20"))
    assert str(max(panel_traces(figure, 1)["actual"].x))[:10] == "2009-10-01"
    assert any(a.text == "origin 2009Q4" for a in figure.layout.annotations)


def test_the_forecasts_zoom_is_kept_only_while_the_view_stays(served):
    _, version_id, _ = served
    view = ForecastView(series=("realgdp",), version=version_id, horizon=4, as_of="2003-02-15", space="model")
    key = views.forecast_view(view)[0].layout.uirevision
    assert views.forecast_view(view)[0].layout.uirevision == key  # a refresh
    for other in (replace(view, as_of="2004-02-15"), replace(view, horizon=8), replace(view, as_of=None)):
        assert views.forecast_view(other)[0].layout.uirevision != key, other


def test_the_serving_range_is_one_of_those_offered(served):
    """The range comes from the browser and goes into SQL: anything but an offered one is the hour."""
    db, _, _ = served
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)
               SELECT now() - ago, 'inference', 'pefm-inference-blue', '/v1/forecast', 'POST', 200, 5
               FROM unnest(ARRAY[interval '30 minutes', interval '2 days']) AS ago"""
        )
    for sent in (1.5, -5, 43200, "60", None, True):
        latency, _, totals = views.serving_view(sent)
        assert [t["requests"] for t in totals] == [1], sent  # the last hour's one request
        assert latency.layout.uirevision == "serving|60"
    assert [t["requests"] for t in views.serving_view(1440)[2]] == [1]
    assert views.serving_view(15)[2] == []


def test_a_settled_rollout_allows_no_action(served):
    """Once a later rollout has taken the service over, the controller refuses every action on the
    earlier one (its losing revision is retired): the page offers none."""
    from pefm.rollout.controller import RolloutError

    db, _, _ = served
    controller = blue_serving(db)
    first = controller.start("inference", "pefm-inference-green", RolloutSpec())
    controller.promote(first)
    assert views.rollout_view(first)[-1] == {"rollback"}  # succeeded, within its grace period
    controller.start("inference", "pefm-inference-blue", RolloutSpec())
    _, chosen, weights, *_, allowed = views.rollout_view(first)
    assert chosen == first and allowed == set() and "settled" in weights
    with pytest.raises(RolloutError, match="settled"):
        controller.rollback(first)


def test_a_token_that_cannot_be_sent_is_answered_not_raised(served, monkeypatch):
    monkeypatch.setenv("PEFM_ROLLOUT_API_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    try:
        for token in ("tökén", "line\nbreak"):
            assert views.rollout_action(1, "pause", token) == (
                False,
                "invalid token: an admin token is printable ASCII",
            )
    finally:
        get_settings.cache_clear()


def _callback(client, output: str, values: dict, changed: str):
    """POST a callback as a browser would, with ``values`` (``id.property``: value) for its inputs
    and states (the rest null; the rollout buttons' clicks: Pause clicked): a client may send any
    JSON for any of them."""
    dependency = next(d for d in client.get("/_dash-dependencies").get_json() if output in d["output"])
    buttons = [{"type": "ro-action", "action": action} for action in views.ROLLOUT_ACTIONS]

    def sent(specs):
        out = []
        for spec in specs:
            if spec["id"].startswith("{"):  # the buttons' ALL pattern
                out.append(
                    [{"id": b, "property": spec["property"], "value": int(b["action"] == "pause")} for b in buttons]
                )
            else:
                out.append({**spec, "value": values.get(f"{spec['id']}.{spec['property']}")})
        return out

    named = dependency["output"]
    outputs = [
        dict(zip(("id", "property"), o.rsplit(".", 1), strict=True))
        for o in (named[2:-2].split("...") if named.startswith("..") else [named])
    ]
    body = {
        "output": dependency["output"],
        "outputs": sent(outputs) if len(outputs) > 1 else outputs[0],
        "inputs": sent(dependency["inputs"]),
        "state": sent(dependency["state"]),
        "changedPropIds": [changed],
    }
    return client.post("/_dash-update-component", json=body)


def test_control_values_a_client_makes_up_fall_back_or_are_refused_never_a_500(served, monkeypatch):
    """A superscript two is a digit to str.isdigit() and not to int(): a link to
    /forecasts#h=\u00b2 or a rollout id of it was a 500, as were a 5,000-digit id, a token that is
    not a string, a count of actions that is not a number, a change that was no button, a fragment
    that is not a string and ticked versions that are not a list."""
    monkeypatch.setenv("PEFM_ROLLOUT_API_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    client = served[2].server.test_client()
    try:
        for fragment in ("#h=\u00b2", "#h=\u0661"):
            assert _callback(client, "fc-horizon.value", {"fc-url.hash": fragment}, "fc-url.hash").status_code == 200
        for rollout_id in ("\u00b2", "9" * 5000):
            answer = _callback(client, "ro-weights", {"ro-rollout.value": rollout_id}, "ro-rollout.value")
            assert answer.status_code == 200, rollout_id[:10]
        for output, values, changed in (  # a fragment is a string and ticks a list, if the client says so
            ("fc-horizon.value", {"fc-url.hash": 5}, "fc-url.hash"),
            ("models-table.data", {"models-url.hash": ["#compare=x"]}, "models-url.hash"),
            ("models-table.data", {"models-compare.value": 5}, "models-compare.value"),
        ):
            assert _callback(client, output, values, changed).status_code == 200, values
        pause = '{"action":"pause","type":"ro-action"}.n_clicks'
        for token, acted in ((5, 0), (["t"], 0), ("t", "x"), ("t", None)):
            values = {"ro-rollout.value": "1", "ro-token.value": token, "ro-acted.data": acted}
            answer = _callback(client, "ro-message", values, pause)
            assert answer.status_code == 200, (token, acted)
            # a token that is no string is refused before the API is asked; "t" is asked of it (port 9)
            expected = "rollout API unreachable" if token == "t" else "invalid token"
            assert expected in str(answer.get_json()), (token, acted, answer.get_json())
        values = {"ro-rollout.value": "1", "ro-token.value": "t", "ro-acted.data": 0}
        answer = _callback(client, "ro-message", values, "ro-token.value")  # says it was no button
        assert answer.status_code == 200 and "no action 'None'" in str(answer.get_json())
    finally:
        get_settings.cache_clear()


def test_the_overview_falls_back_to_the_request_log_when_prometheus_is_away(served):
    from pefm.rollout.providers import PrometheusProvider

    db, _, _ = served
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
               VALUES ('inference', 'pefm-inference-blue', '/v1/forecast', 'POST', 200, 5)"""
        )
        summary = data.overview(conn, prometheus=PrometheusProvider("http://127.0.0.1:9", timeout=2))
    assert summary["source"] == "request log (Prometheus unreachable: ConnectError)"
    assert summary["requests_per_s"] == pytest.approx(1 / 900) and summary["share_2xx"] == 1.0
    cards = views.overview_cards(summary)
    assert "from the request log (Prometheus unreachable" in str(cards[2].children.children.children.children[2])


def test_a_series_no_model_serves_names_the_command_that_exists(db):
    from typer.testing import CliRunner

    from pefm.cli import app

    with db.connection() as conn:
        load_bundled(conn, bundled(["aaa"]))
        [aaa] = data.catalog(conn)
    assert aaa.why_not == "no model serves yet: train one and promote it (pefm train, pefm models promote)"
    assert CliRunner().invoke(app, ["models", "promote", "--help"]).exit_code == 0


class Silent:
    """A TCP server that accepts connections and never answers: a service that hangs."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:  # closed
                return

    def wait_for(self, n: int, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while len(self.accepted) < n:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {n} connections came"
            time.sleep(0.02)

    def hang_up(self) -> None:
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.hang_up()
    server.server.close()


def recording(queries: list[str]) -> type[psycopg.Cursor]:
    """A cursor class that notes each query it runs (set as a connection's ``cursor_factory``)."""

    class Recording(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            queries.append(str(query))
            return super().execute(query, params, **kwargs)

    return Recording


def test_the_catalog_reads_what_serves_every_series_in_one_query_without_backtest_forecasts(served, current):
    """The catalog asked the registry per series, each time reading the serving version's whole
    backtest (a megabyte of forecasts from every origin for the bundle): a Forecasts render made 39
    such reads. Now four queries whatever the number of series, and none reads those forecasts."""
    db, version_id, _ = served
    queries = []
    with db.connection() as conn:
        conn.cursor_factory = recording(queries)
        try:
            catalog = {s.id: s for s in data.catalog(conn)}
            assert len(queries) == 4 and len(catalog) == 3, queries
            options = data.model_options(conn, catalog["realgdp"])
        finally:
            conn.cursor_factory = psycopg.Cursor
    assert all("backtest" not in q or "backtest - 'forecasts'" in q for q in queries), queries
    assert (catalog["realgdp"].version, catalog["unemp"].version, catalog["aaa"].version) == (
        version_id,
        version_id,
        None,
    )
    assert [o["value"] for o in options] == [version_id, current.id]  # the serving one first


def test_no_connection_waits_in_a_transaction_while_the_inference_api_is_asked(served, silent, monkeypatch):
    """The latest view (up to 10 s) and an as-of one (up to 120 s) asked the API inside the page's
    connection: it sat idle in transaction, holding a snapshot and one of the pool's connections."""
    from dashboard import context

    db, version_id, _ = served
    monkeypatch.setenv("PEFM_ROUTER_URL", silent.url)
    monkeypatch.setattr(context, "RETRY_S", 0.0)  # the second view asks the API that failed the first
    get_settings.cache_clear()
    seen, drawn = [], []
    try:
        for n, view in enumerate(
            (
                ForecastView(series=("realgdp",), version=version_id),
                ForecastView(series=("realgdp",), as_of="1990-06-15"),
            ),
            start=1,
        ):
            worker = threading.Thread(target=lambda v=view: drawn.append(views.forecast_view(v)[0]))
            worker.start()
            silent.wait_for(n)  # the API is being asked
            with psycopg.connect(db.url) as conn:
                seen += conn.execute(
                    "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            silent.hang_up()
            worker.join(30)
    finally:
        get_settings.cache_clear()
    assert ("idle",) in seen and ("idle in transaction",) not in seen, seen
    notes = [a.text for figure in drawn for a in figure.layout.annotations]
    assert any("the inference API did not answer" in n for n in notes), notes
    assert len(drawn) == 2


def test_the_drift_page_draws_the_report_its_table_shows_and_marks_checks_of_some_series(served):
    """The histograms came from the newest report holding the series, a check of some series
    (``pefm drift check -s``) included, under the table of the latest whole check; the score over
    time drew both kinds alike. The accuracy chart's threshold line was always empty (accuracy
    drifts by a p-value, its threshold is None): the checks that drifted are marked instead."""
    from pefm.drift.monitor import check

    db, _, _ = served
    with db.connection() as conn:
        whole = check(conn, DriftPolicy.load())
        part = check(conn, DriftPolicy.load(), series=["unemp"])
        conn.execute(  # the later check of unemp alone compared other values
            """UPDATE drift_reports SET series = jsonb_set(series, '{unemp,input}',
                   (SELECT jsonb_agg(f || '{"reference": [1, 2, 3]}')
                    FROM jsonb_array_elements(series -> 'unemp' -> 'input') f))
               WHERE id = %s""",
            (part["id"],),
        )
        conn.execute(
            "UPDATE drift_reports SET series = jsonb_set(series, '{unemp,accuracy,drifted}', 'true') WHERE id = %s",
            (whole["id"],),
        )
    header, _, _, _, score, histograms, accuracy, _ = views.drift_view("unemp|volatility")
    assert header.startswith(f"report {whole['id']} ")
    [compared] = [f for f in whole["series"]["unemp"]["input"] if f["feature"] == "volatility"]
    assert list(next(t for t in histograms.data if t.name == "reference").x) == compared["reference"]
    line = next(t for t in score.data if t.name == "score")
    assert list(line.marker.symbol) == ["circle", "circle-open"]
    assert list(line.customdata) == ["the whole model", "some series only"]
    assert [t.name for t in accuracy.data] == ["realized RMSE", "backtest RMSE", "accuracy drifted"]
    realized, drifted = accuracy.data[0], accuracy.data[2]
    expected = whole["series"]["unemp"]["accuracy"]
    assert list(realized.customdata[0][:2]) == [expected["p_value"], expected["alpha"]]
    assert "alpha" in realized.hovertemplate
    with db.connection() as conn:
        flags = [
            r[0]
            for r in conn.execute(
                "SELECT (series #>> '{unemp,accuracy,drifted}')::boolean FROM drift_reports ORDER BY id"
            )
        ]
    assert flags[0] and list(drifted.x) == [x for x, flag in zip(realized.x, flags, strict=True) if flag]


def test_the_csv_gives_the_compared_versions_forecast_too(served, current):
    """Download CSV gives what is drawn: the compared version's forecast had been left out."""
    db, _, _ = served
    with db.connection() as conn:
        naive, _ = train(conn, "naive", SERIES, spec=None)  # on all the data, as current: both forecasts ahead
        stored = data.forecast(conn, naive.id, "realgdp", 3, "level")
    frame = views.forecast_csv(ForecastView(series=("realgdp",), version=current.id, compare=naive.id, horizon=3))
    assert list(frame["model_version"]) == [current.id] * 3 + [naive.id] * 3
    compared = frame[frame["model_version"] == naive.id]
    assert list(compared["mean"]) == list(stored["mean"]) and set(compared["series_id"]) == {"realgdp"}


def test_a_prometheus_that_does_not_answer_is_not_asked_again_for_a_minute(served, silent, monkeypatch):
    """Every Overview refresh waited for Prometheus's whole timeout while it was away."""
    from dashboard import context
    from pefm.rollout.providers import PrometheusProvider

    db, _, _ = served
    away = PrometheusProvider(silent.url, timeout=0.5)
    with db.connection() as conn:
        for _ in range(2):
            summary = data.overview(conn, prometheus=away)
            assert summary["source"] == "request log (Prometheus unreachable: ReadTimeout)"
        assert len(silent.accepted) == 1  # the first refresh waited for it, the second did not ask
        monkeypatch.setattr(context, "RETRY_S", 0.0)
        data.overview(conn, prometheus=away)
    assert len(silent.accepted) == 2  # asked again once the minute is over


def test_an_mlflow_that_does_not_answer_is_not_asked_again_for_a_minute(served, silent, monkeypatch):
    """Every Models refresh waited the MLflow timeout (2 s) per card shown while it was away."""
    _, version_id, _ = served
    monkeypatch.setenv("PEFM_MLFLOW_TRACKING_URI", silent.url)
    get_settings.cache_clear()
    try:
        cards = [str(views.version_card(version_id)) for _ in range(2)]
    finally:
        get_settings.cache_clear()
    assert all("unreachable (ReadTimeout)" in card for card in cards)
    assert len(silent.accepted) == 1  # the first card waited for it, the second did not ask


def test_a_database_that_does_not_answer_opens_the_alert_and_leaves_the_page(served):
    """Each callback was a 500 after the pool's timeout and the page silently kept what it showed."""
    from pefm.storage.database import Database

    db, _, _ = served
    with Database("postgresql://pefm@127.0.0.1:9/nothing", timeout=1) as down:
        client = create_app(down).server.test_client()
        for output in ("overview-cards.children", "db-alert.is_open"):
            answer = _callback(client, output, {}, "refresh.n_intervals")
            assert answer.status_code == 200, output
            alert = answer.get_json()["sideUpdate"]["db-alert"]
            assert alert["is_open"] is True and alert["children"].startswith(
                "The database does not answer (PoolTimeout)"
            )
    answer = _callback(create_app(db).server.test_client(), "db-alert.is_open", {}, "refresh.n_intervals")
    assert answer.get_json()["response"] == {"db-alert": {"is_open": False}}  # it answers again: closed


def test_the_as_of_picker_starts_when_the_first_data_became_known(served):
    """realgdp's first quarter, dated 1959-01-01, became known on its first vintage: an as-of date
    before then has no data."""
    db, _, app = served
    with db.connection() as conn:
        first_ts, first_vintage = conn.execute(
            "SELECT min(ts), min(vintage) FROM all_observations WHERE series_id = 'realgdp'"
        ).fetchone()
    assert first_vintage.date() > first_ts.date()
    answer = _callback(app.server.test_client(), "fc-as-of.min", {"fc-url.hash": "#series=realgdp"}, "fc-url.hash")
    assert answer.get_json()["response"]["fc-as-of"]["min"] == f"{first_vintage:%Y-%m-%d}"


def test_the_latest_forecast_is_asked_of_the_api_again_only_once_data_changed(served, monkeypatch, tmp_path):
    """Every open Forecasts page asked the inference API for each drawn series at every 20-second
    refresh: traffic the Overview, the request log and a canary's analysis counted as users'. An
    answer is kept for a while at most (one asked before the replica re-conditioned is of old data).
    The inference function runs as a real process; its own request counter says how often it was asked."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.functions.conftest import start_function

    db, version_id, _ = served
    running = start_function("inference", db.url, tmp_path, PEFM_MODEL_VERSION=version_id)

    def asked() -> int:
        metrics = httpx.get(f"{running.url}/metrics", timeout=30).text
        return sum(
            s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.name == "pefm_requests_total" and s.labels.get("route") == "/v1/forecast"
        )

    monkeypatch.setenv("PEFM_ROUTER_URL", running.url)
    monkeypatch.setattr(data, "_ANSWERED", type(data._ANSWERED)())
    get_settings.cache_clear()
    view = ForecastView(series=("realgdp",), version=version_id)
    try:
        for _ in range(3):  # three refreshes
            figure, _ = views.forecast_view(view)
        assert asked() == 1
        assert not [a.text for a in figure.layout.annotations if "before the latest data" in a.text]  # its answer
        with db.connection() as conn:  # new data of another series: a group's members condition on it
            rows = pd.DataFrame([{"series_id": "unemp", "ts": pd.Timestamp("2010-01-01"), "value": 9.9}])
            write_observations(conn, rows)
        for _ in range(2):
            views.forecast_view(view)
        assert asked() == 2
        monkeypatch.setattr(data, "ANSWER_SECONDS", 0.0)  # kept for a while at most: asked again after it
        views.forecast_view(view)
        assert asked() == 3
    finally:
        get_settings.cache_clear()
        running.stop()


def test_a_hung_inference_api_holds_one_render_seconds_and_the_next_not_at_all(served, silent, monkeypatch):
    """With ``PEFM_ROUTER_URL`` at a router that accepts and never answers, each series was asked in
    turn for 10 s (120 s as of a date), at every render: a worker thread and the page held for
    minutes. Now a render asks its series at once by one deadline, and the API that did not answer
    is not asked again for a minute; an as-of view shows the forecast as not computed yet (and its
    wait past the deadline does not stop the latest forecasts being asked)."""
    from dashboard import context

    _, version_id, _ = served
    monkeypatch.setenv("PEFM_ROUTER_URL", silent.url)
    get_settings.cache_clear()
    latest = ForecastView(series=tuple(SERIES), version=version_id)
    try:
        start = time.monotonic()
        views.forecast_view(latest)
        took = time.monotonic() - start
        figure, _ = views.forecast_view(latest)  # the next render
        # the render's deadline (data.ASK_SECONDS) is the requirement; the margin is for a loaded
        # machine, well under the series asked one after the other (10 s each)
        assert took < data.ASK_SECONDS + 5, took
        assert len(silent.accepted) == len(SERIES)  # asked once each, at the first render only
        notes = [a.text for a in figure.layout.annotations]
        assert sum("the inference API did not answer lately (ReadTimeout)" in n for n in notes) == 2, notes
        monkeypatch.setattr(context, "_failures", {})  # a minute later: as of a date, asked again
        start = time.monotonic()
        figure, _ = views.forecast_view(replace(latest, as_of="1990-06-15"))
        assert time.monotonic() - start < data.ASK_SECONDS + 5  # by the render's deadline, not 120 s a series
        # an estimate that outlasts the render is no sign the API is away: the latest are asked still
        assert context.recent_failure(silent.url) is None
    finally:
        get_settings.cache_clear()
    notes = [a.text for a in figure.layout.annotations if a.text.startswith("no forecast")]
    assert len(notes) == 2 and all("not computed yet: the inference API computes it" in n for n in notes), notes


def test_an_as_of_forecast_kept_in_model_space_only_says_so_in_the_level_view(served):
    """The registry keeps the backtest's forecasts in model space: the default (level) view drew
    nothing, saying the inference API computes it while no API was configured."""
    _, version_id, _ = served
    view = ForecastView(series=("realgdp",), version=version_id, horizon=4, as_of="2003-02-15", space="level")
    figure, _ = views.forecast_view(view)
    notes = [a.text for a in figure.layout.annotations if a.text.startswith("no forecast")]
    assert notes == [
        "no forecast from this origin: not kept by the registry, and no inference API (PEFM_ROUTER_URL) to "
        "compute it; the registry keeps it in model space: choose model space to see it"
    ]
    figure, _ = views.forecast_view(replace(view, space="model"))
    assert "forecast" in panel_traces(figure, 1)


HOSTILE_NAME = '<a href="https://evil.example/login">Session expired - click here</a>'
HOSTILE_UNIT = '<b style="font-size:30px">units</b> & more'


def hostile_series(db) -> None:
    """realgdp renamed with HTML in its name and unit, as anyone who may write the catalog can."""
    with db.connection() as conn:
        conn.execute("UPDATE series SET name = %s, unit = %s WHERE id = 'realgdp'", (HOSTILE_NAME, HOSTILE_UNIT))


def test_html_in_a_series_name_and_unit_is_drawn_as_text(served):
    """Plotly reads HTML in chart text: the name became a live link in the panel's title."""
    db, version_id, _ = served
    hostile_series(db)
    figure, _ = views.forecast_view(ForecastView(series=("realgdp",), version=version_id))
    text = figure.to_json()
    assert "<a " not in text and "<b " not in text
    [title] = [a.text for a in figure.layout.annotations if "realgdp" in a.text]
    assert title == 'realgdp: &lt;a href="https://evil.example/login"&gt;Session expired - click here&lt;/a&gt;'
    assert figure.layout.yaxis.title.text == '&lt;b style="font-size:30px"&gt;units&lt;/b&gt; &amp; more'


def test_html_in_a_series_name_is_drawn_as_text_by_plotly_in_chromium(served):
    """The figure as the page draws it, with the vendored plotly.js in Debian's Chromium: no link in
    the SVG, the name's characters as they were written."""
    from playwright import sync_api  # the dev extra installs it: missing, this fails rather than skips

    from tests.e2e.harness import launch_chromium

    db, version_id, _ = served
    hostile_series(db)
    figure, _ = views.forecast_view(ForecastView(series=("realgdp",), version=version_id))
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.set_content('<div id="chart" style="width:900px;height:500px"></div>')
            page.add_script_tag(path=str(HERE / "assets" / "plotly-cartesian.min.js"))
            page.evaluate("f => Plotly.newPlot('chart', f.data, f.layout)", json.loads(figure.to_json()))
            links = page.evaluate("document.querySelectorAll('#chart svg a').length")
            bold = page.evaluate("document.querySelectorAll('#chart svg tspan[style*=\"font-size:30px\"]').length")
            titles = page.evaluate("[...document.querySelectorAll('#chart .annotation-text')].map(e => e.textContent)")
            axis = page.evaluate("document.querySelector('#chart .ytitle').textContent")
        finally:
            browser.close()
    assert links == 0 and bold == 0
    assert f"realgdp: {HOSTILE_NAME}" in titles and axis == HOSTILE_UNIT


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_text(served, current):
    """The unit is free text: ``=HYPERLINK(...)`` in it ran as a formula where the CSV was opened."""
    db, _, _ = served
    with db.connection() as conn:
        conn.execute("UPDATE series SET unit = '=HYPERLINK(\"https://evil.example\",\"x\")' WHERE id = 'realgdp'")
    frame = views.forecast_csv(ForecastView(series=("realgdp",), version=current.id, horizon=3))
    assert set(frame["unit"]) == {'\'=HYPERLINK("https://evil.example","x")'}
    assert set(frame["series_id"]) == {"realgdp"} and (frame["mean"] != 0).all()  # the rest as it was
    for start in ("+", "-", "@", "\t", "\r"):
        assert views._cells({"unit": f"{start}1"}) == {"unit": f"'{start}1"}
    assert views._cells({"unit": "percent"}) == {"unit": "percent"}


def test_the_request_log_fallback_counts_only_2xx_as_2xx(served):
    """A 1xx or 3xx answer was counted as 2xx (``status < 400``); Prometheus counts ``2..``."""
    db, _, _ = served
    with db.connection() as conn:
        for status in (101, 200, 204, 302):
            conn.execute(
                """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
                   VALUES ('inference', 'pefm-inference-blue', '/v1/forecast', 'POST', %s, 5)""",
                (status,),
            )
        summary = data.traffic_from_log(conn, 15)
    assert summary["share_2xx"] == 0.5 and summary["share_4xx"] == 0 and summary["share_5xx"] == 0


def test_the_model_options_and_the_registry_read_what_they_show_not_the_backtests(served, current):
    """Each read every version's backtest (its metrics, its forecasts from every origin) and gate
    report: the Forecasts page's dropdown needs ids and statuses, the Models table a few fields."""
    from pefm.storage.model_versions import list_versions

    db, version_id, _ = served
    with db.connection() as conn:
        naive, _ = train(conn, "naive", SERIES, spec=None)  # no backtest
        conn.execute("UPDATE model_versions SET status = 'retired' WHERE id = %s", (naive.id,))
        old, _ = train(conn, "naive", SERIES, spec=SPEC)
        [realgdp] = [s for s in data.catalog(conn) if s.id == "realgdp"]
        queries = []
        conn.cursor_factory = recording(queries)
        try:
            options = data.model_options(conn, realgdp)
            rows = data.registry(conn)
        finally:
            conn.cursor_factory = psycopg.Cursor
        whole = list_versions(conn)  # every version whole, newest first, as both read them before
    assert not re.search(r"backtest(?!\s*->\s*'(spec|metrics)')|gate_report(?!\s*(IS NULL|=|->>))", "".join(queries))
    before = sorted(
        (v for v in whole if "realgdp" in v.series_ids and v.status != "retired"), key=lambda v: v.id != version_id
    )
    assert options == [{"label": f"{v.id} ({v.status})", "value": v.id} for v in before]
    assert [o["value"] for o in options] == [version_id, old.id, current.id]

    def median_h1(v):
        ratios = [m["rmse_ratio_naive@h1"] for m in ((v.backtest or {}).get("metrics") or {}).values()]
        return round(float(pd.Series(ratios).median()), 3) if ratios else None

    gates = {None: "not gated", True: "passed", False: "failed"}
    assert [(r["id"], r["status"], r["series"], r["backtest"], r["rmse_ratio_naive_h1"], r["gates"]) for r in rows] == [
        (
            v.id,
            v.status,
            len(v.series_ids),
            data.backtest_setup((v.backtest or {}).get("spec")),
            median_h1(v),
            gates[v.gate_report and v.gate_report["passed"]],
        )
        for v in whole
    ]
    assert {r["rmse_ratio_naive_h1"] is None for r in rows} == {True, False}
