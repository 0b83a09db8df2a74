"""The ingest function as a real process: a vintage within the skew of now cannot rewrite what
was known, and a 409 for many conflicting values keeps the error contract."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from pefm.storage.observations import read_series
from tests.functions.conftest import ADMIN_TOKEN, TOKEN, start_function, stop

AUTH = {"authorization": f"Bearer {TOKEN}"}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
TS = "2009-10-01"


@pytest.fixture(scope="module")
def client(module_schema, tmp_path_factory):
    running = start_function(
        "ingest",
        module_schema,
        tmp_path_factory.mktemp("ingest"),
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
        K_REVISION="pefm-ingest-00001",
    )
    with running.client() as c:
        for sid, frequency in (("vin_stream", "M"), ("vin_copy", "M"), ("conf_group", "D"), ("conf_copy", "D")):
            body = {"name": sid, "frequency": frequency}
            assert c.put(f"/v1/series/{sid}", json=body, headers=AUTH).status_code == 201
        yield c
    stop(running)


def post(client, series_id: str, values: dict[str, float], vintage: datetime | None = None, headers=AUTH, query=""):
    body = {"series_id": series_id, "observations": [{"ts": ts, "value": v} for ts, v in values.items()]}
    if vintage is not None:
        body["vintage"] = vintage.isoformat()
    return client.post(f"/v1/observations{query}", json=body, headers=headers)


def known(url: str, series_id: str, as_of: datetime | None = None) -> float:
    with psycopg.connect(url) as conn:
        return float(read_series(conn, series_id, as_of=as_of)[pd.Timestamp(TS)])


@pytest.mark.parametrize(("series_id", "rows"), [("vin_stream", 1), ("vin_copy", 1001)])
def test_a_recent_past_vintage_without_backdate_neither_rewrites_as_of_reads_nor_loses_to_an_earlier_write(
    client, module_schema, series_id, rows
):
    """Within the skew (300 s) an earlier vintage sent with the ingest token alone is stored as the
    moment its write holds the locks: after the vintages already stored and the as-of reads made.
    A streamed event (group commit) and a large write (COPY, over 1000 rows) alike."""
    days = {ts.strftime("%Y-%m-%d"): 0.0 for ts in pd.date_range(end=TS, periods=rows, freq="MS")}

    def values(value: float) -> dict[str, float]:
        return {**days, TS: value}

    now = datetime.now(UTC)
    first = post(client, series_id, values(1.0), now - timedelta(seconds=200), ADMIN, "?backdate=1")
    assert first.status_code == 200 and first.json()["inserted"] == rows, first.text
    as_of = now - timedelta(seconds=60)
    assert known(module_schema, series_id, as_of) == 1.0
    second = post(client, series_id, values(2.0))
    assert second.status_code == 200 and second.json()["revised"] == 1, second.text
    third = post(client, series_id, values(3.0), now - timedelta(seconds=120))
    assert third.status_code == 200 and third.json()["revised"] == 1, third.text
    assert known(module_schema, series_id) == 3.0  # the later acknowledged write is the latest
    assert known(module_schema, series_id, as_of) == 1.0  # what was read as of then still reads so
    stored = datetime.fromisoformat(third.json()["vintage"])
    assert stored > datetime.fromisoformat(second.json()["vintage"]) > now  # stamped when written, not as sent
    with psycopg.connect(module_schema) as conn:
        vintages = conn.execute(
            "SELECT vintage FROM observations WHERE series_id = %s AND ts = %s ORDER BY vintage", (series_id, TS)
        ).fetchall()
    sent = [datetime.fromisoformat(answer.json()["vintage"]) for answer in (first, second, third)]
    assert [v for (v,) in vintages] == sent and sent[0] == now - timedelta(seconds=200)  # an admin's: as given


@pytest.mark.parametrize(("series_id", "rows"), [("conf_group", 1000), ("conf_copy", 1500)])
def test_a_409_for_many_conflicting_values_names_the_first_100_and_counts_the_rest(
    client, module_schema, series_id, rows
):
    """As every error: at most 100 details, then `truncated` and `more`; its `error` a count and the
    first conflict, not every one. A group-committed event (up to 1000 rows) and a COPY alike."""
    stamps = [ts.strftime("%Y-%m-%d") for ts in pd.date_range("2000-01-01", periods=rows, freq="D")]
    vintage = datetime(2020, 1, 1, tzinfo=UTC)
    stored = post(client, series_id, dict.fromkeys(stamps, 1.0), vintage, ADMIN, "?backdate=1")
    assert stored.status_code == 200 and stored.json()["inserted"] == rows, stored.text
    refused = post(client, series_id, dict.fromkeys(stamps, 2.0), vintage, ADMIN, "?backdate=1")
    assert refused.status_code == 409, refused.text
    answer = refused.json()
    assert len(answer["details"]) == 100 and answer["truncated"] is True and answer["more"] == rows - 100
    first = answer["details"][0]
    assert first["index"] == 0 and first["field"] == "observations[0].value"
    assert first["message"].startswith(f"{series_id} 2000-01-01: 1.0 is stored at vintage 2020-01-01")
    assert [d["index"] for d in answer["details"]] == list(range(100))  # the first, in date order
    assert f"differ at {rows} observations" in answer["error"] and "stored 1.0, got 2.0" in answer["error"]
    assert len(answer["error"]) < 300 and len(refused.content) < 20_000
    with psycopg.connect(module_schema) as conn:  # nothing of it written
        kept = conn.execute("SELECT count(*) FROM observations WHERE series_id = %s", (series_id,)).fetchone()[0]
    assert kept == rows
