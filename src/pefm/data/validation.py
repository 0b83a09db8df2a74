"""Validation errors that name where the input went wrong (line or index, and field).

numpy and pandas load with the first check that needs them: the serving path reports its errors
through this module without them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pefm.data.frequency import Frequency


@dataclass(frozen=True)
class Issue:
    """One problem in an input: where (1-based ``line`` of a file, or 0-based ``index`` of a
    JSON list), which ``field``, and what is wrong."""

    field: str
    message: str
    line: int | None = None
    index: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else None
        if self.index is not None:
            where = f"item {self.index}"
        return f"{where}, {self.field}: {self.message}" if where else f"{self.field}: {self.message}"


MAX_DETAILS = 100


class Issues(list):
    """Issues as a parser finds them: the first MAX_DETAILS kept, the rest only counted (``more``),
    so a file of a million bad lines costs a counter, not a million objects."""

    def __init__(self) -> None:
        super().__init__()
        self.more = 0
        self.fields: set[str] = set()
        """The fields of every issue found, the counted ones too."""

    @property
    def found(self) -> int:
        """How many were found: kept and counted."""
        return len(self) + self.more

    def append(self, issue: Issue) -> None:
        self.fields.add(issue.field)
        if len(self) < MAX_DETAILS:
            super().append(issue)
        else:
            self.more += 1


class ValidationError(ValueError):
    """The input was rejected as a whole; ``details`` lists the problems found, up to MAX_DETAILS,
    and ``more`` counts the rest."""

    def __init__(self, message: str, details: list[Issue]):
        self.message = message
        self.details = list(details[:MAX_DETAILS])
        self.more = getattr(details, "more", 0) + max(0, len(details) - MAX_DETAILS)
        self.fields = getattr(details, "fields", None) or {issue.field for issue in details}
        self.truncated = self.more > 0
        lines = [message, *(f"  {issue}" for issue in self.details)]
        if self.truncated:
            lines.append(f"  ... and {self.more} more")
        super().__init__("\n".join(lines))

    @property
    def malformed(self) -> bool:
        """Whether the input could not be read at all (400): text that does not decode, JSON that
        does not parse, a CSV header or row that is not one. Values read but wrong are invalid (422)."""
        if self.message.startswith("malformed"):
            return True
        return self.message.startswith("invalid CSV") and bool(self.fields & {"header", "row"})

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: ``{error, details: [{line|index, field, message}]}``, with
        ``truncated: true`` and ``more: N`` when N further problems were left out."""
        body: dict[str, object] = {"error": self.message, "details": [i.to_dict() for i in self.details]}
        if self.truncated:
            body |= {"truncated": True, "more": self.more}
        return body


def check_frequency(
    index: pd.DatetimeIndex | np.ndarray,
    freq: Frequency,
    *,
    lines: Sequence[int] | None = None,
    calendar: str = "",
    anchor: object = None,
) -> Issues:
    """An Issue (field ``ts``/``date``) for each timestamp that is not a period start of ``freq``
    (with an exchange ``calendar``: a session of it; weekly: on the weekday of ``anchor``, a
    stored timestamp of the series, when it has one), located by file line when ``lines`` is
    given, else by position (the first MAX_DETAILS; the rest counted)."""
    import numpy as np
    import pandas as pd

    from pefm.data.frequency import Frequency, off_frequency

    bad = np.flatnonzero(off_frequency(index, freq, calendar, anchor))
    what = f"{calendar} session" if calendar else f"{freq.label} period start"
    if anchor is not None and freq is Frequency.WEEKLY:
        what += f" on the series' weekday ({pd.Timestamp(anchor):%A})"
    return _located(
        bad,
        lines,
        "date" if lines is not None else "ts",
        lambda pos: f"{pd.Timestamp(index[pos]):%Y-%m-%d %H:%M} is not a {what}",
    )


def check_transform(values: pd.Series | np.ndarray, transform: str, *, lines: Sequence[int] | None = None) -> Issues:
    """An Issue (field ``value``) for each value the series' transform cannot take: <= 0 under a
    log transform. Located like ``check_frequency``."""
    import numpy as np

    from pefm.data.transforms import positive_only

    if not positive_only(transform):
        return Issues()
    message = f"must be > 0: the series' transform ({transform}) takes its logarithm"
    return _located(np.flatnonzero(np.asarray(values) <= 0), lines, "value", lambda pos: message)


AHEAD_OF_UTC = timedelta(hours=14)
"""How far a local date runs ahead of UTC's at most (UTC+14): a value dated by a day that began
there may be known up to this long before that day begins in UTC."""


def check_known_by(
    index: pd.DatetimeIndex | np.ndarray,
    vintage: datetime,
    freq: Frequency,
    *,
    lines: Sequence[int] | None = None,
    skew: timedelta = timedelta(0),
) -> Issues:
    """An Issue (field ``ts``/``date``, as ``check_frequency``) for each UTC-naive timestamp of a
    series of ``freq`` after ``vintage`` (an aware datetime) by more than ``skew`` (the clocks'
    allowance) and, for values dated by a day or longer, ``AHEAD_OF_UTC`` (bars and ticks are
    stamped at UTC instants): a value cannot be known before its period begins, and stored so it
    would be read as known then (as-of reads, every backtest window from then on). Compared in
    microseconds, whose range covers any date."""
    import numpy as np
    import pandas as pd

    ahead = timedelta(0) if freq.intraday else AHEAD_OF_UTC
    known = (vintage + ahead + skew).astimezone(UTC).replace(tzinfo=None)
    stamps = np.asarray(index, dtype="datetime64[ns]")
    vintage_text = f"{vintage.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
    message = f"is after the vintage ({vintage_text} UTC): no value is known before its period begins"
    return _located(
        np.flatnonzero(stamps.astype("datetime64[us]") > np.datetime64(known, "us")),
        lines,
        "date" if lines is not None else "ts",
        lambda pos: f"{pd.Timestamp(stamps[pos]):%Y-%m-%d %H:%M:%S} {message}",
    )


def _located(bad: np.ndarray, lines: Sequence[int] | None, field: str, message) -> Issues:
    issues = Issues()
    for pos in bad[:MAX_DETAILS]:
        where = {"line": int(lines[pos])} if lines is not None else {"index": int(pos)}
        issues.append(Issue(field=field, message=message(pos), **where))
    issues.more = max(0, len(bad) - MAX_DETAILS)
    return issues
