"""When the migrations use TimescaleDB: only when its library is preloaded and new enough."""

import pytest

from pefm.storage.timescale import plan, preloads_timescaledb


@pytest.mark.parametrize(
    ("setting", "preloaded"),
    [
        ("timescaledb", True),
        ("pg_stat_statements, timescaledb", True),
        ('"timescaledb",auto_explain', True),
        ("$libdir/timescaledb.so", True),
        ("", False),
        ("pg_stat_statements", False),
        ("timescaledb_toolkit", False),
    ],
)
def test_preload_setting(setting, preloaded):
    assert preloads_timescaledb(setting) is preloaded


def test_installed_but_not_preloaded_falls_back_to_plain_tables():
    decided = plan(available="2.17.2", installed="2.17.2", preload="pg_stat_statements")
    assert decided.use is False and decided.available is True
    assert "shared_preload_libraries" in decided.reason and "pg_stat_statements" in decided.reason
    assert plan(available="2.17.2", installed=None, preload="").use is False  # would drop the connection


def test_too_old_for_by_range_falls_back_and_new_enough_is_used():
    old = plan(available="2.9.1", installed=None, preload="timescaledb")
    assert old.use is False and "2.9.1" in old.reason and "2.13" in old.reason
    assert plan(available="2.28.3", installed="2.13.0", preload="timescaledb").use is True
    assert plan(available="2.17.2", installed=None, preload="timescaledb").use is True


def test_no_extension_at_all():
    decided = plan(available=None, installed=None, preload="")
    assert decided.use is False and decided.available is False


def test_a_database_whose_tables_were_made_plain_keeps_them_plain():
    """Its first migrations ran before TimescaleDB was usable; the later ones must not half-convert it."""
    decided = plan(available="2.17.2", installed=None, preload="timescaledb", plain_schema=True)
    assert decided.use is False and "before TimescaleDB was usable" in decided.reason
    assert plan(available="2.17.2", installed="2.17.2", preload="timescaledb", plain_schema=True).use is True
