"""How surprising a drift score is on data that do not drift: p-values for the monitor's signals.

Input and prediction drift are scored by Evidently's normed Wasserstein distance between a
reference and a current window. Its distribution without drift depends on the series' own
persistence, tails and the windows' layout, so each score is compared with a null distribution
simulated from the series itself: a parametric bootstrap of an AR(1) fitted to the reference
window (see ``_ar1_paths``), laid out exactly as the real windows are (reference, then the points
that arrived since, of which the last form the current window). Realized
accuracy is tested against what the backtest showed: under "no drift" the one-step errors since
training are as large as the backtest's one-step errors (a permutation test, whatever their
tails).

A Monte Carlo p-value cannot fall below ``1 / (B + 1)`` with ``B`` draws, while Benjamini-Hochberg
needs ``alpha / m`` of the one drifted signal among ``m`` tests: with 5,000 draws and four signals
a series, a single signal could never be flagged in a panel of more than about 60 series. So past
the last few simulated scores the p-value comes from a generalized Pareto tail fitted to the
largest 250 of them (Knijnenburg et al. 2009, "Fewer permutations, more accurate P-values"), its
shape held at zero or above (an exponential tail where the fit says lighter, which overstates
the p-value of a light-tailed null rather than calling a score impossible), and never above the
count's own p-value (so it falls as the score grows).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

MAX_GAP = 200  # beyond this many new points, reference and current windows are as good as independent
TAIL_DF = 4  # degrees of freedom of the simulated shocks (see _ar1_paths)
TAIL = 250  # the largest simulated scores the Pareto tail is fitted to
MIN_EXCEEDANCES = 10  # fewer simulated scores at or above the observed one: the fitted tail answers


def wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Evidently's "wasserstein" score for each row: W1(reference, current) / max(std(reference), 0.001),
    batched over rows of 2-D arrays (exact: the integral of |F_ref - F_cur| over the pooled points)."""
    reference, current = np.atleast_2d(reference), np.atleast_2d(current)
    n, m = reference.shape[1], current.shape[1]
    pooled = np.concatenate([reference, current], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")
    values = np.take_along_axis(pooled, order, axis=1)
    from_reference = order < n
    cdf_gap = np.cumsum(from_reference, axis=1) / n - np.cumsum(~from_reference, axis=1) / m
    distance = np.sum(np.abs(cdf_gap[:, :-1]) * np.diff(values, axis=1), axis=1)
    return distance / np.maximum(reference.std(axis=1), 0.001)


@dataclass(frozen=True)
class Null:
    """Simulated scores of one signal on one series without drift."""

    scores: np.ndarray

    def p_value(self, score: float) -> float:
        """P(a score at least this large | no drift): the share of simulated scores at least as
        large, with the +1 correction of Monte Carlo tests; beyond the last ``MIN_EXCEEDANCES``
        of them, the fitted Pareto tail's where it is smaller (so the p-value never grows with the
        score, nor exceeds what the draws alone give). A score that is no number (the mean square of
        no errors) is no evidence, 1: no draw compares as at least as large as it, which gave it the
        draws' smallest p-value."""
        if np.isnan(score):
            return 1.0
        exceedances = int(np.sum(self.scores >= score))
        counted = float((1 + exceedances) / (len(self.scores) + 1))
        if exceedances >= MIN_EXCEEDANCES or self._tail is None:
            return counted
        from scipy.stats import genpareto

        threshold, shape, scale = self._tail
        return min(counted, float(TAIL / len(self.scores) * genpareto.sf(score - threshold, shape, scale=scale)))

    def critical(self, alpha: float) -> float:
        """The score at and above which this signal is flagged at level ``alpha``."""
        if self._tail is None or alpha * len(self.scores) >= MIN_EXCEEDANCES:
            return float(np.quantile(self.scores, 1 - alpha))
        from scipy.stats import genpareto

        threshold, shape, scale = self._tail
        return float(threshold + genpareto.isf(alpha * len(self.scores) / TAIL, shape, scale=scale))

    @cached_property
    def _tail(self) -> tuple[float, float, float] | None:
        """The generalized Pareto fit to the largest ``TAIL`` scores' excesses over the next
        largest: (threshold, shape >= 0, scale); None with too few draws to spare a tail."""
        from scipy.stats import genpareto

        if len(self.scores) < 10 * TAIL:
            return None
        ordered = np.sort(self.scores)
        threshold = float(ordered[-TAIL - 1])
        excess = ordered[-TAIL:] - threshold
        if not np.any(excess > 0):
            return None
        shape, _, scale = genpareto.fit(excess, floc=0)
        if shape < 0:  # a bounded tail: held at the exponential's, whose scale is the mean excess
            shape, scale = 0.0, float(excess.mean())
        return threshold, float(shape), float(scale)


def window_nulls(
    reference: np.ndarray,
    new_points: int,
    current: int,
    *,
    level: bool,
    simulations: int,
    seed_text: str,
) -> dict[str, Null]:
    """Null distributions of the "value" and "volatility" scores for a series whose reference
    window of the value feature is ``reference``, ``new_points`` points after it, the last
    ``current`` of which form the current window. ``level``: the value feature is the series'
    first difference (volatility is then |value|), else volatility is |first difference of value|."""
    n = len(reference)
    paths = _ar1_paths(
        np.asarray(reference, dtype=float), 1 + n + min(max(new_points, 0), MAX_GAP), simulations, seed_text
    )
    values = paths[:, 1:]  # paths[:, 0] is the point before the reference window
    volatility = np.abs(values) if level else np.abs(np.diff(paths, axis=1))
    return {
        name: Null(wasserstein_normed(feature[:, :n], feature[:, -current:]))
        for name, feature in (("value", values), ("volatility", volatility))
    }


def flag(tests: list[tuple[dict, Null | None]], alpha: float) -> float:
    """Benjamini-Hochberg over all the tests of one check: with the m p-values sorted, the k
    smallest are flagged ``drifted``, k the largest rank whose p-value is at most k alpha / m. On a
    panel without drift (every null true) this raises an alarm in at most ``alpha`` of checks, as
    Bonferroni would; when drift shows as many moderately small p-values across series (a crisis),
    it flags far more of them than alpha / m each would. Each signal gets the per-test ``alpha``
    that decided it and the ``threshold`` score that means (when it has a simulated null).
    Returns that level."""
    m = max(len(tests), 1)
    ranked = sorted(signal["p_value"] for signal, _ in tests)
    passing = [k for k, p in enumerate(ranked, start=1) if p <= k * alpha / m]
    level = max(passing, default=1) * alpha / m
    for signal, null in tests:
        signal["alpha"] = level
        signal["drifted"] = bool(passing) and signal["p_value"] <= level
        signal["threshold"] = null.critical(level) if null is not None else None
    return level


def accuracy_p_value(realized: np.ndarray, backtest: np.ndarray, *, permutations: int, seed_text: str) -> float:
    """P(the realized one-step errors' mean square is at least this much above the backtest's |
    both come from the same distribution): a one-sided permutation test over the pooled errors,
    valid whatever their tails (exchangeable under no drift), deterministic per ``seed_text``."""
    realized, backtest = np.asarray(realized, dtype=float), np.asarray(backtest, dtype=float)
    squares = np.concatenate([realized, backtest]) ** 2
    k = len(realized)
    observed = squares[:k].mean() - squares[k:].mean()
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    shuffled = squares[np.argsort(rng.random((permutations, len(squares))), axis=1)]
    simulated = shuffled[:, :k].mean(axis=1) - shuffled[:, k:].mean(axis=1)
    return Null(simulated).p_value(observed - 1e-12)


def sequence_null(reference: np.ndarray, new_points: int, current: int, *, simulations: int, seed_text: str) -> Null:
    """Null distribution of the score of one sequence (e.g. a model's one-step forecasts) whose
    reference window is ``reference``, laid out like ``window_nulls``'s value feature."""
    n = len(reference)
    paths = _ar1_paths(np.asarray(reference, dtype=float), n + min(max(new_points, 0), MAX_GAP), simulations, seed_text)
    return Null(wasserstein_normed(paths[:, :n], paths[:, -current:]))


def _ar1_paths(reference: np.ndarray, length: int, simulations: int, seed_text: str) -> np.ndarray:
    """``simulations`` paths of ``length`` points of an AR(1) fitted to ``reference``, started
    from the stationary state (deterministic per ``seed_text``). Forty points pin a process down
    loosely, and a null that trusts the estimates is too narrow, so: each path draws its own
    coefficient around the bias-corrected estimate (Kendall), with its sampling error; and the
    shocks are Student-t with ``TAIL_DF`` degrees of freedom scaled to the residuals' spread,
    since the residuals themselves cannot show how far a new point may fall beyond the forty
    seen (economic and market series are often that heavy-tailed; lighter tails only make the
    test conservative)."""
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    n = len(reference)
    mean = reference.mean()
    centred = reference - mean
    denominator = float(np.dot(centred[:-1], centred[:-1]))
    phi = float(np.dot(centred[1:], centred[:-1]) / denominator) if denominator > 0 else 0.0
    residuals = centred[1:] - phi * centred[:-1]
    phi = float(np.clip(phi + (1 + 3 * phi) / n, -0.95, 0.97))
    phis = np.clip(rng.normal(phi, np.sqrt((1 - phi**2) / n), size=simulations), -0.95, 0.97)
    burn = 50
    scale = residuals.std() / np.sqrt(TAIL_DF / (TAIL_DF - 2))
    shocks = scale * rng.standard_t(TAIL_DF, size=(simulations, burn + length))
    paths = np.empty_like(shocks)
    paths[:, 0] = shocks[:, 0] / np.sqrt(1 - phis**2)
    for t in range(1, paths.shape[1]):
        paths[:, t] = phis * paths[:, t - 1] + shocks[:, t]
    return paths[:, burn:] + mean
