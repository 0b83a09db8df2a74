"""What an inference replica makes of an announcement heard on Redis: the series it names, or
everything when it cannot tell (a forged or garbled message only costs a re-conditioning)."""

import threading

import pytest

from pefm.serving.freshness import Reconditioner


@pytest.mark.parametrize(
    ("payload", "heard"),
    [
        ('{"series": ["realgdp", "unemp"]}', {"realgdp", "unemp"}),
        (None, None),  # the channel was lost
        ("\ufffd", None),  # not UTF-8, decoded with replacement
        ('{"series": [[1]]}', None),  # unhashable: had raised TypeError in the listener thread
        ('{"series": [1]}', None),
        ('{"series": "realgdp"}', None),
        ("[]", None),
    ],
)
def test_an_announcement_names_its_series_or_means_everything(payload, heard):
    listener = Reconditioner(server=None, url="", stopping=threading.Event())  # type: ignore[arg-type]
    listener._announced(payload)
    assert listener._heard.get_nowait() == heard


def test_a_sink_that_never_answers_does_not_hold_back_the_replicas():
    """Ingest's announcements to Redis and to the sink came from one thread: behind a sink that
    accepts and never answers, the inference replicas heard of new data 30 s late. The cache here
    is a recorder standing in for Redis (its own tests run a real redis-server); the sink is real."""
    import socket
    import time

    from pefm.serving.ingest import _announcers

    class Recorder:
        shared = True

        def __init__(self):
            self.heard: list[str] = []

        def publish(self, channel: str, message: str) -> None:
            self.heard.append(message)

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(10)
        cache = Recorder()
        announcers = _announcers(cache, f"http://127.0.0.1:{silent.getsockname()[1]}/", None)
        for series in (["a"], ["b"]):
            for announcer in announcers:
                announcer.announce(series)
            time.sleep(0.3)
        # behind the sink, the second would wait for its client's timeout (30 s): both within 5 s
        # say the replicas' announcements did not queue behind it
        deadline = time.monotonic() + 5
        while len(cache.heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert cache.heard == ['{"series": ["a"]}', '{"series": ["b"]}']
