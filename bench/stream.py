"""Streaming ingest benchmark: single-observation events through the ingest function vs its
anchors, side by side in one run, same client (Debian's wrk, -t2 -c16).

- Events: one observation per request, one series, every timestamp new (the append path,
  ``bench/post_event.lua``) vs the hello-world func-python function: req/s and p50/p99.
- What the database takes: pgbench (PostgreSQL's own client), single-row INSERT + commit into the
  same table over 16 connections to the same embedded PostgreSQL.
- Soak: events at the same concurrency for ``--soak`` seconds, each wrk thread on its own series,
  every tenth event refused (-1 into a series of log returns: 422 naming the value), each event
  with a vintage of its own (a minute in the past, unique to the microsecond) that ingest's answer
  repeats. Afterwards the database must hold every acknowledged event,
  looked up one by one by (series, vintage), and none of the refused ones; events written but not
  acknowledged (in flight when wrk stopped) are counted apart, per event too.
- The events run's answers by status and wrk's socket errors are printed; any error answer or
  socket error there (counted in its req/s), any answer but 200/422 or socket error in the soak,
  a lost or a stored refused event marks the table and makes the run exit non-zero.
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
from datetime import datetime
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

TOKEN = "bench-ingest-token"
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


def events(
    url: str, duration: int, series: str, reject_every: int = 0, own: bool = False, acks: Path | None = None
) -> dict:
    """wrk over post_event.lua: rate, latency, the answers by status (``answers``: ok, rejected,
    other), wrk's socket errors, and with ``acks`` (a path prefix) every acknowledged event as
    (series, vintage) in ``acknowledged`` (each request then carries a vintage of its own). Error
    answers and socket errors do not raise here: the caller prints and judges them."""
    args = [series, TOKEN, str(reject_every), "2", "own" if own else "shared", str(acks or "")]
    run = wrk(f"{url}/v1/observations", duration, EVENTS, args, errors_ok=True)
    run["answers"] = json.loads(re.search(r"^STREAM (.*)$", run.pop("output"), re.M).group(1))
    if acks is not None:
        run["acknowledged"] = read_acks(acks, threads=2)
        if len(run["acknowledged"]) != run["answers"]["ok"]:  # a lost or doubled line: no check at all
            raise RuntimeError(
                f"{run['answers']['ok']} events acknowledged, {len(run['acknowledged'])} distinct in the log {acks}.*"
            )
    return run


def read_acks(prefix: Path, threads: int) -> set[tuple[str, datetime]]:
    """The (series, vintage) of every acknowledged event from post_event.lua's logs ``prefix.<k>``."""
    found = set()
    for k in range(threads):
        for line in Path(f"{prefix}.{k}").read_text().splitlines():
            series, vintage = line.split(" ")
            found.add((series, datetime.fromisoformat(vintage)))
    return found


def compare_events(acknowledged: set, stored: set) -> dict[str, int]:
    """Per event: acknowledged events missing from ``stored`` (lost) and stored events never
    acknowledged (in flight when wrk stopped), both sets of (series, vintage)."""
    return {"lost": len(acknowledged - stored), "stored_unacknowledged": len(stored - acknowledged)}


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
    auth = {"authorization": f"Bearer {TOKEN}"}
    hello_proc, functions = None, []
    try:  # everything started inside: stopped whatever fails
        hello, hello_proc = start_hello()
        ingest = start_function("ingest", db.url, tmp, PEFM_INGEST_TOKEN=TOKEN)
        functions.append(ingest)
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
        soak = events(ingest.url, args.soak, "bench_soak", reject_every=10, own=True, acks=tmp / "acks")
        with db.connection() as conn:
            stored = conn.execute(
                "SELECT series_id, vintage, value > 0 FROM observations WHERE series_id = ANY(%s)", (soak_series,)
            ).fetchall()
            events_rows = conn.execute(
                "SELECT count(*) FROM observations WHERE series_id = ANY(%s)", (events_series,)
            ).fetchone()[0]
    finally:
        for running in functions:
            stop(running)
        if hello_proc is not None:
            hello_proc.terminate()
            hello_proc.wait()
        db.close()
    checked = compare_events(soak["acknowledged"], {(sid, vintage) for sid, vintage, good in stored if good})
    results = {
        "hello_rps": round(hello_run["rps"], 1),
        "hello_p50_ms": hello_run["p50_ms"],
        "hello_p99_ms": hello_run["p99_ms"],
        "events_rps": round(stream["rps"], 1),
        "events_rps_ratio": round(stream["rps"] / hello_run["rps"], 3),
        "events_p50_ms": stream["p50_ms"],
        "events_p99_ms": stream["p99_ms"],
        "events_answers": stream["answers"],
        "events_socket_errors": stream["socket_errors"],
        "events_rows": events_rows,
        "events_per_commit": round(per_commit, 2),
        "commits": int(commits),
        "pgbench_tps": round(raw_tps, 1),
        "events_vs_pgbench": round(stream["rps"] / raw_tps, 3),
        "soak_seconds": args.soak,
        "soak_rps": round(soak["rps"], 1),
        "soak_p99_ms": soak["p99_ms"],
        "soak_answers": soak["answers"],
        "soak_socket_errors": soak["socket_errors"],
        "soak_rows": len(stored),
        "soak_lost": checked["lost"],
        "soak_written_unacknowledged": checked["stored_unacknowledged"],
        "soak_refused_written": sum(1 for *_, good in stored if not good),
    }
    failures = judge(results)
    results["failures"] = failures
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


def judge(r: dict) -> list[str]:
    """What makes the run's numbers wrong or the soak fail: error answers or socket errors in the
    events run (counted in its req/s), answers other than 200/422 or socket errors in the soak, an
    acknowledged event not stored, a refused one stored."""
    failures = []
    events, soak = r["events_answers"], r["soak_answers"]
    if events["rejected"] or events["other"] or sum(r["events_socket_errors"].values()):
        failures.append(
            f"the events run had {events['rejected']} refused, {events['other']} other answers and"
            f" {_socket(r['events_socket_errors'])}: its req/s counts them"
        )
    if soak["other"] or sum(r["soak_socket_errors"].values()):
        failures.append(f"the soak had {soak['other']} other answers and {_socket(r['soak_socket_errors'])}")
    if not soak["ok"] or not soak["rejected"]:
        failures.append(
            f"the soak had {soak['ok']} acknowledged and {soak['rejected']} refused events: nothing to check"
        )
    if r["soak_lost"]:
        failures.append(f"{r['soak_lost']} acknowledged events are not stored")
    if r["soak_refused_written"]:
        failures.append(f"{r['soak_refused_written']} refused events are stored")
    return failures


def _socket(errors: dict[str, int]) -> str:
    return f"{sum(errors.values())} socket errors (" + ", ".join(f"{k} {v}" for k, v in errors.items()) + ")"


def report(r: dict) -> None:
    soak, events = r["soak_answers"], r["events_answers"]
    events_socket, soak_socket = sum(r["events_socket_errors"].values()), sum(r["soak_socket_errors"].values())
    events_errors = events["rejected"] + events["other"] + events_socket
    mark = " (!) errors counted" if events_errors else ""
    print_table(
        [
            (
                "events (1 obs/request) vs hello-world" + mark,
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
                "  events answers: ok / refused / other / socket errors" + (" (!)" if events_errors else ""),
                f"{events['ok']} / {events['rejected']} / {events['other']} / {events_socket}",
                "",
                "",
                "all but ok = 0",
            ),
            (
                f"soak {r['soak_seconds']} s: acknowledged / refused / other / socket errors",
                f"{soak['ok']} / {soak['rejected']} / {soak['other']} / {soak_socket}",
                "",
                "",
                "other = socket = 0",
            ),
            (
                "  rate, p99",
                f"{r['soak_rps']:.0f} req/s, {r['soak_p99_ms']:.2f} ms",
                "",
                "",
                "",
            ),
            (
                "  acknowledged but not stored (lost; per event)",
                str(r["soak_lost"]),
                "",
                "",
                "0",
            ),
            ("  refused but stored (per event)", str(r["soak_refused_written"]), "", "", "0"),
            (
                "  stored, not acknowledged (in flight at the end; per event)",
                str(r["soak_written_unacknowledged"]),
                "",
                "",
                "",
            ),
        ]
    )
    for failure in r["failures"]:
        print(f"(!) {failure}")


if __name__ == "__main__":
    main()
