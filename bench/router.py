"""Router benchmark: the local router's own cost, and a revision run as 2 replicas vs 1.

Side by side in one run, same client (wrk -t2 -c16, Debian's wrk), same duration:
- a hello-world func-python function called directly vs through the local router;
- POST /v1/forecast (one series, h=8) on an inference revision called directly vs through the
  router (the issue's target: >= 0.80 of the direct throughput);
- the same through the router to a revision of 2 replicas (least in flight), with how the
  router spread the requests over them in the measured runs (its pefm_router_routed counter).
Each comparison runs in ``--rounds`` alternating rounds (hello-world: direct, routed; then routed,
direct; ... Then the forecast: direct, 1 replica routed, 2 replicas routed; then the reverse
order; ...), the router's traffic switched to the revision under test before its run, each run
after an unmeasured ``WARM_UP`` seconds of the same load. The table gives the median over rounds
of each side's req/s and p99, and the median of the per-round ratios.
On this 2-core machine the replicas, the router and wrk share the same two cores, so 2 replicas
show the router's balancing more than added capacity. The table also gives what Knative's
autoscaler would run for wrk's 16 connections (the manifest's target and utilization).

Everything runs on this machine against an embedded PostgreSQL in a temporary directory.
Usage: python bench/router.py [--json PATH] [--duration SECONDS] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

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
from pefm.data.bundled import bundled  # noqa: E402
from pefm.data.loading import load_bundled  # noqa: E402
from pefm.forecasting.panel import MACRO_PANEL  # noqa: E402
from pefm.forecasting.registry import promote  # noqa: E402
from pefm.forecasting.training import train  # noqa: E402
from pefm.knative.scaling import manifest_scaling  # noqa: E402
from pefm.local.runtime import LocalRuntime, record_revision  # noqa: E402
from pefm.rollout.local import LocalRouter  # noqa: E402
from pefm.rollout.router import TrafficTarget  # noqa: E402
from pefm.storage.database import open_database  # noqa: E402
from tests.conftest import VERIFY_KEYS  # noqa: E402, F401  (importing it sets the run's signing key pair)

FORECAST = ROOT / "bench" / "post_forecast.lua"
CONNECTIONS = 16  # wrk's -c in harness.wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--duration", type=int, default=2, help="seconds per measured wrk run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds of the wrk runs")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    with tempfile.TemporaryDirectory(prefix="pefm-router-bench-") as tmp:
        run(Path(tmp), args)


def run(tmp: Path, args) -> None:
    db = open_database(Settings(home=tmp / "home"), schema="migrate")  # signing keys: tests.conftest
    with db.connection() as conn:
        load_bundled(conn, bundled(list(MACRO_PANEL)))
        version, _ = train(conn, "ensemble", list(MACRO_PANEL), spec=None)
        promote(conn, version.id)
    runtime = LocalRuntime(db.url, tmp / "logs")
    hello, hello_proc = start_hello()
    traffic = LocalRouter(db, {})
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            record_revision(conn, "hello", "hello-1", [hello])
        traffic.set_traffic("hello", [TrafficTarget("hello-1", 100, None)])
        one = runtime.start_revision("inference", "pefm-inference-one", model_version=version.id, replicas=1)
        runtime.start_revision("inference", "pefm-inference-two", model_version=version.id, replicas=2)
        traffic.set_traffic("inference", [TrafficTarget("pefm-inference-one", 100, "one")])
        hello_router = runtime.start_router("hello")
        router = runtime.start_router("inference")
        print(f"wrk: hello-world, direct and through the router: {args.rounds} alternating rounds ...", flush=True)
        hellos = alternate(
            {
                "direct": warmed(lambda seconds: wrk(f"{hello}/", seconds), args.duration),
                "routed": warmed(lambda seconds: wrk(f"{hello_router.url}/", seconds), args.duration),
            },
            args.rounds,
        )
        spread_by_replica: dict[int, float] = {}  # requests routed to each of the 2 replicas, measured runs

        def routed_to(revision: str, tag: str) -> None:
            traffic.set_traffic("inference", [TrafficTarget(revision, 100, tag)])
            _wait_routed_to(router.url, revision)

        def one_routed() -> dict:
            routed_to("pefm-inference-one", "one")
            return warmed(lambda seconds: wrk(f"{router.url}/v1/forecast", seconds, FORECAST), args.duration)()

        def two_routed() -> dict:
            routed_to("pefm-inference-two", "two")
            wrk(f"{router.url}/v1/forecast", WARM_UP, FORECAST)
            before = _routed(router.url, "pefm-inference-two")
            measured = wrk(f"{router.url}/v1/forecast", args.duration, FORECAST)
            for replica, after in _routed(router.url, "pefm-inference-two").items():
                spread_by_replica[replica] = spread_by_replica.get(replica, 0) + after - before.get(replica, 0)
            return measured

        print(
            f"wrk: forecast, direct and through the router (1 replica, 2 replicas): {args.rounds} alternating"
            " rounds ...",
            flush=True,
        )
        forecasts = alternate(
            {
                "direct": warmed(lambda seconds: wrk(f"{one.url}/v1/forecast", seconds, FORECAST), args.duration),
                "routed": one_routed,
                "two": two_routed,
            },
            args.rounds,
        )
    finally:
        runtime.stop_all()
        traffic.retire_all("inference")
        hello_proc.terminate()
        db.close()
    direct, routed, two = forecasts["direct"], forecasts["routed"], forecasts["two"]
    results = {
        "cpus": _cpus(),
        "rounds": args.rounds,
        "seconds_per_run": args.duration,
        "hello_rps": round(median_of(hellos["direct"], "rps"), 1),
        "hello_routed_rps": round(median_of(hellos["routed"], "rps"), 1),
        "hello_routed_ratio": round(median_ratio(hellos["routed"], hellos["direct"]), 3),
        "hello_routed_ratios": [round(x, 3) for x in ratios(hellos["routed"], hellos["direct"])],
        "hello_p99_ms": median_of(hellos["direct"], "p99_ms"),
        "hello_routed_p99_ms": median_of(hellos["routed"], "p99_ms"),
        "forecast_rps": round(median_of(direct, "rps"), 1),
        "forecast_routed_rps": round(median_of(routed, "rps"), 1),
        "forecast_routed_ratio": round(median_ratio(routed, direct), 3),
        "forecast_routed_ratios": [round(x, 3) for x in ratios(routed, direct)],
        "forecast_p99_ms": median_of(direct, "p99_ms"),
        "forecast_routed_p99_ms": median_of(routed, "p99_ms"),
        "forecast_two_replicas_rps": round(median_of(two, "rps"), 1),
        "two_vs_one_replica_ratio": round(median_ratio(two, routed), 3),
        "two_vs_one_replica_ratios": [round(x, 3) for x in ratios(two, routed)],
        "forecast_two_replicas_p99_ms": median_of(two, "p99_ms"),
        "two_replicas_spread": [n for _, n in sorted(spread_by_replica.items())],
        "knative_replicas_for_16": manifest_scaling("inference").replicas_for(CONNECTIONS),
    }
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _routed(url: str, revision: str) -> dict[int, float]:
    """The router's count of requests routed to each replica of ``revision``."""
    text = httpx.get(f"{url}/_router/metrics", timeout=10).text
    counts: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pefm_router_routed_total" and sample.labels["revision"] == revision:
                replica = int(sample.labels["replica"])
                counts[replica] = counts.get(replica, 0) + sample.value
    return counts


def _wait_routed_to(url: str, revision: str) -> None:
    """Until the router's table has caught up with the new block (it refreshes every 0.3 s)."""
    for _ in range(100):
        answer = httpx.post(f"{url}/v1/forecast", json={"series_id": "realgdp", "horizon": 8}, timeout=10)
        if answer.headers.get("x-pefm-routed-revision") == revision:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the router never routed to {revision}")


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def report(r: dict) -> None:
    rows = [
        (
            "hello-world req/s, through the router",
            r["hello_routed_rps"],
            r["hello_rps"],
            f"{r['hello_routed_ratio']} {spread(r['hello_routed_ratios'])}",
            "",
        ),
        ("hello-world p99 ms, through the router", r["hello_routed_p99_ms"], r["hello_p99_ms"], "", ""),
        (
            "forecast req/s, through the router (1 replica)",
            r["forecast_routed_rps"],
            r["forecast_rps"],
            f"{r['forecast_routed_ratio']} {spread(r['forecast_routed_ratios'])}",
            ">= 0.80",
        ),
        ("forecast p99 ms, through the router (1 replica)", r["forecast_routed_p99_ms"], r["forecast_p99_ms"], "", ""),
        (
            "forecast req/s, 2 replicas vs 1 (both routed)",
            r["forecast_two_replicas_rps"],
            r["forecast_routed_rps"],
            f"{r['two_vs_one_replica_ratio']} {spread(r['two_vs_one_replica_ratios'])}",
            "reported",
        ),
        ("forecast p99 ms, 2 replicas", r["forecast_two_replicas_p99_ms"], r["forecast_routed_p99_ms"], "", ""),
        ("requests per replica (2 replicas)", " / ".join(f"{n:.0f}" for n in r["two_replicas_spread"]), "", "", ""),
        ("replicas Knative would run at 16 in flight", r["knative_replicas_for_16"], "", "", "manifest"),
    ]
    print(f"\n{r['cpus']} CPUs; anchors: the same function called directly (2 replicas: 1 replica, routed)")
    print(f"{rounds_note(r['rounds'], r['seconds_per_run'])}\n")
    print_table(rows)


if __name__ == "__main__":
    main()
