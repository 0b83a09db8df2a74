"""HTTP plumbing shared by the functions: JSON errors, body limits, bearer auth, the outer guard.

Every error leaves as JSON ``{error, details: [...]}``. Nothing escapes ``guard``: func-python
would turn an escaping exception into a broken 500 (it builds the body from a str).

Starlette is imported where it is first used, not with this module: an inference revision's hot
route answers its first forecast without it (importing it is ~13 ms of the ~220 ms from a
revision's spawn to that forecast).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from psycopg_pool import PoolTimeout

from pefm.data import strict_json
from pefm.data.fields import parse_timestamp
from pefm.data.validation import ValidationError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger("pefm.serving")
_LOGGED = "pefm.error_logged"  # set in a request's scope once its error is logged
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class ClientGone(Exception):
    """The client went away before its request's body arrived (``receive_body``)."""


class ApiError(Exception):
    """An error response: HTTP status, message, optional details and headers."""

    def __init__(
        self,
        status: int,
        error: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []
        self.headers = headers or {}
        self.extra = extra or {}

    @classmethod
    def invalid(cls, exc: ValidationError, status: int = 422) -> ApiError:
        body = exc.to_dict()
        return cls(status, body.pop("error"), body.pop("details"), extra=body)

    def response(self) -> Response:
        return json_response({"error": self.error, "details": self.details, **self.extra}, self.status, self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    from starlette.responses import Response

    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        status,
        headers=headers,
        media_type="application/json",
    )


async def read_body(
    request: Request, limit: int, timeout: float, large: tuple[int, Callable[[], Awaitable[None]]] | None = None
) -> bytes:
    """The whole body of ``request`` (``receive_body``)."""
    declared = request.headers.get("content-length")
    return await receive_body(request.receive, declared and declared.encode("latin-1"), limit, timeout, large)


CLOSE = {"Connection": "close"}
"""The header of an answer sent before its request's body was all read: the connection cannot be reused."""
DRAIN_BYTES = 1024 * 1024
"""How much of a body is still read, and dropped, before an answer that did not need it goes
(a 413, ``_too_large``; a refusal, ``RequestBody.settle``)."""
SETTLE_SECONDS = 2.0
"""How long an answer given before its request's body was read waits for the rest of it."""


async def receive_body(
    receive: Callable,
    declared: bytes | None,
    limit: int,
    timeout: float,
    large: tuple[int, Callable[[], Awaitable[None]]] | None = None,
) -> bytes:
    """The whole body, from an ASGI ``receive`` and the request's Content-Length (``declared``);
    ApiError 413 as soon as it passes ``limit`` bytes (``_too_large``), 408 when it has not all
    arrived ``timeout`` seconds after the request (a client trickling a byte at a time would
    otherwise hold the connection for as long as it likes). The deadline is armed only once a
    message has to be waited for: a small body is all there when the request starts, and a timer
    per request cost the forecast path ~3 µs (measured: 1.1 µs a body without it, 4.2-5.3 with
    ``asyncio.timeout``). With ``large`` = (bytes, wait): once the body passes that size, ``wait``
    is awaited (a turn, ``Slots``) before more is read, so that a body of unsaid length holds no
    more than that while it waits; the deadline moves by the wait."""
    loop = asyncio.get_running_loop()
    chunks, size, deadline = [], 0, loop.time() + timeout
    if declared and declared.isdigit() and int(declared) > limit:
        error = f"body of {declared.decode()} bytes is over the limit of {limit} bytes"
        raise await _too_large(receive, error, deadline, drain=int(declared) <= limit + DRAIN_BYTES)
    while True:
        done, message = _now(receive())
        if not done:
            try:
                async with asyncio.timeout_at(deadline):  # one deadline for the whole body
                    message = await message
            except TimeoutError:
                raise ApiError(408, f"the body did not arrive within {timeout:g} s", headers=CLOSE) from None
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                error = f"body is over the limit of {limit} bytes"
                raise await _too_large(receive, error, deadline, more=more)
            chunks.append(chunk)
            if large is not None and size > large[0]:
                waited_from, wait, large = loop.time(), large[1], None
                try:
                    await wait()
                except ApiError:  # no turn: a body too large for any turn gets its 413, not a 503 to retry
                    deadline += loop.time() - waited_from
                    if more and (rest := await _skip(receive, limit - size, deadline))[0] > limit - size:
                        error = f"body is over the limit of {limit} bytes"
                        raise await _too_large(receive, error, deadline, more=rest[1]) from None
                    raise
                deadline += loop.time() - waited_from
            if not more:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientGone()


async def _too_large(
    receive: Callable, error: str, deadline: float, *, more: bool = True, drain: bool = True
) -> ApiError:
    """The 413 for a body over the limit, ``more`` of it still to come. With ``drain``, that rest
    is read and dropped first (``_drain``); otherwise, or past the drain's bounds, the answer says
    the connection closes."""
    if drain and more:
        more = await _drain(receive, deadline)
    return ApiError(413, error, headers=CLOSE if more else None)


async def _skip(receive: Callable, bound: int, deadline: float) -> tuple[int, bool]:
    """Read and drop the rest of a request's body until it ends, passes ``bound`` bytes or
    ``deadline`` comes: the bytes read, and whether some of it is still unread."""
    read, more = 0, True
    try:
        async with asyncio.timeout_at(deadline):
            while more and read <= bound:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone()
                read += len(message.get("body", b""))
                more = message.get("more_body", False)
    except TimeoutError:
        pass
    return read, more


async def _drain(receive: Callable, deadline: float) -> bool:
    """Read and drop the rest of a request's body, up to DRAIN_BYTES and until ``deadline``;
    whether some of it is still unread. A connection closed with data still unread is reset, and
    a reset can reach the client before the answer does (it then sees the connection drop, not
    the answer); once the body is all read, the connection stays usable."""
    return (await _skip(receive, DRAIN_BYTES, deadline))[1]


class RequestBody:
    """A request's ASGI ``receive`` that remembers whether the body has all been read, so that an
    answer sent before it was (a 401, 404 or 429 needs no body) reads the rest first
    (``settle``). The server (hypercorn) reuses a connection only when the request's body has all
    arrived by the time the answer ends; otherwise it closes it without saying so, and the
    client's next request on it finds it gone."""

    __slots__ = ("_receive", "done")

    def __init__(self, scope: dict, receive: Callable):
        self._receive = receive
        self.done = not any(n in (b"content-length", b"transfer-encoding") and v != b"0" for n, v in scope["headers"])

    async def __call__(self) -> dict:
        message = await self._receive()
        if not message.get("more_body", False):
            self.done = True
        return message

    async def settle(self, start: dict) -> dict:
        """The ``http.response.start`` message ``start``, sent once the unread rest of the body
        has been read and dropped (``_drain``, for up to SETTLE_SECONDS); with ``Connection:
        close`` when it could not all be."""
        headers = start.get("headers", [])
        if self.done or any(n.lower() == b"connection" and v.lower() == b"close" for n, v in headers):
            return start
        try:
            more = await _drain(self, asyncio.get_running_loop().time() + SETTLE_SECONDS)
        except ClientGone:
            more = True
        return start if not more else {**start, "headers": [*headers, (b"connection", b"close")]}

    def sending(self, send: Callable) -> Callable:
        """``send``, with the answer's start settled first (``settle``)."""

        async def settling_send(message: dict) -> None:
            await send(await self.settle(message) if message["type"] == "http.response.start" else message)

        return settling_send


def _now(awaitable: Awaitable) -> tuple[bool, Any]:
    """(True, its result) when ``awaitable`` (a coroutine) completes without waiting; else
    (False, an awaitable of the rest of it, which must be awaited). A coroutine is stepped once
    here, as ``await`` would step it; ``_rest`` goes on from where that step stopped."""
    if type(awaitable) is not types.CoroutineType:
        return False, awaitable
    try:
        waiting_on = awaitable.send(None)
    except StopIteration as done:
        return True, done.value
    return False, _rest(awaitable, waiting_on)


@types.coroutine
def _rest(coroutine: types.CoroutineType, waiting_on: Any):
    """The rest of a coroutine that was stepped once and waits on ``waiting_on``: what ``await``
    does with it, by hand (its task waits on what it yields; what the task throws in, such as a
    deadline's cancellation, is thrown into the coroutine)."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:
            step, value = coroutine.throw, exc
        else:
            step, value = coroutine.send, sent
        try:
            waiting_on = step(value)
        except StopIteration as done:
            return done.value


INLINE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop (a thread hop would cost more than the
parse); larger ones on the thread pool, so a 15 MB upload cannot stall health checks."""


async def off_loop(parse: Callable[..., Any], body: bytes, *args: Any) -> Any:
    """``parse(body, *args)``, on the thread pool when the body is large."""
    if len(body) <= INLINE_BYTES:
        return parse(body, *args)
    return await in_thread(parse, body, *args)


class Slots:
    """At most ``n`` of some costly work at once, per process. A request takes a turn
    (``turn``); one that has waited ``queue_seconds`` for a slot gets a 503 with Retry-After
    saying what the slots are ``busy`` with."""

    def __init__(self, n: int, queue_seconds: float, busy: str):
        self._free = asyncio.Semaphore(n)
        self.queue_seconds, self.busy = queue_seconds, busy

    def turn(self) -> Turn:
        """A context for one request: its ``take`` waits for a slot (once; again is a no-op),
        its ``give`` hands it back early, and leaving the context gives back what is held."""
        return Turn(self)

    async def _take(self) -> None:
        try:
            await asyncio.wait_for(self._free.acquire(), self.queue_seconds)
        except TimeoutError:
            raise ApiError(503, f"{self.busy}; retry shortly", headers={"Retry-After": "2"}) from None


class Turn:
    """One request's turn of ``Slots`` (``Slots.turn``): held from ``take`` to ``give`` or the
    context's end."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: Slots):
        self._slots, self._held = slots, False

    async def take(self) -> None:
        if not self._held:
            await self._slots._take()
            self._held = True

    def give(self) -> None:
        if self._held:
            self._held = False
            self._slots._free.release()

    async def __aenter__(self) -> Turn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.give()


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on Starlette's thread pool, so the event loop goes on meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def parse_json(body: bytes) -> Any:
    """A request body as JSON, read strictly (``pefm.data.strict_json``); ApiError 400 saying
    what is malformed."""
    try:
        return strict_json.loads(body)
    except ValidationError as exc:
        raise ApiError.invalid(exc, 400) from None


def check_query(request: Request, allowed: set[str], error: str, repeated: str = "given more than once") -> None:
    """ApiError 422 (``error``, each field named) for a query parameter not in ``allowed`` or one
    given twice: either would be dropped without a word (a misspelt ``vintge`` storing values as
    known now, the first of two vintages lost)."""
    query = request.query_params
    details = [{"field": k, "message": "unexpected parameter"} for k in sorted(set(query) - allowed)]
    details += [{"field": k, "message": repeated} for k in sorted(set(query) & allowed) if len(query.getlist(k)) > 1]
    if details:
        raise ApiError(422, error, details)


def require_bearer(request: Request, token: str | None, what: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (constant-time compare)."""
    if not token:
        raise ApiError(
            401,
            f"{what} is disabled: no token is configured on this service",
            headers={"WWW-Authenticate": "Bearer"},
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, f"{what} needs Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "the token is not valid for " + what)


RawHandler = Callable[[dict, Callable, Callable], Awaitable[int]]
"""A hot route's handler: an ASGI handler that answers whatever happens, errors included, and
returns the status it answered with."""


class HotRoute(NamedTuple):
    """A hot route, as a request's scope records it (``route_template`` reads its path)."""

    method: str
    path: str


class HotApp:
    """An ASGI app whose hot routes skip Starlette: their requests go straight to their
    ``RawHandler``, with no router, middleware, exception handlers or task group on the way (for a
    streamed event, ~20% of the ingest process's CPU). ``guard`` calls them itself. Everything
    else, and everything when mounted under a root path, goes to ``app``: a Starlette app of the
    hot routes and ``routes()``, made when the first request needs it."""

    def __init__(self, hot: dict[HotRoute, RawHandler], routes: Callable[[], list]):
        self._hot = {(route.method, route.path): (route, handler) for route, handler in hot.items()}
        self._routes = routes
        self._app: ASGIApp | None = None

    @property
    def app(self) -> ASGIApp:
        if self._app is None:
            from starlette.routing import Route

            hot = [Route(r.path, RawEndpoint(handler), methods=[r.method]) for r, handler in self._hot.values()]
            self._app = json_app([*hot, *self._routes()])
        return self._app

    def hot(self, scope: dict) -> RawHandler | None:
        """The handler of the hot route an HTTP request's ``scope`` asks, if it asks one."""
        found = self._hot.get((scope["method"], scope["path"]))
        if found is None or scope.get("root_path"):
            return None
        scope["route"] = found[0]  # as Starlette's router records its route: the metrics' route label
        return found[1]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.hot(scope) if scope["type"] == "http" else None
        await (self.app if handler is None else handler)(scope, receive, send)


def hot_route(endpoint: Callable[[Request], Awaitable[Response]]) -> RawHandler:
    """A request -> response endpoint as a hot route's handler: ApiErrors answered as their JSON,
    a client gone before its body arrived as 499 with nothing sent, anything else as
    ``internal_error``'s 500."""

    from starlette.requests import Request

    async def handle(scope: dict, receive: Callable, send: Callable) -> int:
        body = RequestBody(scope, receive)
        request = Request(scope, body)
        try:
            response = await endpoint(request)
        except ApiError as exc:
            response = exc.response()
        except ClientGone:
            return 499
        except Exception as exc:
            response = internal_error(scope, request.method, request.url.path, exc)
        await response(scope, body, body.sending(send))
        return response.status_code

    return handle


class RawEndpoint:
    """A ``RawHandler`` as a Route's endpoint, for where the app is mounted and Starlette routes
    (Starlette calls an instance as ASGI; functions and methods it wraps as request -> response)."""

    def __init__(self, handle: RawHandler):
        self.handle = handle

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.handle(scope, receive, send)


def guard(app: ASGIApp, *, on_request: Callable[[dict, int, float], None] | None = None) -> ASGIApp:
    """Wrap an ASGI app so that no exception escapes (a JSON 500 is sent if nothing was yet) and
    ``on_request(scope, status, seconds)`` sees every HTTP request. A ``HotApp``'s hot routes are
    called straight, with no send wrapped per request to learn the status.

    The seconds are the service's own: from the request's arrival, or from the moment its body
    had all arrived when it was read. A client sending its body slowly (on purpose or over a slow
    link) does not make the revision look slow, which a rollout's latency check would hold
    against it."""
    hot = app.hot if isinstance(app, HotApp) else None

    def observe(scope: dict, status: int, started: float) -> None:
        if on_request is not None:
            try:
                on_request(scope, status, time.perf_counter() - scope.get(_BODY_AT, started))
            except Exception:
                log.exception("request observer failed")

    async def guarded(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        receive = _timing_body(scope, receive)
        if hot is not None and (handler := hot(scope)) is not None:
            try:
                status = await handler(scope, receive, send)
            finally:
                observe(scope, status, started)
            return
        response_started = False
        body = RequestBody(scope, receive)
        settling_send = body.sending(send)

        async def tracking_send(message: dict) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await settling_send(message)

        try:
            await app(scope, body, tracking_send)
        except Exception:  # the last line of defence: log it, answer 500 if we still can
            if not scope.get(_LOGGED):
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            status = 500
            if not response_started:
                body = json.dumps({"error": "internal error", "details": []}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            observe(scope, status, started)

    return guarded


_BODY_AT = "pefm.body_received"  # set in a request's scope when the last of its body arrived


def _timing_body(scope: dict, receive: Callable) -> Callable:
    """``receive``, noting in ``scope`` the moment the request's body has all arrived."""

    async def timed() -> dict:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body"):
            scope[_BODY_AT] = time.perf_counter()
        return message

    return timed


def parse_cloudevent(request: Request, body: bytes, types: set[str]):
    """The CloudEvent in a request (binary or structured mode), its data as sent (structured:
    the envelope's ``data`` value itself, a string as the string; else raw bytes); ApiError 400
    when it is malformed (a required attribute missing or empty, named as its header in binary
    mode; a ``time`` that is not a timestamp), 422 when its type is not one of ``types``."""
    from cloudevents.v1.exceptions import GenericException
    from cloudevents.v1.http import from_http

    structured = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/cloudevents+json"
    if structured:
        envelope = parse_json(body)  # the SDK's own parser takes what strict_json refuses
        attributes = envelope if isinstance(envelope, dict) else {}
        for attribute in ("datacontenttype", "dataschema", "subject", "time"):  # optional, but strings
            if attributes.get(attribute) is not None and not isinstance(attributes[attribute], str):
                raise ApiError(400, "malformed CloudEvent", [{"field": attribute, "message": "expected a string"}])
    else:
        attributes = {
            name: request.headers.get(f"ce-{name}") for name in ("specversion", "id", "source", "type", "time")
        }
    for attribute in ("specversion", "id", "source", "type"):
        if not isinstance(attributes.get(attribute), str) or not attributes[attribute]:
            field = attribute if structured else f"ce-{attribute}"
            raise ApiError(400, "malformed CloudEvent", [{"field": field, "message": "required: a non-empty string"}])
    if attributes.get("time") is not None and parse_timestamp(attributes["time"]) is None:
        field = "time" if structured else "ce-time"
        raise ApiError(400, "malformed CloudEvent", [{"field": field, "message": "expected an RFC 3339 timestamp"}])
    try:
        event = from_http(dict(request.headers), body, data_unmarshaller=lambda data: data)
    except GenericException as exc:
        raise ApiError(400, "malformed CloudEvent", [{"field": "body", "message": str(exc)}]) from None
    if structured and "data" in attributes:  # the SDK hands it back re-serialized as JSON text
        event.data = attributes["data"]
    if event["type"] not in types:
        raise ApiError(
            422,
            "unsupported CloudEvent type",
            [{"field": "type", "message": f"expected one of {sorted(types)}, got {event['type']!r}"}],
        )
    return event


SHADOW_HEADER = "X-PEFM-Shadow"
SHADOW_MAX_AGE = 120  # seconds a signature stays good: a replayed probe is not a shadow one for long
_SHADOW = "pefm.shadow"  # set in a request's scope once its shadow signature is verified


def sign_shadow(key: str, path: str, body: bytes, now: float | None = None) -> str:
    """The X-PEFM-Shadow value marking a rollout's probe (a POST to ``path`` with ``body``) as a
    shadow request: a timestamp and an HMAC-SHA256 over it, the path and the body, under the key
    the prober shares with the revisions."""
    stamp = int(time.time() if now is None else now)
    return f"t={stamp},sig={_shadow_mac(key, stamp, path, body)}"


def mark_shadow(scope: dict, value: str, path: str, body: bytes, key: str | None) -> bool:
    """Whether the POST of ``scope`` (to ``path``, with ``body``) is a rollout's shadow probe:
    ``value``, its X-PEFM-Shadow header, is a valid and fresh signature under ``key`` (without a
    key, none is). A verified one is marked in its scope, where ``is_shadow`` finds it once the
    response has gone."""
    if not key or not value:
        return False
    fields = dict(part.partition("=")[::2] for part in value.split(","))
    stamp = fields.get("t", "")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or abs(time.time() - int(stamp)) > SHADOW_MAX_AGE:
        return False
    expected = _shadow_mac(key, int(stamp), path, body)
    if not hmac.compare_digest(expected.encode(), fields.get("sig", "").encode("utf-8", "replace")):
        return False
    scope[_SHADOW] = True
    return True


def is_shadow(scope: dict) -> bool:
    """Whether the request of ``scope`` was verified as a shadow probe (``mark_shadow``)."""
    return bool(scope.get(_SHADOW))


def _shadow_mac(key: str, stamp: int, path: str, body: bytes) -> str:
    return hmac.new(key.encode(), f"{stamp}\n{path}\n".encode() + body, hashlib.sha256).hexdigest()


def route_template(scope: dict) -> str:
    """The matched route's path template (bounded label values), or 'unmatched'."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))


def method_label(scope: dict) -> str:
    """The request's method as metrics and the request log record it: HTTP's own methods, and
    any other as 'OTHER' (a client may send any token as its method: each a new series, unbounded)."""
    method = scope.get("method", "")
    return method if method in _METHODS else "OTHER"


def service_routes(metrics: Callable[[Request], Awaitable[Response]], openapi: dict) -> list:
    """The routes every service answers besides its own: ``GET /metrics`` and ``GET /openapi.json``."""
    from starlette.routing import Route

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", lambda request: json_response(openapi), methods=["GET"]),
    ]


def row_id(name: str = "id") -> str:
    """A path parameter that is a table's id, for a route's path: ``{name:row_id}``, 1 to 19 ASCII
    digits (a bigint's) as an int. Starlette's ``int`` takes any number of digits and ``int()``
    refuses more than 4,300: an id that long was a 500; it is no route now (a JSON 404)."""
    from starlette.convertors import CONVERTOR_TYPES, IntegerConvertor, register_url_convertor

    if "row_id" not in CONVERTOR_TYPES:

        class RowId(IntegerConvertor):
            regex = "[0-9]{1,19}"

        register_url_convertor("row_id", RowId())
    return "{" + name + ":row_id}"


def handled(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint whose ApiErrors become their JSON responses."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return exc.response()

    return wrapped


async def in_database(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking database work on the thread pool; the database gone -> 503 with Retry-After."""
    try:
        return await in_thread(fn, *args)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise unavailable(exc) from None


def unavailable(exc: Exception) -> ApiError:
    """The 503 for database work that failed because the database is away."""
    log.warning("database unavailable: %s", exc)
    return ApiError(503, "the database is unavailable; retry later", headers={"Retry-After": "5"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, f"no route {request.url.path}").response()


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, f"{request.method} is not allowed on {request.url.path}").response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Whatever escaped an endpoint (Starlette's error middleware catches it before ``guard``):
    logged with a request id, answered as JSON that names the id and nothing internal."""
    return internal_error(request.scope, request.method, request.url.path, exc)


def internal_error(scope: dict, method: str, path: str, exc: Exception) -> Response:
    """``_internal_error`` for a raw ASGI handler (and its body): logged once, with a request id."""
    request_id = secrets.token_hex(8)
    log.error("unhandled error on %s %s (request %s)", method, path, request_id, exc_info=exc)
    scope[_LOGGED] = True
    return json_response(
        {"error": "internal error", "details": [], "request_id": request_id}, 500, {"X-Request-Id": request_id}
    )


EXCEPTION_HANDLERS = {404: _not_found, 405: _not_allowed, Exception: _internal_error}


def json_app(routes: list) -> Starlette:
    """A Starlette app of ``routes`` whose errors are JSON. No redirects to a path with or without
    its trailing slash: Starlette's would be a 307 without a body, to the host the client named in
    its Host header (behind the router: the replica's own address); such a path is a JSON 404."""
    from starlette.applications import Starlette

    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.router.redirect_slashes = False
    return app
