"""The drift policy file (declarative, like the gate policy)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT = Path(__file__).with_name("policy.toml")


@dataclass(frozen=True)
class DriftPolicy:
    reference: int = 40
    current: int = 12
    min_points: int = 4
    alpha: float = 0.05
    simulations: int = 5000
    """Bootstrap draws and permutations per test."""
    accuracy_window: int = 12
    accuracy_min_errors: int = 4
    consecutive: int = 2
    cooldown_hours: float = 24.0
    signals: dict[str, str] = field(default_factory=dict)
    """What each signal means, in a line (``[explain.signals]``: the dashboard shows them)."""
    methods: dict[str, str] = field(default_factory=dict)
    """What each test method means, in a line (``[explain.methods]``)."""

    @classmethod
    def load(cls, path: Path | None = None) -> DriftPolicy:
        path = Path(path or DEFAULT)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read drift policy {path}: {exc}") from None
        sections = {
            "reference": data.get("reference"),
            "current": data.get("current"),
            "min_points": data.get("min_points"),
            "alpha": data.get("panel", {}).get("alpha"),
            "simulations": data.get("panel", {}).get("simulations"),
            "accuracy_window": data.get("accuracy", {}).get("window"),
            "accuracy_min_errors": data.get("accuracy", {}).get("min_errors"),
            "consecutive": data.get("trigger", {}).get("consecutive"),
            "cooldown_hours": data.get("trigger", {}).get("cooldown_hours"),
            "signals": data.get("explain", {}).get("signals"),
            "methods": data.get("explain", {}).get("methods"),
        }
        policy = cls(**{k: v for k, v in sections.items() if v is not None})
        if policy.min_points < 3 or policy.current < policy.min_points or policy.reference < policy.current:
            raise ValueError(f"{path}: need min_points >= 3, current >= min_points and reference >= current")
        if not 0 < policy.alpha < 1 or policy.simulations < 100 or policy.consecutive < 1:
            raise ValueError(f"{path}: need 0 < alpha < 1, simulations >= 100 and consecutive >= 1")
        return policy
