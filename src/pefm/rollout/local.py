"""LocalRouter: the TrafficRouter of the embedded runtime (traffic blocks in ``local_traffic``,
revisions in ``local_revisions``, both read by the local router processes)."""

from __future__ import annotations

import logging
import time

from psycopg.types.json import Jsonb

from pefm.local.runtime import RETIRE_LOCK, stop_revision
from pefm.rollout.router import TrafficTarget, check_block
from pefm.storage.database import Database

log = logging.getLogger(__name__)
REREAD_SECONDS = 1.0
"""How long after a change of the traffic block every local router has read it (they re-read it
every 0.3 s): a revision leaving the block may get requests until then."""


_OUT_OF_BLOCK = """NOT EXISTS (SELECT 1 FROM local_traffic t, jsonb_array_elements(t.traffic) target
                    WHERE t.service = local_revisions.service AND target->>'revision' = local_revisions.revision)"""
UNROUTED = "unrouted_at < now() - make_interval(secs => %(unrouted_for)s) AND " + _OUT_OF_BLOCK
"""SQL on ``local_revisions``: the revision left its service's traffic block over ``%(unrouted_for)s``
seconds ago, and is not back in it."""
NEVER_ROUTED = "unrouted_at IS NULL AND " + _OUT_OF_BLOCK
"""SQL on ``local_revisions``: the revision has never been in its service's traffic block."""


class LocalRouter:
    def __init__(self, db: Database, router_urls: dict[str, str]):
        """``router_urls``: service -> the URL of its local router."""
        self.db = db
        self.router_urls = router_urls

    def traffic(self, service: str) -> list[TrafficTarget]:
        with self.db.connection() as conn:
            row = conn.execute("SELECT traffic FROM local_traffic WHERE service = %s", (service,)).fetchone()
        return [TrafficTarget(**t) for t in row[0]] if row else []

    def set_traffic(self, service: str, targets: list[TrafficTarget]) -> None:
        """Replace the block (checked as Knative's admission checks one: ``check_block``); revisions
        that leave it are stamped ``unrouted_at`` (their grace period starts), revisions in it are
        not. A revision not recorded (yet) is routed as Knative routes one it cannot find: its
        share of the requests gets 503s."""
        check_block(targets)
        named = [t.revision for t in targets if t.revision]
        with self.db.connection() as conn, conn.transaction():
            row = conn.execute("SELECT traffic FROM local_traffic WHERE service = %s FOR UPDATE", (service,)).fetchone()
            leaving = [t["revision"] for t in (row[0] if row else []) if t.get("revision") not in named]
            conn.execute(
                """INSERT INTO local_traffic (service, traffic) VALUES (%s, %s)
                   ON CONFLICT (service) DO UPDATE SET traffic = EXCLUDED.traffic, updated_at = now()""",
                (service, Jsonb([t.to_dict() for t in targets])),
            )
            conn.execute(
                "UPDATE local_revisions SET unrouted_at = NULL WHERE service = %s AND revision = ANY(%s)",
                (service, named),
            )
            conn.execute(
                """UPDATE local_revisions SET unrouted_at = now()
                   WHERE service = %s AND revision = ANY(%s) AND unrouted_at IS NULL""",
                (service, leaving),
            )

    def revision_model_version(self, service: str, revision: str) -> str | None:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT model_version FROM local_revisions WHERE service = %s AND revision = %s", (service, revision)
            ).fetchone()
        return row[0] if row else None

    def unpinned(self, service: str, revision: str) -> bool:
        """Whether ``revision`` is recorded unpinned (compose's blue and green): it serves the
        registry's serving version, following promotions."""
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT model_version IS NULL FROM local_revisions WHERE service = %s AND revision = %s",
                (service, revision),
            ).fetchone()
        return bool(row and row[0])

    def has_revision(self, service: str, revision: str) -> bool:
        with self.db.connection() as conn:
            query = "SELECT 1 FROM local_revisions WHERE service = %s AND revision = %s"
            return conn.execute(query, (service, revision)).fetchone() is not None

    def retire(self, service: str, revision: str) -> bool:
        """Stop the revision's replicas (whoever started them), then forget it: forgotten first, a
        replica left running by a failure on the way would be known to nobody. Both under the
        revision's ``RETIRE_LOCK``, which ``LocalRuntime.exited`` waits on: a replica it sees dead
        between the stop and the forgetting stopped as asked. Not before the routers have read
        the last change of the traffic block, which may be the one the revision left."""
        return bool(self._retire(service, revision))

    def retire_never_routed(self, service: str, revision: str) -> bool:
        """Retire the revision if it has never been in the traffic block (a retraining's green whose
        rollout never started), checked under the lock; whether it was retired."""
        return self._retire(service, revision, never_routed=True) is not None

    def _retire(
        self, service: str, revision: str, unrouted_for: float | None = None, never_routed: bool = False
    ) -> bool | None:
        """``retire``; with ``unrouted_for``, only a revision that is out of the traffic block and
        left it that many seconds ago; with ``never_routed``, only one never in it; either checked
        under the lock (it may have been routed, or started, again since it was picked). Whether a
        replica was running; None when nothing was retired."""
        condition = UNROUTED if unrouted_for is not None else NEVER_ROUTED if never_routed else "true"
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM clock_timestamp() - updated_at) FROM local_traffic WHERE service = %s",
                (service,),
            ).fetchone()
        if row is not None and row[0] < REREAD_SECONDS:
            time.sleep(REREAD_SECONDS - float(row[0]))
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (RETIRE_LOCK + revision,))
            if condition != "true":  # the block stays as it is until this retirement ends
                conn.execute("SELECT 1 FROM local_traffic WHERE service = %s FOR SHARE", (service,))
            row = conn.execute(
                f"""SELECT pids FROM local_revisions
                    WHERE service = %(service)s AND revision = %(revision)s AND {condition}""",
                {"service": service, "revision": revision, "unrouted_for": unrouted_for},
            ).fetchone()
            if row is None:
                return None
            stopped = stop_revision(row[0], revision)
            conn.execute(  # the replicas stopped: one started again meanwhile recorded others (helper-88)
                """DELETE FROM local_revisions
                   WHERE service = %s AND revision = %s AND pids IS NOT DISTINCT FROM %s::integer[]""",
                (service, revision, row[0]),
            )
        log.info("retired revision %s of %s%s", revision, service, "" if stopped else " (was not running)")
        return stopped

    def retire_unrouted(self, service: str, grace_seconds: float) -> list[str]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT revision FROM local_revisions WHERE service = %(service)s AND {UNROUTED}",
                {"service": service, "unrouted_for": grace_seconds},
            ).fetchall()
        return [revision for (revision,) in rows if self._retire(service, revision, grace_seconds) is not None]

    def retire_all(self, service: str) -> list[str]:
        """Stop every recorded revision of ``service``, whichever process started it (a local
        stack shutting down)."""
        with self.db.connection() as conn:
            revisions = [
                r[0] for r in conn.execute("SELECT revision FROM local_revisions WHERE service = %s", (service,))
            ]
        for revision in revisions:
            self.retire(service, revision)
        return revisions

    def url(self, service: str) -> str:
        return self.router_urls[service]

    def routes(self, service: str) -> bool:
        return service in self.router_urls

    def tag_url(self, service: str, tag: str) -> str:
        return f"{self.router_urls[service]}/_tag/{tag}"
