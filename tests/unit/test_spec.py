"""The rollout spec refuses at load time what would break the analysis later."""

import pytest

from pefm.config import ConfigError
from pefm.rollout.spec import REPOSITORY_SPEC, RolloutSpec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # `min: 99%` loaded, then every decision raised TypeError (a str compared with a float) and
        # the controller retried every interval, holding the service; the Canary said min "99%"
        (
            "checks: [{name: ok, metric: success_rate, min: 99%}]",
            "check 'ok': min: expected a finite number, not '99%'",
        ),
        (
            "checks: [{name: ok, metric: success_rate, max: true}]",
            "check 'ok': max: expected a finite number, not True",
        ),
        ("checks: [{name: ok, metric: success_rate, max: .inf}]", "check 'ok': max: expected a finite number, not inf"),
        ("checks: [{name: ok, metric: success_rate, max: 1e999999}]", "check 'ok': max: expected a finite number"),
        ("checks: [{name: ok, metric: success_rate, min: 0.9, max: 0.5}]", "check 'ok': min 0.9 is above max 0.5"),
        ("checks: [{name: 7, metric: success_rate}]", "a check's name: expected a non-empty string, not 7"),
        ("checks: [success_rate]", "checks[0]: expected a mapping of name, metric, min and max, not 'success_rate'"),
        ("checks: [{name: ok, metric: success_rate, mni: 1}]", "checks[0]: expected a mapping of name, metric"),
        ("checks: {name: ok, metric: success_rate}", "checks: expected a list"),
        (
            "steps: [10, 50.5, 100]",
            "steps must rise strictly in whole percents from above 0 to 100, got [10, 50.5, 100]",
        ),
        ("steps: [true, 100]", "steps must rise strictly in whole percents"),
        ("steps: 100", "steps: expected a list, not 100"),
        ("interval_seconds: .nan", "interval_seconds: expected a number of seconds above 0, not nan"),
        ("interval_seconds: 30s", "interval_seconds: expected a number of seconds above 0, not '30s'"),
        ("interval_seconds: 0", "interval_seconds: expected a number of seconds above 0, not 0"),
        ("max_wait_seconds: 0", "max_wait_seconds: expected a number of seconds above 0, or null, not 0"),
        ("max_wait_seconds: .inf", "max_wait_seconds: expected a number of seconds above 0, or null, not inf"),
        ("threshold: 2.5", "threshold: expected a whole number of at least 1, not 2.5"),
        ("min_requests: '20'", "min_requests: expected a whole number of at least 1, not '20'"),
        ("synthetic_load: -1", "synthetic_load: expected a whole number of at least 0, not -1"),
        ("shadow_requests: 0", "shadow_requests: expected a whole number of at least 1, not 0"),
        ("require_gates: 'no'", "require_gates: expected true or false, not 'no'"),
        ("manual_promotion: 1", "manual_promotion: expected true or false, not 1"),
        ("smoke_request: realgdp", "smoke_request: expected a mapping (a forecast request), not 'realgdp'"),
        ("service: ''", "service: expected a non-empty string, not ''"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_at_load_naming_the_file_and_the_field(tmp_path, text, why):
    path = tmp_path / "rollout.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as refused:
        RolloutSpec.load(path)
    assert str(refused.value).startswith(f"rollout spec {path}: {why}"), str(refused.value)


def test_the_committed_spec_and_a_stored_one_load():
    spec = RolloutSpec.load(REPOSITORY_SPEC)
    assert RolloutSpec.from_dict(spec.to_dict()) == spec  # a rollout's stored spec, read back
    assert RolloutSpec.from_dict({"interval_seconds": 5, "checks": [{"name": "p", "metric": "divergence", "max": 1}]})
    assert RolloutSpec.from_dict({"max_wait_seconds": None}).max_wait_seconds is None  # null: waits for ever
