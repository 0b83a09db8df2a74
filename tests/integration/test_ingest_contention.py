"""The ingest app in process (httpx over ASGI) on a real PostgreSQL, under contention: a series
held by a long write, payloads of many series, conflicts named, CSV problems' statuses; and
``known_now`` failing midway."""

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import httpx
import psycopg
import pytest

from pefm.config import Settings
from pefm.data.frequency import Frequency
from pefm.data.json_payload import MAX_SERIES
from pefm.serving.cache import MemoryCache
from pefm.serving.ingest import create_ingest_app
from pefm.serving.observability import ServiceMetrics
from pefm.storage.observations import known_now, take_turn
from pefm.storage.series import SeriesMeta, upsert_series

TOKEN, ADMIN = "ingest-token", "admin-token"
AUTH, ADMIN_AUTH = {"authorization": f"Bearer {TOKEN}"}, {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def app(db):
    with db.connection() as conn:
        for sid, frequency in (("x", Frequency.DAILY), ("y", Frequency.DAILY), ("bars", Frequency("1min"))):
            upsert_series(conn, SeriesMeta(id=sid, name=sid, frequency=frequency))
    settings = Settings(ingest_token=TOKEN, admin_token=ADMIN, ingest_linger_ms=5)
    return create_ingest_app(settings, db, ServiceMetrics("ingest", "test"), MemoryCache(None, 1 << 20), {})


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest", timeout=60)


def event(series: str, ts: str, value: float) -> dict:
    return {"series_id": series, "observations": [{"ts": ts, "value": value}]}


def test_a_series_held_by_a_long_write_holds_back_only_its_own_events(app, db, schema_url):
    """A large upload holds its series' turn for its whole COPY and merge (here: another
    transaction holding it). Events of other series are written meanwhile; the held series'
    events wait, and are then applied in the order they came."""

    async def run():
        async with client(app) as ingest:
            with psycopg.connect(schema_url) as holder:
                take_turn(holder, ["x"])  # until commit, as write_observations holds it
                xs = [
                    asyncio.ensure_future(
                        ingest.post("/v1/observations", json=event("x", "2020-01-01", v), headers=AUTH)
                    )
                    for v in (1.0, 2.0)
                ]
                await asyncio.sleep(0.2)
                ys = [
                    ingest.post("/v1/observations", json=event("y", f"2020-01-0{d}", 1.0), headers=AUTH)
                    for d in (1, 2, 3)
                ]
                answered = await asyncio.wait_for(asyncio.gather(*ys), 5)  # they waited for x's turn before
                assert [r.status_code for r in answered] == [200, 200, 200], [r.text for r in answered]
                assert not any(task.done() for task in xs)
            return await asyncio.wait_for(asyncio.gather(*xs), 5)

    first, second = asyncio.run(run())
    assert first.json()["inserted"] == 1 and second.json()["revised"] == 1, (first.text, second.text)
    assert first.json()["vintage"] < second.json()["vintage"]
    with db.connection() as conn:
        rows = conn.execute("SELECT value FROM observations WHERE series_id = 'x' ORDER BY vintage").fetchall()
    assert [value for (value,) in rows] == [1.0, 2.0]


def test_a_payload_of_too_many_series_is_refused_naming_the_limit(app):
    body = {"series": [event(f"s{i}", "2020-01-01", 1.0) for i in range(MAX_SERIES + 1)]}

    async def run():
        async with client(app) as ingest:
            return await ingest.post("/v1/observations", json=body, headers=AUTH)

    response = asyncio.run(run())
    assert response.status_code == 422, response.text
    (detail,) = response.json()["details"]
    assert detail["field"] == "series" and f"at most {MAX_SERIES}" in detail["message"]


def test_a_conflict_names_each_observation_and_a_bars_full_time(app):
    vintage = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bars = [{"ts": "2020-01-01T09:30:00Z", "value": 1.0}, {"ts": "2020-01-01T09:31:00Z", "value": 1.0}]
    days = [
        {"ts": f"{date(1900, 1, 1) + timedelta(days=i)}", "value": 1.0} for i in range(1001)
    ]  # a large write: on its own

    async def run():
        answers = []
        async with client(app) as ingest:
            for series, observations in (("bars", bars), ("x", days)):
                body = {"series_id": series, "vintage": vintage, "observations": observations}
                first = await ingest.post("/v1/observations?backdate=1", json=body, headers=ADMIN_AUTH)
                assert first.status_code == 200, first.text
                observations[1]["value"] = 2.0
                answers.append(await ingest.post("/v1/observations?backdate=1", json=body, headers=ADMIN_AUTH))
            csv = b"DATE,X\n1900-01-01,1\n1900-01-02,3\n"
            headers = {**ADMIN_AUTH, "content-type": "text/csv"}
            answers.append(
                await ingest.post(f"/v1/observations?backdate=1&vintage={vintage}", content=csv, headers=headers)
            )
        return answers

    bar, day, line = asyncio.run(run())
    assert bar.status_code == day.status_code == line.status_code == 409, (bar.text, day.text, line.text)
    (detail,) = bar.json()["details"]
    assert detail["index"] == 1 and detail["field"] == "observations[1].value"
    assert "bars 2020-01-01T09:31:00+00:00" in detail["message"] and "1.0 is stored" in detail["message"]
    assert "2020-01-01T09:31:00+00:00" in bar.json()["error"]
    (detail,) = day.json()["details"]
    assert detail["index"] == 1 and detail["field"] == "observations[1].value" and "x 1900-01-02:" in detail["message"]
    (detail,) = line.json()["details"]
    assert detail == {"line": 3, "field": "value", "message": detail["message"]} and "got 3.0" in detail["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"DATE,X\n2020-01-01,n/a\n2020-01-02,abc\n", 422, "value"),  # read, but not a number: invalid
        (b"DATE,X\n2020-13-01,1\n", 422, "date"),
        (b"DATE,X\n2020-01-01,1,2\n", 400, "row"),  # not a row of this CSV: malformed
        # the same, after more bad values than the details keep: malformed all the same
        (b"DATE,X\n" + b"".join(b"2020-01-%02d,x\n" % d for d in range(1, 29)) * 4 + b"2021-01-01,1,2\n", 400, "value"),
        (b"WHEN,X\n2020-01-01,1\n", 400, "header"),
        (b"DATE,X\n2020-01-01,\xff\n", 400, "body"),
    ],
)
def test_invalid_csv_values_are_422_and_unreadable_csv_is_400(app, body, status, field):
    async def run():
        async with client(app) as ingest:
            return await ingest.post("/v1/observations", content=body, headers={**AUTH, "content-type": "text/csv"})

    response = asyncio.run(run())
    assert response.status_code == status, response.text
    assert field in {d["field"] for d in response.json()["details"]}


def test_known_now_failing_midway_leaves_no_lock_on_the_connection(db, schema_url):
    """Session locks outlive the statement and the transaction: one left by a failed known_now
    stayed on the pooled connection, holding that series' writers back for good."""
    with psycopg.connect(schema_url) as writer, psycopg.connect(schema_url, autocommit=True) as reader:
        take_turn(writer, ["b"])  # a write of b under way: known_now waits for it
        reader.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            known_now(reader, ["a", "b"])  # a's lock taken first, then b's times out
        pid = reader.info.backend_pid
        held = reader.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,))
        assert held.fetchone()[0] == 0
        writer.commit()
        assert known_now(reader, ["a", "b"]) is not None


def days(series: str, n: int) -> dict:
    start = date(2000, 1, 1)
    return {
        "series_id": series,
        "observations": [{"ts": (start + timedelta(days=i)).isoformat(), "value": float(i)} for i in range(n)],
    }


def test_large_writes_take_turns_and_small_ones_pass_them(db, schema_url, monkeypatch):
    """One slot (PEFM_INGEST_LARGE_WRITES=1), held by an upload of over 1000 rows waiting for its
    series: another upload of many rows, a body said to be over 1 MiB (refused before it is
    read) and a chunked one of unsaid length (waiting once 1 MiB of it is read, not all of it),
    each wait their turn and then get a 503 naming why; a small event goes on meanwhile, and a
    body said to be over the body limit gets its 413 at once. A refused large write gives its
    slot back, and a slot given back lets the next one in."""
    monkeypatch.setattr("pefm.serving.ingest.LARGE_QUEUE_SECONDS", 0.5)
    with db.connection() as conn:
        for sid in ("x", "y"):
            upsert_series(conn, SeriesMeta(id=sid, name=sid, frequency=Frequency.DAILY))
    settings = Settings(ingest_token=TOKEN, ingest_linger_ms=5, ingest_large_writes=1, max_body_bytes=2 << 20)
    app = create_ingest_app(settings, db, ServiceMetrics("ingest", "test"), MemoryCache(None, 1 << 20), {})
    padded = (
        b'{"series": ['
        + b" " * (1024 * 1024)
        + b'{"series_id": "y", "observations": [{"ts": "2020-06-01", "value": 1}]}]}'
    )
    as_json = {**AUTH, "content-type": "application/json"}
    chunk, sent = 64 * 1024, []

    async def chunked():  # 1.5 MiB of unsaid length (no Content-Length: Transfer-Encoding chunked)
        body = b'{"series": [' + b" " * (1536 * 1024) + json.dumps(event("y", "2020-07-01", 1.0)).encode() + b"]}"
        for at in range(0, len(body), chunk):
            sent.append(at)
            yield body[at : at + chunk]

    async def run():
        async with client(app) as ingest:
            with psycopg.connect(schema_url) as holder:
                take_turn(holder, ["x"])
                upload = asyncio.ensure_future(
                    ingest.post("/v1/observations", json={"series": [days("x", 1500)]}, headers=AUTH)
                )
                await asyncio.sleep(0.3)
                many = await ingest.post("/v1/observations", json={"series": [days("y", 1001)]}, headers=AUTH)
                big = await ingest.post("/v1/observations", content=padded, headers=as_json)
                over = await ingest.post("/v1/observations", content=padded * 2, headers=as_json)
                unsaid = asyncio.ensure_future(ingest.post("/v1/observations", content=chunked(), headers=as_json))
                await asyncio.sleep(0.3)  # waiting for its turn
                read_while_waiting, sent[:] = len(sent), []
                unsaid = await unsaid
                small = await ingest.post("/v1/observations", json=event("y", "2020-01-01", 1.0), headers=AUTH)
                assert not upload.done()
            return await asyncio.wait_for(upload, 10), many, big, unsaid, read_while_waiting, small, over

    async def after():
        async with client(app) as ingest:
            invalid = await ingest.post("/v1/observations", json={"series": [days("z", 1001)]}, headers=AUTH)
            padded_answer = await ingest.post("/v1/observations", content=padded, headers=as_json)
            return invalid, padded_answer, await ingest.post("/v1/observations", content=chunked(), headers=as_json)

    upload, many, big, unsaid, read_while_waiting, small, over = asyncio.run(run())
    assert read_while_waiting == 1024 * 1024 // chunk + 1, read_while_waiting  # 1 MiB and the chunk past it
    assert over.status_code == 413 and "over the limit" in over.json()["error"], over.text  # at once, no turn
    assert upload.status_code == 200 and upload.json()["inserted"] == 1500, upload.text
    for refused in (many, big, unsaid):
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2", refused.text
        assert "busy with other large writes" in refused.json()["error"]
    assert small.status_code == 200 and small.json()["inserted"] == 1, small.text
    invalid, padded_answer, unsaid = asyncio.run(after())
    assert invalid.status_code == 404, invalid.text  # an unknown series, refused in its turn: the turn is given back
    assert padded_answer.status_code == 200 and padded_answer.json()["inserted"] == 1, padded_answer.text
    assert unsaid.status_code == 200 and unsaid.json()["inserted"] == 1, unsaid.text
    with db.connection() as conn:
        counts = dict(conn.execute("SELECT series_id, count(*) FROM observations GROUP BY series_id").fetchall())
    assert counts == {"x": 1500, "y": 3}
