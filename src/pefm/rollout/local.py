"""LocalRouter: the TrafficRouter of the embedded runtime (traffic blocks in ``local_traffic``)."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from pefm.rollout.router import TrafficTarget
from pefm.storage.database import Database


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
        total = sum(t.percent for t in targets)
        if total != 100 or any(not 0 <= t.percent <= 100 for t in targets):
            raise ValueError(f"traffic percents must be 0..100 and add up to 100, got {total}")
        with self.db.connection() as conn:
            conn.execute(
                """INSERT INTO local_traffic (service, traffic) VALUES (%s, %s)
                   ON CONFLICT (service) DO UPDATE SET traffic = EXCLUDED.traffic, updated_at = now()""",
                (service, Jsonb([t.to_dict() for t in targets])),
            )

    def url(self, service: str) -> str:
        return self.router_urls[service]

    def tag_url(self, service: str, tag: str) -> str:
        return f"{self.router_urls[service]}/_tag/{tag}"
