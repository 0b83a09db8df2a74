"""The local traffic router: Knative's traffic block, activator and queue-proxy on one machine.

Routes each request to a revision of its service by the block's percents, or by tag
(``Host: <tag>-<service>.local`` or the path prefix ``/_tag/<tag>/``), then to the replica of that
revision with the fewest requests in flight, never past its containerConcurrency (beyond it the
request waits for a free replica, as Knative's queue-proxy queues it). A replica that refuses
connections is left out for a second and the request goes to another. The block and the
revisions' replicas live in the database (``local_traffic``, ``local_revisions``), read every few
hundred milliseconds over one connection, so ``pefm rollout`` in another process moves traffic
here. Served by uvicorn (httptools, uvloop); upstream connections are aiohttp's, kept alive and
pooled, and bodies stream through both ways.
Run: ``python -m pefm.local.router --service inference`` with LISTEN_ADDRESS and PEFM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psycopg
import yarl
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from starlette.requests import Request

from pefm.config import Settings
from pefm.serving.http import SHADOW_HEADER, ApiError, ClientGone, guard, method_label, require_bearer
from pefm.serving.log_writer import LogWriter

log = logging.getLogger("pefm.router")
SHADOW = SHADOW_HEADER.lower().encode()
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",  # a proxy's credentials: the router asks for none
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
"""One connection's fields (RFC 9110 §7.6.1), dropped both ways, and with them those its Connection names."""
FORWARDED_NOT = HOP_BY_HOP | {"host", "content-length"}  # aiohttp writes the replica's Host and the length
RELAYED_NOT = HOP_BY_HOP | {"host", "content-length", "date"}
"""Not relayed to the client either: the router's server frames the streamed answer and writes its own
Date (and no Server: the revision's passes)."""
UPSTREAM_KEEPALIVE = 4.0  # seconds; under the functions' servers' 5
UPSTREAM_TIMEOUT = 60.0
"""Seconds to connect to a replica (past it the replica is left out, as one that refuses, and the
next is tried), and for each wait on its answer (its start, then every chunk; past it, a 504):
the httpx timeout=60 the router had first. Not the whole exchange, which aiohttp's total was: a
long upload or answer that keeps moving goes on."""
DOWN_SECONDS = 1.0  # how long a replica that refused a connection is left out
QUEUE_SECONDS = 30.0  # how long a request waits for a replica under its containerConcurrency (Knative: timeoutSeconds)


@dataclass(eq=False)
class Replica:
    """One process of a revision, as the router sees it."""

    url: str
    limit: int
    """Requests it may have in flight (the revision's containerConcurrency; 0: no limit)."""
    index: int = 0
    """Its place among the revision's replicas (the metrics' ``replica`` label)."""
    in_flight: int = 0
    down_until: float = 0.0

    @property
    def free(self) -> bool:
        return not self.limit or self.in_flight < self.limit

    def to_dict(self) -> dict:
        down = self.down_until > time.monotonic()
        return {"url": self.url, "in_flight": self.in_flight, "limit": self.limit, "down": down}


class TrafficTable:
    """The service's traffic block and its revisions' replicas, refreshed from the database."""

    def __init__(self, database_url: str, service: str, every: float = 0.3):
        self.database_url, self.service, self.every = database_url, service, every
        self.targets: list[dict] = []
        self.replicas: dict[str, list[Replica]] = {}
        self.latest: str | None = None
        self._turn = 0

    async def run(self, ready: asyncio.Future) -> None:
        """Refresh every ``every`` seconds, over one connection (made again after an error); the
        first refresh settles ``ready``. Routing goes on with the last known table meanwhile."""
        conn = None
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=2)
                await self.refresh(conn)
                if not ready.done():
                    ready.set_result(None)
            except (psycopg.Error, OSError) as exc:
                if not ready.done():
                    ready.set_exception(exc)
                    return
                log.warning("traffic refresh failed: %s", exc)
                conn = None
            await asyncio.sleep(self.every)

    async def refresh(self, conn: psycopg.AsyncConnection) -> None:
        cur = await conn.execute("SELECT traffic FROM local_traffic WHERE service = %s", (self.service,))
        row = await cur.fetchone()
        cur = await conn.execute(
            """SELECT revision, urls, container_concurrency FROM local_revisions
               WHERE service = %s ORDER BY started_at""",
            (self.service,),
        )
        revisions = await cur.fetchall()
        known = {(revision, r.url, r.limit): r for revision, rs in self.replicas.items() for r in rs}
        self.replicas = {  # the replicas still listed keep their in-flight counts
            revision: [known.get((revision, url, limit)) or Replica(url, limit, i) for i, url in enumerate(urls)]
            for revision, urls, limit in revisions
        }
        self.latest = revisions[-1][0] if revisions else None
        self.targets = (
            row[0]
            if row
            else ([{"revision": self.latest, "percent": 100, "tag": None, "latest": True}] if self.latest else [])
        )

    def resolve(self, target: dict) -> str | None:
        return self.latest if target.get("latest") else target.get("revision")

    def pick(self, tag: str | None) -> str | None:
        """The revision a request goes to: the tagged one, or one drawn by the block's percents."""
        if tag is not None:
            for target in self.targets:
                if target.get("tag") == tag:
                    return self.resolve(target)
            return None
        weighted = [(self.resolve(t), t["percent"]) for t in self.targets if t["percent"] > 0]
        if not weighted:
            return None
        revisions, weights = zip(*weighted, strict=True)
        return random.choices(revisions, weights=weights)[0]

    def least_loaded(self, revision: str) -> Replica | None:
        """The replica with the fewest requests in flight among those under their limit (ties go
        round), preferring replicas not marked down; None when every one is at its limit."""
        replicas = self.replicas.get(revision) or []
        now = time.monotonic()
        up = [r for r in replicas if r.down_until <= now] or replicas
        self._turn += 1
        best = None
        for i in range(len(up)):
            replica = up[(self._turn + i) % len(up)]
            if replica.free and (best is None or replica.in_flight < best.in_flight):
                best = replica
        return best


class _TooLarge(Exception):
    pass


class _Body:
    """The request body as it arrives, stopped past the limit (``too_large`` says so, however
    the upstream client reports the failed upload) or when the client goes away (``gone``). Either
    raises in aiohttp's upload, which then drops the upstream connection: ended quietly instead,
    a chunked upload would end with its closing chunk, a truncated body the revision takes for a
    whole one, and one with a Content-Length would leave the revision waiting for the rest, the
    replica's slot held."""

    def __init__(self, receive, limit: int):
        self.receive, self.limit = receive, limit
        self.too_large = self.gone = False

    async def __aiter__(self):
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                self.too_large = True
                raise _TooLarge
            yield chunk
            if not message.get("more_body"):
                return


class Router:
    """Bodies stream through both ways under the functions' own limit (``PEFM_MAX_BODY_BYTES``:
    413 here, before a function would close the connection mid-upload). Response headers pass as
    bytes; request header values that are not UTF-8 go on as the UTF-8 of their Latin-1 reading
    (aiohttp writes headers as UTF-8). ``/_router/traffic`` (the block and the replicas, with
    their requests in flight) needs the admin token."""

    def __init__(self, database_url: str, service: str, settings: Settings | None = None):
        settings = settings or Settings.from_env()
        self.service = service
        self.limit, self.admin_token = settings.max_body_bytes, settings.admin_token
        self.table = TrafficTable(database_url, service)
        self.session: aiohttp.ClientSession | None = None
        disable_created_metrics()  # as the functions do: no *_created series, nothing queries them
        self.registry = CollectorRegistry()
        self.routed = Counter(
            "pefm_router_routed",
            "Requests routed",
            ["service", "revision", "replica", "tag"],
            registry=self.registry,
        )
        self.queued = Counter(
            "pefm_router_queued",
            "Requests that waited for a replica under its containerConcurrency",
            ["service", "revision"],
            registry=self.registry,
        )
        self.failed = Counter(  # the revisions' own metric: the rollout queries count both (``_failed``)
            "pefm_requests",
            "Requests a revision could not answer, counted by the router (route unmatched)",
            ["service", "revision", "route", "method", "status"],
            registry=self.registry,
        )
        dropped = Counter("pefm_log_rows_dropped", "Request log rows not written", ["table"], registry=self.registry)
        self.writer = LogWriter(
            database_url, maxsize=settings.prediction_log_queue, on_drop=lambda table, n: dropped.labels(table).inc(n)
        )
        self._freed = asyncio.Event()
        self._waiting = 0
        self._refresh: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect upstream (kept-alive connections, no limit on their number: a revision's
        containerConcurrency is the limit) and read the table once before serving. An idle
        connection is dropped here before a revision's server drops it (hypercorn's and uvicorn's
        keep-alive: 5 s): kept 30 s, a request to a quiet revision could be written to a
        connection its server had just closed, a 502 ("Can not write request body"; 1 of 10,800
        requests in an end-to-end run, on a green at 10%)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=UPSTREAM_TIMEOUT, sock_read=UPSTREAM_TIMEOUT),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        ready = asyncio.get_running_loop().create_future()
        self._refresh = asyncio.create_task(self.table.run(ready))
        await ready
        self.writer.start()

    async def stop(self) -> None:
        if self._refresh:
            self._refresh.cancel()
        if self.session:
            await self.session.close()
        await asyncio.to_thread(self.writer.stop)

    def _failed(self, scope: dict, revision: str, status: int, started: float) -> None:
        """A request sent to ``revision`` that it could not answer (no replica, none with room,
        none reachable, one failed or timed out), counted against it as a failure before routing
        (route ``unmatched``, as a revision counts its 503s while not ready), in the metrics and
        in the request log: a rollout's analysis reads either, and a green that crashed or hung
        had served nothing it could judge until ``max_wait_seconds`` ran out. A request it gave up
        on (504) that the revision finishes later is counted by the revision too: a failure twice,
        or a failure and a success, where an answer of over ``UPSTREAM_TIMEOUT`` fails either way."""
        if any(k.lower() == SHADOW for k, _ in scope["headers"]):
            # a rollout's probe, not traffic (the revisions leave out the ones whose signature they
            # verify; the router holds no key: a client marking its own request hides only its own)
            return
        method = method_label(scope)
        self.failed.labels(self.service, revision, "unmatched", method, str(status)).inc()
        ms = (time.perf_counter() - started) * 1000
        self.writer.put("request_log", (time.time(), self.service, revision, "unmatched", method, status, ms))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "websocket":  # main's uvicorn takes none (ws="none"); another server's: refused
            return await send({"type": "websocket.close"})  # before the handshake: the server answers 403
        started = time.perf_counter()
        path = scope["path"]
        if path.startswith("/_router/"):
            return await self._own(path, scope, receive, send)
        tag = None
        raw = [(k.lower(), v) for k, v in scope["headers"]]
        host = dict(raw).get(b"host", b"").decode("latin-1").split(":")[0]
        if host.endswith(f"-{self.service}.local"):
            tag = host[: -len(f"-{self.service}.local")]
        target = (scope.get("raw_path") or path.encode()).decode("latin-1")  # as sent: still percent-encoded
        if not target.startswith("/"):
            # a path only (origin form): a target such as `*@host:port/x`, appended to a replica's
            # URL, would name another host, and the router would fetch it for anyone who asked
            why = "the request target must be a path starting with /"
            return await ApiError(400, why, [{"field": "request target", "message": target[:100]}]).response()(
                scope, receive, send
            )
        if target.startswith("/_tag/"):
            tag, _, rest = target[len("/_tag/") :].partition("/")
            target = "/" + rest
        revision = self.table.pick(tag)
        if revision is None and tag is not None:  # as Knative: no such route, which no retry will find
            return await ApiError(404, f"no revision tagged {tag!r}").response()(scope, receive, send)
        if revision is None:
            return await ApiError(503, "no revision has traffic").response()(scope, receive, send)
        if not self.table.replicas.get(revision):
            self._failed(scope, revision, 503, started)
            return await ApiError(503, f"revision {revision} has no replica").response()(scope, receive, send)
        declared = dict(raw).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        dropped = _hop_by_hop(raw, FORWARDED_NOT)
        headers = [(k.decode("latin-1"), _text(v)) for k, v in raw if k.decode("latin-1") not in dropped]
        if declared.isdigit():
            headers.append(("content-length", declared.decode()))
        body = _Body(receive, self.limit)
        streamed = (declared.isdigit() and declared != b"0") or b"transfer-encoding" in dict(raw)
        query = scope.get("query_string", b"").decode("latin-1")
        path_query = target + (f"?{query}" if query else "")
        for _attempt in range(len(self.table.replicas[revision])):
            replica = await self._acquire(revision)
            if replica is None:
                self._failed(scope, revision, 503, started)
                return await ApiError(503, f"revision {revision} stayed at its concurrency limit").response()(
                    scope, receive, send
                )
            try:
                try:
                    response = await self.session.request(
                        scope["method"],
                        yarl.URL(replica.url + path_query, encoded=True),
                        data=body if streamed else None,
                        headers=headers,
                        allow_redirects=False,
                    )
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                    # nothing was sent: another replica may take it
                    replica.down_until = time.monotonic() + DOWN_SECONDS
                    continue
                except (aiohttp.ClientError, TimeoutError, _TooLarge, ClientGone) as exc:
                    # the body may be half read: close (a client gone mid-body: no one to answer)
                    if body.too_large:
                        return await self._too_large(scope, receive, send)
                    if body.gone:
                        return
                    if isinstance(exc, TimeoutError):  # aiohttp's read timeout is a ClientError too
                        status, why = 504, f"revision {revision} did not answer within {UPSTREAM_TIMEOUT:g} s"
                    else:
                        status, why = 502, f"revision {revision} failed: {exc}"
                    self._failed(scope, revision, status, started)
                    return await ApiError(status, why, headers={"Connection": "close"}).response()(scope, receive, send)
                try:
                    return await self._relay(response, revision, replica, tag, send)
                finally:
                    response.release()
            finally:
                self._release(replica)
        self._failed(scope, revision, 502, started)
        error = ApiError(502, f"revision {revision} unreachable: no replica accepts connections")
        return await error.response()(scope, receive, send)

    async def _relay(self, response: aiohttp.ClientResponse, revision: str, replica: Replica, tag, send) -> None:
        self.routed.labels(self.service, revision, str(replica.index), tag or "").inc()
        dropped = _hop_by_hop(response.raw_headers, RELAYED_NOT)
        out = [(k, v) for k, v in response.raw_headers if k.decode("latin-1").lower() not in dropped]
        out.append((b"x-pefm-routed-revision", revision.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _acquire(self, revision: str) -> Replica | None:
        """A replica of ``revision`` with room, counted in flight; waits (QUEUE_SECONDS at most)
        while every replica is at its containerConcurrency. None when none freed up in time."""
        loop = asyncio.get_running_loop()
        deadline = None
        while (replica := self.table.least_loaded(revision)) is None:
            if not self.table.replicas.get(revision):
                return None
            if deadline is None:
                deadline = loop.time() + QUEUE_SECONDS
                self.queued.labels(self.service, revision).inc()
            self._waiting += 1
            try:
                await asyncio.wait_for(self._freed.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return None
            finally:
                self._waiting -= 1
        replica.in_flight += 1
        return replica

    def _release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        if self._waiting:  # wake the queued requests; they look again
            self._freed.set()
            self._freed = asyncio.Event()

    async def _own(self, path: str, scope, receive, send) -> None:
        if path == "/_router/health":
            return await _reply(send, 200, b"OK", b"text/plain")
        if path == "/_router/metrics":
            return await _reply(send, 200, generate_latest(self.registry), b"text/plain; version=0.0.4")
        if path in ("/_router/traffic", "/_router/targets"):
            try:
                require_bearer(Request(scope), self.admin_token, "the router's traffic table")
            except ApiError as exc:
                return await exc.response()(scope, receive, send)
            if path == "/_router/targets":
                return await _reply(send, 200, json.dumps(self._scrape_targets()).encode(), b"application/json")
            revisions = {rev: [r.to_dict() for r in replicas] for rev, replicas in self.table.replicas.items()}
            body = json.dumps({"targets": self.table.targets, "revisions": revisions}).encode()
            return await _reply(send, 200, body, b"application/json")
        return await ApiError(404, f"no router endpoint {path}").response()(scope, receive, send)

    def _scrape_targets(self) -> list[dict]:
        """The replicas of every revision the router knows, as Prometheus's HTTP service discovery
        reads them (``http_sd_configs``): the revisions a rollout starts listen on ports no static
        configuration knows, and a green Prometheus never scraped had no data to judge. Its labels
        are ``__meta_`` ones, for relabeling: a target label ``revision`` would have renamed the
        revisions' own (``exported_revision``)."""
        return [
            {
                "targets": [urlsplit(r.url).netloc for r in replicas],
                "labels": {"__meta_pefm_service": self.service, "__meta_pefm_revision": revision},
            }
            for revision, replicas in sorted(self.table.replicas.items())
            if replicas
        ]

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"traffic table unreadable: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _too_large(self, scope, receive, send) -> None:
        error = ApiError(413, f"body is over the limit of {self.limit} bytes", headers={"Connection": "close"})
        await error.response()(scope, receive, send)


def _hop_by_hop(headers, fixed: set[str]) -> set[str]:
    """``fixed`` and the fields the ``Connection`` headers among ``headers`` (bytes pairs) name:
    they are for this connection only (RFC 9110 §7.6.1), whichever way the message goes."""
    named = [v for k, v in headers if k.lower() == b"connection"]
    if not named:
        return fixed
    return fixed | {name.strip().lower() for v in named for name in v.decode("latin-1").split(",")}


def _text(value: bytes) -> str:
    """A header value as aiohttp takes it (a str it writes as UTF-8): UTF-8 bytes round-trip."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


async def _reply(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="PEFM local traffic router")
    parser.add_argument("--service", required=True)
    args = parser.parse_args()
    import uvicorn

    from pefm.local.runtime import release_embedded, stack_alive, watch_stack

    stack = watch_stack()  # ends with the `pefm up` that started it, however that ended
    if stack:  # uvicorn raises the SIGTERM it stopped on again once stopped: unwind, not die, on it
        signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    host, _, port = os.environ.get("LISTEN_ADDRESS", "127.0.0.1:8080").rpartition(":")
    app = guard(Router(os.environ["PEFM_DATABASE_URL"], args.service))  # anything unforeseen: a JSON 500
    try:
        uvicorn.run(
            app,
            host=host,
            port=int(port),
            loop="uvloop",
            http="httptools",
            ws="none",  # nothing here proxies websockets: an Upgrade is a plain request (its Upgrade dropped)
            lifespan="on",
            access_log=False,
            server_header=False,
        )
    finally:
        if stack and not stack_alive(stack) and os.environ.get("PEFM_HOME"):
            # a `pefm up` killed outright never let go of the embedded PostgreSQL it held: its
            # router (one a stack) does, once the stack's other processes have ended
            release_embedded(stack, Path(os.environ["PEFM_HOME"]))


if __name__ == "__main__":
    main()
