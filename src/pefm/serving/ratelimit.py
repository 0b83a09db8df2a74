"""Optional per-caller rate limits on the public endpoints (``PEFM_RATE_LIMIT=N/S``: at most N
requests per S seconds per caller), counted in the cache: in Redis, so every replica of a revision
shares one budget per caller; without Redis, per process.

A caller is the bearer token the endpoint has verified (hashed; the tokens themselves are never
stored), and otherwise its address as the connection gives it. A token nobody verified names
nobody: on the unauthenticated forecast endpoints a client could send a new made-up one with
every request and never run out, so there the address alone counts (behind Knative's gateway or
the local router that is theirs, so all callers share one budget: the limit guards the revision's
capacity). Over the limit: 429 with ``Retry-After`` (the seconds to the next window). Redis away:
requests pass (the limit protects capacity; it never blocks service) and the failed count is
counted as a cache error. A rollout's signed shadow probes are never limited."""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING

from pefm.serving.cache import Cache
from pefm.serving.http import ApiError, in_thread

if TYPE_CHECKING:
    from starlette.requests import Request


class RateLimit:
    def __init__(self, limit: tuple[int, int] | None, cache: Cache):
        self.limit = limit
        self.cache = cache

    async def check(self, request: Request, verified: bool = False, subject: str | None = None) -> None:
        """ApiError 429 when the caller has used up its requests in this window: the caller is the
        ``subject`` of a verified OIDC token (one budget, however many tokens it is issued), else
        its bearer token where ``verified`` (the endpoint checked it first), else its address."""
        if self.limit is not None:
            authorization = request.headers.get("authorization", "") if verified else ""
            host = request.client.host if request.client else None
            await self.check_caller(caller_key(authorization, host, subject))

    async def check_scope(self, scope: dict) -> None:
        """``check`` for a raw ASGI handler of an unauthenticated endpoint: by address."""
        if self.limit is not None:
            client = scope.get("client")
            await self.check_caller(caller_key("", client[0] if client else None))

    async def check_caller(self, key: str) -> None:
        """ApiError 429 when the caller ``key`` has used up its requests in this window."""
        most, window = self.limit
        count = (
            await in_thread(self.cache.count_request, key, window)
            if self.cache.shared
            else self.cache.count_request(key, window)
        )
        if count is not None and count > most:
            wait = max(1, math.ceil(window - time.time() % window))
            raise ApiError(
                429,
                f"rate limit: at most {most} requests per {window} s per caller; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )


def caller_key(authorization: str, host: str | None, subject: str | None = None) -> str:
    """The caller's key: the ``subject`` of its verified OIDC token, else its verified
    Authorization header ("": none), else its address (None: unknown); subjects and tokens hashed.
    The token as ``require_bearer`` compares it, without the spaces around it: the header as sent
    would give the same token a new budget with each extra space."""
    if subject is not None:
        return "s" + _digest(subject)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return "t" + _digest(token)
    return "a" + ("unknown" if host is None else host)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:24]
