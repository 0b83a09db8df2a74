"""pefm.serving.oidc against a real HTTP issuer (tests/oidc_issuer.py): what a Knative Eventing
delivery's token must be to pass, and what each wrong one gets."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pefm.serving.http import ApiError
from pefm.serving.oidc import OidcVerifier
from tests.oidc_issuer import AUDIENCE, SENDER, Issuer


@pytest.fixture
def issuer():
    running = Issuer()
    yield running
    running.close()


def verifier(issuer, tmp_path, **kwargs) -> OidcVerifier:
    return OidcVerifier(issuer.url, AUDIENCE, [SENDER], account=tmp_path, **kwargs)


def refused(check, token: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        asyncio.run(check.verify(token))
    return caught.value


def test_a_token_of_an_allowed_sender_passes_and_is_verified_once(issuer, tmp_path):
    check = verifier(issuer, tmp_path)
    token = issuer.token()

    async def twice():
        return [await check.verify(token), await check.verify(token)]

    assert asyncio.run(twice()) == [SENDER, SENDER]
    assert [path for path, _ in issuer.requests] == ["/.well-known/openid-configuration", "/openid/v1/jwks"]


def test_the_pods_own_token_is_sent_to_the_api_server(issuer, tmp_path):
    (tmp_path / "token").write_text("pod-token\n")
    asyncio.run(verifier(issuer, tmp_path).verify(issuer.token()))
    assert {auth for _, auth in issuer.requests} == {"Bearer pod-token"}


@pytest.mark.parametrize(
    "claims, fragment",
    [
        ({"aud": ["serving.knative.dev/service/pefm/pefm-inference"]}, "audience"),
        ({"iss": "https://someone.else"}, "issuer"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"drop": ("iat",)}, "iat"),
        ({"drop": ("sub",)}, "sub"),
    ],
    ids=["audience", "issuer", "expired", "no-iat", "no-sub"],
)
def test_a_token_with_a_wrong_claim_is_401(issuer, tmp_path, claims, fragment):
    error = refused(verifier(issuer, tmp_path), issuer.token(**claims))
    assert error.status == 401 and fragment in error.error.lower()


def test_a_forged_or_malformed_token_is_401(issuer, tmp_path):
    check = verifier(issuer, tmp_path)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(check, issuer.token(key=stranger)).status == 401  # right kid, wrong key
    assert refused(check, "a.b.c").status == 401
    header, payload, _ = issuer.token().split(".")
    assert refused(check, f"{header}.{payload}.").status == 401  # signature stripped
    unsigned = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "key-1"}).encode()).decode().rstrip("=")
    assert refused(check, f"{unsigned}.{payload}.").status == 401
    public_pem = (
        issuer.keys["key-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # the old confusion: HMAC keyed with the public key, which anyone can fetch
    hmac_header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "key-1"}).encode()).decode().rstrip("=")
    mac = hmac.new(public_pem, f"{hmac_header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{hmac_header}.{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    assert refused(check, confused).status == 401


def test_a_valid_token_of_another_sender_is_403(issuer, tmp_path):
    error = refused(verifier(issuer, tmp_path), issuer.token(sub="system:serviceaccount:pefm:default"))
    assert error.status == 403 and "system:serviceaccount:pefm:default" in error.error


def test_a_new_key_is_fetched_once_and_an_unknown_one_is_not_refetched_at_once(issuer, tmp_path):
    check = verifier(issuer, tmp_path, refresh_seconds=0.2)
    assert asyncio.run(check.verify(issuer.token())) == SENDER
    issuer.add_key("key-2")  # the API server rotated its signing key
    time.sleep(0.25)
    assert asyncio.run(check.verify(issuer.token("key-2"))) == SENDER
    fetches = len(issuer.requests)
    assert fetches == 4
    bogus = jwt.encode({"sub": SENDER}, issuer.keys["key-1"], algorithm="RS256", headers={"kid": "key-9"})
    assert refused(check, bogus).status == 401
    assert len(issuer.requests) == fetches  # within refresh_seconds of the last fetch: no new one


def test_an_unreachable_api_server_is_503(issuer, tmp_path):
    token = issuer.token()
    issuer.close()
    error = refused(verifier(issuer, tmp_path), token)
    assert error.status == 503 and "signing keys" in error.error


def test_a_failing_api_server_is_asked_again_only_after_the_refresh_interval(issuer, tmp_path):
    check = verifier(issuer, tmp_path, refresh_seconds=0.3)
    issuer.failing = True
    token = issuer.token()
    assert [refused(check, token).status for _ in range(3)] == [503, 503, 503]
    assert len(issuer.requests) == 1  # one attempt; the others answered from its failure
    issuer.failing = False
    time.sleep(0.35)
    assert asyncio.run(check.verify(token)) == SENDER
