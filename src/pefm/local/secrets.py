"""The secrets of PEFM on one machine: kept in ``$PEFM_HOME/tokens.env`` (mode 600 from the moment
it exists), generated the first time, overridden by the environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pefm.config import ConfigError, Settings, get_settings

TOKENS = ("PEFM_INGEST_TOKEN", "PEFM_ADMIN_TOKEN", "PEFM_SHADOW_KEY", "PEFM_EVENT_TOKEN")


def local_secrets(home: Path, settings: Settings | None = None) -> dict[str, str]:
    """The ingest, admin and event tokens, the shadow key and the artifact signing key pair
    (``PEFM_SIGNING_KEY``, ``PEFM_VERIFY_KEYS``): from the environment, else from
    ``home/tokens.env``, else generated once and kept there."""
    from pefm.storage import signing

    settings = settings or get_settings()
    path = home / "tokens.env"
    stored = {}
    if path.exists():
        path.chmod(0o600)  # one copied or restored with a looser mode, or written by an older PEFM
        stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    given = {
        "PEFM_INGEST_TOKEN": settings.ingest_token,
        "PEFM_ADMIN_TOKEN": settings.admin_token,
        "PEFM_SHADOW_KEY": settings.shadow_key,
        "PEFM_EVENT_TOKEN": settings.event_token,
    }
    if lines := [name for name, value in given.items() if value and ("\n" in value or "\r" in value)]:
        raise ConfigError(f"{lines[0]} holds a line break, which {path} cannot keep")
    values = {
        name: given[name] or stored.get(name) or secrets.token_urlsafe(32 if name == "PEFM_SHADOW_KEY" else 24)
        for name in TOKENS
    }
    if key := stored.get("PEFM_SIGNING_KEY"):
        values["PEFM_SIGNING_KEY"], values["PEFM_VERIFY_KEYS"] = key, signing.public_text(key)
    else:
        values["PEFM_SIGNING_KEY"], values["PEFM_VERIFY_KEYS"] = signing.generate()
    if values != stored:
        home.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("".join(f"{k}={v}\n" for k, v in values.items()))
    if settings.signing_key:  # the environment's key pair (PEM, perhaps): used, not kept here
        values["PEFM_SIGNING_KEY"] = settings.signing_key
        values["PEFM_VERIFY_KEYS"] = settings.verify_keys or signing.public_text(settings.signing_key)
    return values


def use_local_secrets(settings: Settings) -> None:
    """Put the secrets the environment leaves unset into ``os.environ``, taken from ``tokens.env``
    in ``settings.home`` (the ``pefm`` command and the benchmarks on an embedded server), so that
    ``get_settings()`` and the processes started from here see them."""
    for name, value in local_secrets(settings.home, settings).items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
