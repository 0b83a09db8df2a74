"""The cluster's rollout, rendered from the same spec as the local controller's: a Flagger Canary
(``provider: knative``) and its MetricTemplates, from ``knative/rollout.yaml``.

Flagger moves the traffic (primary pinned by ``flagger.app/primary-revision``, the canary being the
latest created revision) and judges the Prometheus metrics; what only PEFM knows (gates, the smoke
request, forecast divergence, minimum traffic, operator decisions, the registry) it asks PEFM's
webhooks (``pefm.rollout.webhooks``). The metric queries are the local provider's PromQL, passing
where the revision served nothing (``pefm.rollout.providers.FLAGGER_PROMQL``: Flagger would count
no value as a failed check; the webhooks make the weight wait for traffic), with Flagger's
variables: ``{{ route }}`` is the canary revision for the Knative provider, ``{{ interval }}`` the
metric's window.
"""

from __future__ import annotations

import math
from typing import Any

from pefm.rollout.providers import FLAGGER_PROMQL
from pefm.rollout.router import knative_service
from pefm.rollout.spec import RolloutSpec

API_VERSION = "flagger.app/v1beta1"
PROMETHEUS = "http://flagger-prometheus.flagger-system:9090"
ROLLOUT_API = "http://pefm-rollout.{namespace}"  # the rollout API's Service (knative/rollout/)
# Flagger's webhook types, in the order it calls them; each one is a route of the rollout API.
HOOKS = (
    "confirm-rollout",
    "pre-rollout",
    "confirm-traffic-increase",
    "rollout",
    "confirm-promotion",
    "rollback",
    "post-rollout",
    "event",
)
TEMPLATE_METRICS = {"success_rate": "pefm-success-rate", "p99_latency_ms": "pefm-latency-p99"}
WEBHOOK_METRICS = {"divergence"}  # judged by the `rollout` webhook, not by a query


def webhook_url(base: str, hook: str) -> str:
    return f"{base.rstrip('/')}/v1/flagger/{hook}"


def flagger_query(metric: str) -> str:
    """The local provider's PromQL for ``metric`` (passing when nothing was served:
    ``FLAGGER_PROMQL``) with Flagger's template variables."""
    return (
        FLAGGER_PROMQL[metric]
        .replace("{window}s", "{window}")  # Flagger's interval is a duration with its unit
        .format(revision="{{ route }}", window="{{ interval }}")
    )


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value))}s"


def render_canary(
    spec: RolloutSpec,
    *,
    namespace: str = "pefm",
    webhook_base: str | None = None,
    prometheus_url: str = PROMETHEUS,
    webhook_token: str | None = None,
) -> list[dict[str, Any]]:
    """The MetricTemplates and the Canary for ``spec``'s service. ``webhook_token`` goes into each
    webhook's metadata (Flagger sends it back in every payload); leave it out of committed files."""
    webhook_base = webhook_base or ROLLOUT_API.format(namespace=namespace)
    target = knative_service(spec.service)
    interval = _seconds(spec.interval_seconds)
    window = _seconds(max(60.0, spec.interval_seconds))  # a rate needs a few scrapes in its window
    templates = []
    metrics = []
    for check in spec.checks:
        if check.metric in WEBHOOK_METRICS:
            continue
        name = TEMPLATE_METRICS[check.metric]
        if name not in {t["metadata"]["name"] for t in templates}:
            templates.append(
                {
                    "apiVersion": API_VERSION,
                    "kind": "MetricTemplate",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {
                        "provider": {"type": "prometheus", "address": prometheus_url},
                        "query": flagger_query(check.metric),
                    },
                }
            )
        bounds = {k: v for k, v in (("min", check.min), ("max", check.max)) if v is not None}
        metrics.append(
            {
                "name": check.name,
                "templateRef": {"name": name, "namespace": namespace},
                "thresholdRange": bounds,
                "interval": window,
            }
        )
    metadata = {"token": webhook_token} if webhook_token else {}
    # Flagger: the rollout hooks' timeouts must add up to less than the analysis interval
    timeouts = {"pre-rollout": "30s", "rollout": _seconds(max(5.0, spec.interval_seconds / 2))}
    retries = {"post-rollout": 5, "event": 2}  # Flagger calls these once per outcome: ride out a blip
    webhooks = [
        {
            "name": f"pefm-{hook}",
            "type": hook,
            "url": webhook_url(webhook_base, hook),
            "timeout": timeouts.get(hook, "10s"),
            **({"retries": retries[hook]} if hook in retries else {}),
            **({"metadata": dict(metadata)} if metadata else {}),
        }
        for hook in HOOKS
    ]
    canary = {
        "apiVersion": API_VERSION,
        "kind": "Canary",
        "metadata": {"name": target, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "pefm"}},
        "spec": {
            "provider": "knative",
            "targetRef": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": target},
            "progressDeadlineSeconds": 600,
            "analysis": {
                "interval": interval,
                "threshold": spec.threshold,
                "stepWeights": list(spec.steps),
                "metrics": metrics,
                "webhooks": webhooks,
            },
        },
    }
    return [*templates, canary]
