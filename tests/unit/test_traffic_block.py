"""A traffic block is checked as Knative's admission checks a Service's ``spec.traffic``: the
local router took duplicate tags (the second never routed), an entry naming neither a revision
nor the latest (every request a 503), both at once, and tags no route could be named after."""

import pytest

from pefm.rollout.router import TrafficTarget, blue_green, check_block, sole


def test_the_blocks_pefm_writes_pass():
    check_block(sole("pefm-inference-a"))
    for weight in (0, 5, 100):
        check_block(blue_green("pefm-inference-a", "pefm-inference-b", weight))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([TrafficTarget("a", 60), TrafficTarget("b", 30)], "add up to 100, got 90"),
        ([TrafficTarget("a", 120), TrafficTarget("b", -20)], "must be 0..100"),
        ([TrafficTarget("a", 50, "x"), TrafficTarget("b", 50, "x")], "traffic[0]: tag 'x' names two targets"),
        ([TrafficTarget(None, 100)], "traffic[0]: a revision name, or latestRevision"),
        ([TrafficTarget("a", 100, latest=True)], "traffic[0]: a revision name, or latestRevision"),
        ([TrafficTarget("a", 100, "Bad_Tag.")], "traffic[0]: tag 'Bad_Tag.' is not a DNS-1035 label"),
        ([TrafficTarget("a", 100), TrafficTarget(None, 0, "9lives", latest=True)], "traffic[1]: tag '9lives'"),
        ([TrafficTarget("a", 100, "x" * 64)], "is not a DNS-1035 label"),
    ],
)
def test_a_block_knative_would_refuse_is_refused_naming_the_entry(block, message):
    with pytest.raises(ValueError) as refused:
        check_block(block)
    assert message in str(refused.value)
