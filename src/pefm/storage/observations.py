"""Observations with vintages (table ``observations``): the revision-safe write and as-of reads.

A write never changes a stored row. For every incoming (series, ts, value) at vintage V it
compares the value with the one known at V (the row with the latest vintage <= V):
- none known            -> a new row at V        (``inserted``)
- a different value     -> a new row at V        (``revised``; the old row stays, history intact)
- the same value        -> nothing               (``unchanged``; so reloading is a no-op)
A different value for a (series, ts) that already has a row at exactly V would rewrite
history and is refused whole (VintageConflictError).

Reads "as of" a moment return, for each ts, the value of the latest vintage <= that moment:
the data as it was known then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import psycopg

from pefm.data.frequency import Frequency, with_frequency
from pefm.storage.series import get_series

Moment = datetime | pd.Timestamp | str | None


class UnknownSeriesError(LookupError):
    """Observations or reads for series ids that are not in the catalog."""

    def __init__(self, series_ids: Sequence[str]):
        self.series_ids = list(series_ids)
        super().__init__(f"unknown series: {', '.join(self.series_ids)}")


class VintageConflictError(ValueError):
    """A write would change a value already stored at the same vintage."""

    def __init__(self, rows: list[tuple[str, datetime, datetime, float, float]]):
        self.rows = rows
        shown = "; ".join(
            f"{sid} {ts:%Y-%m-%d} at vintage {v.isoformat()}: stored {old!r}, got {new!r}"
            for sid, ts, v, new, old in rows
        )
        super().__init__(f"values already stored at the same vintage differ: {shown}")


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    revised: int
    unchanged: int
    vintage: datetime | None
    """The vintage of the whole write, or None when rows carried their own vintages."""

    @property
    def written(self) -> int:
        return self.inserted + self.revised


_CLASSIFIED = """
    SELECT i.series_id, i.ts, i.vintage, i.value, k.value AS known_value, k.vintage AS known_vintage
    FROM incoming_obs i
    LEFT JOIN LATERAL (
        SELECT o.value, o.vintage FROM observations o
        WHERE o.series_id = i.series_id AND o.ts = i.ts AND o.vintage <= i.vintage
        ORDER BY o.vintage DESC LIMIT 1) k ON true
"""


def write_observations(
    conn: psycopg.Connection,
    frame: pd.DataFrame,
    *,
    vintage: Moment = None,
    source: str = "",
) -> WriteResult:
    """Merge ``frame`` (columns ``series_id``, ``ts``, ``value``, optionally ``vintage``) into
    observations in one transaction, as described in the module docstring.

    Without a ``vintage`` column every row gets ``vintage`` (default: the transaction's now()).
    Raises UnknownSeriesError or VintageConflictError and writes nothing in that case.
    """
    if frame.empty:
        return WriteResult(0, 0, 0, _as_utc(vintage) if vintage is not None else None)
    rows = pd.DataFrame(
        {
            "series_id": frame["series_id"].astype(str),
            "ts": _utc_naive(frame["ts"]),
            "value": frame["value"].astype("float64"),
        }
    )
    ids = sorted(rows["series_id"].unique())
    with conn.transaction():
        known = {r[0] for r in conn.execute("SELECT id FROM series WHERE id = ANY(%s) FOR SHARE", (ids,))}
        if unknown := [i for i in ids if i not in known]:
            raise UnknownSeriesError(unknown)
        # Writers of the same series take turns, so the classification below stays true.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('pefm.observations:' || id, 0))"
            " FROM unnest(%s::text[]) AS id ORDER BY id",
            (ids,),
        )
        whole_vintage = None
        if "vintage" in frame.columns:
            rows["vintage"] = _utc_naive(frame["vintage"])
        else:
            whole_vintage = _as_utc(vintage) if vintage is not None else _now(conn)
            rows["vintage"] = whole_vintage
        _copy_incoming(conn, rows)
        counts = conn.execute(
            f"""WITH c AS MATERIALIZED ({_CLASSIFIED}),
                conflicts AS (
                    SELECT count(*) AS n FROM c
                    WHERE known_vintage = vintage AND known_value <> value),
                ins AS (
                    INSERT INTO observations (series_id, ts, vintage, value, source)
                    SELECT series_id, ts, vintage, value, %(source)s FROM c
                    WHERE (known_value IS NULL OR known_value <> value)
                      AND (SELECT n FROM conflicts) = 0
                    RETURNING 1)
                SELECT (SELECT n FROM conflicts),
                       count(*) FILTER (WHERE known_value IS NULL),
                       count(*) FILTER (WHERE known_value <> value),
                       count(*) FILTER (WHERE known_value = value)
                FROM c""",
            {"source": source},
        ).fetchone()
        assert counts is not None
        conflicts, inserted, revised, unchanged = counts
        if conflicts:
            bad = conn.execute(
                f"""SELECT series_id, ts, vintage, value, known_value FROM ({_CLASSIFIED}) c
                    WHERE known_vintage = vintage AND known_value <> value
                    ORDER BY series_id, ts LIMIT 10"""
            ).fetchall()
            raise VintageConflictError(bad)
    return WriteResult(inserted, revised, unchanged, whole_vintage)


def _copy_incoming(conn: psycopg.Connection, rows: pd.DataFrame) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp.incoming_obs")
    conn.execute(
        "CREATE TEMP TABLE incoming_obs (series_id text NOT NULL, ts timestamptz NOT NULL,"
        " vintage timestamptz NOT NULL, value double precision NOT NULL) ON COMMIT DROP"
    )
    if rows.duplicated(["series_id", "ts", "vintage"]).any():
        dup = rows[rows.duplicated(["series_id", "ts", "vintage"])].iloc[0]
        raise ValueError(f"duplicate observation {dup.series_id} {dup.ts} in one write")
    with (
        conn.cursor() as cur,
        cur.copy("COPY incoming_obs (series_id, ts, vintage, value) FROM STDIN") as copy,
    ):
        copy.write(
            rows[["series_id", "ts", "vintage", "value"]].to_csv(
                sep="\t",
                header=False,
                index=False,
                date_format="%Y-%m-%d %H:%M:%S.%f+00",
                float_format="%.17g",
            )
        )


def read_series(
    conn: psycopg.Connection,
    series_id: str,
    *,
    as_of: Moment = None,
    start: Moment = None,
    end: Moment = None,
) -> pd.Series:
    """The series as known at ``as_of`` (default: latest), over [start, end], as a float Series
    named by its id with a UTC-naive DatetimeIndex; ``index.freq`` is set when there are no gaps
    and ``attrs["frequency"]`` always holds its Frequency."""
    meta = get_series(conn, series_id)
    if meta is None:
        raise UnknownSeriesError([series_id])
    rows = conn.execute(
        """SELECT DISTINCT ON (ts) ts, value FROM observations
           WHERE series_id = %(id)s AND vintage <= %(as_of)s AND ts >= %(start)s AND ts <= %(end)s
           ORDER BY ts, vintage DESC""",
        {"id": series_id, **_window(as_of, start, end)},
    ).fetchall()
    series = _to_series(rows, series_id)
    series.index = with_frequency(series.index, meta.frequency)
    series.attrs["frequency"] = meta.frequency
    return series


def read_frame(
    conn: psycopg.Connection,
    series_ids: Sequence[str],
    *,
    as_of: Moment = None,
    start: Moment = None,
    end: Moment = None,
) -> pd.DataFrame:
    """Many series as known at ``as_of``, aligned on the union of their timestamps (NaN where a
    series has no value), one column per id in the order given; ``attrs["frequencies"]`` maps
    each id to its Frequency."""
    ids = list(dict.fromkeys(series_ids))
    freqs = {r[0]: Frequency(r[1]) for r in conn.execute("SELECT id, frequency FROM series WHERE id = ANY(%s)", (ids,))}
    if unknown := [i for i in ids if i not in freqs]:
        raise UnknownSeriesError(unknown)
    rows = conn.execute(
        """SELECT DISTINCT ON (series_id, ts) series_id, ts, value FROM observations
           WHERE series_id = ANY(%(ids)s) AND vintage <= %(as_of)s
             AND ts >= %(start)s AND ts <= %(end)s
           ORDER BY series_id, ts, vintage DESC""",
        {"ids": ids, **_window(as_of, start, end)},
    ).fetchall()
    long = pd.DataFrame(rows, columns=["series_id", "ts", "value"])
    long["ts"] = _utc_naive(long["ts"])
    frame = long.pivot(index="ts", columns="series_id", values="value").reindex(columns=ids)
    frame = frame.astype("float64")
    frame.columns.name = None
    if len(set(freqs.values())) == 1:
        frame.index = with_frequency(pd.DatetimeIndex(frame.index), next(iter(freqs.values())))
    frame.attrs["frequencies"] = freqs
    return frame


def _window(as_of: Moment, start: Moment, end: Moment) -> dict[str, object]:
    return {
        "as_of": _as_utc(as_of) if as_of is not None else datetime.max.replace(tzinfo=UTC),
        "start": _as_utc(start) if start is not None else datetime.min.replace(tzinfo=UTC),
        "end": _as_utc(end) if end is not None else datetime.max.replace(tzinfo=UTC),
    }


def _to_series(rows: list[tuple[datetime, float]], name: str) -> pd.Series:
    if not rows:
        return pd.Series([], index=pd.DatetimeIndex([], name="ts"), name=name, dtype="float64")
    ts, values = zip(*rows, strict=True)
    return pd.Series(values, index=pd.DatetimeIndex(_utc_naive(pd.Series(ts)), name="ts"), name=name, dtype="float64")


def _utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as UTC-naive datetime64; naive input is taken to be UTC already."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _as_utc(moment: datetime | pd.Timestamp | str) -> datetime:
    ts = pd.Timestamp(moment)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0].astimezone(UTC)
