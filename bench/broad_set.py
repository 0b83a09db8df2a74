"""The broad accuracy set: 37 real series of five frequencies, all shipped inside installed packages.

Nothing is downloaded: every series comes from statsmodels' ``sm.datasets``, ``arch.data``,
statsforecast's bundled AirPassengers or plotly's bundled ``stocks`` table. Each series is put
through one of PEFM's own transforms (``pefm.data.transforms.apply_transform``), so the benchmark
is scored in PEFM's model space, and carries the season length statsforecast's models get
(4 quarterly, 12 monthly; 1 for return-like series, business-daily and annual data).

Dates are period starts, as PEFM stores them: monthly values dated mid-month or month-end are
re-stamped to the month start, quarterly ones to the quarter start, annual ones to January 1;
business-daily series keep their trading days (holidays stay gaps); weekly series keep one fixed
weekday (plotly's stocks are dated Mondays). Series longer than ``CAP`` points after their
transform keep their last ``CAP`` points (1,000 for business-daily data, about four years; 600
for monthly data, 50 years), so that a refit at every one of the benchmark's origins stays cheap.

The table below IS the set (``BROAD_SET`` is parsed from it; ``LOADERS`` gives each id its data).

| id | source | freq | transform | season | why this transform |
| --- | --- | --- | --- | --- | --- |
| realgdp | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth is the quantity forecast |
| realcons | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth |
| realinv | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth |
| realgovt | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth |
| realdpi | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth |
| m1 | sm macrodata | Q | log_diff_ann | 4 | trending nominal stock: annualized growth |
| pop | sm macrodata | Q | log_diff_ann | 4 | trending level: annualized growth (a smooth, persistent series) |
| tbilrate | sm macrodata | Q | none | 4 | a rate, already stationary-ish; PEFM's catalog keeps it in levels |
| unemp | sm macrodata | Q | none | 4 | a rate, bounded; PEFM's catalog keeps it in levels |
| infl | sm macrodata | Q | none | 4 | already a growth rate (first placeholder quarter dropped) |
| realint | sm macrodata | Q | none | 4 | a real rate (first placeholder quarter dropped) |
| de_infl | sm interest_inflation | Q | none | 4 | German deflator inflation (Dp, quarterly log change): a growth rate |
| de_rate | sm interest_inflation | Q | diff | 4 | German long-term rate (R): near unit root, forecast its change |
| core_cpi | arch core_cpi | M | log_diff_ann | 12 | trending price index: annualized inflation |
| aaa | arch default | M | diff | 12 | near-unit-root yield: its monthly change (PEFM's catalog) |
| baa | arch default | M | diff | 12 | near-unit-root yield: its monthly change (PEFM's catalog) |
| brent_m | arch crude | M | log_return | 1 | oil price (monthly average): its log return |
| wti_m | arch crude | M | log_return | 1 | oil price (monthly average): its log return |
| mkt_rf | arch frenchdata | M | none | 1 | excess market return in percent: already a return |
| smb | arch frenchdata | M | none | 1 | size factor return in percent: already a return |
| hml | arch frenchdata | M | none | 1 | value factor return in percent: already a return |
| rf | arch frenchdata | M | none | 12 | one-month T-bill return: a persistent rate, kept in levels |
| elnino | sm elnino | M | none | 12 | sea surface temperature: stationary with a strong annual cycle |
| co2 | sm co2 | M | diff | 12 | Mauna Loa CO2 by month (3 gaps interpolated): differenced trend, cycle kept |
| air_passengers | statsforecast | M | log_diff_ann | 12 | trending, multiplicative seasonality: log growth |
| goog | plotly stocks | W | log_return | 1 | weekly price (normalized): its log return |
| aapl | plotly stocks | W | log_return | 1 | weekly price: its log return |
| amzn | plotly stocks | W | log_return | 1 | weekly price: its log return |
| fb | plotly stocks | W | log_return | 1 | weekly price: its log return |
| nflx | plotly stocks | W | log_return | 1 | weekly price: its log return |
| msft | plotly stocks | W | log_return | 1 | weekly price: its log return |
| sp500 | arch sp500 | B | log_return | 1 | index level: daily log return (PEFM's catalog) |
| nasdaq | arch nasdaq | B | log_return | 1 | index level: daily log return (PEFM's catalog) |
| wti | arch wti | B | log_return | 1 | spot oil price: daily log return (PEFM's catalog) |
| vix | arch vix | B | none | 1 | implied volatility: a mean-reverting level |
| sunspots | sm sunspots | A | none | 1 | yearly sunspot number: stationary, with an irregular ~11-year cycle |
| nile | sm nile | A | none | 1 | yearly Nile flow volume: stationary-ish level |

Left out on purpose: statsmodels ``cpi`` (its growth is ``infl``), ``danish_data`` (55 quarters,
too short for 24 windows of 8 steps after the ensemble's own 20-point validation), ``copper``
(25 years), the arch ``nasdaq``/``sp500`` volumes (not economic quantities PEFM forecasts). No
calendar-daily (``D``) series ships in these packages, so the set has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pefm.data.frequency import Frequency, off_frequency, parse_frequency, period_end, with_frequency
from pefm.data.transforms import TRANSFORMS, apply_transform
from pefm.data.validation import check_frequency, check_transform

CAP: dict[Frequency, int] = {Frequency.BUSINESS_DAILY: 1000, Frequency.DAILY: 1000, Frequency.MONTHLY: 600}
"""Points kept (the last ones, after the transform) of series longer than this."""


@dataclass(frozen=True)
class BroadSeries:
    """One series of the broad set: where it comes from and how it is modelled."""

    id: str
    source: str
    frequency: Frequency
    transform: str
    season_length: int
    why: str
    load: Callable[[], pd.Series]
    """The raw (untransformed) values by period start, without missing values."""
    note: str = ""
    """A warning to print with the series (a ``--series`` file's gap: what of the series is kept)."""

    def series(self) -> pd.Series:
        """The model-space series: transformed, capped, period starts, ``attrs["frequency"]`` set."""
        raw = self.load().astype("float64").dropna().sort_index()
        raw.name = self.id
        bad = off_frequency(raw.index, self.frequency)
        if bad.any():
            raise ValueError(f"{self.id}: {int(bad.sum())} timestamps are not {self.frequency.label} period starts")
        if not raw.index.is_unique:
            raise ValueError(f"{self.id}: duplicate timestamps")
        out = apply_transform(raw, self.transform, self.frequency)
        out = out.dropna()  # a change across a missing period is not observed
        cap = CAP.get(self.frequency)
        if cap and len(out) > cap:
            out = out.iloc[-cap:]
        out.index = with_frequency(pd.DatetimeIndex(out.index, name=None), self.frequency)
        out.attrs = {"frequency": self.frequency}
        return out


# -- loaders -----------------------------------------------------------------------------------


def _quarter_starts(year: pd.Series, quarter: pd.Series) -> pd.DatetimeIndex:
    return pd.PeriodIndex.from_fields(year=year.astype(int), quarter=quarter.astype(int), freq="Q").to_timestamp()


def _macrodata(column: str, drop_first: bool = False) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import statsmodels.api as sm

        d = sm.datasets.macrodata.load_pandas().data
        values = pd.Series(d[column].to_numpy(float), index=_quarter_starts(d["year"], d["quarter"]))
        return values.iloc[1:] if drop_first else values  # infl/realint start with a 0.00 placeholder

    return load


def _interest_inflation(column: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import statsmodels.api as sm

        d = sm.datasets.interest_inflation.load_pandas().data
        return pd.Series(d[column].to_numpy(float), index=_quarter_starts(d["year"], d["quarter"]))

    return load


def _month_start(index) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index).to_period("M").to_timestamp()


def _arch(module: str, column: str, *, monthly: bool = False) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import importlib

        d = importlib.import_module(f"arch.data.{module}").load()
        values = d[column].astype("float64").dropna()
        values.index = _month_start(values.index) if monthly else pd.DatetimeIndex(values.index).normalize()
        return values

    return load


def _french(column: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import arch.data.frenchdata

        d = arch.data.frenchdata.load()
        # the index parses wrongly (YYYYMM integers read as nanoseconds): rebuild it from the integers
        yyyymm = pd.DatetimeIndex(d.index).asi8
        index = pd.to_datetime({"year": yyyymm // 100, "month": yyyymm % 100, "day": 1})
        return pd.Series(d[column].to_numpy(float), index=pd.DatetimeIndex(index))

    return load


def _elnino() -> pd.Series:
    import statsmodels.api as sm

    d = sm.datasets.elnino.load_pandas().data
    months = d.columns[1:]  # JAN..DEC, one row a year
    index = pd.to_datetime(
        {"year": np.repeat(d["YEAR"].astype(int).to_numpy(), 12), "month": np.tile(np.arange(1, 13), len(d)), "day": 1}
    )
    return pd.Series(d[months].to_numpy(float).ravel(), index=pd.DatetimeIndex(index))


def _co2_monthly() -> pd.Series:
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.groupby(_month_start(weekly.index)).mean()
    return monthly.asfreq("MS").interpolate().dropna()  # three months without a reading: interpolated


def _air_passengers() -> pd.Series:
    from statsforecast.utils import AirPassengersDF

    return pd.Series(AirPassengersDF["y"].to_numpy(float), index=_month_start(AirPassengersDF["ds"]))


def _stock(column: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import plotly.data

        d = plotly.data.stocks()
        return pd.Series(d[column].to_numpy(float), index=pd.DatetimeIndex(d["date"]))

    return load


def _annual(dataset: str, year: str, column: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import statsmodels.api as sm

        d = getattr(sm.datasets, dataset).load_pandas().data
        index = pd.to_datetime({"year": d[year].astype(int), "month": 1, "day": 1})
        return pd.Series(d[column].to_numpy(float), index=pd.DatetimeIndex(index))

    return load


# -- the set: the docstring's table, each id with its loader ---------------------------------------

LOADERS: dict[str, Callable[[], pd.Series]] = {
    "realgdp": _macrodata("realgdp"),
    "realcons": _macrodata("realcons"),
    "realinv": _macrodata("realinv"),
    "realgovt": _macrodata("realgovt"),
    "realdpi": _macrodata("realdpi"),
    "m1": _macrodata("m1"),
    "pop": _macrodata("pop"),
    "tbilrate": _macrodata("tbilrate"),
    "unemp": _macrodata("unemp"),
    "infl": _macrodata("infl", drop_first=True),
    "realint": _macrodata("realint", drop_first=True),
    "de_infl": _interest_inflation("Dp"),
    "de_rate": _interest_inflation("R"),
    "core_cpi": _arch("core_cpi", "CPILFESL"),
    "aaa": _arch("default", "AAA"),
    "baa": _arch("default", "BAA"),
    "brent_m": _arch("crude", "Brent", monthly=True),
    "wti_m": _arch("crude", "WTI", monthly=True),
    "mkt_rf": _french("Mkt-RF"),
    "smb": _french("SMB"),
    "hml": _french("HML"),
    "rf": _french("RF"),
    "elnino": _elnino,
    "co2": _co2_monthly,
    "air_passengers": _air_passengers,
    "goog": _stock("GOOG"),
    "aapl": _stock("AAPL"),
    "amzn": _stock("AMZN"),
    "fb": _stock("FB"),
    "nflx": _stock("NFLX"),
    "msft": _stock("MSFT"),
    "sp500": _arch("sp500", "Adj Close"),
    "nasdaq": _arch("nasdaq", "Adj Close"),
    "wti": _arch("wti", "DCOILWTICO"),
    "vix": _arch("vix", "vix"),
    "sunspots": _annual("sunspots", "YEAR", "SUNACTIVITY"),
    "nile": _annual("nile", "year", "volume"),
}


def _parse_table(doc: str) -> tuple[BroadSeries, ...]:
    """The entries of the module docstring's table (one source of truth for what is documented)."""
    out = []
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("id", "---"):
            continue
        id_, source, freq, transform, season, why = cells
        if transform not in TRANSFORMS:
            raise RuntimeError(f"{id_}: {transform!r} is not a PEFM transform")
        out.append(BroadSeries(id_, source, Frequency(freq), transform, int(season), why, LOADERS[id_]))
    if sorted(e.id for e in out) != sorted(LOADERS):
        raise RuntimeError("the docstring's table and LOADERS name different series")
    return tuple(out)


BROAD_SET: tuple[BroadSeries, ...] = _parse_table(__doc__ or "")

QUICK_IDS = ("realgdp", "unemp", "core_cpi", "elnino", "goog", "sp500", "vix", "nile")
"""A few series of every frequency for ``--quick`` smoke runs."""


def broad_set(ids: tuple[str, ...] | None = None) -> list[BroadSeries]:
    """The broad set's entries, all or those named (ValueError for an unknown id)."""
    if ids is None:
        return list(BROAD_SET)
    by_id = {s.id: s for s in BROAD_SET}
    if unknown := [i for i in ids if i not in by_id]:
        raise ValueError(f"not in the broad set: {', '.join(unknown)}")
    return [by_id[i] for i in ids]


def frames_by_frequency(entries: list[BroadSeries]) -> dict[Frequency, pd.DataFrame]:
    """The model-space series grouped into one frame per frequency, described as ``load_panel``
    describes a panel (``attrs["frequencies"]``, ``attrs["transforms"]``); NaN where a series of
    the frame has no value."""
    out: dict[Frequency, pd.DataFrame] = {}
    for freq in Frequency:
        members = [e for e in entries if e.frequency is freq]
        if not members:
            continue
        frame = pd.concat({e.id: e.series() for e in members}, axis=1).sort_index()
        frame.index = with_frequency(pd.DatetimeIndex(frame.index), freq)
        frame.attrs = {
            "frequencies": {e.id: freq for e in members},
            "transforms": {e.id: e.transform for e in members},
        }
        out[freq] = frame
    return out


# -- further series, from a file ------------------------------------------------------------------

SERIES_COLUMNS = ("series_id", "ds", "value", "frequency")
"""The columns a ``--series`` file must have; ``transform`` (default ``none``) and
``season_length`` (default 4 quarterly, 12 monthly, 1 otherwise) are optional."""

CSV_FREQUENCIES = (
    Frequency.QUARTERLY,
    Frequency.MONTHLY,
    Frequency.WEEKLY,
    Frequency.BUSINESS_DAILY,
    Frequency.DAILY,
    Frequency.ANNUAL,
)
"""The frequencies a ``--series`` file may hold (those the broad set's protocol handles)."""

SEASONAL = (Frequency.QUARTERLY, Frequency.MONTHLY)
"""Frequencies whose default season length is the periods in a year (others default to 1)."""


_PER_SERIES = ("frequency", "transform", "season_length")


def series_from_csv(path: Path) -> list[BroadSeries]:
    """Further series for the benchmark, from a long CSV (one row per observation; see
    ``SERIES_COLUMNS``). Dates are period starts of the series' frequency; rows with an empty
    value are skipped. A series with a gap (an empty value, or no row for a period) keeps only
    its last unbroken stretch, and says so in its ``note``: statsforecast is handed a series by
    position and PEFM's backtest works by date, so across a gap the two would score different
    targets, and seasonal models would see the values after it out of phase. Business-daily
    series are exempt: a missing weekday reads as a holiday, counted by position in both.
    ValueError names the file, the line and the column of the first problem."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a CSV pandas can read ({exc})") from None
    if missing := [c for c in SERIES_COLUMNS if c not in frame.columns]:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(SERIES_COLUMNS)}")
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    frame["line"] = np.arange(2, len(frame) + 2)  # line 1 is the header
    for column in ("transform", "season_length"):
        frame[column] = frame.get(column, "")
    frame["transform"] = frame["transform"].replace("", "none")
    return [_csv_entry(path, series_id, rows) for series_id, rows in frame.groupby("series_id", sort=False)]


def _csv_entry(path: Path, series_id: str, rows: pd.DataFrame) -> BroadSeries:
    def fail(line: int, column: str, message: str) -> ValueError:
        return ValueError(f"{path}, line {line}, column {column}: {message}")

    first = int(rows["line"].iloc[0])
    if not series_id.strip():
        raise fail(first, "series_id", "empty series id")
    for column in _PER_SERIES:
        if (differs := rows[column] != rows[column].iloc[0]).any():
            line = int(rows.loc[differs, "line"].iloc[0])
            raise fail(line, column, f"{series_id} has {rows[column].iloc[0]!r} on line {first}; one value a series")
    try:
        freq = parse_frequency(rows["frequency"].iloc[0])
    except ValueError as exc:
        raise fail(first, "frequency", str(exc)) from None
    if freq not in CSV_FREQUENCIES:
        raise fail(
            first,
            "frequency",
            f"{freq.label} series are not benchmarked; expected one of " + ", ".join(f.value for f in CSV_FREQUENCIES),
        )
    transform = rows["transform"].iloc[0]
    if transform not in TRANSFORMS:
        raise fail(first, "transform", f"unknown transform {transform!r}; expected one of {', '.join(TRANSFORMS)}")
    season = rows["season_length"].iloc[0] or str(freq.periods_per_year if freq in SEASONAL else 1)
    if not (season.isascii() and season.isdigit() and int(season) >= 1):
        raise fail(first, "season_length", f"{season!r} is not a whole number >= 1")
    empty = rows[rows["value"] == ""]
    rows = rows[rows["value"] != ""]
    if rows.empty:
        raise fail(first, "value", f"{series_id} has no values")
    values = pd.to_numeric(rows["value"], errors="coerce")
    if (bad := values.isna() | ~np.isfinite(values)).any():
        line = int(rows.loc[bad, "line"].iloc[0])
        raise fail(line, "value", f"{rows.loc[bad, 'value'].iloc[0]!r} is not a finite number")
    stamps = _dates(rows["ds"])
    if (bad := stamps.isna()).any():
        line = int(rows.loc[bad, "line"].iloc[0])
        raise fail(line, "ds", f"{rows.loc[bad, 'ds'].iloc[0]!r} is not a date (YYYY-MM-DD)")
    index, lines = pd.DatetimeIndex(stamps), rows["line"].to_numpy()
    for column, issues in (
        ("ds", check_frequency(index, freq, lines=lines)),
        ("value", check_transform(values, transform, lines=lines)),
    ):
        if issues:
            raise fail(issues[0].line, column, issues[0].message)
    if (dup := index.duplicated()).any():
        raise fail(int(lines[dup][0]), "ds", f"{index[dup][0]:%Y-%m-%d} appears twice in {series_id}")
    raw = pd.Series(values.to_numpy(float), index=index).sort_index()
    lines = pd.Series(lines, index=index).sort_index().to_numpy()
    start, note = _last_stretch(series_id, freq, raw.index, lines, empty)
    raw = raw.iloc[start:]
    return BroadSeries(series_id, path.name, freq, transform, int(season), "from " + path.name, lambda: raw, note)


def _dates(ds: pd.Series) -> pd.Series:
    """A CSV's ``ds`` column as UTC-naive timestamps (NaT where it is not a date)."""
    return pd.to_datetime(ds, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)


def _last_stretch(
    series_id: str, freq: Frequency, index: pd.DatetimeIndex, lines: np.ndarray, empty: pd.DataFrame
) -> tuple[int, str]:
    """Where the last unbroken run of periods starts in ``index`` (sorted; ``lines`` are its rows'
    file lines, ``empty`` the series' rows with no value), and a warning naming the last gap
    ("" when there is none)."""
    if freq is Frequency.BUSINESS_DAILY:
        return 0, ""  # a missing weekday is read as a holiday: both harnesses count sessions
    breaks = np.flatnonzero(period_end(index[:-1], freq) != index[1:]) + 1
    if not len(breaks):
        return 0, ""
    start = int(breaks[-1])
    before, after = index[start - 1], index[start]
    dated = _dates(empty["ds"])  # an empty row's date only names the gap: NaT is not checked
    inside = empty[(dated > before) & (dated < after)]
    if len(inside):
        where = f"line {int(inside['line'].iloc[0])} has no value"
    else:
        missing = period_end(index[start - 1 : start], freq)[0]
        where = f"no row for {missing:%Y-%m-%d} (between lines {lines[start - 1]} and {lines[start]})"
    count = f"{len(breaks)} gaps, the last: " if len(breaks) > 1 else ""
    kept = f"{after:%Y-%m-%d}..{index[-1]:%Y-%m-%d}, {len(index) - start} of {len(index)} values"
    return start, (
        f"{series_id}: {count}{where}; only its last unbroken stretch is benchmarked, {kept} (from line {lines[start]})"
    )


if __name__ == "__main__":
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "source", "freq", "transform", "season", "points", "first", "last", title="broad set")
    for entry in BROAD_SET:
        s = entry.series()
        table.add_row(
            entry.id,
            entry.source,
            entry.frequency.value,
            entry.transform,
            str(entry.season_length),
            str(len(s)),
            f"{s.index[0]:%Y-%m-%d}",
            f"{s.index[-1]:%Y-%m-%d}",
        )
    Console(width=160).print(table)
