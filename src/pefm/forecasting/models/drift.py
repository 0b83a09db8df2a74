"""Random walk with drift: the line from the first to the last observation, extended."""

from __future__ import annotations

import numpy as np

from pefm.forecasting.base import BaseForecaster, Bounds, normal_bounds


class Drift(BaseForecaster):
    """y[T+h] = y[T] + h * (y[T] - y[1]) / (T - 1); sd = sigma * sqrt(h * (1 + h / (T - 1)))."""

    name = "drift"
    min_length = 3

    def _fit(self, values: np.ndarray) -> None:
        n = len(values)
        self.last_ = float(values[-1])
        self.slope_ = float((values[-1] - values[0]) / (n - 1))
        resid = np.diff(values) - self.slope_
        self.sigma_ = float(np.sqrt(np.sum(resid**2) / (n - 2)))
        self.n_ = n

    def _update(self, values: np.ndarray) -> None:
        self.last_ = float(values[-1])  # the slope and spread are estimates: they stay

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        steps = np.arange(1, h + 1)
        mean = self.last_ + self.slope_ * steps
        sd = self.sigma_ * np.sqrt(steps * (1 + steps / (self.n_ - 1)))
        return mean, normal_bounds(mean, sd, levels)

    def _impulse(self, h: int) -> np.ndarray:
        return np.ones(h)
