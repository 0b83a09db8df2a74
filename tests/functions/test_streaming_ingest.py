"""Streamed events through the ingest function (a real process under func-python, a real
PostgreSQL): concurrent single-observation requests are committed together, each answered after
the commit that holds it; a bad event fails alone; nothing acknowledged is lost and nothing
refused is written. (The grouping rules themselves: tests/unit/test_group_commit.py; the rate:
bench/stream.py.)"""

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from tests.functions.conftest import ADMIN_TOKEN, TOKEN, start_function, stop

AUTH = {"authorization": f"Bearer {TOKEN}"}
DAY0 = datetime(1800, 1, 1)


@pytest.fixture(scope="module")
def ingest(module_schema, tmp_path_factory):
    running = start_function(
        "ingest",
        module_schema,
        tmp_path_factory.mktemp("streaming"),
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
        PEFM_INGEST_LINGER_MS="40",  # wide enough that requests sent together share a group here
    )
    with running.client() as client:
        for sid, transform in (
            ("ticks", "log_return"),
            ("ticks_b", "none"),
            ("soak_0", "log_return"),
            ("soak_1", "log_return"),
        ):
            body = {"name": sid, "frequency": "D", "transform": transform}
            assert client.put(f"/v1/series/{sid}", json=body, headers=AUTH).status_code in (200, 201)
    yield running
    stop(running)


def event(series: str, day: int, value: float) -> dict:
    return {"series_id": series, "observations": [{"ts": f"{DAY0 + timedelta(days=day):%Y-%m-%d}", "value": value}]}


async def post_all(
    url: str, bodies: list[dict], concurrency: int = 32, headers: dict | None = None
) -> list[httpx.Response]:
    """POST every body, ``concurrency`` at a time, in order of submission."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(body):
            async with gate:
                return await client.post("/v1/observations", json=body, headers=AUTH)

        return await asyncio.gather(*(one(body) for body in bodies))


def groups(client) -> tuple[float, float]:
    """(commits, events) so far from the function's group histogram."""
    text = client.get("/metrics").text
    total = re.search(r"^pefm_ingest_group_writes_sum\S* ([\d.e+]+)$", text, re.M)
    count = re.search(r"^pefm_ingest_group_writes_count\S* ([\d.e+]+)$", text, re.M)
    return float(count.group(1)), float(total.group(1))


def stored(url: str, series: str) -> dict[datetime, list[float]]:
    """Every stored value of the series by timestamp, oldest vintage first."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ts, value FROM observations WHERE series_id = %s ORDER BY ts, vintage", (series,)
        ).fetchall()
    out: dict[datetime, list[float]] = {}
    for ts, value in rows:
        out.setdefault(ts.astimezone(UTC).replace(tzinfo=None), []).append(value)
    return out


def test_concurrent_events_share_commits_and_each_is_answered_after_its_own(ingest, module_schema):
    with ingest.client() as client:
        commits_before, events_before = groups(client)
        bodies = [event("ticks", day, 100.0 + day) for day in range(120)]
        responses = asyncio.run(post_all(ingest.url, bodies))
        commits, events = groups(client)
    assert [r.status_code for r in responses] == [200] * 120, responses[0].text
    assert all(r.json()["inserted"] == 1 and r.json()["series"] == ["ticks"] for r in responses)
    assert events - events_before == 120
    assert commits - commits_before < 60  # grouped: on average more than two events per commit
    values = stored(module_schema, "ticks")
    assert {ts: v for ts, v in values.items()} == {DAY0 + timedelta(days=d): [100.0 + d] for d in range(120)}
    vintages = {r.json()["vintage"] for r in responses}
    assert len(vintages) == commits - commits_before  # one vintage per commit: the commit's now()


def test_a_bad_event_fails_alone_and_its_group_mates_are_written(ingest, module_schema):
    good = [event("ticks", 1000 + d, 50.0 + d) for d in range(10)]
    bad = [
        event("ticks", 2000, -1.0),  # log returns take no value <= 0
        {"series_id": "ticks", "observations": [{"ts": "1900-01-01T12:00:00Z", "value": 1.0}]},  # not midnight
        event("nosuch", 1, 1.0),  # not in the catalog
    ]
    bodies = good[:5] + bad + good[5:]
    responses = asyncio.run(post_all(ingest.url, bodies))
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 5 + [422, 422, 404] + [200] * 5
    assert responses[5].json()["details"][0]["field"] == "observations[0].value"
    assert responses[6].json()["details"][0]["field"] == "observations[0].ts"
    assert responses[7].json()["details"][0]["field"] == "series_id"
    values = stored(module_schema, "ticks")
    assert all(values[DAY0 + timedelta(days=1000 + d)] == [50.0 + d] for d in range(10))
    assert DAY0 + timedelta(days=2000) not in values
    assert datetime(1900, 1, 1, 12) not in values


def test_a_conflicting_vintage_fails_only_its_event(ingest, module_schema):
    vintage = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = {**event("ticks_b", 1, 1.0), "vintage": vintage}
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{ingest.url}/v1/observations?backdate=1", json=first, headers=admin).status_code == 200

    async def together():
        async with httpx.AsyncClient(base_url=ingest.url, timeout=60) as client:
            conflict = {**event("ticks_b", 1, 2.0), "vintage": vintage}  # another value at the same vintage
            return await asyncio.gather(
                client.post("/v1/observations?backdate=1", json=conflict, headers=admin),
                client.post("/v1/observations", json=event("ticks_b", 2, 3.0), headers=AUTH),
            )

    refused, written = asyncio.run(together())
    assert refused.status_code == 409 and "differ" in refused.json()["error"], refused.text
    assert written.status_code == 200 and written.json()["inserted"] == 1
    values = stored(module_schema, "ticks_b")
    assert values[DAY0 + timedelta(days=1)] == [1.0] and values[DAY0 + timedelta(days=2)] == [3.0]


def test_events_for_one_timestamp_are_applied_in_the_order_they_came(ingest, module_schema):
    async def in_order():
        async with httpx.AsyncClient(base_url=ingest.url, timeout=60) as client:
            first = asyncio.ensure_future(client.post("/v1/observations", json=event("ticks_b", 9, 1.0), headers=AUTH))
            await asyncio.sleep(0.01)  # within the linger: both queued, the first one first
            second = asyncio.ensure_future(client.post("/v1/observations", json=event("ticks_b", 9, 2.0), headers=AUTH))
            return await first, await second

    first, second = asyncio.run(in_order())
    assert first.json()["inserted"] == 1 and second.json()["revised"] == 1, (first.text, second.text)
    assert first.json()["vintage"] < second.json()["vintage"]  # separate commits, in order
    assert stored(module_schema, "ticks_b")[DAY0 + timedelta(days=9)] == [1.0, 2.0]


def test_a_cloudevent_is_streamed_like_json(ingest, module_schema):
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": "dev.pefm.observations",
        "ce-source": "test",
        "ce-id": "stream-1",
    }
    body = json.dumps(event("ticks_b", 20, 7.0))
    response = httpx.post(f"{ingest.url}/v1/observations", content=body, headers={**AUTH, **headers})
    assert response.status_code == 200 and response.json()["inserted"] == 1, response.text
    assert stored(module_schema, "ticks_b")[DAY0 + timedelta(days=20)] == [7.0]


def test_soak_nothing_acknowledged_is_lost_and_nothing_refused_is_written(ingest, module_schema):
    """A bounded soak (the 60-second one is bench/stream.py): 1,500 events over 16 connections,
    two series, every tenth refused."""
    bodies = [event(f"soak_{i % 2}", i // 2, -1.0 if i % 10 == 9 else 1.0 + i) for i in range(1500)]
    responses = asyncio.run(post_all(ingest.url, bodies, concurrency=16))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 422}
    acknowledged = {
        (b["series_id"], b["observations"][0]["ts"]) for b, s in zip(bodies, statuses, strict=True) if s == 200
    }
    refused = {(b["series_id"], b["observations"][0]["ts"]) for b, s in zip(bodies, statuses, strict=True) if s == 422}
    assert len(refused) == 150
    rows = [
        (series, f"{ts:%Y-%m-%d}")
        for series in ("soak_0", "soak_1")
        for ts, values in stored(module_schema, series).items()
        for _ in values
    ]
    assert len(rows) == len(acknowledged) and set(rows) == acknowledged  # each stored once; no refused one
