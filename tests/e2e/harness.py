"""The dashboard as its users get it, for the browser tests and bench/dashboard.py: the rollout
API and the Dash app as real processes on a seeded database, and Debian's Chromium driven by
Playwright (``playwright install`` cannot download browsers here; we never need it to)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pefm.local.runtime import Process, free_port, spawn
from pefm.storage.roles import role_url

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "e2e-test-admin-token"
PAGES = {
    "overview": "/",
    "forecasts": "/forecasts",
    "models": "/models",
    "drift": "/drift",
    "serving": "/serving",
    "rollouts": "/rollouts",
}
# what each page shows once its data callbacks have answered (placeholders draw no trace or cell)
LOADED = {
    "overview": "#overview-cards .card",
    "forecasts": "#fc-chart .scatterlayer .trace",
    "models": "#models-detail .card",
    "drift": "#drift-table td",
    "serving": "#serving-latency .scatterlayer .trace",
    "rollouts": "#ro-events td",
}


@dataclass
class Stack:
    dashboard: Process
    api: Process

    def stop(self) -> None:
        self.dashboard.stop()
        self.api.stop()


def start_stack(database_url: str, logs: Path) -> Stack:
    """The rollout API (with the admin token) and the dashboard wired to it, on ``database_url``."""
    api_port = free_port()
    api = spawn(
        [sys.executable, "-m", "pefm.cli", "serve", "rollout", "--port", str(api_port)],
        cwd=ROOT,
        env={"PEFM_DATABASE_URL": role_url(database_url, "rollout"), "PEFM_ADMIN_TOKEN": ADMIN_TOKEN},
        log=logs / "rollout-api.log",
        ready_path="/health",
        name="rollout-api",
        port=api_port,
    )
    dashboard_port = free_port()  # taken once the API is up, not while it starts
    dashboard = spawn(
        [sys.executable, "-m", "dashboard.app"],
        cwd=ROOT,
        env={
            "PEFM_DATABASE_URL": role_url(database_url, "dashboard"),
            "PEFM_ROLLOUT_API_URL": api.url,
            "PEFM_DASHBOARD_PORT": str(dashboard_port),
        },
        log=logs / "dashboard.log",
        ready_path="/health",
        name="dashboard",
        port=dashboard_port,
    )
    return Stack(dashboard, api)


def launch_chromium(playwright):
    """Debian's Chromium, headless, with the flags this closed network needs."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
