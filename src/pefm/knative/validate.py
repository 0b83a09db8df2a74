"""Validate Knative Service manifests the way the cluster would: the CRD schema, then the rules
the admission webhook enforces that the schema cannot express.

Unknown fields are errors here (the API server would silently prune them: a typo'd field is a
setting that never takes effect). Kustomization folders are rendered with ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
FEATURES = {
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "affinity": "kubernetes.podspec-affinity",
}


@dataclass(frozen=True)
class Problem:
    document: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.document}: {self.path}: {self.message}"


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


def service_schema(crds: Path) -> dict[str, Any]:
    """The Service CRD's v1 openAPIV3Schema, made strict about unknown fields."""
    crd = yaml.safe_load((Path(crds) / "service.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


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


def validate_documents(
    docs: list[dict[str, Any]], schema: dict[str, Any], features: dict[str, str] | None = None
) -> list[Problem]:
    """Every problem in the Knative Services among ``docs``; feature flags come from a
    ``config-features`` ConfigMap among them (or ``features``)."""
    import jsonschema

    flags = dict(features or {})
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc.get("metadata", {}).get("name") == "config-features":
            flags.update(doc.get("data") or {})
    problems: list[Problem] = []
    services = [
        d
        for d in docs
        if d.get("kind") == "Service" and str(d.get("apiVersion", "")).startswith("serving.knative.dev/")
    ]
    validator = jsonschema.Draft7Validator(schema)
    for doc in services:
        name = f"Service/{doc.get('metadata', {}).get('name', '?')}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            problems.append(Problem(name, _path(error.absolute_path), error.message))
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
    for field, flag in FEATURES.items():
        if field in pod and flags.get(flag) not in ("enabled", "allowed"):
            out.append((f"spec.template.spec.{field}", f"needs the {flag} feature flag enabled in config-features"))
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


def _path(parts) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts).replace(".[", "[") or "(document)"


def default_crds() -> Path | None:
    """``../shared/knative-crds`` beside the repository, where the project keeps the upstream CRDs."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "knative-crds"
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return None
