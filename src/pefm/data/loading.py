"""Loading data into the catalog: the bundled datasets, FRED-style CSV files and the FRED API."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psycopg

from pefm.data.bundled import BundledSeries
from pefm.data.fields import EXPECTED_TIMESTAMP, SERIES_ID, parse_timestamp
from pefm.data.fred_csv import ParsedSeries, parse_fred_csv
from pefm.data.frequency import period_end
from pefm.data.validation import ValidationError, check_frequency, check_known_by, check_transform
from pefm.storage.observations import (
    Moment,
    UnknownSeriesError,
    WriteResult,
    _as_utc,
    weekly_anchors,
    write_observations,
)
from pefm.storage.series import SeriesMeta, get_series, upsert_series

if TYPE_CHECKING:
    from pefm.data.fred import FredClient, FredObservations


@dataclass(frozen=True)
class LoadReport:
    series_id: str
    created: bool
    result: WriteResult
    skipped: str | None = None
    """Why the series was not loaded (a series of that id from another source is in the catalog)."""


def load_bundled(
    conn: psycopg.Connection,
    items: Iterable[BundledSeries],
    *,
    on_loaded: Callable[[LoadReport], None] | None = None,
) -> list[LoadReport]:
    """Load bundled series (metadata and values), each in one transaction; idempotent.

    Each value's vintage is the end of its period (see pefm.data.bundled)."""
    reports = []
    for item in items:
        values = item.load()
        if issues := check_frequency(values.index, item.meta.frequency, calendar=item.meta.calendar):
            raise ValidationError(f"bundled series {item.meta.id} is off its frequency", issues)
        frame = pd.DataFrame(
            {
                "series_id": item.meta.id,
                "ts": values.index,
                "value": values.to_numpy(),
                "vintage": period_end(values.index, item.meta.frequency),
            }
        )
        with conn.transaction():
            stored = get_series(conn, item.meta.id, share=True)
            if stored is not None and stored.source != item.meta.source:
                why = f"the catalog's {item.meta.id!r} comes from {stored.source!r}, not {item.meta.source!r}"
                report = LoadReport(item.meta.id, False, WriteResult(0, 0, 0, None), skipped=why)
            else:  # bundled metadata is written once, when the series is created
                created = stored is None and upsert_series(conn, item.meta)
                result = write_observations(conn, frame, source=item.meta.source)
                report = LoadReport(item.meta.id, created, result)
        reports.append(report)
        if on_loaded:
            on_loaded(report)
    return reports


def load_csv(
    conn: psycopg.Connection,
    path: Path,
    *,
    vintage: Moment = None,
    create: SeriesMeta | None = None,
) -> tuple[ParsedSeries, WriteResult]:
    """Parse a FRED-style CSV and write it as one vintage (default now) in one transaction.

    The series must exist, unless ``create`` gives its metadata (its id must match the header).
    Every timestamp must be a period start of the series' frequency and not after the vintage, and
    every value one its transform can take (> 0 under a log), as ingest checks them. On any error
    (raised as ValidationError or UnknownSeriesError) nothing is written."""
    parsed = parse_fred_csv(Path(path).read_bytes())
    if parsed.values.empty:
        raise ValidationError(f"no values in the CSV for {parsed.series_id!r} (all missing)", [])
    known = _vintage(vintage)
    if known is not None and known > datetime.now(UTC):
        # a vintage after now would hide every correction written before it comes (ingest refuses it too)
        raise ValidationError(f"vintage {vintage} is after now: nothing can be known in the future", [])
    with conn.transaction():
        meta = get_series(conn, parsed.series_id, share=True)  # held: no frequency change under the check
        if meta is None:
            if create is None:
                raise UnknownSeriesError([parsed.series_id])
            if create.id != parsed.series_id:
                raise ValueError(f"the file holds {parsed.series_id!r}, not {create.id!r}")
            upsert_series(conn, create)
            meta = create
        _check_fits(parsed, meta, weekly_anchors(conn, {meta.id: meta}).get(meta.id))
        if issues := check_known_by(
            parsed.values.index, known or datetime.now(UTC), meta.frequency, lines=parsed.lines
        ):
            raise ValidationError(f"dates in the CSV are after the vintage ({vintage or 'now'})", issues)
        frame = pd.DataFrame(
            {"series_id": parsed.series_id, "ts": parsed.values.index, "value": parsed.values.to_numpy()}
        )
        result = write_observations(conn, frame, vintage=known, source=f"csv:{Path(path).name}")
    return parsed, result


def load_fred(
    conn: psycopg.Connection, client: FredClient, fred_id: str, *, series_id: str | None = None, vintages: bool = False
) -> tuple[SeriesMeta, FredObservations, WriteResult]:
    """Fetch a FRED series and write it in one
    transaction: as one vintage (now), or with ``vintages`` every ALFRED value at the date it
    became known. The series is created from FRED's metadata when it is new. Nothing is written
    when FRED refuses, or when the dates do not fit the series' frequency."""
    from pefm.data.fred import series_meta

    series_id = (series_id or fred_id).lower()
    if not SERIES_ID.match(series_id):
        raise ValueError(f"{series_id!r} is not a valid series id (lower-case letters, digits, _ . -)")
    info = client.series(fred_id)
    fetched = client.observations(fred_id, vintages=vintages)
    values = fetched.values
    with conn.transaction():
        meta = get_series(conn, series_id, share=True)  # held: no frequency change under the check
        if meta is None:
            meta = series_meta(info, series_id, values["ts"])
            upsert_series(conn, meta)
        dates = pd.DatetimeIndex(values["ts"].drop_duplicates().sort_values())
        anchor = weekly_anchors(conn, {meta.id: meta}).get(meta.id)
        if issues := check_frequency(dates, meta.frequency, calendar=meta.calendar, anchor=anchor):
            raise ValidationError(f"FRED's dates for {fred_id} are not {meta.frequency.label} period starts", issues)
        if issues := check_transform(values["value"].to_numpy(), meta.transform):
            raise ValidationError(f"FRED's values for {fred_id} do not fit the series' transform", issues)
        # a value dated after it became known (a projection, such as CBO's potential GDP to 2034)
        # would be read as known now, and every forecast would start after it
        known = values.groupby("vintage")["ts"] if vintages else [(pd.Timestamp(datetime.now(UTC)), values["ts"])]
        for vintage, stamps in known:
            if issues := check_known_by(pd.DatetimeIndex(stamps), vintage.to_pydatetime(), meta.frequency):
                raise ValidationError(f"FRED's dates for {fred_id} are after the moment they became known", issues)
        result = write_observations(conn, values.assign(series_id=series_id), source=f"fred:{info.get('id', fred_id)}")
    return meta, fetched, result


def _vintage(vintage: Moment) -> datetime | None:
    """A vintage given as text or a moment, as an aware UTC datetime (None: none given); text in
    years 1700..2200, as ingest takes it."""
    if vintage is None:
        return None
    known = parse_timestamp(vintage) if isinstance(vintage, str) else _as_utc(vintage)
    if known is None:
        raise ValidationError(f"vintage {vintage!r}: {EXPECTED_TIMESTAMP}", [])
    return known


def _check_fits(parsed: ParsedSeries, meta: SeriesMeta, anchor: datetime | None) -> None:
    """ValidationError unless every date and value fits the series (``anchor``: ``weekly_anchors``)."""
    lines, calendar = parsed.lines, meta.calendar
    if issues := check_frequency(parsed.values.index, meta.frequency, lines=lines, calendar=calendar, anchor=anchor):
        what = f"{meta.calendar} sessions" if meta.calendar else f"{meta.frequency.label} period starts"
        raise ValidationError(f"dates in the CSV are not {what} for {parsed.series_id!r}", issues)
    if issues := check_transform(parsed.values.to_numpy(), meta.transform, lines=parsed.lines):
        raise ValidationError(f"values in the CSV do not fit the transform of {parsed.series_id!r}", issues)
