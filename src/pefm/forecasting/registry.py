"""The model registry: register fitted models with their lineage, load them back verified.

Artifacts only ever come out of the registry, and only after the trainer's signature over the
version checks out against a trusted key (``pefm.storage.signing``) and their sha256 matches the
one recorded when they went in. Promoting a version makes it the serving model and retires the
one serving before, in one transaction; ``serving_version`` is the one place that says which
version serves.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg

from pefm.forecasting.base import BaseForecaster, ForecastInputError
from pefm.storage import model_versions as table
from pefm.storage.model_versions import ModelVersion
from pefm.storage.signing import TrustedKeys

PRECOMPUTED_HORIZON = 12
PRECOMPUTED_LEVELS = (80, 95)


class ArtifactIntegrityError(RuntimeError):
    """A stored artifact does not match its recorded sha256: it is not loaded."""


def new_version_id(family: str, artifact_sha256: str, now: datetime | None = None) -> str:
    """``<family>-<UTC yyyymmddhhmmss>-<8 hex of the artifact hash><4 random hex>``, DNS-label
    safe and unique even for the same artifact registered twice in a second."""
    now = now or datetime.now(UTC)
    slug = re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-")
    return f"{slug}-{now:%Y%m%d%H%M%S}-{artifact_sha256[:8]}{secrets.token_hex(2)}"


def register(
    conn: psycopg.Connection,
    model: BaseForecaster,
    *,
    family: str,
    params: dict[str, Any],
    series_ids: list[str],
    data_as_of: datetime,
    data_sha256: str,
    backtest: dict[str, Any] | None,
    panel: pd.DataFrame,
    read_at: datetime,
    parent_id: str | None = None,
) -> ModelVersion:
    """Store a fitted model as a new candidate version (one INSERT: all of it or nothing), signed
    with the trainer's key (``PEFM_SIGNING_KEY``), with its forecasts precomputed in both spaces
    (``panel``: the data it was fitted on, a ``load_panel`` frame). ``read_at``, the moment its
    data were read (``known_now``'s: every write stamped before it had committed), is kept as its
    ``created_at``: a write stamped after it is one the version may not have seen."""
    from pefm.config import get_settings
    from pefm.storage.signing import precomputed_digest, sign, signing_key

    key = signing_key(get_settings())
    artifact = model.to_bytes()
    digest = hashlib.sha256(artifact).hexdigest()
    version_id = new_version_id(family, digest)
    precomputed = precompute(model, panel)
    forecasts = precomputed_digest(precomputed)
    return table.insert_version(
        conn,
        id=version_id,
        family=family,
        params=params,
        series_ids=series_ids,
        data_as_of=data_as_of,
        data_sha256=data_sha256,
        artifact=artifact,
        artifact_sha256=digest,
        signature=sign(key, version_id=version_id, family=family, sha256=digest, precomputed=forecasts),
        backtest=backtest,
        precomputed=precomputed,
        precomputed_sha256=forecasts,
        parent_id=parent_id,
        created_at=read_at,
    )


def precompute(model: BaseForecaster, panel: pd.DataFrame) -> dict[str, Any]:
    """The forecasts a plain request is answered from: up to PRECOMPUTED_HORIZON steps at the
    PRECOMPUTED_LEVELS, in model space and in level space (rows carry ``space``), and the level
    each series' inverse transform starts from (``anchors``)."""
    from pefm.data.frequency import Frequency
    from pefm.forecasting.levels import anchor_at, level_forecast

    horizon = min(PRECOMPUTED_HORIZON, getattr(model, "horizon", PRECOMPUTED_HORIZON))
    forecast = model.predict(horizon, PRECOMPUTED_LEVELS)
    parts, anchors = [forecast.assign(space="model")], {}
    for series_id, rows in forecast.groupby("series_id", sort=False):
        member = model.for_series(series_id)
        anchors[series_id] = anchor_at(panel, series_id, member.cutoff_)
        transform, freq = panel.attrs["transforms"][series_id], Frequency(panel.attrs["frequencies"][series_id])
        level = level_forecast(member, rows, series_id, anchors[series_id], transform, freq, PRECOMPUTED_LEVELS)
        parts.append(level.assign(space="level"))
    out = pd.concat(parts, ignore_index=True)
    out["ds"] = out["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"horizon": horizon, "levels": list(PRECOMPUTED_LEVELS), "anchors": anchors, "rows": out.to_dict("records")}


def load_model(conn: psycopg.Connection, version_id: str, trusted: TrustedKeys) -> BaseForecaster:
    """The fitted model of a version, after checking the signature over the version against the
    ``trusted`` keys and its bytes against the signed sha256 (``verified_artifact``); nothing
    unverified is unpickled."""
    return BaseForecaster.from_bytes(verified_artifact(conn, version_id, trusted))


def verified_artifact(conn: psycopg.Connection, version_id: str, trusted: TrustedKeys) -> bytes:
    """A version's artifact bytes once the signature over the version checks out against the
    ``trusted`` keys and the bytes against the signed sha256 (the one the signature was checked
    over: one read again could be another, written in between), not unpickled."""
    signed = table.verify_signature(conn, version_id, trusted)
    artifact, _ = table.read_artifact(conn, version_id)
    return _checked(version_id, artifact, signed)


def model_from_artifact(version_id: str, artifact: bytes, recorded: str) -> BaseForecaster:
    """The model in ``artifact`` when its sha256 is the ``recorded`` (signed) one; unpickled only then."""
    return BaseForecaster.from_bytes(_checked(version_id, artifact, recorded))


def _checked(version_id: str, artifact: bytes, recorded: str) -> bytes:
    actual = hashlib.sha256(artifact).hexdigest()
    if actual != recorded:
        raise ArtifactIntegrityError(
            f"artifact of {version_id} has sha256 {actual[:12]}..., the registry recorded {recorded[:12]}..."
        )
    return artifact


def estimation_group(version: ModelVersion, series_id: str) -> tuple[str, dict[str, Any], list[str]]:
    """The family, parameters and series that ``version`` estimates together with ``series_id``:
    the series alone for a univariate family (fitted per series anyway), else its bundle group or
    the version's series (what a joint model is estimated on). An as-of forecast re-estimates
    exactly these; ForecastInputError where the version does not forecast the series."""
    from pefm.forecasting.bundle import BUNDLE
    from pefm.forecasting.models import make_model

    family, params, ids = version.family, version.params, list(version.series_ids)
    if family == BUNDLE:
        group = next((g for g in params.get("groups", []) if series_id in g["series_ids"]), None)
        if group is None:
            why = params.get("skipped", {}).get(series_id)
            raise ForecastInputError(f"{version.id} does not forecast {series_id!r}" + (f": {why}" if why else ""))
        family, params, ids = group["family"], group["params"], list(group["series_ids"])
    elif series_id not in ids:
        raise ForecastInputError(f"{version.id} does not forecast {series_id!r}")
    if not make_model(family, **params).multivariate:
        ids = [series_id]
    return family, params, ids


def serving_version(conn: psycopg.Connection) -> ModelVersion | None:
    """THE answer to "which model serves": the registry's serving version, the one there is
    (``promote`` retires every other; the database allows no second). Inference revisions without a
    pinned version, the drift monitor, the gates' baseline, ``pefm up`` and ``pefm status`` ask
    this function; rollouts keep it true by settling the registry in the same transaction as their
    terminal state."""
    return table.get_serving(conn)


def serving_id(conn: psycopg.Connection) -> str | None:
    """The serving version's id (``serving_version``), None when no model serves."""
    serving = serving_version(conn)
    return serving.id if serving else None


REPLACED_BY = "replaced by "
"""How a retired version's status reason begins when a promotion retired it (then the id)."""


PROMOTE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('pefm.registry.promote', 0))"
"""Held by whatever changes which version serves, to its transaction's end."""


def promote(conn: psycopg.Connection, version_id: str, reason: str | None = None) -> list[str]:
    """Make a version the serving model; return the version it retired (the one serving before),
    if any. One version serves at a time: an inference revision serves one, so a second serving
    version, of other series, had said in the registry that its series were served while no
    revision served them (and the gates compared a candidate with one of the two, while its
    promotion retired both)."""
    with conn.transaction():
        conn.execute(PROMOTE_LOCK)
        version = table.get_version(conn, version_id)
        retired = []
        for other in table.list_versions(conn, status="serving", forecasts=False):
            if other.id != version.id:
                table.set_status(conn, other.id, "retired", f"{REPLACED_BY}{version.id}")
                retired.append(other.id)
        table.set_status(conn, version.id, "serving", reason)
    return retired


def candidate_verdict(conn: psycopg.Connection, candidate: str | None, require_gates: bool) -> tuple[bool | None, str]:
    """What a rollout's gate check says of its candidate, and why: the same rule for the local
    controller and Flagger's confirm-rollout. The serving version passes (a configuration change:
    the model is the one serving), as does any when the spec asks no gates; else the candidate's
    gate report decides (None: it has none yet, or it passed against a model that no longer serves
    the candidate's series, which says nothing of the one serving now: it is to be gated again)."""
    try:
        version = table.get_version(conn, candidate) if candidate else None
    except table.UnknownModelError:
        version = None
    if version is not None and version.status == "serving":
        return True, f"the candidate serves the serving version {candidate}: a configuration change"
    if not require_gates:
        return True, "the spec does not require gates"
    if version is None or version.gate_report is None:
        return None, f"the candidate {candidate or '(unknown)'} has no gate report"
    passed = bool(version.gate_report["passed"])
    if passed and "serving" in version.gate_report:  # the version it was compared with (None: none served)
        then, now = version.gate_report["serving"], serving_version(conn)
        if then != (now.id if now else None):
            now_text = f"{now.id if now else 'none'} serves now"
            return (
                None,
                f"the candidate {candidate} was gated against {then or 'no serving model'}; {now_text}: gate it again",
            )
    return passed, f"the candidate {candidate} {'passed' if passed else 'failed'} its validation gates"


def gated_divergence(conn: psycopg.Connection, candidate: str | None, blue: str | None) -> dict[str, Any]:
    """The divergence the validation gates measured between ``candidate`` and ``blue``
    conditioned on the same data (``forecasting.divergence``): ``as_of`` (the data's moment),
    ``horizon`` and per series its path (``series``); empty unless the candidate passed gates run
    against ``blue``. A canary of the one against the other expects it while the data are those
    (``divergence.expected_divergence``)."""
    if candidate is None or blue is None:
        return {}
    row = conn.execute("SELECT gate_report FROM model_versions WHERE id = %s", (candidate,)).fetchone()
    report = row[0] if row is not None else None
    if not report or not report.get("passed") or report.get("serving") != blue:
        return {}
    measure = report.get("divergence") or {}
    paths = {s: path for s, path in (measure.get("series") or {}).items() if isinstance(path, list)}
    return {**measure, "series": paths} if paths and measure.get("as_of") else {}


def settle_rollout(
    conn: psycopg.Connection, *, candidate: str | None, previous: str | None, succeeded: bool, reason: str
) -> str:
    """The registry's side of a finished rollout, in the caller's transaction (the one that writes
    the rollout's terminal state): on success ``candidate`` serves and what it replaces retires; on
    a rollback or failure the version the candidate replaced (``previous``, blue's) serves again,
    and the candidate is rejected with
    ``reason``; a version retired for another reason, or while the candidate no longer serves,
    stays retired. Returns what changed, in words.
    A version not in the registry (a revision's environment naming one that never was) changes
    nothing, so that the rollout still ends."""
    if candidate is None:
        return "registry unchanged: green's model version is unknown"
    if not table.version_exists(conn, candidate):
        return f"registry unchanged: green's model version {candidate} is not in the registry"
    if succeeded:
        retired = promote(conn, candidate, f"promoted by a rollout: {reason}")
        return f"registry: {candidate} serving" + (f", {', '.join(retired)} retired" if retired else "")
    if candidate == previous:
        return f"registry unchanged: green served {candidate}, the serving version"
    conn.execute(PROMOTE_LOCK)  # before reading what the candidate replaced: a promotion meanwhile stands
    replaced = conn.execute(  # none unless the candidate still serves: a later promotion stands
        """SELECT id FROM model_versions WHERE status = 'retired' AND status_reason = %s
             AND EXISTS (SELECT 1 FROM model_versions WHERE id = %s AND status = 'serving')
           ORDER BY id = %s DESC, status_changed_at DESC, id LIMIT 1""",  # blue's; else the last (before 0021: several)
        (f"{REPLACED_BY}{candidate}", candidate, previous),
    ).fetchone()
    changes = []
    if replaced is not None:
        promote(conn, replaced[0], f"restored by a rollback: {reason}")
        changes.append(f"{replaced[0]} serving again")
    table.set_status(conn, candidate, "rejected", reason)
    return "registry: " + ", ".join([*changes, f"{candidate} rejected"])
