"""The dashboard in Debian's headless Chromium, driven by Playwright: the app and the rollout API
run as real processes on a database seeded with real data, models, drift checks and a rollout."""

from __future__ import annotations

import psycopg

from dashboard.demo import GREEN
from tests.e2e.conftest import Watched
from tests.e2e.harness import ADMIN_TOKEN, PAGES, ROOT

SCREENSHOTS = ROOT / "screenshots"


def test_every_page_loads_without_console_or_callback_errors(watched):
    """Each page renders its data and the browser reports nothing wrong, at the 1024 px a small
    laptop gives it; a screenshot of each (the README's come from here)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    watched.page.set_viewport_size({"width": 1024, "height": 768})
    for name in PAGES:
        watched.open(name)
        watched.page.screenshot(path=SCREENSHOTS / f"{name}.png")
        assert watched.errors == [], f"{name}: {watched.errors}"
        if name == "overview":
            assert watched.page.locator("#overview-cards .card").count() == 7
    assert (SCREENSHOTS / "rollouts.png").stat().st_size > 10_000
    assert (SCREENSHOTS / "models.png").stat().st_size > 10_000


def test_series_without_a_forecast_are_marked_and_explain_why(watched):
    """The page opens on a covered series; the picker marks the one no model covers, and choosing
    it draws its history with the reason instead of an empty chart."""
    watched.open("forecasts")
    assert watched.annotations("fc-chart")[0] == "infl: Inflation"  # aaa comes first, but has no forecast
    assert "#series=infl&version=" in watched.page.url
    watched.page.click("#fc-series-toggle")
    uncovered = watched.page.get_by_label("aaa:")
    assert watched.page.locator("label", has_text="aaa:").inner_text().endswith("(no forecast)")
    uncovered.check()
    watched.page.wait_for_function("document.querySelectorAll('#fc-chart .xaxislayer-above').length === 2")
    notes = watched.annotations("fc-chart")
    assert any(n.startswith("no forecast: the serving model") for n in notes), notes
    assert "series=infl,aaa" in watched.page.url
    assert watched.errors == []


def test_every_series_either_draws_a_forecast_or_explains(watched, stack):
    _, _, url = stack
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id")]
    for series_id in ids:
        watched.open("forecasts", f"#series={series_id}")
        drawn = watched.trace_names("fc-chart")
        notes = [n for n in watched.annotations("fc-chart") if n.startswith("no forecast")]
        assert ("forecast" in drawn) != bool(notes), (series_id, drawn, notes)
        assert watched.axis_title("fc-chart"), series_id  # every panel says its unit
    assert watched.errors == []


def test_a_copied_link_reopens_the_same_view_with_units_on_the_axes(watched, stack):
    _, demo, _ = stack
    fragment = f"#series=realgdp,unemp&version={demo.serving}&h=4&space=model"
    watched.open("forecasts", fragment)
    assert watched.annotations("fc-chart")[:2] == ["realgdp: Real GDP", "unemp: Unemployment rate"]
    assert watched.page.is_checked("#fc-space input[value='model']")
    assert watched.axis_title("fc-chart", 1) == "percent, annualized log growth"
    assert watched.axis_title("fc-chart", 2) == "percent, SA"  # unemp has no transform: its own unit
    assert watched.page.input_value("#fc-horizon") == "4"
    assert watched.page.url.endswith(fragment)
    watched.page.click("#fc-space input[value='level']")
    watched.page.wait_for_function("!location.hash.includes('space=model')")
    watched.page.wait_for_function(
        "document.querySelector('#fc-chart .js-plotly-plot').layout.yaxis.title.text !== "
        "'percent, annualized log growth'"
    )
    assert watched.axis_title("fc-chart", 1) == "billions of chained 2005 US$, SAAR"
    assert watched.errors == []


def test_a_refresh_keeps_the_zoom_and_every_choice(watched, stack):
    """Zoom in with the mouse, let the 20-second refresh redraw the chart: the zoom, the chosen
    version (not the serving one) and the URL stay."""
    _, demo, _ = stack
    fragment = f"#series=realgdp&version={demo.candidate}&space=model"
    watched.open("forecasts", fragment)
    box = watched.page.locator("#fc-chart .nsewdrag").first.bounding_box()
    middle = box["y"] + box["height"] / 2
    watched.page.mouse.move(box["x"] + box["width"] * 0.5, middle)
    watched.page.mouse.down()
    watched.page.mouse.move(box["x"] + box["width"] * 0.7, middle, steps=5)
    watched.page.mouse.up()
    zoomed = watched._figure("fc-chart", "return gd.layout.xaxis.range;")
    assert zoomed[0] > "1995"  # zoomed in on the last decade or so
    with watched.page.expect_response(
        lambda r: "_dash-update-component" in r.url and b"fc-figure" in r.request.post_data_buffer
    ):
        watched.page.evaluate("window.dash_clientside.set_props('refresh', {n_intervals: 1000})")
    watched.page.wait_for_load_state("networkidle")
    assert watched._figure("fc-chart", "return gd.layout.xaxis.range;") == zoomed
    assert watched.page.input_value("#fc-version") == demo.candidate  # not back to the serving model
    assert watched.page.url.endswith(fragment)
    assert watched.errors == []


def _zoom(watched, graph: str) -> list:
    """Drag across the middle of ``graph``'s plot (a mouse zoom on x); the x-range zoomed to."""
    box = watched.page.locator(f"#{graph} .nsewdrag").first.bounding_box()
    middle = box["y"] + box["height"] / 2
    watched.page.mouse.move(box["x"] + box["width"] * 0.3, middle)
    watched.page.mouse.down()
    watched.page.mouse.move(box["x"] + box["width"] * 0.6, middle, steps=5)
    watched.page.mouse.up()
    return watched._figure(graph, "return gd.layout.xaxis.range;")


def _refresh(watched, graph: str) -> None:
    """Fire the 20-second refresh now and wait for the callback that redraws ``graph``."""
    with watched.page.expect_response(
        lambda r: "_dash-update-component" in r.url and graph.encode() in r.request.post_data_buffer
    ):
        watched.page.evaluate("window.dash_clientside.set_props('refresh', {n_intervals: 1000})")
    watched.page.wait_for_load_state("networkidle")


def test_a_refresh_keeps_the_zoom_of_every_live_chart(watched):
    """Serving, Rollouts and Drift redraw every 20 seconds too: a mouse zoom stays."""
    for page, graph in (("serving", "serving-latency"), ("rollouts", "ro-traffic"), ("drift", "drift-history")):
        watched.open(page)
        zoomed = _zoom(watched, graph)
        _refresh(watched, graph)
        assert watched._figure(graph, "return gd.layout.xaxis.range;") == zoomed, graph
    assert watched.errors == []


def test_another_horizon_or_date_is_drawn_whole_not_in_the_old_zoom(watched, stack):
    _, demo, _ = stack
    watched.open("forecasts", f"#series=realgdp&version={demo.serving}&space=model&as_of=2003-02-15")
    zoomed = _zoom(watched, "fc-chart")
    watched.page.fill("#fc-as-of", "1995-02-15")
    watched.page.wait_for_function("location.hash.includes('as_of=1995-02-15')")
    watched.page.wait_for_function(
        "document.querySelector('#fc-chart .gtitle').textContent.startsWith('data as known on 1995-02-15')"
    )
    assert watched._figure("fc-chart", "return gd.layout.xaxis.range;") != zoomed
    assert watched._figure("fc-chart", "return gd.layout.xaxis.autorange;") is not False
    assert watched.errors == []


def test_the_as_of_view_draws_the_origin_its_forecast_and_the_outcomes_since(watched):
    """Data known on 2003-02-15 end at 2002Q4: the forecast made from there (kept with the
    serving model's backtest), the origin line, and what happened next."""
    watched.open("forecasts", "#series=realgdp&space=model")
    latest = watched.trace("fc-chart", "actual")
    assert max(latest["x"]).startswith("2009")
    watched.page.fill("#fc-as-of", "2003-02-15")
    watched.page.wait_for_function("location.hash.includes('as_of=2003-02-15')")
    watched.page.wait_for_function(
        "document.querySelector('#fc-chart .gtitle').textContent.startsWith('data as known on 2003-02-15')"
    )
    assert max(watched.trace("fc-chart", "actual")["x"]).startswith("2002-10-01")
    assert "origin 2002Q4" in watched.annotations("fc-chart")
    assert len(watched.trace("fc-chart", "forecast")["x"]) == 8
    assert watched.trace("fc-chart", "outcome")["x"][0].startswith("2003-01-01")
    assert watched.errors == []


def test_the_csv_download_carries_metadata_and_is_off_where_nothing_is_drawn(watched, tmp_path):
    watched.open("forecasts", "#series=realgdp&space=model&as_of=2003-02-15")
    with watched.page.expect_download() as download:
        watched.page.click("#fc-download-button")
    path = tmp_path / "forecast.csv"
    download.value.save_as(path)
    header, first = path.read_text().splitlines()[:2]
    assert header.startswith("series_id,model_version,space,unit,transform,data_as_of,origin,ds,mean")
    assert first.startswith("realgdp,") and ",model," in first and ",2003-02-15,2002-10-01," in first
    watched.open("forecasts", "#series=aaa")
    assert watched.page.is_disabled("#fc-download-button")
    assert watched.errors == []


def test_the_models_page_compares_two_versions_side_by_side_from_a_link(watched, stack):
    """Ticking two versions shows them side by side and puts both in the URL; the link opens the
    same comparison, with the gate report of the one the gates turned down."""
    _, demo, _ = stack
    watched.open("models")
    assert watched.page.locator("#models-detail .card-header").all_inner_texts() == [demo.serving]
    for version in (demo.rejected, demo.serving):
        watched.page.get_by_label(version).check()
    watched.page.wait_for_function("document.querySelectorAll('#models-detail .card').length === 2")
    link = watched.page.url
    assert demo.rejected in link and demo.serving in link
    again = Watched(watched.page.context.browser, watched.base)
    again.page.goto(link)
    again.page.wait_for_function("document.querySelectorAll('#models-detail .card').length === 2")
    assert set(again.page.locator("#models-detail .card-header").all_inner_texts()) == {demo.rejected, demo.serving}
    rejected = again.page.locator("#models-detail .card").filter(has_text=f"Gates: failed against {demo.serving}")
    assert rejected.locator("td", has_text="FAIL").count() >= 1
    # a page of a card's table stays chosen through the 20-second refresh (the cards were rebuilt)
    paged = rejected.locator(".dash-table-container").filter(has=again.page.locator("button.next-page")).first
    paged.locator("button.next-page").click()
    assert paged.locator(".current-page").get_attribute("placeholder") == "2"
    _refresh(again, "models-table")
    assert paged.locator(".current-page").get_attribute("placeholder") == "2"
    again.context.close()
    assert watched.errors == [] and again.errors == []


def test_overview_serving_and_drift_say_what_they_show(watched):
    """Overview's cards link to their pages; Serving charts 4xx and 5xx and changes its time range;
    Drift explains its signals from the policy file and redraws for the signal chosen."""
    watched.open("overview")
    cards = watched.page.locator("#overview-cards .card")
    assert "2xx" in cards.filter(has_text="Inference answers").inner_text()
    cards.filter(has_text="Serving model").click()
    watched.page.wait_for_url("**/models")
    watched.open("serving")
    names = watched.trace_names("serving-rate")
    assert "blue 4xx" in names and "blue 5xx" in names and "blue req/s" in names
    watched.page.get_by_label("6 hours").check()
    watched.page.wait_for_function(
        "document.querySelector('#serving-rate .js-plotly-plot').data.find(t => t.name === 'blue req/s').x.length < 100"
    )  # 6 hours in 5-minute buckets, not 60 one-minute ones
    watched.open("drift")
    assert "Evidently's normed Wasserstein distance" in watched.page.inner_text("#drift-legend")
    watched.page.select_option("#drift-choice", "unemp|volatility")
    watched.page.wait_for_function(
        "document.querySelector('#drift-history .gtitle').textContent.startsWith('unemp volatility')"
    )
    assert watched.errors == []


def test_the_dark_mode_is_remembered_and_the_charts_follow_it(watched):
    watched.open("forecasts")
    assert watched.page.evaluate("document.documentElement.getAttribute('data-bs-theme')") == "light"
    watched.page.click("#theme-switch")
    watched.page.wait_for_function("document.documentElement.getAttribute('data-bs-theme') === 'dark'")
    watched.open("drift")  # a new page load: the choice is remembered
    watched.page.wait_for_function("document.documentElement.getAttribute('data-bs-theme') === 'dark'")
    text = watched.page.locator("#drift-history .gtitle").first
    background = watched.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert text.evaluate("e => getComputedStyle(e).fill") != "rgb(42, 63, 95)"  # not plotly's dark-on-light text
    assert background != "rgb(255, 255, 255)"
    # a panel's note and the hover label: light text on their white boxes was unreadable
    watched.open("forecasts", "#series=aaa")
    watched.page.wait_for_function("[...document.querySelectorAll('#fc-chart .annotation')].length > 1")
    assert any(n.startswith("no forecast") for n in watched.annotations("fc-chart"))
    fills = "r => r.map(e => getComputedStyle(e).fill)"
    boxes = watched.page.eval_on_selector_all("#fc-chart .annotation rect.bg", fills)
    assert "rgb(255, 255, 255)" not in boxes, boxes
    plot = watched.page.locator("#fc-chart .nsewdrag").first.bounding_box()
    watched.page.mouse.move(plot["x"] + plot["width"] * 0.8, plot["y"] + plot["height"] / 2)
    label = watched.page.locator("#fc-chart .hoverlayer rect.bg, #fc-chart .hoverlayer .hovertext path").first
    label.wait_for(state="attached")
    assert label.evaluate("e => getComputedStyle(e).fill") == background
    assert watched.errors == []


def test_promote_needs_the_admin_token_and_then_moves_the_traffic(watched, stack):
    """Promote without the token is refused by the rollout API and changes nothing; with it, the
    split shown (and the router's table) moves to 100% green."""
    _, demo, url = stack
    watched.open("rollouts")
    weights = watched.page.locator("#ro-weights")
    assert weights.inner_text().endswith("(green) 0%")
    promote = watched.page.get_by_role("button", name="Promote")
    promote.click()
    watched.page.wait_for_selector("#ro-message .alert")
    assert watched.page.inner_text("#ro-message").startswith("refused (401)")
    watched.page.fill("#ro-token", "not-the-token")
    promote.click()
    watched.page.wait_for_function("document.querySelector('#ro-message').textContent.startsWith('refused (403)')")
    assert weights.inner_text().endswith("(green) 0%")
    watched.page.fill("#ro-token", ADMIN_TOKEN)
    promote.click()
    watched.page.wait_for_function("document.querySelector('#ro-weights').textContent.endsWith('(green) 100%')")
    assert watched.page.inner_text("#ro-message") == f"promote: rollout {demo.rollout_id} is Succeeded at 100% green"
    assert watched.trace("ro-traffic", f"{GREEN} %")["y"][-1] == 100
    with psycopg.connect(url) as conn:
        [traffic] = conn.execute("SELECT traffic FROM local_traffic WHERE service = 'inference'").fetchone()
    assert {t["revision"]: t["percent"] for t in traffic}[GREEN] == 100
    # a finished rollout can be rolled back, nothing else
    assert watched.page.get_by_role("button", name="Promote").is_disabled()
    assert watched.page.get_by_role("button", name="Pause").is_disabled()
    assert watched.page.get_by_role("button", name="Roll back").is_enabled()
    assert watched.errors == []  # the refusals are answers shown on the page, not errors
