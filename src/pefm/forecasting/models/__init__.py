"""The models, one a file, by the names the CLI, the registry and the benchmark use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pefm.forecasting.base import BaseForecaster


def _catalog() -> dict[str, Callable[..., BaseForecaster]]:
    from pefm.forecasting.bundle import Bundle
    from pefm.forecasting.models.arima import AirlineARIMA, AutoARIMA
    from pefm.forecasting.models.autoreg import AutoRegressive
    from pefm.forecasting.models.drift import Drift
    from pefm.forecasting.models.ensemble import Ensemble
    from pefm.forecasting.models.ets import AutoETS
    from pefm.forecasting.models.garch import Garch
    from pefm.forecasting.models.mean import Mean
    from pefm.forecasting.models.mlp import GlobalMLP
    from pefm.forecasting.models.naive import Naive
    from pefm.forecasting.models.seasonal_naive import SeasonalNaive
    from pefm.forecasting.models.var import VectorAutoregression

    return {
        "naive": Naive,
        "seasonal_naive": SeasonalNaive,
        "drift": Drift,
        "mean": Mean,
        "ar": AutoRegressive,
        "ar_d1": lambda **kw: AutoRegressive(**{"d": 1, **kw}),
        "arima": AutoARIMA,
        "airline": AirlineARIMA,
        "ets": AutoETS,
        "ets_seasonal": lambda **kw: AutoETS(**{"seasonal": True, **kw}),
        "garch": Garch,
        "var": VectorAutoregression,
        "mlp": GlobalMLP,
        "ensemble": Ensemble,
        "bundle": Bundle,
    }


# The families a group of series can be forecast with (``bundle`` combines them: see bundle.py).
MODEL_NAMES = (
    "naive",
    "seasonal_naive",
    "drift",
    "mean",
    "ar",
    "ar_d1",
    "arima",
    "airline",
    "ets",
    "garch",
    "var",
    "mlp",
    "ensemble",
)
DEFAULT_MODEL = "bundle"
"""What `pefm train`, `make up` and retraining fit by default: every series, a family per group."""


def make_model(name: str, **params: Any) -> BaseForecaster:
    """A new, unfitted model by name (MODEL_NAMES, or ``bundle``), with ``params`` overriding its
    defaults."""
    from pefm.forecasting.base import ForecastInputError

    catalog = _catalog()
    if name not in catalog:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join((DEFAULT_MODEL, *MODEL_NAMES))}")
    if params and (unknown := sorted(set(params) - set(takes := catalog[name]().get_params()))):
        listed = ", ".join(takes) or "none"
        raise ForecastInputError(f"{name} takes no parameter {', '.join(unknown)} (its parameters: {listed})")
    model = catalog[name](**params)
    model.check_params()
    return model
