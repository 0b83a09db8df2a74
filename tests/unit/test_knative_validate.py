"""The manifests in knative/ and the validator that guards them (CRD schema + webhook rules)."""

import copy
from pathlib import Path

import pytest

from pefm.knative.validate import default_crds, render, service_schema, validate_documents

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["knative/base", "knative/overlays/cpu", "knative/overlays/gpu"]


@pytest.fixture(scope="module")
def schema():
    crds = default_crds()
    assert crds is not None, "../shared/knative-crds not found beside the repository"
    return service_schema(crds)


@pytest.fixture(scope="module")
def inference():
    [service] = [d for d in render(ROOT / "knative/base") if d["metadata"]["name"] == "pefm-inference"]
    return service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_with_kustomize_and_validates(schema, overlay):
    docs = render(ROOT / overlay)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {
        "pefm-ingest",
        "pefm-inference",
        "pefm-monitor",
    }
    assert {d["kind"] for d in docs} >= {"PingSource", "SinkBinding"}
    assert validate_documents(docs, schema) == []


def test_gpu_overlay_asks_for_a_gpu_and_enables_the_feature_flags(schema):
    docs = render(ROOT / "knative/overlays/gpu")
    [service] = [d for d in docs if d["metadata"]["name"] == "pefm-inference"]
    pod = service["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["runtimeClassName"] == "nvidia" and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    # without the config-features ConfigMap the same Service is refused
    problems = validate_documents([service], schema)
    assert {p.path for p in problems} == {
        "spec.template.spec.nodeSelector",
        "spec.template.spec.tolerations",
        "spec.template.spec.runtimeClassName",
    }


def broken(service, edit):
    doc = copy.deepcopy(service)
    edit(doc)
    return doc


CASES = [
    ("percents", lambda d: d["spec"]["traffic"][0].update(percent=90), "spec.traffic", "add up to 90"),
    ("over 100", lambda d: d["spec"]["traffic"][0].update(percent=101), "spec.traffic[0].percent", "0..100"),
    (
        "latest and name",
        lambda d: d["spec"]["traffic"][1].update(revisionName="pefm-inference-v1"),
        "spec.traffic[1]",
        "mutually exclusive",
    ),
    ("no name", lambda d: d["spec"]["traffic"][0].pop("revisionName"), "spec.traffic[0]", "needs a revisionName"),
    ("duplicate tag", lambda d: d["spec"]["traffic"][1].update(tag="blue"), "spec.traffic[1].tag", "used twice"),
    ("bad tag", lambda d: d["spec"]["traffic"][0].update(tag="Blue_1"), "spec.traffic[0].tag", "DNS-1035"),
    (
        "foreign revision",
        lambda d: d["spec"]["traffic"][0].update(revisionName="other-v1"),
        "spec.traffic[0].revisionName",
        "not a revision of",
    ),
    (
        "template name",
        lambda d: d["spec"]["template"]["metadata"].update(name="inference-v2"),
        "spec.template.metadata.name",
        "must start with",
    ),
    (
        "scale",
        lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
            {"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "2"}
        ),
        "annotations.autoscaling.knative.dev/min-scale",
        "above max-scale",
    ),
    (
        "utilization",
        lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
            {"autoscaling.knative.dev/target-utilization-percentage": "150"}
        ),
        "annotations.autoscaling.knative.dev/target-utilization-percentage",
        "1..100",
    ),
    (
        "retention",
        lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
            {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "two minutes"}
        ),
        "annotations.autoscaling.knative.dev/scale-to-zero-pod-retention-period",
        "not a duration",
    ),
    (
        "typo",
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolice="Always"),
        "spec.template.spec.containers[0]",
        "imagePullPolice",
    ),
    (
        "schema type",
        lambda d: d["spec"]["template"]["spec"].update(containerConcurrency="many"),
        "spec.template.spec.containerConcurrency",
        "not of type",
    ),
    (
        "node selector",
        lambda d: d["spec"]["template"]["spec"].update(nodeSelector={"gpu": "yes"}),
        "spec.template.spec.nodeSelector",
        "feature flag",
    ),
]


@pytest.mark.parametrize(("case", "edit", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_is_enforced(schema, inference, case, edit, path, message):
    problems = validate_documents([broken(inference, edit)], schema)
    assert any(p.path == path and message in p.message for p in problems), [str(p) for p in problems]


def test_the_cli_validates_and_fails_on_problems(tmp_path):
    import subprocess
    import sys

    import yaml

    ok = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "knative", "validate", *(str(ROOT / o) for o in OVERLAYS)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "knative/overlays/gpu: 3 Knative Service(s) valid" in ok.stdout
    bad = render(ROOT / "knative/base")
    bad[1]["spec"]["traffic"][0]["percent"] = 50
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(bad))
    refused = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "knative", "validate", str(path)], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "percents add up to 50, not 100" in refused.stderr
