"""Request and prediction logs, written off the request path and out of the serving process.

Handlers ``put`` rows into a bounded buffer and return at once (nothing is signalled per row: a
thread woken per put cost a request ~0.1 ms). A background thread takes a batch every ``interval``,
or as soon as one is full, and hands it to the writer process (started on first need), which
writes it with COPY over its own connection: psycopg's adaptation of the rows does not take the
GIL from the event loop. Serving never waits on it. While the database is away the thread has the
process reconnect on its own clock (0.1 s, doubling to at most 1 s, whatever the traffic) and
leaves the rows queued, so a short outage loses nothing; rows are dropped, and counted
(``pefm_log_rows_dropped``), only when the buffer is full (``maxsize`` rows, or ``MAX_BYTES`` of
their text) or a batch fails mid-write.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

log = logging.getLogger(__name__)
MIN_BACKOFF, MAX_BACKOFF = 0.1, 1.0
MAX_BYTES = 64 * 1024 * 1024
"""The most text (a prediction's forecast, its ids) the buffer holds, besides the one batch being
written: ``maxsize`` rows of 60-step forecasts at several levels were some 250 MB while the
database was away."""
ROW_BYTES = 100
"""What a row is counted as besides its text (its numbers and timestamps, roughly)."""

TABLES = {
    "request_log": ("ts", "service", "revision", "route", "method", "status", "latency_ms"),
    "revision_starts": ("ts", "service", "revision", "start_to_ready_s"),
    "predictions": (
        "ts",
        "request_id",
        "revision",
        "model_version",
        "series_id",
        "as_of",
        "what_if",
        "horizon",
        "forecast",
        "space",
    ),
}


class LogWriter:
    """The buffer, and the thread that hands its batches to the writer process (started on first
    need) and waits for each to be written (measured under load: written on this thread instead,
    the batches cost a plain forecast 15 µs more of the serving process's CPU, and 1.4 ms more
    p99). Where no process can be started, the thread writes them itself."""

    def __init__(
        self,
        url: str,
        *,
        maxsize: int,
        on_drop: Callable[[str, int], None],
        batch_size: int = 1000,
        interval: float = 0.25,
    ):
        self.url = url
        self.on_drop = on_drop
        self.batch_size = batch_size
        self.interval = interval
        self.maxsize = maxsize
        self._rows: deque[tuple[str, tuple, int]] = deque()
        self._bytes = 0  # the buffered rows' sizes (``_size``), under ``_lock``
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._full = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pefm-log-writer", daemon=True)
        self._connected = False
        self._process = None
        self._to_process = self._from_process = None  # multiprocessing Connections on its stdin, stdout
        self._backoff = MIN_BACKOFF

    def start(self) -> None:
        self._thread.start()

    def put(self, table: str, row: tuple) -> None:
        """Buffer a row of ``TABLES[table]``'s columns, its ts as seconds since the epoch
        (``time.time()``: a float pickles for the writer process in a fraction of a datetime's
        time); never blocks. A full buffer drops the row and counts it."""
        size = ROW_BYTES + sum(len(v) for v in row if isinstance(v, str))
        rows = self._rows
        with self._lock:
            full = len(rows) >= self.maxsize or self._bytes + size > MAX_BYTES
            if not full:
                rows.append((table, row, size))
                self._bytes += size
        if full:
            self.on_drop(table, 1)
        elif len(rows) == self.batch_size:
            self._full.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop the thread and the process."""
        self._stop.set()
        self._full.set()
        self._thread.join(timeout)
        self._end_process()

    def _run(self) -> None:
        """Batches to the writer process, connected (and the process started) once there is a
        first batch to write: not while a revision is starting."""
        batch: list[tuple[str, tuple]] = []  # taken, not yet written
        retried = False  # a write of it failed once: a second failure drops it
        while not (self._stop.is_set() and not self._rows and not batch):
            if not batch:
                batch, retried = self._take(), False
                continue
            if not self._connected and not self._connect():
                if self._stop.is_set():  # stopping with the database away: what is queued is lost
                    self._drop(batch + self._drain())
                    return
                continue
            if self._write(batch):
                batch = []
            elif retried:
                self._drop(batch)
                batch = []
            else:
                retried = True

    def _connect(self) -> bool:
        """One connection attempt (by the process); after a failure, wait out the backoff (rows
        keep queueing)."""
        failure = self._ask(("connect",))
        if failure is not None:
            if self._backoff == MIN_BACKOFF:
                log.warning("log writer lost the database (%s); reconnecting while rows queue", failure)
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            return False
        self._connected, self._backoff = True, MIN_BACKOFF
        return True

    def _write(self, batch: list[tuple[str, tuple]]) -> bool:
        """Write a batch in one transaction (by the process); False when it failed (the process
        then drops its connection)."""
        failure = self._ask(("write", batch))
        if failure is not None:
            log.warning("writing %d log rows failed (%s)", len(batch), failure)
            self._connected = False
            return False
        return True

    def _ask(self, message: tuple) -> str | None:
        """``message`` to the writer process (started first if it is not running), and its
        answer: None when done, else what failed."""
        try:
            if self._process is None or self._process.poll() is not None:
                self._end_process()
                self._start_process()
            self._to_process.send(message)
            return self._from_process.recv()
        except (OSError, EOFError) as exc:  # no process, or it died: the next message starts another
            self._end_process()
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a row that does not pickle: nothing was sent
            return f"{type(exc).__name__}: {exc}"

    def _start_process(self) -> None:
        """The writer process: this interpreter, running ``_serve`` on its stdin and stdout (not a
        multiprocessing child, which would import this program's ``__main__`` again)."""
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        process = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._process = process
        self._to_process = Connection(os.dup(process.stdin.fileno()), readable=False)
        self._from_process = Connection(os.dup(process.stdout.fileno()), writable=False)
        process.stdin.close()  # the connections hold their own copies
        process.stdout.close()
        self._to_process.send({"path": sys.path, "url": self.url})
        self._connected = False

    def _end_process(self) -> None:
        if self._to_process is not None:
            self._to_process.close()  # the process ends when its stdin does
            self._from_process.close()
            self._to_process = self._from_process = None
        if self._process is not None:
            try:
                self._process.wait(2)
            except Exception:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._connected = False

    def _drain(self) -> list[tuple[str, tuple]]:
        return self._pop(len(self._rows))

    def _pop(self, n: int) -> list[tuple[str, tuple]]:
        """The first ``n`` buffered rows, out of the buffer."""
        with self._lock:
            taken = [self._rows.popleft() for _ in range(n)]
            self._bytes -= sum(size for _, _, size in taken)
        return [(table, row) for table, row, _ in taken]

    def _drop(self, batch: list[tuple[str, tuple]]) -> None:
        counts: dict[str, int] = defaultdict(int)
        for table, _ in batch:
            counts[table] += 1
        for table, n in counts.items():
            self.on_drop(table, n)
        if batch:
            log.warning("%d log rows dropped", len(batch))

    def _take(self) -> list[tuple[str, tuple]]:
        """Up to ``batch_size`` rows, once that many are buffered or ``interval`` has passed."""
        if len(self._rows) < self.batch_size and not self._stop.is_set():
            self._full.wait(self.interval)
        self._full.clear()
        return self._pop(min(self.batch_size, len(self._rows)))


_BOOT = (
    "import sys; from multiprocessing.connection import Connection; "
    "messages = Connection(0, writable=False); boot = messages.recv(); sys.path[:] = boot['path']; "
    "from pefm.serving.log_writer import _serve; _serve(messages, boot['url'])"
)
"""The writer process's program: the serving process's import path first (a message, so no
secret of the URL shows in its arguments), then ``_serve``."""


def _serve(messages, url: str) -> None:
    """The writer process: answers ``connect`` and ``write`` messages on stdin (None, or what
    failed) on stdout, until the serving process closes its stdin (or exits)."""
    import os
    import signal
    import sys
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the serving process decides when this one ends
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # anything printed goes to stderr, not into the answers
    sys.stdout = sys.stderr
    copier = _Copier(url)
    try:
        while True:
            message = messages.recv()
            answers.send(copier.answer(message))
    except (EOFError, OSError):  # the serving process closed its end, or is gone
        return
    finally:
        copier.close()


class _Copier:
    """The writer process's connection and its COPY of batches."""

    def __init__(self, url: str):
        self.url = url
        self.conn: psycopg.Connection | None = None

    def answer(self, message: tuple) -> str | None:
        """What ``LogWriter._ask`` asks: ``("connect",)`` or ``("write", batch)``."""
        return self.connect() if message[0] == "connect" else self.write(message[1])

    def connect(self) -> str | None:
        if self.conn is not None:
            return None
        try:
            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
        except (psycopg.Error, OSError) as exc:
            return type(exc).__name__
        return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def write(self, batch: list[tuple[str, tuple]]) -> str | None:
        """Write a batch in one transaction; what failed (and the connection dropped), if it did."""
        by_table: dict[str, list[tuple]] = defaultdict(list)
        for table, row in batch:
            by_table[table].append(row)
        if self.conn is None and (failure := self.connect()) is not None:
            return failure
        conn = self.conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                for table, rows in by_table.items():
                    columns = ", ".join(TABLES[table])
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for ts, *rest in rows:
                            copy.write_row((datetime.fromtimestamp(ts, UTC), *rest))
        except (psycopg.Error, OSError) as exc:
            self.close()
            return type(exc).__name__
        return None
