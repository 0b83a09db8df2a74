"""Validate PEFM's cluster manifests offline, the way the cluster would take them.

Each document is checked by its family:

- Knative Serving (serving.knative.dev): the CRD schema from ``../shared/knative-crds``, then the
  rules the admission webhook enforces that the schema cannot express (traffic, revision names,
  autoscaling annotations, feature-flagged pod fields).
- Flagger (flagger.app: Canary, MetricTemplate, AlertProvider): the v1beta1 CRD schema from
  ``../shared/flagger-crds``, then ``pefm.knative.flagger_rules``.
- Core Kubernetes kinds: the upstream schemas of ``core_rules.KUBERNETES_VERSION`` (the
  ``kubernetes-validate`` package, offline), then ``pefm.knative.core_rules``.
- Knative Eventing (SinkBinding, PingSource...): no CRD is kept here, so they are reported as not
  schema-checked; only their references to Services among the documents are checked.
- Anything else is a problem: an unknown kind is never skipped silently.

Unknown fields are errors in every schema (the API server would prune them from a custom resource:
a typo'd field is a setting that never takes effect). Kustomization folders are rendered with
``kubectl kustomize``; the documents of one path are validated together, so references between
them (templateRef, serviceAccountName, roleRef, selectors) are checked too.
"""

from __future__ import annotations

import copy
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pefm.knative import core_rules, flagger_rules
from pefm.knative.documents import (
    DNS_1035,
    DNS_1123_SUBDOMAIN,
    DURATION,
    KNATIVE_SERVING,
    Problem,
    dotted,
    group_of,
    is_knative_service,
    label,
    mapping,
    name_of,
    namespace_of,
)

FEATURES = {
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "affinity": "kubernetes.podspec-affinity",
}
FAMILIES = {KNATIVE_SERVING: "Knative", flagger_rules.FLAGGER: "Flagger"}
KUBERNETES = "Kubernetes"
# Knative Eventing's groups: known kinds whose CRDs are not kept beside the repository
EVENTING_GROUPS = {"sources.knative.dev", "eventing.knative.dev", "messaging.knative.dev", "flows.knative.dev"}

__all__ = [
    "CrdSchemas",
    "Problem",
    "Report",
    "default_crds",
    "default_flagger_crds",
    "render",
    "service_schema",
    "validate_all",
    "validate_documents",
    "webhook_rules",
]


def render(path: Path) -> list[dict[str, Any]]:
    """The documents at ``path``: a kustomization folder (rendered) or a YAML file."""
    path = Path(path)
    if path.is_dir():
        if not any((path / name).exists() for name in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
            raise ValueError(f"{path} is a folder without a kustomization")
        done = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ValueError(f"kubectl kustomize {path} failed: {done.stderr.strip()}")
        text = done.stdout
    else:
        text = path.read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass
class CrdSchemas:
    """The openAPIV3Schemas of CustomResourceDefinitions, made strict, by (apiVersion, kind), and
    each group's resource plurals (for RBAC rules)."""

    schemas: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, *folders: Path) -> CrdSchemas:
        """Every served version of every CRD in the YAML files of ``folders``."""
        loaded = cls()
        for folder in folders:
            for path in sorted(Path(folder).glob("*.y*ml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if mapping(doc).get("kind") == "CustomResourceDefinition":
                        loaded.add(doc)
        return loaded

    def add(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        group, names = spec["group"], spec["names"]
        self.resources.setdefault(group, set()).add(names["plural"])
        for version in spec["versions"]:
            schema = mapping(version.get("schema")).get("openAPIV3Schema")
            if version.get("served", True) and schema:
                self.schemas[(f"{group}/{version['name']}", names["kind"])] = _strict(copy.deepcopy(schema))


def service_schema(crds: Path) -> dict[str, Any]:
    """The Knative Service CRD's v1 openAPIV3Schema, made strict about unknown fields."""
    return CrdSchemas.load(crds).schemas[(f"{KNATIVE_SERVING}/v1", "Service")]


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@dataclass
class Report:
    """What validating one path found: resources validated per family, the documents no schema
    here covers (named, not counted as valid), and every problem."""

    counts: Counter[str] = field(default_factory=Counter)
    unchecked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def validate_all(docs: list[dict[str, Any]], crds: CrdSchemas, features: dict[str, str] | None = None) -> Report:
    """Every document of ``docs`` by its family (module docstring), then the rules across them."""
    import jsonschema

    report = Report()
    for doc in docs:
        api, kind = str(doc.get("apiVersion") or ""), str(doc.get("kind") or "")
        group = group_of(doc)
        if not api or not kind:
            report.problems.append(Problem(label(doc), "(document)", "no apiVersion or no kind"))
        elif (api, kind) in crds.schemas:
            report.counts[FAMILIES.get(group, group)] += 1
            validator = jsonschema.Draft7Validator(crds.schemas[(api, kind)])
            for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
                report.problems.append(Problem(label(doc), dotted(error.absolute_path), error.message))
        elif group in FAMILIES:
            report.problems.append(
                Problem(label(doc), "kind", f"no {FAMILIES[group]} CRD given defines {kind} in {api}")
            )
        elif group in EVENTING_GROUPS:
            report.unchecked.append(label(doc))
        elif core_rules.known(doc):
            report.counts[KUBERNETES] += 1
            report.problems += core_rules.schema_problems(doc)
        else:
            report.problems.append(
                Problem(
                    label(doc),
                    "kind",
                    f"unknown kind {kind} in {api}: not Knative, not Flagger, "
                    f"not Kubernetes {core_rules.KUBERNETES_VERSION}",
                )
            )
    report.problems += _metadata_rules(docs)
    report.problems += validate_documents(docs, None, features)
    report.problems += flagger_rules.check(docs)
    report.problems += core_rules.check(docs, crds.resources)
    report.problems += _eventing_rules(docs)
    return report


def _metadata_rules(docs: list[dict[str, Any]]) -> list[Problem]:
    out, seen = [], set()
    for doc in docs:
        metadata = mapping(doc.get("metadata"))
        name = metadata.get("name")
        if not name:
            why = "generateName works with kubectl create only" if metadata.get("generateName") else "required"
            out.append(Problem(label(doc), "metadata.name", f"missing: kubectl apply needs a name ({why})"))
            continue
        rbac = group_of(doc) == core_rules.RBAC  # RBAC names are paths (system:controller:...)
        if not rbac and (not DNS_1123_SUBDOMAIN.match(str(name)) or len(str(name)) > 253):
            out.append(Problem(label(doc), "metadata.name", f"{name!r} is not a DNS-1123 subdomain"))
        key = (group_of(doc), doc.get("kind"), namespace_of(doc), name)
        if key in seen:
            out.append(Problem(label(doc), "metadata.name", "defined twice among the documents"))
        seen.add(key)
    return out


def _eventing_rules(docs: list[dict[str, Any]]) -> list[Problem]:
    """Knative Eventing sources name their sink (and a SinkBinding its subject) by reference: when
    the documents hold Knative Services, a Service they name must be one of them, in their namespace.
    A SinkBinding's subject must let Knative name its revisions: the binding does not inject K_SINK
    into a Service with a BYO revision name (knative/eventing#4106)."""
    services = {(namespace_of(d), name_of(d)): d for d in docs if is_knative_service(d)}
    out = []
    for doc in docs:
        if group_of(doc) not in EVENTING_GROUPS:
            continue
        if doc.get("kind") == "PingSource":
            out += [Problem(label(doc), p, m) for p, m in core_rules.cron_rules(doc)]
        if not services:
            continue
        spec = mapping(doc.get("spec"))
        for path, ref in (
            ("spec.sink.ref", mapping(mapping(spec.get("sink")).get("ref"))),
            ("spec.subject", mapping(spec.get("subject"))),
        ):
            if ref.get("kind") == "Service" and str(ref.get("apiVersion", "")).startswith(f"{KNATIVE_SERVING}/"):
                key = (str(ref.get("namespace") or namespace_of(doc)), ref.get("name"))
                if key not in services:
                    out.append(
                        Problem(
                            label(doc), path, f"no Knative Service {key[1]} in namespace {key[0]} among the documents"
                        )
                    )
                elif path == "spec.subject" and mapping(
                    mapping(mapping(services[key].get("spec")).get("template")).get("metadata")
                ).get("name"):
                    out.append(
                        Problem(label(doc), path, f"{key[1]} has a BYO revision name: K_SINK would never be injected")
                    )
    return out


def validate_documents(
    docs: list[dict[str, Any]], schema: dict[str, Any] | None, features: dict[str, str] | None = None
) -> list[Problem]:
    """Every problem in the Knative Services among ``docs``: ``schema`` (the Service CRD's, from
    :func:`service_schema`; None to skip it) and the webhook's rules. Feature flags come from a
    ``config-features`` ConfigMap among them (or ``features``)."""
    import jsonschema

    flags = dict(features or {})
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and name_of(doc) == "config-features":
            flags.update(mapping(doc.get("data")))
    problems: list[Problem] = []
    for doc in filter(is_knative_service, docs):
        name = label(doc)
        if schema is not None:
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
                problems.append(Problem(name, dotted(error.absolute_path), error.message))
        problems += [Problem(name, p, m) for p, m in webhook_rules(doc, flags)]
    return problems


def webhook_rules(service: dict[str, Any], flags: dict[str, str]) -> list[tuple[str, str]]:
    """The admission webhook's checks that the schema does not express, as (path, message)."""
    out: list[tuple[str, str]] = []
    name = service.get("metadata", {}).get("name", "")
    if not DNS_1035.match(name or ""):
        out.append(("metadata.name", f"{name!r} is not a DNS-1035 label"))
    spec = service.get("spec", {})
    template = spec.get("template", {})
    revision = (template.get("metadata") or {}).get("name")
    if revision is not None and not revision.startswith(f"{name}-"):
        out.append(("spec.template.metadata.name", f"revision name {revision!r} must start with '{name}-'"))
    out += _annotation_rules((template.get("metadata") or {}).get("annotations") or {})
    pod = template.get("spec") or {}
    for pod_field, flag in FEATURES.items():
        if pod_field in pod and flags.get(flag) not in ("enabled", "allowed"):
            out.append((f"spec.template.spec.{pod_field}", f"needs the {flag} feature flag enabled in config-features"))
    traffic = spec.get("traffic")
    if traffic:
        out += _traffic_rules(name, traffic)
    return out


def _traffic_rules(service: str, traffic: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out, tags, total = [], set(), 0
    for i, target in enumerate(traffic):
        where = f"spec.traffic[{i}]"
        percent = target.get("percent", 0)
        if not isinstance(percent, int) or not 0 <= percent <= 100:
            out.append((f"{where}.percent", f"must be an integer in 0..100, got {percent!r}"))
        else:
            total += percent
        latest, revision = target.get("latestRevision"), target.get("revisionName")
        if latest is True and revision:
            out.append((where, "latestRevision: true and revisionName are mutually exclusive"))
        if latest is not True and not revision:
            out.append((where, "needs a revisionName unless latestRevision is true"))
        if revision and not revision.startswith(f"{service}-"):
            out.append((f"{where}.revisionName", f"{revision!r} is not a revision of {service}"))
        if (tag := target.get("tag")) is not None:
            if not DNS_1035.match(tag) or len(tag) > 63:
                out.append((f"{where}.tag", f"{tag!r} is not a DNS-1035 label"))
            if tag in tags:
                out.append((f"{where}.tag", f"tag {tag!r} is used twice"))
            tags.add(tag)
    if total != 100:
        out.append(("spec.traffic", f"percents add up to {total}, not 100"))
    return out


def _annotation_rules(annotations: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    prefix = "autoscaling.knative.dev/"

    def number(key: str) -> float | None:
        raw = annotations.get(prefix + key)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            out.append((f"annotations.{prefix}{key}", f"{raw!r} is not a number"))
            return None

    low, high = number("min-scale"), number("max-scale")
    for key, value in (("min-scale", low), ("max-scale", high), ("initial-scale", number("initial-scale"))):
        if value is not None and (value < 0 or value != int(value)):
            out.append((f"annotations.{prefix}{key}", "must be a non-negative integer"))
    if low is not None and high is not None and high != 0 and low > high:
        out.append((f"annotations.{prefix}min-scale", f"min-scale {low:g} is above max-scale {high:g}"))
    if (target := number("target")) is not None and target < 0.01:
        out.append((f"annotations.{prefix}target", "must be at least 0.01"))
    if (util := number("target-utilization-percentage")) is not None and not 1 <= util <= 100:
        out.append((f"annotations.{prefix}target-utilization-percentage", "must be in 1..100"))
    metric = annotations.get(prefix + "metric")
    if metric is not None and metric not in ("concurrency", "rps", "cpu", "memory"):
        out.append((f"annotations.{prefix}metric", f"unknown metric {metric!r}"))
    retention = annotations.get(prefix + "scale-to-zero-pod-retention-period")
    if retention is not None and not DURATION.match(retention):
        out.append((f"annotations.{prefix}scale-to-zero-pod-retention-period", f"{retention!r} is not a duration"))
    return out


def _crds_beside_repository(name: str) -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / name
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return None


def default_crds() -> Path | None:
    """``../shared/knative-crds`` beside the repository, where the project keeps the upstream CRDs."""
    return _crds_beside_repository("knative-crds")


def default_flagger_crds() -> Path | None:
    """``../shared/flagger-crds`` beside the repository (Flagger v1.44.0's crd.yaml)."""
    return _crds_beside_repository("flagger-crds")
