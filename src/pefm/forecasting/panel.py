"""The modelling panel: stored series, each put through its catalog transform, side by side."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg

from pefm.data.calendars import calendar_attrs
from pefm.data.frequency import Frequency, period_end
from pefm.data.transforms import TransformError, apply_transform
from pefm.storage.observations import Moment, UnknownSeriesError, read_frame
from pefm.storage.series import get_series

# The default panel: annualized log growth (400 x diff log) of real GDP, consumption, investment
# and M1, plus inflation, unemployment, the T-bill rate and the real rate, as levels.
MACRO_PANEL = ("realgdp", "realcons", "realinv", "m1", "infl", "unemp", "tbilrate", "realint")
# Daily log returns (percent) of the S&P 500 adjusted close, for the trading-strategy check.
RETURN_SERIES = ("sp500",)


def default_series(conn: psycopg.Connection, family: str) -> list[str]:
    """The series a family is trained on when none are named: for the bundle every catalog series
    that holds data (a new series joins at the next training), for a single family the macro panel
    it was designed for."""
    from pefm.forecasting.bundle import BUNDLE

    if family != BUNDLE:
        return list(MACRO_PANEL)
    rows = conn.execute(
        "SELECT id FROM series s WHERE EXISTS (SELECT 1 FROM observations o WHERE o.series_id = s.id) ORDER BY id"
    ).fetchall()
    return [r[0] for r in rows]


def load_panel(
    conn: psycopg.Connection,
    series_ids: Sequence[str],
    *,
    as_of: Moment = None,
    start: Moment = None,
    skip_refused: bool = False,
) -> pd.DataFrame:
    """The series as known at ``as_of``, each transformed as its catalog entry says, aligned on
    their common index (NaN where a series has no value). ``attrs["frequencies"]``,
    ``attrs["calendars"]`` and ``attrs["transforms"]`` describe the columns; ``attrs["anchors"]``
    holds each series' last stored value (where its inverse transform back to levels starts). A
    series whose values its transform refuses raises TransformError, or with ``skip_refused`` is
    left out and named with the reason in ``attrs["refused"]``. ``start``: only the timestamps from
    it on (a transform with lags then leaves their first values out)."""
    raw = read_frame(conn, series_ids, as_of=as_of, start=start)
    columns, transforms, anchors, refused = {}, {}, {}, {}
    for series_id in series_ids:
        meta = get_series(conn, series_id)
        assert meta is not None  # read_frame raised for unknown ids
        values = raw[series_id].dropna()
        try:
            columns[series_id] = apply_transform(values, meta.transform, meta.frequency, keep_newest=True)
        except TransformError as exc:
            if not skip_refused:
                raise
            refused[series_id] = str(exc)
            continue
        transforms[series_id] = meta.transform
        if len(values):
            anchors[series_id] = float(values.iloc[-1])
    kept = [s for s in series_ids if s not in refused]
    panel = pd.DataFrame(columns).reindex(columns=kept)
    freqs = raw.attrs["frequencies"]
    if len(set(freqs.values())) == 1:
        from pefm.data.frequency import with_frequency

        panel.index = with_frequency(pd.DatetimeIndex(panel.index), next(iter(freqs.values())))
    panel.attrs = {
        "frequencies": {s: freqs[s] for s in kept},
        **calendar_attrs({s: raw.attrs["calendars"][s] for s in kept}),
        "transforms": transforms,
        "anchors": anchors,
        "refused": refused,
    }
    return panel


def panel_to_json(panel: pd.DataFrame) -> bytes:
    """A panel as JSON text, attrs and index frequency included (``panel_from_json`` reads it
    back exactly: floats round-trip through ``repr``, NaN as ``NaN``); never pickled, so a
    cache entry cannot carry code."""
    index = pd.DatetimeIndex(panel.index)
    attrs = {**panel.attrs, "frequencies": {s: str(f) for s, f in panel.attrs.get("frequencies", {}).items()}}
    return json.dumps(
        {
            "index": index.as_unit("ns").asi8.tolist(),
            "tz": str(index.tz) if index.tz is not None else None,
            "name": index.name,
            "columns": {str(c): panel[c].astype(float).tolist() for c in panel.columns},
            "attrs": attrs,
        }
    ).encode()


def panel_from_json(text: bytes) -> pd.DataFrame:
    from pefm.data.frequency import with_frequency

    data = json.loads(text)
    index = pd.DatetimeIndex(pd.to_datetime(data["index"], unit="ns"))
    if data["tz"] is not None:
        index = index.tz_localize("UTC").tz_convert(data["tz"])
    freqs = {s: Frequency(f) for s, f in data["attrs"]["frequencies"].items()}
    if len(set(freqs.values())) == 1:
        index = with_frequency(index, next(iter(freqs.values())))
    panel = pd.DataFrame(data["columns"], index=index.rename(data["name"]))
    panel.attrs = {**data["attrs"], "frequencies": freqs}
    return panel


def member_data(member, panel: pd.DataFrame, series_id: str) -> pd.Series | pd.DataFrame:
    """What ``member`` (a model's ``for_series(series_id)``) is conditioned on from ``panel``: the
    series' own values for a univariate model, its columns on their common dates for a joint one."""
    if member.multivariate:
        data = panel[member.series_ids_].dropna()
        data.attrs = {"frequencies": {s: panel.attrs["frequencies"][s] for s in member.series_ids_}}
    else:
        data = panel[series_id].dropna()
        data.attrs = {"frequency": panel.attrs["frequencies"][series_id]}
    return data


def members_of(model, series_ids: Sequence[str]) -> list[tuple[Any, str]]:
    """The distinct fitted members of ``model`` that forecast ``series_ids`` (a joint member once),
    each with the first of its series asked for."""
    members: dict[int, tuple[Any, str]] = {}
    for series_id in series_ids:
        member = model.for_series(series_id)
        members.setdefault(id(member), (member, series_id))
    return list(members.values())


def conditioned(member, panel: pd.DataFrame, series_id: str):
    """A copy of ``member`` conditioned on ``panel`` (``update``: the parameters stay the fitted
    ones); the member itself, which may be serving, is never changed."""
    return copy.deepcopy(member).update(member_data(member, panel, series_id))


def as_of_loader(conn: psycopg.Connection, series_ids: Sequence[str]):
    """A backtest ``as_of`` callable: the panel as known when each cutoff's period had ended, each
    series by its own frequency's period (a monthly series in a group with a quarterly one had been
    read as known at the quarter's end: revisions published up to two months after its cutoff)."""
    by_frequency: dict[Frequency, list[str]] = {}
    for series_id, frequency in _frequencies(conn, series_ids):
        by_frequency.setdefault(Frequency(frequency), []).append(series_id)
    if unknown := [s for s in series_ids if not any(s in ids for ids in by_frequency.values())]:
        raise UnknownSeriesError(unknown)

    def load(cutoff: pd.Timestamp) -> pd.DataFrame:
        parts = [
            load_panel(conn, ids, as_of=period_end(pd.DatetimeIndex([cutoff]), frequency)[0])
            for frequency, ids in by_frequency.items()
        ]
        return parts[0] if len(parts) == 1 else _joined(parts, series_ids)

    return load


def _joined(parts: list[pd.DataFrame], series_ids: Sequence[str]) -> pd.DataFrame:
    """Panels of other series (``load_panel``'s) side by side, their attrs merged, in ``series_ids``' order."""
    panel = pd.concat(parts, axis=1)
    panel = panel.reindex(columns=[s for s in series_ids if s in panel.columns])
    merged: dict[str, dict] = {key: {} for key in ("frequencies", "calendars", "transforms", "anchors", "refused")}
    for part in parts:
        for key, values in merged.items():
            values.update(part.attrs.get(key, {}))
    calendars = merged.pop("calendars")
    panel.attrs = {**merged, **calendar_attrs(calendars)}
    return panel


def _frequencies(conn: psycopg.Connection, series_ids: Sequence[str]) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT id, frequency FROM series WHERE id = ANY(%s) ORDER BY id", (list(series_ids),))
    return [(r[0], r[1]) for r in rows.fetchall()]
