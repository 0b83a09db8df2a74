"""The log buffer's bound: rows, and the bytes of their text (a prediction's forecast), so that a
replica whose database is away holds at most ``MAX_BYTES`` of logs, whatever the forecasts'
length. The buffer alone: its thread is not started (it would take a batch out of it)."""

from collections import Counter

from pefm.serving import log_writer
from pefm.serving.log_writer import LogWriter


def prediction(text: str) -> tuple:
    return (0.0, "req", "rev", "ar-1", "unemp", None, False, 60, text, "model")


def test_the_buffer_drops_rows_past_its_bytes_and_counts_them(monkeypatch):
    monkeypatch.setattr(log_writer, "MAX_BYTES", 10_000)
    dropped: Counter[str] = Counter()
    writer = LogWriter("postgresql://unused", maxsize=1_000, on_drop=lambda table, n: dropped.update({table: n}))
    forecast = "x" * 1_000
    for _ in range(20):
        writer.put("predictions", prediction(forecast))
    size = log_writer.ROW_BYTES + len(forecast) + len("req") + len("rev") + len("ar-1") + len("unemp") + len("model")
    kept = 10_000 // size
    assert len(writer._rows) == kept and dropped == {"predictions": 20 - kept}
    writer.put("request_log", (0.0, "inference", "rev", "/v1/forecast", "POST", 200, 1.0))  # room for a small one
    assert len(writer._rows) == kept + 1
    taken = writer._take()  # written (or dropped) from here on: out of the count
    assert len(taken) == kept + 1 and writer._bytes == 0
    for _ in range(kept):
        writer.put("predictions", prediction(forecast))
    assert len(writer._rows) == kept and dropped == {"predictions": 20 - kept}


def test_the_buffer_drops_rows_past_its_length():
    dropped: Counter[str] = Counter()
    writer = LogWriter("postgresql://unused", maxsize=3, on_drop=lambda table, n: dropped.update({table: n}))
    for _ in range(5):
        writer.put("request_log", (0.0, "inference", "rev", "/v1/forecast", "POST", 200, 1.0))
    assert len(writer._rows) == 3 and dropped == {"request_log": 2}


def test_reconnecting_waits_at_most_max_backoff_between_tries():
    """The README's promise that logs resume within about a second of the database's return rests
    on this: the writer's tries double from MIN_BACKOFF and stop growing at MAX_BACKOFF, however
    long the database stays away. A real writer process, asked to connect where nothing listens."""
    from pefm.local.runtime import free_port

    writer = LogWriter(f"postgresql://pefm@127.0.0.1:{free_port()}/pefm", maxsize=10, on_drop=lambda *_: None)
    writer._stop.set()  # the waits between tries return at once; the backoff is still kept
    try:
        waits = []
        for _ in range(8):
            assert writer._connect() is False
            waits.append(writer._backoff)
    finally:
        writer._end_process()
    assert waits[0] == 2 * log_writer.MIN_BACKOFF and max(waits) == waits[-1] == log_writer.MAX_BACKOFF
