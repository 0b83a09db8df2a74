"""A univariate model applied to each series of a panel: one fitted clone per column.

It is how a univariate model becomes one registry artifact for a whole panel: every series is
fitted on its own non-missing values, and ``predict`` stacks their forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pefm.forecasting.base import DEFAULT_LEVELS, BaseForecaster, ForecastInputError


class PerSeries(BaseForecaster):
    multivariate = True
    handles_gaps = True

    def __init__(self, model: BaseForecaster):
        if model.multivariate:
            raise ForecastInputError(f"{model.name} is multivariate already")
        self.model = model

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model.name

    def fit(self, y: pd.Series | pd.DataFrame, X: pd.DataFrame | None = None) -> PerSeries:
        """Fit a clone of the model on each column's non-missing values."""
        if X is not None:
            raise ForecastInputError(f"{self.name} does not use exogenous regressors (X)")
        frame = y.to_frame() if isinstance(y, pd.Series) else y
        self.models_: dict[str, BaseForecaster] = {}
        for column in frame.columns:
            series = frame[column].dropna()
            series.attrs = series_attrs(frame, column)
            self.models_[str(column)] = self.model.clone().fit(series)
        self.series_ids_ = list(self.models_)
        return self

    def update(self, y: pd.Series | pd.DataFrame) -> PerSeries:
        frame = y.to_frame() if isinstance(y, pd.Series) else y
        for column in frame.columns:
            series = frame[column].dropna()
            series.attrs = series_attrs(frame, column)
            self.models_[str(column)].update(series)
        return self

    def predict(self, h: int, levels: Sequence[int] = DEFAULT_LEVELS) -> pd.DataFrame:
        if not hasattr(self, "models_"):
            raise ForecastInputError(f"{self.name} is not fitted: call fit() first")
        parts = [model.predict(h, levels).assign(series_id=sid) for sid, model in self.models_.items()]
        return pd.concat(parts, ignore_index=True)

    def for_series(self, series_id: str) -> BaseForecaster:
        """The fitted model of one series."""
        try:
            return self.models_[series_id]
        except KeyError:
            raise ForecastInputError(f"this model was not fitted on {series_id!r}") from None


def series_attrs(frame: pd.DataFrame, column: str) -> dict:
    """A column's frequency and exchange calendar, as the frame's attrs describe it."""
    freq = frame.attrs.get("frequencies", {}).get(column) or frame.attrs.get("frequency")
    calendar = frame.attrs.get("calendars", {}).get(column, frame.attrs.get("calendar", ""))
    return {"calendar": calendar} | ({"frequency": freq} if freq is not None else {})
