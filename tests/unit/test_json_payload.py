"""The JSON observations payload: every problem named, up to the cap, and the rest counted."""

import json

import pytest

from pefm.data.json_payload import parse_observations_json
from pefm.data.validation import MAX_DETAILS, ValidationError


def test_a_series_that_is_all_bad_after_the_cap_is_still_refused_not_half_parsed():
    """Found by schemathesis: once the first series had used up the 100 details, the problems of a
    later series were only counted, the check compared kept details before and after, saw none
    added, and parsed the bad series (an empty index: a TypeError, a 500)."""
    bad = [{"ts": "not a date", "value": "x"} for _ in range(MAX_DETAILS)]
    body = {
        "series": [
            {"series_id": "a", "observations": bad},
            {"series_id": "b", "observations": [{"ts": "0173-11-24", "value": -1.0}]},
        ]
    }
    with pytest.raises(ValidationError) as caught:
        parse_observations_json(json.dumps(body).encode())
    error = caught.value
    assert len(error.details) == MAX_DETAILS and error.more >= MAX_DETAILS + 1  # a's second issues, and b's
    assert error.to_dict()["truncated"] is True
