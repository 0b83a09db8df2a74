"""The drift policy file (declarative, like the gate policy)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT = Path(__file__).with_name("policy.toml")


@dataclass(frozen=True)
class DriftPolicy:
    reference: int = 40
    current: int = 12
    input_method: str = "wasserstein"
    value_threshold: float = 1.3
    volatility_threshold: float = 1.1
    prediction_method: str = "wasserstein"
    prediction_threshold: float = 1.3
    prediction_min_samples: int = 20
    accuracy_window: int = 8
    accuracy_min_errors: int = 4
    accuracy_ratio: float = 2.0
    consecutive: int = 2
    cooldown_hours: float = 24.0

    @classmethod
    def load(cls, path: Path | None = None) -> DriftPolicy:
        path = Path(path or DEFAULT)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read drift policy {path}: {exc}") from None
        fields = {
            "reference": data.get("reference"),
            "current": data.get("current"),
            "input_method": data.get("input", {}).get("method"),
            "value_threshold": data.get("input", {}).get("value_threshold"),
            "volatility_threshold": data.get("input", {}).get("volatility_threshold"),
            "prediction_method": data.get("prediction", {}).get("method"),
            "prediction_threshold": data.get("prediction", {}).get("threshold"),
            "prediction_min_samples": data.get("prediction", {}).get("min_samples"),
            "accuracy_window": data.get("accuracy", {}).get("window"),
            "accuracy_min_errors": data.get("accuracy", {}).get("min_errors"),
            "accuracy_ratio": data.get("accuracy", {}).get("ratio_threshold"),
            "consecutive": data.get("trigger", {}).get("consecutive"),
            "cooldown_hours": data.get("trigger", {}).get("cooldown_hours"),
        }
        policy = cls(**{k: v for k, v in fields.items() if v is not None})
        if policy.current < 4 or policy.reference < policy.current:
            raise ValueError(f"{path}: need current >= 4 and reference >= current")
        return policy
