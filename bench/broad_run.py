"""The broad-set backtests: PEFM's default for each series and the statsforecast anchors.

Protocol, one for every series and model: h = 1..8, the last ``windows`` (24) expanding origins,
one period apart, every model refitted at every origin; intervals at 80% and 95%.

- ``pefm_default``: the family PEFM's serving bundle gives the series' group
  (``family_for(group_name(freq, transform))``: GARCH for daily and business-daily returns, the
  ensemble otherwise), run through ``pefm.forecasting.backtest.backtest`` on a frame of the
  series' frequency (``attrs["frequencies"]``, ``attrs["transforms"]`` as ``load_panel`` sets them).
- ``naive``: PEFM's naive model, the RMSE baseline; it must agree with ``sf_Naive`` point for
  point, which checks that both harnesses see the same data, origins and targets.
- ``sf_<Model>``: statsforecast AutoARIMA, AutoETS, AutoTheta (the series' season length) and
  Naive, ``cross_validation(h=8, n_windows=windows, step_size=1, refit=True, level=[80, 95])``
  with their own intervals; ``sf_<Model>_conformal``: the same with
  ``prediction_intervals=ConformalIntervals(h=8, n_windows=conformal_windows(...))``: as many
  windows of 8 as fit in the later half of the training data at the first origin (PEFM's
  calibration scores the later half), at least 5 and at most 20 (statsforecast refits the model
  once a window at every origin). With 5 on every series, statsforecast's own conformal intervals
  had covered some 0.69 at 80% and 0.80 at 95% on i.i.d. normal data (its quantile of 10 mirrored
  scores): the anchor was handicapped by the bench, not by its method. AutoARIMA's conformal run
  refits AutoARIMA once a window per origin (measured with 5 windows: 5.3x AutoARIMA's ~970 CPU
  seconds, some 45 more minutes on two cores), so it runs only when asked (``arima_conformal``).

Each (model, series) is one job; jobs run in ``workers`` processes (two on a two-core machine), each
limited to one BLAS/OpenMP thread. A job's seconds cover the backtest call only, as wall time and
as the worker's CPU time; the models are compared on CPU seconds, which on a single-threaded job
equal its wall time on an idle core and do not depend on what else the machine runs (a shared
machine inflates wall times unevenly). Each worker first fits every model once on a synthetic
series (imports, numba compilation), outside any timing. A model
that fails on a series is recorded with its error, never dropped silently.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pefm.data.frequency import Frequency

H = 8
WINDOWS = 24
QUICK_WINDOWS = 6
LEVELS = (80, 95)
CONFORMAL_WINDOWS = (5, 20)
"""The fewest and the most calibration windows of the conformal anchors (``conformal_windows``)."""
SF_MODELS = ("AutoARIMA", "AutoETS", "AutoTheta", "Naive")
CONFORMAL_MODELS = ("AutoETS", "AutoTheta", "Naive")
DEFAULT = "pefm_default"
BASELINE = "naive"


@dataclass(frozen=True)
class Job:
    """One model backtested on one series (or, for a joint family, on a whole frequency group)."""

    label: str  # the row name: pefm_default, naive, sf_AutoETS, sf_AutoETS_conformal, ...
    series_ids: tuple[str, ...]
    frame: pd.DataFrame  # the series' values by date (one frequency)
    frequency: Frequency
    transforms: dict[str, str]
    season_length: int
    family: str = ""  # PEFM family, or the statsforecast model's class name
    params: dict = field(default_factory=dict)
    conformal: bool = False


@dataclass
class Outcome:
    """What a job produced: its forecasts and seconds, or the error it failed with."""

    label: str
    series_ids: tuple[str, ...]
    family: str
    seconds: float = float("nan")  # wall time of the backtest call
    cpu_seconds: float = float("nan")  # CPU time of the worker over the same call
    forecasts: pd.DataFrame | None = None
    error: str | None = None
    detail: str | None = None  # the failure's traceback tail


def plan_jobs(
    frames: dict[Frequency, pd.DataFrame], seasons: dict[str, int], *, arima_conformal: bool = False
) -> list[Job]:
    """Every (model, series) job of the broad run, the costliest first (workers stay busy)."""
    from pefm.forecasting.bundle import family_for, group_name
    from pefm.forecasting.models import make_model

    jobs: list[Job] = []
    conformal = CONFORMAL_MODELS + (("AutoARIMA",) if arima_conformal else ())
    for freq, frame in frames.items():
        transforms = frame.attrs["transforms"]
        by_family: dict[tuple, list[str]] = {}
        for sid in frame.columns:
            family, params = family_for(group_name(freq, transforms[sid]))
            by_family.setdefault((family, tuple(sorted(params.items()))), []).append(sid)
        for (family, params), ids in by_family.items():
            # a univariate family is backtested per column anyway: one job a series isolates failures
            joint = make_model(family, **dict(params)).multivariate
            for group in [ids] if joint else [[s] for s in ids]:
                jobs.append(_job(DEFAULT, group, frame, freq, seasons, family, dict(params)))
        for sid in frame.columns:
            jobs.append(_job(BASELINE, [sid], frame, freq, seasons, "naive", {}))
            for name in SF_MODELS:
                jobs.append(_job(f"sf_{name}", [sid], frame, freq, seasons, name, {}))
                if name in conformal:
                    jobs.append(_job(f"sf_{name}_conformal", [sid], frame, freq, seasons, name, {}, conformal=True))
    order = ["sf_AutoARIMA_conformal", "sf_AutoARIMA", "sf_AutoETS_conformal", DEFAULT, "sf_AutoTheta_conformal"]
    rank = {label: i for i, label in enumerate(order)}
    return sorted(jobs, key=lambda j: (rank.get(j.label, len(order)), -j.season_length, -len(j.frame)))


def _job(label, ids, frame, freq, seasons, family, params, conformal=False) -> Job:
    data = frame[list(ids)].dropna(how="all")
    return Job(
        label=label,
        series_ids=tuple(ids),
        frame=data,
        frequency=freq,
        transforms={s: frame.attrs["transforms"][s] for s in ids},
        season_length=seasons[ids[0]],
        family=family,
        params=params,
        conformal=conformal,
    )


def conformal_windows(length: int, windows: int) -> int:
    """The calibration windows of a conformal anchor on a series of ``length`` points backtested
    from ``windows`` origins: the windows of ``H`` in the later half of the first origin's
    training data, within ``CONFORMAL_WINDOWS``."""
    first = length - H - windows + 1
    low, high = CONFORMAL_WINDOWS
    return int(np.clip(first // 2 // H, low, high))


def run_job(job: Job, windows: int) -> Outcome:
    """Backtest one job; never raises (a failure comes back as ``Outcome.error``)."""
    out = Outcome(job.label, job.series_ids, job.family)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if job.label.startswith("sf_"):
                from statsforecast_anchor import cross_validate_series

                sid = job.series_ids[0]
                calibration = conformal_windows(len(job.frame[sid].dropna()), windows) if job.conformal else None
                anchor = cross_validate_series(
                    job.frame[sid].rename(sid),
                    job.family,
                    season_length=job.season_length,
                    h=H,
                    windows=windows,
                    levels=LEVELS,
                    conformal_windows=calibration,
                )
                out.seconds, out.cpu_seconds = anchor.seconds, anchor.cpu_seconds
                out.forecasts = anchor.forecasts.assign(model=job.label)
            else:
                out.seconds, out.cpu_seconds, out.forecasts = _pefm_backtest(job, windows)
    except Exception as exc:  # a model failing on a series is a result to report, not a crash
        out.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        out.forecasts = None
        out.detail = traceback.format_exc(limit=-3)
    return out


def _pefm_backtest(job: Job, windows: int) -> tuple[float, float, pd.DataFrame]:
    from pefm.forecasting.backtest import BacktestSpec, backtest
    from pefm.forecasting.models import make_model

    frame = job.frame.copy()
    frame.attrs = {"frequencies": {s: job.frequency for s in job.series_ids}, "transforms": dict(job.transforms)}
    model = make_model(job.family, **job.params)
    start, cpu = time.perf_counter(), time.process_time()
    results = backtest(model, frame, BacktestSpec(h=H, windows=windows, step=1, refit_every=1, levels=LEVELS))
    return time.perf_counter() - start, time.process_time() - cpu, results.assign(model=job.label)


WARM_UP: tuple[tuple[str, str, bool], ...] = (
    (DEFAULT, "ensemble", False),
    (DEFAULT, "garch", False),
    *((f"sf_{m}", m, c) for m in SF_MODELS for c in (False, True)),
)
"""(label, family, conformal) of every model the broad run times: what ``warm_up`` fits by default."""


def warm_up(models: Sequence[tuple[str, str, bool]] = WARM_UP) -> list[str]:
    """One untimed backtest (2 origins) of each (label, family, conformal) in ``models`` on a
    synthetic quarterly series (160 points, season length 4), so that first use costs (imports;
    numba's JIT in statsforecast versions built on numba) are paid here, not in a timed run.
    Returns the errors, one line each (``run_job`` never raises): a model failing here is not warm."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2000-01-01", periods=160, freq="QS")
    values = pd.Series(np.cumsum(rng.normal(size=160)) * 0.1 + rng.normal(size=160), index=index, name="warmup")
    frame = values.to_frame()
    frame.attrs = {"frequencies": {"warmup": Frequency.QUARTERLY}, "transforms": {"warmup": "none"}}
    errors = []
    for label, family, conformal in models:
        job = Job(label, ("warmup",), frame, Frequency.QUARTERLY, {"warmup": "none"}, 4, family, {}, conformal)
        outcome = run_job(job, windows=2)
        if outcome.error:
            errors.append(f"{label} ({family}{', conformal' if conformal else ''}): {outcome.error}")
    return errors


def _init_worker() -> None:
    """One thread per worker (two workers on two cores), then one untimed fit of every model
    (``warm_up``); a model that fails there is named on stderr: its timed jobs include its warm-up."""
    from threadpoolctl import threadpool_limits

    global _LIMITS  # kept for the worker's lifetime: the limit holds until it is restored
    _LIMITS = threadpool_limits(1)
    for error in warm_up():
        print(f"warm-up failed, its first timed job includes it: {error}", file=sys.stderr, flush=True)


_LIMITS = None


def run_all(jobs: list[Job], windows: int, workers: int, on_done: Callable[[Outcome], None]) -> list[Outcome]:
    """Run ``jobs`` in ``workers`` processes (spawned, so each imports what it needs afresh)."""
    outcomes = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(run_job, job, windows) for job in jobs]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            on_done(outcome)
    return outcomes


def seconds_on(outcomes: list[Outcome], labels: list[str], series: list[str]) -> tuple[dict, dict, list[str]]:
    """CPU and wall seconds per model summed over its successful jobs on ``series`` (the scored
    ones): a model is charged for the same series as every other, whichever failed elsewhere. A
    joint job (several series) covering some of ``series`` and some others is counted whole (its
    seconds cannot be split); they are returned, as "label: ids", to be named with the numbers."""
    keep = set(series)
    cpu = {m: 0.0 for m in labels}
    wall = {m: 0.0 for m in labels}
    straddling = []
    for o in outcomes:
        if o.error is not None or not keep.intersection(o.series_ids):
            continue
        cpu[o.label] += o.cpu_seconds
        wall[o.label] += o.seconds
        if not keep.issuperset(o.series_ids):
            straddling.append(f"{o.label}: {','.join(o.series_ids)}")
    return cpu, wall, straddling


def too_short(entries, windows: int) -> dict[str, str]:
    """The series of ``entries`` (``broad_set.BroadSeries``) too short for the protocol from
    ``windows`` origins, each with why: every origin is followed by ``H`` values, and the first
    has more than a season of points up to it (the in-sample seasonal naive that scales MASE and
    Winkler). Found before any job runs, so such a series is left out and named, not failed by
    every model after hours of work."""
    out = {}
    for e in entries:
        need = windows + H + e.season_length
        if (points := len(e.series())) < need:
            out[e.id] = f"{points} points; {windows} origins with h={H} and season length {e.season_length} need {need}"
    return out


def check_alignment(
    forecasts: dict[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[str, int], list[dict]]:
    """Check that every model forecast every series from the same origins as PEFM's naive and was
    scored against the same values, and that PEFM's naive and statsforecast's Naive agree point
    for point. A (model, series) that does not is a failure, not a crash after every job has run:
    its rows are dropped, so the series leaves the aggregates as any failed series does.
    Returns the forecasts kept, the (series, origin, step) rows checked per model, and the
    failures (model, series_id, error)."""
    keys = ["series_id", "cutoff", "step"]
    reference = forecasts[BASELINE].set_index(keys).sort_index()
    ref_ids = set(reference.index.get_level_values("series_id"))
    kept, checked, failures = {}, {}, []
    for label, frame in forecasts.items():
        rows = frame.set_index(keys).sort_index()
        bad = []
        for sid, part in rows.groupby(level="series_id"):
            if sid in ref_ids and (problem := _misaligned(label, part, reference.loc[[sid]])):
                failures.append({"model": label, "series_id": sid, "error": f"alignment: {problem}"})
                bad.append(sid)
        checked[label] = len(rows)
        kept[label] = frame[~frame["series_id"].isin(bad)]
    return kept, checked, failures


def _misaligned(label: str, part: pd.DataFrame, ref: pd.DataFrame) -> str | None:
    """How one model's rows of a series differ from the baseline's (the same series), or None."""
    if not part.index.get_level_values("cutoff").unique().equals(ref.index.get_level_values("cutoff").unique()):
        return f"origins differ from {BASELINE}'s"
    if not part.index.equals(ref.index):
        return f"(origin, step) rows differ from {BASELINE}'s"
    if not np.allclose(part["y"], ref["y"], equal_nan=True):
        return f"targets differ from {BASELINE}'s"
    if label == "sf_Naive" and (gap := float(np.max(np.abs(part["mean"] - ref["mean"])))) >= 1e-8:
        return f"disagrees with PEFM's {BASELINE} by up to {gap:.3g}"
    return None


def with_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``step`` (1..h): the forecast's position after its origin."""
    frame = frame.sort_values(["series_id", "cutoff", "ds"]).reset_index(drop=True)
    frame["step"] = frame.groupby(["series_id", "cutoff"]).cumcount() + 1
    return frame
