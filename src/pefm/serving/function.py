"""The object a kn func Python function's ``new()`` returns, for each PEFM service.

func-python 0.8.1 calls ``start(cfg)``, ``stop()``, ``alive()`` and ``ready()`` without await,
so they are synchronous; ``handle`` is the ASGI entry point and never lets an exception escape.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pefm.config import Settings
from pefm.serving.http import guard, is_shadow, method_label, route_template

log = logging.getLogger("pefm.function")
PROCESS_STARTED = time.time()
OPENAPI_DIR = Path(__file__).with_name("openapi")


class ServiceFunction:
    """One PEFM service (``ingest`` or ``inference``) as a kn func function instance."""

    def __init__(self, service: str):
        if service not in ("ingest", "inference", "monitor"):
            raise ValueError(f"unknown service {service!r}")
        self.service = service
        self.app = None
        self.metrics = None
        self._not_ready = None
        """What answers while no app serves (``handle``), its answers observed."""
        self.db = None
        self.writer = None
        self.cache = None
        self._ready = False
        self._problem = "starting"
        self._stopping = threading.Event()
        self._on_stop: Callable[[], None] | None = None
        """What the app ends when the function stops (the monitor: the retraining it started)."""
        self._serving = None
        """Inference: the ModelServer of the version served now."""
        self._retired = threading.Event()
        """Set when the version served now is no longer (the function stops, or an unpinned
        revision follows a promotion): what serves it (its re-conditioning) ends."""
        self._following: threading.Thread | None = None

    def start(self, cfg: dict[str, str]) -> None:
        """Build the app from the environment ``cfg``; failures leave the function not ready."""
        import json

        from pefm.local.runtime import watch_stack
        from pefm.serving.observability import ServiceMetrics, configure_json_logging

        watch_stack(cfg)  # a revision `pefm up` (or what it started) started ends with that stack
        settings = Settings.from_env(cfg)
        configure_json_logging(settings.log_level)
        # Large bodies are parsed on worker threads while the event loop answers health checks
        # and small requests; with Python's default 5 ms GIL switch interval each step of such an
        # answer can wait 5 ms for the parser to yield (a liveness probe took 200 ms), with 1 ms
        # it waits a fifth of that.
        sys.setswitchinterval(0.001)
        self.metrics = ServiceMetrics(self.service, settings.revision)
        self.openapi = json.loads((OPENAPI_DIR / f"{self.service}.json").read_text())
        self._open(settings)

    def _open(self, settings: Settings) -> None:
        import psycopg
        from psycopg_pool import PoolTimeout

        from pefm.serving.cache import open_cache
        from pefm.serving.log_writer import LogWriter
        from pefm.storage.database import open_database
        from pefm.storage.migrate import MigrationError

        try:
            self.settings = settings
            # Its pool connects in the background while the service's modules load (``_build``).
            self.db = open_database(settings, schema="unchecked", embedded_ok=False, pool_timeout=5.0)
            self.cache = open_cache(settings, self.metrics.count_cache, entries=self.service == "inference")
            self.writer = LogWriter(
                self.db.url,
                maxsize=settings.prediction_log_queue,
                on_drop=lambda table, n: self.metrics.prometheus.log_dropped.labels(table).inc(n),
            )
            self.writer.start()
            app = self._build(settings)
        except (MigrationError, psycopg.OperationalError, PoolTimeout) as exc:
            # not migrated yet (the bootstrap Job), or the database is away: try again shortly
            self._problem = f"waiting: {exc}"
            log.warning("%s waits: %s", self.service, exc)
            self._close()
            threading.Thread(target=self._reopen, args=(settings,), daemon=True).start()
            return
        except Exception as exc:  # keep serving health endpoints; report why we are not ready
            self._problem = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed to start", self.service)
            return
        if app is not None:  # None: inference waits for a model to serve (see _wait_for_model)
            self._serve(app)

    def _check_schema(self, settings: Settings) -> None:
        """MigrationError unless the database's schema is current (a function never migrates: its
        role may not). An inference revision pinned to a version whose state a shared cache holds
        does not wait for the database: it starts from the cache without touching PostgreSQL (the
        replica that kept the state checked the schema), and its pool connects in the background,
        or once the database is back (logs queue meanwhile, then are dropped and counted)."""
        from pefm.storage.migrate import require_migrated

        pinned = self.service == "inference" and self.cache.shared and settings.model_version
        if pinned and self.cache.exists("state", settings.model_version):
            return
        with self.db.connection() as conn:
            require_migrated(conn)

    def _reopen(self, settings: Settings, after: float = 5.0) -> None:
        if not self._stopping.wait(after):
            self._open(settings)

    def _serve(self, app) -> None:
        """Serve ``app`` and be ready: once it exists (a failure to build it is not ready). An
        unpinned inference revision follows the registry from then on (``_follow_registry``),
        not before: a swap the follower made first would be undone here."""
        self.app = guard(app, on_request=self._observe)
        self._mark_ready(self.settings.revision)
        if self.service == "inference" and self.settings.model_version is None and self._following is None:
            self._following = threading.Thread(target=self._follow_registry, name="pefm-follow-registry", daemon=True)
            self._following.start()

    def _build(self, settings: Settings):
        if self.service == "ingest":
            from pefm.serving.ingest import create_ingest_app

            self._check_schema(settings)
            return create_ingest_app(settings, self.db, self.metrics, self.cache, self.openapi)
        if self.service == "monitor":
            from pefm.serving.monitor import create_monitor_app

            self._check_schema(settings)
            app = create_monitor_app(settings, self.db, self.metrics, self.openapi)
            self._on_stop = app.state.monitor.close
            return app
        from pefm.serving.inference import ModelServer, NoServingModel

        self._check_schema(settings)
        server = ModelServer(settings, self.db, self.cache)
        try:
            server.load()
        except NoServingModel as exc:  # a fresh cluster: the bootstrap job has not made one serve yet
            self._problem = f"waiting: {exc}"
            threading.Thread(target=self._wait_for_model, args=(server,), name="pefm-model-wait", daemon=True).start()
            return None
        return self._inference_app(server)

    def _wait_for_model(self, server, every: float = 5.0) -> None:
        """Try again every ``every`` seconds until a model serves; then become ready."""
        while not self._stopping.wait(every):
            try:
                server.load()
            except Exception as exc:  # still none, or the database is away: keep waiting
                self._problem = f"waiting: {exc}"
                continue
            self._serve(self._inference_app(server))
            return

    def _inference_app(self, server):
        """The app serving ``server``'s version, its re-conditioning started."""
        from pefm.serving.inference import create_inference_app

        settings = self.settings
        self.metrics.serve_model(server.version.id, server.version.family)
        app = create_inference_app(settings, server, self.metrics, self.writer, self.openapi)
        self._serving, self._retired = server, threading.Event()
        if self._stopping.is_set():
            self._retired.set()
        if settings.recondition:
            from pefm.serving.freshness import Reconditioner

            Reconditioner(server, self.db.url, self._retired).start()
        return app

    def _follow_registry(self) -> None:
        """An unpinned revision serves the registry's serving version, whenever its replicas
        started: on every change the registry announces, and on every (re)connection (what changed
        while it did not listen), each replica loads a version promoted since, then swaps it in;
        requests under way finish on the one before. Until it loads, or where it cannot (a key not
        trusted here: logged as an error), the one before serves; the next announcement tries
        again, and the next reconnection where the database was away."""
        import psycopg

        from pefm.storage.channels import REGISTRY_CHANNEL

        backoff = 1.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.db.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {REGISTRY_CHANNEL}")
                    heard = True
                    while not self._stopping.is_set():
                        if heard:
                            self._follow_promotion()
                            backoff = 1.0
                        heard = bool(list(conn.notifies(timeout=1.0, stop_after=1)))
            except Exception as exc:  # the database away
                log.warning("following the registry paused (%s: %s); again in %.0f s", type(exc).__name__, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _follow_promotion(self) -> None:
        import psycopg

        from pefm.forecasting.registry import serving_id
        from pefm.serving.inference import ModelServer

        with self.db.connection() as conn:
            serving = serving_id(conn)
        served = self._serving.version.id
        if serving is None or serving == served:  # none serves: the one before is better than none
            return
        server = ModelServer(self.settings, self.db, self.cache)
        try:
            server.load()
        except psycopg.Error:
            raise  # the database away: again once it is back
        except Exception:  # not for the database to mend (a signature not trusted here)
            log.exception("cannot serve %s, promoted in the registry: %s serves on", serving, served)
            return
        retired = self._retired
        self.app = guard(self._inference_app(server), on_request=self._observe)
        retired.set()
        from pefm.serving.whatif import forget

        forget(served)
        log.info("serving %s, promoted in the registry (was %s)", server.version.id, served)

    def _mark_ready(self, revision: str) -> None:
        """Ready: record the start (a cold start, on Knative) in the metrics and the database."""
        self._ready, self._problem = True, "OK"
        seconds = self.metrics.mark_ready(PROCESS_STARTED)
        self.writer.put("revision_starts", (time.time(), self.service, revision, seconds))

    def _observe(self, scope: dict, status: int, seconds: float) -> None:
        if self.metrics is None or is_shadow(scope):
            return  # not started; a rollout's signed shadow probe: not traffic this revision served
        self.metrics.observe_request(scope, status, seconds)
        if self.writer is not None and scope.get("path") not in ("/metrics",):
            route, method = route_template(scope), method_label(scope)
            row = (time.time(), self.service, self.settings.revision, route, method, status, seconds * 1000)
            self.writer.put("request_log", row)

    async def handle(self, scope: dict, receive, send) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/metrics" and self.metrics is not None:
            # scraped while not ready too: the 503s below are counted there, as failures before
            # routing, which a rollout's analysis holds against the revision
            from starlette.requests import Request

            await (await self.metrics.endpoint(Request(scope, receive)))(scope, receive, send)
        else:
            if self._not_ready is None:
                self._not_ready = guard(self._answer_not_ready, on_request=self._observe)
            await self._not_ready(scope, receive, send)

    async def _answer_not_ready(self, scope: dict, receive, send) -> None:
        """503, saying why (the body read first, by ``guard``)."""
        from pefm.serving.http import ApiError

        why = f"{self.service} is not ready: {self._problem}"
        await ApiError(503, why, headers={"Retry-After": "5"}).response()(scope, receive, send)

    def stop(self) -> None:
        self._stopping.set()
        self._retired.set()
        if self._on_stop is not None:
            self._on_stop()
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.stop()
            self.writer = None
        if self.db is not None:
            self.db.close()
            self.db = None

    def alive(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return self._ready, self._problem
