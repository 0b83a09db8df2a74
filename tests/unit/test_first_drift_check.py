"""`pefm up`'s first drift check: a monitor that fails it does not end the stack. Real HTTP
servers on this machine stand for a monitor that answers an error and one that hangs up."""

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pefm.cli.stack import _first_drift_check


@contextmanager
def server(handle) -> Iterator[str]:
    """An HTTP server whose POSTs ``handle`` answers; its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            handle(self)

        def log_message(self, *args):  # not on the test's stderr, which it reads
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def unavailable(request):
    """What the monitor answers when it does not trust the serving model's key."""
    body = b'{"error": "the serving model could not be loaded: signed by key 0123, not one trusted here"}'
    request.send_response(503)
    request.send_header("content-type", "application/json")
    request.send_header("content-length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


def hang_up(request):
    """A monitor that died in the middle of the check."""
    request.close_connection = True
    request.connection.close()


def ok(request):
    request.send_response(200)
    request.send_header("content-length", "2")
    request.end_headers()
    request.wfile.write(b"{}")


@pytest.mark.parametrize(
    ("handle", "said"),
    [
        (unavailable, 'HTTP 503: {"error": "the serving model could not be loaded: signed by key 0123'),
        (hang_up, "RemoteProtocolError: Server disconnected without sending a response."),
    ],
)
def test_a_failed_first_drift_check_is_a_warning_not_the_end_of_the_stack(handle, said, capsys):
    """A 503, a monitor gone mid-check or one past the 300 s timeout came out of `pefm up` as a
    traceback, and its `finally` stopped every process of a stack that was otherwise serving."""
    with server(handle) as url:
        _first_drift_check(url, "admin-token", Path("/logs/pefm-monitor-local.log"))
    warned = " ".join(capsys.readouterr().err.split())
    assert warned.startswith(f"drift: the first drift check failed ({said}")
    assert warned.endswith(
        "the stack goes on, each ingest asks for another (the monitor's log: /logs/pefm-monitor-local.log)"
    )


def test_a_first_drift_check_that_passes_says_nothing(capsys):
    with server(ok) as url:
        _first_drift_check(url, "admin-token", Path("/logs/pefm-monitor-local.log"))
    assert capsys.readouterr().err == ""
