"""The cache seam: Redis (or Valkey) shared by every replica, or this process's memory.

With ``PEFM_REDIS_URL`` an inference replica keeps in Redis what any replica of the same version
can reuse, PostgreSQL staying the source of truth (everything here is rebuilt from it on a miss):

- ``state``: the version's registry row, its signature, its series' metadata and the forecasts
  precomputed at registration: all a replica needs to become ready and answer plain requests;
- ``conditioning``: per series, the precomputed forecasts as last re-conditioned on new data
  (``serving.freshness``), so a new replica starts from the latest ones;
- ``artifact``: the model's bytes (signature- and sha256-checked on every load, like the
  registry's: a changed byte is refused, never unpickled);
- ``panel``: the feature store, each group's transformed history as known at a moment (the data
  what-if and as-of answers are computed from);
- ``answer``: model-path answers (as-of, what-if, other levels, horizons or spaces) under a key
  holding the version, the series, the data vintage and the request, for ``PEFM_CACHE_TTL_SECONDS``.

Ingest publishes the series it changed on ``pefm:observations``; every replica hears it and
re-conditions. Only commands Valkey also serves are used (GET, SET EX, HSET, HGETALL, HMGET, HDEL,
EXPIRE, WATCH, MULTI/EXEC, PUBLISH, SUBSCRIBE). The memory bound of a shared cache is the server's ``maxmemory`` with an
``allkeys-lru`` policy (the manifests set both); an entry over ``MAX_ENTRY_BYTES`` is not cached.

Every entry in Redis carries an HMAC-SHA256 tag under ``PEFM_CACHE_KEY`` (held by the inference
replicas, not by ingest nor by the Redis server), over its full key (and field) and its bytes: an
entry written or moved by anyone without the key (who can reach Redis with its password) is
refused, counted as ``refused``, and rebuilt from PostgreSQL. Rate-limit counters and the
announcements carry no tag: a forged count only lets a caller through or makes it wait a window,
and an announcement only makes the replicas re-condition from PostgreSQL.

Redis away: every lookup counts as ``error`` in ``pefm_cache_requests_total`` and falls through
to what the process holds and to PostgreSQL (answers are computed again). After a failure Redis
is not asked again for ``RETRY_SECONDS`` (so an outage costs requests nothing), then the next
lookup tries again: recovery needs no restart.

Without a URL the cache is this process's memory, bounded by ``PEFM_CACHE_MAX_BYTES`` (least
recently used out), and holds only answers: the rest is already in the process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pefm.config import Settings

log = logging.getLogger(__name__)
OnLookup = Callable[[str, str, str], None]
"""Called with (backend, kind, result) on every lookup: ``ServiceMetrics.count_cache``."""
PREFIX = "pefm:3:"
"""Every key's prefix; the number changes when an entry's format does (old entries then expire)."""
OBSERVATIONS = "pefm:observations"
"""The channel ingest announces changed series on (JSON ``{"series": [...]}``; ``null``: all)."""
MAX_ENTRY_BYTES = 256 * 1024 * 1024
_TAG_BYTES = 32
"""An entry's HMAC-SHA256 tag, before its bytes."""
RETRY_SECONDS = 2.0
STATE_TTL = 7 * 24 * 3600
"""Seconds a version's state, conditioning, artifact and panels live after their last write."""


def panel_key(series_ids, as_of: datetime, changed: datetime | None = None) -> str:
    """The ``panel`` key of these series as known at ``as_of`` (as last ``changed``)."""
    ids = hashlib.sha256(",".join(series_ids).encode()).hexdigest()[:24]
    return f"{ids}:{as_of.timestamp():.6f}" + (f"/{changed.timestamp():.6f}" if changed else "")


class Cache:
    """What both caches share: counting each lookup by kind and result."""

    backend = "memory"
    shared = False
    """True when other processes see the entries: only then are states, artifacts and panels kept."""

    def __init__(self, on_lookup: OnLookup | None):
        self._on_lookup = on_lookup

    def count(self, kind: str, result: str) -> None:
        if self._on_lookup is not None:
            self._on_lookup(self.backend, kind, result)

    def get(self, kind: str, key: str) -> bytes | None:
        raise NotImplementedError

    def set(self, kind: str, key: str, value: bytes, ttl: int) -> None:
        raise NotImplementedError

    def publish(self, channel: str, message: str) -> None:
        """Announce ``message`` to every process listening (in memory there is none: PostgreSQL's
        channel carries the announcements)."""

    def count_request(self, key: str, window: int) -> int | None:
        """Requests counted under ``key`` in the current ``window``-second window, this one
        included (None: the count is unavailable, Redis away)."""
        raise NotImplementedError


RATE_CALLERS = 100_000
"""The callers a process without Redis counts per window, each its own budget (``count_request``)."""
OVERFLOW = "overflow"
"""The one rate-limit caller of those beyond ``RATE_CALLERS`` in a window."""


class MemoryCache(Cache):
    """This process's own: least recently used out beyond ``max_bytes``, entries expire."""

    def __init__(self, on_lookup: OnLookup | None, max_bytes: int):
        super().__init__(on_lookup)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], int] = {}
        self._pruned = -1  # the window whose start last dropped the windows before it

    def get(self, kind: str, key: str) -> bytes | None:
        full = f"{kind}:{key}"
        with self._lock:
            entry = self._entries.get(full)
            if entry is not None and entry[0] < time.monotonic():
                self._pop(full)
                entry = None
            if entry is not None:
                self._entries.move_to_end(full)
        self.count(kind, "miss" if entry is None else "hit")
        return None if entry is None else entry[1]

    def set(self, kind: str, key: str, value: bytes, ttl: int) -> None:
        size = len(value)
        if size > self.max_bytes:
            return
        full = f"{kind}:{key}"
        with self._lock:
            if full in self._entries:
                self._pop(full)
            self._entries[full] = (time.monotonic() + ttl, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._pop(next(iter(self._entries)))

    def _pop(self, full: str) -> None:
        self._bytes -= self._entries.pop(full)[2]

    def count_request(self, key: str, window: int) -> int | None:
        """Bounded: at ``RATE_CALLERS`` counts, those of past windows are dropped (once a window),
        and callers beyond the bound within one window share one budget, ``OVERFLOW``'s (a flood
        of addresses neither grows the process nor buys each of them a budget)."""
        index = int(time.time() // window)
        with self._lock:
            if (key, index) not in self._windows and len(self._windows) >= RATE_CALLERS:
                if self._pruned != index:
                    self._windows = {k: v for k, v in self._windows.items() if k[1] == index}
                    self._pruned = index
                if len(self._windows) >= RATE_CALLERS:
                    key = OVERFLOW
            n = self._windows[key, index] = self._windows.get((key, index), 0) + 1
        return n


class RedisCache(Cache):
    """Redis or Valkey at ``url``, shared by every process that names it. ``key`` (``PEFM_CACHE_KEY``)
    tags the entries and checks them; without it (ingest) only rate limits and announcements are
    used, and reading or writing an entry is a programming error."""

    backend = "redis"
    shared = True

    def __init__(self, on_lookup: OnLookup | None, url: str, key: str | None):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__(on_lookup)
        self.url = url
        self._key = key.encode() if key else None
        # no retries of its own: a failure opens the breaker below instead of holding a request
        self._options = {"socket_connect_timeout": 0.5, "socket_timeout": 2.0, "retry": Retry(NoBackoff(), 0)}
        self._client = redis.Redis.from_url(url, **self._options)
        self._down_until = 0.0
        self._errors = redis.RedisError, OSError

    def _call(self, kind: str, command: Callable[[], object]) -> tuple[bool, object]:
        """(True, result) or (False, None) when Redis is away (counted as an error)."""
        if time.monotonic() < self._down_until:
            self.count(kind, "error")
            return False, None
        try:
            return True, command()
        except self._errors as exc:
            if self._down_until == 0.0 or time.monotonic() > self._down_until + RETRY_SECONDS:
                log.warning("cache unavailable (%s: %s); serving without it", type(exc).__name__, exc)
            self._down_until = time.monotonic() + RETRY_SECONDS
            self.count(kind, "error")
            return False, None

    def _tag(self, name: str, value: bytes) -> bytes:
        """The entry's tag: HMAC-SHA256 over its name (``s:`` and the full key of a string entry,
        ``h:`` the full key and field of a hash entry's field) and its bytes, so that an entry
        moved under another key, or between a hash and a string, is refused as a changed one is."""
        if self._key is None:
            raise RuntimeError("cache entries need PEFM_CACHE_KEY")
        named = name.encode()
        return hmac.new(self._key, len(named).to_bytes(4, "big") + named + value, hashlib.sha256).digest()

    def _tagged(self, name: str, value: bytes) -> bytes:
        return self._tag(name, value) + value

    def _checked(self, name: str, stored: bytes) -> bytes | None:
        """The entry's bytes, or None when its tag is not the key's over them."""
        value = stored[_TAG_BYTES:]
        return value if hmac.compare_digest(stored[:_TAG_BYTES], self._tag(name, value)) else None

    def _refused(self, kind: str, full: str) -> None:
        self.count(kind, "refused")
        log.warning("cache entry %s is not tagged with PEFM_CACHE_KEY: refused, rebuilt from the database", full)

    def get(self, kind: str, key: str) -> bytes | None:
        full = PREFIX + f"{kind}:{key}"
        ok, stored = self._call(kind, lambda: self._client.get(full))
        if not ok:
            return None
        if stored is None:
            self.count(kind, "miss")
            return None
        if (value := self._checked(f"s:{full}", stored)) is None:  # type: ignore[arg-type]
            self._refused(kind, full)
            return None
        self.count(kind, "hit")
        return value

    def exists(self, kind: str, key: str) -> bool:
        """Whether an entry tagged with the key is there (not counted as a lookup; False when Redis
        is away): what lets a replica start without asking PostgreSQL, so an entry anyone could
        plant does not."""
        full = PREFIX + f"{kind}:{key}"
        ok, stored = self._call(kind, lambda: self._client.get(full))
        return bool(ok and stored is not None and self._checked(f"s:{full}", stored) is not None)  # type: ignore[arg-type]

    def set(self, kind: str, key: str, value: bytes, ttl: int) -> None:
        if len(value) <= MAX_ENTRY_BYTES:
            full = PREFIX + f"{kind}:{key}"
            stored = self._tagged(f"s:{full}", value)
            self._call(kind, lambda: self._client.set(full, stored, ex=ttl))

    def get_fields(self, kind: str, key: str) -> dict[str, bytes]:
        """A hash entry's fields tagged with the key; those that are not are refused and deleted
        (a field is written only when its series changes: one left untagged, by anyone or under a
        key since rotated, would otherwise stay for good)."""
        full = PREFIX + f"{kind}:{key}"
        ok, stored = self._call(kind, lambda: self._client.hgetall(full))
        if not ok:
            return {}
        if not stored:
            self.count(kind, "miss")
            return {}
        fields, refused = {}, {}
        for name, tagged in stored.items():  # type: ignore[union-attr]
            field = name.decode(errors="replace")
            if (value := self._checked(f"h:{full}\0{field}", tagged)) is None:
                refused[name] = tagged
            else:
                fields[field] = value
        if refused:
            self._refused(kind, full)
            self._call(kind, lambda: self._drop(full, refused))
        else:
            self.count(kind, "hit")
        return fields

    def _drop(self, full: str, refused: dict[bytes, bytes]) -> None:
        """Delete the ``refused`` fields of hash ``full`` that still hold what was refused, unless
        the hash changes meanwhile (WATCH: another replica may have just written a good one)."""
        import redis

        with self._client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(full)
                now = pipe.hmget(full, list(refused))
                if stale := [name for name, value in zip(refused, now, strict=True) if value == refused[name]]:
                    pipe.multi()
                    pipe.hdel(full, *stale)
                    pipe.execute()
            except redis.WatchError:
                pass  # written meanwhile: the next read judges the fields again

    def set_fields(self, kind: str, key: str, fields: dict[str, bytes], ttl: int) -> None:
        full = PREFIX + f"{kind}:{key}"
        tagged = {name: self._tagged(f"h:{full}\0{name}", value) for name, value in fields.items()}

        def write() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(full, mapping=tagged).expire(full, ttl).execute()

        self._call(kind, write)

    def publish(self, channel: str, message: str) -> None:
        self._call("publish", lambda: self._client.publish(channel, message))

    def count_request(self, key: str, window: int) -> int | None:
        full = f"{PREFIX}rate:{key}:{int(time.time() // window)}"

        def incr() -> int:
            with self._client.pipeline(transaction=True) as pipe:
                return pipe.incr(full).expire(full, window + 1).execute()[0]

        ok, n = self._call("rate", incr)
        return n if ok else None  # type: ignore[return-value]

    def listen(self, channel: str, on_message: Callable[[str | None], None], stopping: threading.Event) -> None:
        """Subscribe on a connection of its own; after a lost connection, ``on_message(None)``
        (announcements sent meanwhile are lost: everything may have changed)."""
        import redis

        backoff, lost = 1.0, False
        while not stopping.is_set():
            try:
                client = redis.Redis.from_url(self.url, **{**self._options, "socket_timeout": None})
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(channel)
                    if lost:
                        on_message(None)
                    backoff, lost = 1.0, False
                    while not stopping.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            on_message(message["data"].decode(errors="replace"))  # unreadable: everything
            except self._errors as exc:
                if not lost:
                    log.warning("cache channel %s lost (%s); resubscribing", channel, type(exc).__name__)
                lost = True
                stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)


def open_cache(settings: Settings, on_lookup: OnLookup | None, entries: bool = True) -> Cache:
    """Redis when ``PEFM_REDIS_URL`` is set, else this process's memory. ``entries``: the process
    keeps and reads entries (inference), which in Redis needs ``PEFM_CACHE_KEY``; ingest only
    counts rate limits and announces."""
    if settings.redis_url:
        if entries and not settings.cache_key:
            from pefm.config import ConfigError

            raise ConfigError("PEFM_REDIS_URL is set without PEFM_CACHE_KEY, the key its entries are tagged with")
        return RedisCache(on_lookup, settings.redis_url, settings.cache_key if entries else None)
    return MemoryCache(on_lookup, settings.cache_max_bytes)
