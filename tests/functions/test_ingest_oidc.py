"""Knative Eventing deliveries to the ingest function (a real process under func-python, a real
PostgreSQL), authenticated by the OIDC token of the sender's ServiceAccount as a KafkaSource
sends them (knative/streaming). The API server that issues and publishes the keys is the local
stand-in of tests/oidc_issuer.py: no Kubernetes runs here."""

import psycopg
import pytest

from tests.functions.conftest import ADMIN_TOKEN, TOKEN, start_function, stop
from tests.oidc_issuer import AUDIENCE, SENDER, Issuer


@pytest.fixture(scope="module")
def issuer():
    running = Issuer()
    yield running
    running.close()


@pytest.fixture(scope="module")
def ingest(module_schema, tmp_path_factory, issuer):
    running = start_function(
        "ingest",
        module_schema,
        tmp_path_factory.mktemp("oidc"),
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
        PEFM_INGEST_OIDC_AUDIENCE=AUDIENCE,
        PEFM_INGEST_OIDC_SUBJECTS=f"system:serviceaccount:pefm:someone-else, {SENDER}",
        PEFM_KUBERNETES_API_URL=issuer.url,
    )
    with running.client() as client:
        body = {"name": "kafka ticks", "frequency": "D", "transform": "none"}
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert client.put("/v1/series/kafka", json=body, headers=headers).status_code in (200, 201)
    yield running
    stop(running)


def deliver(client, day: str, value: float, token: str | None):
    """A record of topic pefm.observations as the KafkaSource POSTs it (CloudEvents binary mode)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "dev.pefm.observations",
        "ce-source": "/apis/v1/namespaces/pefm/kafkasources/pefm-kafka-to-ingest#pefm.observations",
        "ce-id": f"partition:0/offset:{day}",
        "content-type": "application/json",
        **({"authorization": f"Bearer {token}"} if token else {}),
    }
    body = {"series_id": "kafka", "observations": [{"ts": day, "value": value}]}
    return client.post("/v1/observations", json=body, headers=headers)


def values(url: str) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT ts::date::text, value FROM observations WHERE series_id = 'kafka'").fetchall()
    return dict(rows)


def test_the_allowed_senders_token_ingests(ingest, issuer, module_schema):
    with ingest.client() as client:
        token = issuer.token()
        assert deliver(client, "2026-01-05", 1.5, token).status_code == 200
        assert deliver(client, "2026-01-06", 2.5, token).status_code == 200
        assert deliver(client, "2026-01-07", 3.5, TOKEN).status_code == 200  # the ingest token still works
    assert values(module_schema) == {"2026-01-05": 1.5, "2026-01-06": 2.5, "2026-01-07": 3.5}


def test_other_tokens_are_refused_and_write_nothing(ingest, issuer, module_schema):
    before = values(module_schema)
    with ingest.client() as client:
        stranger = deliver(client, "2026-02-02", 9.0, issuer.token(sub="system:serviceaccount:pefm:default"))
        assert stranger.status_code == 403
        assert "system:serviceaccount:pefm:default" in stranger.json()["error"]
        other_audience = issuer.token(aud=["serving.knative.dev/service/pefm/pefm-inference"])
        assert deliver(client, "2026-02-03", 9.0, other_audience).status_code == 401
        assert deliver(client, "2026-02-04", 9.0, None).status_code == 401
        # a sender's token never stands for the admin token (backdated vintages)
        backdated = client.post(
            "/v1/observations?backdate=1",
            json={"series_id": "kafka", "observations": [{"ts": "2026-02-05", "value": 9.0}]},
            headers={"authorization": f"Bearer {issuer.token()}"},
        )
        assert backdated.status_code == 403
    assert values(module_schema) == before


def test_a_senders_rate_limit_counts_its_subject_not_each_token(issuer, server_url, tmp_path):
    """The API server issues a sender a new token every hour, each a new bearer string: counted
    by token, each came with a fresh budget. The budget is the verified subject's."""
    import time

    from pefm.storage.database import Database
    from pefm.storage.migrate import migrate
    from tests.conftest import fresh_schema

    if time.time() % 86400 > 86340:  # not across a window's end (midnight UTC)
        time.sleep(86400 - time.time() % 86400 + 1)
    with fresh_schema(server_url, "o") as url:  # a start of its own, with a limit
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)
        running = start_function(
            "ingest",
            url,
            tmp_path,
            PEFM_INGEST_TOKEN=TOKEN,
            PEFM_RATE_LIMIT="2/86400",
            PEFM_INGEST_OIDC_AUDIENCE=AUDIENCE,
            PEFM_INGEST_OIDC_SUBJECTS=SENDER,
            PEFM_KUBERNETES_API_URL=issuer.url,
        )
        try:
            with running.client() as client:
                body = {"name": "kafka ticks", "frequency": "D", "transform": "none"}
                ingest = {"authorization": f"Bearer {TOKEN}"}  # the ingest token: a budget of its own
                assert client.put("/v1/series/kafka", json=body, headers=ingest).is_success
                days = ("2026-03-02", "2026-03-03", "2026-03-04")
                statuses = [deliver(client, day, 1.0, issuer.token(jti=day)).status_code for day in days]
                assert statuses == [200, 200, 429]
                assert deliver(client, "2026-03-05", 1.0, TOKEN).status_code == 200
        finally:
            stop(running)
