"""Settings read from the environment, in one place.

Every other module takes a :class:`Settings` (or reads :func:`get_settings`) instead of
looking at ``os.environ`` itself, so the whole configuration surface is this file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict


class ConfigError(ValueError):
    """A setting has a value PEFM cannot use; the message names the variable."""


MIN_SECRET = 16
"""The fewest characters a token or key of the environment may have (``SECRETS``)."""
SECRETS = {
    "PEFM_INGEST_TOKEN": "ingest_token",
    "PEFM_ADMIN_TOKEN": "admin_token",
    "PEFM_EVENT_TOKEN": "event_token",
    "PEFM_WEBHOOK_TOKEN": "webhook_token",
    "PEFM_SHADOW_KEY": "shadow_key",
}
"""The bearer tokens and the shadow header's HMAC key, by their settings."""


@dataclass(frozen=True)
class Settings:
    """PEFM's configuration. Field docs are the README's configuration table."""

    database_url: str | None = field(default=None, repr=False)
    """``PEFM_DATABASE_URL``: PostgreSQL/TimescaleDB URL; unset -> embedded PostgreSQL. Left out
    of ``repr`` (it may hold a password), like every token and key here."""
    home: Path = field(default_factory=lambda: platformdirs.user_data_path("pefm"))
    """``PEFM_HOME``: where PEFM keeps local state (the embedded database's data directory)."""
    pool_max_size: int = 10
    """``PEFM_POOL_MAX_SIZE``: largest number of pooled database connections per process."""
    log_level: str = "INFO"
    """``PEFM_LOG_LEVEL``: Python logging level name."""
    gate_policy: Path | None = None
    """``PEFM_GATE_POLICY``: validation gate policy TOML; unset -> the one shipped with PEFM."""
    drift_policy: Path | None = None
    """``PEFM_DRIFT_POLICY``: drift policy TOML (monitor and ``pefm drift check``); unset -> the
    one shipped with PEFM."""
    ingest_token: str | None = field(default=None, repr=False)
    """``PEFM_INGEST_TOKEN``: bearer token for the ingest function's writes; unset -> writes refused."""
    admin_token: str | None = field(default=None, repr=False)
    """``PEFM_ADMIN_TOKEN``: bearer token for admin actions (rollouts, the local router's traffic
    table); unset -> refused."""
    event_token: str | None = field(default=None, repr=False)
    """``PEFM_EVENT_TOKEN``: the bearer token CloudEvent deliveries to the monitor carry (the
    ingest function sends it with its announcements); unset -> the monitor refuses CloudEvents,
    unless ``PEFM_UNAUTHENTICATED_EVENTS`` is on."""
    unauthenticated_events: bool = False
    """``PEFM_UNAUTHENTICATED_EVENTS``: ``on``: the monitor takes CloudEvents without a token (a
    cluster whose Knative Eventing cannot authenticate its deliveries: the PingSource carries no
    token); ``off`` (default)."""
    shadow_key: str | None = field(default=None, repr=False)
    """``PEFM_SHADOW_KEY``: the key a rollout's prober signs its shadow requests with and the
    inference revisions check (shared by them, never given to clients); unset -> no request is
    taken for a shadow one, so the probes count as traffic."""
    signing_key: str | None = field(default=None, repr=False)
    """``PEFM_SIGNING_KEY``: the trainer's Ed25519 private key (PEM, or base64 of the 32-byte seed)
    that signs every model artifact it registers; only the trainer holds it."""
    verify_keys: str | None = None
    """``PEFM_VERIFY_KEYS``: the Ed25519 public keys (PEM blocks or base64, comma-separated while a
    key is rotated) whose signatures the processes that load model artifacts accept; an artifact
    not signed by one of them is never loaded."""
    role_passwords: dict[str, str] = field(default_factory=dict, repr=False)
    """``PEFM_ROLE_PASSWORD_<COMPONENT>`` (INGEST, INFERENCE, DASHBOARD, MONITOR, ROLLOUT, TRAINER):
    the passwords the migrator gives the component roles (``pefm.storage.roles``)."""
    trainer_database_url: str | None = field(default=None, repr=False)
    """``PEFM_TRAINER_DATABASE_URL``: the database URL of the retraining the monitor starts with
    ``PEFM_RETRAIN=local`` (the trainer's role); unset -> the monitor's own."""
    max_body_bytes: int = 20 * 1024 * 1024
    """``PEFM_MAX_BODY_BYTES``: largest request body the functions accept (413 above it)."""
    model_concurrency: int = 2
    """``PEFM_MODEL_CONCURRENCY``: model-path forecasts (as-of, what-if) an inference revision
    computes at once; more wait (up to 10 s, then 503 with Retry-After)."""
    body_timeout_seconds: int = 30
    """``PEFM_BODY_TIMEOUT_SECONDS``: how long a request's body may take to arrive (408 after)."""
    model_version: str | None = None
    """``PEFM_MODEL_VERSION``: the registry version an inference revision serves; unset -> the
    serving version, followed through promotions (``ServiceFunction._follow_registry``)."""
    revision: str = "local"
    """``K_REVISION`` (set by Knative): the revision name reported in responses and metrics."""
    prometheus_url: str | None = field(default=None, repr=False)
    """``PEFM_PROMETHEUS_URL``: Prometheus for rollout analysis (and the dashboard); unset -> the
    request log in the database. It may carry a user and password (a managed Prometheus)."""
    router_url: str | None = None
    """``PEFM_ROUTER_URL``: the local traffic router of the inference service (embedded runtime)."""
    rollout_api_url: str | None = None
    """``PEFM_ROLLOUT_API_URL``: the rollout API the dashboard's Promote/Pause/Roll back buttons call."""
    dashboard_host: str = "127.0.0.1"
    """``PEFM_DASHBOARD_HOST``: the address the dashboard listens on (0.0.0.0 in its container)."""
    dashboard_port: int = 8050
    """``PEFM_DASHBOARD_PORT``: the dashboard's port."""
    knative_namespace: str | None = None
    """``PEFM_KNATIVE_NAMESPACE``: roll out Knative Services in this namespace (kubeconfig or
    in-cluster credentials) instead of the local runtime."""
    knative_url: str = "http://{name}.{namespace}.svc.cluster.local"
    """``PEFM_KNATIVE_URL``: how the rollout webhooks reach a Knative Service or one revision of it
    inside the cluster (``{name}``: the Service or the revision; ``{namespace}``); cluster-local
    http by default, https where the cluster has set up TLS for cluster-local domains."""
    fred_api_key: str | None = field(default=None, repr=False)
    """``PEFM_FRED_API_KEY``: the FRED API key ``pefm data fetch fred`` uses."""
    fred_url: str = "https://api.stlouisfed.org/fred"
    """``PEFM_FRED_URL``: the FRED API's base URL (a mirror or a recorded one in tests)."""
    webhook_token: str | None = field(default=None, repr=False)
    """``PEFM_WEBHOOK_TOKEN``: the token Flagger's webhooks carry in their metadata (``token``);
    unset -> the rollout API refuses webhook calls."""
    sink: str | None = None
    """``K_SINK`` (set by a Knative SinkBinding): where the ingest function sends its
    "observations ingested" CloudEvents (the monitor)."""
    rollout_spec: Path | None = None
    """``PEFM_ROLLOUT_SPEC``: the rollout spec YAML for rollouts started by ``pefm rollout start``,
    the rollout API and retraining; unset -> the repository's knative/rollout.yaml when present,
    else the built-in defaults."""
    revision_grace_seconds: float = 300.0
    """``PEFM_REVISION_GRACE_SECONDS``: how long a finished rollout keeps the revision that lost
    (rollback after a promotion is instant meanwhile) and a revision outside the traffic block
    keeps running, before the local runtime stops it."""
    local_replicas: int | None = None
    """``PEFM_LOCAL_REPLICAS``: how many replicas the local runtime runs of each inference
    revision, behind the local router (``pefm up --replicas``); unset -> the initial scale of
    knative/base/inference.yaml."""
    retention_days: int = 90
    """``PEFM_RETENTION_DAYS``: how many days of request and prediction logs (on plain tables) and
    drift reports are kept (``pefm.storage.retention``); TimescaleDB's policies drop the logs'
    chunks after 90 days whatever it says."""
    retrain: str | None = None
    """``PEFM_RETRAIN``: what the monitor does on a drift breach due for retraining: ``off``
    (report only), ``request`` (record the request, which a scheduled ``pefm retrain
    --if-requested`` answers: the cluster's pefm-retrain-on-drift CronJob) or ``local`` (record it
    and run that command); unset -> off, except under ``pefm up``, which closes the loop locally."""
    recondition: bool = True
    """``PEFM_RECONDITION``: ``on`` (default): an inference revision conditions its forecasts on
    the latest data as they arrive (parameters kept, no retrain); ``off``: it serves exactly the
    forecasts its version was registered with."""
    vintage_skew_seconds: int = 300
    """``PEFM_VINTAGE_SKEW_SECONDS``: how far an ingested vintage may lie from the ingest
    function's clock. Later is refused (a vintage in the future would shadow every later
    revision); earlier needs ``?backdate=1`` and the admin token (it changes past as-of reads)."""
    ingest_group_max: int = 256
    """``PEFM_INGEST_GROUP_MAX``: the most streamed writes the ingest function commits together
    (``pefm.serving.group_commit``)."""
    ingest_large_writes: int = 2
    """``PEFM_INGEST_LARGE_WRITES``: the large writes an ingest replica reads and writes at once
    (a body over 1 MiB, or over 1000 rows); more wait up to 30 s for their turn, then 503 with
    Retry-After. A 20 MB JSON upload takes some 250 MB while it is parsed and written, and a
    write of many series holds a lock per series in the database's shared lock table."""
    ingest_linger_ms: float = 0.0
    """``PEFM_INGEST_LINGER_MS``: how long the ingest function waits for more writes to join a
    group once one is queued (0 to 100 ms). None by default, as PostgreSQL's ``commit_delay``:
    while a group is being written the next one gathers by itself, so under load groups form
    without a wait, and a lone write is not kept waiting. A wait gives fewer, larger commits
    (less work for a database shared by many replicas), at that cost in latency."""
    ingest_oidc_audience: str | None = None
    """``PEFM_INGEST_OIDC_AUDIENCE``: the audience of the OIDC tokens Knative Eventing's deliveries
    to the ingest function carry (knative/streaming: ``serving.knative.dev/service/pefm/pefm-ingest``);
    set, ingest takes such a token in place of the ingest token (``pefm.serving.oidc``); unset ->
    the ingest token only."""
    ingest_oidc_subjects: tuple[str, ...] = ()
    """``PEFM_INGEST_OIDC_SUBJECTS``: the senders whose OIDC tokens ingest takes, comma-separated
    ``system:serviceaccount:<namespace>:<name>``; required with ``PEFM_INGEST_OIDC_AUDIENCE``."""
    kubernetes_api_url: str = "https://kubernetes.default.svc"
    """``PEFM_KUBERNETES_API_URL``: the Kubernetes API server that issues those tokens; its discovery
    document and published keys verify them."""
    prediction_log_queue: int = 10_000
    """``PEFM_PREDICTION_LOG_QUEUE``: predictions buffered for the database before new ones are
    dropped (and counted)."""
    redis_url: str | None = field(default=None, repr=False)
    """``PEFM_REDIS_URL``: Redis or Valkey (``redis://[user:password@]host:port/db``, ``rediss://``
    for TLS) shared by the inference replicas and ingest (``pefm.serving.cache``); unset -> each
    process caches in its own memory."""
    cache_key: str | None = field(default=None, repr=False)
    """``PEFM_CACHE_KEY``: the key the inference replicas tag and check every entry they share
    through Redis with (HMAC-SHA256; at least 32 characters); required with ``PEFM_REDIS_URL`` by
    a process that keeps entries there, never given to ingest or to the Redis server."""
    mlflow_tracking_uri: str | None = field(default=None, repr=False)  # it may carry a password
    """``PEFM_MLFLOW_TRACKING_URI``: the MLflow tracking server that mirrors the registry
    (``pefm.tracking``: runs, model versions, aliases champion and challenger); unset -> none."""
    mlflow_ui_url: str | None = None
    """``PEFM_MLFLOW_UI_URL``: where a browser reaches MLflow's UI (the dashboard's links to runs);
    unset -> the tracking URI."""
    rate_limit: tuple[int, int] | None = None
    """``PEFM_RATE_LIMIT``: ``N/S``, at most N requests per S seconds per caller (bearer token, else
    address) on the public endpoints (``pefm.serving.ratelimit``); unset -> no limit."""
    cache_ttl_seconds: int = 3600
    """``PEFM_CACHE_TTL_SECONDS``: how long a model-path answer (as-of, what-if) stays cached."""
    cache_max_bytes: int = 64 * 1024 * 1024
    """``PEFM_CACHE_MAX_BYTES``: the in-process cache's bound without Redis (Redis's own bound is
    its ``maxmemory``)."""

    @property
    def embedded_pgdata(self) -> Path:
        """The data directory of the embedded PostgreSQL, reused across runs."""
        return self.home / "postgres"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); invalid values raise ConfigError."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        if url := env.get("PEFM_DATABASE_URL", "").strip():
            try:
                conninfo_to_dict(url)
            except psycopg.ProgrammingError as exc:
                raise ConfigError(f"PEFM_DATABASE_URL is not a PostgreSQL URL: {exc}") from None
            kwargs["database_url"] = url
        if home := env.get("PEFM_HOME", "").strip():
            kwargs["home"] = Path(home).expanduser().resolve()
        if size := env.get("PEFM_POOL_MAX_SIZE", "").strip():
            kwargs["pool_max_size"] = _positive_int("PEFM_POOL_MAX_SIZE", size)
        if level := env.get("PEFM_LOG_LEVEL", "").strip():
            if level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                raise ConfigError(f"PEFM_LOG_LEVEL must be a logging level name, not {level!r}")
            kwargs["log_level"] = level.upper()
        for name, key in (
            ("PEFM_INGEST_TOKEN", "ingest_token"),
            ("PEFM_ADMIN_TOKEN", "admin_token"),
            ("PEFM_SHADOW_KEY", "shadow_key"),
            ("PEFM_EVENT_TOKEN", "event_token"),
            ("PEFM_MODEL_VERSION", "model_version"),
            ("K_REVISION", "revision"),
            ("PEFM_PROMETHEUS_URL", "prometheus_url"),
            ("PEFM_ROUTER_URL", "router_url"),
            ("PEFM_ROLLOUT_API_URL", "rollout_api_url"),
            ("PEFM_DASHBOARD_HOST", "dashboard_host"),
            ("PEFM_KNATIVE_NAMESPACE", "knative_namespace"),
            ("PEFM_KNATIVE_URL", "knative_url"),
            ("PEFM_WEBHOOK_TOKEN", "webhook_token"),
            ("PEFM_FRED_API_KEY", "fred_api_key"),
            ("PEFM_FRED_URL", "fred_url"),
            ("PEFM_REDIS_URL", "redis_url"),
            ("PEFM_CACHE_KEY", "cache_key"),
            ("PEFM_MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
            ("PEFM_MLFLOW_UI_URL", "mlflow_ui_url"),
            ("PEFM_INGEST_OIDC_AUDIENCE", "ingest_oidc_audience"),
            ("PEFM_KUBERNETES_API_URL", "kubernetes_api_url"),
            ("K_SINK", "sink"),
        ):
            if value := env.get(name, "").strip():
                kwargs[key] = value
        for name, key, parse in (
            ("PEFM_SIGNING_KEY", "signing_key", "private_key"),
            ("PEFM_VERIFY_KEYS", "verify_keys", "public_keys"),
        ):
            if value := env.get(name, "").strip():
                from pefm.storage import signing

                try:
                    getattr(signing, parse)(value)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
                kwargs[key] = value
        prefix = "PEFM_ROLE_PASSWORD_"
        passwords = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix) and v}
        from pefm.storage.roles import COMPONENTS

        if unknown := sorted(set(passwords) - set(COMPONENTS)):
            raise ConfigError(f"{prefix}{unknown[0].upper()}: no such component ({', '.join(COMPONENTS)})")
        kwargs["role_passwords"] = passwords
        if url := env.get("PEFM_TRAINER_DATABASE_URL", "").strip():
            kwargs["trainer_database_url"] = url
        if limit := env.get("PEFM_RATE_LIMIT", "").strip():
            parts = re.fullmatch(r"([0-9]{1,9})/([0-9]{1,5})", limit)
            if parts is None or int(parts[1]) == 0 or not 0 < int(parts[2]) <= 86400:
                raise ConfigError(f"PEFM_RATE_LIMIT must be N/S (requests per seconds, e.g. 600/60), not {limit!r}")
            kwargs["rate_limit"] = (int(parts[1]), int(parts[2]))
        if not str(kwargs.get("redis_url", "redis://")).startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("PEFM_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        if len(kwargs.get("cache_key", "x" * 32)) < 32:
            raise ConfigError("PEFM_CACHE_KEY must be at least 32 characters (e.g. openssl rand -hex 32)")
        for name, key in SECRETS.items():  # "admin" or "secret" falls to a guess, whatever the rate limit
            if len(kwargs.get(key) or "x" * MIN_SECRET) < MIN_SECRET:
                raise ConfigError(f"{name} must be at least {MIN_SECRET} characters (e.g. openssl rand -hex 32)")
        for name, value in env.items():  # .env.example's values, left in place, would be tokens anyone can read
            if name.startswith("PEFM_") and str(value).startswith("change-me"):
                raise ConfigError(f"{name} is .env.example's placeholder: set one of your own (openssl rand -hex 32)")
        if subjects := env.get("PEFM_INGEST_OIDC_SUBJECTS", "").strip():
            kwargs["ingest_oidc_subjects"] = tuple(s.strip() for s in subjects.split(",") if s.strip())
        if bool(kwargs.get("ingest_oidc_audience")) != bool(kwargs.get("ingest_oidc_subjects")):
            raise ConfigError(
                "PEFM_INGEST_OIDC_AUDIENCE and PEFM_INGEST_OIDC_SUBJECTS go together: set both or neither"
            )
        if "{name}" not in kwargs.get("knative_url", "{name}"):
            raise ConfigError("PEFM_KNATIVE_URL must contain {name} (and usually {namespace})")
        for name, key in (
            ("PEFM_MAX_BODY_BYTES", "max_body_bytes"),
            ("PEFM_BODY_TIMEOUT_SECONDS", "body_timeout_seconds"),
            ("PEFM_MODEL_CONCURRENCY", "model_concurrency"),
            ("PEFM_PREDICTION_LOG_QUEUE", "prediction_log_queue"),
            ("PEFM_VINTAGE_SKEW_SECONDS", "vintage_skew_seconds"),
            ("PEFM_DASHBOARD_PORT", "dashboard_port"),
            ("PEFM_CACHE_TTL_SECONDS", "cache_ttl_seconds"),
            ("PEFM_CACHE_MAX_BYTES", "cache_max_bytes"),
            ("PEFM_INGEST_GROUP_MAX", "ingest_group_max"),
            ("PEFM_INGEST_LARGE_WRITES", "ingest_large_writes"),
        ):
            if raw := env.get(name, "").strip():
                kwargs[key] = _positive_int(name, raw)
        if events := env.get("PEFM_UNAUTHENTICATED_EVENTS", "").strip():
            if events not in ("on", "off"):
                raise ConfigError(f"PEFM_UNAUTHENTICATED_EVENTS must be on or off, not {events!r}")
            kwargs["unauthenticated_events"] = events == "on"
        if recondition := env.get("PEFM_RECONDITION", "").strip():
            if recondition not in ("on", "off"):
                raise ConfigError(f"PEFM_RECONDITION must be on or off, not {recondition!r}")
            kwargs["recondition"] = recondition == "on"
        if retrain := env.get("PEFM_RETRAIN", "").strip():
            if retrain not in ("off", "local", "request"):
                raise ConfigError(f"PEFM_RETRAIN must be off, local or request, not {retrain!r}")
            kwargs["retrain"] = retrain
        if raw := env.get("PEFM_INGEST_LINGER_MS", "").strip():
            kwargs["ingest_linger_ms"] = _number("PEFM_INGEST_LINGER_MS", raw, 0.0, 100.0)
        if raw := env.get("PEFM_RETENTION_DAYS", "").strip():
            kwargs["retention_days"] = _positive_int("PEFM_RETENTION_DAYS", raw)
        if raw := env.get("PEFM_LOCAL_REPLICAS", "").strip():
            kwargs["local_replicas"] = _positive_int("PEFM_LOCAL_REPLICAS", raw)
        if raw := env.get("PEFM_REVISION_GRACE_SECONDS", "").strip():
            kwargs["revision_grace_seconds"] = _number("PEFM_REVISION_GRACE_SECONDS", raw, 0.0, 1e9)
        for name, key in (
            ("PEFM_GATE_POLICY", "gate_policy"),
            ("PEFM_DRIFT_POLICY", "drift_policy"),
            ("PEFM_ROLLOUT_SPEC", "rollout_spec"),
        ):
            if given := env.get(name, "").strip():
                path = Path(given).expanduser()
                if not path.is_file():
                    raise ConfigError(f"{name} names no file: {given}")
                kwargs[key] = path
        return cls(**kwargs)  # type: ignore[arg-type]


def _number(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in {low:g}..{high:g}")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}")
    return value


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings.from_env()
