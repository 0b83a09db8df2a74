"""JSON observation payloads, as the ingest function accepts them.

One series::

    {"series_id": "gdp", "observations": [{"ts": "2020-01-01", "value": 1.5}], "vintage": "..."}

or many (at most ``MAX_SERIES``), sharing one optional vintage::

    {"series": [{"series_id": "gdp", "observations": [...]}, ...], "vintage": "..."}

The whole payload is checked before anything is returned: every problem is reported with its
JSON path (``field``) and the position of the observation (``index``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from pefm.data import strict_json
from pefm.data.fields import EXPECTED_TIMESTAMP, SERIES_ID, parse_timestamp
from pefm.data.validation import Issue, Issues, ValidationError

_SERIES_KEYS = {"series_id", "observations"}
_OBS_KEYS = {"ts", "value"}
MAX_SERIES = 1000
"""Series in one payload at most: its write takes a database lock for each, from a lock table
the whole server shares (64 a connection by default); 60,000 had filled it."""


@dataclass(frozen=True)
class SeriesPayload:
    """One series' observations from a payload; ``path`` is its JSON path (for error messages).
    Plain arrays, so a streamed observation costs no pandas objects; ``values`` builds them."""

    series_id: str
    stamps: np.ndarray
    """UTC-naive ``datetime64[ns]`` timestamps."""
    numbers: np.ndarray
    """``float64`` values, one per timestamp."""
    path: str
    lines: list[int] | None = None
    """File line of each value, for payloads that came from a CSV file."""

    @classmethod
    def from_series(cls, values: pd.Series, path: str = "", lines: list[int] | None = None) -> SeriesPayload:
        stamps = np.asarray(values.index, dtype="datetime64[ns]")
        return cls(str(values.name), stamps, values.to_numpy("float64"), path, lines)

    def __len__(self) -> int:
        return len(self.stamps)

    @cached_property
    def values(self) -> pd.Series:
        """The observations as a float Series named by the series id, indexed by timestamp."""
        return pd.Series(self.numbers, index=pd.DatetimeIndex(self.stamps), name=self.series_id, dtype="float64")


@dataclass(frozen=True)
class ObservationsPayload:
    series: list[SeriesPayload]
    vintage: datetime | None


def parse_observations_json(body: bytes | str) -> ObservationsPayload:
    """Parse and check an observations payload; ValidationError lists every problem."""
    return observations_from_object(strict_json.loads(body))


def observations_from_object(data: Any) -> ObservationsPayload:
    """Check an already-decoded payload (e.g. a structured CloudEvent's ``data``)."""
    issues = Issues()
    if not isinstance(data, dict):
        raise ValidationError("invalid payload", [Issue(field="body", message="expected a JSON object")])
    vintage = None
    if "vintage" in data:
        vintage = parse_timestamp(data["vintage"])
        if vintage is None:
            issues.append(Issue(field="vintage", message=EXPECTED_TIMESTAMP))
    if "series" in data:
        _extra(data, {"series", "vintage"}, "", issues)
        items = data["series"]
        if not isinstance(items, list) or not items:
            issues.append(Issue(field="series", message="expected a non-empty list of series"))
            items = []
        elif len(items) > MAX_SERIES:
            message = f"{len(items)} series; at most {MAX_SERIES} in one payload: send the others in another"
            issues.append(Issue(field="series", message=message))
            items = []
        entries = [(item, f"series[{i}].") for i, item in enumerate(items)]
    else:
        entries = [(data, "")]
    parsed = [p for item, path in entries if (p := _series(item, path, issues)) is not None]
    seen: dict[str, str] = {}
    for p in parsed:
        if p.series_id in seen:
            issues.append(
                Issue(
                    field=f"{p.path}series_id",
                    message=f"series {p.series_id!r} appears twice (also at {seen[p.series_id]})",
                )
            )
        seen.setdefault(p.series_id, p.path or "top level")
    if issues:
        raise ValidationError("invalid observations payload", issues)
    return ObservationsPayload(series=parsed, vintage=vintage)


def _series(item: Any, path: str, issues: Issues) -> SeriesPayload | None:
    if not isinstance(item, dict):
        issues.append(Issue(field=path.rstrip(".") or "body", message="expected an object"))
        return None
    before = issues.found  # not len(): past the cap, new issues are only counted
    _extra(item, _SERIES_KEYS | ({"vintage"} if not path else set()), path, issues)
    series_id = item.get("series_id")
    if not isinstance(series_id, str) or not SERIES_ID.match(series_id):
        issues.append(
            Issue(field=f"{path}series_id", message="required: a series id (lower case letters, digits, _ . -)")
        )
    observations = item.get("observations")
    if not isinstance(observations, list) or not observations:
        issues.append(Issue(field=f"{path}observations", message="required: a non-empty list"))
        return None
    stamps: list[datetime] = []
    values: list[float] = []
    first: dict[datetime, int] = {}
    for i, obs in enumerate(observations):
        where = f"{path}observations[{i}]"
        if not isinstance(obs, dict):
            issues.append(Issue(index=i, field=where, message="expected an object {ts, value}"))
            continue
        for key in sorted(set(obs) - _OBS_KEYS):
            issues.append(Issue(index=i, field=f"{where}.{key}", message="unexpected field"))
        for key in sorted(_OBS_KEYS - set(obs)):
            issues.append(Issue(index=i, field=f"{where}.{key}", message="required"))
        ts = parse_timestamp(obs.get("ts")) if "ts" in obs else None
        if "ts" in obs and ts is None:
            issues.append(Issue(index=i, field=f"{where}.ts", message=EXPECTED_TIMESTAMP))
        value = obs.get("value")
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if "value" in obs and not (numeric and math.isfinite(value)):
            issues.append(Issue(index=i, field=f"{where}.value", message="expected a finite number"))
        if ts is not None and ts in first:
            issues.append(
                Issue(
                    index=i,
                    field=f"{where}.ts",
                    message=f"duplicate timestamp {obs['ts']} (also at index {first[ts]})",
                )
            )
        elif ts is not None:
            first[ts] = i
        if ts is not None and numeric and math.isfinite(value):
            stamps.append(ts)
            values.append(float(value))
    if issues.found > before:
        return None
    naive = np.array([stamp.replace(tzinfo=None) for stamp in stamps], dtype="datetime64[ns]")
    return SeriesPayload(series_id, naive, np.array(values, dtype="float64"), path)


def _extra(data: dict, allowed: set[str], path: str, issues: list[Issue]) -> None:
    for key in sorted(set(data) - allowed):
        issues.append(Issue(field=f"{path}{key}", message="unexpected field"))
