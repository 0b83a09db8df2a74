"""Conformal calibration of every model's intervals, per series and horizon step.

Normalized (locally weighted) split conformal on rolling-origin errors, run by
``BaseForecaster.fit`` for every model:

1. A probe of the model is fitted on all but the last ``W`` points: half the data (the usual
   even split; a step-8 95% quantile needs some 40 scores to be more than the largest one), at
   most 250 origins, leaving the probe the model's minimum length (fewer than 16 origins: no
   calibration, the model's own intervals stand).
2. From each of those ``W`` origins the probe, its parameters held fixed and only conditioned on
   the data up to the origin, forecasts ``H = 8`` steps. No calibration target was seen by the
   probe's estimation: the split is by time. (The ensemble has such forecasts already, from the
   backtest its weights come from: ``_calibration_forecasts``, see ``models/ensemble.py``.)
3. Each error is divided by the probe's own forecast scale at that origin and step (the
   half-width of its 80% interval over z_0.90, its "standard deviation"): the score
   ``|y - mean| / s``, kept per series and step. A scale of at most ``NEGLIGIBLE`` (a
   millionth) of the series' typical change (its mean absolute first difference over the data
   calibrated on) says nothing, and gives no score: it is a zero left over from rounding (a
   probe fitted on a stretch of constant data, a rate held at its floor, reports some 1e-16 of
   the level where it means 0), and an error divided by it, once the data move, is a score of
   1e17 that the fitted model's real scale would turn into an interval as wide. A model's
   genuine scale is a fair fraction of the typical change (a random walk's is about it). With
   fewer than ``MIN_ORIGINS / 2`` scores left at some step, the model's own intervals stand, as
   for a scale of exactly 0.
4. A forecast's interval at level L and step k is ``mean -/+ q * s_k``: ``s_k`` the fitted
   model's own scale, ``q`` the ``ceil((m + 1) L / 100)``-th smallest of step k's ``m`` scores
   (the finite-sample conformal quantile). Steps past ``H`` use step H's scores; a level beyond
   what ``m`` scores can give takes the largest score, widened by ``z_L / z_M`` where
   ``M = 100 m / (m + 1)`` is the level the largest score stands for.
5. A half-width never narrows as the step grows: step k's is the largest of steps 1..k's, for
   every model but those whose spread may fall (``spread_can_fall``: GARCH's conditional
   variance), and for every model's running sums. Each step's quantile stands on its own scores,
   so by chance alone a later step's could come out narrower than an earlier one's.

Normalizing by the model's own scale keeps what the model knows about how uncertainty changes
(GARCH's volatility, a random walk's growing spread); for a model whose intervals were already
right the quantiles come out near the Gaussian z values, and a model whose errors are wider,
narrower or fatter-tailed than it assumed gets intervals from its own errors instead. The
same errors, summed over the steps, calibrate the running sums the level-space forecasts are
made of (``running``, ``widen_running``); the signed scores of each origin also give the
dependence between steps that sample paths use where no running sums were scored (``impulse``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pefm.forecasting.base import BaseForecaster, Bounds

log = logging.getLogger(__name__)

HORIZON = 8
"""Steps calibrated: what backtests, gates and the benchmark score (h = 1..8)."""
MAX_ORIGINS = 250
MIN_ORIGINS = 16
NEGLIGIBLE = 1e-6
"""A probe's scale at most this fraction of the series' mean absolute change is no information."""
_Z80 = 1.2815515655446004  # norm.ppf(0.90)


@dataclass(frozen=True)
class Calibration:
    errors: np.ndarray
    """Signed normalized errors ``(y - mean) / s``, shape ``(origins, steps, series)``; NaN
    where a step falls past the data."""
    running: np.ndarray | None = None
    """Signed normalized errors of the running sums through each step, ``sum_{j<=k} (y_j -
    mean_j) / S_k`` with ``S_k = sqrt(s_1^2 + ... + s_k^2)``, same shape: the scores level-space
    intervals are calibrated on (a level is its anchor moved by the running sum of the steps).
    None in artifacts saved before they were kept."""

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        return _sort(self.errors)

    @cached_property
    def _sorted_running(self) -> tuple[np.ndarray, np.ndarray]:
        return _sort(self.running)

    @property
    def steps(self) -> int:
        return self.errors.shape[1]

    def quantile(self, level: int, running: bool = False) -> np.ndarray:
        """The conformal quantile of the absolute scores at ``level`` (of the steps, or of the
        running sums), shape ``(steps, series)``."""
        from scipy.stats import norm

        scores, counts = self._sorted_running if running else self._sorted
        out = np.empty(counts.shape)
        for index, m in np.ndenumerate(counts):
            rank = math.ceil((m + 1) * level / 100)
            column = scores[:, index[0], index[1]]
            if rank <= m:
                out[index] = column[rank - 1]
            else:  # past what m scores can tell: the largest, widened as a Gaussian tail would be
                top = 100 * m / (m + 1)
                out[index] = column[m - 1] * norm.ppf(0.5 + level / 200) / norm.ppf(0.5 + top / 200)
        return out

    def widen(self, mean: np.ndarray, bounds: Bounds, levels: tuple[int, ...], monotone: bool = True) -> Bounds:
        """Calibrated bounds for a forecast ``mean`` of shape ``(h, series)`` whose own bounds
        include the 80% ones (the model's scale); with ``monotone``, a half-width never narrows
        as the step grows (the running maximum over the steps)."""
        scale = np.maximum(scale_of(bounds[80], mean.shape), 0.0)
        rows = np.minimum(np.arange(mean.shape[0]), self.steps - 1)
        out = {}
        for level in levels:
            half = _widest_so_far(self.quantile(level)[rows] * scale, monotone)
            out[level] = (mean - half, mean + half)
        return out

    def widen_running(self, mean: np.ndarray, bounds: Bounds, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        """The running sums of a forecast ``mean`` of shape ``(h, series)`` (whose own bounds
        include the 80% ones) and their calibrated bounds: ``sum(mean) -/+ q_k * S_k``, ``q_k``
        the conformal quantile of the running sums' scores (steps past ``H``: step H's), never
        narrowing as the step grows: a sum of more steps is no more certain than one of fewer,
        for any model (even GARCH's: its returns are uncorrelated, their variances add)."""
        scale = np.maximum(scale_of(bounds[80], mean.shape), 0.0)
        total, spread = np.cumsum(mean, axis=0), np.sqrt(np.cumsum(scale**2, axis=0))
        rows = np.minimum(np.arange(mean.shape[0]), self.steps - 1)
        out = {}
        for level in levels:
            half = _widest_so_far(self.quantile(level, running=True)[rows] * spread, True)
            out[level] = (total - half, total + half)
        return total, out

    def impulse(self, series: int) -> np.ndarray | None:
        """Impulse responses ``psi_0..psi_{H-1}`` read off the correlation of step 1's error with
        step k's at the same origins (for a linear process ``corr(e_1, e_k) = psi_{k-1} /
        sqrt(psi_0^2 + ... + psi_{k-1}^2)``), or None with too few complete origins."""
        errors = self.errors[:, :, series]
        complete = errors[np.isfinite(errors).all(axis=1)]
        if len(complete) < MIN_ORIGINS // 2:
            return None
        corr = np.corrcoef(complete, rowvar=False)[0]
        psi = np.ones(self.steps)
        total = 1.0
        for k in range(1, self.steps):
            r = float(np.clip(np.nan_to_num(corr[k]), -0.99, 0.99))
            psi[k] = math.copysign(math.sqrt(r * r * total / (1 - r * r)), r)
            total += psi[k] ** 2
        return psi


def calibrate(model: BaseForecaster, values: np.ndarray) -> Calibration | None:
    """The normalized errors of ``model``'s rolling-origin forecasts over the last origins of
    ``values`` (1-D, or 2-D with one column per series), as its ``_calibration_forecasts`` gives
    them; None when the data are too short to spare ``MIN_ORIGINS`` origins, or those forecasts
    cannot be made."""
    n = values.shape[0]
    window = min(MAX_ORIGINS, n // 2, n - model.min_length)
    if window < MIN_ORIGINS:
        return None
    steps = min(HORIZON, model.max_horizon)
    origins = np.arange(n - window, n)
    try:
        means, scales = model._calibration_forecasts(values, origins, steps)
    except (ValueError, ArithmeticError) as exc:  # the half the probe sees can fail where all of it fits
        log.warning("%s: no calibration, its own intervals stand (the probe failed: %s)", model.name, exc)
        return None
    actual = outcomes(values, origins, steps)  # (origins, steps, series)
    typical = np.nanmean(np.abs(np.diff(values.reshape(n, -1), axis=0)), axis=0)  # per series
    scales = np.where(scales > NEGLIGIBLE * typical, scales, np.nan)  # rounding's zeros: no score
    with np.errstate(invalid="ignore", divide="ignore"):
        errors = (actual - means) / scales
        running = np.cumsum(actual - means, axis=1) / np.sqrt(np.cumsum(scales**2, axis=1))
    errors[~np.isfinite(errors)] = np.nan
    running[~np.isfinite(running)] = np.nan
    if (np.isfinite(errors).sum(axis=0) < MIN_ORIGINS // 2).any():  # a probe whose scale was ~0 (flat data)
        log.warning("%s: no calibration, its own intervals stand (too few finite scores)", model.name)
        return None
    return Calibration(errors, running)


def rolling_forecasts(
    template: BaseForecaster, values: np.ndarray, freq, origins: np.ndarray, steps: int, blocks: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and scale of ``steps``-step forecasts from each of ``origins`` (consecutive), by
    copies of ``template`` each fitted on the data before one of ``blocks`` equal runs of origins
    and held fixed through it; shapes ``(origins, steps, series)``."""
    parts = []
    for block in np.array_split(origins, blocks):
        probe = template.clone()
        probe._fit_values(values[: block[0]], freq)
        parts.append(probe._origin_forecasts(values, block, steps))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def outcomes(values: np.ndarray, origins: np.ndarray, steps: int) -> np.ndarray:
    """values[t + k] for each origin t (the number of points known) and step k = 0..steps-1, NaN
    past the end; shape (origins, steps, series)."""
    data = values.reshape(len(values), -1)
    padded = np.vstack([data, np.full((steps, data.shape[1]), np.nan)])
    return np.stack([padded[origins + k] for k in range(steps)], axis=1)


def _widest_so_far(half: np.ndarray, monotone: bool) -> np.ndarray:
    """Half-widths of shape ``(h, series)``, made non-decreasing in the step when ``monotone``.
    Each step's conformal quantile stands on its own scores, and a combination's scale follows
    its per-step weights, so without this a step's interval can come out narrower than an
    earlier one's by chance alone."""
    return np.maximum.accumulate(half, axis=0) if monotone else half


def _sort(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The absolute scores sorted per step and series (NaN last), and how many each has."""
    return np.sort(np.abs(errors), axis=0), np.isfinite(errors).sum(axis=0)


def scale_of(bounds80: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """A forecast's scale from its own 80% interval: half-width over z_0.90."""
    lo, hi = (np.asarray(b, dtype="float64").reshape(shape) for b in bounds80)
    return (hi - lo) / (2 * _Z80)
