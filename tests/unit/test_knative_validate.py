"""The manifests in knative/ and the validator that guards them: Knative Services (CRD schema +
admission webhook rules), Flagger (CRD schema + the rules Flagger applies), core Kubernetes kinds
(upstream schemas, offline + what the cluster refuses), and the references between them."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

from pefm.knative.core_rules import KUBERNETES_VERSION
from pefm.knative.documents import is_knative_service, pod_template, selector_matches
from pefm.knative.validate import (
    CrdSchemas,
    default_crds,
    default_flagger_crds,
    render,
    service_schema,
    validate_all,
    validate_documents,
)

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["knative/overlays/cpu", "knative/overlays/gpu"]
KUSTOMIZATIONS = sorted(p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "knative").rglob("kustomization.yaml"))
SERVICES = {"pefm-ingest", "pefm-inference", "pefm-monitor"}
IMAGES = {"inference", "ingest", "monitor"}


@pytest.fixture(scope="module")
def crds() -> CrdSchemas:
    knative, flagger = default_crds(), default_flagger_crds()
    assert knative is not None, "../shared/knative-crds not found beside the repository"
    assert flagger is not None, "../shared/flagger-crds not found beside the repository"
    return CrdSchemas.load(knative, flagger)


@pytest.fixture(scope="module")
def schema():
    return service_schema(default_crds())


@pytest.fixture(scope="module")
def base() -> list[dict]:
    """What a cluster runs: the base and, applied beside it with its token, the Canary."""
    return render(ROOT / "knative/base") + render(ROOT / "knative/flagger")


def find(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def broken(docs: list[dict], kind: str, name: str, edit) -> list[dict]:
    """A deep copy of ``docs`` with ``edit`` applied to the one document kind/name."""
    docs = copy.deepcopy(docs)
    edit(find(docs, kind, name))
    return docs


def found(problems, path: str, message: str) -> bool:
    return any(p.path == path and message in p.message for p in problems)


# --- the manifests -------------------------------------------------------------------------------


def test_every_kustomization_is_found():
    """Guards the parametrization below: a new folder with a kustomization is validated too."""
    assert {"knative/base", "knative/rollout", "knative/jobs", "knative/flagger", "knative/eventing"} <= set(
        KUSTOMIZATIONS
    )
    assert set(OVERLAYS) <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_every_kustomization_renders_and_validates_clean(crds, folder):
    """Guards every folder a cluster may receive: rendered by kustomize, no problem of any family."""
    report = validate_all(render(ROOT / folder), crds)
    assert report.problems == [], [str(p) for p in report.problems]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_holds_the_whole_application(crds, overlay):
    """Guards what `kubectl apply -k` gives a cluster: the Services, the rollout API, the jobs with
    their RBAC, the policies and the eventing, each family validated; never the Canary, whose
    webhook token only `pefm knative canary --webhook-token` adds (an apply would wipe it)."""
    docs = render(ROOT / overlay)
    report = validate_all(docs, crds)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Service", s) for s in SERVICES} <= kinds
    assert not {kind for kind, _ in kinds} & {"Canary", "MetricTemplate"}
    assert {("Deployment", "pefm-rollout"), ("Job", "pefm-bootstrap"), ("CronJob", "pefm-retrain")} <= kinds
    assert ("CronJob", "pefm-retrain-on-drift") in kinds
    assert {("ServiceAccount", n) for n in ("pefm-rollout", "pefm-bootstrap", "pefm-retrain")} <= kinds
    assert {("Role", "pefm-rollout"), ("Role", "pefm-retrain"), ("NetworkPolicy", "pefm-monitor")} <= kinds
    assert {("NetworkPolicy", n) for n in ("pefm-rollout", "pefm-bootstrap", "pefm-retrain")} <= kinds
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "ConfigMap"} == {"pefm"}
    assert report.counts["Knative"] == 3 and report.counts.get("Flagger", 0) == 0
    assert report.counts["Kubernetes"] == len(docs) - 3 - 2  # all the rest, each against its schema
    assert sorted(report.unchecked) == ["PingSource/pefm-drift-check", "SinkBinding/pefm-ingest-to-monitor"]
    assert report.problems == []


def test_services_leave_revision_names_and_traffic_to_knative_and_flagger(base):
    """Guards the Flagger path: no BYO revision name, no traffic block, inference unpinned (it
    serves the registry's serving version) and scraped by Prometheus on its own /metrics."""
    for name in SERVICES:
        service = find(base, "Service", name)
        assert "name" not in service["spec"]["template"].get("metadata", {}), name
        assert "traffic" not in service["spec"], name
    inference = find(base, "Service", "pefm-inference")
    env = {e["name"] for e in inference["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "PEFM_MODEL_VERSION" not in env
    annotations = inference["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert find(base, "Service", "pefm-monitor")["metadata"]["labels"]["networking.knative.dev/visibility"] == (
        "cluster-local"
    )


def images(docs: list[dict]) -> dict[str, set[str]]:
    """Kind/name -> the images of its containers, wherever the pod spec sits."""
    out: dict[str, set[str]] = {}
    for doc in docs:
        spec = doc.get("spec", {})
        pod = (spec.get("jobTemplate", {}).get("spec", spec)).get("template", {}).get("spec", {})
        if pod.get("containers"):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = {c["image"] for c in pod["containers"]}
    return out


def test_images_come_from_the_kustomize_images_transformer():
    """Guards the image names CD overrides: the manifests name pefm-<image>, the base maps them to
    ghcr.io/pefm/<image>:0.1.0, the GPU overlay sets the -cuda tag the same way."""
    for path in (ROOT / "knative").rglob("*.yaml"):
        assert "ghcr.io/pefm/" not in "".join(
            line for line in path.read_text().splitlines(keepends=True) if line.strip().startswith("image:")
        ), path
    cpu, gpu = images(render(ROOT / "knative/overlays/cpu")), images(render(ROOT / "knative/overlays/gpu"))
    assert cpu["Service/pefm-ingest"] == {"ghcr.io/pefm/ingest:0.1.0"}
    assert cpu["Service/pefm-monitor"] == {"ghcr.io/pefm/monitor:0.1.0"}
    for workload in (
        "Service/pefm-inference",
        "Deployment/pefm-rollout",
        "Job/pefm-bootstrap",
        "CronJob/pefm-retrain",
        "CronJob/pefm-retrain-on-drift",
    ):
        assert cpu[workload] == {"ghcr.io/pefm/inference:0.1.0"}, workload
        assert gpu[workload] == {"ghcr.io/pefm/inference:0.1.0-cuda"}, workload


def test_a_kustomization_on_top_sets_every_image_by_its_stable_name(tmp_path):
    """Guards what CD does: its own kustomization over an overlay retags every image by the
    stable names ghcr.io/pefm/<image>, the CUDA one included."""
    for overlay, suffix in (("cpu", ""), ("gpu", "-cuda")):
        folder = tmp_path / overlay
        folder.mkdir()
        spec = {
            "resources": [os.path.relpath(ROOT / "knative/overlays" / overlay, folder)],
            "images": [{"name": f"ghcr.io/pefm/{image}", "newTag": f"abc123{suffix}"} for image in IMAGES],
        }
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        done = subprocess.run(
            ["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone", str(folder)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        found_images = set().union(*images([d for d in yaml.safe_load_all(done.stdout) if d]).values())
        assert found_images == {f"ghcr.io/pefm/{image}:abc123{suffix}" for image in IMAGES}


def test_gpu_overlay_asks_for_a_gpu_and_enables_the_feature_flags(schema):
    """Guards the GPU Service: a GPU limit, tolerations and runtime class, allowed by config-features."""
    docs = render(ROOT / "knative/overlays/gpu")
    service = find(docs, "Service", "pefm-inference")
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


def test_the_jobs_and_the_rollout_api_have_least_privilege(base):
    """Guards RBAC: bootstrap has no token; retraining may only get/patch the inference Service and
    read Canaries; the rollout API reads Services, revisions and Canaries and patches the one Canary."""
    bootstrap = find(base, "ServiceAccount", "pefm-bootstrap")
    assert bootstrap["automountServiceAccountToken"] is False
    assert find(base, "Job", "pefm-bootstrap")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not [d for d in base if d["kind"] == "RoleBinding" and d["subjects"][0]["name"] == "pefm-bootstrap"]
    assert not [d for d in base if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]

    def grants(role):
        return {
            (group, resource, verb, tuple(rule.get("resourceNames", ())))
            for rule in find(base, "Role", role)["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    knative, flagger = "serving.knative.dev", "flagger.app"
    assert grants("pefm-retrain") == {
        (knative, "services", "get", ("pefm-inference",)),
        (knative, "services", "patch", ("pefm-inference",)),
        *((flagger, "canaries", verb, ()) for verb in ("get", "list", "watch")),
    }
    assert grants("pefm-rollout") == {
        *((knative, r, verb, ()) for r in ("services", "revisions") for verb in ("get", "list", "watch")),
        *((flagger, "canaries", verb, ()) for verb in ("get", "list", "watch")),
        (flagger, "canaries", "patch", ("pefm-inference",)),
    }


def test_the_rollout_api_is_reachable_from_flagger_at_the_canary_urls(base):
    """Guards the webhook path: Service pefm-rollout:80 -> the Deployment's 8080, admitted from
    flagger-system, the monitoring Prometheus and namespace pefm only, and every Canary webhook URL
    names it."""
    service = find(base, "Service", "pefm-rollout")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    container = find(base, "Deployment", "pefm-rollout")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["pefm", "serve", "rollout", "--host", "0.0.0.0", "--port", "8080"]
    assert {e["name"] for e in container["env"]} == {
        "PEFM_DATABASE_URL",
        "PEFM_ADMIN_TOKEN",
        "PEFM_WEBHOOK_TOKEN",
        "PEFM_SHADOW_KEY",
        "PEFM_KNATIVE_NAMESPACE",
        "PEFM_VERIFY_KEYS",  # it loads a canary's two models to measure their divergence again
    }
    [rule] = find(base, "NetworkPolicy", "pefm-rollout")["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flagger-system"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {}},
    ]
    hooks = find(base, "Canary", "pefm-inference")["spec"]["analysis"]["webhooks"]
    assert hooks and all(h["url"].startswith("http://pefm-rollout.pefm/v1/flagger/") for h in hooks)


def monitoring_namespace() -> str:
    """Where terraform/modules/monitoring runs kube-prometheus-stack: its namespace variable's default
    (python-hcl2 keeps HCL's quotes)."""
    variables = hcl2.loads((ROOT / "terraform/modules/monitoring/variables.tf").read_text())["variable"]
    [default] = [body['"namespace"']["default"] for body in variables if '"namespace"' in body]
    return default.strip('"')


QUEUE_PROXY_USER_METRICS = 9091  # Knative's http-usermetric port, the monitoring module's PodMonitor scrapes it


def admits(policy: dict, namespace: str, port: int) -> bool:
    """Whether one NetworkPolicy lets pods of ``namespace`` (any pod there) connect to ``port``."""
    for rule in policy["spec"].get("ingress") or []:
        peers = rule.get("from")
        peer_ok = not peers or any(
            "namespaceSelector" in peer
            and not peer.get("podSelector")
            and selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
            for peer in peers
        )
        ports = rule.get("ports")
        if peer_ok and (not ports or any(p.get("port") == port for p in ports)):
            return True
    return False


def test_prometheus_reaches_every_pod_it_is_told_to_scrape(base):
    """Guards the scrapes against the NetworkPolicies: every pod annotated prometheus.io/scrape that an
    Ingress policy guards admits Prometheus's namespaces on its prometheus.io/port, and a Knative
    revision's also the monitoring module's on the queue-proxy's metrics port (the monitor's policy
    once admitted only Knative's data path: its drift gauges were a target forever down)."""
    policies = [d for d in base if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"].get("policyTypes", [])]
    monitoring = monitoring_namespace()
    prometheus = {monitoring, "flagger-system"}  # the latter: the Prometheus of Flagger's own Knative install
    scraped = set()
    for doc in base:
        found = pod_template(doc)
        template = doc.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        if not found or annotations.get("prometheus.io/scrape") != "true":
            continue
        scraped.add(doc["metadata"]["name"])
        guarding = [p for p in policies if selector_matches(p["spec"]["podSelector"], found[1])]
        wanted = {(ns, int(annotations["prometheus.io/port"])) for ns in prometheus}
        if is_knative_service(doc):
            wanted.add((monitoring, QUEUE_PROXY_USER_METRICS))
        for namespace, port in sorted(wanted):
            assert not guarding or any(admits(p, namespace, port) for p in guarding), (
                f"{doc['kind']}/{doc['metadata']['name']}: NetworkPolicy "
                f"{[p['metadata']['name'] for p in guarding]} drops Prometheus's scrapes from {namespace} on {port}"
            )
    assert {"pefm-monitor", "pefm-inference", "pefm-rollout"} <= scraped, scraped


def test_the_retrain_cronjobs_are_single_flight_and_the_bootstrap_job_applies(base):
    """Guards the jobs: fixed names (kubectl apply), no overlapping retraining, history kept short;
    the daily CronJob retrains, its on-drift twin (the same pod but for its command) every 15
    minutes answers the monitor's requests, which the cluster's monitor records."""
    crons = {name: find(base, "CronJob", name)["spec"] for name in ("pefm-retrain", "pefm-retrain-on-drift")}
    for cron in crons.values():
        assert cron["concurrencyPolicy"] == "Forbid" and cron["startingDeadlineSeconds"] > 0
        assert cron["successfulJobsHistoryLimit"] <= 5 and cron["failedJobsHistoryLimit"] <= 5
        container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "PEFM_KNATIVE_NAMESPACE", "value": "pefm"} in container["env"]
    daily, on_drift = (crons[n]["jobTemplate"]["spec"]["template"] for n in ("pefm-retrain", "pefm-retrain-on-drift"))
    assert daily["spec"]["containers"][0]["command"] == ["pefm", "retrain"]
    assert on_drift["spec"]["containers"][0]["command"] == ["pefm", "retrain", "--if-requested"]
    assert crons["pefm-retrain-on-drift"]["schedule"] == "*/15 * * * *"
    assert on_drift["spec"]["serviceAccountName"] == "pefm-retrain-on-drift"
    assert find(base, "Role", "pefm-retrain-on-drift")["rules"] == find(base, "Role", "pefm-retrain")["rules"]
    strip = lambda pod: {  # noqa: E731
        **pod["spec"],
        "serviceAccountName": None,
        "containers": [{**pod["spec"]["containers"][0], "command": None}],
    }
    assert strip(daily) == strip(on_drift) and daily["metadata"] == on_drift["metadata"]
    monitor = find(base, "Service", "pefm-monitor")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PEFM_RETRAIN", "value": "request"} in monitor["env"]
    job = find(base, "Job", "pefm-bootstrap")
    assert "generateName" not in job["metadata"] and "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["pefm", "bootstrap", "--load-bundled"]


@pytest.mark.parametrize("folder", ["knative/jobs", *OVERLAYS])
def test_each_retraining_cronjob_runs_as_its_own_bound_account(folder):
    """Guards the on-drift twin (a copy of knative/jobs/retrain renamed by a suffix): rendered alone
    or in an overlay, each CronJob runs as the ServiceAccount of its own name, which its own
    RoleBinding binds to its own Role (kustomize once bound both to the twin's: the daily CronJob,
    and CD's rollout Job running as pefm-retrain, would have had no rights)."""
    docs = render(ROOT / folder)
    for name in ("pefm-retrain", "pefm-retrain-on-drift"):
        cron = find(docs, "CronJob", name)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert cron["serviceAccountName"] == name
        binding = find(docs, "RoleBinding", name)
        assert [s["name"] for s in binding["subjects"]] == [name] and binding["roleRef"]["name"] == name
        assert find(docs, "ServiceAccount", name) and find(docs, "Role", name)


# --- Knative Services: the admission webhook's rules -------------------------------------------


def with_traffic(docs: list[dict]) -> list[dict]:
    """The inference Service of ``docs`` (and the ServiceAccount it runs as), given a blue/latest
    traffic block to break."""
    service = copy.deepcopy(find(docs, "Service", "pefm-inference"))
    service["spec"]["traffic"] = [
        {"revisionName": "pefm-inference-00001", "percent": 100, "tag": "blue"},
        {"latestRevision": True, "percent": 0, "tag": "latest"},
    ]
    return [service, find(docs, "ServiceAccount", "pefm-inference")]


KNATIVE_CASES = [
    ("percents", lambda d: d["spec"]["traffic"][0].update(percent=90), "spec.traffic", "add up to 90"),
    ("over 100", lambda d: d["spec"]["traffic"][0].update(percent=101), "spec.traffic[0].percent", "0..100"),
    (
        "latest and name",
        lambda d: d["spec"]["traffic"][1].update(revisionName="pefm-inference-00001"),
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
        lambda d: d["spec"]["template"].setdefault("metadata", {}).update(name="inference-v2"),
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


def test_a_valid_traffic_block_passes(crds, base):
    """The cases below start from a block the webhook accepts, so each failure is its edit's."""
    assert validate_all(with_traffic(base), crds).problems == []


@pytest.mark.parametrize(("case", "edit", "path", "message"), KNATIVE_CASES, ids=[c[0] for c in KNATIVE_CASES])
def test_each_knative_rule_is_enforced(crds, base, case, edit, path, message):
    docs = with_traffic(base)
    edit(docs[0])
    problems = validate_all(docs, crds).problems
    assert found(problems, path, message), [str(p) for p in problems]


# --- Flagger: CRD schema and the rules Flagger applies -----------------------------------------


def analysis(doc: dict) -> dict:
    return doc["spec"]["analysis"]


def set_weights(doc: dict, **weights) -> None:
    analysis(doc).pop("stepWeights")
    analysis(doc).update(weights)


def add_query_variable(doc: dict) -> None:
    doc["spec"]["query"] = doc["spec"]["query"].replace("{{ route }}", "{{ variables.revision }}", 1)


def with_traffic_on_target(docs: list[dict]) -> None:
    find(docs, "Service", "pefm-inference")["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]


CANARY = ("Canary", "pefm-inference")
SUCCESS = ("MetricTemplate", "pefm-success-rate")
FLAGGER_CASES = [
    (
        "missing template",
        CANARY,
        lambda d: analysis(d)["metrics"][0]["templateRef"].update(name="pefm-nope"),
        "spec.analysis.metrics[0].templateRef",
        "no MetricTemplate pefm-nope in namespace pefm",
    ),
    (
        "template in another namespace",
        CANARY,
        lambda d: analysis(d)["metrics"][0]["templateRef"].update(namespace="flagger-system"),
        "spec.analysis.metrics[0].templateRef",
        "no MetricTemplate pefm-success-rate in namespace flagger-system",
    ),
    (
        "no template, no query",
        CANARY,
        lambda d: analysis(d)["metrics"][0].pop("templateRef"),
        "spec.analysis.metrics[0]",
        "not a builtin",
    ),
    (
        "weights not rising",
        CANARY,
        lambda d: analysis(d).update(stepWeights=[10, 50, 25, 100]),
        "spec.analysis.stepWeights[2]",
        "does not rise above 50",
    ),
    (
        "weight out of range",
        CANARY,
        lambda d: analysis(d).update(stepWeights=[0, 50]),
        "spec.analysis.stepWeights[0]",
        "1..100",
    ),
    (
        "both styles",
        CANARY,
        lambda d: analysis(d).update(maxWeight=50),
        "spec.analysis",
        "not both",
    ),
    (
        "stepWeight alone",
        CANARY,
        lambda d: set_weights(d, stepWeight=10),
        "spec.analysis.maxWeight",
        "stepWeight needs maxWeight",
    ),
    (
        "maxWeight below step",
        CANARY,
        lambda d: set_weights(d, stepWeight=20, maxWeight=10),
        "spec.analysis.maxWeight",
        "20..100",
    ),
    (
        "duplicate metric",
        CANARY,
        lambda d: analysis(d)["metrics"][1].update(name=analysis(d)["metrics"][0]["name"]),
        "spec.analysis.metrics[1].name",
        "listed twice",
    ),
    (
        "range upside down",
        CANARY,
        lambda d: analysis(d)["metrics"][0].update(thresholdRange={"min": 0.99, "max": 0.5}),
        "spec.analysis.metrics[0].thresholdRange",
        "min 0.99 is above max 0.5",
    ),
    (
        "no bound",
        CANARY,
        lambda d: analysis(d)["metrics"][0].pop("thresholdRange"),
        "spec.analysis.metrics[0]",
        "could never fail",
    ),
    (
        "metric interval",
        CANARY,
        lambda d: analysis(d)["metrics"][0].update(interval="1min"),
        "spec.analysis.metrics[0].interval",
        "not a duration",
    ),
    (
        "duplicate webhook",
        CANARY,
        lambda d: analysis(d)["webhooks"][1].update(name=analysis(d)["webhooks"][0]["name"]),
        "spec.analysis.webhooks[1].name",
        "listed twice",
    ),
    (
        "webhook type (CRD enum)",
        CANARY,
        lambda d: analysis(d)["webhooks"][0].update(type="pre-promotion"),
        "spec.analysis.webhooks[0].type",
        "is not one of",
    ),
    (
        "webhook url without host",
        CANARY,
        lambda d: analysis(d)["webhooks"][0].update(url="pefm-rollout/v1/flagger/confirm-rollout"),
        "spec.analysis.webhooks[0].url",
        "http(s) URL with a host",
    ),
    (
        "webhook url to a missing Service",
        CANARY,
        lambda d: analysis(d)["webhooks"][0].update(url="http://pefm-rollut.pefm/v1/flagger/confirm-rollout"),
        "spec.analysis.webhooks[0].url",
        "no Service pefm-rollut in namespace pefm",
    ),
    (
        "webhook url on a closed port",
        CANARY,
        lambda d: analysis(d)["webhooks"][0].update(url="http://pefm-rollout.pefm:8080/v1/flagger/confirm-rollout"),
        "spec.analysis.webhooks[0].url",
        "does not expose port 8080",
    ),
    (
        "webhook timeout",
        CANARY,
        lambda d: analysis(d)["webhooks"][0].update(timeout="10sec"),
        "spec.analysis.webhooks[0].timeout",
        "not a duration",
    ),
    (
        "interval under 10s",
        CANARY,
        lambda d: analysis(d).update(interval="5s"),
        "spec.analysis.interval",
        "minimum of 10s",
    ),
    (
        "knative provider, Deployment target",
        CANARY,
        lambda d: d["spec"]["targetRef"].update(apiVersion="apps/v1", kind="Deployment"),
        "spec.targetRef",
        "provider knative needs",
    ),
    (
        "knative target, other provider",
        CANARY,
        lambda d: d["spec"].update(provider="kubernetes"),
        "spec.provider",
        "needs provider: knative",
    ),
    (
        "typo (strict CRD)",
        CANARY,
        lambda d: analysis(d).update(stepWeigths=[10, 20]),
        "spec.analysis",
        "stepWeigths",
    ),
    (
        "kind typo",
        CANARY,
        lambda d: d.update(kind="Canry"),
        "kind",
        "no Flagger CRD given defines Canry",
    ),
    (
        "prometheus without address",
        SUCCESS,
        lambda d: d["spec"]["provider"].pop("address"),
        "spec.provider.address",
        "needs an http(s) address",
    ),
    (
        "unknown template function",
        SUCCESS,
        lambda d: d["spec"].update(query=d["spec"]["query"].replace("{{ route }}", "{{ revision }}")),
        "spec.query",
        "{{ revision }}",
    ),
    (
        "template variable not set",
        SUCCESS,
        add_query_variable,
        "spec.analysis.metrics[0].templateVariables",
        "uses variables.revision, not set here",
    ),
]


@pytest.mark.parametrize(
    ("case", "target", "edit", "path", "message"), FLAGGER_CASES, ids=[c[0] for c in FLAGGER_CASES]
)
def test_each_flagger_rule_is_enforced(crds, base, case, target, edit, path, message):
    """Each edit of the real Canary or MetricTemplate (with the rest of the base beside it) is found."""
    problems = validate_all(broken(base, *target, edit), crds).problems
    assert found(problems, path, message), [str(p) for p in problems]


def test_the_canary_target_must_leave_traffic_and_revision_names_to_flagger(crds, base):
    docs = copy.deepcopy(base)
    with_traffic_on_target(docs)
    find(docs, "Service", "pefm-inference")["spec"]["template"]["metadata"]["name"] = "pefm-inference-v1"
    problems = [p for p in validate_all(docs, crds).problems if p.document == "Canary/pefm-inference"]
    assert {p.message.split(": ")[1] for p in problems} == {
        "Flagger canaries revisions that Knative names",
        "Flagger owns its traffic",
    }


def test_template_variables_set_on_the_metric_pass(crds, base):
    """The counterpart of 'template variable not set': defining it clears the problem."""
    docs = broken(base, *SUCCESS, add_query_variable)
    analysis(find(docs, *CANARY))["metrics"][0]["templateVariables"] = {"revision": "x"}
    assert validate_all(docs, crds).problems == []


def test_a_webhook_without_a_type_is_a_rollout_hook_as_flagger_takes_it(crds, base):
    """Flagger runs a webhook with no (or an empty) type at each analysis, as a rollout hook; the
    CRD's enum takes ""."""
    for missing in (None, ""):
        docs = copy.deepcopy(base)
        hook = analysis(find(docs, *CANARY))["webhooks"][0]
        hook.pop("type") if missing is None else hook.update(type=missing)
        assert validate_all(docs, crds).problems == [], missing


# --- core Kubernetes kinds: upstream schemas and the cluster's rules ---------------------------


def first_rule(doc: dict) -> dict:
    return doc["rules"][0]


CORE_CASES = [
    (
        "Job unknown field",
        ("Job", "pefm-bootstrap"),
        lambda d: d["spec"].update(backofLimit=3),
        "spec",
        "'backofLimit' was unexpected",
    ),
    (
        "Job restartPolicy",
        ("Job", "pefm-bootstrap"),
        lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Always"),
        "spec.template.spec.restartPolicy",
        "Never or OnFailure",
    ),
    (
        "Job with generateName",
        ("Job", "pefm-bootstrap"),
        lambda d: d["metadata"].update(generateName=d["metadata"].pop("name")),
        "metadata.name",
        "generateName works with kubectl create only",
    ),
    (
        "Job without its ServiceAccount",
        ("Job", "pefm-bootstrap"),
        lambda d: d["spec"]["template"]["spec"].update(serviceAccountName="pefm-rollot"),
        "spec.template.spec.serviceAccountName",
        "no ServiceAccount pefm-rollot",
    ),
    (
        "Job container typo",
        ("Job", "pefm-bootstrap"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(comand=["pefm"]),
        "spec.template.spec.containers[0]",
        "'comand' was unexpected",
    ),
    (
        "CronJob schedule",
        ("CronJob", "pefm-retrain"),
        lambda d: d["spec"].update(schedule="daily"),
        "spec.schedule",
        "five-field cron",
    ),
    (
        "CronJob policy type",
        ("CronJob", "pefm-retrain"),
        lambda d: d["spec"].update(concurrencyPolicy=False),
        "spec.concurrencyPolicy",
        "is not of type",
    ),
    (
        "Role verb typo",
        ("Role", "pefm-retrain"),
        lambda d: first_rule(d).update(verbs=["get", "pach"]),
        "rules[0].verbs",
        "unknown verb 'pach'",
    ),
    (
        "Role resource typo",
        ("Role", "pefm-retrain"),
        lambda d: first_rule(d).update(resources=["service"]),
        "rules[0].resources",
        "serving.knative.dev has no resource 'service'",
    ),
    (
        "Role field typo",
        ("Role", "pefm-retrain"),
        lambda d: first_rule(d).update(apiGroup=first_rule(d).pop("apiGroups")),
        "rules[0]",
        "'apiGroup' was unexpected",
    ),
    (
        "Role names on create",
        ("Role", "pefm-rollout"),
        lambda d: d["rules"][2].update(verbs=["create"]),
        "rules[2].resourceNames",
        "cannot restrict create",
    ),
    (
        "RoleBinding to a missing Role",
        ("RoleBinding", "pefm-retrain"),
        lambda d: d["roleRef"].update(name="pefm-retrian"),
        "roleRef.name",
        "no Role pefm-retrian",
    ),
    (
        "RoleBinding subject missing",
        ("RoleBinding", "pefm-retrain"),
        lambda d: d["subjects"][0].update(name="pefm-retrainer"),
        "subjects[0]",
        "no ServiceAccount pefm-retrainer",
    ),
    (
        "NetworkPolicy ingress of the wrong type",
        ("NetworkPolicy", "pefm-rollout"),
        lambda d: d["spec"].update(ingress={"from": []}),
        "spec.ingress",
        "is not of type 'array', 'null'",
    ),
    (
        "NetworkPolicy policy type",
        ("NetworkPolicy", "pefm-monitor"),
        lambda d: d["spec"].update(policyTypes=["Inbound"]),
        "spec.policyTypes[0]",
        "not Ingress or Egress",
    ),
    (
        "NetworkPolicy selecting nothing",
        ("NetworkPolicy", "pefm-monitor"),
        lambda d: d["spec"]["podSelector"]["matchLabels"].update({"serving.knative.dev/service": "pefm-monitr"}),
        "spec.podSelector",
        "selects none of the pods",
    ),
    (
        "Service selecting nothing",
        ("Service", "pefm-rollout"),
        lambda d: d["spec"]["selector"].update({"app.kubernetes.io/name": "pefm-rollot"}),
        "spec.selector",
        "selects none of the pods",
    ),
    (
        "Service target port name",
        ("Service", "pefm-rollout"),
        lambda d: d["spec"]["ports"][0].update(targetPort="web"),
        "spec.ports[0].targetPort",
        "no container port named 'web'",
    ),
    (
        "Deployment selector",
        ("Deployment", "pefm-rollout"),
        lambda d: d["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "rollout"}),
        "spec.selector",
        "does not match the pod template",
    ),
    (
        "removed API version",
        ("CronJob", "pefm-retrain"),
        lambda d: d.update(apiVersion="batch/v1beta1"),
        "kind",
        f"not Kubernetes {KUBERNETES_VERSION}",
    ),
    (
        "a CRD group posing as a core kind",
        ("Deployment", "pefm-rollout"),
        lambda d: d.update(apiVersion="apps.example.com/v1"),
        "kind",
        "unknown kind Deployment in apps.example.com/v1",
    ),
    (
        "SinkBinding subject missing",
        ("SinkBinding", "pefm-ingest-to-monitor"),
        lambda d: d["spec"]["subject"].update(name="pefm-ingester"),
        "spec.subject",
        "no Knative Service pefm-ingester",
    ),
    (
        "SinkBinding subject with a BYO revision name",
        ("Service", "pefm-ingest"),
        lambda d: d["spec"]["template"]["metadata"].update(name="pefm-ingest-v1"),
        "spec.subject",
        "K_SINK would never be injected",
    ),
    (
        "PingSource schedule",
        ("PingSource", "pefm-drift-check"),
        lambda d: d["spec"].update(schedule="every 6 hours"),
        "spec.schedule",
        "five-field cron",
    ),
]


@pytest.mark.parametrize(("case", "target", "edit", "path", "message"), CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_each_core_rule_is_enforced(crds, base, case, target, edit, path, message):
    """Each edit of a real manifest (with the rest of the base beside it) is found."""
    problems = validate_all(broken(base, *target, edit), crds).problems
    assert found(problems, path, message), [str(p) for p in problems]


def test_unknown_kinds_are_reported_and_eventing_is_named_unchecked(crds):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    ping = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {"name": "p"},
        "spec": {"schedule": "0 * * * *"},
    }
    report = validate_all([widget, ping], crds)
    assert [str(p) for p in report.problems] == [
        f"Widget/w: kind: unknown kind Widget in example.com/v1: not Knative, not Flagger, "
        f"not Kubernetes {KUBERNETES_VERSION}"
    ]
    assert report.unchecked == ["PingSource/p"] and sum(report.counts.values()) == 0


# --- the command -------------------------------------------------------------------------------


def pefm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pefm.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_the_cli_validates_and_counts_each_family():
    ok = pefm("knative", "validate", *OVERLAYS, "knative/jobs", "knative/flagger")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert f"knative/flagger: valid: Flagger 3 (Kubernetes {KUBERNETES_VERSION} schemas)" in lines
    assert f"knative/overlays/gpu: valid: Knative 3, Kubernetes 23 (Kubernetes {KUBERNETES_VERSION} schemas)" in (lines)
    assert f"knative/jobs: valid: Kubernetes 12 (Kubernetes {KUBERNETES_VERSION} schemas)" in lines
    assert (
        "knative/overlays/cpu: not schema-checked (no CRD for them here): "
        "PingSource/pefm-drift-check, SinkBinding/pefm-ingest-to-monitor"
    ) in lines


def test_the_cli_fails_on_problems_and_on_missing_crds(tmp_path, base):
    docs = broken(base, "Canary", "pefm-inference", lambda d: analysis(d).update(stepWeights=[50, 25]))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    refused = pefm("knative", "validate", str(path))
    assert refused.returncode == 1
    assert "Canary/pefm-inference: spec.analysis.stepWeights[1]: 25 does not rise above 50" in refused.stderr
    missing = pefm("knative", "validate", "--flagger-crds", str(tmp_path / "nowhere"), str(path))
    assert missing.returncode == 2 and "no Flagger CRDs found" in missing.stderr
