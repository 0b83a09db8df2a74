"""``pefm local register``: revisions started elsewhere (compose containers) behind the local router."""

import asyncio
import re
import subprocess
import sys

import psycopg

from pefm.local.router import TrafficTable

PEFM = [sys.executable, "-m", "pefm.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEFM, *args], env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=120)


def revisions(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT revision, urls, model_version, pids, container_concurrency FROM local_revisions
               WHERE service = %s ORDER BY revision""",
            ("inference",),
        ).fetchall()


def router_table(url: str) -> TrafficTable:
    """The traffic table as the router reads it (one refresh)."""

    async def read() -> TrafficTable:
        table = TrafficTable(url, "inference")
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await table.refresh(conn)
        return table

    return asyncio.run(read())


def test_first_revision_takes_all_traffic_and_later_ones_leave_it_alone(db, cli_env, schema_url):
    """The first registered revision gets a 100% block tagged blue; the next ones are only recorded,
    with the model version each serves, which must be one the registry holds."""
    assert run(cli_env, "data", "load", "realgdp").returncode == 0
    trained = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0")
    version = re.search(r"registered (naive-\S+)", trained.stdout).group(1)
    blue = run(cli_env, "local", "register", "inference", "pefm-inference-blue", "http://inference-blue:8080/")
    assert blue.returncode == 0, blue.stderr
    assert "all of its traffic, tagged blue" in blue.stdout
    green = run(
        cli_env,
        "local",
        "register",
        "inference",
        "pefm-inference-green",
        "http://inference-green:8080",
        "http://inference-green-2:8080",
        "--model-version",
        version,
        "--container-concurrency",
        "10",
    )
    assert green.returncode == 0, green.stderr
    assert "traffic unchanged" in green.stdout
    assert revisions(schema_url) == [
        ("pefm-inference-blue", ["http://inference-blue:8080"], None, [None], 0),
        (
            "pefm-inference-green",
            ["http://inference-green:8080", "http://inference-green-2:8080"],
            version,
            [None, None],
            10,
        ),
    ]
    unknown = run(cli_env, "local", "register", "inference", "rev-x", "http://x:8080", "--model-version", "ar-1")
    assert unknown.returncode == 1 and "no model version 'ar-1' in the registry" in unknown.stderr
    untaggable = run(cli_env, "local", "register", "inference", "rev-y", "http://y:8080", "--tag", "Bad_Tag.")
    assert untaggable.returncode == 2 and "--tag must be a DNS-1035 label" in untaggable.stderr
    table = router_table(schema_url)  # what the router reads
    assert table.targets == [{"revision": "pefm-inference-blue", "percent": 100, "tag": "blue", "latest": False}]
    assert table.pick(None) == "pefm-inference-blue"
    assert [r.url for r in table.replicas[table.pick("blue")]] == ["http://inference-blue:8080"]
    assert [(r.url, r.limit) for r in table.replicas["pefm-inference-green"]] == [
        ("http://inference-green:8080", 10),
        ("http://inference-green-2:8080", 10),
    ]


def test_registering_again_moves_the_revision_but_not_the_traffic(db, cli_env, schema_url):
    """A restarted container re-registers at a new URL; a rollout's traffic block is kept."""
    assert run(cli_env, "local", "register", "inference", "blue-1", "http://a:8080").returncode == 0
    assert run(cli_env, "local", "register", "inference", "green-1", "http://b:8080").returncode == 0
    with psycopg.connect(schema_url) as conn:  # a rollout moved half the traffic to green
        conn.execute(
            """UPDATE local_traffic SET traffic = '[{"revision": "blue-1", "percent": 50, "tag": "blue"},
               {"revision": "green-1", "percent": 50, "tag": "green"}]' WHERE service = 'inference'"""
        )
    again = run(cli_env, "local", "register", "inference", "blue-1", "http://a2:8080", "--tag", "other")
    assert again.returncode == 0, again.stderr
    table = router_table(schema_url)
    assert [(t["revision"], t["percent"]) for t in table.targets] == [("blue-1", 50), ("green-1", 50)]
    assert {rev: [r.url for r in rs] for rev, rs in table.replicas.items()} == {
        "green-1": ["http://b:8080"],
        "blue-1": ["http://a2:8080"],
    }


def test_a_url_that_is_not_http_is_refused_and_nothing_is_recorded(cli_env, schema_url):
    """A malformed URL is one red line and exit 2 (a usage error), before anything is written."""
    assert run(cli_env, "db", "migrate").returncode == 0
    bad = run(cli_env, "local", "register", "inference", "pefm-inference-blue", "inference-blue:8080")
    assert bad.returncode == 2
    assert "revision URL must be http(s)://host[:port]" in bad.stderr
    assert revisions(schema_url) == []
    with psycopg.connect(schema_url) as conn:
        assert conn.execute("SELECT count(*) FROM local_traffic").fetchone()[0] == 0
