"""Request and prediction logs, written off the request path.

Handlers ``put`` rows into a bounded queue and return at once; a background thread drains it
in batches with COPY over its own connection. When the queue is full or the database is down,
rows are dropped and counted (``pefm_log_rows_dropped``), and serving carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

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
        self._queue: queue.Queue[tuple[str, tuple]] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pefm-log-writer", daemon=True)
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def put(self, table: str, row: tuple) -> None:
        """Queue a row; never blocks. A full queue drops the row and counts it."""
        try:
            self._queue.put_nowait((table, row))
        except queue.Full:
            self.on_drop(table, 1)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop the thread."""
        self._stop.set()
        self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take()
            if batch:
                self._write(batch)

    def _take(self) -> list[tuple[str, tuple]]:
        batch: list[tuple[str, tuple]] = []
        deadline = time.monotonic() + self.interval
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[tuple[str, tuple]]) -> None:
        by_table: dict[str, list[tuple]] = defaultdict(list)
        for table, row in batch:
            by_table[table].append(row)
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                for table, rows in by_table.items():
                    columns = ", ".join(TABLES[table])
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        except (psycopg.Error, OSError) as exc:
            for table, rows in by_table.items():
                self.on_drop(table, len(rows))
            log.warning("log rows dropped: database unavailable (%s)", type(exc).__name__)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._retry_at = time.monotonic() + 1.0

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            if time.monotonic() < self._retry_at:
                raise psycopg.OperationalError("waiting before reconnecting")
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
        return self._conn
