"""KnativeCluster: what PEFM reads and writes on a cluster where Flagger runs the rollouts.

PEFM never writes a traffic block there (Flagger does). It reads the Knative Service (the primary
revision Flagger pinned, the latest created revision it canaries, the routed traffic), a
Revision's model version, and the Canary; it writes only the Service's template (a new model is
a template change: Knative names the revision) and the Canary's ``spec.suspend`` (pause).
"""

from __future__ import annotations

import copy
import time
from typing import Any

KNATIVE = ("serving.knative.dev", "v1")
FLAGGER = ("flagger.app", "v1beta1")
PRIMARY = "flagger.app/primary-revision"
DEPLOY_ENV = "pefm.dev/deploy-env"  # template annotation: the extra env names the last deploy set
MODEL_ENV = "PEFM_MODEL_VERSION"


class ClusterError(RuntimeError):
    """The cluster is not in a state the operation can work from."""


class ClusterUnavailable(ClusterError):
    """The Kubernetes API refused or failed a call (an answer other than 404, or none at all)."""


class NotFound(LookupError):
    """No object of that kind and name in the namespace (the Kubernetes API's 404)."""


class UnknownCanary(NotFound):
    """No Canary of that name in the namespace."""


KINDS = {"services": "Knative Service", "revisions": "Knative Revision", "canaries": "Canary"}


class KnativeCluster:
    def __init__(self, api: Any, namespace: str, url_template: str = "http://{name}.{namespace}.svc.cluster.local"):
        """``api`` is a kubernetes ``CustomObjectsApi`` (or anything with its get/patch methods)."""
        self.api = api
        self.namespace = namespace
        self.url_template = url_template

    @classmethod
    def from_settings(cls, settings) -> KnativeCluster:
        """In-cluster credentials when running in a pod, else the kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.CustomObjectsApi(), settings.knative_namespace, settings.knative_url)

    # -- reads -----------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        """A call of the CustomObjectsApi (``group, version, namespace, plural, name, ...``): its 404
        as NotFound naming the object (UnknownCanary for a Canary), any other failure (an error
        answer, or no answer: the connection refused) as ClusterUnavailable."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return getattr(self.api, method)(*args)
        except ApiException as exc:
            if exc.status == 404:
                namespace, plural, name = args[2:5]
                missing = UnknownCanary if plural == "canaries" else NotFound
                raise missing(f"no {KINDS.get(plural, plural)} {namespace}/{name}") from None
            raise ClusterUnavailable(f"the Kubernetes API answered {exc.status} {exc.reason or ''}".strip()) from None
        except (HTTPError, OSError) as exc:
            raise ClusterUnavailable(f"the Kubernetes API did not answer: {exc}") from None

    def service(self, name: str) -> dict[str, Any]:
        return self._call("get_namespaced_custom_object", *KNATIVE, self.namespace, "services", name)

    def canary(self, name: str) -> dict[str, Any]:
        return self._call("get_namespaced_custom_object", *FLAGGER, self.namespace, "canaries", name)

    def revisions(self, service: str) -> tuple[str | None, str | None]:
        """(primary, canary) of a Flagger-managed Knative Service: the revision Flagger pinned as
        primary and the latest created one."""
        body = self.service(service)
        primary = (body.get("metadata", {}).get("annotations") or {}).get(PRIMARY)
        return primary, body.get("status", {}).get("latestCreatedRevisionName")

    def traffic(self, service: str) -> list[dict[str, Any]]:
        """The routed traffic as Knative reports it (``status.traffic``)."""
        return self.service(service).get("status", {}).get("traffic") or []

    def revision_model_version(self, revision: str) -> str | None:
        """PEFM_MODEL_VERSION of the Revision's first container; None when it is unpinned (it then
        serves the registry's serving version, following promotions)."""
        body = self._call("get_namespaced_custom_object", *KNATIVE, self.namespace, "revisions", revision)
        containers = body.get("spec", {}).get("containers") or [{}]
        env = {e.get("name"): e.get("value") for e in containers[0].get("env", [])}
        return env.get(MODEL_ENV)

    def url(self, name: str) -> str:
        """The in-cluster URL of a Knative Service (routed by its traffic split) or of one revision."""
        return self.url_template.format(name=name, namespace=self.namespace)

    # -- writes ----------------------------------------------------------------------------------
    def deploy(
        self, service: str, model_version: str, image: str | None = None, env: dict[str, str] | None = None
    ) -> int:
        """Change the Service's template to serve ``model_version`` (from ``image`` when given, in
        the variant the Service runs: on a Service that asks for a GPU an image tag gets its
        ``-cuda`` build; a digest is taken as given), with ``env`` added; extra env
        a previous deploy added is dropped. Knative creates and names the revision; Flagger
        canaries it. Traffic and everything else in the Service are left alone. Returns the
        Service's new generation."""
        env = dict(env or {})
        current = self.service(service)
        template = copy.deepcopy(current["spec"]["template"])
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        previous = {n for n in annotations.get(DEPLOY_ENV, "").split(",") if n}
        container = template["spec"]["containers"][0]
        if image:
            gpu = "nvidia.com/gpu" in (container.get("resources", {}).get("limits") or {})
            by_tag = "@" not in image  # a digest names one build already: taken as given
            container["image"] = image + ("-cuda" if gpu and by_tag and not image.endswith("-cuda") else "")
        dropped = previous | set(env) | {MODEL_ENV}
        kept = [e for e in container.get("env", []) if e.get("name") not in dropped]
        added = [{"name": k, "value": v} for k, v in sorted(env.items())]
        container["env"] = [{"name": MODEL_ENV, "value": model_version}, *added, *kept]
        annotations[DEPLOY_ENV] = ",".join(sorted(env))
        patched = self._call(
            "patch_namespaced_custom_object",
            *KNATIVE,
            self.namespace,
            "services",
            service,
            {"spec": {"template": template}},
        )
        return int((patched or {}).get("metadata", {}).get("generation") or 0)

    def wait_for_revision(self, service: str, generation: int, timeout: float = 300.0) -> str:
        """The revision Knative created for ``generation`` of the Service's template."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.service(service).get("status", {})
            if status.get("observedGeneration", 0) >= generation and status.get("latestCreatedRevisionName"):
                return status["latestCreatedRevisionName"]
            if time.monotonic() > deadline:
                raise ClusterError(f"Knative created no revision for generation {generation} of {service}")
            time.sleep(2)

    def suspend(self, canary: str, suspended: bool) -> None:
        """Pause (or resume) Flagger's analysis of a Canary (``spec.suspend``)."""
        patch = {"spec": {"suspend": suspended}}
        self._call("patch_namespaced_custom_object", *FLAGGER, self.namespace, "canaries", canary, patch)

    def follow(self, canary: str, since: str | None, timeout: float, on_change=None) -> str:
        """Wait until Flagger finished analysing a spec other than ``since`` (the Canary's
        ``status.lastAppliedSpec`` before a deploy); its final phase, Succeeded or Failed.
        ``on_change(status)`` sees every new (phase, weight)."""
        deadline, seen = time.monotonic() + timeout, None
        while True:
            status = self.canary(canary).get("status", {})
            now = (status.get("phase"), status.get("canaryWeight"), status.get("lastAppliedSpec"))
            if now != seen and on_change is not None:
                on_change(status)
            seen = now
            if status.get("lastAppliedSpec") != since and status.get("phase") in ("Succeeded", "Failed"):
                return status["phase"]
            if time.monotonic() > deadline:
                raise ClusterError(f"Canary {canary} did not finish within {timeout:g}s (phase {status.get('phase')})")
            time.sleep(5)


class ClusterTraffic:
    """The reads of the TrafficRouter seam over a Flagger-managed Knative Service: what ``pefm
    status`` compares with the registry. An unpinned revision serves the registry's serving
    version (``unpinned``), following promotions."""

    def __init__(self, cluster: KnativeCluster, unpinned: str | None):
        self.cluster, self.unpinned = cluster, unpinned

    def traffic(self, service: str):
        from pefm.rollout.router import TrafficTarget, knative_service

        return [
            TrafficTarget(t.get("revisionName"), int(t.get("percent") or 0), t.get("tag"))
            for t in self.cluster.traffic(knative_service(service))
        ]

    def revision_model_version(self, service: str, revision: str) -> str | None:
        return self.cluster.revision_model_version(revision) or self.unpinned

    def unpinned(self, service: str, revision: str) -> bool:
        return False  # revision_model_version has resolved an unpinned revision already
