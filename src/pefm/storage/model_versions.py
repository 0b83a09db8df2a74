"""The model registry's table (``model_versions``): rows in, rows out, status changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pefm.storage.signing import Signature, TrustedKeys

STATUSES = ("candidate", "serving", "retired", "rejected")
_SUMMARY = (
    "id, family, params, series_ids, data_as_of, data_sha256, artifact_sha256, backtest, "
    "gate_report, status, status_reason, parent_id, created_at, status_changed_at, precomputed_sha256"
)
_LISTED = _SUMMARY.replace("backtest,", "backtest - 'forecasts' AS backtest,")
"""The summary with each backtest's spec and metrics, without its forecasts from every origin: the
forecasts are most of a backtest (a megabyte for the bundle), and every version keeps its own."""


class UnknownModelError(LookupError):
    """No model version with that id."""


@dataclass(frozen=True)
class ModelVersion:
    """A registry row without its artifact bytes (load those with ``read_artifact``)."""

    id: str
    family: str
    params: dict[str, Any]
    series_ids: list[str]
    data_as_of: datetime
    data_sha256: str
    artifact_sha256: str
    backtest: dict[str, Any] | None
    gate_report: dict[str, Any] | None
    status: str
    status_reason: str | None
    parent_id: str | None
    created_at: datetime
    status_changed_at: datetime
    precomputed_sha256: str | None = None
    """The signed digest of its precomputed forecasts (``signing.precomputed_digest``); None for a
    version signed before they were."""


def insert_version(
    conn: psycopg.Connection,
    *,
    id: str,
    family: str,
    params: dict[str, Any],
    series_ids: list[str],
    data_as_of: datetime,
    data_sha256: str,
    artifact: bytes,
    artifact_sha256: str,
    signature: Signature,
    backtest: dict[str, Any] | None,
    precomputed: dict[str, Any] | None,
    precomputed_sha256: str,
    created_at: datetime,
    parent_id: str | None = None,
) -> ModelVersion:
    """Insert a new candidate version in one statement and return it."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""INSERT INTO model_versions (id, family, params, series_ids, data_as_of, data_sha256,
                                            artifact, artifact_sha256, artifact_key, artifact_signature,
                                            backtest, precomputed, precomputed_sha256, parent_id, created_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_SUMMARY}""",
            (
                id,
                family,
                Jsonb(params),
                series_ids,
                data_as_of,
                data_sha256,
                artifact,
                artifact_sha256,
                signature.key_id,
                signature.value,
                _json(backtest),
                _json(precomputed),
                precomputed_sha256,
                parent_id,
                created_at,
            ),
        ).fetchone()
    return ModelVersion(**row)


def get_version(conn: psycopg.Connection, version_id: str) -> ModelVersion:
    """The version with this id; UnknownModelError when there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_SUMMARY} FROM model_versions WHERE id = %s", (version_id,)).fetchone()
    if row is None:
        raise UnknownModelError(f"unknown model version {version_id!r}")
    return ModelVersion(**row)


def version_exists(conn: psycopg.Connection, version_id: str) -> bool:
    return conn.execute("SELECT 1 FROM model_versions WHERE id = %s", (version_id,)).fetchone() is not None


def list_versions(conn: psycopg.Connection, *, status: str | None = None, forecasts: bool = True) -> list[ModelVersion]:
    """Versions, newest first, optionally of one status. ``forecasts=False``: each backtest
    without its forecasts from every origin (``_LISTED``), what a listing needs."""
    columns = _SUMMARY if forecasts else _LISTED
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT {columns} FROM model_versions WHERE %(status)s::text IS NULL OR status = %(status)s
                ORDER BY created_at DESC, id""",
            {"status": status},
        ).fetchall()
    return [ModelVersion(**row) for row in rows]


def get_serving(conn: psycopg.Connection, *, forecasts: bool = True) -> ModelVersion | None:
    """The serving version, if one serves (at most one does: index ``model_versions_one_serving``);
    without its backtest's forecasts (``_LISTED``) when ``forecasts`` is false, for a page that
    needs only what it serves."""
    columns = _SUMMARY if forecasts else _LISTED
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {columns} FROM model_versions WHERE status = 'serving'").fetchone()
    return ModelVersion(**row) if row else None


def read_artifact(conn: psycopg.Connection, version_id: str) -> tuple[bytes, str]:
    """The artifact bytes and their recorded sha256."""
    row = conn.execute("SELECT artifact, artifact_sha256 FROM model_versions WHERE id = %s", (version_id,)).fetchone()
    if row is None:
        raise UnknownModelError(f"unknown model version {version_id!r}")
    return bytes(row[0]), row[1]


def read_signature(conn: psycopg.Connection, version_id: str) -> Signature | None:
    """The trainer's signature over a version (None: registered unsigned)."""
    row = conn.execute(
        "SELECT artifact_key, artifact_signature FROM model_versions WHERE id = %s", (version_id,)
    ).fetchone()
    if row is None:
        raise UnknownModelError(f"unknown model version {version_id!r}")
    return Signature(row[0], bytes(row[1])) if row[0] is not None else None


def version_to_json(version: ModelVersion) -> dict[str, Any]:
    """A version's row as JSON-ready values (``version_from_json`` reads it back)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(version).items()}


def version_from_json(data: dict[str, Any]) -> ModelVersion:
    moments = ("data_as_of", "created_at", "status_changed_at")
    return ModelVersion(**{k: datetime.fromisoformat(v) if k in moments else v for k, v in data.items()})


def verify_signature(
    conn: psycopg.Connection, version_id: str, trusted: TrustedKeys, *, before_forecasts: bool = False
) -> str:
    """Check the trainer's signature over a version (its id, family, recorded artifact sha256 and
    precomputed forecasts' sha256) without reading the artifact, and return the artifact sha256 it
    signs: the bytes read next must be checked against it, not against a sha256 read again (the
    row may change between two reads); ArtifactSignatureError when it is unsigned or not signed by
    a ``trusted`` key (``before_forecasts``: ``TrustedKeys.verify``)."""
    row = conn.execute(
        "SELECT family, artifact_sha256, precomputed_sha256, artifact_key, artifact_signature"
        " FROM model_versions WHERE id = %s",
        (version_id,),
    ).fetchone()
    if row is None:
        raise UnknownModelError(f"unknown model version {version_id!r}")
    family, sha256, precomputed, key_id, value = row
    signature = Signature(key_id, bytes(value)) if key_id is not None else None
    trusted.verify(
        version_id=version_id,
        family=family,
        sha256=sha256,
        precomputed=precomputed,
        signature=signature,
        before_forecasts=before_forecasts,
    )
    return sha256


def set_signature(conn: psycopg.Connection, version_id: str, signature: Signature, precomputed_sha256: str) -> None:
    """Sign a version again (``pefm models sign``): ``signature`` covers ``precomputed_sha256``."""
    _update(
        conn,
        "UPDATE model_versions SET artifact_key = %s, artifact_signature = %s, precomputed_sha256 = %s WHERE id = %s",
        (signature.key_id, signature.value, precomputed_sha256, version_id),
    )


def read_precomputed(conn: psycopg.Connection, version_id: str) -> dict[str, Any] | None:
    """The forecasts computed when the version was registered: ``{horizon, levels, rows}``."""
    row = conn.execute("SELECT precomputed FROM model_versions WHERE id = %s", (version_id,)).fetchone()
    if row is None:
        raise UnknownModelError(f"unknown model version {version_id!r}")
    return row[0]


def set_backtest(conn: psycopg.Connection, version_id: str, backtest: dict[str, Any]) -> None:
    """Replace a version's stored backtest results."""
    _update(conn, "UPDATE model_versions SET backtest = %s WHERE id = %s", (Jsonb(backtest), version_id))


def set_gate_report(conn: psycopg.Connection, version_id: str, report: dict[str, Any]) -> None:
    """Store the gate report with the candidate it judged."""
    _update(conn, "UPDATE model_versions SET gate_report = %s WHERE id = %s", (Jsonb(report), version_id))


def set_status(conn: psycopg.Connection, version_id: str, status: str, reason: str | None = None) -> None:
    """Move a version to ``status`` (candidate, serving, retired, rejected), saying why."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    _update(
        conn,
        # the moment itself, not its transaction's start (a bootstrap trains and promotes in one)
        """UPDATE model_versions SET status = %s, status_reason = %s, status_changed_at = clock_timestamp()
           WHERE id = %s""",
        (status, reason, version_id),
    )


def _json(value: dict[str, Any] | None) -> Jsonb | None:
    return Jsonb(value) if value is not None else None


def _update(conn: psycopg.Connection, query: str, params: tuple) -> None:
    if conn.execute(query, params).rowcount != 1:
        raise UnknownModelError(f"unknown model version {params[-1]!r}")


SIGNED_SINCE = 12
"""The migration (``0012_artifact_signatures``) from which every version is registered signed."""
_XID_HORIZON = 1 << 30
"""Transactions after which two 32-bit transaction ids no longer compare (they wrap at 2**31)."""


@dataclass(frozen=True)
class SigningState:
    """What ``pefm models sign`` needs to know of a version before it signs it."""

    id: str
    family: str
    created_at: datetime
    signed: bool
    """It carries a signature (which may not verify)."""
    current: bool
    """That signature is over the precomputed forecasts too (``signing.MESSAGE``, not ``MESSAGE_V1``)."""
    before_signing: bool
    """Its created_at is earlier than when ``SIGNED_SINCE`` was applied: as its writer says (a role
    that may INSERT or UPDATE the row may write any created_at)."""
    untouched: bool
    """Its row was last written before ``SIGNED_SINCE`` was applied, by transaction id (the xmin
    of the row against that of the migration's record, which only the migrator writes): no role
    that writes rows today can make one look so. Past 2**30 transactions after the migration no
    row counts as untouched; in a database restored from a dump every row was written anew, in the
    dump's order (model_versions before schema_migrations), and only created_at is left to tell."""

    @property
    def predates_signing(self) -> bool:
        """Registered unsigned, and last written, before signing became mandatory: what
        ``pefm models sign`` signs unnamed."""
        return not self.signed and self.before_signing and self.untouched


def signing_states(conn: psycopg.Connection, ids: list[str] | None = None) -> list[SigningState]:
    """The versions (``ids``, or every one), oldest first, as ``pefm models sign`` chooses among them."""
    rows = conn.execute(
        """WITH m AS (SELECT applied_at, age(xmin) AS age FROM schema_migrations WHERE version = %(since)s)
           SELECT v.id, v.family, v.created_at, v.artifact_key IS NOT NULL, v.precomputed_sha256 IS NOT NULL,
                  coalesce(v.created_at < m.applied_at, false),
                  coalesce(m.age < %(horizon)s AND age(v.xmin) > m.age, false)
           FROM model_versions v LEFT JOIN m ON true
           WHERE %(ids)s::text[] IS NULL OR v.id = ANY(%(ids)s::text[])
           ORDER BY v.created_at, v.id""",
        {"since": SIGNED_SINCE, "horizon": _XID_HORIZON, "ids": ids},
    ).fetchall()
    return [SigningState(*row) for row in rows]
