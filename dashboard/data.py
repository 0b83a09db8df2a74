"""What the pages show, as plain functions of a connection (unit-tested on a real database)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pandas as pd
import psycopg

from dashboard.context import recent_failure, remember_failure
from pefm.config import get_settings
from pefm.data.frequency import Frequency
from pefm.data.transforms import model_space_unit
from pefm.drift.monitor import report_rows
from pefm.forecasting.panel import load_panel
from pefm.rollout.providers import PrometheusProvider
from pefm.storage import retrain_events
from pefm.storage.model_versions import (
    ModelVersion,
    get_serving,
    get_version,
    read_precomputed,
)
from pefm.storage.observations import read_frame, recent_start
from pefm.storage.series import SeriesMeta, SeriesSpan, get_series, list_series, series_spans


def traffic_promql(window_minutes: int) -> dict[str, str]:
    """The Overview's inference traffic as PromQL over the last ``window_minutes``: requests/s,
    the shares of 2xx, 4xx and 5xx answers, p95 latency (ms): every request the request log
    holds, that is all but Prometheus's own scrapes of /metrics (those failed before routing
    included, as the rollout checks count them)."""
    selector = 'service="inference",route!="/metrics"'
    total = f"sum(rate(pefm_requests_total{{{selector}}}[{window_minutes}m]))"
    queries = {"requests_per_s": total}
    for code in (2, 4, 5):
        answers = f'sum(rate(pefm_requests_total{{{selector},status=~"{code}.."}}[{window_minutes}m]))'
        queries[f"share_{code}xx"] = f"{answers} / {total}"
    buckets = f"rate(pefm_request_duration_seconds_bucket{{{selector}}}[{window_minutes}m])"
    queries["p95_ms"] = f"1000 * histogram_quantile(0.95, sum by (le) ({buckets}))"
    return queries


def traffic_from_prometheus(prometheus: PrometheusProvider, window_minutes: int) -> dict[str, Any]:
    """The inference service's requests/s, the shares of 2xx, 4xx and 5xx answers, and its p95
    latency (ms) over the last minutes (when ``PEFM_PROMETHEUS_URL`` is set)."""
    values = {k: prometheus.query(q) for k, q in traffic_promql(window_minutes).items()}
    shares = ("share_2xx", "share_4xx", "share_5xx")
    if not values["requests_per_s"]:  # no traffic: no shares (Prometheus divides 0 by 0)
        values.update(dict.fromkeys((*shares, "p95_ms")))
    else:  # a class never answered has no counter: an empty result, a share of 0
        values.update({k: values[k] or 0.0 for k in shares})
    return {**values, "requests_per_s": values["requests_per_s"] or 0.0, "source": "Prometheus server"}


def traffic_from_log(conn: psycopg.Connection, window_minutes: int) -> dict[str, Any]:
    """The same numbers from the request log in the database: 2xx as Prometheus counts it
    (``status=~"2.."``), not every answer under 400 (a 1xx or 3xx is no success)."""
    n, ok, client, server, p95 = conn.execute(
        """SELECT count(*), avg((status BETWEEN 200 AND 299)::int), avg((status BETWEEN 400 AND 499)::int),
                  avg((status >= 500)::int), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
           FROM request_log WHERE service = 'inference' AND ts >= now() - make_interval(mins => %s)""",
        (window_minutes,),
    ).fetchone()

    def share(x):
        return None if x is None else float(x)

    return {
        "requests_per_s": n / (window_minutes * 60),
        "share_2xx": share(ok),
        "share_4xx": share(client),
        "share_5xx": share(server),
        "p95_ms": share(p95),
        "source": "request log",
    }


def traffic(conn: psycopg.Connection, window_minutes: int, prometheus: PrometheusProvider | None) -> dict[str, Any]:
    """The inference traffic from Prometheus when configured, else from the request log; from the
    log too when Prometheus does not answer (the Overview must not fail with it), saying so, and
    until ``RETRY_S`` has passed (each refresh waited its timeout)."""
    if prometheus is None:
        return traffic_from_log(conn, window_minutes)
    if (failed := recent_failure(prometheus.url)) is None:
        try:
            return traffic_from_prometheus(prometheus, window_minutes)
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # away, or not a Prometheus answer
            failed = type(exc).__name__
            remember_failure(prometheus.url, failed)
    return {**traffic_from_log(conn, window_minutes), "source": f"request log (Prometheus unreachable: {failed})"}


LATEST_REPORT = "ORDER BY data_sha256 IS NULL, id DESC LIMIT 1"
"""The drift report the pages show: the latest check of the whole model (only those carry the data's
digest), else the latest of any kind. A check of some series (``pefm drift check -s``, or a
mistyped id that checks none) must not stand for the model."""


NO_DATA = SeriesSpan(None, None, None)


def _latest(moments) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)


def overview(
    conn: psycopg.Connection, window_minutes: int = 15, prometheus: PrometheusProvider | None = None
) -> dict[str, Any]:
    """What the Overview shows: the serving model, data freshness per series group (frequency),
    the inference service's traffic, answers by class and p95 latency, the last drift check and
    the current rollout."""
    drift = conn.execute(
        f"SELECT created_at, drifted_series, series, breach, model_version FROM drift_reports {LATEST_REPORT}"
    ).fetchone()
    rollout = conn.execute(
        "SELECT id, service, blue_revision, green_revision, phase, weight FROM rollouts ORDER BY id DESC LIMIT 1"
    ).fetchone()
    spans, groups = series_spans(conn), {}
    for meta in list_series(conn):
        groups.setdefault(meta.frequency.value, []).append(spans.get(meta.id) or NO_DATA)  # one created since
    serving = serving_now(conn)
    return {
        "series": len(spans),
        "freshness": [
            {
                "frequency": Frequency(frequency).label,
                "series": len(group),
                "newest": _latest(span.last for span in group),
                "known_since": _latest(span.known_since for span in group),
            }
            for frequency, group in sorted(groups.items())
        ],
        "serving": None
        if serving is None
        else {
            "id": serving.id,
            "family": serving.family,
            "data_as_of": serving.data_as_of,
            "since": serving.status_changed_at,
            "series": len(serving.series_ids),
        },
        **traffic(conn, window_minutes, prometheus),
        "drift": None
        if drift is None
        else {
            "at": drift[0],
            "drifted": len(drift[1]),
            "series": len(drift[2]),
            "breach": drift[3],
            "model_version": drift[4],
        },
        "rollout": None
        if rollout is None
        else dict(zip(("id", "service", "blue", "green", "phase", "weight"), rollout, strict=True)),
    }


@dataclass(frozen=True)
class SeriesInfo:
    """A catalog entry as the Forecasts page needs it: units, span, and which model forecasts it
    (the serving version, the registry's one answer) or why none does."""

    id: str
    name: str
    unit: str
    transform: str
    frequency: Frequency
    first: datetime | None
    last: datetime | None
    known_since: datetime | None
    """The latest vintage: the last moment anything about the series became known."""
    first_known: datetime | None
    """The first vintage: when anything about the series first became known (realgdp's 1959Q1, dated
    1959-01-01, on 1959-04-01): the earliest moment an as-of view has data."""
    version: str | None
    why_not: str | None

    def unit_in(self, space: str) -> str:
        """The unit of the values drawn in ``space`` (``level``: the stored unit; ``model``: the
        transform's, derived from it)."""
        return (
            self.unit if space == "level" or self.transform == "none" else model_space_unit(self.unit, self.transform)
        )


def catalog(conn: psycopg.Connection) -> list[SeriesInfo]:
    """Every series, by id, with what serves it: four queries, whatever the number of series (the
    serving version read once, without its backtest's forecasts)."""
    spans, current = series_spans(conn), serving_now(conn)
    first_known = dict(
        conn.execute(
            "SELECT s.id, (SELECT min(vintage) FROM all_observations o WHERE o.series_id = s.id) FROM series s"
        ).fetchall()
    )
    out = []
    for meta in list_series(conn):
        span = spans.get(meta.id) or NO_DATA  # one created since
        version = current if current is not None and meta.id in current.series_ids else None
        why = None if version is not None else _why_not(meta, current, span.last)
        out.append(
            SeriesInfo(
                meta.id,
                meta.name,
                meta.unit,
                meta.transform,
                meta.frequency,
                span.first,
                span.last,
                span.known_since,
                first_known.get(meta.id),
                version.id if version else None,
                why,
            )
        )
    return out


def serving_now(conn: psycopg.Connection) -> ModelVersion | None:
    """The registry's answer to which version serves (``serving_version``'s), without its
    backtest's forecasts: the pages need what it serves, not where it was tested."""
    return get_serving(conn, forecasts=False)


def _why_not(meta: SeriesMeta, version: ModelVersion | None, last: datetime | None) -> str:
    series_id = meta.id
    if last is None:
        return "no data stored yet: ingest some, then train"
    if meta.frequency.intraday:  # training never takes them (default_series)
        return "intraday series are stored and served as data; the models do not forecast them yet"
    if version is None:
        return "no model serves yet: train one and promote it (pefm train, pefm models promote)"
    if reason := (version.params.get("skipped") or {}).get(series_id):
        return f"the serving model {version.id} left it out: {reason}"
    return (
        f"the serving model {version.id} was trained without it (data as of {version.data_as_of:%Y-%m-%d}); "
        "the next training includes it"
    )


def series_options(series: list[SeriesInfo]) -> list[dict[str, str]]:
    """Dropdown options: every series, labelled with its name; those without a forecast say so."""
    return [
        {
            "label": f"{s.id}: {s.name}" + ("" if s.version else " (no forecast)"),
            "value": s.id,
            "title": s.why_not or "",
        }
        for s in series
    ]


def model_options(conn: psycopg.Connection, series: SeriesInfo) -> list[dict[str, str]]:
    """Model versions that forecast the series: the one serving it first (``catalog``'s), then
    candidates and rejected ones, newest first. Reads their ids and statuses alone: every
    version's backtest (its metrics, a megabyte with its forecasts) was read for a dropdown."""
    versions = conn.execute(
        """SELECT id, status FROM model_versions WHERE %s = ANY (series_ids) AND status <> 'retired'
           ORDER BY created_at DESC, id""",
        (series.id,),
    ).fetchall()
    versions.sort(key=lambda v: v[0] != series.version)  # stable: newest first after it
    return [{"label": f"{id} ({status})", "value": id} for id, status in versions]


RECENT_POINTS = 200
"""What a chart reads of a series' past: its last 80 points drawn, with room for a transform's lags."""


def history(
    conn: psycopg.Connection,
    series_id: str,
    as_of: datetime | None,
    space: str = "model",
    start: datetime | None = None,
) -> pd.Series:
    """The series as known at ``as_of`` (from ``start`` on, where given: ``recent``): the stored
    values (``level``) or with its transform applied (``model``)."""
    if space == "level":
        return read_frame(conn, [series_id], as_of=as_of, start=start)[series_id].dropna()
    return load_panel(conn, [series_id], as_of=as_of, start=start)[series_id].dropna()


def recent(conn: psycopg.Connection, series_id: str, as_of: datetime | None) -> datetime | None:
    """Where a chart's reads of the series start: its last ``RECENT_POINTS`` timestamps known at
    ``as_of`` (a year of minute bars is half a million rows; the chart draws 80)."""
    return recent_start(conn, series_id, as_of, RECENT_POINTS)


def forecast(
    conn: psycopg.Connection, version_id: str, series_id: str, horizon: int, space: str = "model"
) -> pd.DataFrame:
    """The version's precomputed forecast of the series in ``space``: ds, mean, lo/hi 80 and 95
    (empty when the version does not forecast it)."""
    pre = read_precomputed(conn, version_id) or {"rows": []}
    rows = [r for r in pre["rows"] if r["series_id"] == series_id and r.get("space", "model") == space][:horizon]
    return _frame(rows)


@dataclass(frozen=True)
class LatestForecast:
    """A version's forecast on the latest data: its rows (empty when there are none), the moment
    the data it was made from were read as of, and a note (why steps are missing, or none)."""

    rows: pd.DataFrame
    data_as_of: datetime
    note: str


def latest_forecast(
    version: ModelVersion,
    serving: str | None,
    series_id: str,
    horizon: int,
    space: str,
    observed: pd.Series,
    stored: pd.DataFrame,
    changed: datetime | None,
    deadline: float,
) -> LatestForecast:
    """The forecast of ``series_id`` from the latest data. The ``serving`` version's is the
    inference API's answer (``PEFM_ROUTER_URL``), which conditions the served model on the data that
    arrived after it was registered (``pefm.serving.freshness``): what programs are served; asked
    again only once data changed (``changed``: the latest vintage of any series, since a group's
    members condition on each other's data). Otherwise (another version, no API, or no answer) the
    forecast ``stored`` at registration (``forecast``, read beforehand: no connection is held while
    the API is asked), less the steps already ``observed`` (the history as drawn), with a note
    saying it was made before them. ``deadline``: the render's (``ask_deadline``)."""
    url = get_settings().router_url
    if serving != version.id:
        why = "only the serving version is conditioned on new data"
    elif url is None:
        why = "no inference API (PEFM_ROUTER_URL) to condition it on them"
    else:
        key = (url, version.id, series_id, horizon, space, changed)
        part, at = _ANSWERED.get(key, (None, 0.0))
        if part is None or time.monotonic() - at > ANSWER_SECONDS:
            part, why = _ask(url, version.id, {"series_id": series_id, "horizon": horizon, "space": space}, deadline)
            if part is not None:
                with _ANSWERED_LOCK:  # a render asks its series at once
                    _ANSWERED[key] = (part, time.monotonic())
                    _ANSWERED.move_to_end(key)
                    while len(_ANSWERED) > ANSWERS_KEPT:
                        _ANSWERED.popitem(last=False)
        if part is not None:
            return LatestForecast(_frame(part["forecast"]), datetime.fromisoformat(part["data_as_of"]), "")
    return _unobserved(stored, version, observed, why)


ANSWERS_KEPT = 256
"""The inference API's latest answers the app keeps (by URL, version, series, horizon, space and the
data's last change), each for ``ANSWER_SECONDS`` at most: a replica re-conditions a moment after a
write, so an answer asked in between is of the data before it, and a backdated write moves no
latest vintage. Every open Forecasts page had asked for each drawn series at every 20-second
refresh, traffic the Overview, the request log and a canary's analysis then counted as users'."""
ANSWER_SECONDS = 120.0
_ANSWERED: OrderedDict[tuple, tuple[dict[str, Any], float]] = OrderedDict()
_ANSWERED_LOCK = threading.Lock()


def _unobserved(rows: pd.DataFrame, version: ModelVersion, observed: pd.Series, why: str) -> LatestForecast:
    """A stored forecast without the periods observed since it was made: a forecast of a value that
    is known is none."""
    last = observed.index.max() if not observed.empty else None
    if rows.empty or last is None or rows["ds"].min() > last:
        return LatestForecast(rows, version.data_as_of, "")
    made = f"{version.id} forecast from the data as of {version.data_as_of:%Y-%m-%d}, before the latest data"
    left = rows[rows["ds"] > last].reset_index(drop=True)
    if left.empty:
        return LatestForecast(left, version.data_as_of, f"no forecast beyond the latest data: {made} ({why})")
    steps = len(rows) - len(left)
    return LatestForecast(left, version.data_as_of, f"{made}: {steps} step(s) already observed left out ({why})")


@dataclass(frozen=True)
class OriginForecast:
    """What a version forecast from the data known at a moment: its origin (the series' last
    observation known then), the rows (None when not available) and where they came from or why
    they are missing; ``ask``: the inference API request (URL, body) that may give better rows, made
    by ``answered`` once the database connection is given back, or None when this is the answer."""

    origin: pd.Timestamp | None
    rows: pd.DataFrame | None
    note: str
    ask: tuple[str, dict[str, Any]] | None = None


def origin_forecast(
    conn: psycopg.Connection,
    version_id: str,
    series_id: str,
    as_of: datetime,
    horizon: int,
    space: str,
    serving: str | None,
) -> OriginForecast:
    """What the registry holds of the forecast ``version_id`` made (or makes) from the data known at
    ``as_of``, as the inference API's ``as_of`` answers it: its forecasts at past origins (its
    backtest, earlier as-of requests). Not stored yet, and the version is the ``serving`` one with
    ``PEFM_ROUTER_URL`` set: the request to ask the API (which computes and keeps it), ``answered``."""
    from pefm.forecasting.base import ForecastInputError
    from pefm.forecasting.origins import stored_forecast
    from pefm.forecasting.registry import PRECOMPUTED_LEVELS, estimation_group

    known = history(conn, series_id, as_of, start=recent(conn, series_id, as_of))
    if known.empty:
        return OriginForecast(None, None, f"nothing of {series_id} was known on {as_of:%Y-%m-%d}")
    origin, version = known.index[-1], get_version(conn, version_id)
    try:
        _, _, together = estimation_group(version, series_id)
    except ForecastInputError as exc:
        return OriginForecast(origin, None, str(exc))
    freq = get_series(conn, series_id).frequency

    def kept(steps: int, space: str = space) -> list[dict[str, Any]] | None:
        levels = PRECOMPUTED_LEVELS
        return stored_forecast(conn, version, series_id, freq, together, origin, as_of, space, steps, levels)

    if (rows := kept(horizon)) is not None:
        return OriginForecast(origin, _frame(rows), "kept by the registry")
    url = get_settings().router_url
    ask = None
    if url is not None and serving == version_id:
        ask = (url, {"series_id": series_id, "as_of": as_of.isoformat(), "horizon": horizon, "space": space})
    # the backtest keeps fewer steps than the picker offers (8 of 12): those, rather than nothing
    fewer = min(horizon, int(((version.backtest or {}).get("spec") or {}).get("h") or 0))
    if 0 < fewer < horizon and (rows := kept(fewer)) is not None:
        why = f"{fewer} of the {horizon} steps asked: the registry keeps {fewer} from past origins"
        return OriginForecast(origin, _frame(rows), why, ask)
    if ask is not None:
        why = "not computed yet: the inference API computes it for the serving model (POST /v1/forecast with as_of)"
    elif url is None:
        why = "not kept by the registry, and no inference API (PEFM_ROUTER_URL) to compute it"
    else:
        why = "not kept by the registry, and the inference API computes it for the serving model only"
    if space == "level" and kept(1, "model") is not None:  # the backtest's: model space only
        why += "; the registry keeps it in model space: choose model space to see it"
    return OriginForecast(origin, None, why, ask)


def answered(made: OriginForecast, version_id: str, deadline: float) -> OriginForecast:
    """``made`` completed by the inference API, where it has a request to ask (with no database
    connection held) until the render's ``deadline``: the API's rows when it answers with them,
    else the steps the registry keeps, else not computed yet and why the API gave none."""
    if made.ask is None:
        return made
    url, body = made.ask
    part, why = _ask(url, version_id, body, deadline, slow=True)
    if part is not None:
        return OriginForecast(made.origin, _frame(part["forecast"]), "computed by the inference API")
    return made if made.rows is not None else OriginForecast(made.origin, None, f"{made.note} ({why})")


ASK_SECONDS = 5.0
"""The longest one render waits for the inference API, all its series together (``views._drawn``
asks them at once). One after the other, with 10 s each and 120 s for an as-of forecast, a hung
API or router held a render of four series 40 s (8 minutes as of a date), and a worker thread
of the server with it."""
CONNECT_SECONDS = 1.0
"""How long a connection to the API may take: a router that is not there is known at once."""


def ask_deadline() -> float:
    """The moment (``time.monotonic``) a render that begins now stops waiting for the API."""
    return time.monotonic() + ASK_SECONDS


def _ask(
    url: str, version_id: str, body: dict[str, Any], deadline: float, slow: bool = False
) -> tuple[dict[str, Any] | None, str]:
    """The inference API's forecast of the one series ``body`` asks for (its part of the answer),
    when ``version_id`` answered by ``deadline``; else None and why not. During a rollout the local
    router sends a request to either revision: one answered by the other version is asked again of
    each tag's revision (the serving version is blue's, or green's once promoted), so the panel
    does not flip between the two forecasts from one refresh to the next. An API that did not
    answer is not asked again for ``RETRY_S``, as Prometheus and MLflow are not: each refresh of
    every open page waited for it. A ``slow`` request (an as-of estimate: seconds for a joint
    family) that outlasts the render says nothing of the API: the latest forecasts answer in
    milliseconds all the same."""
    if (failed := recent_failure(url)) is not None:
        return None, f"the inference API did not answer lately ({failed}): asked again within a minute"
    base = url.rstrip("/")
    why = ""
    for where in (base, f"{base}/_tag/blue", f"{base}/_tag/green"):
        if (left := deadline - time.monotonic()) <= 0:
            return None, why or f"the inference API did not answer within {ASK_SECONDS:g} s"
        try:
            timeout = httpx.Timeout(left, connect=min(CONNECT_SECONDS, left))
            response = httpx.post(f"{where}/v1/forecast", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            if where == base:
                if not (slow and isinstance(exc, httpx.ReadTimeout)):
                    remember_failure(url, type(exc).__name__)
                return None, f"the inference API did not answer: {type(exc).__name__} {exc}"
            continue
        answer = response.json() if "json" in response.headers.get("content-type", "") else {}
        if not response.is_success:
            if where == base:
                return None, f"the inference API refused ({response.status_code}): {answer.get('error')}"
            continue  # no revision has the tag
        if answer.get("model_version") == version_id:
            return answer["forecasts"][0], ""
        why = why or f"the inference API serves {answer.get('model_version')}, not {version_id}"
    return None, why


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).drop(columns=["series_id", "space"], errors="ignore")
    if not frame.empty:
        frame["ds"] = pd.to_datetime(frame["ds"]).dt.tz_localize(None)
    return frame


HORIZON_METRICS = ("n", "rmse", "mase", "rmse_ratio_naive", "dm_p_naive", "coverage-80", "coverage-95")


def horizon_metrics(version: ModelVersion, series_id: str) -> list[dict[str, Any]]:
    """The version's backtest of the series per horizon step (h = 1..H, then ``all`` pooled), as
    stored when it was registered: n, RMSE, MASE, RMSE over the naive forecast's with the
    Diebold-Mariano p-value against it, and 80/95% coverage; ``weak`` names each level whose
    coverage falls short of nominal by a one-sided binomial test at 5% (the windows taken as
    independent). Empty without a backtest of the series."""
    from pefm.forecasting.metrics import coverage_test

    stored = ((version.backtest or {}).get("metrics") or {}).get(series_id)
    if not stored:
        return []
    steps = int(((version.backtest or {}).get("spec") or {}).get("h", 1))
    rows = [{"h": str(k), **{m: stored.get(f"{m}@h{k}") for m in HORIZON_METRICS}} for k in range(1, steps + 1)]
    rows = [r for r in rows if r["n"] is not None]  # versions registered before the per-step names
    rows.append({"h": "all", **{m: stored.get(m) for m in HORIZON_METRICS}})
    for row in rows:
        weak = []
        for level in (80, 95):
            covered, n = row[f"coverage-{level}"], row["n"]
            if covered is not None and n and coverage_test(round(covered * n), int(n), level) < 0.05:
                weak.append(f"{level}%")
        row["weak"] = ", ".join(weak)
    return [{"series_id": series_id, "version": version.id, **row} for row in rows]


def drift_rows(conn: psycopg.Connection) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The latest drift report of the whole model (``LATEST_REPORT``) and its Evidently-style rows
    (series, feature, method, score, threshold, drifted); the rows may be none. ``serving`` in
    the report's meta: the version serving now, which after a promotion or a rollback is another
    than the one checked until the monitor's next check."""
    row = conn.execute(
        f"SELECT id, created_at, model_version, series, breach FROM drift_reports {LATEST_REPORT}"
    ).fetchone()
    if row is None:
        return None, []
    report_id, created, version, series, breach = row
    rows = report_rows(series)
    serving = serving_now(conn)
    meta = {
        "id": report_id,
        "created_at": created,
        "model_version": version,
        "breach": breach,
        "serving": serving and serving.id,
    }
    return meta, rows


def checked_other_than_serving(checked: str, serving: str | None) -> bool:
    """Whether the latest drift check is of another version than the one serving now."""
    return serving is not None and serving != checked


def retraining(conn: psycopg.Connection) -> tuple[str, list[dict[str, Any]]]:
    """The retraining log for the Drift page: a line on the monitor's request that no retraining
    has answered yet ("" when none waits), and the latest runs and requests, newest first."""
    pending = retrain_events.pending_request(conn)
    note = f"Not answered yet: {pending.describe()}" if pending is not None else ""
    rows = [
        {
            "began": f"{run['started']:%Y-%m-%d %H:%M:%S}",
            "steps": " → ".join(run["steps"]),
            "candidate": run["candidate"] or "",
            "why": run["why"],
            "how it ended": _how_it_ended(run),
        }
        for run in retrain_events.recent_runs(conn)
    ]
    return note, rows


def _how_it_ended(run: dict[str, Any]) -> str:
    """A run's last word: its last step's reason when it ended (an outcome, standing aside, a
    failure), else that it runs or was stopped there; nothing for a request (a run of one row)."""
    last = run["steps"][-1]
    if len(run["steps"]) == 1 and last == retrain_events.REQUESTED:
        return ""
    if last in retrain_events.ENDINGS:
        return run["ended"]
    return f"running, or stopped after {last}: {run['ended']}"


HISTORY_REPORTS = 500
"""The drift checks the Drift page's histories go back over (four months of the monitor's 6-hourly
ones, fewer when ingests ask for checks too): the whole table grew with every check, and was read
and drawn again on every refresh."""


def drift_history(conn: psycopg.Connection, series_id: str, feature: str) -> pd.DataFrame:
    """A feature's drift score over the last ``HISTORY_REPORTS`` reports (created_at, score,
    threshold, and ``whole``: whether the check was of the whole model, not some series of it,
    ``pefm drift check -s``, which the page's table does not stand for: ``LATEST_REPORT``)."""
    rows = conn.execute(
        """SELECT created_at, (f ->> 'score')::float8, (f ->> 'threshold')::float8, whole
           FROM (SELECT id, created_at, series, data_sha256 IS NOT NULL AS whole
                 FROM drift_reports ORDER BY id DESC LIMIT %s) AS r,
                jsonb_array_elements(series -> %s -> 'input') AS f
           WHERE f ->> 'feature' = %s ORDER BY id""",
        (HISTORY_REPORTS, series_id, feature),
    ).fetchall()
    return pd.DataFrame(rows, columns=["created_at", "score", "threshold", "whole"])


def serving_latency(
    conn: psycopg.Connection, service: str = "inference", minutes: int = 60, bucket_seconds: int = 60
) -> pd.DataFrame:
    """Per revision and time bucket over the last ``minutes``: requests, p50/p95/p99 latency (ms),
    4xx and 5xx counts, and the rate (requests/s over the part of the bucket inside the window: the
    first is cut by the window's start, the current one has only begun, and dividing by the whole
    bucket drew a steady rate falling at both ends). Every bucket is there for every revision seen:
    a bucket without requests has a rate of 0 and no latency (a gap, not an interpolation)."""
    rows = conn.execute(
        """WITH stats AS (
               SELECT date_bin(make_interval(secs => %(bucket)s), ts, TIMESTAMPTZ '2000-01-01') AS bucket, revision,
                      count(*) AS requests,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99,
                      count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS errors_4xx,
                      count(*) FILTER (WHERE status >= 500) AS errors_5xx
               FROM request_log
               WHERE service = %(service)s AND ts >= now() - make_interval(mins => %(minutes)s)
               GROUP BY 1, 2),
           buckets AS (
               SELECT generate_series(
                   date_bin(make_interval(secs => %(bucket)s), now() - make_interval(mins => %(minutes)s),
                            TIMESTAMPTZ '2000-01-01'),
                   date_bin(make_interval(secs => %(bucket)s), now(), TIMESTAMPTZ '2000-01-01'),
                   make_interval(secs => %(bucket)s)) AS bucket)
           SELECT b.bucket, r.revision, coalesce(s.requests, 0), s.p50, s.p95, s.p99,
                  coalesce(s.errors_4xx, 0), coalesce(s.errors_5xx, 0),
                  extract(epoch FROM least(b.bucket + make_interval(secs => %(bucket)s), now())
                                     - greatest(b.bucket, now() - make_interval(mins => %(minutes)s)))
           FROM buckets b CROSS JOIN (SELECT DISTINCT revision FROM stats) r
           LEFT JOIN stats s ON s.bucket = b.bucket AND s.revision = r.revision
           ORDER BY 1, 2""",
        {"bucket": bucket_seconds, "service": service, "minutes": minutes},
    ).fetchall()
    columns = ["bucket", "revision", "requests", "p50", "p95", "p99", "errors_4xx", "errors_5xx", "seconds"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["rate"] = frame["requests"] / frame.pop("seconds").astype(float).clip(lower=1.0)
    return frame


def backtest_forecasts(version: ModelVersion, series_id: str) -> pd.DataFrame:
    """The version's stored backtest forecasts of the series: cutoff, ds, y (actual), mean, bounds."""
    rows = ((version.backtest or {}).get("forecasts") or {}).get(series_id, [])
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["cutoff"], frame["ds"] = pd.to_datetime(frame["cutoff"]), pd.to_datetime(frame["ds"])
    return frame


def drift_windows(
    conn: psycopg.Connection, report_id: int, series_id: str, feature: str
) -> dict[str, list[float]] | None:
    """The reference and current values a report (the one the page shows: ``drift_rows``) compared
    for a series' feature."""
    row = conn.execute(
        """SELECT f FROM drift_reports, jsonb_array_elements(series -> %s -> 'input') AS f
           WHERE id = %s AND f ->> 'feature' = %s""",
        (series_id, report_id, feature),
    ).fetchone()
    if row is None or "reference" not in row[0]:
        return None
    return {"reference": row[0]["reference"], "current": row[0]["current"]}


def accuracy_history(conn: psycopg.Connection, series_id: str) -> pd.DataFrame:
    """Realized one-step RMSE of the served model at each of the last ``HISTORY_REPORTS`` drift
    checks, with the backtest's RMSE (the expectation) and the verdict: accuracy drifts by a
    permutation test's p-value against its level alpha (``significance.flag``), not by a ratio
    (p_value, alpha, drifted; ``whole`` as in ``drift_history``)."""
    rows = conn.execute(
        """SELECT created_at, (a ->> 'realized_rmse')::float8, (a ->> 'backtest_rmse')::float8,
                  (a ->> 'p_value')::float8, (a ->> 'alpha')::float8, coalesce((a ->> 'drifted')::boolean, false),
                  whole
           FROM (SELECT id, created_at, series, data_sha256 IS NOT NULL AS whole
                 FROM drift_reports ORDER BY id DESC LIMIT %s) AS r,
                LATERAL (SELECT series -> %s -> 'accuracy' AS a) AS x
           WHERE jsonb_typeof(a) = 'object' ORDER BY id""",
        (HISTORY_REPORTS, series_id),
    ).fetchall()
    columns = ["created_at", "realized_rmse", "backtest_rmse", "p_value", "alpha", "drifted", "whole"]
    return pd.DataFrame(rows, columns=columns)


def rollouts(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rollouts, newest first: id, service, blue, green, phase, weight, updated_at and
    finalized_at (set once the rollout is settled: the loser retired, or a later rollout took over)."""
    rows = conn.execute(
        """SELECT id, service, blue_revision, green_revision, phase, weight, updated_at, finalized_at
           FROM rollouts ORDER BY id DESC LIMIT %s""",
        (limit,),
    ).fetchall()
    keys = ("id", "service", "blue", "green", "phase", "weight", "updated_at", "finalized_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def rollout_events(conn: psycopg.Connection, rollout_id: int) -> pd.DataFrame:
    """A rollout's events in order: ts, action, phase, step, weight (green %), reason, checks."""
    rows = conn.execute(
        """SELECT ts, action, phase, step, weight, failed_checks, reason, checks
           FROM rollout_events WHERE rollout_id = %s ORDER BY id""",
        (rollout_id,),
    ).fetchall()
    columns = ["ts", "action", "phase", "step", "weight", "failed_checks", "reason", "checks"]
    return pd.DataFrame(rows, columns=columns)


def serving_events(conn: psycopg.Connection, service: str = "inference", minutes: int = 60) -> pd.DataFrame:
    """Markers for the serving charts: revision starts (cold starts) and rollout promotions and
    rollbacks, each with ts, kind, revision and a label."""
    rows = conn.execute(
        """SELECT ts, 'start' AS kind, revision,
                  format('%%s ready in %%s s', revision, round(start_to_ready_s::numeric, 2))
           FROM revision_starts WHERE service = %(service)s AND ts >= now() - make_interval(mins => %(minutes)s)
           UNION ALL
           SELECT e.ts, e.action, r.green_revision, format('%%s %%s: %%s', e.action, r.green_revision, e.reason)
           FROM rollout_events e JOIN rollouts r ON r.id = e.rollout_id
           WHERE r.service = %(service)s AND e.action IN ('promote', 'rollback')
             AND e.ts >= now() - make_interval(mins => %(minutes)s)
           ORDER BY 1""",
        {"service": service, "minutes": minutes},
    ).fetchall()
    return pd.DataFrame(rows, columns=["ts", "kind", "revision", "label"])


def registry(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every model version, newest first, as the Models page lists it: status (and why), family,
    the data's cut-off, the backtest setup, the median RMSE over naive at h=1 across its series,
    and the gates' verdict. Reads those alone: every version's whole backtest and gate report had
    been read and parsed for a table that shows a few fields of them."""
    rows = conn.execute(
        """SELECT id, status, family, data_as_of, created_at, cardinality(series_ids), backtest -> 'spec',
                  (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (m ->> 'rmse_ratio_naive@h1')::float8)
                   FROM jsonb_each(backtest -> 'metrics') AS s (series_id, m)),
                  CASE WHEN gate_report IS NULL OR gate_report = '{}' THEN 'not gated'
                       WHEN (gate_report ->> 'passed')::boolean THEN 'passed' ELSE 'failed' END,
                  status_reason
           FROM model_versions ORDER BY created_at DESC, id"""
    ).fetchall()
    return [
        {
            "id": id,
            "status": status,
            "family": family,
            "data_as_of": f"{data_as_of:%Y-%m-%d}",
            "created": f"{created:%Y-%m-%d %H:%M}",
            "series": series,
            "backtest": backtest_setup(spec),
            "rmse_ratio_naive_h1": None if ratio is None else round(ratio, 3),
            "gates": gates,
            "status_reason": reason or "",
        }
        for id, status, family, data_as_of, created, series, spec, ratio, gates, reason in rows
    ]


def backtest_setup(spec: dict[str, Any] | None) -> str:
    """A backtest's spec (a version's ``backtest["spec"]``) in words: steps, windows, how the model
    was refitted."""
    if not spec:
        return "none"
    refit = "refit at every origin" if spec.get("refit_every", 1) == 1 else f"refit every {spec['refit_every']}"
    return f"h=1..{spec['h']}, {spec['windows']} windows, {spec.get('window', 'expanding')}, {refit}"


def _median_metric(version: ModelVersion, name: str) -> float | None:
    values = [m[name] for m in ((version.backtest or {}).get("metrics") or {}).values() if name in m]
    return round(float(pd.Series(values).median()), 3) if values else None


def horizon_medians(version: ModelVersion) -> list[dict[str, Any]]:
    """Per horizon step, the median over the version's series of RMSE over naive and of 80/95%
    coverage, and how many series beat naive significantly (DM p < 0.05 with a ratio below 1)."""
    metrics = (version.backtest or {}).get("metrics") or {}
    steps = int(((version.backtest or {}).get("spec") or {}).get("h", 0))
    rows = []
    for k in range(1, steps + 1):
        per = [m for m in metrics.values() if f"n@h{k}" in m]
        if not per:
            continue
        beats = sum(1 for m in per if m.get(f"dm_p_naive@h{k}", 1) < 0.05 and m.get(f"rmse_ratio_naive@h{k}", 1) < 1)
        rows.append(
            {
                "h": k,
                "series": len(per),
                "median RMSE / naive": _median_metric(version, f"rmse_ratio_naive@h{k}"),
                "beats naive (DM p<0.05)": beats,
                "median 80% coverage": _median_metric(version, f"coverage-80@h{k}"),
                "median 95% coverage": _median_metric(version, f"coverage-95@h{k}"),
            }
        )
    return rows


def gate_checks(version: ModelVersion) -> list[dict[str, Any]]:
    """The gate report's checks (rule, series, step, metric, values, p-values, verdict) and the
    rules it skipped, with why."""
    report = version.gate_report or {}
    rows = [
        {
            "rule": c["rule"],
            "series": c["series_id"],
            "h": c["step"],
            "metric": c["metric"],
            "candidate": round(c["candidate"], 4),
            "serving": None if c["serving"] is None else round(c["serving"], 4),
            "p": round(c["p_value"], 4),
            "p (Holm)": round(c["p_adjusted"], 4),
            "alpha": c["alpha"],
            "result": "pass" if c["passed"] else "FAIL",
        }
        for c in sorted(report.get("checks", []), key=lambda c: c["passed"])  # failures first
    ]
    rows += [
        {"rule": s["rule"], "series": s.get("series_id", "all"), "result": f"skipped: {s['reason']}"}
        for s in report.get("skipped", [])
    ]
    return rows


def version_rollouts(conn: psycopg.Connection, version_id: str) -> list[dict[str, Any]]:
    """The rollouts that moved traffic to the version: service, revisions, phase, green %, when."""
    rows = conn.execute(
        """SELECT id, service, blue_revision, green_revision, phase, weight, created_at, updated_at
           FROM rollouts WHERE green_model_version = %s ORDER BY id DESC""",
        (version_id,),
    ).fetchall()
    keys = ("id", "service", "from", "to", "phase", "green %", "started", "updated")
    return [
        {k: f"{v:%Y-%m-%d %H:%M}" if isinstance(v, datetime) else v for k, v in zip(keys, r, strict=True)} for r in rows
    ]
