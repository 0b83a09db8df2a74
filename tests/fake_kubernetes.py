"""A stand-in for the Kubernetes API (no cluster runs here): the two CustomObjectsApi calls PEFM
makes, over objects held in memory, with JSON merge patch semantics (dicts merge, lists and
scalars replace). It holds what Knative and Flagger would: the inference Service with Flagger's
primary-revision annotation and ``status.latestCreatedRevisionName``, Revisions, the Canary."""

from __future__ import annotations

from typing import Any

SERVICE = "pefm-inference"


class FakeKubernetes:
    """The two CustomObjectsApi calls PEFM makes, over objects held in memory (merge patches)."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, str, dict]] = []
        self.failing: int | None = None
        """An HTTP status every call answers while set (the API server down, or RBAC refusing)."""

    def _fail(self) -> None:
        if self.failing is not None:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=self.failing, reason="refused by the fake API server")

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self._fail()
        if (plural, name) not in self.objects:  # as the API server answers
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=404, reason="Not Found")
        return self.objects[(plural, name)]

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self._fail()
        target = self.objects[(plural, name)]
        _merge(target, body)
        if "spec" in body:  # the API server bumps the generation on every spec change
            metadata = target.setdefault("metadata", {})
            metadata["generation"] = metadata.get("generation", 0) + 1
        self.patches.append((plural, name, body))
        return target

    def revision(self, name: str, model_version: str | None) -> None:
        env = [{"name": "PEFM_MODEL_VERSION", "value": model_version}] if model_version else []
        self.objects[("revisions", name)] = {"spec": {"containers": [{"env": env}]}}

    def route(self, primary: str, latest: str, weight: int = 0) -> None:
        """What Flagger and Knative leave in the Service: the pinned primary, the latest revision,
        and the routed traffic (``weight`` percent on the latest one)."""
        service = self.objects[("services", SERVICE)]
        service["metadata"]["annotations"]["flagger.app/primary-revision"] = primary
        service["status"]["latestCreatedRevisionName"] = latest
        traffic = [{"revisionName": primary, "percent": 100 - weight}]
        if latest != primary:
            traffic.append({"revisionName": latest, "latestRevision": True, "percent": weight})
        service["status"]["traffic"] = traffic


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
