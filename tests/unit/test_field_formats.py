"""Edge cases of the formats every payload shares: a timestamp finer than PostgreSQL keeps, a JSON
body not in UTF-8."""

import pytest

from pefm.data.fields import parse_timestamp
from pefm.data.strict_json import loads
from pefm.data.validation import ValidationError


def test_a_timestamp_finer_than_a_microsecond_is_refused_not_cut():
    """Two ticks 800 ns apart were one (the second a revision of the first), and a daily value at
    midnight plus 100 ns passed for one at midnight."""
    assert parse_timestamp("2024-01-02T00:00:00.123456Z") is not None
    for raw in ("2024-01-02T00:00:00.0000001Z", "2024-01-02T00:00:00.1234567+01:00", "2024-01-02T00:00:00,0000009"):
        assert parse_timestamp(raw) is None, raw


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1"])
def test_a_json_body_not_in_utf8_is_malformed(encoding):
    body = '{"series_id": "d1", "unit": "\u00e9"}'.encode(encoding)
    with pytest.raises(ValidationError, match="malformed JSON"):
        loads(body)


def test_utf8_with_or_without_a_byte_order_mark_is_read():
    assert loads(b'{"a": 1}') == loads('\ufeff{"a": 1}'.encode("utf-8")) == {"a": 1}
