"""The monitor function's shell, in-process: the runtime contract func-python 0.8.1 relies on."""

from pathlib import Path

from tests.functions.function_shell import (
    check_json_503_before_start,
    check_not_ready_without_database,
    check_runtime_contract,
    load_new,
)

new = load_new(Path(__file__).resolve().parents[1], "monitor")


def test_new_returns_the_instance_func_python_expects():
    check_runtime_contract(new)


def test_before_start_requests_get_a_json_503():
    check_json_503_before_start(new, "monitor")


def test_start_without_a_database_url_reports_why_it_is_not_ready():
    check_not_ready_without_database(new)
