"""Random walk: every future value is the last one seen."""

from __future__ import annotations

import numpy as np

from pefm.forecasting.base import BaseForecaster, Bounds, normal_bounds


class Naive(BaseForecaster):
    """y[T+h] = y[T]; interval sd = sigma * sqrt(h), sigma from the one-step changes."""

    name = "naive"
    min_length = 3

    def _fit(self, values: np.ndarray) -> None:
        self.last_ = float(values[-1])
        self.sigma_ = float(np.sqrt(np.mean(np.diff(values) ** 2)))

    def _update(self, values: np.ndarray) -> None:
        self.last_ = float(values[-1])  # sigma_ is estimated: it stays

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        mean = np.full(h, self.last_)
        return mean, normal_bounds(mean, self.sigma_ * np.sqrt(np.arange(1, h + 1)), levels)

    def _impulse(self, h: int) -> np.ndarray:
        return np.ones(h)
