"""Loading data into the catalog: the bundled datasets and FRED-style CSV files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg

from pefm.data.bundled import BundledSeries
from pefm.data.fred_csv import ParsedSeries, parse_fred_csv
from pefm.data.frequency import Frequency, period_end
from pefm.data.validation import ValidationError, check_frequency
from pefm.storage.observations import Moment, UnknownSeriesError, WriteResult, write_observations
from pefm.storage.series import SeriesMeta, get_series, upsert_series


@dataclass(frozen=True)
class LoadReport:
    series_id: str
    created: bool
    result: WriteResult


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
        if issues := check_frequency(values.index, item.meta.frequency):
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
            created = upsert_series(conn, item.meta)
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
    Every timestamp must be a period start of the series' frequency. On any error (raised as
    ValidationError or UnknownSeriesError) nothing is written."""
    parsed = parse_fred_csv(Path(path).read_bytes())
    with conn.transaction():
        meta = get_series(conn, parsed.series_id)
        if meta is None:
            if create is None:
                raise UnknownSeriesError([parsed.series_id])
            if create.id != parsed.series_id:
                raise ValueError(f"the file holds {parsed.series_id!r}, not {create.id!r}")
            upsert_series(conn, create)
            meta = create
        _check_on_frequency(parsed, meta.frequency)
        frame = pd.DataFrame(
            {"series_id": parsed.series_id, "ts": parsed.values.index, "value": parsed.values.to_numpy()}
        )
        result = write_observations(conn, frame, vintage=vintage, source=f"csv:{Path(path).name}")
    return parsed, result


def _check_on_frequency(parsed: ParsedSeries, freq: Frequency) -> None:
    if issues := check_frequency(parsed.values.index, freq, lines=parsed.lines):
        raise ValidationError(f"dates in the CSV are not {freq.label} period starts for {parsed.series_id!r}", issues)
