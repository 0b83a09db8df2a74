"""Forecast divergence: how far one model's forecasts are from another's, in widths of the
other's 95% interval, step by step on the target dates both forecast. A canary's divergence check
measures it live between blue and green (``rollout.probes``); the validation gates measure it
between the candidate and the model it was gated against, both conditioned on the same data, so
that the canary judges green by how far it strays from that (``expected_divergence``: the gates'
measure, taken again when data arrived since): a retrain after a real shift is expected to
forecast differently, and the gates, not the canary, judge whether that difference is an
improvement.

The measure is signed and kept per step (the k-th forecast of green's path): a green whose
forecasts moved the other way from what the gates saw, or at another horizon than the one where
the gates saw the largest difference, strays from it as much as one moving further."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from pefm.storage.model_versions import ModelVersion

log = logging.getLogger(__name__)
LEVEL = 95
Path = list[float | None]
"""Per step of green's forecast: (green mean - blue mean) / blue's 95% width on that target date
(None: blue forecasts no such date)."""
REFUSED: Path = [math.inf]
"""The path of a series green refuses and blue answers: as far from blue's as can be."""


def divergence_path(blue: list[dict[str, Any]], green: list[dict[str, Any]]) -> Path:
    """Green's forecast rows against blue's on the same target dates (``ds``), step by step."""
    theirs = {row["ds"]: row for row in blue}
    path: Path = []
    for row in green:
        b = theirs.get(row["ds"])
        width = None if b is None else max(b[f"hi-{LEVEL}"] - b[f"lo-{LEVEL}"], 1e-9)
        path.append(None if b is None else (row["mean"] - b["mean"]) / width)
    return path


def judged_divergence(paths: Mapping[str, Path], expected: Mapping[str, Sequence[float | None]]) -> float | None:
    """What a canary's divergence check judges: the largest |live - expected| over every series
    and step, ``expected`` being the gates' path of the series (nothing expected: 0, so the
    score is the divergence itself). None when no step of any series could be compared."""
    scores = []
    for series_id, path in paths.items():
        measured = expected.get(series_id) or ()
        for step, live in enumerate(path):
            if live is not None:
                then = measured[step] if step < len(measured) and measured[step] is not None else 0.0
                scores.append(abs(live - then))
    return max(scores) if scores else None


def measured_divergence(
    conn: psycopg.Connection,
    candidate: ModelVersion,
    serving: ModelVersion,
    horizon: int,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """The divergence path of ``candidate``'s model-space forecasts (``horizon`` steps, each
    member conditioned on the data known at ``as_of``, default now, as a revision serves them)
    from ``serving``'s, per series both forecast: what a canary between the two should see while
    they answer from those data.
    Both artifacts are loaded as a revision loads them (signature and sha256 checked). When they
    cannot be, or a series cannot be conditioned, that is recorded instead (the canary then
    expects nothing of it and judges by the spec alone)."""
    from pefm.config import get_settings
    from pefm.forecasting.registry import load_model
    from pefm.storage.signing import trusted_keys

    shared = [s for s in candidate.series_ids if s in serving.series_ids]
    now: datetime = as_of or conn.execute("SELECT now()").fetchone()[0]
    report: dict[str, Any] = {"as_of": now.isoformat(), "horizon": horizon, "level": LEVEL, "series": {}}
    try:
        trusted = trusted_keys(get_settings())
        models = load_model(conn, candidate.id, trusted), load_model(conn, serving.id, trusted)
    except Exception as exc:  # a model that cannot load is refused where it would serve; here, nothing measured
        report["unmeasured"] = f"{type(exc).__name__}: {exc}"
        return report
    panels: dict[tuple[str, ...], Any] = {}  # both models' members of the same series read them once
    mine, theirs = (_forecasts(conn, model, shared, now, horizon, panels) for model in models)
    for series_id in shared:
        if series_id in mine and series_id in theirs:
            path = divergence_path(theirs[series_id], mine[series_id])
            report["series"][series_id] = [None if d is None else round(d, 6) for d in path]
    return report


_REMEASURED: dict[tuple[str, str], tuple[datetime, dict[str, Path]]] = {}
"""Per (candidate, blue): the last measure taken again, and the moment of its data."""
_REMEASURED_LOCK = threading.Lock()


def expected_divergence(
    conn: psycopg.Connection, candidate: str | None, blue: str | None, moment: datetime | None = None
) -> dict[str, Path]:
    """Per series, the divergence path a canary of ``candidate`` against ``blue`` expects when
    the revisions answer from the data known at ``moment`` (default now): the gates' measure
    (``registry.gated_divergence``) while those are the data it was taken on, else the same
    measure taken again on them (kept for the pair until the data change again). New data move
    both models' forecasts, and the distance between them with it: judged against the gates'
    measure alone, a retrain the gates passed was rolled back when quarters arrived during its
    canary. Empty when the gates measured nothing between the two; the gates' measure where it
    cannot be taken again (a model that does not load here), with a warning."""
    from pefm.forecasting.registry import gated_divergence
    from pefm.storage.model_versions import get_version
    from pefm.storage.observations import known_alike

    measure = gated_divergence(conn, candidate, blue)
    if not measure.get("series") or candidate is None or blue is None:
        return {}
    taken, paths = datetime.fromisoformat(measure["as_of"]), measure["series"]
    with _REMEASURED_LOCK:
        kept = _REMEASURED.get((candidate, blue))
    if kept is not None and kept[0] > taken:
        taken, paths = kept
    moment = moment or conn.execute("SELECT now()").fetchone()[0]
    versions = get_version(conn, candidate), get_version(conn, blue)
    series = sorted({s for version in versions for s in version.series_ids})
    if known_alike(conn, series, taken, moment, since=taken):
        return paths
    again = measured_divergence(conn, *versions, measure.get("horizon", 60), as_of=moment)
    if "unmeasured" in again or not again["series"]:
        log.warning("divergence of %s from %s not measured again: %s", candidate, blue, again.get("unmeasured"))
        return paths
    with _REMEASURED_LOCK:
        while len(_REMEASURED) >= 8:  # a few rollouts at a time
            _REMEASURED.pop(next(iter(_REMEASURED)))
        _REMEASURED[(candidate, blue)] = moment, again["series"]
    return again["series"]


def _forecasts(conn, model, series_ids: list[str], now: datetime, horizon: int, panels: dict) -> dict[str, list]:
    """``model``'s forecast rows of ``series_ids`` at ``LEVEL``, each member conditioned on the
    data known at ``now`` (``panels``: those read so far, by member series); a member that cannot
    be is left out, with a warning."""
    from pefm.forecasting.panel import conditioned, load_panel, members_of

    out: dict[str, list] = {}
    for member, first in members_of(model, series_ids):
        key = tuple(member.series_ids_)
        try:
            if key not in panels:
                panels[key] = load_panel(conn, list(key), as_of=now)
            fresh = conditioned(member, panels[key], first)
            frame = fresh.predict(min(horizon, getattr(fresh, "horizon", horizon)), (LEVEL,))
        except Exception as exc:  # this member's series only
            log.warning("divergence of %s not measured: %s: %s", ", ".join(key), type(exc).__name__, exc)
            continue
        for series_id, rows in frame.groupby("series_id", sort=False):
            out[series_id] = rows.to_dict("records")
    return out
