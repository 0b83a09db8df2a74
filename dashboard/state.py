"""A page's view as part of its URL, so that a copied link reopens the same view.

The state lives in the URL's fragment (``/forecasts#series=realgdp,unemp&space=model&h=4``), read
and written by the page's own ``dcc.Location``: Dash's page router re-renders a page when the path
or the query string changes, never for the fragment, so writing the view there keeps the page (and
the chart's zoom) as it is. Whatever a link or a page's controls send is checked (both come from
the client, which may send anything): an unknown or malformed value is dropped for the default,
never an error.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pefm.data.fields import CONTROL_CHARS, SERIES_ID

SPACES = ("level", "model")
MAX_HORIZON = 12
MAX_SERIES = 4


@dataclass(frozen=True)
class ForecastView:
    """What the Forecasts page shows."""

    series: tuple[str, ...] = ()
    version: str | None = None
    compare: str | None = None
    horizon: int = 8
    as_of: str | None = None
    """A date, ``YYYY-MM-DD``: the data as known on it."""
    space: str = "level"

    def to_fragment(self) -> str:
        """The URL fragment (with its ``#``) holding every choice that is not a default."""
        default = ForecastView()
        pairs = {}
        for key, value in asdict(self).items():
            if value != getattr(default, key) and value not in (None, ()):
                pairs[_KEYS[key]] = ",".join(value) if key == "series" else str(value)
        return "#" + urlencode(pairs, safe=",") if pairs else ""

    @classmethod
    def from_fragment(cls, fragment: str | None) -> ForecastView:
        """The view a fragment names; bad values fall back to the defaults."""
        raw = dict(parse_qsl(fragment.lstrip("#") if isinstance(fragment, str) else ""))
        series = [s for s in raw.get("series", "").split(",") if s]
        values = (raw.get(key) for key in ("version", "compare", "h", "as_of", "space"))
        return cls.checked(series, *values)

    @classmethod
    def checked(cls, series: Any, version: Any, compare: Any, horizon: Any, as_of: Any, space: Any) -> ForecastView:
        """The view of values a client sent, each checked; what cannot be used is the default."""
        view = cls()
        if isinstance(series, list | tuple):
            ids = [s for s in series if isinstance(s, str) and SERIES_ID.match(s)]
            view = replace(view, series=tuple(dict.fromkeys(ids))[:MAX_SERIES])
        for key, value in (("version", version), ("compare", compare)):
            if isinstance(value, str) and 0 < len(value) <= 200 and not CONTROL_CHARS.search(value):
                view = replace(view, **{key: value})
        text = str(horizon) if isinstance(horizon, str | int) else ""
        if text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_HORIZON:  # not "²"
            view = replace(view, horizon=int(text))
        if space in SPACES:
            view = replace(view, space=space)
        if isinstance(as_of, str) and as_of:
            with contextlib.suppress(ValueError):
                view = replace(view, as_of=date.fromisoformat(as_of[:10]).isoformat())
        return view


_KEYS = {
    "series": "series",
    "version": "version",
    "compare": "compare",
    "horizon": "h",
    "as_of": "as_of",
    "space": "space",
}
