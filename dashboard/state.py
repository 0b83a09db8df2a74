"""A page's view as part of its URL, so that a copied link reopens the same view.

The state lives in the URL's fragment (``/forecasts#series=realgdp,unemp&space=model&h=4``), read
and written by the page's own ``dcc.Location``: Dash's page router re-renders a page when the path
or the query string changes, never for the fragment, so writing the view there keeps the page (and
the chart's zoom) as it is. Whatever a link holds is checked: an unknown or malformed value is
dropped for the default, never an error.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from datetime import date
from urllib.parse import parse_qsl, urlencode

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
        raw = dict(parse_qsl((fragment or "").lstrip("#")))
        view = cls()
        if series := [s for s in raw.get("series", "").split(",") if s]:
            view = replace(view, series=tuple(dict.fromkeys(series))[:MAX_SERIES])
        for key in ("version", "compare"):
            if raw.get(key):
                view = replace(view, **{key: raw[key]})
        if raw.get("h", "").isdigit() and 1 <= int(raw["h"]) <= MAX_HORIZON:
            view = replace(view, horizon=int(raw["h"]))
        if raw.get("space") in SPACES:
            view = replace(view, space=raw["space"])
        if raw.get("as_of"):
            with contextlib.suppress(ValueError):
                view = replace(view, as_of=date.fromisoformat(raw["as_of"]).isoformat())
        return view


_KEYS = {
    "series": "series",
    "version": "version",
    "compare": "compare",
    "horizon": "h",
    "as_of": "as_of",
    "space": "space",
}
