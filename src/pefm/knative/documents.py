"""What the validators share: a problem, how a document is named, where its pods are, and label
selectors, so every rule reads manifests the same way (and never crashes on a malformed one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Go's time.ParseDuration, as Flagger and Knative parse durations (no bare numbers, no days)
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
KNATIVE_SERVING = "serving.knative.dev"


@dataclass(frozen=True)
class Problem:
    """One finding: the document (Kind/name), where in it (dotted path) and what is wrong."""

    document: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.document}: {self.path}: {self.message}"


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (rules read malformed documents too)."""
    return value if isinstance(value, dict) else {}


def sequence(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def group_of(doc: dict[str, Any]) -> str:
    """The API group of a document ('' for the core group)."""
    api = str(doc.get("apiVersion") or "")
    return api.split("/")[0] if "/" in api else ""


def name_of(doc: dict[str, Any]) -> str:
    return str(mapping(doc.get("metadata")).get("name") or "?")


def namespace_of(doc: dict[str, Any]) -> str:
    """The document's namespace ('' when the manifest leaves it to the applier)."""
    return str(mapping(doc.get("metadata")).get("namespace") or "")


def label(doc: dict[str, Any]) -> str:
    """How problems name a document: Kind/name."""
    return f"{doc.get('kind', '?')}/{name_of(doc)}"


def is_knative_service(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "Service" and group_of(doc) == KNATIVE_SERVING


def is_core_service(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "Service" and doc.get("apiVersion") == "v1"


def pod_template(doc: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]] | None:
    """(path of the pod spec, the pods' labels, the pod spec) of a workload, None for other kinds.
    A Knative Service's pods also carry ``serving.knative.dev/service: <name>``, set by Knative."""
    kind, spec = doc.get("kind"), mapping(doc.get("spec"))
    if kind == "Pod" and doc.get("apiVersion") == "v1":
        return "spec", dict(mapping(mapping(doc.get("metadata")).get("labels"))), spec
    if kind == "CronJob" and group_of(doc) == "batch":
        template = mapping(mapping(mapping(spec.get("jobTemplate")).get("spec")).get("template"))
        path = "spec.jobTemplate.spec.template.spec"
    elif (
        (kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet") and group_of(doc) == "apps")
        or (kind == "Job" and group_of(doc) == "batch")
        or is_knative_service(doc)
    ):
        template, path = mapping(spec.get("template")), "spec.template.spec"
    else:
        return None
    labels = {str(k): str(v) for k, v in mapping(mapping(template.get("metadata")).get("labels")).items()}
    if is_knative_service(doc):
        labels[f"{KNATIVE_SERVING}/service"] = name_of(doc)
    return path, labels, mapping(template.get("spec"))


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions; {} matches all)."""
    for key, value in mapping(selector.get("matchLabels")).items():
        if labels.get(str(key)) != str(value):
            return False
    for expression in sequence(selector.get("matchExpressions")):
        expression = mapping(expression)
        key, operator = str(expression.get("key")), expression.get("operator")
        values = {str(v) for v in sequence(expression.get("values"))}
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def dotted(parts: Any) -> str:
    """A jsonschema error path as ``spec.template.spec.containers[0]``."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts).replace(".[", "[") or "(document)"
