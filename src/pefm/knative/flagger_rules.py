"""Flagger's rules that its CRD schema cannot express, checked across the documents validated
together: a Knative canary targets a Knative Service that leaves revisions and traffic to Flagger,
every metric resolves to a MetricTemplate (or a builtin) with a bound, weights rise, webhooks are
distinct and reachable URLs, durations parse, query templates use only Flagger's variables.

What Flagger v1.44.0 does with these fields (pkg/controller, pkg/apis/flagger/v1beta1): with
stepWeights it ignores maxWeight; it raises an analysis interval under 10s to 10s; a query
template is a Go text/template whose functions are name, namespace, target, service, ingress,
route (for Knative: the latest created revision), interval and variables.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pefm.knative.documents import (
    DURATION,
    KNATIVE_SERVING,
    Problem,
    is_core_service,
    is_knative_service,
    label,
    mapping,
    name_of,
    namespace_of,
    sequence,
)

FLAGGER = "flagger.app"
BUILTIN_METRICS = {"request-success-rate", "request-duration"}
WEBHOOK_TYPES = {
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
}
TEMPLATE_FUNCTIONS = {"name", "namespace", "target", "service", "ingress", "route", "interval", "variables"}
GO_TEMPLATE_WORDS = {
    # text/template's builtin functions and keywords
    *("and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println"),
    *("urlquery", "eq", "ne", "lt", "le", "gt", "ge"),
    *("if", "else", "end", "range", "with", "template", "define", "block", "break", "continue"),
    *("nil", "true", "false"),
}
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
LEADING_WORD = re.compile(r"^([A-Za-z_]\w*)((?:\.\w+)*)")
SERVICE_HOST = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)(\.svc(\.cluster\.local)?)?$")
MIN_INTERVAL_SECONDS = 10


def flagger_kind(doc: dict[str, Any], kind: str) -> bool:
    return doc.get("kind") == kind and str(doc.get("apiVersion", "")).startswith(f"{FLAGGER}/")


def check(docs: list[dict[str, Any]]) -> list[Problem]:
    """Every problem in the Canaries and MetricTemplates among ``docs``."""
    problems: list[Problem] = []
    templates = {(namespace_of(d), name_of(d)): d for d in docs if flagger_kind(d, "MetricTemplate")}
    for doc in docs:
        if flagger_kind(doc, "Canary"):
            problems += [Problem(label(doc), p, m) for p, m in canary_rules(doc, docs, templates)]
        elif flagger_kind(doc, "MetricTemplate"):
            problems += [Problem(label(doc), p, m) for p, m in template_rules(doc)]
    return problems


def canary_rules(
    canary: dict[str, Any], docs: list[dict[str, Any]], templates: dict[tuple[str, str], dict[str, Any]]
) -> list[tuple[str, str]]:
    """(path, message) for one Canary."""
    spec = mapping(canary.get("spec"))
    analysis = mapping(spec.get("analysis"))
    out = _target_rules(canary, spec, docs)
    out += _weight_rules(analysis)
    out += _metric_rules(canary, analysis, templates, docs)
    out += _webhook_rules(analysis, docs)
    interval = analysis.get("interval")
    if interval is not None:
        seconds = _seconds(interval)
        if seconds is None:
            out.append(("spec.analysis.interval", f"{interval!r} is not a duration"))
        elif seconds < MIN_INTERVAL_SECONDS:
            out.append(("spec.analysis.interval", f"{interval} is below Flagger's minimum of 10s (it would use 10s)"))
    return out


def _target_rules(canary: dict[str, Any], spec: dict[str, Any], docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    target = mapping(spec.get("targetRef"))
    knative_target = str(target.get("apiVersion", "")).startswith(f"{KNATIVE_SERVING}/")
    if spec.get("provider") == "knative":
        if target.get("apiVersion") != f"{KNATIVE_SERVING}/v1" or target.get("kind") != "Service":
            out.append(
                ("spec.targetRef", "provider knative needs targetRef apiVersion serving.knative.dev/v1, kind Service")
            )
    elif knative_target:
        out.append(("spec.provider", "a Knative Service target needs provider: knative"))
    if not knative_target:
        return out
    for service in docs:
        if (
            is_knative_service(service)
            and name_of(service) == target.get("name")
            and namespace_of(service) == namespace_of(canary)
        ):
            service_spec = mapping(service.get("spec"))
            if mapping(mapping(service_spec.get("template")).get("metadata")).get("name") is not None:
                out.append(
                    (
                        "spec.targetRef",
                        f"Service {target.get('name')} sets a BYO revision name: Flagger canaries revisions "
                        "that Knative names",
                    )
                )
            if "traffic" in service_spec:
                out.append(
                    ("spec.targetRef", f"Service {target.get('name')} has a traffic block: Flagger owns its traffic")
                )
    return out


def _weight_rules(analysis: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    weights = analysis.get("stepWeights")
    step, top = analysis.get("stepWeight"), analysis.get("maxWeight")
    if weights is not None:
        if step is not None or top is not None:
            out.append(
                ("spec.analysis", "stepWeights or stepWeight with maxWeight, not both (Flagger ignores maxWeight)")
            )
        previous = 0
        for i, weight in enumerate(sequence(weights)):
            if not isinstance(weight, int) or not 1 <= weight <= 100:
                out.append((f"spec.analysis.stepWeights[{i}]", f"{weight!r} is not a whole percent in 1..100"))
            elif weight <= previous:
                out.append((f"spec.analysis.stepWeights[{i}]", f"{weight} does not rise above {previous}"))
            else:
                previous = weight
    elif step is not None:
        if not isinstance(step, int) or not 1 <= step <= 100:
            out.append(("spec.analysis.stepWeight", f"{step!r} is not a whole percent in 1..100"))
        elif top is None:
            out.append(("spec.analysis.maxWeight", "stepWeight needs maxWeight (Flagger would default it to 100)"))
        elif not isinstance(top, int) or not step <= top <= 100:
            out.append(("spec.analysis.maxWeight", f"{top!r} is not a whole percent in {step}..100"))
    return out


def _metric_rules(
    canary: dict[str, Any],
    analysis: dict[str, Any],
    templates: dict[tuple[str, str], dict[str, Any]],
    docs: list[dict[str, Any]],
) -> list[tuple[str, str]]:
    out, names = [], set()
    for i, metric in enumerate(sequence(analysis.get("metrics"))):
        metric, where = mapping(metric), f"spec.analysis.metrics[{i}]"
        name = metric.get("name")
        if name in names:
            out.append((f"{where}.name", f"metric {name!r} is listed twice"))
        names.add(name)
        ref = metric.get("templateRef")
        if ref is not None:
            ref = mapping(ref)
            key = (str(ref.get("namespace") or namespace_of(canary)), str(ref.get("name")))
            template = templates.get(key)
            if template is None:
                out.append((f"{where}.templateRef", f"no MetricTemplate {key[1]} in namespace {key[0] or '(none)'}"))
            else:
                defined = set(mapping(metric.get("templateVariables")))
                for variable in sorted(_variables_used(str(mapping(template.get("spec")).get("query", ""))) - defined):
                    out.append((f"{where}.templateVariables", f"{key[1]} uses variables.{variable}, not set here"))
        elif not metric.get("query") and name not in BUILTIN_METRICS:
            out.append(
                (
                    where,
                    f"{name!r} has no templateRef, no query and is not a builtin "
                    f"({', '.join(sorted(BUILTIN_METRICS))})",
                )
            )
        bounds = mapping(metric.get("thresholdRange"))
        low, high = bounds.get("min"), bounds.get("max")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            out.append((f"{where}.thresholdRange", f"min {low} is above max {high}"))
        if low is None and high is None and metric.get("threshold") is None:
            out.append((where, "no threshold and no thresholdRange bound: the metric could never fail"))
        if (interval := metric.get("interval")) is not None and _seconds(interval) is None:
            out.append((f"{where}.interval", f"{interval!r} is not a duration"))
    providers = {(namespace_of(d), name_of(d)) for d in docs if flagger_kind(d, "AlertProvider")}
    for i, alert in enumerate(sequence(analysis.get("alerts"))):
        ref = mapping(mapping(alert).get("providerRef"))
        key = (str(ref.get("namespace") or namespace_of(canary)), str(ref.get("name")))
        if key not in providers:
            out.append((f"spec.analysis.alerts[{i}].providerRef", f"no AlertProvider {key[1]} in namespace {key[0]}"))
    return out


def _webhook_rules(analysis: dict[str, Any], docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out, names = [], set()
    for i, hook in enumerate(sequence(analysis.get("webhooks"))):
        hook, where = mapping(hook), f"spec.analysis.webhooks[{i}]"
        name = hook.get("name")
        if name in names:
            out.append((f"{where}.name", f"webhook {name!r} is listed twice"))
        names.add(name)
        kind = hook.get("type") or "rollout"  # Flagger's default for a webhook with no type
        if kind not in WEBHOOK_TYPES:
            out.append((f"{where}.type", f"{kind!r} is not one of {', '.join(sorted(WEBHOOK_TYPES))}"))
        url = str(hook.get("url") or "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            out.append((f"{where}.url", f"{url!r} is not an http(s) URL with a host"))
        else:
            out += [(f"{where}.url", m) for m in _service_reachable(parts, docs)]
        if (timeout := hook.get("timeout")) is not None and _seconds(timeout) is None:
            out.append((f"{where}.timeout", f"{timeout!r} is not a duration"))
    return out


def _service_reachable(parts, docs: list[dict[str, Any]]) -> list[str]:
    """A URL naming a cluster Service (<name>.<namespace>[.svc[.cluster.local]]) whose namespace's
    Services are among the documents must name one of them, on a port it exposes."""
    match = SERVICE_HOST.match(parts.hostname or "")
    if not match:
        return []
    name, namespace = match.group(1), match.group(2)
    services = [d for d in docs if is_core_service(d) and namespace_of(d) == namespace]
    if not services:
        return []
    wanted = [s for s in services if name_of(s) == name]
    if not wanted:
        return [f"no Service {name} in namespace {namespace} among the documents"]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ports = {mapping(p).get("port") for p in sequence(mapping(wanted[0].get("spec")).get("ports"))}
    if port not in ports:
        return [f"Service {name} does not expose port {port} (it has {sorted(p for p in ports if p is not None)})"]
    return []


def template_rules(template: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) for one MetricTemplate."""
    out = []
    spec = mapping(template.get("spec"))
    provider = mapping(spec.get("provider"))
    if provider.get("type") == "prometheus":
        address = str(provider.get("address") or "")
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            out.append(("spec.provider.address", f"provider prometheus needs an http(s) address, got {address!r}"))
    query = str(spec.get("query") or "")
    if not query.strip():
        out.append(("spec.query", "the query is empty"))
    for action in ACTION.findall(query):
        match = LEADING_WORD.match(action)
        if match and match.group(1) not in TEMPLATE_FUNCTIONS | GO_TEMPLATE_WORDS:
            out.append(
                ("spec.query", f"{{{{ {action} }}}}: Flagger's templates know {', '.join(sorted(TEMPLATE_FUNCTIONS))}")
            )
    return out


def _variables_used(query: str) -> set[str]:
    used = set()
    for action in ACTION.findall(query):
        match = LEADING_WORD.match(action)
        if match and match.group(1) == "variables" and match.group(2):
            used.add(match.group(2).split(".")[1])
    return used


def _seconds(value: Any) -> float | None:
    """A Go duration in seconds, None if ``value`` is not one."""
    text = str(value)
    if not DURATION.match(text):
        return None
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", text))
