"""The cache backends: Redis (a real ``redis-server``) and this process's memory."""

import threading
import time

import pytest

from pefm.serving.cache import OBSERVATIONS, PREFIX, RETRY_SECONDS, MemoryCache, RedisCache
from pefm.serving.observability import ServiceMetrics
from tests.redis_server import RedisServer

KEY = "k" * 32
"""PEFM_CACHE_KEY of the tests' replicas."""


def metrics() -> ServiceMetrics:
    return ServiceMetrics("inference", "rev-1")


def counted(c: ServiceMetrics, backend: str, kind: str, result: str) -> int:
    return c._cache.get((backend, kind, result), 0)


@pytest.fixture
def server(tmp_path):
    running = RedisServer(tmp_path / "redis").start()
    yield running
    running.kill()


def test_memory_cache_is_bounded_least_recently_used_out_and_expires():
    c = metrics()
    cache = MemoryCache(c.count_cache, max_bytes=30)
    cache.set("answer", "a", b"x" * 10, ttl=60)
    cache.set("answer", "b", b"y" * 10, ttl=60)
    assert cache.get("answer", "a") == b"x" * 10  # a is now the most recently used
    cache.set("answer", "c", b"z" * 15, ttl=60)  # 35 bytes: b, the least recently used, goes
    assert cache.get("answer", "b") is None
    assert cache.get("answer", "a") == b"x" * 10 and cache.get("answer", "c") == b"z" * 15
    cache.set("answer", "big", b"w" * 31, ttl=60)  # larger than the bound: not kept, nothing evicted
    assert cache.get("answer", "big") is None and cache.get("answer", "a") is not None
    cache.set("answer", "short", b"s", ttl=0)
    time.sleep(0.01)
    assert cache.get("answer", "short") is None
    assert counted(c, "memory", "answer", "hit") == 4 and counted(c, "memory", "answer", "miss") == 3


def test_redis_cache_keeps_values_and_fields_with_a_ttl(server):
    c = metrics()
    cache = RedisCache(c.count_cache, server.url, KEY)
    assert cache.get("state", "v1") is None
    cache.set("state", "v1", b"\x00state", ttl=100)
    assert cache.get("state", "v1") == b"\x00state"
    cache.set_fields("conditioning", "v1", {"realgdp": b"1", "unemp": b"2"}, ttl=100)
    cache.set_fields("conditioning", "v1", {"realgdp": b"3"}, ttl=200)
    assert cache.get_fields("conditioning", "v1") == {"realgdp": b"3", "unemp": b"2"}
    direct = server.client()
    assert 0 < direct.ttl(PREFIX + "state:v1") <= 100
    assert 100 < direct.ttl(PREFIX + "conditioning:v1") <= 200
    assert counted(c, "redis", "state", "miss") == 1 and counted(c, "redis", "state", "hit") == 1


def test_an_entry_not_tagged_with_the_key_is_refused_counted_and_never_returned(server):
    """Whoever reaches Redis without PEFM_CACHE_KEY (its password leaked, ingest's pods, the server
    itself) cannot make a replica use an entry: one written without a tag, one whose bytes changed,
    one tagged with another key or moved under another key (or field, or from a hash to a string) is
    refused and counted, and the replica computes it again (a hash keeps its good fields and loses
    the others); nothing refused counts as one to start from (``exists``); a process without the
    key cannot read or write entries at all."""
    c = metrics()
    cache = RedisCache(c.count_cache, server.url, KEY)
    direct = server.client()
    cache.set("answer", "a", b"the answer", ttl=100)
    cache.set("answer", "b", b"another answer", ttl=100)
    cache.set_fields("conditioning", "v1", {"realgdp": b"1", "unemp": b"2"}, ttl=100)
    stored = direct.get(PREFIX + "answer:a")
    assert stored.endswith(b"the answer") and len(stored) == len(b"the answer") + 32
    forged = {
        "untagged": b"a forged answer",
        "changed": stored[:-6] + b"FORGED",
        "moved": direct.get(PREFIX + "answer:b"),
        "other key": RedisCache(None, server.url, "o" * 32)._tagged(f"s:{PREFIX}answer:a", b"a forged answer"),
    }
    for value in forged.values():
        direct.set(PREFIX + "answer:a", value)
        assert cache.get("answer", "a") is None
    assert counted(c, "redis", "answer", "refused") == len(forged) and counted(c, "redis", "answer", "hit") == 0
    realgdp = direct.hget(PREFIX + "conditioning:v1", "realgdp")
    direct.hset(PREFIX + "conditioning:v1", "unemp", realgdp)  # moved to another field: refused, and deleted
    assert cache.get_fields("conditioning", "v1") == {"realgdp": b"1"}
    assert counted(c, "redis", "conditioning", "refused") == 1
    assert not direct.hexists(PREFIX + "conditioning:v1", "unemp")
    assert cache.get_fields("conditioning", "v1") == {"realgdp": b"1"}  # left clean: nothing refused again
    assert counted(c, "redis", "conditioning", "refused") == 1 and counted(c, "redis", "conditioning", "hit") == 1
    direct.hset(PREFIX + "conditioning:v1", "unemp", b"junk")  # refused by one replica's read, then
    cache.set_fields("conditioning", "v1", {"unemp": b"2"}, ttl=100)  # another's good write before its delete
    cache._drop(PREFIX + "conditioning:v1", {b"unemp": b"junk"})
    assert cache.get_fields("conditioning", "v1") == {"realgdp": b"1", "unemp": b"2"}  # the good one kept
    direct.set(PREFIX + "conditioning:v1\0realgdp", realgdp)  # a field moved to a string of its name
    assert cache.get("conditioning", "v1\0realgdp") is None
    assert not cache.exists("answer", "a")  # the forged entry last written there: not one to start from
    cache.set("answer", "a", b"the answer", ttl=100)  # computed again, tagged
    assert cache.get("answer", "a") == b"the answer" and cache.exists("answer", "a")
    keyless = RedisCache(None, server.url, None)
    with pytest.raises(RuntimeError, match="PEFM_CACHE_KEY"):
        keyless.get("answer", "a")
    with pytest.raises(RuntimeError, match="PEFM_CACHE_KEY"):
        keyless.set("answer", "a", b"x", ttl=100)


def test_a_process_keeping_entries_in_redis_needs_the_key_and_ingest_does_not():
    from pefm.config import ConfigError, Settings
    from pefm.serving.cache import open_cache

    settings = Settings(redis_url="redis://127.0.0.1:9/0")
    with pytest.raises(ConfigError, match="PEFM_CACHE_KEY"):
        open_cache(settings, None)
    assert isinstance(open_cache(settings, None, entries=False), RedisCache)  # rate limits, announcements
    assert isinstance(open_cache(Settings(), None), MemoryCache)


def test_redis_away_is_asked_once_then_not_until_it_is_tried_again(server):
    c = metrics()
    cache = RedisCache(c.count_cache, server.url, KEY)
    cache.set("answer", "k", b"v", ttl=100)
    server.kill()
    asked = []
    real_get = cache._client.get
    cache._client.get = lambda *args: asked.append(args) or real_get(*args)  # a spy on the real client
    assert cache.get("answer", "k") is None  # refused on loopback: the breaker opens
    for _ in range(100):  # open: Redis is not asked, each lookup is counted as an error
        assert cache.get("answer", "k") is None
    assert len(asked) == 1
    assert counted(c, "redis", "answer", "error") == 101
    server.start()  # the same port, empty
    time.sleep(RETRY_SECONDS)
    cache.set("answer", "k", b"again", ttl=100)
    assert cache.get("answer", "k") == b"again"


def test_announcements_reach_a_listener_and_a_lost_channel_says_everything_may_have_changed(server):
    cache = RedisCache(None, server.url, None)  # as ingest has it: no key, no entries
    heard: list[str | None] = []
    stopping = threading.Event()
    listener = threading.Thread(target=cache.listen, args=(OBSERVATIONS, heard.append, stopping), daemon=True)
    listener.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(heard) < n and time.monotonic() < deadline:
            if server.process is not None:
                cache.publish(OBSERVATIONS, '{"series": ["realgdp"]}')
            time.sleep(0.2)

    wait_for(1)  # published until the subscription is in place
    assert heard[0] == '{"series": ["realgdp"]}'
    import redis  # a forged announcement that is not UTF-8 had ended the listener for good

    with redis.Redis.from_url(server.url) as client:
        client.publish(OBSERVATIONS, b"\xff")
    wait_for(len(heard) + 2)
    assert "\ufffd" in heard and heard[-1] == '{"series": ["realgdp"]}' and listener.is_alive()
    server.kill()
    time.sleep(0.5)
    server.start()
    heard.clear()
    wait_for(2)
    stopping.set()
    assert heard[0] is None, heard  # resubscribed: what was sent meanwhile is lost
    assert '{"series": ["realgdp"]}' in heard[1:]
    listener.join(5)


def test_request_counts_are_per_key_and_window_in_memory_and_in_redis(server):
    for cache in (MemoryCache(None, max_bytes=1000), RedisCache(None, server.url, None)):
        if time.time() % 2 > 1.5:  # a 2 s window: not across its end
            time.sleep(0.6)
        assert [cache.count_request("alice", 2) for _ in range(3)] == [1, 2, 3]
        assert cache.count_request("bob", 2) == 1
        time.sleep(2.0)  # the next window
        assert cache.count_request("alice", 2) == 1
    server.kill()
    assert RedisCache(None, server.url, None).count_request("alice", 2) is None  # away: no count, no refusal


def test_a_process_counts_a_bounded_number_of_callers_and_a_flood_shares_one_budget(monkeypatch):
    """Without Redis the counts live in the process: past windows' counts are dropped, and callers
    beyond the bound within a window (a flood of addresses) count as one, so the map neither grows
    without end nor hands each new address a fresh budget."""
    import pefm.serving.cache

    monkeypatch.setattr(pefm.serving.cache, "RATE_CALLERS", 3)
    cache = MemoryCache(None, max_bytes=1000)
    if time.time() % 2 > 1.5:  # a 2 s window: not across its end
        time.sleep(0.6)
    assert [cache.count_request(f"a{i}", 2) for i in range(3)] == [1, 1, 1]
    assert [cache.count_request(f"flood{i}", 2) for i in range(4)] == [1, 2, 3, 4]  # one budget, shared
    assert cache.count_request("a0", 2) == 2  # counted callers keep theirs
    time.sleep(2.0)  # the next window: the past one's counts go
    assert [cache.count_request(f"b{i}", 2) for i in range(3)] == [1, 1, 1]
    assert len(cache._windows) == 3  # this window's callers only
