"""Seasonal random walk: every future value is the one a season earlier."""

from __future__ import annotations

import numpy as np

from pefm.forecasting.base import (
    BaseForecaster,
    Bounds,
    ForecastInputError,
    normal_bounds,
    require_int,
    season_length,
)


class SeasonalNaive(BaseForecaster):
    """y[T+h] = y[T+h-m*(k+1)], k = (h-1) // m; sd = sigma * sqrt(k+1).

    ``season`` defaults to the frequency's cycle (4 quarterly, 12 monthly, 5 business daily).
    """

    name = "seasonal_naive"
    min_length = 3

    def __init__(self, season: int | None = None):
        self.season = season

    def check_params(self) -> None:
        require_int(self.name, "season", self.season, 0, none=True)  # None or 0: the frequency's

    def _fit(self, values: np.ndarray) -> None:
        m = self.season or season_length(self.freq_)
        if len(values) < m + 2:
            raise ForecastInputError(f"seasonal_naive needs at least {m + 2} points, got {len(values)}")
        self.season_ = m
        self.last_season_ = values[-m:].copy()
        self.sigma_ = float(np.sqrt(np.mean((values[m:] - values[:-m]) ** 2)))

    def _update(self, values: np.ndarray) -> None:
        self.last_season_ = values[-self.season_ :].copy()  # sigma_ is estimated: it stays

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        steps = np.arange(h)
        mean = self.last_season_[steps % self.season_]
        sd = self.sigma_ * np.sqrt(steps // self.season_ + 1)
        return mean, normal_bounds(mean, sd, levels)

    def _impulse(self, h: int) -> np.ndarray:
        return (np.arange(h) % self.season_ == 0).astype("float64")
