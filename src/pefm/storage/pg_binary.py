"""Rows in PostgreSQL's binary COPY format, built by numpy in one go.

Every column is fixed-width (integers, floats, timestamps, and text of one length per block),
so a block of rows is one structured array: a field count, then length and value per column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")


def microseconds(values: pd.Series) -> np.ndarray:
    """UTC-naive timestamps as PostgreSQL's timestamptz wire value: microseconds since 2000."""
    return (values.to_numpy("datetime64[us]") - _EPOCH).astype("int64")


def block(n: int, columns: list[tuple[str, Any]]) -> bytes:
    """``n`` rows of ``columns`` ((numpy big-endian type, array or scalar) in table order)."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, (kind, _) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"col{i}", kind)]
    data = np.empty(n, dtype=np.dtype(fields))
    data["count"] = len(columns)
    for i, (kind, values) in enumerate(columns):
        data[f"len{i}"] = np.dtype(kind).itemsize
        data[f"col{i}"] = values
    return data.tobytes()
