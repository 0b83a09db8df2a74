"""The ingest function's app: observations in (JSON, FRED-style CSV, CloudEvents), series metadata.

Every write needs ``Authorization: Bearer $PEFM_INGEST_TOKEN``; observations may instead carry the
OIDC token of a Knative Eventing sender allowed to ingest (``pefm.serving.oidc``). A payload is parsed and checked
whole, then written whole or not at all: a small one (a streamed event, at most ``STREAM_ROWS``
rows) in one transaction with the others that arrive with it (``pefm.serving.group_commit``), a
large one (a CSV upload) on its own by COPY. Either way the answer comes after the commit.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pefm.config import Settings
from pefm.data.calendars import calendar_names
from pefm.data.fields import CONTROL_CHARS, EXPECTED_TIMESTAMP, SERIES_ID, parse_timestamp
from pefm.data.fred_csv import parse_fred_csv
from pefm.data.frequency import Frequency, parse_frequency
from pefm.data.json_payload import (
    MAX_SERIES,
    ObservationsPayload,
    SeriesPayload,
    observations_from_object,
    parse_observations_json,
)
from pefm.data.transforms import TRANSFORMS
from pefm.data.validation import Issue, Issues, ValidationError, check_frequency, check_known_by, check_transform
from pefm.serving.cache import OBSERVATIONS, Cache
from pefm.serving.group_commit import WHOLE_GROUP_ERRORS, Busy, GroupCommit
from pefm.serving.http import (
    ApiError,
    HotApp,
    HotRoute,
    Slots,
    Turn,
    check_query,
    handled,
    hot_route,
    in_database,
    json_response,
    off_loop,
    parse_cloudevent,
    parse_json,
    read_body,
    require_bearer,
    service_routes,
    unavailable,
)
from pefm.serving.observability import ServiceMetrics
from pefm.serving.ratelimit import RateLimit
from pefm.storage.database import Database
from pefm.storage.observations import (
    Event,
    UnknownSeriesError,
    VintageConflictError,
    WriteResult,
    stamp_text,
    try_turn,
    weekly_anchors,
    write_events,
    write_observations,
)
from pefm.storage.series import SeriesInUseError, SeriesMeta, get_series, get_series_many, upsert_series

log = logging.getLogger(__name__)
EVENT_TYPE = "dev.pefm.observations"
_SERIES_FIELDS = {
    "name": 200,
    "frequency": 8,
    "unit": 64,
    "transform": 32,
    "source": 200,
    "description": 2000,
    "calendar": 32,
}
"""The series fields a PUT may set, each with its longest accepted length."""
STREAM_ROWS = 1000
"""Writes of at most this many rows are group-committed with the others that arrive with them;
larger ones (CSV uploads) are written on their own, by COPY."""
LARGE_BODY_BYTES = 1024 * 1024
"""A body over this size is a large write (``PEFM_INGEST_LARGE_WRITES``): its parse takes about
eight times its size in memory."""
LARGE_QUEUE_SECONDS = 30.0
"""How long a large write waits for its turn before a 503 with Retry-After: with the body's own
30 s (``PEFM_BODY_TIMEOUT_SECONDS``) and the write, within the 120 s Knative gives an ingest
request (``timeoutSeconds``), past which the client gets a 504 for a write that still commits."""
REFUSED = frozenset({400, 404, 409, 413, 415, 422})
"""Statuses that refuse a write for what it holds (``pefm_ingest_refused_total``)."""


class IngestService:
    def __init__(self, settings: Settings, db: Database, metrics: ServiceMetrics, cache: Cache):
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.cache = cache
        self.announcers = _announcers(cache, settings.sink, settings.event_token)
        self.limit = RateLimit(settings.rate_limit, cache)
        self.large = Slots(settings.ingest_large_writes, LARGE_QUEUE_SECONDS, "ingest is busy with other large writes")
        self.group = GroupCommit(
            self._write_group,
            max_events=settings.ingest_group_max,
            max_wait=settings.ingest_linger_ms / 1000,
            max_orders=MAX_SERIES,  # a lock each: the database's lock table is shared and finite
            write_waiting=functools.partial(self._write_group, wait=True),
            on_group=metrics.prometheus.ingest_group.observe,
        )
        self.oidc = None
        if settings.ingest_oidc_audience:
            from pefm.serving.oidc import OidcVerifier  # PyJWT and its cryptography: only where used

            self.oidc = OidcVerifier(
                settings.kubernetes_api_url, settings.ingest_oidc_audience, settings.ingest_oidc_subjects
            )

    # -- POST /v1/observations -----------------------------------------------------------------
    async def observations(self, request: Request) -> Response:
        try:
            return await self._observations(request)
        except ApiError as exc:
            if exc.status in REFUSED:  # what was sent, not who sent it or when (401, 403, 429, 503)
                self.metrics.prometheus.ingest_refused.labels(str(exc.status)).inc()
            raise

    async def _observations(self, request: Request) -> Response:
        backdate, subject = _backdate(request), None
        if backdate:
            require_bearer(request, self.settings.admin_token, "backdated vintages (backdate=1)")
        else:
            subject = await self._authorise(request)
        check_query(request, {"vintage", "backdate"}, "invalid observations request")
        await self.limit.check(request, verified=True, subject=subject)
        async with self.large.turn() as turn:
            body = await self._read(request, turn)
            payload, source = await off_loop(self._parse, body, request)
            del body
            payload = self._checked_vintage(payload, backdate)
            if sum(len(item) for item in payload.series) > STREAM_ROWS:
                await turn.take()
                result = await in_database(self._write, payload, source)
                self._announce(result)
                return json_response(result)
        keys = frozenset((item.series_id, ts) for item in payload.series for ts in item.stamps.tolist())
        series = frozenset(item.series_id for item in payload.series)
        try:
            result = await self.group.submit((payload, source), keys, series)
        except WHOLE_GROUP_ERRORS as exc:
            raise unavailable(exc) from None
        return json_response(result)

    async def _read(self, request: Request, turn: Turn) -> bytes:
        """The request's body; a large one (over LARGE_BODY_BYTES) is read in its ``turn`` of the
        large writes' slots (``PEFM_INGEST_LARGE_WRITES``): from its start when its length says
        so, else from where it passes that size (a chunked body waits holding no more). One said
        to be over the body limit takes none: its 413 comes at once, not a 503 to retry."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and LARGE_BODY_BYTES < int(declared) <= self.settings.max_body_bytes:
            await turn.take()
        return await read_body(
            request, self.settings.max_body_bytes, self.settings.body_timeout_seconds, (LARGE_BODY_BYTES, turn.take)
        )

    async def _authorise(self, request: Request) -> str | None:
        """The ingest token or, where configured, the OIDC token of a Knative Eventing sender allowed
        to ingest (a bearer token of three dot-separated parts is taken for a JWT): then its
        subject, the caller the rate limit counts (the API server issues it new tokens hourly)."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if self.oidc is not None and scheme.lower() == "bearer" and given.strip().count(".") == 2:
            return await self.oidc.verify(given.strip())
        require_bearer(request, self.settings.ingest_token, "ingest")
        return None

    def _announce(self, result: dict[str, Any]) -> None:
        """Count a committed write's rows and, when it changed data, tell the inference replicas
        (Redis) and the sink (the monitor's CloudEvent), off the request path."""
        for outcome in ("inserted", "revised", "unchanged"):
            self.metrics.prometheus.ingest_rows.labels(outcome).inc(result[outcome])
        if result["inserted"] + result["revised"]:
            for announcer in self.announcers:
                announcer.announce(result["series"])

    def _parse(self, body: bytes, request: Request) -> tuple[ObservationsPayload, str]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            event = "ce-specversion" in request.headers or content_type == "application/cloudevents+json"
            if "vintage" in request.query_params and (event or content_type not in ("text/csv", "application/csv")):
                message = "a CSV upload's parameter: JSON gives it in its body, a CloudEvent as its attribute"
                raise ValidationError("invalid vintage", [Issue(field="vintage", message=message)])
            if event:
                return _from_cloudevent(request, body), "cloudevent"
            if content_type == "application/json":
                return parse_observations_json(body), "json"
            if content_type in ("text/csv", "application/csv"):
                return _from_csv(body, request.query_params.get("vintage")), "csv"
        except ValidationError as exc:
            raise ApiError.invalid(exc, 400 if exc.malformed else 422) from None
        raise ApiError(
            415,
            f"unsupported content type {content_type or '(none)'!r}",
            [{"field": "content-type", "message": "use application/json, text/csv or a CloudEvent"}],
        )

    def _checked_vintage(self, payload: ObservationsPayload, backdate: bool) -> ObservationsPayload:
        """A vintage is when the values became known: not after now (within the allowed skew),
        and before it only when an admin says so, since it changes what past as-of reads return.
        One within the skew of this clock, either way (the sender's clock is off), and not
        backdated is stored as a write without one is (None): the moment the write holds its
        series' locks, by the database's clock. Ahead, a vintage still ahead when the replicas
        re-condition on the announced data left the values out until the series' next write;
        behind, it could land before a vintage already stored or read (rewriting as-of reads, or
        losing to an earlier write), even after waiting for its turn."""
        vintage = payload.vintage
        if vintage is None:
            return payload
        now, skew = datetime.now(UTC), timedelta(seconds=self.settings.vintage_skew_seconds)
        if vintage > now + skew:
            message = f"is after now ({now:%Y-%m-%dT%H:%M:%SZ}): nothing can be known in the future"
            raise ApiError(422, "vintage in the future", [{"field": "vintage", "message": message}])
        if vintage < now - skew and not backdate:
            message = (
                "is in the past: a backdated vintage changes what as-of reads have returned; "
                "send it with ?backdate=1 and the admin token"
            )
            raise ApiError(422, "backdated vintage", [{"field": "vintage", "message": message}])
        return payload if backdate and vintage <= now else replace(payload, vintage=None)

    def _write(self, payload: ObservationsPayload, source: str) -> dict[str, Any]:
        """A large write (a CSV upload), on its own: COPY, merged in one statement."""
        with self.db.connection() as conn, conn.transaction():
            # held FOR SHARE from the check on: a frequency change cannot slip in before the write
            metas = get_series_many(conn, [item.series_id for item in payload.series], share=True)
            self._check(payload, metas, weekly_anchors(conn, metas))
            frame = pd.concat([_frame(item) for item in payload.series], ignore_index=True)
            try:
                result = write_observations(conn, frame, vintage=payload.vintage, source=source)
            except VintageConflictError as exc:
                raise _conflict(exc, payload) from None
            except UnknownSeriesError as exc:  # deleted between the check and the write
                raise ApiError(404, str(exc)) from None
        return _answer(result, payload)

    def _write_group(
        self, items: list[tuple[ObservationsPayload, str]], wait: bool = False
    ) -> list[dict[str, Any] | Exception]:
        """Small writes (streamed events), group-committed (``pefm.serving.group_commit``): each
        checked on its own against its series, which stay held ``FOR SHARE`` until the commit.
        An event of a series another transaction is writing (a large upload, for as long as its
        COPY and merge take) is ``Busy``, and so is every later event sharing a series with it,
        so that none overtakes it: the group goes on without them instead of waiting. With
        ``wait`` (an event Busy for ``busy_patience``), it waits its turn in the lock's queue."""
        answers: list[dict[str, Any] | Exception | None] = []
        events, owners = [], []
        with self.db.connection() as conn, conn.transaction():
            ids = {item.series_id for payload, _ in items for item in payload.series}
            metas = get_series_many(conn, sorted(ids), share=True)
            held_back = set() if wait else try_turn(conn, metas)
            anchors = weekly_anchors(conn, {sid: meta for sid, meta in metas.items() if sid not in held_back})
            for payload, source in items:
                series = {item.series_id for item in payload.series}
                if series & held_back:
                    held_back |= series
                    answers.append(Busy())
                    continue
                try:
                    self._check(payload, metas, anchors)
                except ApiError as exc:
                    answers.append(exc)
                    continue
                answers.append(None)
                owners.append(len(answers) - 1)
                events.append(_event(payload, source))
                for item in payload.series:  # a weekly series' first points fix its weekday for the rest
                    if metas[item.series_id].frequency is Frequency.WEEKLY and len(item.stamps):
                        anchors.setdefault(item.series_id, pd.Timestamp(item.stamps[0]).to_pydatetime())
            intraday = {sid for sid, meta in metas.items() if meta.frequency.intraday}
            for at, result in zip(owners, write_events(conn, events, intraday) if events else [], strict=True):
                if isinstance(result, VintageConflictError):
                    answers[at] = _conflict(result, items[at][0])
                else:
                    answers[at] = _answer(result, items[at][0])
        written = [a for a in answers if isinstance(a, dict)]
        if written:  # one announcement for the group: what changed, in which series
            series = sorted({sid for answer in written for sid in answer["series"]})
            total = {k: sum(a[k] for a in written) for k in ("inserted", "revised", "unchanged")}
            self._announce({**total, "vintage": written[0]["vintage"], "series": series})
        return answers

    def _check(self, payload: ObservationsPayload, metas: dict[str, SeriesMeta], anchors: dict[str, datetime]) -> None:
        """404 for a series not in the catalog; 422 listing every value its series cannot take
        (``anchors``: ``weekly_anchors``)."""
        for item in payload.series:
            if item.series_id not in metas:
                raise ApiError(
                    404,
                    f"unknown series {item.series_id!r}",
                    [{"field": f"{item.path}series_id", "message": "create it with PUT /v1/series/{id}"}],
                )
        issues, skew, now = Issues(), timedelta(seconds=self.settings.vintage_skew_seconds), datetime.now(UTC)
        for item in payload.series:
            meta = metas[item.series_id]
            for found in (
                check_frequency(
                    item.stamps,
                    meta.frequency,
                    lines=item.lines,
                    calendar=meta.calendar,
                    anchor=anchors.get(item.series_id),
                ),
                check_transform(item.numbers, meta.transform, lines=item.lines),
                check_known_by(item.stamps, payload.vintage or now, meta.frequency, lines=item.lines, skew=skew),
            ):
                for issue in found:  # from JSON: named by the observation's path
                    path = f"{item.path}observations[{issue.index}].{issue.field}"
                    issues.append(issue if item.lines else replace(issue, field=path))
                issues.more += found.more
        if issues:
            raise ApiError.invalid(ValidationError("observations the series cannot take", issues))

    # -- PUT /v1/series/{series_id} ------------------------------------------------------------
    async def put_series(self, request: Request) -> Response:
        require_bearer(request, self.settings.ingest_token, "ingest")
        await self.limit.check(request, verified=True)
        series_id = request.path_params["series_id"]
        async with self.large.turn() as turn:
            meta = await off_loop(_series_meta, await self._read(request, turn), series_id)
        created = await in_database(self._upsert, meta)
        return json_response({"series_id": series_id, "created": created}, 201 if created else 200)

    def _upsert(self, meta: SeriesMeta) -> bool:
        with self.db.connection() as conn:
            try:
                return upsert_series(conn, meta)
            except SeriesInUseError as exc:
                raise ApiError(
                    409, str(exc), [{"field": name, "message": "fixed once data are stored"} for name in exc.fields]
                ) from None

    async def get_series(self, request: Request) -> Response:
        series_id = request.path_params["series_id"]
        meta = await in_database(self._get, series_id) if SERIES_ID.match(series_id) else None
        if meta is None:
            raise ApiError(404, f"unknown series {series_id!r}")
        return json_response({**vars(meta), "frequency": meta.frequency.value})

    def _get(self, series_id: str) -> SeriesMeta | None:
        with self.db.connection() as conn:
            return get_series(conn, series_id)


def _backdate(request: Request) -> bool:
    raw = request.query_params.get("backdate")
    if raw is None:
        return False
    if raw not in ("1", "true"):
        raise ApiError(422, "invalid backdate", [{"field": "backdate", "message": "expected 1 or true"}])
    return True


class Announcer:
    """Tells one listener which series writes changed, off the request path, from one thread of its
    own: the series written while it tells go out together next. A thread and a connection per
    write had piled up by the hundred behind a sink that did not answer, each waiting its 30 s;
    each listener its own thread, so a slow sink does not hold back the inference replicas."""

    def __init__(self, tell: Callable[[list[str]], None], name: str):
        self.tell, self.name = tell, name
        self._series: set[str] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def announce(self, series: list[str]) -> None:
        with self._changed:
            self._series.update(series)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"pefm-announce-{self.name}", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._series:
                    self._changed.wait()
                series, self._series = sorted(self._series), set()
            try:
                self.tell(series)
            except Exception:  # this one is lost; the thread must live for the next
                log.exception("announcing ingested observations to the %s failed", self.name)


def _announcers(cache: Cache, sink: str | None, token: str | None) -> list[Announcer]:
    """Who hears of changed series: every inference replica (Redis, when shared) and the sink (the
    monitor, by an "observations ingested" CloudEvent in binary mode, with the event token it asks
    of CloudEvents, on one kept connection)."""
    out = []
    if cache.shared:
        out.append(Announcer(lambda series: cache.publish(OBSERVATIONS, json.dumps({"series": series})), "replicas"))
    if sink:
        import httpx

        client = httpx.Client(timeout=30)  # a drift check answers once it has run

        def send(series: list[str]) -> None:
            import uuid

            headers = {
                "ce-specversion": "1.0",
                "ce-type": "dev.pefm.observations.ingested",
                "ce-source": "pefm-ingest",
                "ce-id": uuid.uuid4().hex,
                "content-type": "application/json",
                **({"authorization": f"Bearer {token}"} if token else {}),
            }
            try:
                response = client.post(sink, json={"series": series}, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("could not announce ingested observations to %s: %s", sink, exc)
                return
            if not response.is_success:  # a token the monitor refuses: no drift check follows an ingest, say so
                log.warning(
                    "%s refused the announcement of ingested observations: %s %s",
                    sink,
                    response.status_code,
                    response.text[:200],
                )

        out.append(Announcer(send, "sink"))
    return out


def create_ingest_app(settings: Settings, db: Database, metrics: ServiceMetrics, cache: Cache, openapi: dict) -> HotApp:
    """The ingest ASGI app: POST /v1/observations, where streamed events arrive, as a hot route."""
    service = IngestService(settings, db, metrics, cache)

    def routes() -> list[Route]:
        return [
            Route("/v1/series/{series_id}", handled(service.put_series), methods=["PUT"]),
            Route("/v1/series/{series_id}", handled(service.get_series), methods=["GET"]),
            *service_routes(metrics.endpoint, openapi),
        ]

    return HotApp({HotRoute("POST", "/v1/observations"): hot_route(service.observations)}, routes)


def _answer(result: WriteResult, payload: ObservationsPayload) -> dict[str, Any]:
    return {
        "inserted": result.inserted,
        "revised": result.revised,
        "unchanged": result.unchanged,
        "vintage": result.vintage.isoformat() if result.vintage else None,
        "series": [item.series_id for item in payload.series],
    }


def _conflict(exc: VintageConflictError, payload: ObservationsPayload) -> ApiError:
    """The 409 for a write that would change values stored at its vintage, naming each one as a
    422 names an observation: its ``observations[i].value`` (JSON) or line (CSV); the first
    MAX_DETAILS, then ``truncated`` and ``more``, as a 422 does."""
    items = {item.series_id: item for item in payload.series}
    details = []
    for series_id, ts, vintage, new, old in exc.rows:
        item = items[series_id]
        at = int(np.flatnonzero(item.stamps == np.datetime64(ts.astimezone(UTC).replace(tzinfo=None), "ns"))[0])
        message = (
            f"{series_id} {stamp_text(ts)}: {old!r} is stored at vintage {vintage.isoformat()}, "
            f"a value there cannot change (got {new!r})"
        )
        where = {"line": item.lines[at]} if item.lines else {"index": at}
        field = "value" if item.lines else f"{item.path}observations[{at}].value"
        details.append({**where, "field": field, "message": message})
    return ApiError(409, str(exc), details, extra={"truncated": True, "more": exc.more} if exc.more else None)


def _event(payload: ObservationsPayload, source: str) -> Event:
    ids, stamps, values = [], [], []
    for item in payload.series:
        ids += [item.series_id] * len(item)
        stamps += [ts.replace(tzinfo=UTC) for ts in item.stamps.astype("datetime64[us]").tolist()]
        values += item.numbers.tolist()
    return Event(ids, stamps, values, payload.vintage, source)


def _frame(item: SeriesPayload) -> pd.DataFrame:
    return pd.DataFrame({"series_id": item.series_id, "ts": item.stamps, "value": item.numbers})


def _from_csv(body: bytes, vintage: str | None) -> ObservationsPayload:
    parsed = parse_fred_csv(body)
    stamp = None
    if vintage is not None:
        stamp = parse_timestamp(vintage)
        if stamp is None:
            raise ValidationError("invalid CSV upload", [Issue(field="vintage", message=EXPECTED_TIMESTAMP)])
    if parsed.values.empty:
        raise ValidationError("invalid CSV upload", [Issue(field="body", message="no values (all missing)")])
    item = SeriesPayload.from_series(parsed.values.rename(parsed.series_id), "", parsed.lines)
    return ObservationsPayload([item], stamp)


def _from_cloudevent(request: Request, body: bytes) -> ObservationsPayload:
    event = parse_cloudevent(request, body, {EVENT_TYPE})
    data = event.get_data()
    data_type = (event.get("datacontenttype") or "application/json").split(";")[0].strip().lower()
    if data is None:
        raise ValidationError("invalid CloudEvent", [Issue(field="data", message="the event has no data")])
    if isinstance(data, dict | list):
        payload = observations_from_object(data)
    elif not isinstance(data, str | bytes):  # a number: bytes(n) would be n zero bytes
        message = f"expected an object, or text for datacontenttype {data_type}, not {type(data).__name__}"
        raise ValidationError("invalid CloudEvent", [Issue(field="data", message=message)])
    elif data_type in ("text/csv", "application/csv"):
        return _from_csv(data.encode() if isinstance(data, str) else data, event.get("vintage"))
    elif data_type == "application/json":
        payload = parse_observations_json(data.encode() if isinstance(data, str) else data)
    else:
        message = f"unsupported {data_type!r}"
        raise ValidationError("invalid CloudEvent", [Issue(field="datacontenttype", message=message)])
    return _with_event_vintage(payload, event.get("vintage"))


def _with_event_vintage(payload: ObservationsPayload, raw: object) -> ObservationsPayload:
    """A JSON payload under the event's ``vintage`` extension attribute (as a CSV one is): the
    payload's own vintage, where it gives one, must be the same moment."""
    if raw is None:
        return payload
    stamp = parse_timestamp(raw)
    if stamp is None:
        raise ValidationError("invalid CloudEvent", [Issue(field="vintage", message=EXPECTED_TIMESTAMP)])
    if payload.vintage is not None and payload.vintage != stamp:
        message = f"the event says {stamp.isoformat()}, its data {payload.vintage.isoformat()}"
        raise ValidationError("invalid CloudEvent", [Issue(field="vintage", message=message)])
    return replace(payload, vintage=stamp)


def _series_meta(body: bytes, series_id: str) -> SeriesMeta:
    issues = []
    if not SERIES_ID.match(series_id):
        issues.append(Issue(field="series_id", message="expected lower case letters, digits, _ . - (max 64)"))
    data = parse_json(body) if body else None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid series", [{"field": "body", "message": "expected a JSON object"}])
    issues += [Issue(field=k, message="unexpected field") for k in sorted(set(data) - set(_SERIES_FIELDS))]
    for key in sorted(set(data) & set(_SERIES_FIELDS)):
        if not isinstance(data[key], str):
            issues.append(Issue(field=key, message="expected a string"))
        elif len(data[key]) > _SERIES_FIELDS[key]:
            issues.append(Issue(field=key, message=f"longer than {_SERIES_FIELDS[key]} characters"))
        elif CONTROL_CHARS.search(data[key]):
            issues.append(Issue(field=key, message="contains a control character"))
    if not str(data.get("name") or "").strip():
        issues.append(Issue(field="name", message="required"))
    frequency = None
    try:
        frequency = parse_frequency(str(data.get("frequency", "")))
    except ValueError as exc:
        issues.append(Issue(field="frequency", message=str(exc)))
    transform = data.get("transform", "none")  # a string, or said above
    if isinstance(transform, str) and transform not in TRANSFORMS:
        issues.append(Issue(field="transform", message=f"expected one of {sorted(TRANSFORMS)}"))
    if calendar := data.get("calendar"):
        if frequency is not Frequency.BUSINESS_DAILY:
            issues.append(Issue(field="calendar", message="only a business-daily (B) series has an exchange calendar"))
        elif isinstance(calendar, str) and calendar not in calendar_names():
            message = f"unknown exchange calendar {calendar[:40]!r}: a MIC such as XNYS, or an alias"
            issues.append(Issue(field="calendar", message=message))
    if issues:
        raise ApiError.invalid(ValidationError("invalid series", issues))
    return SeriesMeta(
        id=series_id,
        name=data["name"].strip(),
        frequency=frequency,
        **{k: data[k] for k in ("unit", "transform", "source", "description", "calendar") if k in data},
    )
