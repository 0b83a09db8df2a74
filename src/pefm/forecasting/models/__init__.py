"""The models, one a file, by the names the CLI, the registry and the benchmark use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pefm.forecasting.base import BaseForecaster


def _catalog() -> dict[str, Callable[..., BaseForecaster]]:
    from pefm.forecasting.models.arima import AutoARIMA
    from pefm.forecasting.models.autoreg import AutoRegressive
    from pefm.forecasting.models.drift import Drift
    from pefm.forecasting.models.ensemble import Ensemble
    from pefm.forecasting.models.ets import AutoETS
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
        "ets": AutoETS,
        "var": VectorAutoregression,
        "mlp": GlobalMLP,
        "ensemble": Ensemble,
    }


MODEL_NAMES = (
    "naive",
    "seasonal_naive",
    "drift",
    "mean",
    "ar",
    "ar_d1",
    "arima",
    "ets",
    "var",
    "mlp",
    "ensemble",
)
DEFAULT_MODEL = "ensemble"


def make_model(name: str, **params: Any) -> BaseForecaster:
    """A new, unfitted model by name (see MODEL_NAMES), with ``params`` overriding its defaults."""
    catalog = _catalog()
    if name not in catalog:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return catalog[name](**params)
