"""Field formats shared by the payload parsers and the serving path, without pandas (so a replica
that only serves precomputed forecasts never imports it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

SERIES_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Control characters a text field refuses (NUL among them, which PostgreSQL's text cannot hold);
tab and newline are fine."""
MIN_YEAR, MAX_YEAR = 1700, 2200
EXPECTED_TIMESTAMP = f"expected an ISO 8601 date or date-time (microseconds at most), years {MIN_YEAR}..{MAX_YEAR}"
"""What a field ``parse_timestamp`` refuses is told."""


_BELOW_MICROSECONDS = re.compile(r"[.,][0-9]{7}")


def parse_timestamp(raw: object) -> datetime | None:
    """An ISO 8601 date or date-time in years 1700..2200 as an aware UTC datetime (naive means
    UTC), else None."""
    if not isinstance(raw, str) or not 10 <= len(raw) <= 40 or not raw.isascii() or _BELOW_MICROSECONDS.search(raw):
        return None  # a fraction of over six digits was cut to microseconds: two ticks 800 ns apart were one
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if MIN_YEAR <= parsed.year <= MAX_YEAR else None
