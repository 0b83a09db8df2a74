"""Starting a rollout while the last one's traffic is not routed yet (the controller's own router
calls; no rollout API and no controller loop here, which would route it first)."""

import pytest
from psycopg.types.json import Jsonb

from pefm.local.runtime import record_revision
from pefm.rollout.controller import RolloutBusy, RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import sole
from pefm.rollout.spec import RolloutSpec


class RouterAway(LocalRouter):
    """The local router's records, but every traffic write fails (fault injection)."""

    def set_traffic(self, service, targets):
        raise ConnectionError("router unreachable")


def test_a_start_while_the_last_rollouts_traffic_cannot_be_routed_is_a_busy_refusal(db):
    """The last rollout's rollback was saved but not routed; routing it again at the next start
    failed with the router's own error, which the rollout API answered 500."""
    LocalRouter(db, {}).set_traffic("inference", sole("pefm-inference-blue"))
    with db.connection() as conn:
        for revision in ("pefm-inference-blue", "pefm-inference-old", "pefm-inference-new"):
            record_revision(conn, "inference", revision, ["http://127.0.0.1:9"])
        conn.execute(  # rolled back (generation 3), its traffic last routed at generation 2
            """INSERT INTO rollouts (service, blue_revision, green_revision, spec, phase, step, weight,
                                     generation, routed_generation, finished_at)
               VALUES ('inference', 'pefm-inference-blue', 'pefm-inference-old', %s, 'RolledBack', 0, 0,
                       3, 2, now())""",
            (Jsonb(RolloutSpec().to_dict()),),
        )
        conn.commit()
    controller = RolloutController(db, RouterAway(db, {"inference": "http://127.0.0.1:9"}), None, None)
    with pytest.raises(RolloutBusy, match="traffic is not routed yet"):
        controller.start("inference", "pefm-inference-new", RolloutSpec())
    with db.connection() as conn:  # nothing started
        assert conn.execute("SELECT count(*) FROM rollouts").fetchone()[0] == 1
