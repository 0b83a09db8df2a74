"""The inference function's app: forecasts with intervals from the model version this revision serves.

Start-up reads the version's registry row and the forecasts precomputed when it was registered
(horizons up to 12, levels 80/95): that is all a plain request needs, so a revision is ready, and
stays small while it serves only those, without importing pandas, statsmodels or torch. The model
itself (signature- and sha256-checked) loads on a background thread when the first request needs
what the precomputed table cannot answer: other levels, longer horizons, ``as_of`` (forecast from
the data as known then) and ``history`` (what-if: the client's values replace or extend the stored
ones). Those requests wait for it (``MODEL_WAIT_SECONDS``), then get 503 with Retry-After. Forecasts
come in the series' own units (level space) or in model space, and, as new data arrive, are
conditioned on them without a retrain (``serving.freshness``): each says its ``data_as_of``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pefm.config import Settings
from pefm.data.fields import EXPECTED_TIMESTAMP, SERIES_ID, parse_timestamp
from pefm.data.transforms import INVERTIBLE, SPACES, model_space_unit
from pefm.serving.cache import STATE_TTL, Cache
from pefm.serving.http import (
    ApiError,
    ClientGone,
    HotApp,
    HotRoute,
    Slots,
    check_query,
    handled,
    in_database,
    in_thread,
    internal_error,
    mark_shadow,
    off_loop,
    parse_json,
    receive_body,
    service_routes,
)
from pefm.serving.log_writer import LogWriter
from pefm.serving.observability import ServiceMetrics
from pefm.serving.ratelimit import RateLimit
from pefm.storage.database import Database
from pefm.storage.model_versions import (
    ModelVersion,
    get_version,
    read_artifact,
    read_precomputed,
    read_signature,
    version_from_json,
    version_to_json,
)
from pefm.storage.signing import Signature, check_precomputed, trusted_keys

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

_QUERY_INT = re.compile(r"-?[0-9]{1,9}")
log = logging.getLogger(__name__)
MAX_HORIZON = 60
MAX_SERIES = 50
"""Series one request may name: they are answered one after another, each not precomputed holding
a model slot while it is computed, and the rate limit counts the request once."""
MAX_AS_OF_SERIES = 5
"""Series one request with ``as_of`` may name: each is its family estimated anew on the data known
then (seconds for a joint family), and a moment a second apart is another estimation."""
MAX_BODY_BYTES = 2 * 1024 * 1024
"""The largest forecast body read (413 as soon as it passes, or at once for a Content-Length over
it; ``PEFM_MAX_BODY_BYTES`` where that is smaller). Sized from the largest valid request, a what-if:
10,000 ``history`` items (``check_request``'s cap) as ``json.dumps`` writes them, each at most 87
bytes (``{"ts": "<40 characters, parse_timestamp's most>", "value": <24 characters, the longest
double>}`` and its ", "), with ``series_id``, ``horizon``, 10 ``levels``, ``as_of`` and ``space``
at their longest: 870,232 bytes; 1,090,294 indented by 2 (``series_ids`` at their most, 50 ids of
64 characters, come without a history: some 3.5 kB). 2 MiB leaves room above that. The functions'
20 MB is ingest's: with it a forecast body was read and parsed whole before its history was
counted, and four 20 MB bodies at once took a replica from 240 MB to 1 GB."""
# Request ids: unique per process start, no syscall per request (uuid4 reads os.urandom).
_ID_PREFIX = secrets.token_hex(6)
_request_numbers = itertools.count(1)
_JSON_TYPE = (b"content-type", b"application/json")
_FIELDS = {"series_id", "series_ids", "horizon", "levels", "as_of", "history", "space"}


class NoServingModel(LookupError):
    """The revision is unpinned and the registry has no serving version yet."""


@dataclass(frozen=True)
class Conditioning:
    """What one series is forecast from right now, swapped whole when new data arrive."""

    rows: dict[str, list[dict[str, Any]]]
    """Precomputed forecast rows by space (``level``, ``model``)."""
    anchor: float | None
    """The last level the model-space forecast is inverted from (None: a version too old to say)."""
    data_as_of: datetime
    """The moment the data the forecasts are conditioned on were read as of (at registration: the
    version's training cut-off)."""
    generation: int = 0
    """0: as registered; each re-conditioning adds one."""


class ModelServer:
    """The version this revision serves: its precomputed forecasts now, its model soon after, and
    (``serving.freshness``) both conditioned on the latest data as they arrive."""

    def __init__(self, settings: Settings, db: Database, cache: Cache):
        self.settings = settings
        self.db = db
        self.cache = cache
        """Model-path answers (``answer``); with a shared cache also the state, conditioning,
        artifact and panels other replicas of the version start from (``pefm.serving.cache``)."""
        self.version: ModelVersion | None = None
        self.series: dict[str, Conditioning] = {}
        self.pre_horizon = 0
        self.pre_levels: set[int] = set()
        self.meta: dict[str, dict[str, str]] = {}
        self.model = None
        self.model_error: str | None = None
        self._failed_at: float | None = None
        """When a load failed for a reason that may pass (the database or the network away):
        loading is tried again ``LOAD_RETRY_SECONDS`` later. None after a success, or a failure
        that stays (an artifact that does not match its signed sha256, or cannot be read)."""
        self._loaded = threading.Event()
        self._loader: threading.Thread | None = None
        self._loader_lock = threading.Lock()
        self._rendered: dict[tuple, str] = {}

    def load(self) -> None:
        """Resolve and load the version's row and precomputed forecasts (the start-up path): from
        the shared cache when it holds them for a pinned version (PostgreSQL not touched), else
        from the registry, then kept in the cache. Either way the trainer's signature is checked
        here: a version it did not sign serves nothing, its precomputed forecasts included."""
        version_id = self.settings.model_version
        cached = self.cache.get("state", version_id) if version_id and self.cache.shared else None
        state = json.loads(cached) if cached is not None else self._read_state(version_id)
        version = version_from_json(state["version"])
        if version_id is not None and version.id != version_id:
            raise ValueError(f"the cached state of {version_id} holds {version.id}")
        signature = state["signature"] and Signature(state["signature"][0], base64.b64decode(state["signature"][1]))
        trusted_keys(self.settings).verify(
            version_id=version.id,
            family=version.family,
            sha256=version.artifact_sha256,
            precomputed=version.precomputed_sha256,
            signature=signature,
        )
        check_precomputed(version.id, state["precomputed"], version.precomputed_sha256)
        if cached is None and self.cache.shared:
            self.cache.set("state", version.id, json.dumps(state).encode(), STATE_TTL)
        self.version, self.meta = version, state["meta"]
        pre = state["precomputed"] or {"horizon": 0, "levels": [], "rows": []}
        self.pre_horizon, self.pre_levels = pre["horizon"], set(pre["levels"])
        by_series: dict[str, dict[str, list]] = {s: {} for s in self.meta}
        for row in pre["rows"]:
            values = {k: v for k, v in row.items() if k not in ("series_id", "space")}
            by_series[row["series_id"]].setdefault(row.get("space", "model"), []).append(values)
        anchors = pre.get("anchors", {})
        self.series = {s: Conditioning(rows, anchors.get(s), version.data_as_of) for s, rows in by_series.items()}
        if self.cache.shared:  # the latest re-conditioned forecasts another replica kept
            kept = self.cache.get_fields("conditioning", version.id)
            updates = {s: _conditioning_from_json(v) for s, v in kept.items() if s in self.series}
            if updates:
                self.recondition(updates)

    def _read_state(self, version_id: str | None) -> dict[str, Any]:
        """What a replica starts from, read from the registry (JSON-ready)."""
        with self.db.connection() as conn:
            if version_id is None:  # unpinned: the registry's module (and pandas) only then
                from pefm.forecasting.registry import serving_id

                version_id = serving_id(conn)
            if version_id is None:
                raise NoServingModel("no model version serves yet: run pefm bootstrap, or promote one")
            version = get_version(conn, version_id)
            signature = read_signature(conn, version_id)
            pre = read_precomputed(conn, version_id)
            rows = conn.execute(
                "SELECT id, frequency, transform, unit FROM series WHERE id = ANY(%s)", (version.series_ids,)
            ).fetchall()
        return {
            "version": version_to_json(version),
            "signature": signature and [signature.key_id, base64.b64encode(signature.value).decode()],
            "meta": {r[0]: {"frequency": r[1], "transform": r[2], "unit": r[3]} for r in rows},
            "precomputed": pre,
        }

    def load_model(self) -> None:
        """Load the model artifact (its bytes checked against the signed sha256) for what
        precomputed forecasts cannot answer: from the shared cache, else the registry."""
        import psycopg

        from pefm.forecasting.registry import model_from_artifact

        version = self.version
        try:
            artifact = self.cache.get("artifact", version.id) if self.cache.shared else None
            from_registry = artifact is None
            if from_registry:
                with self.db.connection() as conn:
                    artifact, _ = read_artifact(conn, version.id)
            self.model = model_from_artifact(version.id, artifact, version.artifact_sha256)
            if from_registry and self.cache.shared:
                self.cache.set("artifact", version.id, artifact, STATE_TTL)
        except Exception as exc:  # reported on the requests that need it
            self.model_error = f"{type(exc).__name__}: {exc}"
            passing = isinstance(exc, psycopg.Error | OSError)  # the database away: it comes back
            self._failed_at = time.monotonic() if passing else None
            log.exception("loading model %s failed", version.id)
        finally:
            self._loaded.set()

    def start_loading(self) -> None:
        """Start loading the model on a background thread, once (the first request that needs it),
        or again once ``LOAD_RETRY_SECONDS`` have passed since a load failed for a reason that may
        pass: one failed read (the database away for a moment) turned the model path off for the
        life of the replica, which stayed ready."""
        with self._loader_lock:
            failed_at = self._failed_at
            if failed_at is not None and time.monotonic() - failed_at >= LOAD_RETRY_SECONDS:
                self._failed_at, self._loader = None, None
                self._loaded.clear()
            if self._loader is None:
                self._loader = threading.Thread(target=self.load_model, name="pefm-model-loader", daemon=True)
                self._loader.start()

    def wait_for_model(self):
        """The model, once loading (started here if no request has started it) has finished; None
        if it failed."""
        self.start_loading()
        self._loaded.wait()
        return self.model

    def reread_units(self, series_ids: list[str]) -> None:
        """The units of these served series as the catalog has them now: the one thing of a
        series' metadata that may change while it holds data, and which every answer carries."""
        with self.db.connection() as conn:
            units = dict(conn.execute("SELECT id, unit FROM series WHERE id = ANY(%s)", (series_ids,)).fetchall())
        if any(self.meta[s]["unit"] != unit for s, unit in units.items() if s in self.meta):
            self.meta = {s: {**m, "unit": units.get(s, m["unit"])} for s, m in self.meta.items()}

    def recondition(self, updates: dict[str, tuple[list[dict[str, Any]], float, datetime]]) -> None:
        """Swap in forecasts conditioned on newer data: per series (precomputed rows of both
        spaces, anchor, data_as_of). Each series' state is replaced whole, so a request sees the
        old one or the new one, never a mix."""
        for series_id, (rows, anchor, data_as_of) in updates.items():
            by_space: dict[str, list] = {}
            for row in rows:
                values = {k: v for k, v in row.items() if k not in ("series_id", "space")}
                by_space.setdefault(row["space"], []).append(values)
            generation = self.series[series_id].generation + 1
            self.series[series_id] = Conditioning(by_space, anchor, data_as_of, generation)
        rendered = dict(self._rendered)  # one copy: requests may add to it meanwhile
        self._rendered = {k: v for k, v in rendered.items() if k[0] not in updates}

    def share_conditioning(self, updates: dict[str, tuple[list[dict[str, Any]], float, datetime]]) -> None:
        """Keep re-conditioned forecasts in the shared cache, for replicas that start later."""
        if self.cache.shared:
            fields = {
                s: json.dumps([rows, anchor, moment.isoformat()]).encode()
                for s, (rows, anchor, moment) in updates.items()
            }
            self.cache.set_fields("conditioning", self.version.id, fields, STATE_TTL)

    def precomputed_json(
        self, series_id: str, state: Conditioning, space: str, horizon: int, levels: tuple[int, ...]
    ) -> str | None:
        """The forecast rows as JSON text when the precomputed table answers the request (the
        text is built once per series state, space, horizon and levels, then reused)."""
        rows = state.rows.get(space)
        if rows is None or horizon > self.pre_horizon or not set(levels) <= self.pre_levels:
            return None
        key = (series_id, state.generation, space, horizon, levels)
        if (text := self._rendered.get(key)) is None:
            keep = ["ds", "mean", *(f"{side}-{lv}" for lv in levels for side in ("lo", "hi"))]
            rows = [{k: row[k] for k in keep} for row in rows[:horizon]]
            text = self._rendered[key] = rows_json(rows, "series_id")
        return text

    def model_json(
        self,
        series_id: str,
        state: Conditioning,
        space: str,
        horizon: int,
        levels: tuple[int, ...],
        as_of: datetime | None,
        changed: datetime | None,
        history: list[dict] | None,
    ) -> str:
        """Forecast rows as JSON text from the model itself (blocking: run it on a thread);
        ``changed``: with ``as_of``, when what was known then last changed (``known_changed``)."""
        if self.model is None:
            self.start_loading()
            if not self._loaded.wait(MODEL_WAIT_SECONDS):  # a load takes a second or two: wait rather than refuse
                raise ApiError(503, "the model is still loading; retry shortly", headers={"Retry-After": "1"})
        with self._loader_lock:  # read as one: a retry (``start_loading``) may begin meanwhile
            model, error = self.model, self.model_error
            passing = self._failed_at is not None or not self._loaded.is_set()  # failed may pass, or retried
        if model is None:  # Retry-After only where trying again can help
            retry = {"Retry-After": f"{LOAD_RETRY_SECONDS:.0f}"} if passing else {}
            raise ApiError(503, f"the model could not be loaded: {error}", headers=retry)
        from pefm.serving.whatif import model_forecast

        rows = model_forecast(self, series_id, state, horizon, levels, as_of, changed, history, space)
        return rows_json(rows, "history" if history is not None else "as_of" if as_of is not None else "series_id")


def _known_changed(server: ModelServer, series_id: str, as_of: datetime) -> datetime | None:
    """``whatif.known_changed`` (blocking), imported here, on a worker thread: the module brings
    pandas and the models, seconds of import that on the event loop would hold every request of a
    replica whose as-of answers come from the cache (it never needed the model before)."""
    from pefm.serving.whatif import known_changed

    return known_changed(server, series_id, as_of)


MODEL_QUEUE_SECONDS = 10.0
"""How long a request waits for one of the model's slots before a 503 with Retry-After."""
MODEL_WAIT_SECONDS = 10.0
"""How long a model-path request waits for the model to load (it starts with the first such
request) before a 503 with Retry-After."""
LOAD_RETRY_SECONDS = 10.0
"""How long after a failed load (for a reason that may pass) the next model-path request tries
again; its 503 says so in Retry-After."""


class InferenceService:
    def __init__(self, settings: Settings, server: ModelServer, metrics: ServiceMetrics, writer: LogWriter | None):
        # Model-path answers (as-of refits, what-ifs) take CPU for up to seconds each: at most
        # PEFM_MODEL_CONCURRENCY at once, so a burst of them queues instead of starving the rest
        busy = "the model is busy with other requests"
        self._model_slots = Slots(settings.model_concurrency, MODEL_QUEUE_SECONDS, busy)
        self.settings = settings
        self.server = server
        self.metrics = metrics
        self.writer = writer
        self.limit = RateLimit(settings.rate_limit, server.cache)
        self._parts: dict[tuple, tuple[Conditioning, dict[str, str], str, str]] = {}
        self._checked: dict[bytes, tuple] = {}
        self._version_texts: tuple = (None, "", [])

    async def forecast_post(self, scope: dict, receive, send) -> int:
        """POST /v1/forecast as a raw ASGI handler (a hot route), answered whatever happens,
        and the status it was answered with. Errors are answered as the app answers them:
        ApiErrors as their JSON, anything else as ``internal_error``'s 500 (logged with an id);
        a client that went away before its body arrived, 499 (nothing is sent)."""
        started = False
        try:
            declared, shadow_header = None, None
            for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
                if name == b"content-length":
                    declared = value if declared is None else declared
                elif name == b"x-pefm-shadow":
                    shadow_header = value.decode("latin-1") if shadow_header is None else shadow_header
            settings = self.settings
            limit = min(MAX_BODY_BYTES, settings.max_body_bytes)
            body = await receive_body(receive, declared, limit, settings.body_timeout_seconds)
            shadow = shadow_header is not None and mark_shadow(
                scope, shadow_header, _url_path(scope), body, settings.shadow_key
            )
            # counted before the body is parsed, so a body that fails to parse counts too (a
            # caller over its limit was parsed all the same); a rollout's signed probe never is
            if not shadow and self.limit.limit is not None:
                await self.limit.check_scope(scope)
            checked = self._checked.get(body)
            if checked is None:
                checked = await self._check(body)
            text, version = await self._answer_text(checked, shadow)
            answer = text.encode()
            headers = [*self._shared(version)[2], (b"content-length", b"%d" % len(answer)), _JSON_TYPE]
            started = True
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            return 200
        except ApiError as exc:
            await exc.response()(scope, receive, send)
            return exc.status
        except ClientGone:
            return 499
        except Exception as exc:
            response = internal_error(scope, "POST", _url_path(scope), exc)
            if not started:  # else too late for an answer: the client sees the connection end
                await response(scope, receive, send)
            return 500

    async def forecast_get(self, request: Request) -> Response:
        await self.limit.check(request)
        query = request.query_params
        repeated = "given more than once (several series: POST with series_ids)"
        check_query(request, _FIELDS - {"history", "series_ids"}, "invalid forecast request", repeated)
        data: dict[str, Any] = {k: query[k] for k in ("series_id", "as_of", "space") if k in query}
        if "horizon" in query:
            data["horizon"] = _query_int(query["horizon"])
        if "levels" in query:
            data["levels"] = [_query_int(v) for v in query["levels"].split(",")]
        return await self._answer(data)

    async def _model_json(self, *args: Any) -> str:
        async with self._model_slots.turn() as turn:
            await turn.take()
            return await in_database(self.server.model_json, *args)

    async def _model_answer(
        self,
        series_id: str,
        state: Conditioning,
        space: str,
        horizon: int,
        levels: tuple[int, ...],
        as_of: datetime | None,
        history: list[dict] | None,
    ) -> tuple[str, str]:
        """A model-path answer and where it came from (``cache`` or ``model``). Its key holds the
        version, the series, the request and the data it was made from: the moment the data the
        series is conditioned on were read (what-if, other levels), or for an as-of answer the
        moment asked and when what was known then last changed (an admin's backdated write
        changes it after the fact), so new data never meet an old answer."""
        cache, version = self.server.cache, self.server.version.id
        request = json.dumps([space, horizon, levels, history], separators=(",", ":"))
        digest = hashlib.sha256(request.encode()).hexdigest()[:32]
        data, changed = f"{state.data_as_of.timestamp():.6f}", None
        if as_of is not None:
            changed = await in_database(_known_changed, self.server, series_id, as_of)
            data = f"{as_of.timestamp():.6f}/{changed.timestamp() if changed else 0:.6f}"
        key = f"{version}:{series_id}:{data}:{digest}"
        if (cached := await in_thread(cache.get, "answer", key)) is not None:
            return cached.decode(), "cache"
        text = await self._model_json(series_id, state, space, horizon, levels, as_of, changed, history)
        await in_thread(cache.set, "answer", key, text.encode(), self.settings.cache_ttl_seconds)
        return text, "model"

    async def _check(self, body: bytes) -> tuple:
        """A POST body read and checked (``check_request``); kept, by the body's bytes, when it
        asks no what-if: the clients of a revision send the same few bodies again and again, and
        reading and checking one costs as much as answering it (bounded: clients make up bodies)."""
        data = await off_loop(parse_json, body)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid forecast request", [{"field": "body", "message": "expected a JSON object"}])
        checked = check_request(data)
        history = checked[4]  # of (ids, horizon, levels, as_of, history, space)
        if history is None and len(body) <= 1024:
            if len(self._checked) >= 4096:
                self._checked.clear()
            self._checked[body] = checked
        return checked

    async def _answer(self, data: dict[str, Any]) -> Response:
        from starlette.responses import Response

        text, version = await self._answer_text(check_request(data), False)
        headers = {"X-PEFM-Model-Version": version.id, "X-PEFM-Revision": self.settings.revision}
        return Response(text, headers=headers, media_type="application/json")

    async def _answer_text(self, checked: tuple, shadow: bool) -> tuple[str, ModelVersion]:
        """The answer (JSON text) to a checked request (``check_request``), and the model version
        that gave it."""
        server = self.server
        if server.version is None:
            raise ApiError(503, "no model is loaded on this revision", headers={"Retry-After": "5"})
        ids, horizon, levels, as_of, history, asked_space = checked
        unknown = [s for s in ids if s not in server.meta]
        if unknown:
            known = await in_database(_existing, server.db, unknown)
            if missing := [s for s in unknown if s not in known]:
                raise ApiError(404, f"unknown series: {', '.join(missing)}")
            version = server.version
            if version.family == "bundle":  # every catalog series with enough data, as of its training
                skipped = version.params.get("skipped", {})
                missing_why = (
                    f"no data when it was trained (as of {version.data_as_of:%Y-%m-%d %H:%M}); retraining adds it"
                )
            else:
                skipped, missing_why = {}, f"not one of the series this {version.family} model was trained on"
            why = "".join(f"; {s}: {skipped.get(s, missing_why)}" for s in unknown)
            raise ApiError(409, f"model {server.version.id} does not forecast: {', '.join(unknown)}{why}")
        spaces = {s: series_space(s, server.meta[s]["transform"], asked_space) for s in ids}
        request_id = f"{_ID_PREFIX}-{next(_request_numbers):x}"
        version, writer = server.version, None if shadow else self.writer
        revision, head = self.settings.revision, self._shared(version)[1]
        parts, served = [], []
        for series_id in ids:
            space, state = spaces[series_id], server.series[series_id]
            text, source = None, "precomputed"
            if as_of is None and history is None:
                text, part = self._precomputed(series_id, state, space, horizon, levels)
            if text is None:
                text, source = await self._model_answer(series_id, state, space, horizon, levels, as_of, history)
                data_as_of = as_of if as_of is not None else state.data_as_of
                part = forecast_part(series_id, space, server.meta[series_id], data_as_of, text)
            parts.append(part)
            row = (time.time(), request_id, revision, version.id, series_id, as_of, history is not None)
            served.append((source, (*row, horizon, text, space)))
        estimated = _utc_text(as_of or version.data_as_of)
        forecasts = ",".join(parts)
        body = f'{head}"{request_id}","estimated_as_of":"{estimated}","forecasts":[{forecasts}]}}'
        # counted and logged once the whole answer is made: a series that fails after others
        # fails the request, and the others were never served
        for source, row in served:
            if not shadow:  # a rollout's probe is no traffic, in this count either
                self.metrics.count_forecast(version.id, source)
            if writer is not None:
                writer.put("predictions", row)
        return body, version

    def _precomputed(
        self, series_id: str, state: Conditioning, space: str, horizon: int, levels: tuple[int, ...]
    ) -> tuple[str | None, str | None]:
        """The precomputed rows (JSON text) of a plain request and the series' part of the answer,
        made once per series state and request; (None, None) when the precomputed table cannot
        answer it."""
        key, meta = (series_id, space, horizon, levels), self.server.meta[series_id]
        if (kept := self._parts.get(key)) is not None and kept[0] is state and kept[1] is meta:  # unit unchanged
            return kept[2], kept[3]
        text = self.server.precomputed_json(series_id, state, space, horizon, levels)
        if text is None:
            return None, None
        part = forecast_part(series_id, space, meta, state.data_as_of, text)
        if len(self._parts) >= 4096:  # bounded: series x spaces x horizons x levels asked
            self._parts.clear()
        self._parts[key] = state, meta, text, part
        return text, part

    def _shared(self, version: ModelVersion) -> tuple[ModelVersion, str, list[tuple[bytes, bytes]]]:
        """What every answer of ``version`` shares, made once: (version, the answer's text up to its
        request id, the response's headers before content-length and content-type)."""
        if (shared := self._version_texts)[0] is not version:
            revision = self.settings.revision
            head = (
                f'{{"model_version":"{version.id}","family":"{version.family}",'
                f'"revision":{json.dumps(revision)},"request_id":'
            )
            headers = [
                (b"x-pefm-model-version", version.id.encode("latin-1")),
                (b"x-pefm-revision", revision.encode("latin-1")),
            ]
            shared = self._version_texts = (version, head, headers)
        return shared


def create_inference_app(
    settings: Settings, server: ModelServer, metrics: ServiceMetrics, writer: LogWriter | None, openapi: dict
) -> HotApp:
    """The inference ASGI app: POST /v1/forecast, the hot path, as a raw handler (``HotApp``)."""
    service = InferenceService(settings, server, metrics, writer)

    def routes() -> list:
        from starlette.routing import Route

        return [
            Route("/v1/forecast", handled(service.forecast_get), methods=["GET"]),
            *service_routes(metrics.endpoint, openapi),
        ]

    return HotApp({HotRoute("POST", "/v1/forecast"): service.forecast_post}, routes)


def _url_path(scope: dict) -> str:
    """The request's path as Starlette's ``request.url.path`` gives it."""
    return scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def check_request(data: dict[str, Any]):
    """A forecast request checked field by field: (ids, horizon, levels, as_of, history, space);
    ApiError 422 naming every bad field."""
    details = [{"field": k, "message": "unexpected field"} for k in sorted(set(data) - _FIELDS)]
    ids = data.get("series_ids") if "series_ids" in data else [data.get("series_id")]
    if ("series_id" in data) == ("series_ids" in data):
        details.append({"field": "series_id", "message": "give exactly one of series_id or series_ids"})
    elif not isinstance(ids, list) or not ids or not all(isinstance(s, str) and SERIES_ID.match(s) for s in ids):
        details.append(
            {
                "field": "series_ids" if "series_ids" in data else "series_id",
                "message": "expected a series id (or a non-empty list of them)",
            }
        )
    elif len(set(ids)) != len(ids):
        details.append({"field": "series_ids", "message": "a series appears twice"})
    elif len(ids) > MAX_SERIES:
        details.append({"field": "series_ids", "message": f"at most {MAX_SERIES} series in one request"})
    elif len(ids) > MAX_AS_OF_SERIES and data.get("as_of") is not None:
        message = f"at most {MAX_AS_OF_SERIES} series with as_of (each is estimated anew)"
        details.append({"field": "series_ids", "message": message})
    horizon = data.get("horizon", 8)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= MAX_HORIZON:
        details.append({"field": "horizon", "message": f"expected an integer in 1..{MAX_HORIZON}"})
    levels = data.get("levels", [80, 95])
    if (
        not isinstance(levels, list)
        or not levels
        or len(levels) > 10
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 99 for v in levels)
    ):
        details.append({"field": "levels", "message": "expected a list of integers in 1..99"})
    as_of = None
    if data.get("as_of") is not None:
        as_of = parse_timestamp(data["as_of"])
        if as_of is None:
            details.append({"field": "as_of", "message": EXPECTED_TIMESTAMP})
        elif as_of > datetime.now(UTC):
            details.append({"field": "as_of", "message": "is in the future: nothing is known as of then yet"})
    space = data.get("space")
    if space is not None and space not in SPACES:
        details.append({"field": "space", "message": f"expected one of {', '.join(SPACES)}"})
    history = data.get("history")
    if history is not None:
        if "series_ids" in data:
            details.append({"field": "history", "message": "history goes with a single series_id"})
        elif not isinstance(history, list) or not history or len(history) > 10_000:
            details.append({"field": "history", "message": "expected a non-empty list of {ts, value}"})
    if details:
        raise ApiError(422, "invalid forecast request", details)
    return tuple(ids), horizon, tuple(sorted(set(levels))), as_of, history, space


def rows_json(rows: list[dict[str, Any]], field: str) -> str:
    """Forecast rows as JSON text; ApiError 422 naming ``field`` (what they were made from) when a
    number in them is not finite, which JSON cannot say: e.g. data near the largest double, which
    overflow the model or the level it is mapped back to."""
    try:
        return json.dumps(rows, separators=(",", ":"), allow_nan=False)
    except ValueError:
        message = "the model's forecast from these data is not a finite number"
        raise ApiError(422, "no finite forecast", [{"field": field, "message": message}]) from None


def forecast_part(series_id: str, space: str, meta: dict[str, str], data_as_of: datetime, rows_json: str) -> str:
    """One series' entry of a forecast response (JSON text): its space, unit, transform, the moment
    its data were read as of, and its rows."""
    unit = meta["unit"] if space == "level" else model_space_unit(meta["unit"], meta["transform"])
    return (
        f'{{"series_id":{json.dumps(series_id)},"space":"{space}","unit":{json.dumps(unit)},'
        f'"transform":"{meta["transform"]}","data_as_of":"{_utc_text(data_as_of)}","forecast":{rows_json}}}'
    )


@functools.lru_cache(maxsize=4096)
def _utc_text(moment: datetime) -> str:
    """To the microsecond, as PostgreSQL keeps it: the probe compares two answers by the data each
    was read as of (``rollout.probes.unlike_data``), and a write in the same second as a read came
    before or after it. Always six digits, so that the texts order as the moments do."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def series_space(series_id: str, transform: str, asked: str | None) -> str:
    """The space a series is answered in: as asked, by default level when its transform inverts."""
    if asked is None:
        return "level" if transform in INVERTIBLE else "model"
    if asked == "level" and transform not in INVERTIBLE:
        raise ApiError(
            422,
            "invalid forecast request",
            [{"field": "space", "message": f"{series_id}'s transform {transform!r} has no inverse: ask space=model"}],
        )
    return asked


def _conditioning_from_json(text: bytes) -> tuple[list[dict[str, Any]], float, datetime]:
    rows, anchor, data_as_of = json.loads(text)
    return rows, anchor, datetime.fromisoformat(data_as_of)


def _existing(db: Database, ids: list[str]) -> set[str]:
    with db.connection() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM series WHERE id = ANY(%s)", (ids,))}


def _query_int(text: str) -> int | str:
    """A query parameter as an integer when it is one in ASCII digits (``int`` also takes
    other scripts' digits); as given otherwise, for ``check_request`` to refuse by name."""
    text = text.strip()
    return int(text) if _QUERY_INT.fullmatch(text) else text
