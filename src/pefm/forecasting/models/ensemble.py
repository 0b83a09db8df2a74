"""A combination of models, stacked per horizon step on their rolling-origin errors.

``fit(y)`` first backtests the members inside the training data, over the same held-out origins
calibration uses at most (the later half of the data, up to 250 origins, and at least 20): each
member is refitted at the start of each of four equal runs of those origins and held fixed through
it, forecasting 8 steps from every origin. For each step k the weights are stacked (Breiman
1996): non-negative, summing to one, the least-squares fit of the members' step-k forecasts to
the outcomes; then shrunk toward equal weights by ``M / T`` (M members, T scored origins), as
the forecast-combination literature advises for weights estimated on a short record. Steps past
8 take step 8's weights. When the data are seasonal by the M4 competition's test
(``is_seasonal``: the autocorrelation at the frequency's season length, 12 monthly, 4
quarterly, beyond its 90% limit), the seasonal members (seasonal naive, seasonal ETS, and the
airline model for cycles of up to 24 periods) join the others. Then every member is refitted on
the whole series; the forecast is the weighted mean of the members' forecasts.

The weighted mean of the members' interval bounds only gives the combination's scale (how
uncertainty grows with the step): its intervals come from its own errors, through conformal
calibration (``forecasting/calibration.py``). The calibration scores the combination's forecasts
from the same backtest, so it costs no further fit; its weights were estimated on those origins
too, a handful of parameters on some hundred origins, the one place where the calibration errors
are not out of sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pefm.forecasting.base import (
    BaseForecaster,
    Bounds,
    ForecastInputError,
    is_seasonal,
    require_choice,
    require_int,
    season_length,
)
from pefm.forecasting.calibration import HORIZON, MAX_ORIGINS, outcomes, rolling_forecasts

log = logging.getLogger(__name__)
MIN_WINDOW = 20
"""The fewest held-out origins the weights are estimated on."""
BLOCKS = 4
"""Runs of held-out origins a member is refitted for: its parameters follow the data as they grow."""


class Ensemble(BaseForecaster):
    name = "ensemble"

    def __init__(
        self,
        members: Sequence[str] = ("naive", "mean", "ar", "ar_d1", "ets"),
        window: int | None = None,
        weighting: str = "stacked",
        seasonal_members: Sequence[str] = ("seasonal_naive", "ets_seasonal", "airline"),
    ):
        self.members = _names(members)
        self.window = window
        self.weighting = weighting
        self.seasonal_members = _names(seasonal_members)

    def check_params(self) -> None:
        from pefm.forecasting.models import make_model

        require_choice(self.name, "weighting", self.weighting, ("stacked", "equal"))
        require_int(self.name, "window", self.window, 0, none=True)  # None or 0: half the data
        for label, names in (("members", self.members), ("seasonal_members", self.seasonal_members)):
            if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
                raise ForecastInputError(f"{self.name}: {label} must be a list of model names, got {names!r}")
        if not self.members:
            raise ForecastInputError(f"{self.name}: members must name at least one model")
        for label, names in (("members", self.members), ("seasonal_members", self.seasonal_members)):
            for name in names:
                try:
                    univariate = name not in ("ensemble", "bundle") and not make_model(name).multivariate
                except ValueError as exc:  # an unknown name
                    raise ForecastInputError(f"{self.name}: {label}: {exc}") from None
                if not univariate:
                    raise ForecastInputError(f"{self.name}: {label} takes univariate models, not {name!r}")

    @property
    def _member_min_length(self) -> int:
        from pefm.forecasting.models import make_model

        return max(make_model(m).min_length for m in self.members + self.seasonal_members)

    @property
    def spread_can_fall(self) -> bool:  # type: ignore[override]
        """As any member's may (a GARCH member's conditional variance)."""
        from pefm.forecasting.models import make_model

        return any(make_model(m).spread_can_fall for m in getattr(self, "members_", self.members))

    @property
    def min_length(self) -> int:  # type: ignore[override]
        return (self.window or MIN_WINDOW) + self._member_min_length

    def _fit(self, values: np.ndarray) -> None:
        from pefm.forecasting.models import make_model

        n = len(values)
        k = self.window or min(MAX_ORIGINS, max(n // 2, MIN_WINDOW), n - self._member_min_length)
        origins = np.arange(n - k, n)
        season = season_length(self.freq_)
        seasonal = is_seasonal(values[: n - k], season)
        self.members_ = self.members + tuple(
            m for m in self.seasonal_members if seasonal and season <= make_model(m).max_season
        )
        blocks = min(BLOCKS, k)
        backtests, failed = {}, {}
        for m in self.members_:
            try:
                backtests[m] = rolling_forecasts(make_model(m), values, self.freq_, origins, HORIZON, blocks)
            except (ForecastInputError, ValueError, ArithmeticError) as exc:  # data it cannot fit (flat, early on)
                failed[m] = str(exc)
        if not backtests:
            raise ForecastInputError(f"ensemble: no member could be backtested: {failed}")
        if failed:  # left out: a member the held-out half could not fit has no errors to weigh
            log.info("ensemble: members left out: %s", failed)
        self.members_ = tuple(backtests)
        backtests = list(backtests.values())
        means = np.stack([b[0][:, :, 0] for b in backtests], axis=-1)  # (origins, steps, members)
        scales = np.stack([b[1][:, :, 0] for b in backtests], axis=-1)
        targets = outcomes(values, origins, HORIZON)[:, :, 0]  # (origins, steps)
        if self.weighting == "equal":
            self.step_weights_ = np.full((HORIZON, len(self.members_)), 1 / len(self.members_))
        else:
            self.step_weights_ = np.array([_stacked(means[:, s], targets[:, s]) for s in range(HORIZON)])
        w = self.step_weights_[None]
        self.backtest_ = (origins, (w * means).sum(axis=-1)[:, :, None], (w * scales).sum(axis=-1)[:, :, None])
        self.fitted_ = {}
        for spec in self.members_:
            member = make_model(spec)
            member._fit_values(values, self.freq_)
            self.fitted_[spec] = member

    @property
    def weights_(self) -> dict[str, float]:
        """The members' weights at step 1, by name."""
        return dict(zip(self.members_, self.step_weights_[0], strict=True))

    def __getstate__(self) -> dict:
        # the held-out backtest is what calibration scored inside fit: the artifact does not keep it
        return {k: v for k, v in self.__dict__.items() if k != "backtest_"}

    def __setstate__(self, state: dict) -> None:
        # artifacts saved before the weights were per step hold one set of weights for every step
        state = dict(state)
        if "weights_" in state:  # derived now (the property)
            old = state.pop("weights_")
            state.setdefault("step_weights_", np.array([list(old.values())]))
        self.__dict__.update(state)

    def _weights(self, h: int) -> np.ndarray:
        """The members' weights at steps 1..h, shape ``(h, members)``."""
        return self.step_weights_[np.minimum(np.arange(h), len(self.step_weights_) - 1)]

    def _update(self, values: np.ndarray) -> None:
        for member in self.fitted_.values():
            member._update(values)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        weights = self._weights(h)
        mean = np.zeros(h)
        bounds = {level: (np.zeros(h), np.zeros(h)) for level in levels}
        for w, member in zip(weights.T, self.fitted_.values(), strict=True):
            m, b = member._predict(h, levels)
            mean += w * np.asarray(m).reshape(h)
            for level in levels:
                bounds[level][0][:] += w * np.asarray(b[level][0]).reshape(h)
                bounds[level][1][:] += w * np.asarray(b[level][1]).reshape(h)
        return mean, bounds

    def _impulse(self, h: int) -> np.ndarray | None:
        """The members' impulse responses, weighted: their errors answer the same shocks."""
        responses = [member._impulse(h) for member in self.fitted_.values()]
        if any(r is None for r in responses):
            return None
        return sum(w * r for w, r in zip(self._weights(h).T, responses, strict=True))

    def _calibration_forecasts(
        self, values: np.ndarray, origins: np.ndarray, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The combination's forecasts from its own backtest (its origins include calibration's)."""
        held_out, means, scales = self.backtest_
        rows = np.searchsorted(held_out, origins)
        if len(values) != held_out[-1] + 1 or not np.array_equal(held_out[rows % len(held_out)], origins):
            return super()._calibration_forecasts(values, origins, steps)
        return means[rows, :steps], scales[rows, :steps]

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The members' forecasts from each origin, weighted; the scale is the combination's."""
        weights = self._weights(steps)
        mean = sum(
            w[:, None] * member._origin_forecasts(values, origins, steps)[0]
            for w, member in zip(weights.T, self.fitted_.values(), strict=True)
        )
        return mean, self._constant_scale(origins, steps)


def _names(value: Any) -> Any:
    """A list of names as a tuple; anything else as given, for ``check_params`` to refuse by name
    (``tuple(5)`` was a TypeError, ``tuple("naive")`` five unknown models)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _stacked(forecasts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Stacking weights for one step: non-negative, summing to one, minimizing the squared error
    of the combined forecasts (``forecasts``: origins x members), then shrunk toward equal
    weights by M / T. Equal weights when fewer origins than members were scored."""
    from scipy.optimize import nnls

    known = np.isfinite(target) & np.isfinite(forecasts).all(axis=1)
    f, y = forecasts[known], target[known]
    m, t = f.shape[1], len(y)
    equal = np.full(m, 1 / m)
    if t <= m:
        return equal
    # the sum-to-one constraint as a heavily weighted extra row of the least-squares problem
    scale = np.sqrt(np.mean(y**2)) + 1e-12
    penalty = 1e3 * np.sqrt(t)
    weights, _ = nnls(np.vstack([f / scale, np.full(m, penalty)]), np.append(y / scale, penalty))
    weights = weights / weights.sum() if weights.sum() > 0 else equal
    shrink = m / t
    return (1 - shrink) * weights + shrink * equal
