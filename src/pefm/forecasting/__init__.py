"""Forecasting: the Forecaster contract, models, backtests, metrics, gates and the registry."""

from pefm.forecasting.base import DEFAULT_LEVELS, BaseForecaster, Forecaster, ForecastInputError

__all__ = ["DEFAULT_LEVELS", "BaseForecaster", "ForecastInputError", "Forecaster"]
