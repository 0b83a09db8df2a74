"""Demo activity for the browser tests and the dashboard benchmark: real data (one series that no
model covers), a serving model, a candidate and a gated one, with backtests (h = 1..8), two real
drift checks, a rollout of the candidate started by the real controller, and an hour of request
logs for two revisions (synthetic traffic: the one part that is made up, so the Serving page has
something to draw without running a load test)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.drift.monitor import check
from pefm.drift.policy import DriftPolicy
from pefm.forecasting.backtest import DEFAULT_HORIZON, BacktestSpec
from pefm.forecasting.gating import gate_candidate
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import record_revision
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.router import TrafficTarget
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database

SERIES = ["realgdp", "unemp", "infl", "tbilrate"]
UNCOVERED = ["aaa"]
"""Loaded, never trained on: the pages must say why nothing forecasts it."""
BLUE, GREEN = "pefm-inference-blue", "pefm-inference-green"


@dataclass(frozen=True)
class Demo:
    serving: str
    candidate: str
    rejected: str
    """A candidate the gates turned down."""
    rollout_id: int


def seed(db: Database) -> Demo:
    """Fill an empty, migrated database with the demo activity."""
    as_of, spec = datetime(2005, 1, 1, tzinfo=UTC), BacktestSpec(h=DEFAULT_HORIZON, windows=12)
    with db.connection() as conn:
        load_bundled(conn, bundled(SERIES + UNCOVERED))
        serving, _ = train(conn, "ar", SERIES, as_of=as_of, spec=spec)
        promote(conn, serving.id)
        candidate, _ = train(conn, "ets", SERIES, as_of=as_of, spec=spec)
        rejected, _ = train(conn, "naive", SERIES, as_of=as_of, spec=spec)
        gate_candidate(conn, rejected, serving)  # a candidate the gates turned down, with its report
        for _ in range(2):
            check(conn, DriftPolicy.load())
        conn.execute(
            """INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)
               SELECT now() - make_interval(secs => i * 3600.0 / 3000), 'inference', r, '/v1/forecast', 'POST',
                      CASE WHEN i %% 97 = 0 THEN 500 WHEN i %% 41 = 0 THEN 422 ELSE 200 END,
                      3 + (i %% 17) * 0.4 + CASE WHEN r = %s THEN 1.5 ELSE 0 END
               FROM unnest(ARRAY[%s, %s]) AS r, generate_series(1, 3000) AS i""",
            (GREEN, BLUE, GREEN),
        )
        conn.execute(
            """INSERT INTO revision_starts (ts, service, revision, start_to_ready_s)
               VALUES (now() - interval '50 minutes', 'inference', %s, 0.41),
                      (now() - interval '20 minutes', 'inference', %s, 0.44)""",
            (BLUE, GREEN),
        )
        conn.commit()
    rollout_id = blue_serving(db).start("inference", GREEN, RolloutSpec(), candidate.id)
    return Demo(serving.id, candidate.id, rejected.id, rollout_id)


def blue_serving(db: Database) -> RolloutController:
    """A controller of the local runtime with BLUE serving all inference traffic (no prober: the
    demo's rollouts are moved by hand or through the rollout API). BLUE and GREEN are recorded as
    the runtime records revisions, at addresses that cannot resolve (``.invalid``): the demo runs
    no revision process."""
    with db.connection() as conn:
        for revision in (BLUE, GREEN):
            record_revision(conn, "inference", revision, [f"http://{revision}.invalid"])
    router = LocalRouter(db, {"inference": "http://pefm-router.invalid"})  # no router runs either
    router.set_traffic("inference", [TrafficTarget(BLUE, 100, "blue")])
    return RolloutController(db, router, DatabaseProvider(db), prober=None)
