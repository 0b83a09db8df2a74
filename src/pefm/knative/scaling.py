"""How Knative scales a PEFM service, read from its manifest (knative/base/<service>.yaml): what the
local runtime follows when it runs a revision as several replicas behind the local router."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from pefm.knative.documents import is_knative_service

KNATIVE = Path(__file__).resolve().parents[3] / "knative"
ANNOTATION = "autoscaling.knative.dev/"
# Knative Serving's defaults (config-autoscaler) for what a template leaves out
DEFAULT_TARGET = 100.0
DEFAULT_UTILIZATION = 0.70


@dataclass(frozen=True)
class Scaling:
    container_concurrency: int
    """The hard limit of requests in flight per replica (0: none): the router queues beyond it."""
    target: float
    """The soft limit the autoscaler aims at, per replica, before ``utilization``."""
    utilization: float
    min_scale: int
    max_scale: int
    """0: no limit."""
    initial_scale: int

    def replicas_for(self, concurrency: float) -> int:
        """The replicas Knative's autoscaler wants for ``concurrency`` requests in flight on average
        (its stable window): ceil(concurrency / (target x utilization)), within min and max scale."""
        wanted = math.ceil(concurrency / (self.target * self.utilization)) if concurrency > 0 else 0
        wanted = max(wanted, self.min_scale)
        return min(wanted, self.max_scale) if self.max_scale else wanted


def manifest_scaling(service: str, folder: Path = KNATIVE / "base") -> Scaling:
    """The scaling of ``service`` (ingest, inference, monitor) as its Knative Service declares it.
    Without a target annotation the target is the containerConcurrency when that is set (as
    Knative takes it), else Knative's default."""
    documents = yaml.safe_load_all((folder / f"{service}.yaml").read_text())
    document = next(d for d in documents if isinstance(d, dict) and is_knative_service(d))
    template = document["spec"]["template"]
    notes = template.get("metadata", {}).get("annotations", {})
    concurrency = int(template["spec"].get("containerConcurrency", 0))

    def annotation(name: str, default: float) -> float:
        return float(notes.get(ANNOTATION + name, default))

    return Scaling(
        container_concurrency=concurrency,
        target=annotation("target", concurrency or DEFAULT_TARGET),
        utilization=annotation("target-utilization-percentage", DEFAULT_UTILIZATION * 100) / 100,
        min_scale=int(annotation("min-scale", 0)),
        max_scale=int(annotation("max-scale", 0)),
        initial_scale=int(annotation("initial-scale", 1)),
    )
