"""The dashboard as its container runs it: gunicorn serving dashboard.wsgi:server (two workers)."""

import json
import sys
from pathlib import Path

import httpx
import psycopg

from pefm.local.runtime import free_port, spawn

ROOT = Path(__file__).resolve().parents[2]


def test_gunicorn_serves_the_app_on_the_configured_database(schema_url, tmp_path):
    """The WSGI entry point builds the app at import, on PEFM_DATABASE_URL (migrated), and serves
    its pages, layout and local assets."""
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "dashboard.wsgi:server"],
        cwd=ROOT,
        env={"PEFM_DATABASE_URL": schema_url},
        log=tmp_path / "gunicorn.log",
        ready_path="/health",
        name="dashboard-gunicorn",
        port=port,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/rollouts").status_code == 200
            layout = json.dumps(client.get("/_dash-layout").json())
            assert '"refresh"' in layout and '"/rollouts"' in layout  # the interval and the navbar's pages
            assert client.get("/assets/bootstrap.min.css").status_code == 200
        with psycopg.connect(schema_url) as conn:  # migrated by the app at start
            assert conn.execute("SELECT to_regclass('revision_starts') IS NOT NULL").fetchone()[0]
    finally:
        server.stop()
