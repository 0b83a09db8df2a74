"""The ingest function's shell, in-process: the runtime contract func-python 0.8.1 relies on."""

import asyncio
import importlib.util
import inspect
import json
import sys
from pathlib import Path

FUNCTION = Path(__file__).resolve().parents[1] / "function"


def _load():
    """Import this folder's ``function`` package under a unique name (every function has one)."""
    spec = importlib.util.spec_from_file_location(
        "ingest_function", FUNCTION / "__init__.py", submodule_search_locations=[str(FUNCTION)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


new = _load().new


def test_new_returns_the_instance_func_python_expects():
    fn = new()
    assert inspect.iscoroutinefunction(fn.handle)
    for hook in ("start", "stop", "alive", "ready"):  # called WITHOUT await by func-python 0.8.1
        assert callable(getattr(fn, hook)) and not inspect.iscoroutinefunction(getattr(fn, hook))
    assert fn.alive() is True
    assert fn.ready() == (False, "starting")


def test_before_start_requests_get_a_json_503():
    fn = new()
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/anything", "headers": [], "query_string": b""}
    asyncio.run(fn.handle(scope, receive, send))
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"].startswith("ingest is not ready")


def test_start_without_a_database_url_reports_why_it_is_not_ready():
    fn = new()
    fn.start({"PEFM_HOME": "/nonexistent"})
    ready, reason = fn.ready()
    assert ready is False and "PEFM_DATABASE_URL is not set" in reason
    fn.stop()
