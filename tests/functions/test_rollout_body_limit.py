"""The rollout API reads bodies of at most 64 KiB (a Flagger payload, a rollout to start: a few
hundred bytes), answered before they are parsed: a webhook's token is inside its body, so anyone
could otherwise make it parse 20 MiB of JSON on its event loop. Over real HTTP (hypercorn); the
Kubernetes API is the mock of ``tests/fake_kubernetes`` (no cluster here), never reached."""

from __future__ import annotations

import json

import httpx
import pytest

from pefm.config import Settings
from pefm.rollout.api import BODY_BYTES, create_rollout_app
from pefm.rollout.cluster import KnativeCluster
from pefm.rollout.controller import RolloutController
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.spec import RolloutSpec
from pefm.rollout.webhooks import FlaggerHooks
from pefm.storage.database import Database
from tests.fake_kubernetes import FakeKubernetes
from tests.functions.conftest import count
from tests.functions.test_flagger_webhooks import _serve

TOKEN, ADMIN = "limit-webhook-token", "limit-admin-token"


@pytest.fixture(scope="module")
def api(module_schema):
    db = Database(module_schema, max_size=2)
    settings = Settings(admin_token=ADMIN, webhook_token=TOKEN, database_url=module_schema)
    controller = RolloutController(db, None, DatabaseProvider(db), prober=None)
    hooks = FlaggerHooks(db, KnativeCluster(FakeKubernetes(), "pefm"), None, controller.provider, RolloutSpec())
    url, halt = _serve(create_rollout_app(settings, controller, RolloutSpec(), hooks))
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client
    halt()
    db.close()


def _padded(payload: dict, size: int) -> bytes:
    """``payload`` as JSON of exactly ``size`` bytes, padded in a metadata entry."""
    body = json.dumps({**payload, "metadata": {**payload.get("metadata", {}), "pad": ""}}).encode()
    return body.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(body)) + b'"')


def test_a_webhook_body_over_64_kib_is_a_413_before_its_token_is_looked_for(api):
    body = _padded({"name": "pefm-inference", "namespace": "pefm"}, BODY_BYTES + 1)  # no token
    response = api.post("/v1/flagger/event", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == f"body of {BODY_BYTES + 1} bytes is over the limit of 65536 bytes"


def test_a_webhook_body_of_64_kib_is_read(api):
    body = _padded({"name": "pefm-inference", "namespace": "pefm"}, BODY_BYTES)
    response = api.post("/v1/flagger/event", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 401, response.text  # read, parsed: it carries no token
    assert response.json()["details"][0]["field"] == "metadata.token"


def test_a_rollout_to_start_over_64_kib_is_a_413(api, module_schema):
    body = _padded({"green_revision": "pefm-inference-00002"}, BODY_BYTES + 1)
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    response = api.post("/v1/rollouts", content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert "over the limit of 65536 bytes" in response.json()["error"]
    assert count(module_schema, "rollouts") == 0
