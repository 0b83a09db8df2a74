"""The Flagger side rendered from the rollout spec, and what PEFM writes on a cluster (against
tests/fake_kubernetes.py: no Kubernetes API runs here)."""

from pathlib import Path

import pytest
import yaml

from pefm.rollout.cluster import DEPLOY_ENV, ClusterTraffic, KnativeCluster
from pefm.rollout.flagger import HOOKS, flagger_query, render_canary
from pefm.rollout.spec import Check, RolloutSpec
from tests.fake_kubernetes import SERVICE, FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_canary_is_the_render_of_the_committed_spec():
    committed = [d for d in yaml.safe_load_all((ROOT / "knative" / "flagger" / "canary.yaml").read_text()) if d]
    assert committed == render_canary(RolloutSpec.load(ROOT / "knative" / "rollout.yaml")), (
        "knative/flagger/canary.yaml is stale: pefm knative canary --output knative/flagger/canary.yaml"
    )


def test_the_canary_carries_the_specs_steps_interval_threshold_and_ranges():
    spec = RolloutSpec(
        steps=(5, 20, 100),
        interval_seconds=45,
        threshold=3,
        checks=(
            Check("ok", "success_rate", min=0.95),
            Check("slow", "p99_latency_ms", max=250),
            Check("div", "divergence", max=0.3),
        ),
    )
    *templates, canary = render_canary(spec, namespace="prod", webhook_token="s3cret")
    analysis = canary["spec"]["analysis"]
    assert canary["spec"]["provider"] == "knative" and canary["spec"]["targetRef"]["name"] == SERVICE
    assert (analysis["stepWeights"], analysis["interval"], analysis["threshold"]) == ([5, 20, 100], "45s", 3)
    assert [(m["name"], m["thresholdRange"]) for m in analysis["metrics"]] == [
        ("ok", {"min": 0.95}),
        ("slow", {"max": 250}),
    ]  # divergence is the `rollout` webhook's check, not a query
    assert {t["metadata"]["name"] for t in templates} == {m["templateRef"]["name"] for m in analysis["metrics"]}
    assert [w["type"] for w in analysis["webhooks"]] == list(HOOKS)
    assert all(w["url"].startswith("http://pefm-rollout.prod/v1/flagger/") for w in analysis["webhooks"])
    assert all(w["metadata"] == {"token": "s3cret"} for w in analysis["webhooks"])
    assert "metadata" not in render_canary(spec)[-1]["spec"]["analysis"]["webhooks"][0]


def test_metric_queries_are_the_local_providers_with_flaggers_variables():
    query = flagger_query("success_rate")
    assert 'revision="{{ route }}"' in query and "[{{ interval }}]" in query and "{revision}" not in query
    assert "offset {{ interval }})" in query and "{window}" not in query  # series born in the window


@pytest.fixture
def api():
    api = FakeKubernetes()
    api.objects[("services", SERVICE)] = {
        "metadata": {"name": SERVICE, "generation": 3, "annotations": {"flagger.app/primary-revision": "r-1"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "0"}},
                "spec": {
                    "containers": [
                        {
                            "image": "ghcr.io/pefm/inference@sha256:" + "a" * 64,  # CD deploys by digest
                            "resources": {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}},
                            "env": [{"name": "PEFM_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db"}}}],
                        }
                    ]
                },
            },
            "traffic": [{"revisionName": "r-1", "percent": 100}, {"latestRevision": True, "percent": 0}],
        },
        "status": {
            "latestCreatedRevisionName": "r-2",
            "traffic": [{"revisionName": "r-1", "percent": 90}, {"revisionName": "r-2", "percent": 10}],
        },
    }
    return api


def test_deploy_changes_the_template_only_and_drops_the_last_deploys_extra_env(api):
    cluster = KnativeCluster(api, "pefm")
    assert cluster.deploy(SERVICE, "ar-2", image="ghcr.io/pefm/inference:2.0", env={"PEFM_FAULT_RATE": "0.5"}) == 4
    [(plural, name, body)] = api.patches
    assert (plural, name, list(body)) == ("services", SERVICE, ["spec"]) and list(body["spec"]) == ["template"]
    template = api.objects[("services", SERVICE)]["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/pefm/inference:2.0-cuda"  # a GPU Service stays CUDA
    assert [e["name"] for e in container["env"]] == ["PEFM_MODEL_VERSION", "PEFM_FAULT_RATE", "PEFM_DATABASE_URL"]
    assert "name" not in template["metadata"]  # Knative names the revision
    assert template["metadata"]["annotations"][DEPLOY_ENV] == "PEFM_FAULT_RATE"
    assert api.objects[("services", SERVICE)]["spec"]["traffic"][0] == {"revisionName": "r-1", "percent": 100}

    digest = "ghcr.io/pefm/inference@sha256:" + "b" * 64
    cluster.deploy(SERVICE, "ar-3", image=digest)
    container = api.objects[("services", SERVICE)]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == digest  # a digest names one build: never suffixed
    env = container["env"]
    assert [(e["name"], e.get("value")) for e in env] == [("PEFM_MODEL_VERSION", "ar-3"), ("PEFM_DATABASE_URL", None)]


def test_revisions_traffic_and_urls_read_from_the_service(api):
    api.revision("r-1", None)
    api.revision("r-2", "ar-2")
    cluster = KnativeCluster(api, "pefm", "https://{name}.{namespace}.svc")
    assert cluster.revisions(SERVICE) == ("r-1", "r-2")
    assert cluster.url("r-2") == "https://r-2.pefm.svc"
    traffic = ClusterTraffic(cluster, unpinned="ar-1")
    assert [(t.revision, t.percent) for t in traffic.traffic("inference")] == [("r-1", 90), ("r-2", 10)]
    assert traffic.revision_model_version("inference", "r-1") == "ar-1"  # unpinned: the serving version
    assert traffic.revision_model_version("inference", "r-2") == "ar-2"


def test_suspend_patches_the_canary(api):
    api.objects[("canaries", SERVICE)] = {"spec": {"suspend": False}}
    KnativeCluster(api, "pefm").suspend(SERVICE, True)
    assert api.objects[("canaries", SERVICE)]["spec"]["suspend"] is True
