"""The TrafficRouter seam: read and set a service's traffic block, Knative-style."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class TrafficTarget:
    """One entry of a traffic block: a revision (or the latest one), its percent, its tag."""

    revision: str | None
    percent: int
    tag: str | None = None
    latest: bool = False

    def to_knative(self) -> dict[str, Any]:
        out: dict[str, Any] = {"percent": self.percent}
        if self.latest:
            out["latestRevision"] = True
        else:
            out["revisionName"] = self.revision
        if self.tag:
            out["tag"] = self.tag
        return out

    @classmethod
    def from_knative(cls, entry: dict[str, Any]) -> TrafficTarget:
        return cls(
            entry.get("revisionName"),
            int(entry.get("percent", 0)),
            entry.get("tag"),
            bool(entry.get("latestRevision", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TAG = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
"""A tag as Knative takes one: a DNS-1035 label (it names the route ``<tag>-<service>``)."""


def check_block(targets: list[TrafficTarget]) -> None:
    """ValueError, naming the entry, unless ``targets`` is a traffic block Knative's admission
    would take: percents of 0..100 adding up to 100; each entry a named revision or, with no
    name, ``latestRevision``; tags DNS-1035 labels, no two alike."""
    total = sum(t.percent for t in targets)
    if total != 100 or any(not 0 <= t.percent <= 100 for t in targets):
        raise ValueError(f"traffic percents must be 0..100 and add up to 100, got {total}")
    tags = [t.tag for t in targets if t.tag is not None]
    for i, t in enumerate(targets):
        if bool(t.revision) == t.latest:
            raise ValueError(f"traffic[{i}]: a revision name, or latestRevision with none, not both or neither")
        if t.tag is not None and not TAG.fullmatch(t.tag):
            raise ValueError(f"traffic[{i}]: tag {t.tag!r} is not a DNS-1035 label (a-z, 0-9, '-'; a letter first)")
        if t.tag is not None and tags.count(t.tag) > 1:
            raise ValueError(f"traffic[{i}]: tag {t.tag!r} names two targets")


def knative_service(service: str) -> str:
    """The Knative Service of a PEFM service (``inference`` -> ``pefm-inference``, as knative/base
    names them); locally it is the prefix of the service's revision names."""
    return f"pefm-{service}"


def revision_name(service: str, model_version: str) -> str:
    """The revision of ``service`` that serves ``model_version``: ``pefm-<service>-<version>``,
    cut to Kubernetes' 63 characters."""
    return f"{knative_service(service)}-{model_version}"[:63].rstrip("-")


def blue_green(blue: str, green: str, weight: int) -> list[TrafficTarget]:
    """The traffic block of a rollout at ``weight`` percent on green; both stay reachable by tag
    and ``latest`` is pinned to 0%."""
    return [
        TrafficTarget(blue, 100 - weight, "blue"),
        TrafficTarget(green, weight, "green"),
        TrafficTarget(None, 0, "latest", latest=True),
    ]


def sole(revision: str) -> list[TrafficTarget]:
    """The traffic block of a service with one revision: all of it, tagged ``blue`` (what ``pefm
    up`` starts with and what a finished rollout settles into once its grace period is over)."""
    return [TrafficTarget(revision, 100, "blue")]


def serving_revision(traffic: list[TrafficTarget]) -> str | None:
    """The named revision with the most traffic (the one a new rollout starts from)."""
    named = [t for t in traffic if t.revision and not t.latest]
    return max(named, key=lambda t: t.percent).revision if named else None


def same_traffic(a: list[TrafficTarget], b: list[TrafficTarget]) -> bool:
    """Whether two traffic blocks route the same way (order does not matter)."""
    return sorted(a, key=repr) == sorted(b, key=repr)


class TrafficRouter(Protocol):
    def traffic(self, service: str) -> list[TrafficTarget]: ...

    def set_traffic(self, service: str, targets: list[TrafficTarget]) -> None: ...

    def tag_url(self, service: str, tag: str) -> str: ...

    def url(self, service: str) -> str: ...

    def routes(self, service: str) -> bool:
        """Whether the router fronts ``service`` (has a URL for it)."""
        ...

    def revision_model_version(self, service: str, revision: str) -> str | None:
        """The model version a revision serves (its PEFM_MODEL_VERSION), None when unknown."""
        ...

    def has_revision(self, service: str, revision: str) -> bool:
        """Whether ``revision`` is one of ``service``'s (started, not yet retired)."""
        ...

    def unpinned(self, service: str, revision: str) -> bool:
        """Whether ``revision`` is one pinned to no version: it serves the registry's serving
        version, following promotions (``ServiceFunction._follow_registry``)."""
        ...

    def retire(self, service: str, revision: str) -> bool:
        """Stop a revision that carries no traffic; whether anything was stopped."""
        ...

    def retire_unrouted(self, service: str, grace_seconds: float) -> list[str]:
        """Stop the revisions that left the service's traffic block over ``grace_seconds`` ago."""
        ...
