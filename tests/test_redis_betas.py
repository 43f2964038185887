"""RedisBetaMemory against a real redis-server: LocalBetaMemory's semantics, shared by instances,
an empty memory when Redis is down."""

import random
import threading
import time

import pytest
import redis

from headroom_core.beta import LocalBetaMemory, StickyBetas, merge_tokens, sticky_key
from headroom_runtime.degrade import Degradations
from headroom_runtime.redisbetas import RedisBetaMemory
from headroom_runtime.redisconn import RedisConn
from tests.redis_server import eventually

SESSION = sticky_key("0b3c1e9a-session", "messages", "claude-x")


@pytest.fixture
def memory(redis_url):
    return RedisBetaMemory(RedisConn(redis_url))


@pytest.fixture
def raw(redis_url):
    return redis.Redis.from_url(redis_url)


def test_protocol_basics(memory):
    assert memory.shared is True
    assert memory.get(SESSION) == []
    assert memory.extend(SESSION, ["a-1", "B-2"], 64) == ["a-1", "B-2"]
    assert memory.extend(SESSION, ["b-2", "c-3", "A-1"], 64) == ["a-1", "B-2", "c-3"]
    assert memory.get(SESSION) == ["a-1", "B-2", "c-3"]
    assert memory.remove(SESSION, " B-2 ") and not memory.remove(SESSION, "b-2")
    assert memory.get(SESSION) == ["a-1", "c-3"]
    assert len(memory) == 1
    memory.forget(SESSION)
    assert memory.get(SESSION) == [] and len(memory) == 0


def test_limit(memory):
    assert memory.extend(SESSION, [f"t{i}" for i in range(10)], 4) == ["t0", "t1", "t2", "t3"]
    assert memory.extend(SESSION, ["t9"], 4) == ["t0", "t1", "t2", "t3"]


def test_same_answers_as_local_memory(memory):
    rng = random.Random(7)
    pool = ["ctx-1", "CTX-1", "tools-2", "Ünï-3", "x=y", "oauth-2025", "a", "B", "b"]
    local = LocalBetaMemory()
    for _ in range(400):
        key = rng.choice(["s1", "s2", "s3"])
        op = rng.random()
        if op < 0.5:
            # StickyBetas passes merged (case-insensitively unique) tokens.
            toks = merge_tokens(rng.sample(pool, rng.randint(0, 4)))
            limit = rng.randint(1, 6)
            assert memory.extend(key, toks, limit) == local.extend(key, toks, limit)
        elif op < 0.75:
            t = rng.choice(pool)
            assert memory.remove(key, t) == local.remove(key, t)
        elif op < 0.8:
            memory.forget(key)
            local.forget(key)
        assert memory.get(key) == local.get(key)


def test_keys_hold_no_session_id_and_expire(redis_url, raw):
    m = RedisBetaMemory(RedisConn(redis_url), ttl=1.5)
    m.extend(SESSION, ["a"], 8)
    keys = raw.keys()
    assert len(keys) == 1 and b"session" not in keys[0]
    assert keys[0].startswith(b"headroom:beta:")
    time.sleep(1.0)
    m.get(SESSION)  # use renews it
    assert raw.pttl(keys[0]) > 1000
    time.sleep(1.0)  # past the first expiry: alive only if renewed
    assert m.get(SESSION) == ["a"]
    time.sleep(1.8)
    assert m.get(SESSION) == []


def test_sticky_betas_across_two_instances(redis_url):
    a = StickyBetas(memory=RedisBetaMemory(RedisConn(redis_url)))
    b = StickyBetas(memory=RedisBetaMemory(RedisConn(redis_url)))
    # Turn 1 on instance A sends a token; turn 2 on instance B drops it: B re-sends it.
    assert a.apply(SESSION, True, ["tool-use-2025"]).tokens == ["tool-use-2025"]
    d = b.apply(SESSION, True, [])
    assert d.tokens == ["tool-use-2025"] and d.added == ["tool-use-2025"] and d.changed
    # Turn 3 back on A, the same request as before: not answered from a stale memo.
    b.reject(SESSION, "tool-use-2025")
    assert a.apply(SESSION, True, []).tokens == []


def test_concurrent_extends_keep_order_and_bound(redis_url):
    memories = [RedisBetaMemory(RedisConn(redis_url)) for _ in range(4)]
    barrier = threading.Barrier(16)

    def add(n):
        barrier.wait()
        memories[n % 4].extend(SESSION, [f"t{n}", f"T{(n + 1) % 16}", "shared"], 10)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = memories[0].get(SESSION)
    assert len(got) == 10 and len({t.lower() for t in got}) == 10 and "shared" in got


def test_redis_down_is_an_empty_memory(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.3)
    m = RedisBetaMemory(conn)
    sticky = StickyBetas(memory=m)
    sticky.apply(SESSION, True, ["kept-1"])
    redis_proc.stop()
    for _ in range(10):
        t0 = time.monotonic()
        assert m.get(SESSION) == []
        assert m.extend(SESSION, ["a", "A", "b"], 64) == ["a", "b"]
        assert not m.remove(SESSION, "a")
        m.forget(SESSION)
        assert len(m) == 0
        d = sticky.apply(SESSION, True, ["client-1"])  # only the client's own tokens
        assert d.tokens == ["client-1"] and not d.changed
        assert time.monotonic() - t0 < 0.5
    assert degrade.status["betas"].startswith("unavailable")
    redis_proc.start()
    eventually(lambda: not conn.breaker.open)
    sticky.apply(SESSION, True, ["again-1"])
    assert sticky.apply(SESSION, True, []).tokens == ["again-1"]
    assert degrade.status["betas"] == "ok"
