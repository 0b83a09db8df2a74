"""Which requests an analysis judges: those green served since its step began or since the last
analysis that judged the checks, whichever is later (the controller over a real request log)."""

from pefm.local.runtime import record_revision
from pefm.rollout.analysis import Phase
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.router import sole
from pefm.rollout.spec import RolloutSpec
from tests.integration.test_rollout_start import Healthy, add_version


def served(db, requests: int, errors: int = 0) -> None:
    """``requests`` served by green, the first ``errors`` of them 500s."""
    with db.connection() as conn:
        for i in range(requests):
            conn.execute(
                """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
                   VALUES ('inference', 'rev-green', '/v1/forecast', 'POST', %s, 10)""",
                (500 if i < errors else 200,),
            )


def test_a_burst_of_errors_fails_one_analysis_not_every_one_until_the_weight_moves(db):
    """A burst of 2 errors (a replica restarting) failed the analysis that saw it, and every later
    one at that weight, whose window still began with the step: 50 clean requests later the
    healthy green was rolled back. Requests below min_requests still add up across analyses."""
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})
    with db.connection() as conn:
        add_version(conn, "v-blue", "serving")
        add_version(conn, "v-green", "candidate", gated_against="v-blue")
        record_revision(conn, "inference", "rev-blue", ["http://127.0.0.1:9"], model_version="v-blue")
        record_revision(conn, "inference", "rev-green", ["http://127.0.0.1:9"], model_version="v-green")
    router.set_traffic("inference", sole("rev-blue"))
    controller = RolloutController(db, router, DatabaseProvider(db), Healthy())
    spec = RolloutSpec(steps=(10, 50, 100), threshold=2, min_requests=50)
    rollout_id = controller.start("inference", "rev-green", spec)
    assert controller.tick(rollout_id).action == "advance"  # smoke test passed: 10%

    served(db, 30)
    assert "30 of 50 requests" in controller.tick(rollout_id).reason
    served(db, 20, errors=2)  # judged with the 30 before: 48 of 50
    held = controller.tick(rollout_id)
    assert held.action == "hold" and "success-rate 0.96" in held.reason, held.reason

    served(db, 50)  # judged alone
    decision = controller.tick(rollout_id)
    assert decision.action == "advance", decision.reason
    rollout = controller.get(rollout_id)
    assert rollout.state.phase is Phase.PROGRESSING and rollout.state.weight == 50
