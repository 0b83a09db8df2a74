"""Checks of a kn func function's shell, in-process, shared by each function's own tests/."""

import asyncio
import importlib.util
import inspect
import json
import sys
from pathlib import Path


def load_new(folder: Path, name: str):
    """``new`` from ``folder/function`` imported under a unique name (every function has a package
    called ``function``)."""
    package = folder / "function"
    spec = importlib.util.spec_from_file_location(
        f"{name}_function", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.new


def check_runtime_contract(new) -> None:
    """``new()`` gives what func-python 0.8.1 calls: async handle, SYNCHRONOUS start/stop/alive/ready."""
    fn = new()
    assert inspect.iscoroutinefunction(fn.handle)
    for hook in ("start", "stop", "alive", "ready"):
        assert callable(getattr(fn, hook)) and not inspect.iscoroutinefunction(getattr(fn, hook))
    assert fn.alive() is True
    assert fn.ready() == (False, "starting")


def check_json_503_before_start(new, service: str) -> None:
    fn = new()
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/anything", "headers": [], "query_string": b""}
    asyncio.run(fn.handle(scope, receive, send))
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"].startswith(f"{service} is not ready")
    # a body is read (and dropped) before the 503: the server keeps the connection only then
    received = []

    async def receive_body():
        received.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent.clear()
    posted = {**scope, "method": "POST", "headers": [(b"content-length", b"2")]}
    asyncio.run(fn.handle(posted, receive_body, send))
    assert received == [True] and sent[0]["status"] == 503
    assert (b"connection", b"close") not in sent[0]["headers"]


def check_not_ready_without_database(new) -> None:
    fn = new()
    fn.start({"PEFM_HOME": "/nonexistent"})
    ready, reason = fn.ready()
    assert ready is False and "PEFM_DATABASE_URL is not set" in reason
    fn.stop()
