"""The dashboard as its container runs it: gunicorn serving dashboard.wsgi:server (two workers)."""

import json
import sys
from pathlib import Path

import httpx
import psycopg

from pefm.local.runtime import free_port, spawn
from pefm.storage.roles import role_url

ROOT = Path(__file__).resolve().parents[2]


def test_gunicorn_serves_the_app_on_the_configured_database(db, schema_url, tmp_path):
    """The WSGI entry point builds the app at import, on PEFM_DATABASE_URL (the migrated schema,
    as the dashboard's read-only role), and serves its pages, layout and local assets."""
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "dashboard.wsgi:server"],
        cwd=ROOT,
        env={"PEFM_DATABASE_URL": role_url(schema_url, "dashboard")},
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
        with psycopg.connect(schema_url) as conn:  # it read as its role
            users = {r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE usename LIKE 'pefm_%'")}
        assert "pefm_dashboard" in users
    finally:
        server.stop()
