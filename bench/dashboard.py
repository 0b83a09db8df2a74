"""Dashboard benchmark: each page's data callbacks and first meaningful paint in headless Chromium,
next to the smallest useful Dash page (bench/dash_hello: one graph, one callback) in the same run.

- callback p95: every /_dash-update-component request a page load made, replayed one at a time
  over HTTP (the callback's latency: Dash, our code, the database); target <= 200 ms. Next to it,
  the same requests as the browser saw them during the loads (request start to response end),
  which adds queueing behind the page's other requests and Chromium's own work on two cores.
- first paint: navigation start to the page's data on screen (the element the browser tests wait
  for: cards, a plotted trace, a table cell); median over the loads; target <= 2 s.
Each page gets one unmeasured warm-up load first, the anchor too. The anchor loads Dash's default,
the full plotly.js bundle (4.6 MB); the dashboard serves the cartesian bundle (1.4 MB, dashboard/app.py).

The database is an embedded PostgreSQL in a temporary directory seeded with the demo activity
(dashboard/demo.py: real series, two models with backtests, two drift checks, a rollout, an hour
of request logs). Usage: python bench/dashboard.py [--loads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402

from dashboard.demo import seed  # noqa: E402
from pefm.local.runtime import free_port, spawn  # noqa: E402
from pefm.storage.database import Database  # noqa: E402
from pefm.storage.embedded import EmbeddedPostgres  # noqa: E402
from pefm.storage.migrate import migrate  # noqa: E402
from tests.e2e.harness import LOADED, PAGES, launch_chromium, start_stack  # noqa: E402

CALLBACK_TARGET_MS, PAINT_TARGET_S = 200, 2.0


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def replay(base: str, bodies: set[str], times: int) -> list[float]:
    """Each captured callback request, sent ``times`` times in turn; latencies in ms."""
    latencies = []
    with httpx.Client(base_url=base, headers={"Content-Type": "application/json"}, timeout=30) as client:
        for _ in range(times):
            for body in bodies:
                start = time.perf_counter()
                client.post("/_dash-update-component", content=body).raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def measure(browser, base: str, path: str, selector: str, loads: int, label: str) -> dict[str, float]:
    """Load ``url`` ``loads`` times in fresh contexts, after one unmeasured load (the first use of
    a page warms the server's code paths and the browser's cache); callback durations (ms), paint (s)."""
    callbacks, paints, bodies = [], [], set()

    def finished(request) -> None:
        if "_dash-update-component" in request.url:
            callbacks.append(request.timing["responseEnd"])
            bodies.add(request.post_data)

    for i in track(range(loads + 1), description=f"{label:>10}", transient=True):
        if i == 1:
            callbacks.clear(), paints.clear()
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.on("requestfinished", finished)
        page.goto(base + path)
        page.wait_for_selector(selector, timeout=30_000)
        paints.append(page.evaluate("performance.now()") / 1000)
        page.wait_for_load_state("networkidle")
        context.close()
    replayed = replay(base, bodies, loads)
    return {
        "callback_p50_ms": statistics.median(replayed),
        "callback_p95_ms": p95(replayed),
        "callbacks": len(replayed),
        "browser_callback_p95_ms": p95(callbacks),
        "first_paint_s": statistics.median(paints),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=15, help="page loads per page (default 15)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    console = Console(width=130)
    with tempfile.TemporaryDirectory(prefix="pefm-bench-dash-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg", database="bench")
        url = server.start()
        try:
            with Database(url, max_size=2) as db:
                with db.connection() as conn:
                    migrate(conn)
                with console.status("seeding the demo data"):
                    seed(db)
            stack = start_stack(url, Path(tmp) / "logs")
            hello_port = free_port()
            hello = spawn(
                [sys.executable, str(ROOT / "bench" / "dash_hello" / "app.py")],
                cwd=ROOT,
                env={"PEFM_DASHBOARD_PORT": str(hello_port)},
                log=Path(tmp) / "logs" / "hello.log",
                ready_path="/health",
                name="dash-hello",
                port=hello_port,
            )
            try:
                with sync_playwright() as playwright:
                    browser = launch_chromium(playwright)
                    anchor = measure(browser, hello.url, "/", "#chart .scatterlayer .trace", args.loads, "anchor")
                    ours = {
                        name: measure(browser, stack.dashboard.url, path, LOADED[name], args.loads, name)
                        for name, path in PAGES.items()
                    }
                    browser.close()
            finally:
                hello.stop()
                stack.stop()
        finally:
            server.stop()
    table = Table(title=f"dashboard pages vs a one-graph Dash page ({args.loads} loads each, same browser)")
    columns = ("callbacks", "callback p50 ms", "callback p95 ms", "p95 / anchor", "in browser p95 ms")
    table.add_column("page")
    for column in (*columns, "first paint s", "paint / anchor"):
        table.add_column(column, justify="right")
    rows = [("anchor (dash_hello)", anchor), *ours.items()]
    for name, r in rows:
        table.add_row(
            name,
            str(r["callbacks"]),
            f"{r['callback_p50_ms']:.1f}",
            f"{r['callback_p95_ms']:.1f}",
            f"{r['callback_p95_ms'] / anchor['callback_p95_ms']:.2f}",
            f"{r['browser_callback_p95_ms']:.1f}",
            f"{r['first_paint_s']:.2f}",
            f"{r['first_paint_s'] / anchor['first_paint_s']:.2f}",
        )
    console.print(table)
    worst_callback = max(r["callback_p95_ms"] for r in ours.values())
    worst_paint = max(r["first_paint_s"] for r in ours.values())
    console.print(
        f"targets: callback p95 <= {CALLBACK_TARGET_MS} ms (worst page {worst_callback:.0f} ms), "
        f"first paint <= {PAINT_TARGET_S} s (worst page {worst_paint:.2f} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "callback_p95_ms": {name: r["callback_p95_ms"] for name, r in ours.items()},
                    "first_paint_s": {name: r["first_paint_s"] for name, r in ours.items()},
                    "pages": ours,
                    "anchor": anchor,
                    "loads": args.loads,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
