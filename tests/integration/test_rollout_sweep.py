"""The sweep stops only revisions still out of their service's traffic block past the grace period:
not one routed, or started, again since it left (the local router's records, no processes)."""

import threading

from pefm.local.runtime import RETIRE_LOCK, record_revision
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import blue_green, sole
from tests.integration.test_rollout_start import waiting_on_a_lock

URL = ["http://127.0.0.1:9"]


def left_an_hour_ago(db, router: LocalRouter) -> None:
    """pefm-inference-old left the block (pefm-inference-blue alone serves) an hour ago."""
    with db.connection() as conn:
        for revision in ("pefm-inference-blue", "pefm-inference-old"):
            record_revision(conn, "inference", revision, URL)
    router.set_traffic("inference", sole("pefm-inference-old"))
    router.set_traffic("inference", sole("pefm-inference-blue"))
    with db.connection() as conn:
        conn.execute("UPDATE local_revisions SET unrouted_at = now() - interval '1 hour' WHERE unrouted_at IS NOT NULL")


def recorded(db) -> list[str]:
    with db.connection() as conn:
        return [r[0] for r in conn.execute("SELECT revision FROM local_revisions ORDER BY revision")]


def test_a_revision_started_again_is_not_swept_for_having_left_the_block_before(db):
    """Re-recorded as just started, it kept the hour-old stamp, and the next sweep stopped it."""
    router = LocalRouter(db, {})
    left_an_hour_ago(db, router)
    with db.connection() as conn:
        record_revision(conn, "inference", "pefm-inference-old", URL)  # started again: a new rollout's green
    assert router.retire_unrouted("inference", 300) == []
    assert recorded(db) == ["pefm-inference-blue", "pefm-inference-old"]


def test_a_revision_routed_again_after_the_sweep_picked_it_is_not_stopped(db):
    """The sweep picked the revision, then waited (the routers' re-read, another retirement): a
    rollout routed it again meanwhile, and the sweep stopped it all the same, serving traffic.
    Now it checks again under the revision's retire lock (held here as the barrier)."""
    router = LocalRouter(db, {})
    left_an_hour_ago(db, router)
    swept: list[list[str]] = []
    with db.connection() as barrier:
        barrier.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (RETIRE_LOCK + "pefm-inference-old",))
        sweep = threading.Thread(target=lambda: swept.append(router.retire_unrouted("inference", 300)))
        sweep.start()
        assert waiting_on_a_lock(db, sweep)
        router.set_traffic("inference", blue_green("pefm-inference-blue", "pefm-inference-old", 10))
        barrier.rollback()  # the sweep goes on
        sweep.join(60)
    assert swept == [[]]
    assert recorded(db) == ["pefm-inference-blue", "pefm-inference-old"]


def test_a_revision_out_of_the_block_past_the_grace_period_is_swept(db):
    router = LocalRouter(db, {})
    left_an_hour_ago(db, router)
    assert router.retire_unrouted("inference", 3600 * 2) == []  # within the grace period
    assert router.retire_unrouted("inference", 300) == ["pefm-inference-old"]
    assert recorded(db) == ["pefm-inference-blue"]


def test_a_revision_started_again_while_its_old_replicas_stop_stays_recorded(db, monkeypatch):
    """The retirement read the revision, stopped its replicas (up to seconds), then deleted its
    record whatever it had become: one started again meanwhile (a revision's name is its
    version's) ran on unrecorded, unknown to the router and never stopped (helper-88)."""
    from pefm.rollout import local

    router = LocalRouter(db, {})
    left_an_hour_ago(db, router)

    def stopping(pids, revision):  # while the old replicas stop, the revision is started again
        with db.connection() as conn:
            record_revision(conn, "inference", revision, URL, pids=[4242])
        return True

    monkeypatch.setattr(local, "stop_revision", stopping)
    assert router.retire_unrouted("inference", 300) == ["pefm-inference-old"]
    with db.connection() as conn:
        pids = conn.execute("SELECT pids FROM local_revisions WHERE revision = 'pefm-inference-old'").fetchone()
    assert pids == ([4242],)
