"""Validation gates: a declarative policy judged on backtest metrics, candidate vs serving.

The policy is a TOML file of rules (see gates.toml beside this module). The verdict is a report
(JSON-ready dict) listing every check with its values, threshold and a readable reason; the
candidate passes when no check fails.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLICY = Path(__file__).with_name("gates.toml")
Metrics = dict[str, dict[str, float]]  # series_id -> metric -> value


class PolicyError(ValueError):
    """The gate policy file is malformed; the message names the rule and field."""


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    relative: str | None = None
    min: float | None = None
    max: float | None = None

    def check(self, series_id: str, candidate: float, serving: float | None) -> dict[str, Any] | None:
        """One check for one series, or None when it does not apply (no serving to compare with)."""
        if self.relative and serving is None:
            return None
        if self.relative == "ratio":
            limit = serving * self.max
            passed = candidate <= limit
            threshold = f"<= {self.max:g} x serving = {limit:.4g}"
        elif self.relative == "difference":
            limit = serving + self.min
            passed = candidate >= limit
            threshold = f">= serving {self.min:+g} = {limit:.4g}"
        else:
            lo = -math.inf if self.min is None else self.min
            hi = math.inf if self.max is None else self.max
            passed = lo <= candidate <= hi
            threshold = f"in [{lo:g}, {hi:g}]"
        verdict = "passes" if passed else "fails"
        against = f" (serving {serving:.4g})" if serving is not None else ""
        return {
            "rule": self.name,
            "series_id": series_id,
            "metric": self.metric,
            "candidate": candidate,
            "serving": serving,
            "threshold": threshold,
            "passed": bool(passed),
            "reason": f"{series_id}: {self.metric} {candidate:.4g}{against} {verdict}: {threshold}",
        }


def load_policy(path: Path | None = None) -> list[Rule]:
    """The rules in ``path`` (default: the policy shipped with PEFM)."""
    path = path or DEFAULT_POLICY
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"cannot read gate policy {path}: {exc}") from None
    rules = []
    for i, raw in enumerate(data.get("rule", []), start=1):
        where = f"{path}: rule {i}"
        unknown = set(raw) - {"name", "metric", "relative", "min", "max"}
        if unknown:
            raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
        if "metric" not in raw:
            raise PolicyError(f"{where}: needs a metric")
        relative = raw.get("relative")
        if relative not in (None, "ratio", "difference"):
            raise PolicyError(f"{where}: relative must be 'ratio' or 'difference', not {relative!r}")
        if relative == "ratio" and "max" not in raw:
            raise PolicyError(f"{where}: a ratio rule needs max")
        if relative == "difference" and "min" not in raw:
            raise PolicyError(f"{where}: a difference rule needs min")
        if relative is None and "min" not in raw and "max" not in raw:
            raise PolicyError(f"{where}: needs min or max")
        rules.append(
            Rule(
                name=raw.get("name", raw["metric"]),
                metric=raw["metric"],
                relative=relative,
                min=raw.get("min"),
                max=raw.get("max"),
            )
        )
    if not rules:
        raise PolicyError(f"{path}: no [[rule]] in the policy")
    return rules


def evaluate(
    rules: list[Rule],
    candidate: Metrics,
    serving: Metrics | None,
    *,
    candidate_id: str = "candidate",
    serving_id: str | None = None,
) -> dict[str, Any]:
    """Judge the candidate's per-series metrics against the rules (and the serving model's)."""
    checks, skipped = [], []
    for rule in rules:
        applied = False
        for series_id, values in sorted(candidate.items()):
            value = values.get(rule.metric)
            if value is None:
                continue
            theirs = (serving or {}).get(series_id, {}).get(rule.metric)
            if rule.relative and serving is not None and theirs is None:
                skipped.append(
                    {
                        "rule": rule.name,
                        "series_id": series_id,
                        "reason": f"the serving model has no {rule.metric} for {series_id}",
                    }
                )
                continue
            check = rule.check(series_id, float(value), None if theirs is None else float(theirs))
            if check is not None:
                checks.append(check)
                applied = True
        if not applied:
            why = (
                "no serving model to compare with"
                if rule.relative and serving is None
                else (f"no series has {rule.metric}")
            )
            skipped.append({"rule": rule.name, "reason": why})
    failed = [c for c in checks if not c["passed"]]
    return {
        "candidate": candidate_id,
        "serving": serving_id,
        "passed": not failed,
        "checks": checks,
        "skipped": skipped,
        "failures": [c["reason"] for c in failed],
    }
