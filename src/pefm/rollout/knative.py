"""KnativeRouter: traffic splitting on a ``serving.knative.dev/v1`` Service through the Kubernetes API.

Reads the Service, and patches ``spec.traffic`` (a JSON merge patch replaces the list whole, so
the block is always exactly what the controller decided). ``create_green`` adds a new BYO-named
revision with the candidate's model version at 0% under the ``green`` tag, leaving blue serving.
The previous revision always stays in the block at 0% under its tag: rollback is one patch.
"""

from __future__ import annotations

import copy
from typing import Any

from pefm.rollout.router import TrafficTarget

GROUP, VERSION, PLURAL = "serving.knative.dev", "v1", "services"


class KnativeRouter:
    def __init__(self, api: Any, namespace: str, domain: str = "example.com"):
        """``api`` is a kubernetes ``CustomObjectsApi`` (or anything with the same two methods)."""
        self.api = api
        self.namespace = namespace
        self.domain = domain

    @classmethod
    def from_kubeconfig(cls, namespace: str, domain: str) -> KnativeRouter:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.CustomObjectsApi(), namespace, domain)

    def service(self, service: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, service)

    def traffic(self, service: str) -> list[TrafficTarget]:
        return [TrafficTarget.from_knative(t) for t in self.service(service).get("spec", {}).get("traffic", [])]

    def set_traffic(self, service: str, targets: list[TrafficTarget]) -> None:
        body = {"spec": {"traffic": [t.to_knative() for t in targets]}}
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, service, body)

    def create_green(self, service: str, revision: str, model_version: str, image: str | None = None) -> dict[str, Any]:
        """Patch the template into a new revision ``revision`` serving ``model_version`` (from
        ``image`` when given, in the variant the Service runs: a ``-cuda`` image stays CUDA), at 0%
        under ``green``; the serving revision keeps its traffic. Returns the patch sent."""
        if not revision.startswith(f"{service}-"):
            raise ValueError(f"revision {revision!r} must start with '{service}-'")
        current = self.service(service)
        template = copy.deepcopy(current["spec"]["template"])
        template.setdefault("metadata", {})["name"] = revision
        container = template["spec"]["containers"][0]
        if image:
            cuda = container.get("image", "").endswith("-cuda") and not image.endswith("-cuda")
            container["image"] = image + ("-cuda" if cuda else "")
        env = [e for e in container.get("env", []) if e.get("name") != "PEFM_MODEL_VERSION"]
        container["env"] = [{"name": "PEFM_MODEL_VERSION", "value": model_version}, *env]
        traffic = [TrafficTarget.from_knative(t) for t in current["spec"].get("traffic", [])]
        kept = [t for t in traffic if t.tag not in ("green", "latest") and t.revision != revision]
        block = [*kept, TrafficTarget(revision, 0, "green"), TrafficTarget(None, 0, "latest", latest=True)]
        patch = {"spec": {"template": template, "traffic": [t.to_knative() for t in block]}}
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, service, patch)
        return patch

    def revision_model_version(self, service: str, revision: str) -> str | None:
        """PEFM_MODEL_VERSION of the Revision's first container; None when it sets none."""
        body = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "revisions", revision)
        containers = body.get("spec", {}).get("containers") or [{}]
        env = {e.get("name"): e.get("value") for e in containers[0].get("env", [])}
        return env.get("PEFM_MODEL_VERSION")

    def retire(self, service: str, revision: str) -> bool:
        """Nothing to do: Knative scales a revision without traffic to zero itself, and its
        revision garbage collector deletes old ones (config-gc)."""
        return False

    def retire_unrouted(self, service: str, grace_seconds: float) -> list[str]:
        """Nothing to do (see ``retire``)."""
        return []

    def url(self, service: str) -> str:
        return f"https://{service}.{self.namespace}.{self.domain}"

    def tag_url(self, service: str, tag: str) -> str:
        return f"https://{tag}-{service}.{self.namespace}.{self.domain}"
