"""Training: load the panel as of a moment, backtest, fit on everything, register a candidate."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

from pefm.data.transforms import RETURN_TRANSFORMS
from pefm.forecasting.backtest import BacktestSpec, backtest, cutoffs, score
from pefm.forecasting.base import BaseForecaster, ForecastInputError
from pefm.forecasting.bundle import BUNDLE, fit_data, group_data, plan_groups
from pefm.forecasting.models import make_model
from pefm.forecasting.panel import as_of_loader, load_panel
from pefm.forecasting.per_series import PerSeries
from pefm.forecasting.registry import register
from pefm.storage.database import statements_alone
from pefm.storage.model_versions import ModelVersion
from pefm.storage.observations import known_now

TRADING_COST = 0.05  # percent per unit of turnover (5 bp), charged by the Sharpe check


@dataclass(frozen=True)
class BacktestRun:
    results: pd.DataFrame
    scores: pd.DataFrame
    returns: frozenset[str] = frozenset()
    """The series whose values are returns (the Sharpe gate applies to them)."""

    def summary(self, spec: BacktestSpec) -> dict[str, Any]:
        """What the registry stores: the spec, each series' metrics (pooled over the steps and per
        step: ``rmse`` and ``rmse@h1`` .. ``rmse@h<h>``, the names ``backtest`` documents), its
        backtest forecasts (cutoff, ds, actual y, mean and interval bounds: the gates compare them
        window by window, the dashboard overlays them), and which series are returns."""
        metrics = {
            row.pop("series_id"): {k: float(v) for k, v in row.items() if k not in ("model",) and pd.notna(v)}
            for row in self.scores.to_dict("records")
        }
        rows = self.results.drop(columns="model").assign(
            cutoff=lambda f: f["cutoff"].dt.strftime("%Y-%m-%d"), ds=lambda f: f["ds"].dt.strftime("%Y-%m-%d")
        )
        forecasts = {
            str(series_id): group.drop(columns="series_id").astype(object).where(group.notna(), None).to_dict("records")
            for series_id, group in rows.groupby("series_id")
        }
        return {"spec": asdict(spec), "metrics": metrics, "forecasts": forecasts, "returns": sorted(self.returns)}


def estimator(name: str, params: dict[str, Any] | None = None) -> BaseForecaster:
    """The model to fit on a whole panel: multivariate models (and bundles) as they are, others
    per series."""
    model = make_model(name, **(params or {}))
    return model if model.multivariate else PerSeries(model)


def bundle_params(panel: pd.DataFrame) -> dict[str, Any]:
    """A bundle's parameters for the series of ``panel`` (read with ``skip_refused``): its groups,
    and the series left out with the reason (too short, or values their transform refuses)."""
    groups, skipped = plan_groups(panel)
    return {"groups": groups, "skipped": {**panel.attrs.get("refused", {}), **skipped}}


def backtest_groups(name: str, params: dict[str, Any] | None, series_ids: list[str]) -> list[tuple[str, dict, list]]:
    """(family, params, series) of each backtest a model runs on ``series_ids``: one per group of
    a bundle (each on its own frequency's cutoffs), else one."""
    if name != BUNDLE:
        return [(name, params or {}, list(series_ids))]
    out = []
    for group in (params or {}).get("groups", []):
        ids = [s for s in group["series_ids"] if s in series_ids]
        if ids:
            out.append((group["family"], group["params"], ids))
    return out


def data_sha256(panel: pd.DataFrame) -> str:
    """A hash of exactly the training data (values, timestamps, column names)."""
    return hashlib.sha256(panel.to_csv(float_format="%.17g").encode()).hexdigest()


def _forecastable(panel: pd.DataFrame) -> pd.DataFrame:
    """``panel``, unless it holds intraday series, which are stored and served as data but not
    forecast (a backtest stored by date had merged their windows): ForecastInputError naming them."""
    from pefm.data.frequency import Frequency

    if intraday := [s for s, f in panel.attrs["frequencies"].items() if Frequency(f).intraday]:
        raise ForecastInputError(f"intraday series are not forecast yet: {', '.join(intraday)}")
    return panel


def run_backtest(
    conn: psycopg.Connection,
    name: str,
    series_ids: list[str],
    spec: BacktestSpec,
    *,
    params: dict[str, Any] | None = None,
    as_of: datetime | None = None,
    on_window: Callable[[pd.Timestamp], None] | None = None,
) -> BacktestRun:
    """Backtest a model on the stored panel, each origin seeing the data as known then (a bundle:
    each group on its own cutoffs, the rows together); each read a transaction of its own
    (``statements_alone``: what ``conn`` held before is committed)."""
    parts = []
    with statements_alone(conn):
        panel = _forecastable(load_panel(conn, series_ids, as_of=as_of, skip_refused=name == BUNDLE))
        for family, family_params, ids in backtest_groups(name, params, list(panel.columns)):
            model = make_model(family, **family_params)
            loader = as_of_loader(conn, ids)
            if not model.multivariate:
                ids = [s for s in ids if _backtestable(panel[s], model, spec, loader)]
            if not ids:
                continue
            data = fit_data(model, group_data(panel, ids)) if model.multivariate else group_data(panel, ids)
            parts.append(backtest(model, data, spec, as_of=loader, label=name, on_window=on_window))
    if not parts:
        raise ForecastInputError(f"no series has enough points for {spec.windows} windows of h={spec.h}")
    results = pd.concat(parts, ignore_index=True)
    returns = frozenset(s for s, t in panel.attrs["transforms"].items() if t in RETURN_TRANSFORMS)
    return BacktestRun(results, score(results, panel, returns=returns, cost=TRADING_COST), returns)


def _backtestable(values: pd.Series, model: BaseForecaster, spec: BacktestSpec, as_of) -> bool:
    """Whether a univariate model can be backtested on the series at every window: enough points
    in all, and enough already known at the first cutoff (a series loaded recently, with today's
    vintage, has no past as known then). Such a series is forecast, not backtested."""
    values = values.dropna()
    if len(values) < model.min_length + (spec.windows - 1) * spec.step + spec.h:
        return False
    first = cutoffs(values.index, spec)[0]
    return len(as_of(first)[values.name].loc[:first].dropna()) >= model.min_length


def train(
    conn: psycopg.Connection,
    name: str,
    series_ids: list[str],
    *,
    params: dict[str, Any] | None = None,
    as_of: datetime | None = None,
    spec: BacktestSpec | None = None,
    on_window: Callable[[pd.Timestamp], None] | None = None,
    parent_id: str | None = None,
) -> tuple[ModelVersion, BacktestRun | None]:
    """Fit ``name`` on the panel as known at ``as_of`` (default now), backtest it with ``spec``
    (None: no backtest), and register it as a candidate (``parent_id``: the version it is trained
    to replace, a retraining's serving one). The reads, backtest and fit hold no transaction open
    (``statements_alone``: what ``conn`` held before is committed); the registration is left in
    a transaction for the caller to commit, with what goes with it."""
    from pefm.config import get_settings
    from pefm.storage.signing import signing_key

    signing_key(get_settings())  # without the key nothing can be registered: say so before the work
    read_at = known_now(conn, series_ids)  # not before a write stamped earlier has committed
    as_of = as_of or read_at
    run = None
    with statements_alone(conn):
        panel = _forecastable(load_panel(conn, series_ids, as_of=as_of, skip_refused=name == BUNDLE))
        if name == BUNDLE and not (params or {}).get("groups"):
            params = bundle_params(panel)
        if spec is not None:
            run = run_backtest(conn, name, series_ids, spec, params=params, as_of=as_of, on_window=on_window)
        model = estimator(name, params)
        model.fit(fit_data(model, panel))
    version = register(
        conn,
        model,
        family=name,
        params=make_model(name, **(params or {})).get_params(),
        series_ids=list(model.series_ids_),
        data_as_of=as_of,
        data_sha256=data_sha256(panel),
        backtest=run.summary(spec) if run is not None and spec is not None else None,
        panel=panel,
        parent_id=parent_id,
        read_at=read_at,
    )
    return version, run
