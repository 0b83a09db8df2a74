"""Model artifacts are signed by the trainer (Ed25519) and verified before anything loads them.

A registry row holds the artifact, its sha256, the sha256 of the forecasts precomputed beside it
(``precomputed_digest``) and the trainer's signature over the version's id, family and those two
digests (``MESSAGE``), with the id of the key that made it. Whoever loads an artifact first checks
the signature against the public keys it trusts, then the bytes against the sha256: a row written
by anyone without the trainer's private key, or bytes swapped under a signed row, are refused
before unpickling; an inference replica checks the precomputed forecasts it serves so too.
Versions signed before the forecasts were (``MESSAGE_V1``, no forecasts' digest) are not loaded
until ``pefm models sign`` signs them again, which is the only place such a signature is still
checked: accepted at load, an old signature put back on a row (with its digest removed) would
leave the row's forecasts free to change. The processes that load artifacts (inference, the
monitor) hold only public keys (``PEFM_VERIFY_KEYS``); the trainer holds the private key
(``PEFM_SIGNING_KEY``) and trusts its own public key.

Keys are given as PEM (PKCS#8 private, SubjectPublicKeyInfo public: what ``openssl genpkey -algorithm
ed25519`` and Terraform's ``tls_private_key`` with ``algorithm = "ED25519"`` write) or as the
raw 32 bytes in base64 (``pefm up`` keeps them that way in ``tokens.env``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from pefm.config import Settings

MESSAGE = "pefm-artifact-v2\n{id}\n{family}\n{sha256}\n{precomputed}"
"""What is signed: the domain, then the version's id, family, artifact sha256 and precomputed
forecasts' sha256, one per line."""
MESSAGE_V1 = "pefm-artifact-v1\n{id}\n{family}\n{sha256}"
"""What versions signed before their precomputed forecasts were covered were signed over."""


def precomputed_digest(precomputed: dict | None) -> str:
    """The sha256 of a version's precomputed forecasts as JSON, the same whether taken from the
    values registered or read back from PostgreSQL's jsonb, which keeps numbers as decimals (so
    that 1e16 comes back as an integer, and -0.0 as 0): every number is hashed as a float."""

    def canonical(value):
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [canonical(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) + 0.0
        return value

    text = json.dumps(canonical(precomputed), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class BadKeyError(ValueError):
    """A key setting that is not an Ed25519 key."""


class ArtifactSignatureError(RuntimeError):
    """An artifact is unsigned, signed by a key not trusted here, or its signature does not match."""


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadKeyError(f"{what} is neither PEM nor base64") from None
    if len(raw) != 32:
        raise BadKeyError(f"{what} must be 32 bytes in base64, not {len(raw)}")
    return raw


def private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or base64 of its 32-byte seed."""
    if text.lstrip().startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization  # PEM only: ~6 ms on a cold start

        try:
            key = serialization.load_pem_private_key(text.strip().encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise BadKeyError(f"not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKeyError(f"a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw(text, "the private key"))


def public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 bytes."""
    if text.lstrip().startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(text.strip().encode())
        except ValueError as exc:
            raise BadKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise BadKeyError(f"a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw(text, "a public key"))


_PEM_BLOCK = re.compile(r"(-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----)", re.DOTALL)


def public_keys(text: str) -> list[Ed25519PublicKey]:
    """Public keys separated by commas, each PEM or base64 (a list may mix them): the old and the
    new while a key is rotated."""
    keys = []
    for i, part in enumerate(_PEM_BLOCK.split(text)):  # odd parts: PEM blocks
        keys += [public_key(part)] if i % 2 else [public_key(p) for p in part.split(",") if p.strip()]
    return keys


def key_id(key: Ed25519PublicKey) -> str:
    """16 hex digits of the sha256 of the raw public key: names the key a signature was made with."""
    return hashlib.sha256(key.public_bytes_raw()).hexdigest()[:16]


def generate() -> tuple[str, str]:
    """A new key pair as (private, public), each the base64 of its raw 32 bytes."""
    private = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    return private, public_text(private)


def public_text(private: str) -> str:
    """The public half of a private key (PEM or base64), as base64 of its raw 32 bytes."""
    return base64.b64encode(private_key(private).public_key().public_bytes_raw()).decode()


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: bytes


def check_precomputed(version_id: str, precomputed: dict | None, recorded: str) -> None:
    """Return if the precomputed forecasts are those whose digest was signed (``recorded``, as
    ``TrustedKeys.verify`` checked it); else ArtifactSignatureError."""
    if precomputed_digest(precomputed) != recorded:
        raise ArtifactSignatureError(
            f"precomputed forecasts of {version_id} do not match their signed sha256: they are not served"
        )


def sign(key: Ed25519PrivateKey, *, version_id: str, family: str, sha256: str, precomputed: str) -> Signature:
    """The signature over a version: ``sha256`` its artifact's, ``precomputed`` its forecasts'
    (``precomputed_digest``)."""
    message = MESSAGE.format(id=version_id, family=family, sha256=sha256, precomputed=precomputed)
    return Signature(key_id(key.public_key()), key.sign(message.encode()))


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The trainer's key (``PEFM_SIGNING_KEY``); the registry takes no artifact without it."""
    if not settings.signing_key:
        raise ArtifactSignatureError("PEFM_SIGNING_KEY is not set: the registry takes only signed artifacts")
    return private_key(settings.signing_key)


def trusted_keys(settings: Settings) -> TrustedKeys:
    """The keys this process accepts: ``PEFM_VERIFY_KEYS`` and, in the trainer, its own."""
    keys = public_keys(settings.verify_keys) if settings.verify_keys else []
    if settings.signing_key:
        keys.append(private_key(settings.signing_key).public_key())
    return TrustedKeys(keys)


class TrustedKeys:
    """The public keys whose signatures this process accepts."""

    def __init__(self, keys: list[Ed25519PublicKey]):
        self.keys = {key_id(k): k for k in keys}

    def verify(
        self,
        *,
        version_id: str,
        family: str,
        sha256: str,
        precomputed: str | None,
        signature: Signature | None,
        before_forecasts: bool = False,
    ) -> None:
        """Return if ``signature`` is a trusted key's over this version (``precomputed``: its
        forecasts' digest); else ArtifactSignatureError. A version signed before its forecasts
        were (no digest) is refused, unless ``before_forecasts`` (``pefm models sign``, checking
        the old signature before it signs the row again) accepts its ``MESSAGE_V1``."""
        if signature is None:
            raise ArtifactSignatureError(f"artifact of {version_id} is not signed: it is not loaded")
        if precomputed is None and not before_forecasts:
            raise ArtifactSignatureError(
                f"artifact of {version_id} was signed without its precomputed forecasts: it is not loaded "
                f"until `pefm models sign {version_id}` signs it again"
            )
        key = self.keys.get(signature.key_id)
        if key is None:
            trusted = ", ".join(sorted(self.keys)) or "none: set PEFM_VERIFY_KEYS"
            raise ArtifactSignatureError(
                f"artifact of {version_id} is signed by key {signature.key_id}, not one trusted here ({trusted})"
            )
        if precomputed is None:
            message = MESSAGE_V1.format(id=version_id, family=family, sha256=sha256)
        else:
            message = MESSAGE.format(id=version_id, family=family, sha256=sha256, precomputed=precomputed)
        try:
            key.verify(signature.value, message.encode())
        except InvalidSignature:
            raise ArtifactSignatureError(
                f"artifact of {version_id}: the signature does not match the version's id, family and digests"
            ) from None
