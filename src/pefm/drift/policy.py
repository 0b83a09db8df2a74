"""The drift policy file (declarative, like the gate policy)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pefm.config import ConfigError

DEFAULT = Path(__file__).with_name("policy.toml")
_LAYOUT: dict[str, str | dict[str, str]] = {
    "reference": "reference",
    "current": "current",
    "min_points": "min_points",
    "panel": {"alpha": "alpha", "simulations": "simulations"},
    "accuracy": {"window": "accuracy_window", "min_errors": "accuracy_min_errors"},
    "trigger": {"consecutive": "consecutive", "cooldown_hours": "cooldown_hours"},
    "explain": {"signals": "signals", "methods": "methods"},
}
"""The policy file's keys (and tables' keys), each to its DriftPolicy field."""
_KINDS = {"int": ((int,), "an integer"), "float": ((int, float), "a number")}
"""What a field's annotation accepts from TOML (booleans are not numbers here), and its name."""
MIN_ERRORS = 2
"""The fewest one-step errors an accuracy test takes: the mean square of none is no number, and
a single error is one draw whose size alone would decide the test."""


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
            raise ConfigError(f"cannot read drift policy {path}: {exc}") from None
        given = {}
        for key, value in data.items():  # a misspelt key would leave its default in force, unsaid
            where = _LAYOUT.get(key)
            if where is None:
                raise ConfigError(f"{path}: unknown key {key!r}; expected {', '.join(_LAYOUT)}")
            if isinstance(where, str):
                given[where] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table, not {value!r}")
            for sub, inner in value.items():
                if sub not in where:
                    raise ConfigError(f"{path}: unknown key {key}.{sub}; expected {', '.join(where)} in [{key}]")
                given[where[sub]] = inner
        for name, value in given.items():
            kinds, what = _KINDS.get(cls.__dataclass_fields__[name].type, ((dict,), "a table"))
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ConfigError(f"{path}: {name} must be {what}, not {value!r}")
        try:
            return cls(**given)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def __post_init__(self) -> None:
        """The limits every policy keeps, loaded or built in code."""
        if self.min_points < 3 or self.current < self.min_points or self.reference < self.current:
            raise ValueError("need min_points >= 3, current >= min_points and reference >= current")
        if not 0 < self.alpha < 1 or self.simulations < 100 or self.consecutive < 1:
            raise ValueError("need 0 < alpha < 1, simulations >= 100 and consecutive >= 1")
        if self.accuracy_min_errors < MIN_ERRORS or self.accuracy_window < self.accuracy_min_errors:
            # a window of 0 took every error since training (errors[-0:])
            raise ValueError(f"need [accuracy] min_errors >= {MIN_ERRORS} and window >= min_errors")
