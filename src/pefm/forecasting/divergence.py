"""Forecast divergence: how far one model's forecasts are from another's, in widths of the
other's 95% interval, on the target dates both forecast. A canary's divergence check measures it
live between blue and green (``rollout.probes``); the validation gates measure it between the
candidate and the model it was gated against, both conditioned on the same data, so that the
canary judges green by how much further it strays than that (``gated_divergence``): a retrain
after a real shift is expected to forecast differently, and the gates, not the canary, judge
whether that difference is an improvement."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from pefm.storage.model_versions import ModelVersion

log = logging.getLogger(__name__)
LEVEL = 95


def forecast_divergence(blue: list[dict[str, Any]], green: list[dict[str, Any]]) -> float | None:
    """The largest |green mean - blue mean| over blue's 95% interval width, on the target dates
    (``ds``) both forecast; None when they share none."""
    theirs = {row["ds"]: row for row in blue}
    ratios = []
    for row in green:
        if (b := theirs.get(row["ds"])) is not None:
            ratios.append(abs(row["mean"] - b["mean"]) / max(b[f"hi-{LEVEL}"] - b[f"lo-{LEVEL}"], 1e-9))
    return max(ratios) if ratios else None


def beyond_expected(scores: Mapping[str, float], expected: Mapping[str, float]) -> float | None:
    """The largest divergence of a series beyond what was ``expected`` of it (0 when nothing
    was): the value a canary's divergence check judges. None when there are no scores."""
    if not scores:
        return None
    return max(max(score - expected.get(series_id, 0.0), 0.0) for series_id, score in scores.items())


def measured_divergence(
    conn: psycopg.Connection, candidate: ModelVersion, serving: ModelVersion, horizon: int
) -> dict[str, Any]:
    """The divergence of ``candidate``'s model-space forecasts (``horizon`` steps, each member
    conditioned on the latest data, as a revision serves them) from ``serving``'s, per series both
    forecast: what a canary between the two should see while no new data arrive. Both artifacts
    are loaded as a revision loads them (signature and sha256 checked). When they cannot be, or
    a series cannot be conditioned, that is recorded instead (the canary then expects nothing of
    it and judges by the spec alone)."""
    from pefm.config import get_settings
    from pefm.forecasting.panel import conditioned, load_panel, members_of
    from pefm.forecasting.registry import load_model
    from pefm.storage.signing import trusted_keys

    shared = [s for s in candidate.series_ids if s in serving.series_ids]
    now: datetime = conn.execute("SELECT now()").fetchone()[0]
    report: dict[str, Any] = {"as_of": now.isoformat(), "horizon": horizon, "level": LEVEL, "series": {}}
    try:
        trusted = trusted_keys(get_settings())
        models = load_model(conn, candidate.id, trusted), load_model(conn, serving.id, trusted)
    except Exception as exc:  # a model that cannot load is refused where it would serve; here, nothing measured
        report["unmeasured"] = f"{type(exc).__name__}: {exc}"
        return report
    forecasts: tuple[dict[str, list[dict]], dict[str, list[dict]]] = ({}, {})
    for model, out in zip(models, forecasts, strict=True):
        for member, first in members_of(model, shared):
            try:
                panel = load_panel(conn, member.series_ids_, as_of=now)
                fresh = conditioned(member, panel, first)
                frame = fresh.predict(min(horizon, getattr(fresh, "horizon", horizon)), (LEVEL,))
            except Exception as exc:  # this member's series only
                names = ", ".join(member.series_ids_)
                log.warning("divergence of %s not measured: %s: %s", names, type(exc).__name__, exc)
                continue
            for series_id, rows in frame.groupby("series_id", sort=False):
                out[series_id] = rows.to_dict("records")
    mine, theirs = forecasts
    for series_id in shared:
        if series_id in mine and series_id in theirs:
            score = forecast_divergence(theirs[series_id], mine[series_id])
            if score is not None:
                report["series"][series_id] = round(score, 6)
    return report
