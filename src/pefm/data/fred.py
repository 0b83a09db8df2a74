"""FRED and ALFRED (St. Louis Fed) as a source: series metadata, observations and real-time vintages.

``FredClient`` talks to the FRED API (JSON; the API key from ``PEFM_FRED_API_KEY``): ``series``
reads the metadata, ``observations`` the values. With ``vintages=True`` it asks ALFRED for the
whole real-time period (``realtime_start=1776-07-04``, ``realtime_end=9999-12-31``): every value
with the date it became known (``realtime_start``), which PEFM stores as that value's vintage, so
as-of reads and backtests see the data as first published and every revision after. ``.`` marks a
value missing at a vintage; such rows are skipped and counted. Pages of up to 100,000 rows are
followed. 429 and 5xx answers are retried with backoff (honouring ``Retry-After``); a refused key
or an unknown series is a FredError with FRED's own message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd

from pefm.data.frequency import Frequency
from pefm.storage.series import SeriesMeta

API = "https://api.stlouisfed.org/fred"
ALL_TIME = {"realtime_start": "1776-07-04", "realtime_end": "9999-12-31"}
PAGE = 100_000  # FRED's largest `limit` for observations
_FREQUENCIES = {"D": Frequency.DAILY, "W": Frequency.WEEKLY, "M": Frequency.MONTHLY, "Q": Frequency.QUARTERLY}
_FREQUENCIES["A"] = Frequency.ANNUAL


class FredError(RuntimeError):
    """FRED refused a request (bad key, unknown series) or stayed unavailable through the retries."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FredObservations:
    values: pd.DataFrame
    """Columns ``ts`` (period start, UTC-naive), ``value`` and, for vintages, ``vintage``."""
    missing: int
    """Rows FRED gave as ``.`` (no value at that vintage), left out."""


class FredClient:
    def __init__(
        self,
        api_key: str,
        base_url: str = API,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not api_key:
            raise FredError(
                "no FRED API key: set PEFM_FRED_API_KEY (https://fred.stlouisfed.org/docs/api/api_key.html)"
            )
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff, self.sleep = retries, backoff, sleep
        self.client = httpx.Client(timeout=timeout)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """One API call's JSON, retrying rate limits (429), server errors and network failures."""
        query = {**params, "api_key": self.api_key, "file_type": "json"}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.get(f"{self.base_url}/{path}", params=query)
            except httpx.TransportError as exc:
                if last:
                    raise FredError(f"FRED is unreachable: {exc}") from None
                self.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    raise FredError(f"FRED answered {response.status_code}: {_message(response)}", response.status_code)
                self.sleep(_retry_after(response) or self.backoff * 2**attempt)
                continue
            if response.status_code != 200:
                raise FredError(f"FRED refused {path}: {_message(response)}", response.status_code)
            try:
                return response.json()
            except ValueError:
                raise FredError(f"FRED answered {path} with something other than JSON") from None
        raise AssertionError("unreachable")

    def series(self, fred_id: str) -> dict[str, Any]:
        """The series' metadata (FRED's ``seriess[0]``)."""
        body = self.get("series", series_id=fred_id)
        found = body.get("seriess") or []
        if not found:
            raise FredError(f"FRED has no series {fred_id!r}")
        return found[0]

    def observations(self, fred_id: str, *, vintages: bool = False) -> FredObservations:
        """The values (as known today, or with ``vintages`` every real-time value), every page."""
        rows: list[dict[str, str]] = []
        while True:
            body = self.get(
                "series/observations",
                series_id=fred_id,
                limit=PAGE,
                offset=len(rows),
                **(ALL_TIME if vintages else {}),
            )
            page = body.get("observations") or []
            rows += page
            if not page or len(rows) >= int(body.get("count", len(rows))):
                break
        return _frame(rows, vintages)


FRED_TIME_ZONE = "America/Chicago"
"""The time zone of FRED's and ALFRED's dates (the St. Louis Fed's)."""


def _frame(rows: list[dict[str, str]], vintages: bool) -> FredObservations:
    kept = [r for r in rows if r.get("value") != "."]
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([r["date"] for r in kept], format="%Y-%m-%d"),
            "value": pd.to_numeric([r["value"] for r in kept], errors="raise").astype("float64"),
        }
    )
    if vintages:  # known by the end of its realtime_start, a day in FRED's time zone (US Central): at
        # midnight UTC, the evening before, as-of reads saw a release hours before it came out;
        # a release of today is known now, when it is fetched: a vintage still ahead would hide
        # every correction written before it comes
        start = pd.to_datetime([r["realtime_start"] for r in kept], format="%Y-%m-%d")
        end_of_day = (start + pd.Timedelta(days=1)).tz_localize(FRED_TIME_ZONE).tz_convert("UTC")
        now = pd.Timestamp.now(tz="UTC")
        frame["vintage"] = end_of_day.where(end_of_day <= now, now)
    return FredObservations(frame, len(rows) - len(kept))


def series_meta(info: dict[str, Any], series_id: str, dates: pd.Series) -> SeriesMeta:
    """PEFM's metadata for a FRED series stored as ``series_id`` (FRED's daily series that hold
    weekdays only are business daily)."""
    code = str(info.get("frequency_short", "")).upper()
    frequency = _FREQUENCIES.get(code)
    if frequency is None:
        raise FredError(f"FRED series {info.get('id')} is {info.get('frequency')!r}: PEFM stores D, W, M, Q and A")
    if frequency is Frequency.DAILY and len(dates) and (pd.DatetimeIndex(dates).dayofweek < 5).all():
        frequency = Frequency.BUSINESS_DAILY
    adjustment = info.get("seasonal_adjustment_short")
    unit = str(info.get("units", "")) + (f", {adjustment}" if adjustment and adjustment != "NSA" else "")
    return SeriesMeta(
        id=series_id,
        name=str(info.get("title", series_id)),
        frequency=frequency,
        unit=unit,
        source=f"fred:{info.get('id')}",
        description=str(info.get("notes", ""))[:2000],
    )


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error_message") or response.text[:200])
    except ValueError:
        return response.text[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    return min(float(raw), 60.0) if raw.replace(".", "", 1).isdigit() else None
