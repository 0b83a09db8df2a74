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
        }
    )
    assert settings.database_url == "postgresql://u:p@db.example:5432/pefm"
    assert settings.home == tmp_path
    assert settings.pool_max_size == 3
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PEFM_DATABASE_URL", "postgresql://host:notaport/x?bogus_option=1"),
        ("PEFM_POOL_MAX_SIZE", "zero"),
        ("PEFM_POOL_MAX_SIZE", "0"),
        ("PEFM_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
