"""Starting a rollout while the last one's traffic is not routed yet, or while an operator rolls
the last one back (the controller's own router calls; no rollout API and no controller loop here,
which would route it first)."""

import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pefm.forecasting.registry import serving_id
from pefm.local.runtime import record_revision
from pefm.rollout import controller as controller_module
from pefm.rollout.analysis import Phase
from pefm.rollout.controller import RolloutBusy, RolloutController, RolloutError
from pefm.rollout.local import LocalRouter
from pefm.rollout.providers import RevisionMetrics
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


class Healthy:
    """Every green healthy (the checks are not what these tests are about)."""

    def smoke(self, url, request, model_version):
        return True

    def divergence(self, *args, **kwargs):
        return 0.0

    def revision_metrics(self, revision, since, until=None):
        return RevisionMetrics(100, 1.0, 10.0)


def add_version(conn: psycopg.Connection, version_id: str, status: str, gated_against: str | None = None) -> None:
    conn.execute(
        """INSERT INTO model_versions (id, family, params, series_ids, data_as_of, data_sha256, artifact,
                                       artifact_sha256, status, gate_report)
           VALUES (%s, 'naive', '{}', ARRAY['realgdp'], now(), repeat('a', 64), '', repeat('b', 64), %s, %s)""",
        (version_id, status, Jsonb({"passed": True, "serving": gated_against}) if gated_against else None),
    )


def waiting_on_a_lock(db, thread: threading.Thread, timeout: float = 30) -> bool:
    """Until ``thread`` ends (False) or a session waits for an advisory lock (True)."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with db.connection() as conn:  # pg_locks is the lock table now, whatever the transaction
        while thread.is_alive() and time.monotonic() < deadline:
            if conn.execute(query).fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


def test_a_rollback_of_the_last_rollout_while_the_next_starts_waits_and_finds_it_settled(db, monkeypatch):
    """Rollout 1 promoted, in its grace period; rollout 2 starts, and right after it read which
    revision serves, an operator rolls rollout 1 back. The rollback committed in between: the
    registry restored blue's version while rollout 2 started from the green it rejected, which
    took all the traffic, and blue's revision, out of the block, was stopped at the next sweep.
    Now the start holds rollout 1's write lock until it commits: the rollback waits, then finds
    rollout 1 settled."""
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})
    with db.connection() as conn:
        add_version(conn, "v-blue", "serving")
        add_version(conn, "v-green", "candidate", gated_against="v-blue")
        add_version(conn, "v-next", "candidate", gated_against="v-green")
        for revision, version in (("rev-blue", "v-blue"), ("rev-green", "v-green"), ("rev-next", "v-next")):
            record_revision(conn, "inference", revision, ["http://127.0.0.1:9"], model_version=version)
    router.set_traffic("inference", sole("rev-blue"))
    controller = RolloutController(db, router, Healthy(), Healthy(), lock_timeout=30)
    first = controller.start("inference", "rev-green", RolloutSpec())
    assert controller.promote(first).phase is Phase.SUCCEEDED

    outcome: dict[str, object] = {}

    def rollback() -> None:
        try:
            outcome["rolled back"] = controller.rollback(first)
        except RolloutError as exc:
            outcome["refused"] = str(exc)

    operator = threading.Thread(target=rollback)
    serving_revision = controller_module.serving_revision

    def read_then_rollback(traffic):  # the moment the start has read which revision serves
        blue = serving_revision(traffic)
        operator.start()
        outcome["waited"] = waiting_on_a_lock(db, operator)
        return blue

    monkeypatch.setattr(controller_module, "serving_revision", read_then_rollback)
    second = controller.start("inference", "rev-next", RolloutSpec())
    operator.join(60)

    assert outcome["waited"], outcome
    assert "settled" in outcome["refused"], outcome
    rollout = controller.get(second)
    assert (rollout.blue_revision, rollout.blue_model_version) == ("rev-green", "v-green")
    assert {t.revision: t.percent for t in router.traffic("inference") if t.revision} == {
        "rev-green": 100,
        "rev-next": 0,
    }
    with db.connection() as conn:
        assert serving_id(conn) == "v-green"  # the registry and the traffic agree
