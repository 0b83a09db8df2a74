"""Forecasts on the latest data: re-conditioned when observations arrive, without a retrain.

Ingest announces every write that changed data on the PostgreSQL channel ``pefm_observations``
(``pg_notify`` inside the writing transaction, so only committed data are announced). Each
inference replica listens on a connection of its own. For the served series that changed, a
worker process of the replica reads the data as known now, conditions a copy of the fitted model
on them (``update``: the parameters stay those the registry holds) and computes the precomputed
forecasts again in both spaces; the replica swaps them in, and the next request is answered from
them, stamped with ``data_as_of``, the moment the data were read as of. The model work runs in
that process, not on the serving process's CPU time (measured: done on a thread of the serving
process it tripled the forecast p99 under load), at most once per ``min_interval`` seconds
(announcements in between are gathered). A replica catches up first: at start with every series
that has data its version did not see, after a lost connection with all of them (announcements
sent meanwhile are lost). With a shared cache (``PEFM_REDIS_URL``) ingest announces on Redis too,
every replica listens there as well, and the re-conditioned forecasts are kept in Redis for
replicas that start later (``pefm.serving.cache``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pefm.serving.cache import OBSERVATIONS, STATE_TTL, Cache, panel_key
from pefm.storage.channels import OBSERVATIONS_CHANNEL

if TYPE_CHECKING:
    from pefm.config import Settings
    from pefm.serving.inference import ModelServer
    from pefm.storage.database import Database

log = logging.getLogger(__name__)
Updates = dict[str, tuple[list[dict[str, Any]], float, datetime]]
"""Per series: precomputed rows of both spaces, the anchor level, the moment the data were read."""


def condition_on_latest(model, db: Database, series_ids: list[str], cache: Cache | None = None) -> Updates:
    """``model`` conditioned on the data as known now, for ``series_ids`` (and the series their
    members forecast jointly): the forecasts a plain request is answered from, in both spaces. A
    member whose new data cannot be used (e.g. a value a log transform refuses), whose update
    fails, or whose forecasts from them are not finite (a value near the largest double: no
    answer could hold them) keeps its forecasts, with a warning; the others go ahead. With a
    shared ``cache`` the panels read are kept there: the latest history of each group, which the
    replicas' model-path answers on the new data start from."""
    from pefm.forecasting.origins import finite_rows
    from pefm.forecasting.panel import conditioned, load_panel, members_of, panel_to_json
    from pefm.forecasting.registry import precompute
    from pefm.storage.observations import known_now

    updates: Updates = {}
    members = members_of(model, series_ids)
    with db.connection() as conn:
        # not before the writes stamped earlier have committed: the forecasts say they hold them
        now = known_now(conn, sorted({s for member, _ in members for s in member.series_ids_}))
        for member, first in members:
            try:
                panel = load_panel(conn, member.series_ids_, as_of=now)
                if cache is not None:
                    cache.set("panel", panel_key(member.series_ids_, now), panel_to_json(panel), STATE_TTL)
                fresh = conditioned(member, panel, first)
                pre = precompute(fresh, panel)
            except Exception as exc:  # this member only: the others must not wait on it
                log.warning("not re-conditioning %s: %s: %s", ", ".join(member.series_ids_), type(exc).__name__, exc)
                continue
            if not finite_rows(pre["rows"]):  # every answer from them would fail (JSON has no inf)
                log.warning(
                    "not re-conditioning %s: its forecasts are not finite numbers", ", ".join(fresh.series_ids_)
                )
                continue
            for series_id in fresh.series_ids_:
                rows = [r for r in pre["rows"] if r["series_id"] == series_id]
                updates[series_id] = (rows, pre["anchors"][series_id], now)
    return updates


def changed_since_training(db: Database, version) -> set[str]:
    """The version's series with data it did not see: ingested after it was registered, or known
    only after its training cut-off."""
    with db.connection() as conn:
        rows = conn.execute(
            """SELECT DISTINCT series_id FROM observations
               WHERE series_id = ANY(%s) AND (ingested_at > %s OR (vintage > %s AND vintage <= now()))""",
            (version.series_ids, version.created_at, version.data_as_of),
        ).fetchall()
    return {r[0] for r in rows}


class Reconditioner:
    """The listener threads of one inference replica (PostgreSQL's channel, and Redis's when the
    cache is shared), the thread that re-conditions on what they hear, and its worker process."""

    def __init__(self, server: ModelServer, url: str, stopping: threading.Event, *, min_interval: float = 1.0):
        self.server = server
        self.url = url
        self.stopping = stopping
        self.min_interval = min_interval
        self._pool: ProcessPoolExecutor | None = None
        self._heard: queue.SimpleQueue[set[str] | None] = queue.SimpleQueue()
        """Announced series (None: everything may have changed), from either channel."""

    def start(self) -> threading.Thread:
        threading.Thread(target=self._listen_postgres, name="pefm-listen", daemon=True).start()
        cache = self.server.cache
        if cache.shared:
            args = (OBSERVATIONS, self._announced, self.stopping)
            threading.Thread(target=cache.listen, args=args, name="pefm-listen-cache", daemon=True).start()
        thread = threading.Thread(target=self._run, name="pefm-recondition", daemon=True)
        thread.start()
        return thread

    def _announced(self, payload: str | None) -> None:
        """An announcement's payload (``{"series": [...]}``; ``null``, None or unreadable: everything)."""
        try:
            series = json.loads(payload).get("series") if payload is not None else None
        except (ValueError, AttributeError):
            series = None
        named = isinstance(series, list) and all(isinstance(s, str) for s in series)
        self._heard.put(set(series) if named else None)

    def _listen_postgres(self) -> None:
        backoff, first = 1.0, True
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {OBSERVATIONS_CHANNEL}")
                    if first:  # a unit changed since the state this replica started from was kept
                        self.server.reread_units(list(self.server.version.series_ids))
                    # what arrived before we listened: since training, or while we were away
                    self._heard.put(changed_since_training(self.server.db, self.server.version) if first else None)
                    backoff, first = 1.0, False
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._announced(note.payload)
            except Exception as exc:  # the database went away: retry, then catch up
                log.warning("listening paused (%s: %s); retrying in %.0f s", type(exc).__name__, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _run(self) -> None:
        backoff = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    first = self._heard.get(timeout=1.0)
                except queue.Empty:
                    continue
                changed = self._gather(first)
                try:
                    self.refresh(changed)
                    backoff = 1.0
                except Exception as exc:  # the database or the worker went away: again, for everything
                    log.warning("re-conditioning paused (%s: %s); retrying in %.0f s", type(exc).__name__, exc, backoff)
                    self._close_pool()
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    self._heard.put(None)
        finally:
            self._close_pool()
            log.info("re-conditioning of %s ended", self.server.version.id)

    def _gather(self, first: set[str] | None) -> set[str] | None:
        """``first`` and what else is announced within ``min_interval`` seconds (None: everything)."""
        changed = first
        deadline = time.monotonic() + self.min_interval
        while (left := deadline - time.monotonic()) > 0 and not self.stopping.is_set():
            try:
                more = self._heard.get(timeout=left)
            except queue.Empty:
                break
            changed = None if changed is None or more is None else changed | more
        return changed

    def refresh(self, series: set[str] | None) -> list[str]:
        """Re-condition the served series among ``series`` (None: all of them) on the data as known
        now, in the worker process; the ids refreshed. Their ``data_as_of`` becomes that moment."""
        server = self.server
        ids = [s for s in server.version.series_ids if series is None or s in series]
        if not ids:
            return []
        server.reread_units(ids)  # announced for a new unit, too (PUT /v1/series)
        if self._pool is None:  # started on first need: a replica whose data never change has none
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(self.server.db.url, server.version.id, server.settings),
            )
        updates = self._pool.submit(_worker_refresh, ids).result()
        if updates:
            server.recondition(updates)
            server.share_conditioning(updates)
            moment = max(u[2] for u in updates.values())
            log.info("re-conditioned %s on the data as of %s", ", ".join(sorted(updates)), moment)
        return sorted(updates)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_worker: dict[str, Any] = {}


def _worker_start(url: str, version_id: str, settings: Settings) -> None:
    """In the worker process: the database, the version's model (signature- and sha256-checked)
    and the shared cache, once. It runs at a lower CPU priority: serving requests comes first."""
    from pefm.forecasting.registry import load_model
    from pefm.serving.cache import open_cache
    from pefm.storage.database import Database
    from pefm.storage.signing import trusted_keys

    os.nice(10)
    _exit_with_parent()
    db = Database(url, max_size=1)
    with db.connection() as conn:
        _worker.update(db=db, model=load_model(conn, version_id, trusted_keys(settings)))
    _worker["cache"] = open_cache(settings, None) if settings.redis_url else None


def _exit_with_parent() -> None:
    """End this worker as soon as the serving process is gone, however it ended. Killed outright
    (SIGKILL, the OOM killer) it runs no shutdown, the pool's queue is never closed, and the worker
    would wait on it forever, holding its database connection: a thread waits on the parent's
    sentinel (readable once the parent has exited) instead."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, name="pefm-parent-watch", daemon=True).start()


def _worker_refresh(series_ids: list[str]) -> Updates:
    return condition_on_latest(_worker["model"], _worker["db"], series_ids, _worker["cache"])
