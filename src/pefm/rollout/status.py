"""Does the traffic agree with the registry? The serving version, the revisions carrying a
service's traffic and the model version each serves, and every way they disagree."""

from __future__ import annotations

from dataclasses import dataclass, field

from pefm.forecasting.registry import serving_version
from pefm.rollout.controller import Rollout, RolloutController
from pefm.storage.model_versions import ModelVersion


@dataclass(frozen=True)
class Target:
    revision: str | None
    tag: str | None
    percent: int
    model_version: str | None


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    serving: ModelVersion | None
    targets: list[Target]
    rollout: Rollout | None
    """The unfinished rollout of the service, if any."""
    problems: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.problems


def _served(router, service: str, revision: str | None, serving: ModelVersion | None) -> str | None:
    """The model version ``revision`` serves: its pinned one, else (left unpinned: compose's blue
    and green) the registry's serving version, which it follows through promotions, as a rollout
    takes it (``RolloutController.start``); else unknown."""
    if revision is None:
        return None
    pinned = router.revision_model_version(service, revision)
    if pinned is None and serving is not None and router.unpinned(service, revision):
        return serving.id
    return pinned


def service_status(controller: RolloutController, service: str, router=None) -> ServiceStatus:
    """What serves ``service`` and whether it is what the registry says serves (outside an
    unfinished rollout, every revision with traffic serves the registry's serving version; during
    one, green may serve the candidate). ``router`` reads the traffic (default: the controller's;
    on a cluster ``pefm.rollout.cluster.ClusterTraffic``)."""
    router = router or controller.router
    with controller.db.connection() as conn:
        serving = serving_version(conn)
    active = controller.active(service)
    rollout = controller.get(active[-1]) if active else None
    targets = [
        Target(t.revision, t.tag, t.percent, _served(router, service, t.revision, serving) if not t.latest else None)
        for t in router.traffic(service)
    ]
    problems = []
    if serving is None:
        problems.append("no model version is serving in the registry")
    if not targets:
        problems.append(f"{service} has no traffic block")
    for target in targets:
        if target.percent == 0:
            continue
        if target.revision is None:
            problems.append(f"{target.percent}% goes to the latest revision, whatever it serves")
            continue
        candidate = rollout is not None and target.revision == rollout.green_revision
        expected = rollout.green_model_version if candidate else (serving.id if serving else None)
        if target.model_version != expected:
            problems.append(
                f"{target.revision} carries {target.percent}% and serves {target.model_version or 'an unknown version'}"
                f", but {'the rollout' if candidate else 'the registry'} says {expected or 'none'}"
            )
    if (
        serving is not None
        and rollout is None
        and not any(t.percent and t.model_version == serving.id for t in targets)
    ):
        problems.append(f"the registry's serving version {serving.id} carries no traffic")
    return ServiceStatus(service, serving, targets, rollout, problems)
