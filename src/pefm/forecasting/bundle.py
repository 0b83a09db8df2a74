"""One model version for the whole catalog: a model family per group of series.

Series are grouped by frequency, with return series (``log_return``) in groups of their own, and
each group gets the family suited to it (``family_for``): daily and business-daily returns a
GARCH model (volatility-aware intervals; price levels come from its simulated paths), every
other group the ensemble, fitted per series. ``plan_groups`` makes the plan from the catalog
when a bundle is trained, so a series created through the API and filled through ingest is
forecast from the next training on, without code changes; a series too short for its group's
family is left out with the reason.

Why one bundle rather than one registry version per group: "which model serves" keeps exactly one
answer (one registry row, one inference revision, one rollout, one drift monitor), while the
parts that need finer grain already have it: backtests, gates and drift are computed per series,
and an as-of request re-estimates only the series asked for. The price is that a
retrain re-fits every group; a group whose data did not change re-fits to the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pefm.data.calendars import calendar_attrs
from pefm.data.frequency import Frequency, with_frequency
from pefm.data.transforms import RETURN_TRANSFORMS
from pefm.forecasting.base import DEFAULT_LEVELS, BaseForecaster, ForecastInputError

BUNDLE = "bundle"
RETURNS_FAMILY = ("garch", {})
DEFAULT_FAMILY = ("ensemble", {})


def group_name(freq: Frequency, transform: str) -> str:
    """``quarterly``, ``monthly``, ``business-daily-returns``, ...: the group a series belongs to."""
    return freq.label.replace(" ", "-") + ("-returns" if transform in RETURN_TRANSFORMS else "")


def family_for(name: str) -> tuple[str, dict[str, Any]]:
    """The model family (and parameters) a group is forecast with."""
    daily = name.startswith(("daily", "business-daily"))
    return RETURNS_FAMILY if daily and name.endswith("-returns") else DEFAULT_FAMILY


def plan_groups(panel: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The bundle's groups for the series of ``panel`` (a ``load_panel`` frame), and the series
    left out with the reason (too few points for their group's family)."""
    from pefm.forecasting.training import estimator

    by_group: dict[str, list[str]] = {}
    skipped = {}
    for series_id in panel.columns:
        freq = Frequency(panel.attrs["frequencies"][series_id])
        name = group_name(freq, panel.attrs["transforms"][series_id])
        family, params = family_for(name)
        needed = _min_length(estimator(family, params))
        points = int(panel[series_id].notna().sum())
        if points < needed:
            skipped[series_id] = f"{points} points after its transform; {family} needs at least {needed}"
            continue
        by_group.setdefault(name, []).append(str(series_id))
    groups = [
        {"name": name, "family": family_for(name)[0], "params": family_for(name)[1], "series_ids": ids}
        for name, ids in sorted(by_group.items())
    ]
    return groups, skipped


def group_data(panel: pd.DataFrame, series_ids: Sequence[str]) -> pd.DataFrame:
    """The columns of one group, on the dates where any of them has a value, described by attrs
    as ``load_panel`` describes a panel (and with the index frequency set when it is regular)."""
    data = panel[list(series_ids)].dropna(how="all")
    frequencies = {s: panel.attrs["frequencies"][s] for s in series_ids}
    if len(set(frequencies.values())) == 1:
        data.index = with_frequency(pd.DatetimeIndex(data.index), Frequency(next(iter(frequencies.values()))))
    data.attrs = {
        "frequencies": frequencies,
        **calendar_attrs({s: panel.attrs.get("calendars", {}).get(s, "") for s in series_ids}),
        "transforms": {s: panel.attrs.get("transforms", {}).get(s) for s in series_ids},
    }
    return data


def fit_data(model: BaseForecaster, data: pd.DataFrame) -> pd.DataFrame:
    """What ``model`` is fitted on from a panel: joint multivariate models need the dates where every
    series has a value; per-series models and bundles handle each series' own span."""
    if model.multivariate and not model.handles_gaps:
        out = data.dropna()
        out.attrs = dict(data.attrs)
        return out
    return data


class Bundle(BaseForecaster):
    """Group models side by side, each fitted on its group's columns of one panel."""

    name = BUNDLE
    multivariate = True
    handles_gaps = True

    def __init__(self, groups: Sequence[dict[str, Any]] = (), skipped: dict[str, str] | None = None):
        self.groups = [dict(g) for g in groups]
        self.skipped = dict(skipped or {})

    def fit(self, y: pd.Series | pd.DataFrame, X: pd.DataFrame | None = None) -> Bundle:
        """Fit each group's family on its columns of ``y`` (a ``load_panel`` frame)."""
        from pefm.forecasting.training import estimator

        if X is not None:
            raise ForecastInputError("a bundle does not use exogenous regressors (X)")
        if not self.groups:
            raise ForecastInputError("a bundle needs groups: train it with `pefm train`, which plans them")
        if missing := [s for g in self.groups for s in g["series_ids"] if s not in y.columns]:
            raise ForecastInputError(f"the data hold no column for {', '.join(missing)}")
        self.models_ = {}
        for group in self.groups:
            model = estimator(group["family"], group["params"])
            self.models_[group["name"]] = model.fit(fit_data(model, group_data(y, group["series_ids"])))
        self.series_ids_ = [s for g in self.groups for s in g["series_ids"]]
        return self

    def update(self, y: pd.Series | pd.DataFrame) -> Bundle:
        """Condition every group's model on its columns of ``y`` (parameters kept)."""
        for group in self.groups:
            model = self.models_[group["name"]]
            model.update(fit_data(model, group_data(y, group["series_ids"])))
        return self

    def predict(self, h: int, levels: Sequence[int] = DEFAULT_LEVELS) -> pd.DataFrame:
        """Every group's forecast, ``h`` steps of each series' own frequency."""
        if not hasattr(self, "models_"):
            raise ForecastInputError("bundle is not fitted: call fit() first")
        return pd.concat([model.predict(h, levels) for model in self.models_.values()], ignore_index=True)

    def group_of(self, series_id: str) -> dict[str, Any]:
        """The group (name, family, params, series_ids) that forecasts ``series_id``."""
        for group in self.groups:
            if series_id in group["series_ids"]:
                return group
        why = f": {self.skipped[series_id]}" if series_id in self.skipped else ""
        raise ForecastInputError(f"this bundle does not forecast {series_id!r}{why}")

    def for_series(self, series_id: str) -> BaseForecaster:
        return self.models_[self.group_of(series_id)["name"]].for_series(series_id)


def _min_length(model: BaseForecaster) -> int:
    return getattr(model, "model", model).min_length  # PerSeries wraps the univariate model
