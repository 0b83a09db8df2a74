"""How many series one forecast request may name: each is answered in turn (one not precomputed
holds a model slot; with ``as_of`` each is its family estimated anew), while the rate limit counts
the request once and the prediction log gets a row per series."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pefm.serving.http import ApiError
from pefm.serving.inference import MAX_AS_OF_SERIES, MAX_SERIES, check_request

OPENAPI = Path(__file__).resolve().parents[2] / "src/pefm/serving/openapi/inference.json"


def _ids(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"series_ids": _ids(51)}, "at most 50 series in one request"),
        ({"series_ids": _ids(6), "as_of": "2005-01-01"}, "at most 5 series with as_of (each is estimated anew)"),
    ],
)
def test_too_many_series_is_a_422_naming_series_ids(request_, message):
    with pytest.raises(ApiError) as refused:
        check_request(request_)
    assert (refused.value.status, refused.value.details) == (422, [{"field": "series_ids", "message": message}])


def test_as_many_as_the_caps_allow_are_taken():
    assert len(check_request({"series_ids": _ids(MAX_SERIES)})[0]) == 50
    ids, _, _, as_of, _, _ = check_request({"series_ids": _ids(MAX_AS_OF_SERIES), "as_of": "2005-01-01"})
    assert (len(ids), as_of.year) == (5, 2005)


def test_the_openapi_document_states_the_cap():
    schema = json.loads(OPENAPI.read_text())["components"]["schemas"]["ForecastRequest"]["properties"]["series_ids"]
    assert schema["maxItems"] == MAX_SERIES
