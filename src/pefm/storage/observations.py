"""Observations with vintages (table ``observations``; intraday series' in
``intraday_observations``, the same rules): the revision-safe write and as-of reads.

A write never changes a stored row. For every incoming (series, ts, value) at vintage V it
compares the value with the one known at V (the row with the latest vintage <= V):
- none known            -> a new row at V        (``inserted``)
- a different value     -> a new row at V        (``revised``; the old row stays, history intact)
- the same value        -> nothing               (``unchanged``; so reloading is a no-op)
A different value for a (series, ts) that already has a row at exactly V would rewrite
history and is refused whole (VintageConflictError).

Reads "as of" a moment return, for each ts, the value of the latest vintage <= that moment:
the data as it was known then. A write that changed data announces its series on
``OBSERVATIONS_CHANNEL`` when it commits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import psycopg

from pefm.data.calendars import calendar_attrs
from pefm.data.frequency import Frequency, with_frequency
from pefm.data.validation import MAX_DETAILS
from pefm.storage import pg_binary
from pefm.storage.channels import OBSERVATIONS_CHANNEL, announce
from pefm.storage.series import SeriesMeta, get_series

Moment = datetime | pd.Timestamp | str | None


class UnknownSeriesError(LookupError):
    """Observations or reads for series ids that are not in the catalog."""

    def __init__(self, series_ids: Sequence[str]):
        self.series_ids = list(series_ids)
        super().__init__(f"unknown series: {', '.join(self.series_ids)}")


class VintageConflictError(ValueError):
    """A write would change values already stored at the same vintage: the first MAX_DETAILS of
    them (``rows``) and how many more (``more``); the message names the count and the first."""

    def __init__(self, rows: list[tuple[str, datetime, datetime, float, float]], more: int = 0):
        self.rows, self.more = rows[:MAX_DETAILS], more + max(0, len(rows) - MAX_DETAILS)
        sid, ts, v, new, old = rows[0]
        n = len(self.rows) + self.more
        super().__init__(
            f"values already stored at the same vintage differ at {n} observation{'s' if n > 1 else ''}, the first "
            f"{sid} {stamp_text(ts)} at vintage {v.isoformat()}: stored {old!r}, got {new!r}"
        )


def stamp_text(ts: datetime) -> str:
    """A stored timestamp as a message names it: the date for a period that starts at midnight
    (daily and longer), the full UTC time for a bar or a tick."""
    ts = _as_utc(ts)
    return f"{ts:%Y-%m-%d}" if ts == ts.replace(hour=0, minute=0, second=0, microsecond=0) else ts.isoformat()


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


# Each incoming row next to the value known at its vintage: the row before it, by vintage, among
# the stored rows of its date and the write's own (a write may carry several vintages of one date,
# ALFRED's, and one may return to a value an earlier vintage of the same write moved away from);
# a stored row sorts before an incoming one of the same vintage, which is then a conflict or
# unchanged. One union and one sort, so a large upload costs no per-row index probes.
_CLASSIFIED = """
    SELECT series_id, ts, vintage, value, known_value, known_vintage FROM (
        SELECT ids.id AS series_id, c.ts, c.vintage, c.value, c.incoming,
               lag(c.value) OVER w AS known_value, lag(c.vintage) OVER w AS known_vintage
        FROM (
            SELECT i.k, i.ts, i.vintage, i.value, true AS incoming FROM incoming_obs i
            UNION ALL
            SELECT d.k, o.ts, o.vintage, o.value, false
            FROM (SELECT DISTINCT k, ts FROM incoming_obs) d
            JOIN unnest(%(ids)s::text[]) WITH ORDINALITY AS ids (id, k) ON ids.k = d.k
            JOIN {table} o ON o.series_id = ids.id AND o.ts = d.ts
        ) c
        JOIN unnest(%(ids)s::text[]) WITH ORDINALITY AS ids (id, k) ON ids.k = c.k
        WINDOW w AS (PARTITION BY c.k, c.ts ORDER BY c.vintage, c.incoming)
    ) classified
    WHERE incoming
"""


def table_of(frequency: Frequency | str) -> str:
    """The table holding a series' observations: intraday series have their own (0014)."""
    return "intraday_observations" if Frequency(frequency).intraday else "observations"


def write_observations(
    conn: psycopg.Connection,
    frame: pd.DataFrame,
    *,
    vintage: Moment = None,
    source: str = "",
) -> WriteResult:
    """Merge ``frame`` (columns ``series_id``, ``ts``, ``value``, optionally ``vintage``) into
    observations in one transaction, as described in the module docstring.

    Without a ``vintage`` column every row gets ``vintage`` (default: the moment the series' locks
    were granted).
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
        tables = {
            sid: table_of(freq)
            for sid, freq in conn.execute("SELECT id, frequency FROM series WHERE id = ANY(%s) FOR SHARE", (ids,))
        }
        if unknown := [i for i in ids if i not in tables]:
            raise UnknownSeriesError(unknown)
        # Writers of the same series take turns, so the classification below stays true.
        take_turn(conn, ids)
        stamp, whole_vintage = _now(conn), None  # ingested_at: once the locks are held, as vintages
        if "vintage" in frame.columns:
            rows["vintage"] = _utc_naive(frame["vintage"])
        else:
            whole_vintage = _as_utc(vintage) if vintage is not None else stamp
            rows["vintage"] = whole_vintage
        if rows.duplicated(["series_id", "ts", "vintage"]).any():
            dup = rows[rows.duplicated(["series_id", "ts", "vintage"])].iloc[0]
            raise ValueError(f"duplicate observation {dup.series_id} {dup.ts} in one write")
        inserted = revised = unchanged = 0
        for table in sorted(set(tables.values())):
            part_ids = [i for i in ids if tables[i] == table]
            part = rows if len(part_ids) == len(ids) else rows[rows["series_id"].isin(part_ids)]
            counts = _merge(conn, table, part, part_ids, source, stamp)
            inserted, revised, unchanged = inserted + counts[0], revised + counts[1], unchanged + counts[2]
        if inserted or revised:
            announce(conn, ids)
    return WriteResult(inserted, revised, unchanged, whole_vintage)


def _merge(
    conn: psycopg.Connection, table: str, rows: pd.DataFrame, ids: list[str], source: str, stamp: datetime
) -> tuple[int, ...]:
    """Merge the rows of series ``ids`` into ``table``, ingested at ``stamp``: (inserted, revised,
    unchanged), or VintageConflictError with nothing written."""
    if not _overlaps(conn, table, rows, ids):  # nothing stored in the span: classified in pandas
        if not rows.duplicated(["series_id", "ts"]).any():  # one vintage per date: every row is new
            _copy_into(conn, table, rows, source, stamp)
            return len(rows), 0, 0
        ordered = rows.sort_values(["series_id", "ts", "vintage"])  # as _CLASSIFIED's window
        known = ordered.groupby(["series_id", "ts"], sort=False)["value"].shift()
        kept = known.isna() | (known != ordered["value"])  # a vintage repeating the last value: unchanged
        _copy_into(conn, table, ordered[kept], source, stamp)
        return int(known.isna().sum()), int((kept & known.notna()).sum()), int((~kept).sum())
    conn.execute("SET LOCAL work_mem = '64MB'")  # the classification sort stays in memory
    _copy_incoming(conn, rows, ids)
    classified = _CLASSIFIED.format(table=table)
    counts = conn.execute(
        f"""WITH c AS MATERIALIZED ({classified}),
            conflicts AS (
                SELECT count(*) AS n FROM c
                WHERE known_vintage = vintage AND known_value <> value),
            ins AS (
                INSERT INTO {table} (series_id, ts, vintage, value, source, ingested_at)
                SELECT series_id, ts, vintage, value, %(source)s, %(stamp)s FROM c
                WHERE (known_value IS NULL OR known_value <> value)
                  AND (SELECT n FROM conflicts) = 0
                RETURNING 1)
            SELECT (SELECT n FROM conflicts),
                   count(*) FILTER (WHERE known_value IS NULL),
                   count(*) FILTER (WHERE known_value <> value),
                   count(*) FILTER (WHERE known_value = value)
            FROM c""",
        {"source": source, "ids": ids, "stamp": stamp},
    ).fetchone()
    assert counts is not None
    if counts[0]:
        bad = conn.execute(
            f"""SELECT series_id, ts, vintage, value, known_value FROM ({classified}) c
                WHERE known_vintage = vintage AND known_value <> value
                ORDER BY series_id, ts LIMIT %(limit)s""",
            {"ids": ids, "limit": MAX_DETAILS},
        ).fetchall()
        raise VintageConflictError(bad, more=counts[0] - len(bad))
    return counts[1:]


@dataclass(frozen=True)
class Event:
    """One small write (a streamed event): its rows, its vintage (None: the moment its group's locks
    were granted) and where it came from."""

    series_ids: Sequence[str]
    stamps: Sequence[datetime]
    """Aware UTC datetimes, one per row."""
    values: Sequence[float]
    vintage: datetime | None = None
    source: str = ""


# A group of events merged in one statement: each row next to the value known at its vintage
# (one index probe per row: the group is small; no temp table), an event with a conflicting row
# left out whole, the rest inserted where they change data, the changed series announced.
_MERGE_EVENTS = f"""
    WITH at AS MATERIALIZED (SELECT clock_timestamp() AS now),
    i AS (
        SELECT i.*, coalesce(i.given, (SELECT now FROM at)) AS vintage
        FROM unnest(%(k)s::int[], %(sid)s::text[], %(ts)s::timestamptz[], %(given)s::timestamptz[],
                    %(value)s::float8[], %(source)s::text[], %(intraday)s::bool[])
             AS i (k, series_id, ts, given, value, source, intraday)),
    c AS MATERIALIZED (
        SELECT i.*, o.value AS known_value, o.vintage AS known_vintage
        FROM i LEFT JOIN LATERAL (
            (SELECT value, vintage FROM observations o
             WHERE NOT i.intraday AND o.series_id = i.series_id AND o.ts = i.ts AND o.vintage <= i.vintage
             ORDER BY o.vintage DESC LIMIT 1)
            UNION ALL
            (SELECT value, vintage FROM intraday_observations o
             WHERE i.intraday AND o.series_id = i.series_id AND o.ts = i.ts AND o.vintage <= i.vintage
             ORDER BY o.vintage DESC LIMIT 1)) o ON true),
    conflicted AS (SELECT DISTINCT k FROM c WHERE known_vintage = vintage AND known_value <> value),
    kept AS (
        SELECT * FROM c
        WHERE (known_value IS NULL OR known_value <> value) AND k NOT IN (SELECT k FROM conflicted)),
    ins AS (
        INSERT INTO observations (series_id, ts, vintage, value, source, ingested_at)
        SELECT series_id, ts, vintage, value, source, (SELECT now FROM at) FROM kept WHERE NOT intraday
        RETURNING series_id),
    ins_intraday AS (
        INSERT INTO intraday_observations (series_id, ts, vintage, value, source, ingested_at)
        SELECT series_id, ts, vintage, value, source, (SELECT now FROM at) FROM kept WHERE intraday
        RETURNING series_id),
    announced AS (
        SELECT pg_notify('{OBSERVATIONS_CHANNEL}',
                         CASE WHEN octet_length(p) > 7900 THEN '{{"series": null}}' ELSE p END)
        FROM (SELECT jsonb_build_object('series', array_agg(DISTINCT series_id ORDER BY series_id))::text AS p
              FROM (SELECT series_id FROM ins UNION ALL SELECT series_id FROM ins_intraday) changed
              HAVING count(*) > 0) changed)
    SELECT k, series_id, ts, vintage, value, known_value, known_vintage, (SELECT now FROM at),
           (SELECT count(*) FROM announced)
    FROM c ORDER BY k
"""


def write_events(
    conn: psycopg.Connection, events: Sequence[Event], intraday: Collection[str] = ()
) -> list[WriteResult | VintageConflictError]:
    """Write a group of small events: the group commit of streamed writes.

    Each event is merged as ``write_observations`` merges a frame (inserted, revised, unchanged;
    the same vintage rules) and gets its own result, or a VintageConflictError, in which case
    none of its rows is written and its group-mates are unaffected. Runs in the caller's
    transaction, which has checked that the series exist (holding them ``FOR SHARE``) and that
    no two events share a (series, ts): each row is classified against what is stored, not
    against its group-mates, and knows which series are ``intraday`` (their rows go to their own
    table). Two statements, sent together (one round trip).
    """
    params: dict[str, list] = {"k": [], "sid": [], "ts": [], "given": [], "value": [], "source": [], "intraday": []}
    for k, event in enumerate(events):
        for series_id, stamp, number in zip(event.series_ids, event.stamps, event.values, strict=True):
            row = (k, series_id, stamp, event.vintage, float(number), event.source, series_id in intraday)
            for column, item in zip(params.values(), row, strict=True):
                column.append(item)
    with conn.pipeline():
        take_turn(conn, params["sid"])  # writers of the same series take turns: the classification stays true
        rows = conn.execute(_MERGE_EVENTS, params).fetchall()
    counts = [[0, 0, 0] for _ in events]
    conflicts: list[list[tuple]] = [[] for _ in events]
    now = rows[0][7].astimezone(UTC) if rows else None
    for k, series_id, ts, vintage, value, known_value, known_vintage, _, _ in rows:
        if known_value is None:
            counts[k][0] += 1
        elif known_vintage == vintage and known_value != value:
            conflicts[k].append((series_id, ts, vintage, value, known_value))
        else:
            counts[k][1 if known_value != value else 2] += 1
    return [
        VintageConflictError(sorted(conflicts[k], key=lambda row: row[:2]))  # as _merge's: by series, date
        if conflicts[k]
        else WriteResult(*counts[k], event.vintage or now)
        for k, event in enumerate(events)
    ]


def _copy_incoming(conn: psycopg.Connection, rows: pd.DataFrame, ids: list[str]) -> None:
    """COPY the rows into a temp table in binary (series as 1-based positions in ``ids``)."""
    conn.execute("DROP TABLE IF EXISTS pg_temp.incoming_obs")
    conn.execute(
        "CREATE TEMP TABLE incoming_obs (k integer NOT NULL, ts timestamptz NOT NULL,"
        " vintage timestamptz NOT NULL, value double precision NOT NULL) ON COMMIT DROP"
    )
    columns = [
        (">i4", pd.Categorical(rows["series_id"], categories=ids).codes + 1),
        (">i8", pg_binary.microseconds(rows["ts"])),
        (">i8", pg_binary.microseconds(rows["vintage"])),
        (">f8", rows["value"].to_numpy("float64")),
    ]
    with conn.cursor() as cur, cur.copy("COPY incoming_obs (k, ts, vintage, value) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(pg_binary.HEADER + pg_binary.block(len(rows), columns) + pg_binary.TRAILER)
    conn.execute("ANALYZE pg_temp.incoming_obs")


def _overlaps(conn: psycopg.Connection, table: str, rows: pd.DataFrame, ids: list[str]) -> bool:
    """Whether any stored observation of these series falls inside the rows' time span."""
    row = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE series_id = ANY(%s) AND ts BETWEEN %s AND %s)",
        (ids, rows["ts"].min().tz_localize("UTC").to_pydatetime(), rows["ts"].max().tz_localize("UTC").to_pydatetime()),
    ).fetchone()
    return bool(row and row[0])


def _copy_into(conn: psycopg.Connection, table: str, rows: pd.DataFrame, source: str, stamp: datetime) -> None:
    """COPY new rows straight into ``table``, in binary, one block per series."""
    text = source.encode()
    ingested = pg_binary.microseconds(pd.Series([stamp.astimezone(UTC).replace(tzinfo=None)]))[0]
    fields = "series_id, ts, vintage, value, source, ingested_at"
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({fields}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(pg_binary.HEADER)
        for series_id, group in rows.groupby("series_id", sort=False):
            sid = str(series_id).encode()
            columns = [
                (f"S{len(sid)}", sid),
                (">i8", pg_binary.microseconds(group["ts"])),
                (">i8", pg_binary.microseconds(group["vintage"])),
                (">f8", group["value"].to_numpy("float64")),
                (f"S{len(text)}", text),
                (">i8", ingested),
            ]
            copy.write(pg_binary.block(len(group), columns))
        copy.write(pg_binary.TRAILER)


def read_series(
    conn: psycopg.Connection,
    series_id: str,
    *,
    as_of: Moment = None,
    start: Moment = None,
    end: Moment = None,
) -> pd.Series:
    """The series as known at ``as_of`` (default: latest), over [start, end], as a float Series
    named by its id with a UTC-naive DatetimeIndex; ``index.freq`` is set when there are no gaps,
    ``attrs["frequency"]`` always holds its Frequency and ``attrs["calendar"]`` its exchange
    calendar ('' for none)."""
    meta = get_series(conn, series_id)
    if meta is None:
        raise UnknownSeriesError([series_id])
    rows = conn.execute(
        f"""SELECT DISTINCT ON (ts) ts, value FROM {table_of(meta.frequency)}
            WHERE series_id = %(id)s AND vintage <= %(as_of)s AND ts >= %(start)s AND ts <= %(end)s
            ORDER BY ts, vintage DESC""",
        {"id": series_id, **_window(as_of, start, end)},
    ).fetchall()
    series = _to_series(rows, series_id)
    series.index = with_frequency(series.index, meta.frequency)
    series.attrs["frequency"] = meta.frequency
    series.attrs["calendar"] = meta.calendar
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
    each id to its Frequency, ``attrs["calendars"]`` to its exchange calendar ('' for none), and
    ``attrs["calendar"]`` is their exchange calendar if they share one."""
    ids = list(dict.fromkeys(series_ids))
    freqs, calendars = {}, {}
    for sid, freq, calendar in conn.execute("SELECT id, frequency, calendar FROM series WHERE id = ANY(%s)", (ids,)):
        freqs[sid], calendars[sid] = Frequency(freq), calendar
    if unknown := [i for i in ids if i not in freqs]:
        raise UnknownSeriesError(unknown)
    tables = {table_of(freq) for freq in freqs.values()}
    rows = conn.execute(
        f"""SELECT DISTINCT ON (series_id, ts) series_id, ts, value
            FROM {tables.pop() if len(tables) == 1 else "all_observations"}
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
    frame.attrs |= calendar_attrs({sid: calendars[sid] for sid in ids})
    return frame


def recent_start(conn: psycopg.Connection, series_id: str, as_of: Moment, points: int) -> datetime | None:
    """The first of the last ``points`` timestamps of the series known at ``as_of``: where a read of
    its recent past starts (a chart's, of a series of millions of minute bars); None when it has
    fewer (read it whole). An index scan of ``points`` entries."""
    row = conn.execute("SELECT frequency FROM series WHERE id = %s", (series_id,)).fetchone()
    if row is None:
        return None
    found = conn.execute(
        f"""SELECT min(ts) FROM (SELECT DISTINCT ts FROM {table_of(row[0])}
                                 WHERE series_id = %s AND vintage <= %s ORDER BY ts DESC LIMIT %s) AS recent
            HAVING count(*) = %s""",
        (series_id, _window(as_of, None, None)["as_of"], points, points),
    ).fetchone()
    return found[0] if found else None


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


def take_turn(conn: psycopg.Connection, series_ids: Collection[str]) -> None:
    """The writers' turn on these series, held until the transaction ends: every lock of the
    transaction in one statement, in id order, so two writers never wait on each other (taken
    again by the same transaction, it is held already)."""
    _series_locks(conn, "pg_advisory_xact_lock", series_ids)


_SERIES_LOCK = "hashtextextended('pefm.observations:' || id, 0)"
"""The key of a series' writers' lock (``id``: its series id in the query)."""


def try_turn(conn: psycopg.Connection, series_ids: Collection[str]) -> set[str]:
    """``take_turn`` without waiting: the series among these that another transaction is writing
    (or reading in ``settled``); the turn on each of the others is held until the transaction ends."""
    rows = conn.execute(
        f"SELECT id FROM unnest(%s::text[]) AS id WHERE NOT pg_try_advisory_xact_lock({_SERIES_LOCK})",
        (sorted(set(series_ids)),),
    ).fetchall()
    return {row[0] for row in rows}


def _series_locks(conn: psycopg.Connection, call: str, series_ids: Collection[str]) -> None:
    """``call`` (an advisory lock function) on each series' writers' lock, in one statement, in id order."""
    conn.execute(
        f"SELECT {call}({_SERIES_LOCK}) FROM unnest(%s::text[]) AS id ORDER BY id",
        (sorted(set(series_ids)),),
    )


def weekly_anchors(conn: psycopg.Connection, metas: Mapping[str, SeriesMeta]) -> dict[str, datetime]:
    """A stored timestamp (UTC-naive) of each weekly series among ``metas`` that has data: its
    later points fall on the same weekday (``check_frequency``'s ``anchor``). No query when none
    is weekly. Read in the writers' turn on every series of ``metas`` (``take_turn``), which the
    write that follows keeps: two first loads of a series on different weekdays, each finding
    no anchor, had both been stored."""
    weekly = sorted(sid for sid, meta in metas.items() if meta.frequency is Frequency.WEEKLY)
    if not weekly:
        return {}
    take_turn(conn, metas)
    rows = conn.execute(
        """SELECT s.id, (SELECT o.ts FROM observations o WHERE o.series_id = s.id LIMIT 1)
           FROM unnest(%s::text[]) AS s(id)""",
        (weekly,),
    ).fetchall()
    return {sid: ts.astimezone(UTC).replace(tzinfo=None) for sid, ts in rows if ts is not None}


def last_changed(conn: psycopg.Connection, series_ids: Sequence[str], as_of: Moment) -> datetime | None:
    """When what was known of these series at ``as_of`` last changed: the latest write of a
    value with a vintage up to it (later than ``as_of`` itself only where a write was backdated);
    None when nothing was known then."""
    row = conn.execute(
        "SELECT max(ingested_at) FROM all_observations WHERE series_id = ANY(%s) AND vintage <= %s",
        (list(series_ids), _as_utc(as_of)),
    ).fetchone()
    return row[0]


def known_alike(
    conn: psycopg.Connection, series_ids: Sequence[str], one: datetime, other: datetime, *, since: datetime
) -> bool:
    """Whether the series were known alike at both moments, as they were when something was made
    from them (``since``): nothing got a vintage in between, and nothing known by the later moment
    was written after ``since`` (a backdated vintage changes what was known, after the fact).
    Intraday series included (their own table).

    Never prepared: a replica runs this on every kept-forecast lookup, and psycopg prepares a
    statement from its sixth run on a connection, after which PostgreSQL may plan it for any
    parameters. Planned so, the EXISTS looks cheap as a sequential scan (rows of unknown series
    would match early) and, finding nothing, reads every observation of every series; planned
    with its values it reads the series' index."""
    changed = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM all_observations WHERE series_id = ANY(%(ids)s) AND vintage <= %(hi)s
                            AND (vintage > %(lo)s OR ingested_at > %(since)s))""",
        {"ids": list(series_ids), "lo": min(one, other), "hi": max(one, other), "since": since},
        prepare=False,
    ).fetchone()[0]
    return not changed


def settled(conn: psycopg.Connection, series_ids: Sequence[str]) -> None:
    """Wait until the writes of these series under way have committed. A write holds its series'
    locks from before its vintage is stamped until it commits, so a read after this sees every
    write whose vintage is up to now: an as-of read of a recent moment, kept for good, does not
    miss one that was stamped but not yet committed."""
    _series_locks(conn, "pg_advisory_xact_lock_shared", series_ids)


def known_now(conn: psycopg.Connection, series_ids: Sequence[str]) -> datetime:
    """The database's present moment, once every write of these series stamped before it has
    committed: a read as of it misses none (a write stamps its vintage once it holds its series'
    locks, so one stamped earlier holds them now). Unlike ``settled``, the locks are let go at once:
    a reader that takes minutes (training) holds no writer back."""
    moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    # Each lock let go in the row that took it (left to right), before the next is taken: one
    # held at a time, and a statement that fails midway (a timeout, a cancel) leaves none held
    # on the pooled connection, where session locks outlive the transaction.
    conn.execute(
        f"""SELECT pg_advisory_lock_shared(h), pg_advisory_unlock_shared(h)
           FROM (SELECT {_SERIES_LOCK} AS h
                 FROM unnest(%s::text[]) AS id ORDER BY id) AS locks""",
        (sorted(set(series_ids)),),
    )
    return moment


def _now(conn: psycopg.Connection) -> datetime:
    """The moment itself, not the transaction's start: taken once the series' locks are held, so
    that a write's vintage follows every vintage written before it (a transaction begun earlier,
    but slower to the lock, would otherwise commit an older vintage after a newer one)."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0].astimezone(UTC)
