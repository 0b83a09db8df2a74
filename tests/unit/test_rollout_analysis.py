"""The pure rollout analysis: every path of decide()."""

import math

import pytest

from pefm.rollout.analysis import Observations, Phase, State, decide
from pefm.rollout.spec import Check, RolloutSpec

SPEC = RolloutSpec(steps=(10, 50, 100), threshold=2, min_requests=20)
HEALTHY = {"success_rate": 1.0, "p99_latency_ms": 20.0, "divergence": 0.05}


def progressing(weight=10, step=0, failed=0):
    return State(Phase.PROGRESSING, step=step, weight=weight, failed_checks=failed)


def test_initializing_needs_gates_and_a_smoke_test_then_takes_the_first_step():
    assert decide(SPEC, State(), Observations(gates_passed=None)).action == "wait"
    failed_gates = decide(SPEC, State(), Observations(gates_passed=False, smoke_ok=True))
    assert failed_gates.action == "rollback" and failed_gates.state.phase is Phase.ROLLED_BACK
    assert "validation gates" in failed_gates.reason
    assert decide(SPEC, State(), Observations(gates_passed=True)).action == "wait"
    smoke_failed = decide(SPEC, State(), Observations(gates_passed=True, smoke_ok=False))
    assert smoke_failed.action == "rollback" and "smoke test" in smoke_failed.reason
    first = decide(SPEC, State(), Observations(gates_passed=True, smoke_ok=True))
    assert first.action == "advance" and first.state == State(Phase.PROGRESSING, step=0, weight=10)


def test_healthy_steps_advance_to_100_then_promote():
    state = progressing()
    weights = []
    for _ in range(3):
        decision = decide(SPEC, state, Observations(requests=50, metrics=HEALTHY))
        state = decision.state
        weights.append(state.weight)
    assert weights == [50, 100, 100]
    assert decision.action == "promote" and state.phase is Phase.SUCCEEDED


def test_manual_promotion_waits_at_100_percent_for_an_operator():
    spec = RolloutSpec(steps=(10, 50, 100), threshold=2, min_requests=20, manual_promotion=True)
    decision = decide(spec, progressing(weight=100, step=2), Observations(requests=50, metrics=HEALTHY))
    assert decision.action == "wait" and decision.state.phase is Phase.PROGRESSING
    assert "operator" in decision.reason


def test_no_traffic_or_no_data_waits_and_never_advances():
    idle = decide(SPEC, progressing(), Observations(requests=0, metrics=HEALTHY))
    assert idle.action == "wait" and idle.state == progressing() and "0 of 20 requests" in idle.reason
    no_data = decide(SPEC, progressing(), Observations(requests=50, metrics={**HEALTHY, "divergence": None}))
    assert no_data.action == "wait" and "divergence" in no_data.reason


def test_failed_checks_hold_then_roll_back_at_the_threshold_with_the_reason():
    bad = {**HEALTHY, "success_rate": 0.9}
    first = decide(SPEC, progressing(), Observations(requests=50, metrics=bad))
    assert first.action == "hold" and first.state.failed_checks == 1 and first.state.weight == 10
    second = decide(SPEC, first.state, Observations(requests=50, metrics=bad))
    assert second.action == "rollback" and second.state.phase is Phase.ROLLED_BACK and second.state.weight == 0
    assert "success-rate 0.9 outside [0.99, inf]" in second.reason
    assert [c["passed"] for c in second.checks] == [False, True, True]


def test_divergence_alone_rolls_back():
    diverged = {**HEALTHY, "divergence": 3.0}
    state = decide(SPEC, progressing(failed=1), Observations(requests=50, metrics=diverged))
    assert state.action == "rollback" and "divergence 3 outside" in state.reason


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED])
def test_paused_and_finished_rollouts_hold(phase):
    state = State(phase, step=1, weight=50)
    decision = decide(SPEC, state, Observations(requests=99, metrics=HEALTHY, smoke_ok=True, gates_passed=True))
    assert decision.action == "hold" and decision.state == state


def test_spec_validation():
    with pytest.raises(ValueError, match="steps"):
        RolloutSpec(steps=(10, 5, 100))
    with pytest.raises(ValueError, match="unknown metric"):
        RolloutSpec(checks=(Check("x", "cpu", max=1),))
    spec = RolloutSpec.from_dict({"steps": [20, 100], "checks": [{"name": "ok", "metric": "success_rate", "min": 0.9}]})
    assert spec.steps == (20, 100) and spec.checks[0].min == 0.9
    with pytest.raises(ValueError, match="unknown rollout spec"):
        RolloutSpec.from_dict({"stepz": [100]})


def test_a_failed_check_counts_while_another_has_no_value_yet():
    """A wait for a check without a value hid the checks that had failed: a green failing a
    quarter of its requests, whose divergence never had a value, stayed at its step for good."""
    failing = Observations(requests=50, metrics={**HEALTHY, "success_rate": 0.75, "divergence": None})
    first = decide(SPEC, progressing(), failing)
    assert first.action == "hold" and first.state.failed_checks == 1 and "success-rate 0.75" in first.reason
    assert decide(SPEC, first.state, failing).action == "rollback"
    quiet = decide(SPEC, progressing(), Observations(requests=50, metrics={**HEALTHY, "divergence": None}))
    assert quiet.action == "wait" and "no data yet for divergence" in quiet.reason  # nothing failed: wait
    # green refused a request blue answered: its divergence is infinite, and fails
    refused = decide(SPEC, progressing(), Observations(requests=50, metrics={**HEALTHY, "divergence": math.inf}))
    assert refused.action == "hold" and "divergence inf" in refused.reason


def test_below_min_requests_a_check_failed_conclusively_counts():
    """Below min_requests every analysis waited: a low-traffic green failing every request, or
    refusing what blue answers, served its errors for as long as the minimum took to come. A
    failure counts early only where a revision at the bound would fail as many with probability
    below EARLY_ALPHA: the window judged at the minimum may hold many more requests, which could
    outweigh a few failures (helper-89: 1 error in 10 had rolled back a green whose window of 110
    passed)."""
    spec = RolloutSpec(steps=(10, 50, 100), threshold=2, min_requests=50)
    broken = {"success_rate": 0.0, "p99_latency_ms": 30000.0, "divergence": math.inf}
    first = decide(spec, progressing(), Observations(requests=49, metrics=broken))
    assert first.action == "hold" and first.state.failed_checks == 1
    assert "success-rate 0 outside" in first.reason and "divergence inf outside" in first.reason
    assert "49 of 50 requests on green" in first.reason
    # p99 latency may still come within its bound as fast requests arrive: not judged yet
    assert [c["passed"] for c in first.checks] == [False, None, False]
    assert decide(spec, first.state, Observations(requests=3, metrics=broken)).action == "rollback"

    # at a 0.99 bound: 3 failures in 10 would come with probability 1e-4 (conclusive), 2 in 10 with 0.004
    early = decide(spec, progressing(), Observations(requests=10, metrics={**HEALTHY, "success_rate": 0.7}))
    assert early.action == "hold" and "success-rate 0.7 outside" in early.reason
    assert decide(spec, progressing(), Observations(requests=10, metrics={**HEALTHY, "success_rate": 0.8})).action == (
        "wait"
    )
    one = RolloutSpec(steps=(10, 50, 100), threshold=1, min_requests=60)
    assert decide(one, progressing(), Observations(requests=10, metrics={**HEALTHY, "success_rate": 0.9})).action == (
        "wait"
    )
    # a slow green below the minimum, or one without failures yet, waits: nothing is decided
    slow = {**HEALTHY, "p99_latency_ms": 30000.0}
    assert decide(spec, progressing(), Observations(requests=49, metrics=slow)).action == "wait"
    assert decide(spec, progressing(), Observations(requests=49, metrics=HEALTHY)).action == "wait"


def test_a_wait_of_max_wait_seconds_rolls_back_naming_what_it_waited_for():
    """A green started in a quiet hour held the service (and its next rollout) for good."""
    spec = RolloutSpec(steps=(10, 50, 100), threshold=2, min_requests=20, max_wait_seconds=600)
    idle = decide(spec, progressing(), Observations(requests=3, metrics=HEALTHY, waited_seconds=599))
    assert idle.action == "wait"
    overdue = decide(spec, progressing(), Observations(requests=3, metrics=HEALTHY, waited_seconds=600))
    assert overdue.action == "rollback" and overdue.state.phase is Phase.ROLLED_BACK and overdue.state.weight == 0
    assert (
        overdue.reason
        == "nothing to judge for 600 s (max_wait_seconds): waiting for traffic: 3 of 20 requests on green"
    )
    no_data = decide(
        spec, progressing(), Observations(requests=50, metrics={**HEALTHY, "divergence": None}, waited_seconds=700)
    )
    assert no_data.action == "rollback" and no_data.reason.endswith("no data yet for divergence"), no_data.reason
    no_gates = decide(spec, State(), Observations(gates_passed=None, waited_seconds=601))
    assert no_gates.action == "rollback" and no_gates.reason.endswith("has no gate report yet"), no_gates.reason


def test_an_operators_promotion_and_a_spec_without_a_limit_wait_for_ever():
    manual = RolloutSpec(steps=(10, 50, 100), min_requests=20, manual_promotion=True, max_wait_seconds=60)
    at_100 = decide(
        manual, progressing(weight=100, step=2), Observations(requests=50, metrics=HEALTHY, waited_seconds=1e6)
    )
    assert at_100.action == "wait" and "operator" in at_100.reason
    patient = RolloutSpec(steps=(10, 50, 100), min_requests=20, max_wait_seconds=None)
    assert (
        decide(patient, progressing(), Observations(requests=0, metrics=HEALTHY, waited_seconds=1e9)).action == "wait"
    )
