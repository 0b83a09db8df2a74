"""The series catalog (table ``series``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime

import psycopg
from psycopg.rows import class_row, dict_row

from pefm.data.frequency import Frequency
from pefm.storage.channels import announce


@dataclass(frozen=True)
class SeriesMeta:
    """What PEFM knows about a series besides its values."""

    id: str
    name: str
    frequency: Frequency
    unit: str = ""
    transform: str = "none"
    source: str = ""
    description: str = ""
    calendar: str = ""
    """The exchange calendar of a business-daily series (``pefm.data.calendars``); '' for none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "frequency", Frequency(self.frequency))


_COLUMNS = ", ".join(f.name for f in fields(SeriesMeta))


class SeriesInUseError(ValueError):
    """A change to a series' frequency, transform or calendar while it has observations: the
    stored values were checked against (and are read through) the old ones."""

    def __init__(self, message: str, fields: list[str]):
        super().__init__(message)
        self.fields = fields
        """What the change would have changed: frequency, transform or both."""


def upsert_series(conn: psycopg.Connection, meta: SeriesMeta) -> bool:
    """Create or update a series' metadata; True when it was created. SeriesInUseError when the
    change would reinterpret stored observations (a new frequency, transform or calendar)."""
    with conn.transaction():
        stored = _locked(conn, meta.id)
        if stored is None:  # a new series; or one created meanwhile, then locked and checked as any other
            if _insert(conn, meta, "ON CONFLICT (id) DO NOTHING RETURNING true"):
                return True
            stored = _locked(conn, meta.id)
        # With the row locked no observation write for it is in flight (writers hold it FOR SHARE),
        # and this statement, begun after the lock was granted, sees every one that committed.
        has_data = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM all_observations WHERE series_id = %s)", (meta.id,)
        ).fetchone()[0]
        if has_data:
            pairs = (
                ("frequency", stored[0], meta.frequency.value),
                ("transform", stored[1], meta.transform),
                ("calendar", stored[2] or "", meta.calendar or ""),
            )
            if changed := [name for name, old, new in pairs if old != new]:
                raise SeriesInUseError(
                    f"series {meta.id!r} has observations stored as frequency {stored[0]}, transform {stored[1]}, "
                    f"calendar {stored[2] or 'none'}: those cannot change; create a new series",
                    changed,
                )
        if stored[3] != meta.unit:  # the inference replicas' answers carry it: they read it again
            announce(conn, [meta.id])
        return _upsert(conn, meta)


def _locked(conn: psycopg.Connection, series_id: str) -> tuple[str, str, str, str] | None:
    """The series' frequency, transform, calendar and unit, its row locked FOR UPDATE; None when
    there is none."""
    return conn.execute(
        "SELECT frequency, transform, calendar, unit FROM series WHERE id = %s FOR UPDATE", (series_id,)
    ).fetchone()


def _upsert(conn: psycopg.Connection, meta: SeriesMeta) -> bool:
    return bool(
        _insert(
            conn,
            meta,
            """ON CONFLICT (id) DO UPDATE SET
                name = EXCLUDED.name, frequency = EXCLUDED.frequency, unit = EXCLUDED.unit,
                transform = EXCLUDED.transform, source = EXCLUDED.source,
                description = EXCLUDED.description, calendar = EXCLUDED.calendar,
                updated_at = CASE WHEN (series.name, series.frequency, series.unit, series.transform,
                                        series.source, series.description, series.calendar)
                                       IS DISTINCT FROM
                                       (EXCLUDED.name, EXCLUDED.frequency, EXCLUDED.unit, EXCLUDED.transform,
                                        EXCLUDED.source, EXCLUDED.description, EXCLUDED.calendar)
                                  THEN now() ELSE series.updated_at END
            RETURNING (xmax = 0) AS created""",
        )
    )


def _insert(conn: psycopg.Connection, meta: SeriesMeta, conflict: str) -> bool | None:
    """INSERT the series with ``conflict`` (its ON CONFLICT and RETURNING clauses): the value
    returned, None when no row was."""
    row = conn.execute(
        f"""INSERT INTO series ({_COLUMNS})
            VALUES (%(id)s, %(name)s, %(frequency)s, %(unit)s, %(transform)s, %(source)s,
                    %(description)s, %(calendar)s)
            {conflict}""",
        {**asdict(meta), "frequency": meta.frequency.value},
    ).fetchone()
    return None if row is None else row[0]


def get_series(conn: psycopg.Connection, series_id: str, *, share: bool = False) -> SeriesMeta | None:
    """The series with this id, or None; ``share``: held as ``get_series_many`` holds it."""
    return get_series_many(conn, [series_id], share=share).get(series_id)


def get_series_many(
    conn: psycopg.Connection, series_ids: Sequence[str], *, share: bool = False
) -> dict[str, SeriesMeta]:
    """The series with these ids that exist, by id; ``share``: held ``FOR SHARE`` until the
    transaction ends (none can be deleted or changed under a write)."""
    lock = " FOR SHARE" if share else ""
    with conn.cursor(row_factory=class_row(SeriesMeta)) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM series WHERE id = ANY(%s){lock}", (list(series_ids),)).fetchall()
    return {meta.id: meta for meta in rows}


def list_series(conn: psycopg.Connection) -> list[SeriesMeta]:
    """Every series in the catalog, by id."""
    with conn.cursor(row_factory=class_row(SeriesMeta)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM series ORDER BY id").fetchall()


@dataclass(frozen=True)
class SeriesSummary:
    id: str
    name: str
    frequency: Frequency
    first: datetime | None
    last: datetime | None
    count: int
    vintages: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "frequency", Frequency(self.frequency))


def summarize_series(conn: psycopg.Connection) -> list[SeriesSummary]:
    """Per series: first and last timestamp and the number of observations in the latest data,
    plus how many distinct vintages its rows carry."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT s.id, s.name, s.frequency, o.first, o.last,
                      coalesce(o.count, 0) AS count, coalesce(o.vintages, 0) AS vintages
               FROM series s
               LEFT JOIN LATERAL (
                   SELECT min(ts) AS first, max(ts) AS last, count(DISTINCT ts) AS count,
                          count(DISTINCT vintage) AS vintages
                   FROM all_observations WHERE series_id = s.id) o ON true
               ORDER BY s.id"""
        ).fetchall()
    return [SeriesSummary(**row) for row in rows]


@dataclass(frozen=True)
class SeriesSpan:
    """A series' data in brief: its first and last timestamp and its latest vintage (None
    without data)."""

    first: datetime | None
    last: datetime | None
    known_since: datetime | None


def series_spans(conn: psycopg.Connection) -> dict[str, SeriesSpan]:
    """Every series' span, by id: three index lookups per series (the (series_id, ts, vintage)
    and (series_id, vintage) indexes), whatever the number of observations."""
    rows = conn.execute(
        """SELECT s.id,
                  (SELECT min(ts) FROM all_observations o WHERE o.series_id = s.id),
                  (SELECT max(ts) FROM all_observations o WHERE o.series_id = s.id),
                  (SELECT max(vintage) FROM all_observations o WHERE o.series_id = s.id)
           FROM series s"""
    ).fetchall()
    return {sid: SeriesSpan(first, last, known) for sid, first, last, known in rows}
