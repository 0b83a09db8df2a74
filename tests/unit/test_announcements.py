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
