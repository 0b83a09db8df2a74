"""Request and prediction logs, written off the request path.

Handlers ``put`` rows into a bounded buffer and return at once (nothing is signalled per row: a
thread woken per put cost a request ~0.1 ms); a background thread drains it every ``interval``, or
as soon as a batch is full, with COPY over its own connection. Serving never waits on it. While the database is
away the thread reconnects on its own clock (0.1 s, doubling to at most 1 s, whatever the traffic)
and leaves the rows queued, so a short outage loses nothing; rows are dropped, and counted
(``pefm_log_rows_dropped``), only when the buffer is full or a batch fails mid-write.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)
MIN_BACKOFF, MAX_BACKOFF = 0.1, 1.0

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
        self._rows: deque[tuple[str, tuple]] = deque()
        self._stop = threading.Event()
        self._full = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pefm-log-writer", daemon=True)
        self._conn: psycopg.Connection | None = None
        self._backoff = MIN_BACKOFF

    def start(self) -> None:
        self._thread.start()

    def put(self, table: str, row: tuple) -> None:
        """Buffer a row; never blocks. A full buffer drops the row and counts it."""
        rows = self._rows
        if len(rows) >= self.maxsize:
            self.on_drop(table, 1)
            return
        rows.append((table, row))
        if len(rows) == self.batch_size:
            self._full.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop the thread."""
        self._stop.set()
        self._full.set()
        self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        pending: list[tuple[str, tuple]] = []  # a batch whose write failed: tried once more
        while not (self._stop.is_set() and not self._rows and not pending):
            if self._conn is None and not self._connect():
                if self._stop.is_set():  # stopping with the database away: what is queued is lost
                    self._drop(pending + self._drain())
                    return
                continue
            batch, retry = (pending, True) if pending else (self._take(), False)
            pending = []
            if batch and not self._write(batch):
                if retry:
                    self._drop(batch)
                else:
                    pending = batch

    def _connect(self) -> bool:
        """One connection attempt; after a failure, wait out the backoff (rows keep queueing)."""
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
        except (psycopg.Error, OSError) as exc:
            if self._backoff == MIN_BACKOFF:
                log.warning("log writer lost the database (%s); reconnecting while rows queue", type(exc).__name__)
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            return False
        self._backoff = MIN_BACKOFF
        return True

    def _drain(self) -> list[tuple[str, tuple]]:
        return [self._rows.popleft() for _ in range(len(self._rows))]

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
        return [self._rows.popleft() for _ in range(min(self.batch_size, len(self._rows)))]

    def _write(self, batch: list[tuple[str, tuple]]) -> bool:
        """Write a batch in one transaction; False (and the connection dropped) when it failed."""
        by_table: dict[str, list[tuple]] = defaultdict(list)
        for table, row in batch:
            by_table[table].append(row)
        conn = self._conn
        assert conn is not None
        try:
            with conn.transaction(), conn.cursor() as cur:
                for table, rows in by_table.items():
                    columns = ", ".join(TABLES[table])
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        except (psycopg.Error, OSError) as exc:
            log.warning("writing %d log rows failed (%s)", len(batch), type(exc).__name__)
            conn.close()
            self._conn = None
            return False
        return True
