"""The browser tests' shared parts: the seeded stack (rollout API and dashboard as real processes),
Debian's Chromium, and a page that records every console error, page error and failed request."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from playwright import sync_api as playwright_api  # the dev extra installs it: missing, every test fails

from dashboard.demo import seed
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import with_schema
from tests.e2e.harness import CHROMIUM, LOADED, PAGES, launch_chromium, start_stack


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

    def open(self, name: str, fragment: str = "") -> None:
        """Load a page afresh (a new fragment on the same page would only be a hash change)."""
        self.page.goto("about:blank")
        self.page.goto(self.base + PAGES[name] + fragment)
        self.page.wait_for_selector(LOADED[name], timeout=15_000)
        self.page.wait_for_load_state("networkidle")

    def title(self, graph: str) -> str:
        return self.page.text_content(f"#{graph} .gtitle")

    def _figure(self, graph: str, script: str, *args):
        return self.page.evaluate(
            f"([graph, ...args]) => {{ const gd = document.querySelector(`#${{graph}} .js-plotly-plot`); {script} }}",
            [graph, *args],
        )

    def trace(self, graph: str, name: str) -> dict:
        """The first trace called ``name`` (x, y)."""
        return self._figure(graph, "const t = gd.data.find(t => t.name === args[0]); return {x: t.x, y: t.y};", name)

    def trace_names(self, graph: str) -> list[str]:
        return self._figure(graph, "return gd.data.map(t => t.name);")

    def annotations(self, graph: str) -> list[str]:
        """The chart's annotation texts: panel titles first, then notes and origin labels."""
        return self._figure(graph, "return (gd.layout.annotations || []).map(a => a.text);")

    def axis_title(self, graph: str, row: int = 1) -> str:
        axis = "yaxis" if row == 1 else f"yaxis{row}"
        return self._figure(graph, "const a = gd.layout[args[0]]; return a && a.title && a.title.text;", axis)


@pytest.fixture
def watched(stack, browser):
    running, _, _ = stack
    page = Watched(browser, running.dashboard.url)
    yield page
    page.context.close()
