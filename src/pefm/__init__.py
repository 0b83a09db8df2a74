"""PEFM, the Predictive Economic Forecasting Model."""

__version__ = "0.1.0"
