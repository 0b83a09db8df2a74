"""The local traffic router: Knative's traffic block on one machine.

Routes each request to a revision of its service by the block's percents, or by tag
(``Host: <tag>-<service>.local`` or the path prefix ``/_tag/<tag>/``). The block and the
revisions' addresses live in the database (``local_traffic``, ``local_revisions``), refreshed
every few hundred milliseconds, so ``pefm rollout`` in another process moves traffic here.
Run: ``python -m pefm.local.router --service inference`` with LISTEN_ADDRESS and PEFM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import threading
import time

import httpx
import psycopg
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.requests import Request

from pefm.config import Settings
from pefm.serving.http import ApiError, guard, require_bearer

log = logging.getLogger("pefm.router")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


class TrafficTable:
    """The service's traffic block and revision URLs, refreshed from the database in the background."""

    def __init__(self, database_url: str, service: str, every: float = 0.3):
        self.database_url, self.service, self.every = database_url, service, every
        self.targets: list[dict] = []
        self.urls: dict[str, str] = {}
        self.latest: str | None = None
        self.refresh()
        threading.Thread(target=self._loop, daemon=True, name="pefm-router-refresh").start()

    def refresh(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT traffic FROM local_traffic WHERE service = %s", (self.service,)).fetchone()
            revisions = conn.execute(
                "SELECT revision, url FROM local_revisions WHERE service = %s ORDER BY started_at", (self.service,)
            ).fetchall()
        self.urls = dict(revisions)
        self.latest = revisions[-1][0] if revisions else None
        self.targets = (
            row[0]
            if row
            else ([{"revision": self.latest, "percent": 100, "tag": None, "latest": True}] if self.latest else [])
        )

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            try:
                self.refresh()
            except psycopg.Error as exc:  # keep routing with the last known block
                log.warning("traffic refresh failed: %s", exc)

    def resolve(self, target: dict) -> str | None:
        return self.latest if target.get("latest") else target.get("revision")

    def pick(self, tag: str | None) -> str | None:
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


class _TooLarge(Exception):
    pass


class Router:
    """Bodies stream through both ways under the functions' own limit (``PEFM_MAX_BODY_BYTES``:
    413 here, before a function would close the connection mid-upload); headers pass as bytes,
    whatever their encoding; ``/_router/traffic`` (the block and the revisions' addresses) needs
    the admin token."""

    def __init__(self, database_url: str, service: str, settings: Settings | None = None):
        settings = settings or Settings.from_env()
        self.service = service
        self.limit, self.admin_token = settings.max_body_bytes, settings.admin_token
        self.table = TrafficTable(database_url, service)
        self.client = httpx.AsyncClient(timeout=60)
        self.registry = CollectorRegistry()
        self.routed = Counter(
            "pefm_router_routed", "Requests routed", ["service", "revision", "tag"], registry=self.registry
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/_router/health":
            return await _reply(send, 200, b"OK", b"text/plain")
        if path == "/_router/metrics":
            return await _reply(send, 200, generate_latest(self.registry), b"text/plain; version=0.0.4")
        if path == "/_router/traffic":
            try:
                require_bearer(Request(scope), self.admin_token, "the router's traffic table")
            except ApiError as exc:
                return await exc.response()(scope, receive, send)
            body = json.dumps({"targets": self.table.targets, "revisions": self.table.urls}).encode()
            return await _reply(send, 200, body, b"application/json")
        tag = None
        raw = [(k.lower(), v) for k, v in scope["headers"]]
        host = dict(raw).get(b"host", b"").decode("latin-1").split(":")[0]
        if host.endswith(f"-{self.service}.local"):
            tag = host[: -len(f"-{self.service}.local")]
        target = (scope.get("raw_path") or path.encode()).decode("latin-1")  # as sent: still percent-encoded
        if target.startswith("/_tag/"):
            tag, _, rest = target[len("/_tag/") :].partition("/")
            target = "/" + rest
        revision = self.table.pick(tag)
        url = self.table.urls.get(revision) if revision else None
        if url is None:
            why = f"no revision tagged {tag!r}" if tag else "no revision has traffic"
            return await _reply(send, 503, json.dumps({"error": why, "details": []}).encode(), b"application/json")
        declared = dict(raw).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        forwarded = [(k, v) for k, v in raw if k.decode("latin-1") not in HOP_BY_HOP]
        if declared.isdigit():
            forwarded.append((b"content-length", declared))
        query = scope.get("query_string", b"").decode("latin-1")
        request = self.client.build_request(
            scope["method"],
            f"{url}{target}" + (f"?{query}" if query else ""),
            content=self._body(receive),
            headers=forwarded,
        )
        try:
            response = await self.client.send(request, stream=True)
        except _TooLarge:
            return await self._too_large(scope, receive, send)
        except httpx.TransportError as exc:  # the body may be left half read: this connection ends here
            error = ApiError(502, f"revision {revision} unreachable: {exc}", headers={"Connection": "close"})
            return await error.response()(scope, receive, send)
        self.routed.labels(self.service, revision, tag or "").inc()
        out = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        out.append((b"x-pefm-routed-revision", revision.encode()))
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _body(self, receive):
        """The request body as it arrives, stopped past the limit."""
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _TooLarge
            yield chunk
            if not message.get("more_body"):
                return

    async def _too_large(self, scope, receive, send) -> None:
        error = ApiError(413, f"body is over the limit of {self.limit} bytes", headers={"Connection": "close"})
        await error.response()(scope, receive, send)


async def _reply(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="PEFM local traffic router")
    parser.add_argument("--service", required=True)
    args = parser.parse_args()
    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = os.environ.get("LISTEN_ADDRESS", "127.0.0.1:8080").split(",")
    app = guard(Router(os.environ["PEFM_DATABASE_URL"], args.service))  # anything unforeseen: a JSON 500
    asyncio.run(hypercorn.asyncio.serve(app, config))


if __name__ == "__main__":
    main()
