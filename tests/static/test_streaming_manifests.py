"""knative/streaming: Kafka -> KafkaSource -> pefm-ingest's POST /v1/observations, with a KafkaSink as
its dead letter. Rendered with ``kubectl kustomize`` (as ``kubectl apply -k`` gets it) and checked
beside knative/base, whose Services the source delivers to.

No CRD of Knative Eventing's Kafka components is kept beside the repository, so the fields these
manifests may use are listed here (KafkaSource sources.knative.dev/v1, KafkaSink and EventPolicy
eventing.knative.dev/v1alpha1, as eventing-kafka-broker 1.16 to 1.23 define them): the API server
would prune a misspelt field, and the setting would silently not exist. Every check is a function
returning its problems; each is run on the real manifests (no problem) and on a broken copy (the
problem it exists to catch), so none can pass whatever the manifests say.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pefm.knative.validate import CrdSchemas, default_crds, default_flagger_crds, render, validate_all
from pefm.serving.ingest import EVENT_TYPE

ROOT = Path(__file__).resolve().parents[2]
STREAMING = ROOT / "knative" / "streaming"
OPENAPI = ROOT / "src" / "pefm" / "serving" / "openapi" / "ingest.json"
NAMESPACE = "pefm"
SOURCE_API = "sources.knative.dev/v1"
KAFKA_SINK_API = "eventing.knative.dev/v1alpha1"
EVENT_POLICY_API = "eventing.knative.dev/v1alpha1"
INGEST = ("serving.knative.dev/v1", "Service", "pefm-ingest")
SINK_PATH = "/v1/observations"
ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"  # a Trigger's: a KafkaSource ignores it

# The fields each kind defines (checked against eventing-kafka-broker's CRDs, 1.16 to 1.23).
SOURCE_SPEC = {
    "bootstrapServers", "topics", "consumerGroup", "consumers", "initialOffset", "delivery",
    "ordering", "net", "sink", "ceOverrides",
}  # fmt: skip
DELIVERY = {"deadLetterSink", "retry", "backoffPolicy", "backoffDelay", "retryAfterMax", "timeout"}
DESTINATION = {"ref", "uri", "CACerts", "audience"}
NET = {
    "sasl": {"enable", "type", "user", "password", "tokenProvider", "roleARN"},
    "tls": {"enable", "caCert", "cert", "key"},
}
KAFKA_SINK_SPEC = {"topic", "bootstrapServers", "numPartitions", "replicationFactor", "contentMode", "auth"}
EVENT_POLICY_SPEC = {"to", "from", "filters"}
# The keys a KafkaSink reads from its auth Secret; the source's secretKeyRefs use the same ones, so
# one Secret serves both.
KAFKA_SECRET_KEYS = {"protocol", "sasl.mechanism", "user", "password", "ca.crt", "user.crt", "user.key"}
DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


@pytest.fixture(scope="module")
def streaming() -> list[dict[str, Any]]:
    """The folder as `kubectl apply -k knative/streaming` gets it."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with kustomize) is needed to render knative/streaming")
    return render(STREAMING)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    """What the source delivers to: the base, as the cpu overlay renders it."""
    return render(ROOT / "knative" / "overlays" / "cpu")


# --- helpers -------------------------------------------------------------------------------------


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d.get("kind") == kind]
    return doc


def seconds(duration: str) -> float | None:
    """An ISO 8601 duration of the PT..H..M..S form in seconds; None when it is not one."""
    match = DURATION.match(str(duration))
    if not match or not any(match.groups()):
        return None
    hours, minutes, secs = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def unknown(fields: dict[str, Any] | None, known: set[str], where: str) -> list[str]:
    return [f"{where}.{name}: not a field of this kind" for name in sorted(set(fields or {}) - known)]


def secret_refs(node: Any) -> list[dict[str, Any]]:
    """Every secretKeyRef under ``node``."""
    if isinstance(node, dict):
        found = [node["secretKeyRef"]] if isinstance(node.get("secretKeyRef"), dict) else []
        return found + [ref for value in node.values() for ref in secret_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in secret_refs(value)]
    return []


def ingest_service(base: list[dict[str, Any]]) -> dict[str, Any]:
    api, kind, name = INGEST
    [service] = [d for d in base if (d["apiVersion"], d["kind"], d["metadata"]["name"]) == (api, kind, name)]
    return service


# --- the checks ----------------------------------------------------------------------------------


def kustomization_problems(folder: Path) -> list[str]:
    """The kustomization lists every manifest of the folder (and nothing that is not there), puts
    them in namespace pefm, and every manifest opens with a comment saying what it is and needs."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = set(spec.get("resources", []))
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    out = [f"{name}: not listed in resources" for name in sorted(present - listed)]
    out += [f"{name}: listed but missing" for name in sorted(listed - present)]
    if spec.get("namespace") != NAMESPACE:
        out.append(f"namespace: {spec.get('namespace')!r}, not {NAMESPACE!r}")
    for name in sorted(present | {"kustomization.yaml"}):
        text = (folder / name).read_text()
        header = "\n".join(line for line in text.splitlines()[:40] if line.startswith("#"))
        if not text.startswith("# "):
            out.append(f"{name}: no comment header")
        elif "Requires" not in header and name != "kustomization.yaml":
            out.append(f"{name}: its header does not say what it requires")
    return out


def source_problems(docs: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[str]:
    """One KafkaSource, of the current API, using only fields the kind has; its sink is the ingest
    Service's POST /v1/observations, in the same namespace; it delivers in order; no annotation
    that a KafkaSource ignores."""
    sources = [d for d in docs if d.get("kind") == "KafkaSource"]
    if len(sources) != 1:
        return [f"{len(sources)} KafkaSources, not 1"]
    [source] = sources
    out = []
    if source.get("apiVersion") != SOURCE_API:
        out.append(f"apiVersion {source.get('apiVersion')}, not {SOURCE_API}")
    spec = source.get("spec") or {}
    out += unknown(spec, SOURCE_SPEC, "spec")
    out += unknown(spec.get("sink"), DESTINATION, "spec.sink")
    out += unknown(spec.get("delivery"), DELIVERY, "spec.delivery")
    for part, fields in NET.items():
        out += unknown((spec.get("net") or {}).get(part), fields, f"spec.net.{part}")
    if not spec.get("topics") or not spec.get("bootstrapServers"):
        out.append("spec.topics and spec.bootstrapServers are required")
    if not spec.get("consumerGroup"):
        out.append("spec.consumerGroup: unset, Knative makes a random one and a re-created source starts over")
    sink = spec.get("sink") or {}
    ref = sink.get("ref") or {}
    if (ref.get("apiVersion"), ref.get("kind"), ref.get("name")) != INGEST:
        out.append(f"spec.sink.ref: {ref}, not the Knative Service pefm-ingest")
    if ref.get("namespace") not in (None, NAMESPACE):
        out.append(f"spec.sink.ref.namespace: {ref.get('namespace')}")
    if sink.get("uri") != SINK_PATH:
        out.append(f"spec.sink.uri: {sink.get('uri')!r}, not {SINK_PATH!r}")
    paths = json.loads(OPENAPI.read_text())["paths"]
    if "post" not in paths.get(sink.get("uri"), {}):
        out.append(f"spec.sink.uri: ingest's OpenAPI has no POST {sink.get('uri')}")
    if not any((d["apiVersion"], d["kind"], d["metadata"]["name"]) == INGEST for d in base):
        out.append("the base has no Knative Service pefm-ingest")
    if spec.get("ordering") != "ordered":
        out.append(f"spec.ordering: {spec.get('ordering')!r}, not 'ordered': a series' events could overtake")
    if ORDER_ANNOTATION in (source.get("metadata", {}).get("annotations") or {}):
        out.append(f"{ORDER_ANNOTATION}: a Trigger's annotation, ignored on a KafkaSource (use spec.ordering)")
    return out


def delivery_problems(docs: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[str]:
    """Bounded retries with backoff, a per-request timeout under ingest's own, and a dead letter
    sink that is the KafkaSink among the documents, on a topic the source does not read."""
    source = only(docs, "KafkaSource")
    delivery = source["spec"].get("delivery") or {}
    out = []
    retry = delivery.get("retry")
    if not isinstance(retry, int) or not 1 <= retry <= 10:
        out.append(f"spec.delivery.retry: {retry!r}, not 1..10 (ordered: a retried event holds up its partition)")
    if delivery.get("backoffPolicy") not in ("linear", "exponential"):
        out.append(f"spec.delivery.backoffPolicy: {delivery.get('backoffPolicy')!r}")
    if not seconds(delivery.get("backoffDelay", "")):
        out.append(f"spec.delivery.backoffDelay: {delivery.get('backoffDelay')!r} is not an ISO 8601 duration")
    timeout = seconds(delivery.get("timeout", ""))
    limit = ingest_service(base)["spec"]["template"]["spec"]["timeoutSeconds"]
    if timeout is None or not 0 < timeout < limit:
        out.append(f"spec.delivery.timeout: {delivery.get('timeout')!r}, not a duration under ingest's {limit} s")
    dead = (delivery.get("deadLetterSink") or {}).get("ref") or {}
    sinks = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "KafkaSink"}
    if (dead.get("apiVersion"), dead.get("kind")) != (KAFKA_SINK_API, "KafkaSink") or dead.get("name") not in sinks:
        return [*out, f"spec.delivery.deadLetterSink.ref: {dead}, not a KafkaSink among the documents"]
    sink = sinks[dead["name"]]
    spec = sink.get("spec") or {}
    if sink.get("apiVersion") != KAFKA_SINK_API:
        out.append(f"KafkaSink apiVersion {sink.get('apiVersion')}, not {KAFKA_SINK_API}")
    out += unknown(spec, KAFKA_SINK_SPEC, "KafkaSink spec")
    if not spec.get("topic") or spec.get("topic") in source["spec"].get("topics", []):
        out.append(f"KafkaSink topic {spec.get('topic')!r}: a dead letter on a topic the source reads loops")
    if spec.get("contentMode", "binary") != "binary":
        out.append("KafkaSink contentMode: binary keeps the event's ce_ headers, as producers write them")
    if spec.get("bootstrapServers") != source["spec"].get("bootstrapServers"):
        out.append("KafkaSink bootstrapServers differ from the source's")
    return out


def auth_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Deliveries authenticate by Knative's OIDC sender identity (an audience on the sink), never by a
    token written into a manifest; Kafka credentials come from Secret pefm-kafka, in keys a KafkaSink
    reads too; only the source may send to its dead letter."""
    out = []
    source = only(docs, "KafkaSource")
    sink = source["spec"].get("sink") or {}
    if sink.get("audience") != "serving.knative.dev/service/pefm/pefm-ingest":
        out.append(f"spec.sink.audience: {sink.get('audience')!r}: no OIDC token would be sent to ingest")
    text = yaml.safe_dump_all(docs)
    if re.search(r"bearer|(?<!rbac\.)authorization|pefm-tokens", text, re.IGNORECASE):
        out.append("a manifest carries or names the ingest token: deliveries must authenticate by OIDC")
    if (source["spec"].get("ceOverrides") or {}).get("extensions"):
        out.append("spec.ceOverrides.extensions: written in plain text on every event")
    refs = secret_refs(source["spec"].get("net"))
    if not refs:
        out.append("spec.net: no Kafka credentials")
    for ref in refs:
        if ref.get("name") != "pefm-kafka" or ref.get("key") not in KAFKA_SECRET_KEYS:
            out.append(f"spec.net secretKeyRef {ref}: not a key of Secret pefm-kafka that a KafkaSink reads")
    for sink_doc in (d for d in docs if d.get("kind") == "KafkaSink"):
        name = ((sink_doc["spec"].get("auth") or {}).get("secret") or {}).get("ref", {}).get("name")
        if name != "pefm-kafka":
            out.append(f"KafkaSink {sink_doc['metadata']['name']}: auth Secret {name!r}, not pefm-kafka")
    policies = [d for d in docs if d.get("kind") == "EventPolicy"]
    dead = ((source["spec"].get("delivery") or {}).get("deadLetterSink") or {}).get("ref") or {}
    guarded = False
    for policy in policies:
        spec = policy.get("spec") or {}
        if policy.get("apiVersion") != EVENT_POLICY_API:
            out.append(f"EventPolicy apiVersion {policy.get('apiVersion')}, not {EVENT_POLICY_API}")
        out += unknown(spec, EVENT_POLICY_SPEC, "EventPolicy spec")
        to = [t.get("ref") or {} for t in spec.get("to", [])]
        if any((r.get("kind"), r.get("name")) == ("KafkaSink", dead.get("name")) for r in to):
            guarded = True
            senders = [f.get("ref") or {} for f in spec.get("from", [])]
            expected = (SOURCE_API, "KafkaSource", source["metadata"]["name"])
            if [(r.get("apiVersion"), r.get("kind"), r.get("name")) for r in senders] != [expected]:
                out.append(f"EventPolicy {policy['metadata']['name']}: admits {senders}, not only the source")
    if not guarded:
        out.append("no EventPolicy limits who may send to the dead letter sink")
    return out


def placement_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Everything in namespace pefm (a cluster-wide binding: for subjects of pefm only), labelled as
    part of PEFM."""
    out = []
    for doc in docs:
        metadata = doc.get("metadata") or {}
        where = f"{doc.get('kind')}/{metadata.get('name')}"
        if doc.get("kind") == "ClusterRoleBinding":
            out += [f"{where}: subject {s}" for s in doc.get("subjects", []) if s.get("namespace") != NAMESPACE]
        elif metadata.get("namespace") != NAMESPACE:
            out.append(f"{where}: namespace {metadata.get('namespace')!r}")
        if (metadata.get("labels") or {}).get("app.kubernetes.io/part-of") != "pefm":
            out.append(f"{where}: no label app.kubernetes.io/part-of: pefm")
    return out


def header_problems(folder: Path) -> list[str]:
    """The source's header names the event type ingest accepts (pefm.serving.ingest.EVENT_TYPE), the
    one thing producers must get right."""
    if f"ce_type: {EVENT_TYPE}" not in (folder / "source.yaml").read_text():
        return [f"source.yaml: its header does not tell producers to send ce_type: {EVENT_TYPE}"]
    return []


# --- the manifests -------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_namespace_pefm():
    assert kustomization_problems(STREAMING) == []


def test_the_source_delivers_in_order_to_ingest_observations(streaming, base):
    assert source_problems(streaming, base) == []


def test_deliveries_retry_then_go_to_a_kafka_dead_letter(streaming, base):
    assert delivery_problems(streaming, base) == []


def test_deliveries_authenticate_without_a_token_in_any_manifest(streaming):
    assert auth_problems(streaming) == []


def test_everything_is_in_namespace_pefm(streaming):
    assert placement_problems(streaming) == []


def test_the_header_tells_producers_the_event_type():
    assert header_problems(STREAMING) == []


def test_with_the_base_the_validator_finds_no_problem(streaming, base):
    """Guards the references the repository's validator checks across documents (the sink's Service
    exists in the source's namespace) and names; the Eventing kinds are reported as not
    schema-checked (no CRD of theirs is kept), never counted as valid."""
    knative, flagger = default_crds(), default_flagger_crds()
    assert knative is not None and flagger is not None, "../shared/knative-crds or flagger-crds not found"
    crds = CrdSchemas.load(knative, flagger)
    report = validate_all(base + streaming, crds)
    assert report.problems == [], [str(p) for p in report.problems]
    assert {
        "KafkaSource/pefm-kafka-to-ingest",
        "KafkaSink/pefm-observations-dead-letter",
        "EventPolicy/pefm-observations-dead-letter",
    } <= set(report.unchecked)
    moved = copy.deepcopy(streaming)
    only(moved, "KafkaSource")["spec"]["sink"]["ref"]["name"] = "pefm-ingset"
    assert validate_all(base + moved, crds).problems, "the validator no longer checks the sink's Service"


# --- each check catches what it is for -----------------------------------------------------------


def edited(docs: list[dict[str, Any]], kind: str, edit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    edit(only(docs, kind))
    return docs


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting the dotted ``path`` (None: removing it)."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            doc = doc.setdefault(key, {})
        if value is None:
            doc.pop(last, None)
        else:
            doc[last] = value

    return edit


BROKEN = {
    "old API": (source_problems, "KafkaSource", _set("apiVersion", "sources.knative.dev/v1beta1"), "apiVersion"),
    "typo": (source_problems, "KafkaSource", _set("spec.orderring", "ordered"), "spec.orderring"),
    "other service": (source_problems, "KafkaSource", _set("spec.sink.ref.name", "pefm-monitor"), "spec.sink.ref"),
    "other path": (source_problems, "KafkaSource", _set("spec.sink.uri", "/v1/series"), "spec.sink.uri"),
    "unordered": (source_problems, "KafkaSource", _set("spec.ordering", "unordered"), "spec.ordering"),
    "order unset": (source_problems, "KafkaSource", _set("spec.ordering", None), "spec.ordering"),
    "trigger annotation": (
        source_problems,
        "KafkaSource",
        _set("metadata.annotations", {ORDER_ANNOTATION: "ordered"}),
        ORDER_ANNOTATION,
    ),
    "random group": (source_problems, "KafkaSource", _set("spec.consumerGroup", None), "consumerGroup"),
    "no dead letter": (delivery_problems, "KafkaSource", _set("spec.delivery.deadLetterSink", None), "deadLetterSink"),
    "no retry": (delivery_problems, "KafkaSource", _set("spec.delivery.retry", 0), "retry"),
    "bad backoff": (delivery_problems, "KafkaSource", _set("spec.delivery.backoffDelay", "500ms"), "backoffDelay"),
    "long timeout": (delivery_problems, "KafkaSource", _set("spec.delivery.timeout", "PT5M"), "timeout"),
    "looping dead letter": (delivery_problems, "KafkaSink", _set("spec.topic", "pefm.observations"), "loops"),
    "no audience": (auth_problems, "KafkaSource", _set("spec.sink.audience", None), "audience"),
    "token in a header": (
        auth_problems,
        "KafkaSource",
        _set("spec.ceOverrides", {"extensions": {"authorization": "Bearer s3cret"}}),
        "ingest token",
    ),
    "other secret": (
        auth_problems,
        "KafkaSource",
        _set("spec.net.sasl.password.secretKeyRef", {"name": "kafka", "key": "pw"}),
        "secretKeyRef",
    ),
    "open dead letter": (
        auth_problems,
        "EventPolicy",
        _set("spec.from", [{"sub": "system:serviceaccount:pefm:*"}]),
        "not only the source",
    ),
    "default namespace": (placement_problems, "KafkaSink", _set("metadata.namespace", "default"), "namespace"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_check_catches_a_broken_manifest(streaming, base, case):
    check, kind, edit, expected = BROKEN[case]
    docs = edited(streaming, kind, edit)
    problems = check(docs, base) if check in (source_problems, delivery_problems) else check(docs)
    assert any(expected in p for p in problems), problems


def test_the_folder_checks_catch_a_missing_file_namespace_and_header(tmp_path):
    folder = tmp_path / "streaming"
    shutil.copytree(STREAMING, folder)
    (folder / "extra.yaml").write_text("# An extra manifest.\n# Requires: nothing.\napiVersion: v1\n")
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({**spec, "namespace": "default"}))
    (folder / "dead-letter.yaml").write_text(
        "\n".join(line for line in (folder / "dead-letter.yaml").read_text().splitlines() if not line.startswith("#"))
    )
    problems = kustomization_problems(folder)
    assert "extra.yaml: not listed in resources" in problems
    assert "namespace: 'default', not 'pefm'" in problems
    assert "dead-letter.yaml: no comment header" in problems
    (folder / "source.yaml").write_text((folder / "source.yaml").read_text().replace(EVENT_TYPE, "dev.pefm.obs"))
    assert header_problems(folder)


def test_ingest_may_read_the_keys_that_verify_the_deliveries(streaming, base):
    """Guards the verification path: ingest runs as a ServiceAccount of its own, which is bound to
    Kubernetes' issuer-discovery role, and names this source's ServiceAccount as its one sender."""
    service = next(d for d in base if d.get("kind") == "Service" and d["metadata"]["name"] == "pefm-ingest")
    account = service["spec"]["template"]["spec"].get("serviceAccountName")
    assert account and any(d.get("kind") == "ServiceAccount" and d["metadata"]["name"] == account for d in base)
    bindings = [d for d in streaming if d.get("kind") == "ClusterRoleBinding"]
    assert [(b["roleRef"]["name"], b["subjects"]) for b in bindings] == [
        ("system:service-account-issuer-discovery", [{"kind": "ServiceAccount", "name": account, "namespace": "pefm"}])
    ]
    env = {e["name"]: e.get("value") for e in service["spec"]["template"]["spec"]["containers"][0]["env"]}
    source = only(streaming, "KafkaSource")
    assert env["PEFM_INGEST_OIDC_AUDIENCE"] == source["spec"]["sink"]["audience"]
    sender = f"system:serviceaccount:pefm:{source['metadata']['name']}-oidc-sources.knative.dev-kafkasource"
    assert env["PEFM_INGEST_OIDC_SUBJECTS"] == sender
