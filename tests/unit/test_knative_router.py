"""KnativeRouter against a fake Kubernetes API.

This is a mock because no cluster runs here: the fake holds one Service object and applies the
JSON merge patches the router sends (replacing lists whole, as the API server does). The test
asserts the exact patches, and that every Service the router produces passes the validator.
"""

import copy
from pathlib import Path

import pytest

from pefm.knative.validate import default_crds, render, service_schema, validate_documents
from pefm.rollout.knative import GROUP, PLURAL, VERSION, KnativeRouter
from pefm.rollout.router import TrafficTarget, blue_green, serving_revision

ROOT = Path(__file__).resolve().parents[2]


def merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeCustomObjectsApi:
    def __init__(self, service: dict):
        self.objects = {service["metadata"]["name"]: service}
        self.patches: list[dict] = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural, namespace) == (GROUP, VERSION, PLURAL, "pefm")
        return copy.deepcopy(self.objects[name])

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        assert (group, version, plural, namespace) == (GROUP, VERSION, PLURAL, "pefm")
        self.patches.append(copy.deepcopy(body))
        self.objects[name] = merge(self.objects[name], body)
        return self.objects[name]


@pytest.fixture
def api():
    [service] = [d for d in render(ROOT / "knative/base") if d["metadata"]["name"] == "pefm-inference"]
    return FakeCustomObjectsApi(service)


@pytest.fixture(scope="module")
def schema():
    return service_schema(default_crds())


def test_reads_the_traffic_block(api):
    router = KnativeRouter(api, "pefm")
    traffic = router.traffic("pefm-inference")
    assert traffic == [TrafficTarget("pefm-inference-v1", 100, "blue"), TrafficTarget(None, 0, "latest", latest=True)]
    assert serving_revision(traffic) == "pefm-inference-v1"


def test_create_green_then_split_then_promote_sends_exact_patches(api, schema):
    router = KnativeRouter(api, "pefm", domain="example.org")
    router.create_green("pefm-inference", "pefm-inference-v2", "ensemble-20261126-abc")
    template_patch = api.patches[-1]["spec"]
    assert template_patch["template"]["metadata"]["name"] == "pefm-inference-v2"
    assert template_patch["template"]["spec"]["containers"][0]["env"][0] == {
        "name": "PEFM_MODEL_VERSION",
        "value": "ensemble-20261126-abc",
    }
    assert template_patch["traffic"] == [
        {"percent": 100, "revisionName": "pefm-inference-v1", "tag": "blue"},
        {"percent": 0, "revisionName": "pefm-inference-v2", "tag": "green"},
        {"percent": 0, "latestRevision": True, "tag": "latest"},
    ]
    assert validate_documents([api.objects["pefm-inference"]], schema) == []

    for weight in (10, 50, 100):
        router.set_traffic("pefm-inference", blue_green("pefm-inference-v1", "pefm-inference-v2", weight))
        assert api.patches[-1] == {
            "spec": {
                "traffic": [
                    {"percent": 100 - weight, "revisionName": "pefm-inference-v1", "tag": "blue"},
                    {"percent": weight, "revisionName": "pefm-inference-v2", "tag": "green"},
                    {"percent": 0, "latestRevision": True, "tag": "latest"},
                ]
            }
        }
        assert validate_documents([api.objects["pefm-inference"]], schema) == []
    # after promotion blue is still in the block at 0% under its tag: rollback is one patch
    router.set_traffic("pefm-inference", blue_green("pefm-inference-v1", "pefm-inference-v2", 0))
    assert api.objects["pefm-inference"]["spec"]["traffic"][0] == {
        "percent": 100,
        "revisionName": "pefm-inference-v1",
        "tag": "blue",
    }
    assert router.tag_url("pefm-inference", "green") == "https://green-pefm-inference.pefm.example.org"


def test_a_revision_name_outside_the_service_is_refused(api):
    with pytest.raises(ValueError, match="must start with"):
        KnativeRouter(api, "pefm").create_green("pefm-inference", "other-v2", "m")
    assert api.patches == []


@pytest.mark.parametrize(
    ("serving_image", "expected"),
    [
        ("ghcr.io/pefm/inference:0.1.0", "ghcr.io/pefm/inference:abc123"),
        ("ghcr.io/pefm/inference:0.1.0-cuda", "ghcr.io/pefm/inference:abc123-cuda"),
    ],
)
def test_the_deployer_ships_a_new_image_in_the_variant_the_service_runs(api, schema, serving_image, expected):
    """KnativeDeployer (pefm retrain, pefm rollout deploy) creates green from CD's image; a CUDA
    Service gets the CUDA build of it."""
    from datetime import UTC, datetime

    from pefm.drift.retrain import KnativeDeployer
    from pefm.storage.model_versions import ModelVersion

    api.objects["pefm-inference"]["spec"]["template"]["spec"]["containers"][0]["image"] = serving_image
    now = datetime.now(UTC)
    version = ModelVersion(
        "ensemble-20261127-abc",
        "ensemble",
        {},
        ["realgdp"],
        now,
        "d",
        "a",
        None,
        None,
        "candidate",
        None,
        None,
        now,
        now,
    )
    revision = KnativeDeployer(KnativeRouter(api, "pefm"), image="ghcr.io/pefm/inference:abc123").deploy(version)
    assert revision == "pefm-inference-ensemble-20261127-abc"
    container = api.patches[-1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == expected
    assert container["env"][0] == {"name": "PEFM_MODEL_VERSION", "value": "ensemble-20261127-abc"}
    assert validate_documents([api.objects["pefm-inference"]], schema) == []
