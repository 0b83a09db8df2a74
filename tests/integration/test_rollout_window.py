"""Which requests an analysis judges: those green served since its step began or since the last
analysis that judged the checks, whichever is later (the controller over a real request log)."""

import time
from datetime import timedelta

import pytest

from pefm.local.runtime import record_revision
from pefm.rollout import controller as controller_module
from pefm.rollout.analysis import Phase
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.providers import DatabaseProvider, PrometheusProvider
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


@pytest.fixture
def no_log_lag(monkeypatch):
    """Rows inserted here are in the log at once: no flush to wait for (``LOG_LAG``)."""
    monkeypatch.setattr(controller_module, "LOG_LAG", timedelta(0))


def rollout_of_green(db, prober, **spec) -> tuple[RolloutController, int]:
    """A rollout of rev-green against rev-blue, at its first step (10%)."""
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})
    with db.connection() as conn:
        add_version(conn, "v-blue", "serving")
        add_version(conn, "v-green", "candidate", gated_against="v-blue")
        record_revision(conn, "inference", "rev-blue", ["http://127.0.0.1:9"], model_version="v-blue")
        record_revision(conn, "inference", "rev-green", ["http://127.0.0.1:9"], model_version="v-green")
    router.set_traffic("inference", sole("rev-blue"))
    controller = RolloutController(db, router, DatabaseProvider(db), prober)
    rollout_id = controller.start("inference", "rev-green", RolloutSpec(steps=(10, 50, 100), threshold=2, **spec))
    assert controller.tick(rollout_id).action == "advance"  # smoke test passed: 10%
    return controller, rollout_id


def test_a_burst_of_errors_fails_one_analysis_not_every_one_until_the_weight_moves(db, no_log_lag):
    """A burst of 2 errors (a replica restarting) failed the analysis that saw it, and every later
    one at that weight, whose window still began with the step: 50 clean requests later the
    healthy green was rolled back. Requests below min_requests still add up across analyses."""
    controller, rollout_id = rollout_of_green(db, Healthy(), min_requests=50)
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


class Load(Healthy):
    """Synthetic load served by green as the analysis sends it: the first batch with 2 errors."""

    def __init__(self, db):
        self.db, self.batches = db, 0

    def load(self, url, requests, body):
        errors = 2 if self.batches == 0 else 0
        self.batches += 1
        served(self.db, requests, errors)
        return requests - errors


def test_synthetic_load_is_judged_by_the_analysis_that_sent_it_and_no_other(db):
    """The window had ended when the analysis began, before its synthetic load: each batch was
    judged by its own analysis and again by the next, and one burst of 2 errors in 50 rolled the
    healthy green back (helper-88). Then it ended ``LOG_LAG`` before a moment right after the
    load, so each analysis judged the load of the one before (helper-89). With the real lag: the
    load is given that long to be logged."""
    controller, rollout_id = rollout_of_green(db, Load(db), min_requests=50, synthetic_load=50)
    first = controller.tick(rollout_id)
    assert first.action == "hold" and "success-rate 0.96" in first.reason, first.reason
    second = controller.tick(rollout_id)  # its own 50, all served
    assert second.action == "advance", second.reason


def test_what_was_served_in_the_last_moments_waits_for_the_next_analysis(db):
    """A request is logged a flush after it is served: the window ends ``LOG_LAG`` before the
    metrics are read, and what came since is judged by the next analysis."""
    controller, rollout_id = rollout_of_green(db, Healthy(), min_requests=10)
    served(db, 10, errors=10)  # just now: not in this window
    waiting = controller.tick(rollout_id)
    assert waiting.action == "wait" and "0 of 10 requests" in waiting.reason, waiting.reason
    with db.connection() as conn:  # as if the lag had passed
        conn.execute("UPDATE request_log SET ts = ts - interval '3 seconds'")
        conn.execute("UPDATE rollouts SET step_started_at = step_started_at - interval '3 seconds'")
    judged = controller.tick(rollout_id)
    assert judged.action == "hold" and "success-rate 0" in judged.reason, judged.reason


class LateDivergence(Healthy):
    """No divergence measured at first (no replays yet), then none."""

    def __init__(self):
        self.value = None

    def divergence(self, *args, **kwargs):
        return self.value


def test_a_wait_for_a_value_keeps_the_requests_counted_so_far(db, no_log_lag):
    """An analysis that waited for divergence's value had moved the window all the same: the
    requests counted towards min_requests were dropped, to be gathered again (helper-89)."""
    prober = LateDivergence()
    controller, rollout_id = rollout_of_green(db, prober, min_requests=10)
    served(db, 10)
    waiting = controller.tick(rollout_id)
    assert waiting.action == "wait" and "no data yet for divergence" in waiting.reason, waiting.reason
    prober.value = 0.0
    judged = controller.tick(rollout_id)  # the same 10 requests
    assert judged.action == "advance", judged.reason


def test_a_green_with_too_little_traffic_is_rolled_back_after_max_wait_seconds(db, no_log_lag):
    """The wait runs from the window's start: requests below the minimum do not restart it, and
    the registry follows the rollback as after a failed check."""
    controller, rollout_id = rollout_of_green(db, Healthy(), min_requests=50, max_wait_seconds=1.5)
    served(db, 10)
    assert "10 of 50 requests" in controller.tick(rollout_id).reason
    time.sleep(1.6)
    decision = controller.tick(rollout_id)
    assert decision.action == "rollback", decision.reason
    assert "(max_wait_seconds): waiting for traffic: 10 of 50 requests on green" in decision.reason
    assert controller.get(rollout_id).state.phase is Phase.ROLLED_BACK
    with db.connection() as conn:
        statuses = dict(conn.execute("SELECT id, status FROM model_versions").fetchall())
    assert statuses == {"v-blue": "serving", "v-green": "rejected"}, statuses


def test_a_pause_is_no_wait(db, no_log_lag):
    """A rollout paused for longer than max_wait_seconds in a quiet hour was rolled back, its
    candidate rejected, at the first analysis after the operator resumed it: the wait runs from
    the resume."""
    controller, rollout_id = rollout_of_green(db, Healthy(), min_requests=50, max_wait_seconds=1.5)
    served(db, 10)
    controller.pause(rollout_id)
    time.sleep(1.6)
    controller.resume(rollout_id)
    decision = controller.tick(rollout_id)
    assert decision.action == "wait" and "10 of 50 requests" in decision.reason, decision.reason
    time.sleep(1.6)
    assert controller.tick(rollout_id).action == "rollback"  # and then the wait counts again


def test_a_rollout_stored_before_max_wait_seconds_existed_waits_for_ever(db, no_log_lag):
    controller, rollout_id = rollout_of_green(db, Healthy(), min_requests=50)
    with db.connection() as conn:
        conn.execute("UPDATE rollouts SET spec = spec - 'max_wait_seconds', step_started_at = now() - interval '1 day'")
    assert controller.get(rollout_id).spec.max_wait_seconds is None
    assert controller.tick(rollout_id).action == "wait"


class Unreadable(Healthy):
    """A green whose replays cannot be compared (its answer has no dates, say)."""

    def divergence(self, *args, **kwargs):
        raise TypeError("'NoneType' object is not subscriptable")


@pytest.fixture
def refusing_prometheus():
    """A server that answers every query 401, as a managed Prometheus given a wrong password."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://pefm:prometheus-password@127.0.0.1:{server.server_port}"
    server.shutdown()


def test_metrics_that_cannot_be_read_fail_their_checks_until_green_is_rolled_back(db, no_log_lag, refusing_prometheus):
    """A Prometheus that does not answer (a closed port here), or replays that raise, had escaped
    each tick before it was judged: the rollout stayed at its weight, unmonitored, with no event
    and no max_wait_seconds. Each now fails its checks, as Flagger counts a failed query; saying
    why without the URL, whose password httpx's text repeats (the events are served to anyone)."""
    controller, rollout_id = rollout_of_green(db, Healthy(), max_wait_seconds=1)
    controller.provider = PrometheusProvider(refusing_prometheus, timeout=2)

    def a_window_long_enough_for_prometheus():  # MIN_WINDOW
        with db.connection() as conn:
            conn.execute("UPDATE rollouts SET step_started_at = step_started_at - interval '1 minute'")

    a_window_long_enough_for_prometheus()
    held = controller.tick(rollout_id)
    assert held.action == "hold", held.reason
    assert "success-rate not measured: the metrics could not be read (HTTPStatusError 401)" in held.reason
    assert [c["passed"] for c in held.checks] == [False, False, True], held.checks
    with db.connection() as conn:
        (events,) = conn.execute("SELECT string_agg(reason || checks::text, ' ') FROM rollout_events").fetchone()
    assert "prometheus-password" not in events
    controller.provider = PrometheusProvider("http://127.0.0.1:9", timeout=2)  # none there: refused
    a_window_long_enough_for_prometheus()
    rolled_back = controller.tick(rollout_id)
    assert rolled_back.action == "rollback" and "2 failed checks" in rolled_back.reason, rolled_back.reason


def test_replays_that_raise_fail_the_divergence_check_until_green_is_rolled_back(db, no_log_lag):
    controller, rollout_id = rollout_of_green(db, Unreadable())
    served(db, 50)
    held = controller.tick(rollout_id)
    assert held.action == "hold" and "divergence not measured: the replays failed (TypeError" in held.reason
    assert controller.tick(rollout_id).action == "rollback"


def test_the_next_analysis_waits_for_a_whole_interval_of_the_new_step(db):
    """An advance starts its step's window after the analysis that made it: ticked an interval
    after that analysis, the next one had a window LOG_LAG and an analysis short of the interval,
    below Prometheus's 30 s minimum at the default 30 s, and judged nothing."""
    controller, rollout_id = rollout_of_green(db, Healthy(), interval_seconds=30)
    assert 31.5 < controller.next_analysis_in(rollout_id) <= 32  # the step began a moment ago
    with db.connection() as conn:
        conn.execute("UPDATE rollouts SET step_started_at = step_started_at - interval '1 hour'")
    assert controller.next_analysis_in(rollout_id) == 30
