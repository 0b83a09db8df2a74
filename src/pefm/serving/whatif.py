"""Forecasts that need the model itself: other levels or horizons, ``as_of``, what-if ``history``.

Imported only once such a request arrives, so pandas-heavy work and the model's own imports stay
off the start-up path. Without ``as_of`` the data are those the plain forecast is conditioned on
(the latest, or with PEFM_RECONDITION=off those the model was trained on), so a what-if differs
from the plain forecast only by the client's ``history``. With ``as_of`` the
forecast is the one the version's family (same parameters) makes when estimated on the data
known at that moment, and conditioned on them: nothing later reaches it, neither values nor
parameters; only the series asked for is estimated (with its group, for a joint family). Those fits are
cached per (version, group, as_of); a moment too early to fit is a 422. The served model is never
mutated: conditioning happens on a copy. Level space (``space="level"``) maps the forecast back to
the series' units from the level where the conditioning data end (see ``forecasting.levels``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg

from pefm.data.frequency import Frequency
from pefm.data.json_payload import observations_from_object
from pefm.data.transforms import TransformError
from pefm.data.validation import ValidationError, check_frequency
from pefm.forecasting.base import BaseForecaster, ForecastInputError
from pefm.forecasting.bundle import fit_data
from pefm.forecasting.levels import anchor_at, level_forecast, rebased_anchor
from pefm.forecasting.origins import finite_rows
from pefm.forecasting.panel import conditioned, load_panel, panel_from_json, panel_to_json
from pefm.forecasting.training import estimator
from pefm.serving.cache import STATE_TTL, panel_key
from pefm.serving.http import ApiError
from pefm.storage.observations import last_changed, read_frame, settled

if TYPE_CHECKING:
    from pefm.serving.inference import Conditioning, ModelServer

_AS_OF_FITS = 16  # models estimated at past moments kept per process (least recently used out)
_as_of_fits: OrderedDict[tuple, Any] = OrderedDict()
_fitting = threading.Lock()  # one as-of estimation at a time per process: they are CPU-bound
_cache = threading.Lock()  # the small caches below
_PANELS = 8  # panels read as of a moment kept per process (least recently used out)
_panels: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_conditioned_members: dict[tuple[str, str], tuple[int, BaseForecaster]] = {}
WRITE_WAIT_SECONDS = 5.0
"""How long a read of a series' data waits for a write to it under way (``settled``) before a 503
with Retry-After: a write commits within a second or so, and the request waits holding a model
slot; a session that held the series' lock for 45 s held the request as long."""


def model_forecast(
    server: ModelServer,
    series_id: str,
    state: Conditioning,
    horizon: int,
    levels: tuple[int, ...],
    as_of: datetime | None,
    changed: datetime | None,
    history: list[dict] | None,
    space: str,
) -> list[dict[str, Any]]:
    """Forecast rows for one series from the loaded model, in ``space`` (blocking: run it on a
    thread). ``state``: what the series is conditioned on now (the plain forecast's data);
    ``changed``: with ``as_of``, when what was known then last changed (``known_changed``), as the
    caller's cache key holds it."""
    model = server.model
    meta = server.meta[series_id]
    try:
        if as_of is not None and history is None:
            return _as_of_rows(server, series_id, as_of, changed, space, horizon, levels)
        if as_of is None and history is None:
            member = _member_for(server, series_id, state)
            anchor = state.anchor
            if anchor is None and space == "level":  # a version registered before anchors were kept
                panel = _panel(server, [series_id], server.version.data_as_of)
                anchor = anchor_at(panel, series_id, member.cutoff_)
        else:
            family, params, ids = _estimated_group(server, series_id)
            # a what-if starts from the data the plain forecast of ``state`` uses, the data_as_of
            # its answer says (the series may be re-conditioned again while it is made)
            base = as_of or state.data_as_of
            panel = _panel(server, ids, base, changed if as_of is not None else None)
            if as_of is not None:
                model = _estimated_at(server.version.id, family, params, as_of, changed, panel)
            if history is not None:
                levels_then = partial(_stored_levels, server, series_id, base)
                panel = _with_history(panel, series_id, history, Frequency(meta["frequency"]), levels_then)
            member = conditioned(model.for_series(series_id), panel, series_id)
            anchor = anchor_at(panel, series_id, member.cutoff_) if space == "level" else None
        return _rows(member, series_id, meta, anchor, space, horizon, levels)
    except ForecastInputError as exc:  # what the request asked of the data: its as_of or history
        field = exc.field or ("history" if history is not None else "as_of" if as_of is not None else "series_id")
        raise ApiError(422, str(exc), [{"field": field, "message": str(exc)}]) from None
    except TransformError as exc:  # stored before ingest checked values against the transform
        raise ApiError(422, f"the stored data of {series_id} cannot be used: {exc}") from None


def known_changed(server: ModelServer, series_id: str, as_of: datetime) -> datetime | None:
    """When what was known at ``as_of`` of the series estimated with ``series_id`` last changed:
    part of the key of anything kept from those data, since an admin's backdated write changes
    them after the fact (``storage.observations.last_changed``)."""
    with server.db.connection() as conn:
        return last_changed(conn, _estimated_group(server, series_id)[2], as_of)


def _rows(member, series_id: str, meta: dict, anchor, space: str, horizon: int, levels) -> list[dict[str, Any]]:
    """The member's forecast of the series as the API returns it, in ``space``."""
    frame = member.predict(horizon, levels)
    frame = frame[frame["series_id"] == series_id]
    if space == "level":
        freq = Frequency(meta["frequency"])
        frame = level_forecast(member, frame, series_id, anchor, meta["transform"], freq, levels)
    frame = frame.drop(columns="series_id")
    frame["ds"] = frame["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.to_dict("records")


def _as_of_rows(
    server: ModelServer,
    series_id: str,
    as_of: datetime,
    changed: datetime | None,
    space: str,
    horizon: int,
    levels: tuple[int, ...],
) -> list[dict[str, Any]]:
    """The forecast the version made (or makes) from the data known at ``as_of`` (last changed
    at ``changed``): from the registry's forecasts at past origins when it holds it, else
    estimated on those data and then kept there (at the precomputed shape, both spaces) for
    every replica and revision."""
    from pefm.forecasting.origins import store_forecast, stored_forecast
    from pefm.forecasting.registry import PRECOMPUTED_HORIZON, PRECOMPUTED_LEVELS

    meta = server.meta[series_id]
    family, params, ids = _estimated_group(server, series_id)
    panel = _panel(server, ids, as_of, changed)
    known = panel[series_id].dropna()
    if known.empty:
        raise ForecastInputError(f"as_of {as_of:%Y-%m-%d}: no data of {series_id} was known then", "as_of")
    cutoff, freq = known.index[-1], Frequency(meta["frequency"])
    with server.db.connection() as conn:
        rows = stored_forecast(conn, server.version, series_id, freq, ids, cutoff, as_of, space, horizon, levels)
    if rows is not None:
        return rows
    member = conditioned(
        _estimated_at(server.version.id, family, params, as_of, changed, panel).for_series(series_id), panel, series_id
    )
    anchor = anchor_at(panel, series_id, member.cutoff_)
    rows = _rows(member, series_id, meta, anchor, space, horizon, levels)
    shape = min(PRECOMPUTED_HORIZON, getattr(member, "horizon", PRECOMPUTED_HORIZON)), PRECOMPUTED_LEVELS
    with server.db.connection() as conn:
        for kept_space in ("model", "level"):
            kept = _rows(member, series_id, meta, anchor, kept_space, *shape)
            if not finite_rows(kept):  # jsonb cannot hold it; asked for, the answer is a 422 (``model_json``)
                continue
            # the panel holds every write known at as_of up to ``changed`` (its key), and lacks
            # only later ones: a backdated write while this was computed is one of those
            store_forecast(conn, server.version.id, series_id, cutoff, as_of, kept_space, shape[1], kept, since=changed)
    return rows


def forget(version_id: str) -> None:
    """Drop what this process keeps of a version it no longer serves (an unpinned revision that
    followed a promotion): its conditioned members, kept per series and never replaced otherwise."""
    with _cache:
        for key in [k for k in _conditioned_members if k[0] == version_id]:
            del _conditioned_members[key]


def _member_for(server: ModelServer, series_id: str, state: Conditioning) -> BaseForecaster:
    """The fitted member that forecasts ``series_id``, conditioned on the data of ``state`` (the
    registered one as it is; after re-conditioning, a copy conditioned on the same data as the
    precomputed forecasts, made on the first request that needs it and kept per state)."""
    member = server.model.for_series(series_id)
    if state.generation == 0:
        return member
    key = (server.version.id, series_id)
    with _cache:
        kept = _conditioned_members.get(key)
    if kept is not None and kept[0] == state.generation:
        return kept[1]
    panel = _panel(server, list(member.series_ids_), state.data_as_of)
    fresh = conditioned(member, panel, series_id)
    with _cache:
        _conditioned_members[key] = (state.generation, fresh)
    return fresh


def _estimated_group(server: ModelServer, series_id: str) -> tuple[str, dict[str, Any], list[str]]:
    """What the served version estimates together with ``series_id`` (the registry's rule)."""
    from pefm.forecasting.registry import estimation_group

    return estimation_group(server.version, series_id)


def _estimated_at(
    version_id: str, family: str, params: dict[str, Any], as_of: datetime, changed: datetime | None, panel: pd.DataFrame
):
    """``family`` with ``params`` estimated on ``panel`` (the data known at ``as_of``, as last
    changed at ``changed``)."""
    key = (version_id, family, tuple(panel.columns), as_of, changed)
    with _fitting:  # one estimation at a time per process: they are CPU-bound
        if (fitted := _as_of_fits.get(key)) is not None:
            _as_of_fits.move_to_end(key)
            return fitted
        model = estimator(family, params)
        data = fit_data(model, panel)
        if data.dropna(how="all").empty:
            raise ForecastInputError(f"as_of {as_of:%Y-%m-%d}: no data was known then", "as_of")
        try:
            model.fit(data)
        except ForecastInputError as exc:
            raise ForecastInputError(
                f"as_of {as_of:%Y-%m-%d}: too early to estimate {family}: {exc}", "as_of"
            ) from None
        except (ValueError, ArithmeticError) as exc:  # a fit that the data known then cannot support
            raise ForecastInputError(
                f"as_of {as_of:%Y-%m-%d}: {family} cannot be estimated on the data known then ({exc})", "as_of"
            ) from None
        _as_of_fits[key] = model
        while len(_as_of_fits) > _AS_OF_FITS:
            _as_of_fits.popitem(last=False)
        return model


def _panel(
    server: ModelServer, series_ids: list[str], as_of: datetime, changed: datetime | None = None
) -> pd.DataFrame:
    """The series as known at ``as_of``; the last few reads are kept (a what-if reads the same
    data as the plain forecast, request after request, until new data arrive), and with a shared
    cache kept there too, for every replica (the feature store: read from PostgreSQL once).
    ``changed``: when what was known at a past ``as_of`` last changed (``last_changed``), so that
    a backdated write does not meet a panel read before it."""
    key = (tuple(series_ids), as_of, changed)
    with _cache:
        if (panel := _panels.get(key)) is not None:
            _panels.move_to_end(key)
            return panel
    shared = server.cache if server.cache.shared else None
    shared_key = panel_key(series_ids, as_of, changed)
    if shared is not None and (text := shared.get("panel", shared_key)) is not None:
        panel = panel_from_json(text)
    else:
        with server.db.connection() as conn:
            _settled(conn, series_ids)  # kept below and in the shared cache: not without a write under way
            panel = load_panel(conn, series_ids, as_of=as_of)
        if shared is not None:
            shared.set("panel", shared_key, panel_to_json(panel), STATE_TTL)
    with _cache:
        _panels[key] = panel
        while len(_panels) > _PANELS:
            _panels.popitem(last=False)
    return panel


def _settled(conn: psycopg.Connection, series_ids: list[str]) -> None:
    """``settled``, waiting at most WRITE_WAIT_SECONDS; then a 503 with Retry-After."""
    conn.execute(f"SET LOCAL lock_timeout = '{WRITE_WAIT_SECONDS * 1000:.0f}ms'")
    try:
        settled(conn, series_ids)
    except psycopg.errors.LockNotAvailable:
        message = f"a write to {', '.join(series_ids)} has been under way for over {WRITE_WAIT_SECONDS:g} s; retry"
        raise ApiError(503, message, headers={"Retry-After": f"{WRITE_WAIT_SECONDS:.0f}"}) from None
    conn.execute("SET LOCAL lock_timeout = DEFAULT")


def _stored_levels(server: ModelServer, series_id: str, as_of: datetime) -> pd.Series:
    """The series' stored values as known at ``as_of`` (the levels its panel was transformed from)."""
    with server.db.connection() as conn:
        return read_frame(conn, [series_id], as_of=as_of)[series_id]


def _gap(known: pd.DatetimeIndex, given: pd.DatetimeIndex, freq: Frequency, calendar: str) -> dict | None:
    """Where the history (sorted) fails to join the series' known values (model space) period by
    period: before its first value, or leaving a period (a session) missing, between them or
    within it; None when it joins. Read as consecutive periods, a gap would be one step."""
    from pefm.forecasting.base import future_index

    if not len(known) or given[0] < known[0]:
        first = f"{known[0]:%Y-%m-%d}" if len(known) else "none"
        return {"field": "history[0].ts", "index": 0, "message": f"before the series' first value ({first})"}
    before = known[known < given[0]]
    dates = known.union(given)
    dates = dates[(dates >= (before[-1] if len(before) else given[0])) & (dates <= given[-1])]
    expected = dates[:1].append(future_index(dates[0], freq, len(dates) - 1, calendar))
    for found, wanted in zip(dates, expected, strict=True):
        if found != wanted:
            i = int(given.searchsorted(found))
            message = f"leaves {wanted:%Y-%m-%d} missing: the history must continue the series period by period"
            return {"field": f"history[{i}].ts", "index": i, "message": message}
    return None


def _in_history(detail: dict[str, Any]) -> dict[str, Any]:
    """A detail of the observations parser or the frequency check, named as the request names it."""
    field = detail["field"]
    if field.startswith("observations"):
        field = field.replace("observations", "history", 1)
    elif "index" in detail:  # the frequency check's ``ts`` at a position
        field = f"history[{detail['index']}].{field}"
    return {**detail, "field": field}


def _with_history(
    panel: pd.DataFrame,
    series_id: str,
    history: list[dict],
    freq: Frequency,
    stored_levels: Callable[[], pd.Series],
) -> pd.DataFrame:
    """The panel with the client's values replacing or extending the series (model space); its
    anchor (the last level) moves by the history's steps less the stored change they replace
    (``levels.rebased_anchor``; ``stored_levels``: the series' values as the panel was read, for
    a history that fills a missing period)."""
    try:
        payload = observations_from_object({"series_id": series_id, "observations": history})
        values = payload.series[0].values.sort_index()  # in date order, as ingest takes them
        calendar = panel.attrs.get("calendars", {}).get(series_id, "")
        if issues := check_frequency(values.index, freq, calendar=calendar):
            raise ValidationError("history timestamps are off the series frequency", issues)
    except ValidationError as exc:  # the error body ingest gives, `truncated` and `more` included
        error = ApiError.invalid(exc)
        if not error.error.startswith("history"):  # the parser's title names its observations
            error.error = "invalid history"
        error.details = [_in_history(d) for d in error.details]
        raise error from None
    if gap := _gap(panel[series_id].dropna().index, values.index, freq, calendar):
        raise ApiError(422, "history does not join the series", [gap])
    merged = panel.reindex(panel.index.union(values.index))
    merged.loc[values.index, series_id] = values.to_numpy()
    anchors = {
        **panel.attrs["anchors"],
        series_id: rebased_anchor(panel, merged, series_id, values.index, stored_levels),
    }
    merged.attrs = {**panel.attrs, "anchors": anchors}
    return merged
