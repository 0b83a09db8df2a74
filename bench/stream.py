"""Streaming ingest benchmark: single-observation events through the ingest function vs its
anchors, side by side in one run, same client (Debian's wrk, -t2 -c16).

- Events: one observation per request, one series, every timestamp new (the append path,
  ``bench/post_event.lua``) vs the hello-world func-python function: req/s and p50/p99.
- What the database takes: pgbench (PostgreSQL's own client), single-row INSERT + commit into the
  same table over 16 connections to the same embedded PostgreSQL.
- These three run in ``--rounds`` alternating rounds of ``--duration`` seconds each (hello-world,
  events, pgbench; then the reverse order; ...), each run after an unmeasured ``WARM_UP`` seconds
  of the same load (events: each run, warm-up included, on series of its own). The table gives the
  median over rounds of each side's req/s and percentiles, and the median of the per-round ratios.
- Soak: events at the same concurrency for ``--soak`` seconds, each wrk thread on its own series,
  every tenth event refused (-1 into a series of log returns: 422 naming the value), each event
  with a vintage of its own (a minute in the past, unique to the microsecond) that ingest's answer
  repeats. Afterwards the database must hold every acknowledged event,
  looked up one by one by (series, vintage), and none of the refused ones; events written but not
  acknowledged (in flight when wrk stopped) are counted apart, per event too.
- The events runs' answers by status and wrk's socket errors (summed over the measured rounds)
  are printed; any error answer or socket error there (counted in the req/s), any answer but
  200/422 or socket error in the soak,
  a lost or a stored refused event marks the table and makes the run exit non-zero.
- How many events each commit held in the measured events runs (the function's
  ``pefm_ingest_group_writes`` histogram).

``alternate`` and the median helpers are bench/harness.py's, shared with bench/serve.py and bench/router.py.

Everything runs on this machine against an embedded PostgreSQL in a temporary directory; pgbench
comes with Debian's postgresql package.
Usage: python bench/stream.py [--json PATH] [--duration S] [--rounds R] [--soak S]
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

from harness import (  # noqa: E402
    ROUNDS,
    WARM_UP,
    alternate,
    median_of,
    median_ratio,
    print_table,
    ratios,
    rounds_note,
    spread,
    start_hello,
    warmed,
    wrk,
)
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


def group_writes(url: str) -> tuple[float, float]:
    """Commits so far and the events they held, from the ingest function's metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = float(re.search(r"^pefm_ingest_group_writes_sum\S* ([\d.e+]+)$", text, re.M).group(1))
    count = float(re.search(r"^pefm_ingest_group_writes_count\S* ([\d.e+]+)$", text, re.M).group(1))
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--duration", type=int, default=2, help="seconds per measured throughput run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds of the throughput runs")
    parser.add_argument("--soak", type=int, default=60, help="seconds of the soak")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
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
        # every events run, warm-ups too, on series of its own: every timestamp new
        events_series = [sid for k in range(args.rounds) for sid in event_series(f"bench_events_r{k}", args.duration)]
        warm_up_series = [sid for k in range(args.rounds) for sid in event_series(f"bench_events_w{k}", WARM_UP)]
        soak_series = event_series("bench_soak", args.soak, threads=2)
        for sid in (*events_series, *warm_up_series, *soak_series, "bench_pgbench"):
            body = {"name": sid, "frequency": "D", "transform": "log_return"}
            httpx.put(f"{ingest.url}/v1/series/{sid}", json=body, headers=auth, timeout=10).raise_for_status()
        groups: list[tuple[float, float]] = []  # per measured events run: its commits and their events

        def events_run() -> dict:
            k = len(groups)  # the round
            events(ingest.url, WARM_UP, f"bench_events_w{k}")
            commits, written = group_writes(ingest.url)
            run = events(ingest.url, args.duration, f"bench_events_r{k}")
            after = group_writes(ingest.url)
            groups.append((after[0] - commits, after[1] - written))
            return run

        print(
            f"hello-world, single-observation events, pgbench INSERT + commit: {args.rounds} alternating rounds"
            f" of {args.duration} s ...",
            flush=True,
        )
        rounds = alternate(
            {
                "hello": warmed(lambda seconds: wrk(f"{hello}/", seconds), args.duration),
                "events": events_run,
                "pgbench": warmed(lambda seconds: {"rps": pgbench(db.url, seconds, tmp)}, args.duration),
            },
            args.rounds,
        )
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
    hello, stream, raw = rounds["hello"], rounds["events"], rounds["pgbench"]
    commits, grouped = sum(c for c, _ in groups), sum(n for _, n in groups)
    results = {
        "rounds": args.rounds,
        "seconds_per_run": args.duration,
        "hello_rps": round(median_of(hello, "rps"), 1),
        "hello_p50_ms": median_of(hello, "p50_ms"),
        "hello_p99_ms": median_of(hello, "p99_ms"),
        "events_rps": round(median_of(stream, "rps"), 1),
        "events_rps_ratio": round(median_ratio(stream, hello), 3),
        "events_rps_ratios": [round(x, 3) for x in ratios(stream, hello)],
        "events_p50_ms": median_of(stream, "p50_ms"),
        "events_p99_ms": median_of(stream, "p99_ms"),
        "events_answers": _summed(run["answers"] for run in stream),
        "events_socket_errors": _summed(run["socket_errors"] for run in stream),
        "events_rows": events_rows,
        "events_per_commit": round(grouped / commits, 2) if commits else 0.0,
        "commits": int(commits),
        "pgbench_tps": round(median_of(raw, "rps"), 1),
        "events_vs_pgbench": round(median_ratio(stream, raw), 3),
        "events_vs_pgbench_ratios": [round(x, 3) for x in ratios(stream, raw)],
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
    measured events runs (counted in their req/s), answers other than 200/422 or socket errors in the
    soak, an acknowledged event not stored, a refused one stored."""
    failures = []
    events, soak = r["events_answers"], r["soak_answers"]
    if events["rejected"] or events["other"] or sum(r["events_socket_errors"].values()):
        failures.append(
            f"the events runs had {events['rejected']} refused, {events['other']} other answers and"
            f" {_socket(r['events_socket_errors'])}: their req/s count them"
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


def _summed(counts) -> dict[str, int]:
    """Counts by key (answers by status, socket errors by kind), summed over the rounds' runs."""
    total: dict[str, int] = {}
    for each in counts:
        for key, n in each.items():
            total[key] = total.get(key, 0) + n
    return total


def _socket(errors: dict[str, int]) -> str:
    return f"{sum(errors.values())} socket errors (" + ", ".join(f"{k} {v}" for k, v in errors.items()) + ")"


def report(r: dict) -> None:
    soak, events = r["soak_answers"], r["events_answers"]
    events_socket, soak_socket = sum(r["events_socket_errors"].values()), sum(r["soak_socket_errors"].values())
    events_errors = events["rejected"] + events["other"] + events_socket
    mark = " (!) errors counted" if events_errors else ""
    print(f"\n{rounds_note(r['rounds'], r['seconds_per_run'])}\n")
    print_table(
        [
            (
                "events (1 obs/request) vs hello-world" + mark,
                f"{r['events_rps']:.0f} req/s",
                f"{r['hello_rps']:.0f} req/s",
                f"{r['events_rps_ratio']:.2f} {spread(r['events_rps_ratios'])}",
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
                f"{r['events_vs_pgbench']:.2f} {spread(r['events_vs_pgbench_ratios'])}",
                "",
            ),
            ("  events per commit (mean)", f"{r['events_per_commit']:.1f}", "", "", ""),
            (
                "  events answers (all rounds): ok / refused / other / socket errors"
                + (" (!)" if events_errors else ""),
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
