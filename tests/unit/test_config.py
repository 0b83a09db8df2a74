from pathlib import Path

import pytest

from pefm.config import ConfigError, Settings


def test_defaults_use_the_embedded_database_under_a_per_user_home():
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.home.name == "pefm"
    assert settings.embedded_pgdata == settings.home / "postgres"


def test_values_are_read_from_the_environment(tmp_path: Path):
    settings = Settings.from_env(
        {
            "PEFM_DATABASE_URL": "postgresql://u:p@db.example:5432/pefm",
            "PEFM_HOME": str(tmp_path),
            "PEFM_POOL_MAX_SIZE": "3",
            "PEFM_LOG_LEVEL": "debug",
            "PEFM_LOCAL_REPLICAS": "2",
            "PEFM_RETRAIN": "request",
        }
    )
    assert settings.database_url == "postgresql://u:p@db.example:5432/pefm"
    assert settings.home == tmp_path
    assert settings.pool_max_size == 3
    assert settings.log_level == "DEBUG"
    assert settings.local_replicas == 2
    assert settings.retrain == "request"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PEFM_DATABASE_URL", "postgresql://host:notaport/x?bogus_option=1"),
        ("PEFM_POOL_MAX_SIZE", "zero"),
        ("PEFM_POOL_MAX_SIZE", "0"),
        ("PEFM_LOG_LEVEL", "LOUD"),
        ("PEFM_REDIS_URL", "http://cache:6379"),
        ("PEFM_CACHE_KEY", "too-short-to-key-an-hmac"),
        ("PEFM_RATE_LIMIT", "100"),
        ("PEFM_RATE_LIMIT", "0/60"),
        ("PEFM_RATE_LIMIT", "\u00b2/60"),
        ("PEFM_RATE_LIMIT", "10/0"),
        ("PEFM_CACHE_TTL_SECONDS", "-1"),
        ("PEFM_LOCAL_REPLICAS", "0"),
        ("PEFM_LOCAL_REPLICAS", "1.5"),
        ("PEFM_RETRAIN", "cluster"),
        ("PEFM_ADMIN_TOKEN", "change-me-admin-token"),  # .env.example's, left in place: anyone's token
        ("PEFM_ADMIN_TOKEN", "admin"),  # a token a guess finds
        ("PEFM_INGEST_TOKEN", "x" * 15),
        ("PEFM_EVENT_TOKEN", "secret"),
        ("PEFM_WEBHOOK_TOKEN", "webhook"),
        ("PEFM_SHADOW_KEY", "key"),
        ("PEFM_ROLE_PASSWORD_INGEST", "change-me-ingest-password"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_repr_never_shows_a_secret():
    from pefm.storage.signing import generate

    signing_key, _ = generate()
    settings = Settings.from_env(
        {
            "PEFM_DATABASE_URL": "postgresql://pefm:db-password@db:5432/pefm",
            "PEFM_INGEST_TOKEN": "ingest-secret-token",
            "PEFM_ADMIN_TOKEN": "admin-secret-token",
            "PEFM_SHADOW_KEY": "shadow-secret-key",
            "PEFM_EVENT_TOKEN": "event-secret-token",
            "PEFM_WEBHOOK_TOKEN": "webhook-secret-token",
            "PEFM_FRED_API_KEY": "fred-secret",
            "PEFM_SIGNING_KEY": signing_key,
            "PEFM_ROLE_PASSWORD_INGEST": "role-secret",
            "PEFM_TRAINER_DATABASE_URL": "postgresql://pefm_trainer:trainer-password@db:5432/pefm",
        }
    )
    assert settings.shadow_key == "shadow-secret-key" and settings.role_passwords == {"ingest": "role-secret"}
    assert not any(secret in repr(settings) for secret in ("password", "secret", signing_key))


def test_keys_and_role_passwords_are_checked_naming_the_variable():
    with pytest.raises(ConfigError, match="PEFM_SIGNING_KEY"):
        Settings.from_env({"PEFM_SIGNING_KEY": "not-a-key"})
    with pytest.raises(ConfigError, match="PEFM_VERIFY_KEYS"):
        Settings.from_env({"PEFM_VERIFY_KEYS": "AAAA"})  # base64, but 3 bytes
    with pytest.raises(ConfigError, match="PEFM_ROLE_PASSWORD_ROOT"):
        Settings.from_env({"PEFM_ROLE_PASSWORD_ROOT": "x"})


def test_the_local_token_file_is_private_and_kept(tmp_path):
    import os
    import stat

    from pefm.config import Settings
    from pefm.local.secrets import local_secrets
    from pefm.storage.signing import private_key, public_key

    # checks the file as left (0600 under a umask that would make a default file world-readable),
    # not the moment between creating and chmod-ing it that the fix removed
    old = os.umask(0)
    try:
        first = local_secrets(tmp_path, Settings(home=tmp_path))
    finally:
        os.umask(old)
    path = tmp_path / "tokens.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {
        *("PEFM_INGEST_TOKEN", "PEFM_ADMIN_TOKEN", "PEFM_SHADOW_KEY", "PEFM_EVENT_TOKEN"),
        *("PEFM_SIGNING_KEY", "PEFM_VERIFY_KEYS"),
    }
    assert all(first.values())
    key = private_key(first["PEFM_SIGNING_KEY"])  # a key pair: the public key is the private key's
    assert key.public_key() == public_key(first["PEFM_VERIFY_KEYS"])
    assert local_secrets(tmp_path, Settings(home=tmp_path)) == first  # generated once


def test_tokens_env_is_made_private_whenever_read(tmp_path, monkeypatch):
    """A tokens.env copied or restored with mode 644 stayed 644 (chmod ran only when values
    changed). (What it keeps: tests/unit/test_secrets.py.)"""
    import stat

    from pefm.local.secrets import local_secrets

    first = local_secrets(tmp_path, Settings(home=tmp_path))
    path = tmp_path / "tokens.env"
    path.chmod(0o644)
    assert local_secrets(tmp_path, Settings(home=tmp_path)) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# Given to each process `pefm up` starts by its starter, never taken from the environment: who it
# is (database URL and role), what it may do (tokens, keys), where the others are, what it serves.
GIVEN = {
    *("PEFM_DATABASE_URL", "PEFM_TRAINER_DATABASE_URL", "PEFM_ROLE_PASSWORD_"),
    *("PEFM_ADMIN_TOKEN", "PEFM_INGEST_TOKEN", "PEFM_EVENT_TOKEN", "PEFM_WEBHOOK_TOKEN", "PEFM_FRED_API_KEY"),
    *("PEFM_SHADOW_KEY", "PEFM_SIGNING_KEY", "PEFM_VERIFY_KEYS", "PEFM_CACHE_KEY"),
    *("PEFM_ROUTER_URL", "PEFM_ROLLOUT_API_URL", "PEFM_DASHBOARD_PORT", "PEFM_DASHBOARD_HOST"),
    *("PEFM_KNATIVE_NAMESPACE", "PEFM_KNATIVE_URL", "PEFM_MODEL_VERSION"),
    *("PEFM_REDIS_URL", "PEFM_MLFLOW_TRACKING_URI", "PEFM_PROMETHEUS_URL"),  # URLs that may carry a password
}


def test_every_setting_is_either_inherited_by_the_processes_pefm_up_starts_or_given_to_each():
    """`pefm up` had dropped every PEFM_ setting of its environment (log level, rate limit, drift
    policy, Redis, Prometheus for the rollout analysis): a setting added later must be placed."""
    import re

    from pefm.local.runtime import INHERITED

    names = set(re.findall(r'"(PEFM_[A-Z_]+)"', (Path(__file__).parents[2] / "src/pefm/config.py").read_text()))
    assert INHERITED.isdisjoint(GIVEN)
    assert names - INHERITED - GIVEN == set()
    assert INHERITED - names == set()


def test_the_environment_a_started_process_inherits(monkeypatch):
    from pefm.local.runtime import inherited_environment

    monkeypatch.setenv("PEFM_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PEFM_PROMETHEUS_URL", "http://user:pass@127.0.0.1:9090")  # to what judges rollouts only
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mlflows")  # with MLflow's URL, where it is used
    monkeypatch.setenv("PEFM_ADMIN_TOKEN", "not-for-every-process")
    monkeypatch.setenv("PEFM_ROLE_PASSWORD_TRAINER", "secret")
    monkeypatch.setenv("K_REVISION", "mine")
    monkeypatch.setenv("PEFM_REDIS_URL", "redis://:password@127.0.0.1:6379/0")  # to the functions using it only
    monkeypatch.setenv("PEFM_DRIFT_POLICY", "drift.toml")  # a child runs in its own folder
    monkeypatch.setenv("PGPASSWORD", "the-owners-password")  # libpq's: each child gets its own connection
    monkeypatch.setenv("PGSSLKEY", "/root/owner.key")
    environment = inherited_environment()
    assert not {"PGPASSWORD", "PGSSLKEY"} & set(environment)
    assert environment["PEFM_LOG_LEVEL"] == "DEBUG"
    dropped = {"PEFM_ADMIN_TOKEN", "PEFM_ROLE_PASSWORD_TRAINER", "K_REVISION", "PEFM_REDIS_URL", "PEFM_PROMETHEUS_URL"}
    assert not (dropped | {"MLFLOW_TRACKING_PASSWORD"}) & set(environment)
    assert environment["PEFM_DRIFT_POLICY"] == str(Path.cwd() / "drift.toml")
    assert environment["PATH"] == __import__("os").environ["PATH"]


def test_the_cache_and_rate_limit_settings():
    key = "entry-key-" + "0" * 32
    settings = Settings.from_env(
        {
            "PEFM_REDIS_URL": "redis://:pw@cache:6379/0",
            "PEFM_CACHE_KEY": key,
            "PEFM_RATE_LIMIT": "600/60",
            "PEFM_CACHE_TTL_SECONDS": "30",
        }
    )
    assert (settings.redis_url, settings.cache_key, settings.rate_limit, settings.cache_ttl_seconds) == (
        "redis://:pw@cache:6379/0",
        key,
        (600, 60),
        30,
    )
    assert "pw" not in repr(settings) and key not in repr(settings)


def test_the_ingest_oidc_settings_go_together():
    settings = Settings.from_env(
        {
            "PEFM_INGEST_OIDC_AUDIENCE": "serving.knative.dev/service/pefm/pefm-ingest",
            "PEFM_INGEST_OIDC_SUBJECTS": "a, b,",
        }
    )
    assert (settings.ingest_oidc_subjects, settings.kubernetes_api_url) == (
        ("a", "b"),
        "https://kubernetes.default.svc",
    )
    for alone in ("PEFM_INGEST_OIDC_AUDIENCE", "PEFM_INGEST_OIDC_SUBJECTS"):
        with pytest.raises(ConfigError, match="PEFM_INGEST_OIDC_AUDIENCE and PEFM_INGEST_OIDC_SUBJECTS"):
            Settings.from_env({alone: "x"})


def test_verify_keys_may_mix_pem_and_base64_while_a_key_is_rotated():
    """Terraform joins the new key's PEM with the previous keys, which `pefm models keygen` and
    `make up` write as base64: the list must load in either order, one key per entry."""
    from cryptography.hazmat.primitives import serialization

    from pefm.storage.signing import generate, key_id, private_key, public_key, public_keys

    new = private_key(generate()[0]).public_key()
    pem = new.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    b64 = generate()[1]
    ids = {"pem": key_id(new), "b64": key_id(public_key(b64))}
    for text, order in (
        (f"{pem},{b64}", ["pem", "b64"]),
        (f"{b64},{pem}", ["b64", "pem"]),
        (f"{b64}\n, {pem}\n", ["b64", "pem"]),
        (f"{pem}{pem},{b64}", ["pem", "pem", "b64"]),
    ):
        Settings.from_env({"PEFM_VERIFY_KEYS": text})  # no ConfigError
        assert [key_id(k) for k in public_keys(text)] == [ids[o] for o in order], text
    with pytest.raises(ConfigError, match="PEFM_VERIFY_KEYS"):  # a block cut short is still refused
        Settings.from_env({"PEFM_VERIFY_KEYS": f"{b64},{pem[:40]}"})
