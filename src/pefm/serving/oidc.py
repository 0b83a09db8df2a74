"""Knative Eventing's sender identity: the OIDC tokens its deliveries carry, verified.

With ``authentication-oidc`` enabled, Knative Eventing sends each delivery with
``Authorization: Bearer <JWT>``: a token the Kubernetes API server issued to the sender's own
ServiceAccount (a KafkaSource's is ``<source>-oidc-sources.knative.dev-kafkasource``) for the
sink's audience. The token is checked as Knative's own receivers check it: signed by one of the
keys the API server publishes (``/openid/v1/jwks``), issued by the issuer its discovery document
names (``/.well-known/openid-configuration``), for our audience, unexpired. Both documents are
fetched with the pod's own ServiceAccount token and the cluster's CA when the pod has them. A
valid token is not yet enough: its subject (``system:serviceaccount:<namespace>:<name>``) must
be one of the senders allowed, since any workload can ask the API server for a token of its own
for any audience.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import jwt

from pefm.serving.http import ApiError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ALGORITHMS = ["RS256", "ES256"]
"""What the API server signs service-account tokens with (its key is RSA or ECDSA P-256)."""
REFRESH_SECONDS = 30.0
"""A token signed by a key not yet seen refetches the keys (rotation), at most this often."""
_LEEWAY_SECONDS = 30
_CACHED_TOKENS = 1024


class OidcVerifier:
    """Verifies the bearer JWTs of one audience and allows the listed subjects."""

    def __init__(
        self,
        api_url: str,
        audience: str,
        subjects: Iterable[str],
        *,
        account: Path = SERVICE_ACCOUNT,
        refresh_seconds: float = REFRESH_SECONDS,
    ):
        self.api_url = api_url.rstrip("/")
        self.audience = audience
        self.subjects = frozenset(subjects)
        self.account = account
        self.refresh_seconds = refresh_seconds
        self._issuer: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -float("inf")
        self._failure: ApiError | None = None  # the last fetch's, answered until the next may be tried
        self._fetching = asyncio.Lock()
        self._verified: dict[str, tuple[str, float]] = {}  # token -> (subject, expiry): senders reuse a token

    async def verify(self, token: str) -> str:
        """The subject of ``token``. ApiError 401 when it is not a valid token for our audience,
        403 when its subject is not allowed, 503 when the keys cannot be fetched."""
        known = self._verified.get(token)
        if known is None or known[1] <= time.time():
            known = await self._verify(token)
        subject = known[0]
        if subject not in self.subjects:
            raise ApiError(403, f"the OIDC token's subject {subject!r} may not ingest")
        return subject

    async def _verify(self, token: str) -> tuple[str, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except jwt.InvalidTokenError as exc:
            raise _invalid(exc) from None
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _invalid(exc) from None
        known = (str(claims["sub"]), float(claims["exp"]))
        if len(self._verified) >= _CACHED_TOKENS:
            now = time.time()
            self._verified = {t: v for t, v in self._verified.items() if v[1] > now}
            if len(self._verified) >= _CACHED_TOKENS:
                self._verified.clear()
        self._verified[token] = known
        return known

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            async with self._fetching:
                if kid not in self._keys:
                    if time.monotonic() - self._fetched >= self.refresh_seconds:
                        await self._fetch()
                    elif self._failure is not None:  # the API server is not asked again before refresh_seconds
                        raise self._failure
        if (key := self._keys.get(kid)) is None:
            raise ApiError(
                401,
                "the OIDC token is signed by a key the Kubernetes API server does not publish",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key

    async def _fetch(self) -> None:
        """Fetch the issuer and the signing keys from the API server (the pod's identity, if any)."""
        token_file, ca_file = self.account / "token", self.account / "ca.crt"
        headers = {"authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.is_file() else {}
        verify: str | bool = str(ca_file) if ca_file.is_file() else True
        try:
            async with httpx.AsyncClient(base_url=self.api_url, headers=headers, verify=verify, timeout=10) as client:
                discovery = (await client.get("/.well-known/openid-configuration")).raise_for_status().json()
                keys = (await client.get("/openid/v1/jwks")).raise_for_status().json()
            issuer = discovery["issuer"]
            usable = {}
            for entry in keys["keys"]:
                try:
                    usable[entry.get("kid", "")] = jwt.PyJWK(entry)
                except jwt.PyJWKError:
                    continue  # a key of a kind we do not verify with: tokens signed by it fail as unknown
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._fetched = time.monotonic()
            self._failure = ApiError(503, f"cannot fetch the OIDC signing keys from {self.api_url}: {exc}")
            raise self._failure from None
        self._issuer, self._keys, self._fetched, self._failure = issuer, usable, time.monotonic(), None


def _invalid(exc: Exception) -> ApiError:
    return ApiError(401, f"the OIDC token is not valid: {exc}", headers={"WWW-Authenticate": "Bearer"})
