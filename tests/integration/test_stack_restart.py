"""A restarted `pefm up`: what it settles of the stack it replaces before it picks the version to
serve, on a real PostgreSQL. The stack is run up to that pick only: past it come processes,
which the local stack's own test starts."""

import pytest

from pefm.cli.data import _serving_model
from pefm.cli.stack import _serve_only, run_stack
from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote, serving_version
from pefm.forecasting.training import train
from pefm.local.runtime import record_revision
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import revision_name, sole
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database
from pefm.storage.model_versions import get_version

GRACE = Settings().revision_grace_seconds
"""The rollout API's grace period, by default."""


class Picked(Exception):
    """Ends ``run_stack`` once it has picked the version to serve, before it starts a process."""


def restart(schema_url, conn) -> str:
    """`pefm up` again, as far as the serving version it picks (``_serving_model``, the one
    `pefm up` gives it), then what it does with that version: its revision started (recorded as
    the runtime records it) and given all of the traffic. Returns that revision."""
    picked = []

    def serving_model(database):
        picked.append(_serving_model(database))
        raise Picked

    # a pool the size of pefm up's: the stack's lock, the controller's two and its reads at once
    with Database(schema_url, max_size=Settings().pool_max_size) as db, pytest.raises(Picked):
        run_stack(db, serving_model, port=9)
    revision = revision_name("inference", picked[0])
    record_revision(conn, "inference", revision, [f"http://{revision}.invalid"], model_version=picked[0])
    conn.commit()
    with Database(schema_url, max_size=1) as db:
        _serve_only(LocalRouter(db, {"inference": "http://127.0.0.1:9"}), revision)
    return revision


@pytest.fixture
def blue_and_green(db, conn):
    """B serving behind its revision, candidate C's revision recorded (not started), a router
    that reaches neither (no request is sent); their versions and revisions."""
    load_bundled(conn, bundled(["realgdp"]))
    b, _ = train(conn, "naive", ["realgdp"], spec=None)
    promote(conn, b.id)
    c, _ = train(conn, "mean", ["realgdp"], spec=None)
    blue, green = revision_name("inference", b.id), revision_name("inference", c.id)
    record_revision(conn, "inference", blue, ["http://blue.invalid"], model_version=b.id)
    record_revision(conn, "inference", green, ["http://green.invalid"], model_version=c.id)
    conn.commit()
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})
    router.set_traffic("inference", sole(blue))
    return router, b.id, c.id, green


def test_a_restart_in_the_grace_period_keeps_the_revision_it_starts(db, conn, schema_url, blue_and_green):
    """C's rollout succeeded, its grace period running; Ctrl-C; `pefm models promote B` by hand;
    `make up`. The stack started B's revision, then settled the rollout, whose loser is B's
    revision: it was stopped and forgotten, and all of the traffic went to it (503s)."""
    router, b, c, green = blue_and_green
    controller = RolloutController(db, router, provider=None, prober=None, grace_seconds=GRACE)
    rollout_id = controller.start("inference", green, RolloutSpec(require_gates=False), c)
    controller.promote(rollout_id)
    router.retire_all("inference")  # Ctrl-C: the stack stops its revisions
    promote(conn, b, "pefm models promote: back to the old model")
    conn.commit()
    started = restart(schema_url, conn)
    assert started == revision_name("inference", b)
    assert controller.get(rollout_id).finalized_at is not None  # its loser retired before B's revision started
    api = RolloutController(db, router, provider=None, prober=None, grace_seconds=GRACE)  # the rollout API's
    assert api.pending() == []  # nothing left for it to finish, so nothing it retires
    assert api.sweep() == []
    assert router.has_revision("inference", started)
    assert router.traffic("inference") == sole(started)


def test_a_restart_serves_what_the_registry_serves_once_the_unfinished_rollout_is_rolled_back(
    db, conn, schema_url, blue_and_green, capsys
):
    """C's rollout under way; `pefm models promote C` by hand; the stack stops; `make up`. The
    stack picked C, then rolled the rollout back, which made B serve again and rejected C, and it
    routed all of the traffic to C's revision."""
    router, b, c, green = blue_and_green
    controller = RolloutController(db, router, provider=None, prober=None)
    rollout_id = controller.start("inference", green, RolloutSpec(require_gates=False), c)
    promote(conn, c, "pefm models promote, by hand")
    conn.commit()
    router.retire_all("inference")
    started = restart(schema_url, conn)
    assert serving_version(conn).id == b and get_version(conn, c).status == "rejected"
    assert started == revision_name("inference", b)
    assert router.traffic("inference") == sole(started)
    assert controller.get(rollout_id).state.phase.value == "RolledBack"
    said = " ".join(capsys.readouterr().err.split())  # the operator's promotion undone: said
    assert f"rolled back: rollout {rollout_id}: the local stack restarted" in said
    assert f"{b} serving again, {c} rejected" in said
