"""The rollout analysis: a pure function from (spec, state, observations) to the next decision.

Phases follow Flagger: Initializing -> Progressing -> Promoting -> Succeeded, or RolledBack
(checks failed ``threshold`` times, or the smoke test / gates failed), with Paused in between
at an operator's request. No data is never good news: too few requests, or a check without a
value, means Wait, never Advance (and a wait of ``max_wait_seconds``, Rollback); but a check that
failed counts even while another has no value yet (a wait would hide it for as long as that one
stays empty), and so does one whose failure is
already conclusive before ``min_requests`` (``_foregone``: a low-traffic green failing every
request would otherwise serve users its errors for as long as the minimum takes to come).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pefm.rollout.spec import Check, RolloutSpec


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"


TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK}


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.INITIALIZING
    step: int = -1
    """Index into spec.steps of the current weight; -1 before the first step."""
    weight: int = 0
    """Percent of traffic on green."""
    failed_checks: int = 0


@dataclass(frozen=True)
class Observations:
    requests: int = 0
    """Requests green served in the window the analysis judges: since its step began, or since the
    last analysis that judged the checks, whichever is later."""
    metrics: dict[str, float | None] = field(default_factory=dict)
    smoke_ok: bool | None = None
    gates_passed: bool | None = None
    gates_reason: str = ""
    """Why the gates say what they say (``registry.candidate_verdict``'s words): a wait names what
    it waits for, a report still to come or gates to run again against the version serving now."""
    errors: dict[str, str] = field(default_factory=dict)
    """Metrics that could not be measured (the metrics source or a replay failed), with why: each
    fails its check, as Flagger counts a failed metric query, rather than wait for ever."""
    waited_seconds: float = 0.0
    """How long the window has gone on (since the step began, or the last analysis that judged
    the checks): what a wait is measured against ``spec.max_wait_seconds``."""


@dataclass(frozen=True)
class Decision:
    action: str
    """wait, advance, hold, promote, rollback."""
    state: State
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)


def decide(spec: RolloutSpec, state: State, obs: Observations) -> Decision:
    """The next step of a rollout; never mutates, never performs I/O."""
    if state.phase in TERMINAL:
        return Decision("hold", state, f"rollout is {state.phase.value}")
    if state.phase is Phase.PAUSED:
        return Decision("hold", state, "paused by an operator")
    if state.phase is Phase.PROMOTING:
        return Decision("promote", replace(state, phase=Phase.SUCCEEDED, weight=100), "green serves 100%")
    if state.phase is Phase.INITIALIZING:  # gates_passed: registry.candidate_verdict's (spec included)
        if obs.gates_passed is False:
            return _rollback(state, obs.gates_reason or "the candidate model failed its validation gates")
        if obs.gates_passed is None:
            return _wait(spec, state, obs, obs.gates_reason or "the candidate model has no gate report yet")
        if obs.smoke_ok is None:
            return _wait(spec, state, obs, "smoke test of the green revision not run yet")
        if not obs.smoke_ok:
            return _rollback(state, "smoke test of the green revision failed")
        return _advance(spec, state, "smoke test passed")
    # Progressing
    early = obs.requests < spec.min_requests
    judge = (lambda check: _foregone(spec, check, obs)) if early else (lambda c: c.judge(obs.metrics.get(c.metric)))
    results = [
        {**check.judge(None), "passed": False, "error": obs.errors[check.metric]}
        if check.metric in obs.errors
        else judge(check)
        for check in spec.checks
    ]
    failed = [r for r in results if r["passed"] is False]  # judged before any wait: no check hides another
    if early and not failed:
        return _wait(spec, state, obs, f"waiting for traffic: {obs.requests} of {spec.min_requests} requests on green")
    if failed:
        failures = state.failed_checks + 1
        detail = "; ".join(
            f"{r['check']} not measured: {r['error']}"
            if "error" in r
            else f"{r['check']} {r['value']:.4g} outside {r['range']}"
            for r in failed
        )
        if early and any("error" not in r for r in failed):
            detail += (
                f" ({obs.requests} of {spec.min_requests} requests on green; at the bound, as many failures"
                f" would come with probability below {EARLY_ALPHA:g})"
            )
        if failures >= spec.threshold:
            return _rollback(
                replace(state, failed_checks=failures),
                f"{failures} failed checks (threshold {spec.threshold}): {detail}",
                results,
            )
        return Decision(
            "hold",
            replace(state, failed_checks=failures),
            f"check failed ({failures} of {spec.threshold}): {detail}",
            results,
        )
    if missing := [r["check"] for r in results if r["passed"] is None]:
        return _wait(spec, state, obs, f"no data yet for {', '.join(missing)}", results)
    if state.weight >= 100:
        if spec.manual_promotion:
            return Decision("wait", state, "all checks passed at 100%: waiting for an operator to promote", results)
        return Decision(
            "promote", replace(state, phase=Phase.SUCCEEDED, weight=100), "all checks passed at 100%: promoted", results
        )
    return _advance(spec, state, "all checks passed", results)


EARLY_ALPHA = 0.001
"""How improbable a green's failures below ``min_requests`` must be at its success-rate bound to
count as a failed check before the minimum (a one-sided binomial test)."""


def _foregone(spec: RolloutSpec, check: Check, obs: Observations) -> dict[str, Any]:
    """A check judged before green served ``spec.min_requests``: failed (``passed`` False) where
    the evidence is already conclusive, else undecided (None). The success rate: when so many of
    its requests failed that a revision at the bound would fail as many with probability below
    ``EARLY_ALPHA`` (a binomial tail: 5 failures of 5 at a 0.99 bound, 3 of 10; not 1 of 10,
    which the requests still to come, however many the judging window holds, may outweigh).
    Divergence is measured on replays, not on green's count: it stands as it is. The p99 latency
    can still fall within its bound as fast requests come: it waits."""
    value = obs.metrics.get(check.metric)
    if value is not None and check.metric == "divergence":
        return check.judge(value)
    if value is not None and check.metric == "success_rate" and check.min is not None and obs.requests:
        from scipy.stats import binom

        failed = round((1 - value) * obs.requests)  # whole requests: no rounding error tips a rate at its bound
        p = float(binom.sf(failed - 1, obs.requests, 1 - check.min)) if failed else 1.0
        if p < EARLY_ALPHA:
            return {**check.judge(value), "p_value": p}
    return {**check.judge(value), "passed": None}


def _advance(spec: RolloutSpec, state: State, why: str, checks: list | None = None) -> Decision:
    step = state.step + 1
    weight = spec.steps[step]
    new = replace(state, phase=Phase.PROGRESSING, step=step, weight=weight)
    return Decision("advance", new, f"{why}: green to {weight}%", checks or [])


def _wait(spec: RolloutSpec, state: State, obs: Observations, why: str, checks: list | None = None) -> Decision:
    """Wait for what the analysis lacks, or roll back once it has waited ``spec.max_wait_seconds``."""
    if spec.max_wait_seconds is not None and obs.waited_seconds >= spec.max_wait_seconds:
        return _rollback(state, f"nothing to judge for {obs.waited_seconds:.0f} s (max_wait_seconds): {why}", checks)
    return Decision("wait", state, why, checks or [])


def _rollback(state: State, why: str, checks: list | None = None) -> Decision:
    return Decision("rollback", replace(state, phase=Phase.ROLLED_BACK, weight=0), why, checks or [])
