"""Gating a candidate: its backtest against the serving model's on the same windows, by the gate
policy; the report is stored with the candidate. The one way `pefm gate` and retraining judge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.divergence import measured_divergence
from pefm.forecasting.gates import MismatchedBacktests, backtest_frame, evaluate, load_policy, paired, with_steps
from pefm.forecasting.training import run_backtest
from pefm.storage.model_versions import ModelVersion, set_gate_report


def gate_candidate(
    conn: psycopg.Connection,
    candidate: ModelVersion,
    serving: ModelVersion | None,
    *,
    policy: Path | None = None,
    on_window: Callable[[pd.Timestamp], None] | None = None,
) -> dict[str, Any]:
    """Judge ``candidate`` against ``serving`` (None: only the rules that need no serving model)
    and store the report. The serving model's stored backtest is used when it covers exactly the
    candidate's windows and data; otherwise the serving model (its family and parameters) is
    backtested again on the candidate's spec and data as of the candidate's ``data_as_of``, so
    both are scored on the same cutoffs, horizon and vintages. A candidate that does not forecast
    every series ``serving`` does fails: its promotion would retire ``serving`` and leave those
    series without a model. The report also holds how far the candidate's forecasts are from
    ``serving``'s on the same data (``divergence``), which a canary between them expects."""
    if serving is not None and serving.id == candidate.id:
        raise ValueError(f"{candidate.id} is the serving version: there is nothing to gate it against")
    rules = load_policy(policy)  # before the serving model's backtest is run again
    if not (candidate.backtest or {}).get("forecasts"):
        raise MismatchedBacktests(f"{candidate.id} has no stored backtest: run pefm backtest --version {candidate.id}")
    mine = backtest_frame(candidate.backtest)
    theirs, source = None, None
    if serving is not None:
        theirs, source = _serving_rows(conn, candidate, serving, mine, on_window)
    returns = set(candidate.backtest.get("returns") or _sharpe_series(candidate))
    report = evaluate(
        rules,
        mine,
        theirs,
        returns=returns,
        candidate_id=candidate.id,
        serving_id=serving.id if serving is not None else None,
        dropped=[s for s in serving.series_ids if s not in candidate.series_ids] if serving is not None else [],
        spacing=BacktestSpec.from_dict(candidate.backtest["spec"]).step,
    )
    report["windows"]["serving_backtest"] = source
    if serving is not None:
        from pefm.serving.inference import MAX_HORIZON  # every horizon a revision serves

        report["divergence"] = measured_divergence(conn, candidate, serving, MAX_HORIZON)
    set_gate_report(conn, candidate.id, report)
    return report


def _serving_rows(conn, candidate: ModelVersion, serving: ModelVersion, mine: pd.DataFrame, on_window):
    ids = [s for s in candidate.series_ids if s in serving.series_ids]
    if not ids:  # nothing to compare: the candidate fails by the series it would leave unserved
        return None, f"none: {serving.id} forecasts none of the candidate's series"
    spec = BacktestSpec.from_dict(candidate.backtest["spec"])
    stored_spec = (serving.backtest or {}).get("spec")
    if (serving.backtest or {}).get("forecasts") and _fitted_alike(BacktestSpec.from_dict(stored_spec), spec):
        stored = backtest_frame(serving.backtest)
        needed = set(mine["series_id"]) & set(serving.series_ids)
        try:
            if needed <= set(stored["series_id"]):  # else a series it serves would read as not forecast
                paired(mine, stored)
                return stored, "stored"
        except MismatchedBacktests:
            pass
    run = run_backtest(
        conn, serving.family, ids, spec, params=serving.params, as_of=candidate.data_as_of, on_window=on_window
    )
    return with_steps(run.results.drop(columns="model")), "re-run on the candidate's windows"


def _fitted_alike(stored: BacktestSpec, candidate: BacktestSpec) -> bool:
    """Whether a stored backtest was fitted as the candidate's was (training window and refits):
    one re-estimated less often is not the same test of the serving model, whatever its windows."""
    return (stored.window, stored.train_size, stored.refit_every) == (
        candidate.window,
        candidate.train_size,
        candidate.refit_every,
    )


def _sharpe_series(version: ModelVersion) -> list[str]:
    """Return series of a backtest stored before it listed them: those scored with a Sharpe ratio."""
    return [s for s, m in (version.backtest.get("metrics") or {}).items() if "sharpe" in m]
