"""The secrets of PEFM on one machine: kept in ``$PEFM_HOME/tokens.env`` (mode 600 from the moment
it exists), generated the first time. One the environment sets is used instead, by that process
only, and never written there: a one-off ``PEFM_ADMIN_TOKEN=… pefm …`` had replaced the token the
running stack checks, and left a CI secret on disk."""

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
    ``home/tokens.env``, else generated once and kept there."""
    from pefm.storage import signing

    settings = settings or get_settings()
    given = {
        "PEFM_INGEST_TOKEN": settings.ingest_token,
        "PEFM_ADMIN_TOKEN": settings.admin_token,
        "PEFM_SHADOW_KEY": settings.shadow_key,
        "PEFM_EVENT_TOKEN": settings.event_token,
    }
    values = _kept(home)
    values.update({name: value for name, value in given.items() if value})
    if settings.signing_key:  # the environment's key pair (PEM, perhaps)
        values["PEFM_SIGNING_KEY"] = settings.signing_key
        values["PEFM_VERIFY_KEYS"] = settings.verify_keys or signing.public_text(settings.signing_key)
    return values


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
    ``get_settings()`` and the processes started from here see them."""
    for name, value in local_secrets(settings.home, settings).items():
        if name not in os.environ:
            os.environ[name] = value
            FILLED.add(name)
    get_settings.cache_clear()
