"""The secrets of PEFM on one machine: kept in ``$PEFM_HOME/tokens.env`` (mode 600 from the moment
it exists), generated the first time. One the environment sets is used instead, by that process
(and the processes it starts) only, and never written there: a one-off ``PEFM_ADMIN_TOKEN=… pefm …``
had replaced the token the running stack checks, and left a CI secret on disk. The public keys are
the one exception to "instead": ``PEFM_VERIFY_KEYS`` from the environment is trusted together with
the public half of the signing key in use (``verify_keys``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pefm.config import Settings, get_settings

TOKENS = ("PEFM_INGEST_TOKEN", "PEFM_ADMIN_TOKEN", "PEFM_SHADOW_KEY", "PEFM_EVENT_TOKEN")


def local_secrets(home: Path, settings: Settings | None = None) -> dict[str, str]:
    """The ingest, admin and event tokens, the shadow key and the artifact signing key pair
    (``PEFM_SIGNING_KEY``, ``PEFM_VERIFY_KEYS``): from the environment, else from
    ``home/tokens.env``, else generated once and kept there; the public keys as ``verify_keys``
    makes them of the environment's and the signing key in use."""
    settings = settings or get_settings()
    given = {
        "PEFM_INGEST_TOKEN": settings.ingest_token,
        "PEFM_ADMIN_TOKEN": settings.admin_token,
        "PEFM_SHADOW_KEY": settings.shadow_key,
        "PEFM_EVENT_TOKEN": settings.event_token,
        "PEFM_SIGNING_KEY": settings.signing_key,  # PEM, perhaps
    }
    values = _kept(home)
    values.update({name: value for name, value in given.items() if value})
    values["PEFM_VERIFY_KEYS"] = verify_keys(settings.verify_keys, values["PEFM_SIGNING_KEY"])
    return values


def verify_keys(given: str | None, signing_key: str | None) -> str | None:
    """``PEFM_VERIFY_KEYS`` for every process started on this machine (``pefm up``'s, and the
    revisions retraining starts): ``given``, the environment's public keys (PEM or base64,
    comma-separated), with the public half of ``signing_key`` added where they lack it; neither
    given: None. That half stays trusted so that what is trained here (``make up``'s first model,
    the monitor's retraining, ``pefm train``), all signed with ``signing_key``, still loads: keys
    given for models signed elsewhere (CI's) had replaced it for the revisions only, which then
    refused the serving model the monitor and the rollout API loaded. To trust none but your own
    keys, set ``PEFM_SIGNING_KEY`` too."""
    from pefm.storage import signing

    if not signing_key:
        return given
    own = signing.public_text(signing_key)
    if not given:
        return own
    trusted = {signing.key_id(key) for key in signing.public_keys(given)}
    return given if signing.key_id(signing.public_key(own)) in trusted else f"{given},{own}"


def _kept(home: Path) -> dict[str, str]:
    """The secrets in ``home/tokens.env``, those it lacks generated and added to it. Two first runs
    at once keep one set (generated under a lock, the file read again once it is held): a process
    that used secrets the file then does not keep would sign artifacts no one verifies. The file is
    replaced whole, never written in place: a reader that found it empty would generate a new
    signing key, and the revisions running would refuse what is signed with it."""
    path = home / "tokens.env"
    kept = _read(path)
    if _completed(kept) != kept:  # a first run, or a file an older PEFM or a person left short
        home.mkdir(parents=True, exist_ok=True)
        with _locked(home):
            stored = _read(path)
            if (kept := _completed(stored)) != stored:
                _replace(path, kept)
    return kept


def _replace(path: Path, values: dict[str, str]) -> None:
    """Write ``values`` into a new file beside ``path`` (mode 600 from its creation), then give it
    that name: readers see the old file or the new one, never one half written."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write("".join(f"{k}={v}\n" for k, v in values.items()))
            file.flush()
            os.fsync(file.fileno())  # its content on disk before the name points at it
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    path.chmod(0o600)  # one copied or restored with a looser mode, or written by an older PEFM
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _completed(stored: dict[str, str]) -> dict[str, str]:
    """What tokens.env keeps: its values, generated where it has none."""
    from pefm.storage import signing

    values = {
        name: stored.get(name) or secrets.token_urlsafe(32 if name == "PEFM_SHADOW_KEY" else 24) for name in TOKENS
    }
    if key := stored.get("PEFM_SIGNING_KEY"):
        values["PEFM_SIGNING_KEY"], values["PEFM_VERIFY_KEYS"] = key, signing.public_text(key)
    else:
        values["PEFM_SIGNING_KEY"], values["PEFM_VERIFY_KEYS"] = signing.generate()
    return values


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """An exclusive lock on the directory, released when its descriptor closes (a process killed
    while holding it holds it no more)."""
    descriptor = os.open(home, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


FILLED: set[str] = set()
"""The names ``use_local_secrets`` put into ``os.environ``: tokens.env's, not the environment's."""


def use_local_secrets(settings: Settings) -> None:
    """Put the secrets the environment leaves unset into ``os.environ``, taken from ``tokens.env``
    in ``settings.home`` (the ``pefm`` command and the benchmarks on an embedded server), so that
    ``get_settings()`` and the processes started from here see them. ``PEFM_VERIFY_KEYS`` from
    the environment is completed with the public half of the signing key in use (``verify_keys``),
    as ``pefm up`` completes it for its processes."""
    for name, value in local_secrets(settings.home, settings).items():
        if name not in os.environ:
            os.environ[name] = value
            FILLED.add(name)
        elif name == "PEFM_VERIFY_KEYS":  # the exception: the environment's, with the signing key's
            os.environ[name] = value
    get_settings.cache_clear()
