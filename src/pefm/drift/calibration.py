"""How often the drift checks cry wolf on data that do not drift, for a whole panel."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pefm.drift.checks import features
from pefm.drift.policy import DriftPolicy
from pefm.drift.significance import flag, wasserstein_normed, window_nulls


def stationary_ar1(rng: np.random.Generator, length: int, heavy: bool | None = None) -> np.ndarray:
    """A stationary AR(1) path of ``length`` points with phi drawn in [0, 0.8] and Student-t(4)
    shocks when ``heavy`` (drawn at random when None), else Gaussian ones."""
    phi = rng.uniform(0.0, 0.8)
    heavy = rng.random() < 0.5 if heavy is None else heavy
    shocks = rng.standard_t(4, size=length + 100) if heavy else rng.normal(size=length + 100)
    values = np.zeros(len(shocks))
    for t in range(1, len(values)):
        values[t] = phi * values[t - 1] + shocks[t]
    return values[-length:]


def stable_series(rng: np.random.Generator, length: int) -> tuple[np.ndarray, str]:
    """One series without drift, of a kind drawn at random: a ``stationary_ar1`` path, modelled
    as a level (first-differenced by the checks) or as a transformed value; the series and its
    transform."""
    values = stationary_ar1(rng, length)
    if rng.random() < 0.5:  # a level: the checks look at its changes, so integrate the stationary part
        return 100 + np.cumsum(values), "none"
    return values, "log_diff_ann"


def stable_input_false_alarms(
    policy: DriftPolicy, checks: int, series: int = 8, seed: int = 0, new_points: int | None = None
) -> tuple[int, float]:
    """Run the input-drift tests of ``checks`` checks of a ``series``-series panel of stable
    series (``stable_series``), with the policy's windows, p-values and Benjamini-Hochberg step, each
    panel reaching ``new_points`` points past the reference (default: one current window);
    (checks that flagged any series, their share). Scores are computed as Evidently computes
    them (``wasserstein_normed``; the tests check the two agree)."""
    rng = np.random.default_rng(seed)
    gap = policy.current if new_points is None else new_points
    alarms = 0
    for check in range(checks):
        tests = []
        for member in range(series):
            values, transform = stable_series(rng, policy.reference + gap + 1)
            frame = features(pd.Series(values), transform)
            reference, current = frame.iloc[: policy.reference], frame.iloc[-policy.current :]
            nulls = window_nulls(
                reference["value"].to_numpy(),
                gap,
                len(current),
                level=transform == "none",
                simulations=policy.simulations,
                seed_text=f"{seed}/{check}/{member}",
            )
            for feature in ("value", "volatility"):
                score = float(wasserstein_normed(reference[feature].to_numpy(), current[feature].to_numpy())[0])
                tests.append(({"p_value": nulls[feature].p_value(score)}, nulls[feature]))
        flag(tests, policy.alpha)
        alarms += any(signal["drifted"] for signal, _ in tests)
    return alarms, alarms / checks
