"""The Serving charts' event markers: a line and a marker per revision start, promotion and
rollback, however many there were in the chosen time range."""

import cProfile
import pstats

import pandas as pd
import plotly.graph_objects as go

from dashboard import views
from dashboard.app import create_app
from dashboard.components.figures import with_markers

COLORS = {"start": "#8e44ad", "promote": "#27ae60", "rollback": "#c0392b"}


def events(n: int) -> pd.DataFrame:
    """``n`` events two minutes apart, mostly revision starts with a promotion and a rollback now and then."""
    kinds = [("promote" if i % 50 == 10 else "rollback" if i % 50 == 30 else "start") for i in range(n)]
    ts = pd.date_range("2026-01-01", periods=n, freq="2min", tz="UTC")
    return pd.DataFrame({"ts": ts, "kind": kinds, "revision": "r", "label": [f"event {i}" for i in range(n)]})


def test_every_event_has_its_line_and_marker_and_shapes_there_before_stay():
    frame = events(400)
    figure = go.Figure()
    figure.add_hline(y=5)  # a line the chart had before the markers
    with_markers(figure, frame)
    before, *lines = figure.layout.shapes
    assert before.y0 == 5
    assert len(lines) == 400
    drawn = sorted((pd.Timestamp(s.x0), s.x1 == s.x0, s.line.color, s.yref, s.y0, s.y1) for s in lines)
    assert drawn == [(t, True, COLORS[k], "y domain", 0, 1) for t, k in zip(frame["ts"], frame["kind"], strict=True)]
    markers = {t.name: len(t.x) for t in figure.data}
    assert markers == {"cold start": 384, "promote": 8, "rollback": 8}


def _calls(n: int) -> int:
    """The Python calls ``with_markers`` makes for ``n`` events (a count, not a time: the same on any machine)."""
    profile = cProfile.Profile()
    profile.runcall(with_markers, go.Figure(), events(n))
    return pstats.Stats(profile).total_calls


def test_the_work_grows_with_the_events_not_with_their_square():
    """A line per event had each added one re-validate every line already there: 300 cold starts
    in a day took 20 s on every 20-second refresh (twice: both charts). Twice the events may take
    about twice the calls; the quadratic build took four times."""
    _calls(5)  # plotly builds its validators on first use
    assert _calls(160) < 2.5 * _calls(80)


def test_both_serving_charts_carry_hundreds_of_cold_starts(db):
    """300 revision starts in the last 20 hours, the day's range: each chart marks all of them."""
    with db.connection() as conn:
        conn.execute(
            """INSERT INTO revision_starts (ts, service, revision, start_to_ready_s)
               SELECT now() - make_interval(mins => i * 4), 'inference', 'pefm-inference-green', 0.4
               FROM generate_series(1, 300) AS i"""
        )
    create_app(db)
    latency, rate, _ = views.serving_view(1440)
    for figure in (latency, rate):
        [starts] = [t for t in figure.data if t.name == "cold start"]
        assert len(starts.x) == 300 and len(figure.layout.shapes) == 300
