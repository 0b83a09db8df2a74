"""Transforms that make economic series roughly stationary for modelling.

``series.transform`` names the one suited to each series; values are always stored untransformed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pefm.data.frequency import Frequency


def _none(y: pd.Series, freq: Frequency) -> pd.Series:
    return y.copy()


def _diff(y: pd.Series, freq: Frequency) -> pd.Series:
    return y.diff().iloc[1:]


def _log_diff_ann(y: pd.Series, freq: Frequency) -> pd.Series:
    """Annualized log growth in percent: 100 * periods_per_year * diff(log y) (400x for quarterly)."""
    import numpy as np

    return (100.0 * freq.periods_per_year * np.log(y).diff()).iloc[1:]


def _log_return(y: pd.Series, freq: Frequency) -> pd.Series:
    """Period log return in percent: 100 * diff(log y)."""
    import numpy as np

    return (100.0 * np.log(y).diff()).iloc[1:]


class TransformError(ValueError):
    """Stored values the series' transform cannot take (e.g. a value <= 0 under a log transform)."""


RETURN_TRANSFORMS = frozenset({"log_return"})
"""Transforms whose model-space values are returns (trading checks apply; GARCH forecasts them)."""

INVERTIBLE = frozenset({"none", "diff", "log_diff_ann", "log_return"})
"""Transforms with an inverse back to the stored units (``forecasting.levels.invert``)."""
SPACES = ("level", "model")
"""Where a forecast is read: the stored units (level) or the transformed values models forecast."""


def model_space_unit(unit: str, transform: str) -> str:
    """The unit of the model-space values of a series stored in ``unit``."""
    return {
        "none": unit,
        "diff": f"change in {unit}" if unit else "change",
        "log_diff_ann": "percent, annualized log growth",
        "log_return": "percent, log return",
    }.get(transform, f"{transform} of {unit}")


TRANSFORMS: dict[str, Callable[[pd.Series, Frequency], pd.Series]] = {
    "none": _none,
    "diff": _diff,
    "log_diff_ann": _log_diff_ann,
    "log_return": _log_return,
}


def positive_only(transform: str) -> bool:
    """Whether the transform takes logarithms, so the stored values must be > 0."""
    return transform.startswith("log")


def apply_transform(y: pd.Series, transform: str, freq: Frequency, *, keep_newest: bool = False) -> pd.Series:
    """``y`` transformed by the named transform; log transforms need a strictly positive series. A
    change across a missing period (of daily to annual data) is NaN; ``keep_newest``: the newest
    value's change stays even so, overstated as if one period's, where forecasts start from it (a
    served model's cutoff, the level its forecasts are anchored on and what-if histories joining
    it must all be the newest stored value)."""
    try:
        fn = TRANSFORMS[transform]
    except KeyError:
        raise ValueError(f"unknown transform {transform!r}; expected one of {sorted(TRANSFORMS)}") from None
    if positive_only(transform) and (y <= 0).any():
        raise TransformError(f"transform {transform!r} needs positive values; {y.name} has some <= 0")
    out = fn(y, freq)
    if transform != "none":  # a change across a missing period is not a one-period change
        apart = _one_period_apart(y.index, freq)
        if keep_newest and len(apart):
            apart[-1] = True
        out = out.where(apart)
    out.name = y.name
    out.attrs = dict(y.attrs)
    return out


def _one_period_apart(index: pd.Index, freq: Frequency) -> np.ndarray:
    """For each timestamp after the first, whether it is the period right after the one before
    (always, where gaps are the calendar's: business days' holidays, intraday nights, ticks)."""
    import numpy as np
    import pandas as pd

    from pefm.data.frequency import Frequency, period_end

    regular = (Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY, Frequency.QUARTERLY, Frequency.ANNUAL)
    if freq not in regular or not isinstance(index, pd.DatetimeIndex):
        return np.ones(max(len(index) - 1, 0), dtype=bool)
    return np.asarray(period_end(index[:-1], freq) == index[1:])
