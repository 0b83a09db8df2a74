"""FRED-style CSV: a header ``DATE,<SERIES_ID>`` (or ``observation_date,<SERIES_ID>``), one
``YYYY-MM-DD,<value>`` row per period, ``.`` (or an empty field) for a missing value.

The same parser serves ``pefm data load-csv`` and the ingest function. It reads the whole file
before returning and reports every problem with its line number and field, so a caller either
gets all the rows or writes nothing.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from pefm.data.fields import MAX_YEAR, MIN_YEAR, SERIES_ID
from pefm.data.validation import Issue, Issues, ValidationError

DATE_HEADERS = ("date", "observation_date")
# \Z, not $ (which also matches before a final newline); [0-9], not \d (which takes any script's digits)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
MISSING = {".", ""}
_ODD_NUMBER = re.compile(r"[^0-9eE+\-.]")  # what float() takes but _NUMBER does not: _, inf, nan, hex
_NOT_CLEAN = re.compile(r"[^0-9eE+\-.,\r\n]")  # clean rows are dates, numbers, commas and line ends
# Dates PEFM stores: wide for economic history, inside what pandas' nanosecond timestamps hold.


@dataclass(frozen=True)
class ParsedSeries:
    """One series read from a file: its id (lower-cased), values by date, the file line of each
    value, and how many rows were missing values."""

    series_id: str
    values: pd.Series
    lines: list[int]
    missing: int


def normalize_series_id(raw: str) -> str | None:
    """The slug for a series id (FRED ids are upper case), or None when it cannot be one."""
    if not raw.isascii():  # lower() and strip() had made the Kelvin sign a k, a no-break space nothing
        return None
    candidate = raw.strip().lower()
    return candidate if SERIES_ID.match(candidate) else None


def parse_fred_csv(data: str | bytes) -> ParsedSeries:
    """Parse a FRED-style CSV; raise ValidationError naming each bad line and field."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                "malformed CSV: not UTF-8 text",
                [Issue(field="body", message=f"invalid byte at offset {exc.start}")],
            ) from None
    data = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(data, newline=""))
    rows = _rows(reader)
    header = next(rows, (1, None))[1]
    if isinstance(header, csv.Error):
        raise ValidationError("invalid CSV", [Issue(line=1, field="header", message=str(header))])
    series_id = _check_header(header)
    if (fast := _parse_clean(data, series_id)) is not None:
        return fast

    issues = Issues()
    dates: list[date] = []
    values: list[float] = []
    lines: list[int] = []
    first_seen: dict[date, int] = {}
    missing = 0
    for line, row in rows:
        if isinstance(row, csv.Error):
            issues.append(Issue(line=line, field="row", message=str(row)))
            continue
        if not row or row == [""]:
            continue  # blank line
        if len(row) != 2:
            issues.append(Issue(line=line, field="row", message=f"expected 2 fields, got {len(row)}"))
            continue
        raw_date, raw_value = row[0].strip(), row[1].strip()
        day = _parse_date(raw_date)
        if day is None:
            issues.append(
                Issue(
                    line=line,
                    field="date",
                    message=f"{raw_date[:40]!r} is not a YYYY-MM-DD date in {MIN_YEAR}..{MAX_YEAR}",
                )
            )
        elif day in first_seen:
            issues.append(
                Issue(
                    line=line,
                    field="date",
                    message=f"duplicate date {raw_date} (first on line {first_seen[day]})",
                )
            )
        else:
            first_seen[day] = line
        if raw_value in MISSING:
            missing += 1
            continue
        if not _NUMBER.match(raw_value) or not math.isfinite(float(raw_value)):
            issues.append(Issue(line=line, field="value", message=f"{raw_value[:40]!r} is not a finite number"))
            continue
        if day is not None:
            dates.append(day)
            values.append(float(raw_value))
            lines.append(line)
    if header is not None and not first_seen and not issues:
        issues.append(Issue(line=2, field="body", message="no data rows after the header"))
    if issues:
        raise ValidationError(f"invalid CSV for series {series_id!r}", issues)
    index = pd.DatetimeIndex(pd.to_datetime(dates), name="ts")
    series = pd.Series(values, index=index, name=series_id, dtype="float64")
    return ParsedSeries(series_id=series_id, values=series, lines=lines, missing=missing)


def _rows(reader) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """Each row with its line number; a row the reader cannot read (a field over its 128 KiB
    limit, a NUL in a quoted field) as its error, and reading goes on."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, exc
            continue
        yield reader.line_num, row


def _parse_clean(data: str, series_id: str) -> ParsedSeries | None:
    """The same result as the line-by-line parser for a file without any problem, read at
    C speed by pandas; None as soon as anything is unusual (the careful parser then reports it)."""
    if "\r" in data.replace("\r\n", ""):  # a lone CR ends a row for the csv module, not here: a header
        return None  # ending in one took the first data row with it, and the counts still agreed
    body = data.split("\n", 1)[1] if "\n" in data else ""
    body = body.replace("\r\n", "\n").rstrip("\n")
    if _NOT_CLEAN.search(body):
        return None  # a character no clean row has (a NUL among them: pandas' C reader ends a field there)
    if not body or "\n\n" in body or body.count(",") != body.count("\n") + 1:
        return None
    try:
        frame = pd.read_csv(
            io.StringIO(body),
            header=None,
            names=["date", "value"],
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError):
        return None
    raw_dates, raw_values = frame["date"].to_numpy(dtype="U"), frame["value"].to_numpy(dtype="U")
    if (np.char.str_len(raw_dates) != 10).any() or pd.Series(raw_dates).duplicated().any():
        return None
    dates = pd.to_datetime(pd.Series(raw_dates), format="%Y-%m-%d", errors="coerce")
    if dates.isna().any() or not dates.dt.year.between(MIN_YEAR, MAX_YEAR).all():
        return None
    missing = np.isin(raw_values, list(MISSING))
    if _ODD_NUMBER.search("".join(raw_values[~missing])):
        return None
    try:  # numpy rounds a decimal text to the nearest double, as float() does; pandas' to_numeric
        # was 1-2 ulp off for about 1 in 6 full-precision texts (the same file stored other
        # numbers by the slow path, and every reload of it was a revision)
        present = raw_values[~missing].astype("float64")
    except ValueError:
        return None
    if not np.isfinite(present).all():
        return None
    index = pd.DatetimeIndex(dates[~missing], name="ts")
    values = pd.Series(present, index=index, name=series_id, dtype="float64")
    return ParsedSeries(series_id, values, (np.flatnonzero(~missing) + 2).tolist(), int(missing.sum()))


def _check_header(header: list[str] | None) -> str:
    expected = "expected 'DATE,<SERIES_ID>' or 'observation_date,<SERIES_ID>'"
    if not header:
        raise ValidationError("invalid CSV", [Issue(line=1, field="header", message=f"empty file; {expected}")])
    if len(header) != 2:
        raise ValidationError(
            "invalid CSV",
            [Issue(line=1, field="header", message=f"{len(header)} columns; {expected}")],
        )
    if header[0].strip().lower() not in DATE_HEADERS:
        raise ValidationError(
            "invalid CSV",
            [Issue(line=1, field="header", message=f"first column is {header[0][:40]!r}; {expected}")],
        )
    series_id = normalize_series_id(header[1])
    if series_id is None:
        raise ValidationError(
            "invalid CSV",
            [
                Issue(
                    line=1,
                    field="header",
                    message=f"{header[1][:70]!r} is not a series id (letters, digits, _ . -; at most 64)",
                )
            ],
        )
    return series_id


def _parse_date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return day if MIN_YEAR <= day.year <= MAX_YEAR else None
