"""The dashboard in Debian's headless Chromium, driven by Playwright: the app and the rollout API
run as real processes on a database seeded with real data, models, drift checks and a rollout."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from dashboard.demo import GREEN, seed
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import with_schema
from tests.e2e.harness import ADMIN_TOKEN, CHROMIUM, LOADED, PAGES, ROOT, launch_chromium, start_stack

playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
SCREENSHOTS = ROOT / "screenshots"


@pytest.fixture(scope="module")
def stack(server_url: str, tmp_path_factory: pytest.TempPathFactory):
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_schema(server_url, schema)
    with Database(url, max_size=2) as db:
        with db.connection() as conn:
            migrate(conn)
        demo = seed(db)
    running = start_stack(url, tmp_path_factory.mktemp("e2e-logs"))
    yield running, demo, url
    running.stop()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium); .ci/run does")
    with playwright_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


class Watched:
    """A page with every console error, page error and failed request (callback errors answer
    /_dash-update-component with a 5xx) recorded."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

    def open(self, name: str) -> None:
        self.page.goto(self.base + PAGES[name])
        self.page.wait_for_selector(LOADED[name], timeout=15_000)
        self.page.wait_for_load_state("networkidle")

    def title(self, graph: str) -> str:
        return self.page.text_content(f"#{graph} .gtitle")

    def trace(self, graph: str, name: str) -> dict:
        return self.page.evaluate(
            "([graph, name]) => { const t = document.querySelector(`#${graph} .js-plotly-plot`).data"
            ".find(t => t.name === name); return {x: t.x, y: t.y}; }",
            [graph, name],
        )


@pytest.fixture
def watched(stack, browser):
    running, _, _ = stack
    page = Watched(browser, running.dashboard.url)
    yield page
    page.context.close()


def test_every_page_loads_without_console_or_callback_errors(watched):
    """Each page renders its data and the browser reports nothing wrong; screenshots for review."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for name in PAGES:
        watched.open(name)
        watched.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
        assert watched.errors == [], f"{name}: {watched.errors}"
        if name == "overview":
            assert watched.page.locator("#overview-cards .card").count() == 6
    assert (SCREENSHOTS / "rollouts.png").stat().st_size > 10_000


def test_changing_the_series_changes_the_chart(watched):
    """Picking another series in the searchable dropdown redraws the fan chart for it."""
    watched.open("forecasts")
    assert watched.title("fc-chart").startswith("infl:")
    before = watched.trace("fc-chart", "actual")
    watched.page.click("#fc-series")
    watched.page.fill(".dash-dropdown-search", "unem")  # the picker's search narrows the options
    options = watched.page.get_by_role("option")
    playwright_api.expect(options).to_have_text(["unemp: Unemployment rate"])
    options.first.click()
    watched.page.wait_for_function("document.querySelector('#fc-chart .gtitle').textContent.startsWith('unemp:')")
    after = watched.trace("fc-chart", "actual")
    assert after["y"] != before["y"] and len(after["x"]) == 80
    assert watched.errors == []


def test_the_as_of_picker_shows_what_was_known_then(watched):
    """With an as-of date, the chart shows only the data known on that date (vintages)."""
    watched.open("forecasts")
    latest = watched.trace("fc-chart", "actual")
    assert max(latest["x"]).startswith("2009")
    watched.page.fill("#fc-as-of", "1990-01-01")
    watched.page.keyboard.press("Enter")
    watched.page.wait_for_function(
        "document.querySelector('#fc-chart .gtitle').textContent.includes('as known on 1990-01-01')"
    )
    then = watched.trace("fc-chart", "actual")
    assert max(then["x"]).startswith("1989")
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
    assert watched.errors == []  # the refusals are answers shown on the page, not errors
