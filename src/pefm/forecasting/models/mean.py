"""Historical mean, or the mean of the last ``window`` observations."""

from __future__ import annotations

import numpy as np

from pefm.forecasting.base import BaseForecaster, Bounds, normal_bounds, require_int


class Mean(BaseForecaster):
    """y[T+h] = mean of the sample (or of its last ``window`` points); sd = s * sqrt(1 + 1/T)."""

    name = "mean"
    min_length = 3

    def __init__(self, window: int | None = None):
        self.window = window

    def check_params(self) -> None:
        if self.window != 0:  # None or 0: the whole sample; else at least two points, for a spread
            require_int(self.name, "window", self.window, 2, none=True)

    def _fit(self, values: np.ndarray) -> None:
        sample = values[-self.window :] if self.window else values
        self.mean_ = float(sample.mean())
        self.sd_ = float(sample.std(ddof=1))
        self.n_ = len(sample)

    def _update(self, values: np.ndarray) -> None:
        """The whole sample's mean and spread are estimates: they stay. A window's mean is the
        forecast rule's state (a moving average): it moves, its spread stays."""
        if self.window:
            self.mean_ = float(values[-self.window :].mean())

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        mean = np.full(h, self.mean_)
        return mean, normal_bounds(mean, np.full(h, self.sd_ * np.sqrt(1 + 1 / self.n_)), levels)

    def _impulse(self, h: int) -> np.ndarray:
        return np.eye(1, h).ravel()
