"""Forecasts that need the model itself: other levels or horizons, ``as_of``, what-if ``history``.

Imported only once such a request arrives, so pandas-heavy work and the model's own imports stay
off the start-up path. Without ``as_of`` the data are those the model was trained on, so a
what-if differs from the plain forecast only by the client's ``history``. With ``as_of`` the
forecast is the one the version's family (same parameters) makes when estimated on the data
known at that moment, and conditioned on them: nothing later reaches it, neither values nor
parameters. Those fits are cached per (version, as_of); a moment too early to fit is a 422. The
served model is never mutated: conditioning happens on a copy (or, for the torch model, by feeding
it the window directly).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from pefm.data.frequency import Frequency
from pefm.data.json_payload import observations_from_object
from pefm.data.validation import ValidationError, check_frequency
from pefm.forecasting.base import ForecastInputError, future_index
from pefm.forecasting.panel import load_panel
from pefm.forecasting.per_series import PerSeries
from pefm.forecasting.training import estimator
from pefm.serving.http import ApiError

if TYPE_CHECKING:
    from pefm.serving.inference import ModelServer

_training_panels: dict[str, pd.DataFrame] = {}
_AS_OF_FITS = 16  # models estimated at past moments kept per process (least recently used out)
_as_of_fits: OrderedDict[tuple[str, datetime], Any] = OrderedDict()
_fitting = threading.Lock()


def model_forecast(
    server: ModelServer,
    series_id: str,
    horizon: int,
    levels: tuple[int, ...],
    as_of: datetime | None,
    history: list[dict] | None,
) -> list[dict[str, Any]]:
    """Forecast rows for one series from the loaded model (blocking: run it on a thread)."""
    model = server.model
    try:
        if as_of is None and history is None:
            frame = model.predict(horizon, levels)
        else:
            panel = _panel(server, as_of)
            if as_of is not None:
                model = _estimated_at(server, as_of, panel)
            if history is not None:
                panel = _with_history(panel, series_id, history, Frequency(server.meta[series_id]["frequency"]))
            frame = _conditioned(model, panel, series_id, horizon, levels)
    except ForecastInputError as exc:
        raise ApiError(422, str(exc)) from None
    frame = frame[frame["series_id"] == series_id].drop(columns="series_id")
    frame["ds"] = frame["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.to_dict("records")


def _conditioned(model, panel: pd.DataFrame, series_id: str, horizon: int, levels: tuple[int, ...]) -> pd.DataFrame:
    if isinstance(model, PerSeries):
        member = copy.deepcopy(model.for_series(series_id))
        series = panel[series_id].dropna()
        series.attrs = {"frequency": panel.attrs["frequencies"][series_id]}
        return member.update(series).predict(horizon, levels).assign(series_id=series_id)
    data = panel[model.series_ids_].dropna()
    if hasattr(model, "forecast_from"):  # the torch model: feed it the window, no copy needed
        mean, bounds = model.forecast_from(data.to_numpy()[-model.lags :], horizon, levels)
        column = model.series_ids_.index(series_id)
        freq = panel.attrs["frequencies"][series_id]
        out = {"series_id": series_id, "ds": future_index(data.index[-1], freq, horizon), "mean": mean[:, column]}
        for level in levels:
            out[f"lo-{level}"], out[f"hi-{level}"] = bounds[level][0][:, column], bounds[level][1][:, column]
        return pd.DataFrame(out)
    data.attrs = dict(panel.attrs)
    return copy.deepcopy(model).update(data).predict(horizon, levels)


def _estimated_at(server: ModelServer, as_of: datetime, panel: pd.DataFrame):
    """The version's family and parameters estimated on ``panel`` (the data known at ``as_of``)."""
    version = server.version
    key = (version.id, as_of)
    with _fitting:  # one estimation at a time per process: they are CPU-bound
        if (fitted := _as_of_fits.get(key)) is not None:
            _as_of_fits.move_to_end(key)
            return fitted
        model = estimator(version.family, version.params)
        data = panel.dropna() if model.multivariate and not isinstance(model, PerSeries) else panel
        if data.dropna(how="all").empty:
            raise ForecastInputError(f"as_of {as_of:%Y-%m-%d}: no data was known then")
        try:
            model.fit(data)
        except ForecastInputError as exc:
            raise ForecastInputError(f"as_of {as_of:%Y-%m-%d}: too early to estimate {version.family}: {exc}") from None
        except (ValueError, ArithmeticError) as exc:  # a fit that the data known then cannot support
            raise ForecastInputError(
                f"as_of {as_of:%Y-%m-%d}: {version.family} cannot be estimated on the data known then ({exc})"
            ) from None
        _as_of_fits[key] = model
        while len(_as_of_fits) > _AS_OF_FITS:
            _as_of_fits.popitem(last=False)
        return model


def _panel(server: ModelServer, as_of: datetime | None) -> pd.DataFrame:
    """The served series as known at ``as_of``, by default as the model saw them when it was
    trained (what its plain forecasts start from); that default is read once and kept."""
    version = server.version
    if as_of is None and version.id in _training_panels:
        return _training_panels[version.id]
    with server.db.connection() as conn:
        panel = load_panel(conn, version.series_ids, as_of=as_of or version.data_as_of)
    if as_of is None:
        _training_panels[version.id] = panel
    return panel


def _with_history(panel: pd.DataFrame, series_id: str, history: list[dict], freq: Frequency) -> pd.DataFrame:
    """The panel with the client's values replacing or extending the series (model space)."""
    try:
        payload = observations_from_object({"series_id": series_id, "observations": history})
    except ValidationError as exc:
        details = [{**i.to_dict(), "field": i.field.replace("observations", "history", 1)} for i in exc.details]
        raise ApiError(422, "invalid history", details) from None
    values = payload.series[0].values
    if issues := check_frequency(values.index, freq):
        details = [{"field": f"history[{i.index}].ts", "index": i.index, "message": i.message} for i in issues]
        raise ApiError(422, "history timestamps are off the series frequency", details)
    merged = panel.reindex(panel.index.union(values.index))
    merged.loc[values.index, series_id] = values.to_numpy()
    merged.attrs = dict(panel.attrs)
    return merged
