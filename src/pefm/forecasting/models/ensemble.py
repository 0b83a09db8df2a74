"""A weighted combination of models, weighted by their recent out-of-sample errors.

``fit(y)`` first runs a small rolling-origin backtest inside the training data: each member is
fitted on all but the last ``window`` points and makes a one-step forecast at each of those
origins with its parameters held fixed. A member's weight is proportional to the inverse of
its mean squared error there (``weighting="inverse_mse"``), or all weights are equal. When the
data are seasonal by the M4 competition's test (``is_seasonal``: the autocorrelation at the
frequency's season length, 12 monthly, 4 quarterly, beyond its 90% limit), the seasonal members
(seasonal naive, seasonal ETS) join the others and are weighted alike. Then
every member is refitted on the whole series. The forecast is the weighted mean of the
members' forecasts. The weighted mean of their interval bounds only gives the combination's
scale (how uncertainty grows with the step): its intervals come from its own errors, through
the conformal calibration every model gets (``forecasting/calibration.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pefm.forecasting.base import BaseForecaster, Bounds, ForecastInputError, is_seasonal, season_length


class Ensemble(BaseForecaster):
    name = "ensemble"

    def __init__(
        self,
        members: Sequence[str] = ("naive", "mean", "ar", "ar_d1", "ets"),
        window: int = 20,
        weighting: str = "inverse_mse",
        seasonal_members: Sequence[str] = ("seasonal_naive", "ets_seasonal"),
    ):
        self.members = tuple(members)
        self.window = window
        self.weighting = weighting
        self.seasonal_members = tuple(seasonal_members)

    @property
    def min_length(self) -> int:  # type: ignore[override]
        from pefm.forecasting.models import make_model

        return self.window + max(make_model(m).min_length for m in self.members)

    def _fit(self, values: np.ndarray) -> None:
        from pefm.forecasting.models import make_model

        if self.weighting not in ("inverse_mse", "equal"):
            raise ForecastInputError(f"weighting must be inverse_mse or equal, not {self.weighting!r}")
        k = self.window
        head, tail = values[:-k], values[-k:]
        seasonal = is_seasonal(head, season_length(self.freq_))
        self.members_ = self.members + (self.seasonal_members if seasonal else ())
        mse = []
        for spec in self.members_:
            member = make_model(spec)
            member._fit_values(head, self.freq_)
            predicted = member._one_step(values)[-k:]
            mse.append(float(np.mean((tail - predicted) ** 2)))
        self.backtest_mse_ = dict(zip(self.members_, mse, strict=True))
        inverse = 1 / np.maximum(np.array(mse), 1e-12)
        weights = inverse if self.weighting == "inverse_mse" else np.ones(len(mse))
        self.weights_ = dict(zip(self.members_, weights / weights.sum(), strict=True))
        self.fitted_ = {}
        for spec in self.members_:
            member = make_model(spec)
            member._fit_values(values, self.freq_)
            self.fitted_[spec] = member

    def _update(self, values: np.ndarray) -> None:
        for member in self.fitted_.values():
            member._update(values)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        mean = np.zeros(h)
        bounds = {level: (np.zeros(h), np.zeros(h)) for level in levels}
        for spec, member in self.fitted_.items():
            w = self.weights_[spec]
            m, b = member._predict(h, levels)
            mean += w * np.asarray(m).reshape(h)
            for level in levels:
                bounds[level][0][:] += w * np.asarray(b[level][0]).reshape(h)
                bounds[level][1][:] += w * np.asarray(b[level][1]).reshape(h)
        return mean, bounds

    def _impulse(self, h: int) -> np.ndarray | None:
        """The members' impulse responses, weighted: their errors answer the same shocks."""
        responses = [self.fitted_[spec]._impulse(h) for spec in self.weights_]
        if any(r is None for r in responses):
            return None
        return sum(w * r for w, r in zip(self.weights_.values(), responses, strict=True))

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The members' forecasts from each origin, weighted; the scale is the combination's."""
        members = self.weights_.items()
        mean = sum(w * self.fitted_[spec]._origin_forecasts(values, origins, steps)[0] for spec, w in members)
        return mean, self._constant_scale(origins, steps)

    def _one_step(self, values: np.ndarray) -> np.ndarray:
        return sum(w * self.fitted_[spec]._one_step(values) for spec, w in self.weights_.items())
