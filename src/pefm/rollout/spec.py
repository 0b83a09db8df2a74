"""The rollout spec: a declarative file versioned with the manifests (knative/rollout.yaml)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRICS = ("success_rate", "p99_latency_ms", "divergence")
REPOSITORY_SPEC = Path(__file__).resolve().parents[3] / "knative" / "rollout.yaml"


def _finite(value: Any) -> bool:
    """Whether ``value`` is a number (a bool is none) that a float holds, and not inf or nan."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


@dataclass(frozen=True)
class Check:
    """A metric of the green revision that must stay in [min, max] at every step."""

    name: str
    metric: str
    min: float | None = None
    max: float | None = None

    def judge(self, value: float | None) -> dict[str, Any]:
        passed = (
            value is not None and (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        )
        bounds = (
            f"[{'-inf' if self.min is None else f'{self.min:g}'}, {'inf' if self.max is None else f'{self.max:g}'}]"
        )
        return {
            "check": self.name,
            "metric": self.metric,
            "value": value,
            "range": bounds,
            "passed": bool(passed) if value is not None else None,
        }


@dataclass(frozen=True)
class RolloutSpec:
    """How traffic moves from blue to green and what must hold at each step."""

    service: str = "inference"
    """The PEFM service rolled out (its Knative Service is ``knative_service(service)``)."""
    steps: tuple[int, ...] = (10, 25, 50, 100)
    interval_seconds: float = 30.0
    threshold: int = 2
    min_requests: int = 20
    synthetic_load: int = 0
    """Requests the controller sends through the router per tick when traffic is short (0: none)."""
    max_wait_seconds: float | None = 600.0
    """How long a rollout may find nothing to judge (no gate report for the candidate, too few
    requests on green, a check with no value) before it is rolled back; None: it waits for ever.
    Flagger counts a check with no value as a failed one; waiting instead must not hold a green
    started in a quiet hour, and the service's next rollout, for good."""
    require_gates: bool = True
    checks: tuple[Check, ...] = field(
        default_factory=lambda: (
            Check("success-rate", "success_rate", min=0.99),
            Check("latency-p99", "p99_latency_ms", max=500.0),
            Check("divergence", "divergence", max=0.5),
        )
    )
    smoke_request: dict[str, Any] = field(default_factory=lambda: {"series_id": "realgdp", "horizon": 4})
    shadow_requests: int = 5
    manual_promotion: bool = False
    """Whether an operator must approve the promotion once every check passed at 100% (locally
    ``pefm rollout promote``; on a cluster the same action opens Flagger's confirm-promotion gate)."""

    def __post_init__(self) -> None:
        """Every field checked here, when the spec is loaded: a value of the wrong type loaded
        and then broke every analysis (``min: 99%`` compared with a float), or never let one end
        (``interval_seconds: .nan``)."""
        if not isinstance(self.service, str) or not self.service:
            raise ValueError(f"service: expected a non-empty string, not {self.service!r}")
        steps = list(self.steps)
        if (
            not all(type(s) is int for s in steps)
            or not steps
            or steps != sorted(set(steps))
            or steps[-1] != 100
            or steps[0] <= 0
        ):
            raise ValueError(f"steps must rise strictly in whole percents from above 0 to 100, got {steps}")
        if not _finite(self.interval_seconds) or self.interval_seconds <= 0:
            raise ValueError(f"interval_seconds: expected a number of seconds above 0, not {self.interval_seconds!r}")
        if self.max_wait_seconds is not None and (not _finite(self.max_wait_seconds) or self.max_wait_seconds <= 0):
            raise ValueError(
                f"max_wait_seconds: expected a number of seconds above 0, or null, not {self.max_wait_seconds!r}"
            )
        for name, least in (("threshold", 1), ("min_requests", 1), ("synthetic_load", 0), ("shadow_requests", 1)):
            if type(value := getattr(self, name)) is not int or value < least:
                raise ValueError(f"{name}: expected a whole number of at least {least}, not {value!r}")
        for name in ("require_gates", "manual_promotion"):
            if type(value := getattr(self, name)) is not bool:
                raise ValueError(f"{name}: expected true or false, not {value!r}")
        if not isinstance(self.smoke_request, dict):
            raise ValueError(f"smoke_request: expected a mapping (a forecast request), not {self.smoke_request!r}")
        for check in self.checks:
            if not isinstance(check.name, str) or not check.name:
                raise ValueError(f"a check's name: expected a non-empty string, not {check.name!r}")
            if check.metric not in METRICS:
                raise ValueError(f"check {check.name!r}: unknown metric {check.metric!r}; one of {METRICS}")
            for bound in ("min", "max"):
                if (value := getattr(check, bound)) is not None and not _finite(value):
                    raise ValueError(f"check {check.name!r}: {bound}: expected a finite number, not {value!r}")
            if check.min is not None and check.max is not None and check.min > check.max:
                raise ValueError(f"check {check.name!r}: min {check.min} is above max {check.max}: nothing passes")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutSpec:
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown rollout spec field(s): {sorted(unknown)}")
        for name in ("steps", "checks"):
            if name in data and not isinstance(data[name], list | tuple):
                raise ValueError(f"{name}: expected a list, not {data[name]!r}")
        if "checks" in data:
            fields = set(Check.__dataclass_fields__)
            for i, check in enumerate(data["checks"]):
                if not isinstance(check, dict) or not {"name", "metric"} <= set(check) <= fields:
                    raise ValueError(f"checks[{i}]: expected a mapping of name, metric, min and max, not {check!r}")
            data["checks"] = tuple(Check(**c) for c in data["checks"])
        if "steps" in data:
            data["steps"] = tuple(data["steps"])
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> RolloutSpec:
        """The spec in the YAML file ``path``; ConfigError naming the file when it cannot be read,
        parsed or used."""
        from pefm.config import ConfigError

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"expected a mapping of fields, not a {type(data).__name__}")
            return cls.from_dict(data)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, ValueError) as exc:
            raise ConfigError(f"rollout spec {path}: {exc}") from None

    @classmethod
    def configured(cls, path: Path | None = None) -> RolloutSpec:
        """The spec in ``path``, else PEFM_ROLLOUT_SPEC, else the repository's knative/rollout.yaml
        (wherever the command runs from), else the defaults."""
        from pefm.config import get_settings

        path = path or get_settings().rollout_spec or (REPOSITORY_SPEC if REPOSITORY_SPEC.is_file() else None)
        return cls.load(path) if path else cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
