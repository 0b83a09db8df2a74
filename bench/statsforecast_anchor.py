"""Nixtla statsforecast anchor: rolling-origin cross-validation of reference models.

Gives the benchmark an external yardstick: the same rolling-origin protocol (expanding window,
refit at every origin) run through ``StatsForecast.cross_validation``. ``run_statsforecast`` runs a
wide panel of one frequency (the macro panel); ``cross_validate_series`` runs one series of any
frequency with its own season length, optionally with conformal intervals
(``statsforecast.utils.ConformalIntervals``) in place of the model's own.
Run as a script for a self-check on statsmodels' macrodata.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_MODELS: tuple[str, ...] = ("AutoARIMA", "AutoETS", "AutoTheta", "Naive")


@dataclass(frozen=True)
class AnchorResult:
    """One statsforecast model's cross-validation output and its wall time in seconds."""

    name: str
    seconds: float
    forecasts: pd.DataFrame  # series_id, ds, cutoff, y, mean, lo-<L>, hi-<L> for each level
    cpu_seconds: float | None = None  # CPU time of this process over the same call


def _to_long(panel: pd.DataFrame) -> pd.DataFrame:
    """Wide panel -> statsforecast long frame (unique_id, ds, y), dropping each series' NaNs."""
    parts = [
        pd.DataFrame({"unique_id": str(col), "ds": s.index, "y": s.to_numpy(dtype=float)})
        for col, s in ((c, panel[c].dropna()) for c in panel.columns)
    ]
    long = pd.concat(parts, ignore_index=True)
    long["ds"] = pd.to_datetime(long["ds"])
    return long


def _make_model(name: str, season_length: int):
    """Instantiate a statsforecast model by class name (Naive takes no season_length)."""
    from statsforecast import models as sf_models

    cls = getattr(sf_models, name)
    return cls() if name == "Naive" else cls(season_length=season_length)


def run_statsforecast(
    panel: pd.DataFrame,
    *,
    h: int = 1,
    windows: int = 40,
    step: int = 1,
    season_length: int = 4,
    freq: str = "QS",
    levels=(80, 95),
    models: tuple[str, ...] = DEFAULT_MODELS,
) -> dict[str, AnchorResult]:
    """Rolling-origin cross-validation of each statsforecast model on a wide panel.

    Each model runs in its own ``StatsForecast(..., n_jobs=1).cross_validation`` call with
    ``n_windows=windows, step_size=step, refit=True``, so ``seconds`` is that model's wall time
    (``time.perf_counter``). It includes first use costs in the process (imports; numba JIT
    compilation in statsforecast versions built on numba, before 2.x's compiled core), so the
    first model run looks slower than its steady state: ``accuracy.py`` warms the models first
    (``broad_run.warm_up``).
    Returns results keyed by ``"sf_<Model>"``.
    """
    from statsforecast import StatsForecast

    long = _to_long(panel)
    out: dict[str, AnchorResult] = {}
    for name in models:
        sf = StatsForecast(models=[_make_model(name, season_length)], freq=freq, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            t0 = time.perf_counter()
            cv = sf.cross_validation(df=long, h=h, n_windows=windows, step_size=step, refit=True, level=list(levels))
            seconds = time.perf_counter() - t0
        fc = _standard_columns(cv, name, levels)
        fc["ds"] = pd.to_datetime(fc["ds"])
        fc["cutoff"] = pd.to_datetime(fc["cutoff"])
        out[f"sf_{name}"] = AnchorResult(f"sf_{name}", seconds, fc)
    return out


def _standard_columns(cv: pd.DataFrame, name: str, levels) -> pd.DataFrame:
    """statsforecast's cross-validation frame -> series_id, ds, cutoff, y, mean, lo-L, hi-L."""
    if "unique_id" not in cv.columns:  # older versions / NIXTLA_ID_AS_COL unset: id is the index
        cv = cv.reset_index()
    rename = {"unique_id": "series_id", name: "mean"}
    for lv in levels:
        rename[f"{name}-lo-{lv}"] = f"lo-{lv}"
        rename[f"{name}-hi-{lv}"] = f"hi-{lv}"
    cv = cv.rename(columns=rename)
    cols = ["series_id", "ds", "cutoff", "y", "mean"]
    cols += [f"{side}-{lv}" for lv in levels for side in ("lo", "hi")]
    return cv[cols].reset_index(drop=True)


def cross_validate_series(
    series: pd.Series,
    name: str,
    *,
    season_length: int,
    h: int,
    windows: int,
    step: int = 1,
    levels=(80, 95),
    conformal_windows: int | None = None,
) -> AnchorResult:
    """Rolling-origin cross-validation of one statsforecast model on one series.

    ``StatsForecast(..., n_jobs=1).cross_validation(h, n_windows=windows, step_size=step,
    refit=True, level=levels)``; with ``conformal_windows`` the intervals are statsforecast's
    conformal ones, ``ConformalIntervals(h=h, n_windows=conformal_windows)``, recomputed from the
    training data at every origin, and the result is named ``sf_<Model>_conformal``. The series is
    handed over on a positional time index (0..n-1), so calendars with gaps (trading days) cannot
    shift anything; ``ds`` and ``cutoff`` are mapped back to the series' own dates, by position.
    ``seconds`` is the wall time of the cross-validation call alone, ``cpu_seconds`` its CPU time.
    """
    from statsforecast import StatsForecast
    from statsforecast.utils import ConformalIntervals

    values = series.dropna()
    series_id = str(values.name)
    long = pd.DataFrame({"unique_id": series_id, "ds": np.arange(len(values)), "y": values.to_numpy(dtype=float)})
    intervals = ConformalIntervals(h=h, n_windows=conformal_windows) if conformal_windows else None
    sf = StatsForecast(models=[_make_model(name, season_length)], freq=1, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        cv = sf.cross_validation(
            df=long,
            h=h,
            n_windows=windows,
            step_size=step,
            refit=True,
            level=list(levels),
            prediction_intervals=intervals,
        )
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    fc = _standard_columns(cv, name, levels)
    dates = pd.DatetimeIndex(values.index)
    fc["ds"] = dates[fc["ds"].to_numpy(dtype=int)]
    fc["cutoff"] = dates[fc["cutoff"].to_numpy(dtype=int)]
    fc["series_id"] = series_id
    label = f"sf_{name}_conformal" if conformal_windows else f"sf_{name}"
    return AnchorResult(label, seconds, fc, cpu)


def macro_panel() -> pd.DataFrame:
    """Quarterly US macro panel from statsmodels' macrodata (growth rates in annualised %)."""
    import statsmodels.api as sm

    d = sm.datasets.macrodata.load_pandas().data
    idx = pd.PeriodIndex.from_fields(
        year=d["year"].astype(int), quarter=d["quarter"].astype(int), freq="Q"
    ).to_timestamp()
    d.index = idx
    panel = pd.DataFrame(index=idx)
    for col in ("realgdp", "realcons", "realinv", "m1"):
        panel[col] = 400 * np.log(d[col]).diff()
    for col in ("infl", "unemp", "tbilrate", "realint"):
        panel[col] = d[col]
    panel.loc[idx[0], ["infl", "realint"]] = np.nan  # first value is a 0.00 placeholder
    return panel


def _rmse(fc: pd.DataFrame) -> pd.Series:
    """Per-series RMSE of the mean forecast."""
    return fc.assign(e2=(fc["y"] - fc["mean"]) ** 2).groupby("series_id")["e2"].mean() ** 0.5


if __name__ == "__main__":
    panel = macro_panel()
    models = ("Naive", "AutoARIMA", "AutoETS", "AutoTheta")
    res = run_statsforecast(panel, h=1, windows=40, models=models)
    base = _rmse(res["sf_Naive"].forecasts)
    print(f"panel {panel.shape}, {panel.index[0].date()}..{panel.index[-1].date()}; h=1, 40 windows")
    print(f"total {sum(r.seconds for r in res.values()):.1f}s")
    for key, r in res.items():
        ratio = (_rmse(r.forecasts) / base).reindex(panel.columns.astype(str))
        print(f"\n{key}: {r.seconds:.1f}s, {len(r.forecasts)} rows, median RMSE/naive {ratio.median():.3f}")
        print("  " + "  ".join(f"{k}={v:.3f}" for k, v in ratio.items()))
