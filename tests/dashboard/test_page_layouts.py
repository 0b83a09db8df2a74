"""Every page is sent whether or not the database answers: its data comes with its callbacks.
Dash renders a page again only when its URL changes, so a page whose layout raised stayed blank
(or kept showing the page before) after the database came back."""

import dash

from dashboard.app import create_app
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.storage.database import Database


def _open(client, path: str):
    """POST the page router's callback as the browser does when its URL changes to ``path``."""
    dependency = next(d for d in client.get("/_dash-dependencies").get_json() if "_pages_content" in d["output"])
    body = {
        "output": dependency["output"],
        "outputs": [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": path},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
        "state": [],
        "changedPropIds": ["_pages_location.pathname"],
    }
    return client.post("/_dash-update-component", json=body)


def test_every_page_is_sent_while_the_database_does_not_answer():
    with Database("postgresql://pefm@127.0.0.1:9/nothing", timeout=1) as down:
        client = create_app(down).server.test_client()
        paths = {page["path"] for page in dash.page_registry.values()}
        assert paths == {"/", "/forecasts", "/models", "/drift", "/serving", "/rollouts"}  # dashboard/pages/
        for page in dash.page_registry.values():
            answer = _open(client, page["path"])
            assert answer.status_code == 200, page["path"]
            assert answer.get_json()["response"].get("_pages_content"), f"{page['path']}: no page sent"


def test_the_forecasts_series_come_with_the_pages_first_call(db):
    """The page comes without its series: the browser asks for them as the page mounts."""
    with db.connection() as conn:
        load_bundled(conn, bundled(["realgdp", "unemp"]))
    client = create_app(db).server.test_client()
    dependency = next(d for d in client.get("/_dash-dependencies").get_json() if "fc-series.options" in d["output"])
    assert dependency["prevent_initial_call"] is False  # called as the page mounts, not only at the next refresh
    answer = client.post(
        "/_dash-update-component",
        json={
            "output": dependency["output"],
            "outputs": [{"id": "fc-series", "property": "options"}, {"id": "fc-coverage-note", "property": "children"}],
            "inputs": [{"id": "refresh", "property": "n_intervals", "value": None}],
            "state": [],
            "changedPropIds": [],
        },
    ).get_json()["response"]
    assert [o["value"] for o in answer["fc-series"]["options"]] == ["realgdp", "unemp"]
    assert answer["fc-coverage-note"]["children"].startswith("0 of 2 series have a forecast")
