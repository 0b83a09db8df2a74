"""After what `make up` does to a fresh database (load the bundled data, train and promote the
default bundle), the inference function forecasts every series of the catalog, in its own units
and in model space."""

import math

import psycopg
import pytest

from pefm.data.transforms import model_space_unit
from tests.functions.conftest import start_function, stop, wait_for_model


@pytest.fixture(scope="module")
def made_up(bootstrapped):
    """A schema as `pefm up` leaves it before serving (`pefm bootstrap --load-bundled` is the same
    steps: migrate, load the bundled series, train and promote the default model)."""
    return bootstrapped.url


@pytest.fixture(scope="module")
def client(made_up, tmp_path_factory):
    running = start_function("inference", made_up, tmp_path_factory.mktemp("inference"), K_REVISION="pefm-every")
    with running.client() as c:
        yield c
    stop(running)


def catalog(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, unit, transform, frequency FROM series ORDER BY id").fetchall()
        last = dict(
            conn.execute(
                """SELECT DISTINCT ON (series_id) series_id, value FROM observations
                   ORDER BY series_id, ts DESC, vintage DESC"""
            ).fetchall()
        )
    return {r[0]: (r[1], r[2], r[3], last[r[0]]) for r in rows}


def test_every_catalog_series_is_forecast_in_its_units_and_in_model_space(made_up, client):
    series = catalog(made_up)
    assert len(series) == 17
    for series_id, (unit, transform, _freq, last) in series.items():
        level = client.post("/v1/forecast", json={"series_id": series_id, "horizon": 4})
        assert level.status_code == 200, f"{series_id}: {level.text}"
        [got] = level.json()["forecasts"]
        assert (got["space"], got["unit"], got["transform"]) == ("level", unit, transform), series_id
        model = client.post("/v1/forecast", json={"series_id": series_id, "horizon": 4, "space": "model"})
        assert model.status_code == 200, f"{series_id}: {model.text}"
        [in_model] = model.json()["forecasts"]
        assert (in_model["space"], in_model["unit"]) == ("model", model_space_unit(unit, transform))
        first, step = got["forecast"][0], in_model["forecast"][0]
        # the level's first step is the last stored value moved by the model-space step
        expected = {
            "none": step["mean"],
            "diff": last + step["mean"],
            "log_diff_ann": last * math.exp(step["mean"] / (100 * {"Q": 4, "M": 12}.get(_freq, 252))),
            "log_return": last * math.exp(step["mean"] / 100),
        }[transform]
        assert first["mean"] == pytest.approx(expected, rel=1e-9), series_id
        for row in got["forecast"]:
            assert row["lo-95"] <= row["lo-80"] <= row["mean"] <= row["hi-80"] <= row["hi-95"], series_id
        if transform == "log_return":  # prices stay positive: intervals from simulated price paths
            assert got["forecast"][-1]["lo-95"] > 0


def test_market_series_get_volatility_aware_intervals_from_garch(made_up, client):
    body = client.post("/v1/forecast", json={"series_id": "sp500", "horizon": 1, "space": "model"}).json()
    assert body["family"] == "bundle"
    with psycopg.connect(made_up) as conn:
        groups = conn.execute("SELECT params->'groups' FROM model_versions WHERE status = 'serving'").fetchone()[0]
    by_series = {s: g["family"] for g in groups for s in g["series_ids"]}
    assert by_series["sp500"] == by_series["nasdaq"] == by_series["wti"] == "garch"
    assert by_series["realgdp"] == by_series["aaa"] == "ensemble"


def test_level_space_beyond_the_precomputed_table_comes_from_the_model(client):
    """20 steps and a 50% level are not precomputed: the model's simulated paths answer them."""
    response = wait_for_model(client, {"series_id": "sp500", "horizon": 20, "levels": [50, 95]})
    assert response.status_code == 200, response.text
    rows = response.json()["forecasts"][0]["forecast"]
    assert len(rows) == 20 and response.json()["forecasts"][0]["space"] == "level"
    widths = [r["hi-95"] - r["lo-95"] for r in rows]
    assert widths[-1] > 3 * widths[0]  # a price's uncertainty grows with the horizon
    assert all(r["lo-95"] < r["lo-50"] < r["mean"] < r["hi-50"] < r["hi-95"] for r in rows)
