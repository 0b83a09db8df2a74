"""How often the input-drift check cries wolf on data that do not drift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pefm.drift.checks import evidently_drift, features
from pefm.drift.policy import DriftPolicy


def stable_false_positives(policy: DriftPolicy, checks: int, seed: int = 0, phi: float = 0.5) -> tuple[int, float]:
    """Run the monitor's input-drift check on ``checks`` windows of a stationary AR(phi) process,
    with the policy's window sizes and thresholds; (checks that flagged drift, their share)."""
    rng = np.random.default_rng(seed)
    n = policy.reference + policy.current + 1
    flagged = 0
    for _ in range(checks):
        shocks = rng.normal(size=n + 100)
        values = np.zeros(len(shocks))
        for t in range(1, len(values)):
            values[t] = phi * values[t - 1] + shocks[t]
        frame = features(pd.Series(values[-n:]), "log_diff_ann")
        results, _ = evidently_drift(
            frame.iloc[: policy.reference],
            frame.iloc[policy.reference :],
            [
                ("value", policy.input_method, policy.value_threshold),
                ("volatility", policy.input_method, policy.volatility_threshold),
            ],
        )
        flagged += any(r["drifted"] for r in results)
    return flagged, flagged / checks
