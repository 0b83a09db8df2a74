"""The real datasets PEFM ships with, loaded offline from registry packages.

- statsmodels ``macrodata``: US quarterly macro data, 1959Q1-2009Q3.
- arch ``arch.data``: S&P 500 and NASDAQ daily adjusted close (1999-2018, on the NYSE's and
  Nasdaq's exchange calendars), core CPI (monthly, 1957-2018), Moody's AAA/BAA yields (monthly,
  1919-2018), WTI crude oil (daily, 1986-2019: a spot price, weekdays without a calendar).

These packages carry no real-time vintages, so each value is stamped as known at the end of its
period (no publication lag, no revisions): as-of reads then see exactly the periods that had ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pefm.data.frequency import Frequency
from pefm.storage.series import SeriesMeta

MACRO_SOURCE = "statsmodels.datasets.macrodata"
CHAINED = "billions of chained 2005 US$, SAAR"


@dataclass(frozen=True)
class BundledSeries:
    meta: SeriesMeta
    load: Callable[[], pd.Series]
    """Values by period start (UTC-naive DatetimeIndex), without missing values."""


def _macrodata(column: str, *, drop_first: bool = False) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import statsmodels.api as sm

        data = sm.datasets.macrodata.load_pandas().data
        quarters = pd.PeriodIndex.from_fields(
            year=data["year"].astype(int), quarter=data["quarter"].astype(int), freq="Q"
        )
        values = pd.Series(
            data[column].to_numpy(dtype="float64"), index=quarters.to_timestamp(how="start"), name=column
        )
        # The first infl (and realint = tbilrate - infl) is a 0.00 placeholder: no prior quarter.
        return values.iloc[1:] if drop_first else values

    return load


def _arch(module: str, column: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import importlib

        data = importlib.import_module(f"arch.data.{module}").load()
        values = data[column].astype("float64").dropna()
        values.index = pd.DatetimeIndex(values.index).normalize()
        return values

    return load


def _macro(
    id_: str, name: str, unit: str, transform: str, description: str, *, drop_first: bool = False
) -> BundledSeries:
    meta = SeriesMeta(
        id=id_,
        name=name,
        frequency=Frequency.QUARTERLY,
        unit=unit,
        transform=transform,
        source=MACRO_SOURCE,
        description=description,
    )
    return BundledSeries(meta, _macrodata(id_, drop_first=drop_first))


def _market(
    id_: str,
    name: str,
    freq: Frequency,
    unit: str,
    transform: str,
    module: str,
    column: str,
    description: str,
    calendar: str = "",
) -> BundledSeries:
    meta = SeriesMeta(
        id=id_,
        name=name,
        frequency=freq,
        unit=unit,
        transform=transform,
        source=f"arch.data.{module}",
        description=description,
        calendar=calendar,
    )
    return BundledSeries(meta, _arch(module, column))


BUNDLED: tuple[BundledSeries, ...] = (
    _macro("realgdp", "Real GDP", CHAINED, "log_diff_ann", "Real gross domestic product"),
    _macro("realcons", "Real consumption", CHAINED, "log_diff_ann", "Real personal consumption expenditures"),
    _macro("realinv", "Real investment", CHAINED, "log_diff_ann", "Real gross private domestic investment"),
    _macro(
        "realgovt",
        "Real government spending",
        CHAINED,
        "log_diff_ann",
        "Real federal consumption expenditures and gross investment",
    ),
    _macro(
        "realdpi",
        "Real disposable income",
        "billions of chained 2005 US$",
        "log_diff_ann",
        "Real private disposable income",
    ),
    _macro(
        "cpi",
        "Consumer price index",
        "index 1982-84=100, SA",
        "log_diff_ann",
        "End-of-quarter CPI for all urban consumers, all items",
    ),
    _macro("m1", "M1 money stock", "billions of US$, SA", "log_diff_ann", "End-of-quarter M1 nominal money stock"),
    _macro(
        "tbilrate",
        "3-month T-bill rate",
        "percent",
        "none",
        "Quarterly average of the monthly 3-month Treasury bill secondary market rate",
    ),
    _macro("unemp", "Unemployment rate", "percent, SA", "none", "Civilian unemployment rate"),
    _macro(
        "infl",
        "Inflation",
        "percent, annualized",
        "none",
        "400 * diff(log cpi); the first quarter's placeholder is dropped",
        drop_first=True,
    ),
    _macro(
        "realint",
        "Real interest rate",
        "percent",
        "none",
        "tbilrate - infl; the first quarter's placeholder is dropped",
        drop_first=True,
    ),
    _market(
        "sp500",
        "S&P 500",
        Frequency.BUSINESS_DAILY,
        "index points",
        "log_return",
        "sp500",
        "Adj Close",
        "S&P 500 index, daily adjusted close",
        calendar="XNYS",  # its 5031 days are exactly the NYSE's sessions of 1999-2018
    ),
    _market(
        "nasdaq",
        "NASDAQ Composite",
        Frequency.BUSINESS_DAILY,
        "index points",
        "log_return",
        "nasdaq",
        "Adj Close",
        "NASDAQ Composite index, daily adjusted close",
        calendar="XNAS",
    ),
    _market(
        "core_cpi",
        "Core CPI",
        Frequency.MONTHLY,
        "index 1982-84=100, SA",
        "log_diff_ann",
        "core_cpi",
        "CPILFESL",
        "CPI for all urban consumers less food and energy (CPILFESL)",
    ),
    _market(
        "aaa",
        "AAA corporate bond yield",
        Frequency.MONTHLY,
        "percent",
        "diff",
        "default",
        "AAA",
        "Moody's seasoned Aaa corporate bond yield",
    ),
    _market(
        "baa",
        "BAA corporate bond yield",
        Frequency.MONTHLY,
        "percent",
        "diff",
        "default",
        "BAA",
        "Moody's seasoned Baa corporate bond yield",
    ),
    _market(
        "wti",
        "WTI crude oil",
        Frequency.BUSINESS_DAILY,
        "US$ per barrel",
        "log_return",
        "wti",
        "DCOILWTICO",
        "West Texas Intermediate spot price, Cushing OK (DCOILWTICO)",
    ),
)


def bundled(ids: list[str] | None = None) -> list[BundledSeries]:
    """The bundled series, all or those named (ValueError names an unknown id)."""
    if not ids:
        return list(BUNDLED)
    by_id = {b.meta.id: b for b in BUNDLED}
    if unknown := [i for i in ids if i not in by_id]:
        raise ValueError(f"not a bundled series: {', '.join(unknown)}; choose from {sorted(by_id)}")
    return [by_id[i] for i in ids]
