"""Core Kubernetes kinds (Job, CronJob, RBAC, NetworkPolicy, Deployment, Service, ConfigMap...)
offline: the upstream OpenAPI schemas of one Kubernetes version, strict (unknown fields are
errors), as shipped by the ``kubernetes-validate`` package; then what the API server or the
cluster would refuse or silently ignore, and references between the documents validated together
(a pod's ServiceAccount, a RoleBinding's Role and subjects, a Service's or NetworkPolicy's pods).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pefm.knative.documents import (
    Problem,
    dotted,
    group_of,
    is_core_service,
    label,
    mapping,
    name_of,
    namespace_of,
    pod_template,
    selector_matches,
    sequence,
)

# The Kubernetes version whose schemas core kinds are checked against (kubernetes-validate ships
# 1.25 to 1.37): the kubectl pinned in ci.yml, and the oldest minor PEFM supports.
KUBERNETES_VERSION = "1.32.0"
SCHEMAS = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
RBAC = "rbac.authorization.k8s.io"
VERBS = {
    *("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"),
    *("use", "bind", "escalate", "impersonate", "approve", "sign", "*"),
}
CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")
POLICY_TYPES = {"Ingress", "Egress"}


def is_core_group(group: str) -> bool:
    """Groups served by Kubernetes itself: the core group, the unqualified ones (apps, batch,
    policy, autoscaling) and *.k8s.io. CRD groups never qualify, whatever their kind is called."""
    return "." not in group or group.endswith(".k8s.io")


@cache
def _definitions() -> Any:
    from kubernetes_validate.utils import schema_contents

    return schema_contents(f"{SCHEMAS}/_definitions.json", KUBERNETES_VERSION)


@cache
def _validator(api_version: str, kind: str):
    """The strict schema validator of (apiVersion, kind) in KUBERNETES_VERSION, None if there is none."""
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    group = api_version.split("/")[0] if "/" in api_version else ""
    if not is_core_group(group):
        return None
    # kubernetes-validate's file names: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{SCHEMAS}/{kind.lower()}-{api}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(_definitions()) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def known(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` is a kind of Kubernetes KUBERNETES_VERSION (core groups only)."""
    return _validator(str(doc.get("apiVersion") or ""), str(doc.get("kind") or "")) is not None


def schema_problems(doc: dict[str, Any]) -> list[Problem]:
    """``doc`` against its strict upstream schema."""
    validator = _validator(str(doc.get("apiVersion")), str(doc.get("kind")))
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(label(doc), dotted(e.absolute_path), e.message) for e in errors]


def check(docs: list[dict[str, Any]], crd_resources: dict[str, set[str]]) -> list[Problem]:
    """The cluster's rules and the references between ``docs`` (core kinds only). ``crd_resources``:
    API group -> resource plurals of the CRDs loaded, to check RBAC rules that name them."""
    out: list[Problem] = []
    core = [d for d in docs if is_core_group(group_of(d)) and known(d)]
    accounts = {(namespace_of(d), name_of(d)) for d in core if d.get("kind") == "ServiceAccount"}
    roles = {(namespace_of(d), name_of(d)) for d in core if d.get("kind") == "Role"}
    pods = [(namespace_of(d), t) for d in docs if (t := pod_template(d)) is not None]
    for doc in docs:
        where = pod_template(doc)
        if where is not None:
            out += [Problem(label(doc), p, m) for p, m in _pod_rules(doc, where, accounts)]
    for doc in core:
        kind = doc.get("kind")
        found: list[tuple[str, str]] = []
        if kind in ("Role", "ClusterRole"):
            found = _rbac_rules(doc, crd_resources)
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            found = _binding_rules(doc, accounts, roles)
        elif kind == "NetworkPolicy":
            found = _network_policy_rules(doc, pods)
        elif is_core_service(doc):
            found = _service_rules(doc, pods)
        elif kind == "CronJob":
            found = cron_rules(doc)
        elif kind == "Deployment":
            selector = mapping(mapping(doc.get("spec")).get("selector"))
            labels = pod_template(doc)[1]
            if not selector_matches(selector, labels):
                found = [("spec.selector", "does not match the pod template's labels")]
        out += [Problem(label(doc), p, m) for p, m in found]
    return out


def _pod_rules(
    doc: dict[str, Any], where: tuple[str, dict[str, str], dict[str, Any]], accounts: set[tuple[str, str]]
) -> list[tuple[str, str]]:
    out = []
    path, _, pod = where
    account = pod.get("serviceAccountName")
    if account and account != "default" and (namespace_of(doc), account) not in accounts:
        out.append((f"{path}.serviceAccountName", f"no ServiceAccount {account} among the documents"))
    if doc.get("kind") in ("Job", "CronJob") and pod.get("restartPolicy") not in ("Never", "OnFailure"):
        out.append((f"{path}.restartPolicy", "a Job's pods need restartPolicy Never or OnFailure"))
    return out


def _rbac_rules(role: dict[str, Any], crd_resources: dict[str, set[str]]) -> list[tuple[str, str]]:
    out = []
    for i, rule in enumerate(sequence(role.get("rules"))):
        rule, where = mapping(rule), f"rules[{i}]"
        for verb in sequence(rule.get("verbs")):
            if verb not in VERBS:
                out.append((f"{where}.verbs", f"unknown verb {verb!r}"))
        if rule.get("resourceNames") and {"create", "deletecollection"} & set(sequence(rule.get("verbs"))):
            out.append((f"{where}.resourceNames", "resourceNames cannot restrict create or deletecollection"))
        for group in sequence(rule.get("apiGroups")):
            plurals = crd_resources.get(group)
            if not plurals:
                continue
            for resource in sequence(rule.get("resources")):
                if resource != "*" and str(resource).split("/")[0] not in plurals:
                    out.append(
                        (
                            f"{where}.resources",
                            f"{group} has no resource {resource!r} (it has {', '.join(sorted(plurals))})",
                        )
                    )
    return out


def _binding_rules(
    binding: dict[str, Any], accounts: set[tuple[str, str]], roles: set[tuple[str, str]]
) -> list[tuple[str, str]]:
    out = []
    ref = mapping(binding.get("roleRef"))
    if ref.get("apiGroup") != RBAC:
        out.append(("roleRef.apiGroup", f"must be {RBAC}"))
    if ref.get("kind") == "Role":
        if binding.get("kind") == "ClusterRoleBinding":
            out.append(("roleRef.kind", "a ClusterRoleBinding can only bind a ClusterRole"))
        elif (namespace_of(binding), ref.get("name")) not in roles:
            out.append(("roleRef.name", f"no Role {ref.get('name')} in the binding's namespace among the documents"))
    for i, subject in enumerate(sequence(binding.get("subjects"))):
        subject = mapping(subject)
        if subject.get("kind") != "ServiceAccount":
            continue
        namespace = str(subject.get("namespace") or namespace_of(binding))
        if namespace == namespace_of(binding) and (namespace, subject.get("name")) not in accounts:
            out.append((f"subjects[{i}]", f"no ServiceAccount {subject.get('name')} among the documents"))
    return out


def _network_policy_rules(
    policy: dict[str, Any], pods: list[tuple[str, tuple[str, dict[str, str], dict[str, Any]]]]
) -> list[tuple[str, str]]:
    out = []
    spec = mapping(policy.get("spec"))
    for i, kind in enumerate(sequence(spec.get("policyTypes"))):
        if kind not in POLICY_TYPES:
            out.append((f"spec.policyTypes[{i}]", f"{kind!r} is not Ingress or Egress"))
    if "podSelector" not in spec:
        out.append(("spec.podSelector", "required ({} selects every pod of the namespace)"))
    mine = [t for namespace, t in pods if namespace == namespace_of(policy)]
    selector = mapping(spec.get("podSelector"))
    if mine and not any(selector_matches(selector, labels) for _, labels, _ in mine):
        out.append(("spec.podSelector", "selects none of the pods among the documents: the policy would do nothing"))
    return out


def _service_rules(
    service: dict[str, Any], pods: list[tuple[str, tuple[str, dict[str, str], dict[str, Any]]]]
) -> list[tuple[str, str]]:
    spec = mapping(service.get("spec"))
    selector = mapping(spec.get("selector"))
    if not selector or spec.get("type") == "ExternalName":
        return []
    matched = [
        pod
        for namespace, (_, labels, pod) in pods
        if namespace == namespace_of(service) and _equal_subset(selector, labels)
    ]
    if not matched:
        return [("spec.selector", "selects none of the pods among the documents")]
    out = []
    names = {
        mapping(port).get("name")
        for pod in matched
        for container in sequence(pod.get("containers"))
        for port in sequence(mapping(container).get("ports"))
    }
    for i, port in enumerate(sequence(spec.get("ports"))):
        target = mapping(port).get("targetPort")
        if isinstance(target, str) and target not in names:
            out.append((f"spec.ports[{i}].targetPort", f"no container port named {target!r} in the selected pods"))
    return out


def _equal_subset(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())


def cron_rules(cron: dict[str, Any]) -> list[tuple[str, str]]:
    """A CronJob's (or PingSource's) spec.schedule: five cron fields or an @ macro."""
    schedule = str(mapping(cron.get("spec")).get("schedule") or "")
    fields = schedule.split()
    macros = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
    if schedule in macros or (len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields)):
        return []
    return [("spec.schedule", f"{schedule!r} is not a five-field cron schedule (or an @ macro)")]
