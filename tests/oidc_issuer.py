"""A stand-in for the Kubernetes API server's service-account issuer: a real HTTP server on a
local port serving ``/.well-known/openid-configuration`` and ``/openid/v1/jwks``, and the
tokens it would issue (PyJWT, RSA keys made here). A stand-in because no Kubernetes API server
runs here; the verifier talks to it over real HTTP exactly as to the API server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "serving.knative.dev/service/pefm/pefm-ingest"
SENDER = "system:serviceaccount:pefm:pefm-kafka-to-ingest-oidc-sources.knative.dev-kafkasource"


class Issuer:
    """Signs tokens with its current keys and publishes them; counts and records the requests."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, authorization header)
        self.failing = False  # answer 500, as an API server in trouble
        self.add_key("key-1")
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests.append((self.path, self.headers.get("authorization")))
                if issuer.failing:
                    self.send_error(500)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": ISSUER, "jwks_uri": f"{issuer.url}/openid/v1/jwks"}
                elif self.path == "/openid/v1/jwks":
                    body = {"keys": [issuer.public(kid) for kid in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public(self, kid: str) -> dict:
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**entry, "kid": kid, "use": "sig", "alg": "RS256"}

    def token(self, kid: str = "key-1", *, key=None, drop: tuple[str, ...] = (), **claims) -> str:
        """A token as the API server issues one to the KafkaSource's ServiceAccount, with ``claims``
        changed and the claims in ``drop`` left out; signed by ``key`` in place of the kid's."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": [AUDIENCE], "sub": SENDER, "iat": now, "nbf": now, "exp": now + 3600}
        body.update(claims)
        body = {k: v for k, v in body.items() if k not in drop}
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
