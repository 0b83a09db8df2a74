"""Streaming ingest benchmark: single-observation events through the ingest function vs its
anchors, side by side in one run, same client (Debian's wrk, -t2 -c16).

- Events: one observation per request, one series, every timestamp new (the append path,
  ``bench/post_event.lua``) vs the hello-world func-python function: req/s and p50/p99.
- What the database takes: pgbench (PostgreSQL's own client), single-row INSERT + commit into the
  same table over 16 connections to the same embedded PostgreSQL.
- Soak: events at the same concurrency for ``--soak`` seconds, each wrk thread on its own series,
  every tenth event refused (-1 into a series of log returns: 422). Afterwards the database must
  hold every acknowledged event and none of the refused ones; events written but not acknowledged
  (in flight when wrk stopped) are counted apart.
- How many events each commit held (the function's ``pefm_ingest_group_writes`` histogram).

Everything runs on this machine against an embedded PostgreSQL in a temporary directory; pgbench
comes with Debian's postgresql package. Usage: python bench/stream.py [--json PATH] [--duration S] [--soak S]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import print_table, start_hello, wrk  # noqa: E402
from pefm.config import Settings  # noqa: E402
from pefm.storage.database import open_database  # noqa: E402
from tests.conftest import VERIFY_KEYS  # noqa: E402, F401  (importing it sets the run's signing key pair)
from tests.functions.conftest import start_function, stop  # noqa: E402

TOKEN = "bench-token"
EVENTS = ROOT / "bench" / "post_event.lua"
PGBENCH_INSERT = (  # each client's timestamps apart from the others' (clock_timestamp() can repeat across them)
    "INSERT INTO observations (series_id, ts, vintage, value)"
    " VALUES ('bench_pgbench', clock_timestamp() + :client_id * interval '1000 days', now(), random());\n"
)


def pgbench(url: str, duration: int, tmp: Path) -> float:
    """Transactions/s of single-row INSERT + commit over 16 connections (pgbench -c16 -j2)."""
    binary = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    script = tmp / "insert.sql"
    script.write_text(PGBENCH_INSERT)
    done = subprocess.run(
        [binary, "-n", "-c16", "-j2", f"-T{duration}", "-M", "prepared", "-f", str(script), url],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()}")
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))


DAYS = 100_000  # post_event.lua's days per series (1700 to 1973): then it moves on to the next one
MAX_RATE = 20_000  # events/s, ten times what this machine takes: series enough for any run here


def event_series(series: str, duration: int, threads: int | None = None) -> list[str]:
    """The series post_event.lua posts to over ``duration`` seconds: ``series`` (or
    ``series_<thread>`` for each of ``threads`` with their own), then ``_1``, ``_2``, ... after it."""
    bases = [series] if threads is None else [f"{series}_{k}" for k in range(threads)]
    return [f"{b}_{e}" if e else b for b in bases for e in range(1 + duration * MAX_RATE // DAYS)]


def events(url: str, duration: int, series: str, reject_every: int = 0, own: bool = False) -> dict:
    """wrk over post_event.lua: rate, latency and the answers by status."""
    args = [series, TOKEN, str(reject_every), "2", *(["own"] if own else [])]
    run = wrk(f"{url}/v1/observations", duration, EVENTS, args, errors_ok=True)
    run["answers"] = json.loads(re.search(r"^STREAM (.*)$", run.pop("output"), re.M).group(1))
    return run


def group_sizes(url: str) -> tuple[float, float]:
    """Commits so far and the mean events per commit, from the ingest function's metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = float(re.search(r"^pefm_ingest_group_writes_sum\S* ([\d.e+]+)$", text, re.M).group(1))
    count = float(re.search(r"^pefm_ingest_group_writes_count\S* ([\d.e+]+)$", text, re.M).group(1))
    return count, total / count if count else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--duration", type=int, default=15, help="seconds per throughput run")
    parser.add_argument("--soak", type=int, default=60, help="seconds of the soak")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pefm-stream-bench-") as tmp:
        run(Path(tmp), args)


def run(tmp: Path, args) -> None:
    db = open_database(Settings(home=tmp / "home"), schema="migrate")
    hello, hello_proc = start_hello()
    ingest = start_function("ingest", db.url, tmp, PEFM_INGEST_TOKEN=TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        events_series = event_series("bench_events", args.duration)
        soak_series = event_series("bench_soak", args.soak, threads=2)
        for sid in (*events_series, *soak_series, "bench_pgbench"):
            body = {"name": sid, "frequency": "D", "transform": "log_return"}
            httpx.put(f"{ingest.url}/v1/series/{sid}", json=body, headers=auth, timeout=10).raise_for_status()
        print("wrk: hello-world ...", flush=True)
        hello_run = wrk(f"{hello}/", args.duration)
        print("wrk: single-observation events ...", flush=True)
        stream = events(ingest.url, args.duration, "bench_events")
        commits, per_commit = group_sizes(ingest.url)
        print("pgbench: single-row INSERT + commit ...", flush=True)
        raw_tps = pgbench(db.url, args.duration, tmp)
        print(f"soak: {args.soak} s of events, every tenth refused ...", flush=True)
        soak = events(ingest.url, args.soak, "bench_soak", reject_every=10, own=True)
        with db.connection() as conn:
            rows, refused_rows = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE value <= 0) FROM observations WHERE series_id = ANY(%s)",
                (soak_series,),
            ).fetchone()
            events_rows = conn.execute(
                "SELECT count(*) FROM observations WHERE series_id = ANY(%s)", (events_series,)
            ).fetchone()[0]
    finally:
        stop(ingest)
        hello_proc.terminate()
        db.close()
    acked = soak["answers"]["ok"]
    results = {
        "hello_rps": round(hello_run["rps"], 1),
        "hello_p50_ms": hello_run["p50_ms"],
        "hello_p99_ms": hello_run["p99_ms"],
        "events_rps": round(stream["rps"], 1),
        "events_rps_ratio": round(stream["rps"] / hello_run["rps"], 3),
        "events_p50_ms": stream["p50_ms"],
        "events_p99_ms": stream["p99_ms"],
        "events_answers": stream["answers"],
        "events_rows": events_rows,
        "events_per_commit": round(per_commit, 2),
        "commits": int(commits),
        "pgbench_tps": round(raw_tps, 1),
        "events_vs_pgbench": round(stream["rps"] / raw_tps, 3),
        "soak_seconds": args.soak,
        "soak_rps": round(soak["rps"], 1),
        "soak_p99_ms": soak["p99_ms"],
        "soak_answers": soak["answers"],
        "soak_rows": rows,
        "soak_lost": max(0, acked - rows),
        "soak_written_unacknowledged": max(0, rows - acked),
        "soak_refused_written": refused_rows,
    }
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    soak = r["soak_answers"]
    print_table(
        [
            (
                "events (1 obs/request) vs hello-world",
                f"{r['events_rps']:.0f} req/s",
                f"{r['hello_rps']:.0f} req/s",
                f"{r['events_rps_ratio']:.2f}",
                ">= 0.30",
            ),
            (
                "events p50 / p99",
                f"{r['events_p50_ms']:.2f} / {r['events_p99_ms']:.2f} ms",
                f"{r['hello_p50_ms']:.2f} / {r['hello_p99_ms']:.2f} ms",
                "",
                "p99 <= 50 ms",
            ),
            (
                "events vs pgbench INSERT + commit (-c16)",
                f"{r['events_rps']:.0f} events/s",
                f"{r['pgbench_tps']:.0f} tx/s",
                f"{r['events_vs_pgbench']:.2f}",
                "",
            ),
            ("  events per commit (mean)", f"{r['events_per_commit']:.1f}", "", "", ""),
            (
                f"soak {r['soak_seconds']} s: acknowledged / refused / other",
                f"{soak['ok']} / {soak['rejected']} / {soak['other']}",
                "",
                "",
                "other = 0",
            ),
            (
                "  rate, p99",
                f"{r['soak_rps']:.0f} req/s, {r['soak_p99_ms']:.2f} ms",
                "",
                "",
                "",
            ),
            (
                "  acknowledged but not stored (lost)",
                str(r["soak_lost"]),
                "",
                "",
                "0",
            ),
            ("  refused but stored", str(r["soak_refused_written"]), "", "", "0"),
            ("  stored, not acknowledged (in flight at the end)", str(r["soak_written_unacknowledged"]), "", "", ""),
        ]
    )


if __name__ == "__main__":
    main()
