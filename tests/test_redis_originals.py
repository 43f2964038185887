"""RedisOriginals against a real redis-server: handles, tenant isolation, the owner pointer."""

import time

import pytest
import redis

from headroom_core.originals import handle_for
from headroom_runtime.degrade import Degradations
from headroom_runtime.diskoriginals import Originals as DiskOriginals
from headroom_runtime.redisconn import RedisConn
from tests.redis_server import eventually
from headroom_runtime.redisoriginals import RedisOriginals

SALT = b"0123456789abcdef"
T, U = "t:aaaaaaaaaaaaaaaaaaaaaaaa", "t:bbbbbbbbbbbbbbbbbbbbbbbb"
TEXT = "line 1\nline 2 — ünïcödé \U0001f600\n" * 100


@pytest.fixture
def originals(redis_url):
    return RedisOriginals(RedisConn(redis_url))


@pytest.fixture
def raw(redis_url):
    return redis.Redis.from_url(redis_url)


def test_put_get_round_trip(originals):
    h = originals.put(T, TEXT, salt=SALT)
    assert h == handle_for(SALT, T, TEXT)
    assert originals.get(h) == TEXT
    assert originals.get(h, tenant=T) == TEXT
    assert originals.put(T, TEXT, salt=SALT) == h  # idempotent


def test_same_bytes_as_the_disk_store(originals, raw, tmp_path):
    h = originals.put(T, TEXT, salt=SALT)
    with DiskOriginals(tmp_path / "o") as disk:
        disk.put(T, TEXT, salt=SALT)
        on_disk = disk._cache.get(h)
    assert raw.get(f"headroom:{{{T}}}:orig:{h}") == on_disk
    assert raw.get(f"headroom:orig:{h}") == T.encode()


def test_tenant_isolation(originals, raw):
    h = originals.put(T, TEXT, salt=SALT)
    assert originals.get(h, tenant=U) is None
    hu = originals.put(U, "theirs", salt=SALT)
    assert hu != h
    assert originals.get(hu, tenant=T) is None and originals.get(hu) == "theirs"
    # A pointer rewritten to another tenant leads to that tenant's slot, where nothing is kept.
    raw.set(f"headroom:orig:{h}", U)
    assert originals.get(h) is None
    # T's value copied under U's slot: the value names T as its owner, so U never gets it.
    raw.set(f"headroom:{{{U}}}:orig:{h}", raw.get(f"headroom:{{{T}}}:orig:{h}"))
    assert originals.get(h, tenant=U) is None and originals.get(h) is None
    assert originals.get(h, tenant=T) == TEXT


def test_bad_handles(originals):
    for h in ("", "x", "A" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, None, 5):
        assert originals.get(h) is None


def test_ttl(redis_url, raw):
    o = RedisOriginals(RedisConn(redis_url), ttl=1.0)  # (a margin for a loaded machine)
    h = o.put(T, TEXT, salt=SALT)
    assert 0 < raw.pttl(f"headroom:orig:{h}") <= 1000
    assert 0 < raw.pttl(f"headroom:{{{T}}}:orig:{h}") <= 1000
    time.sleep(1.1)
    assert o.get(h) is None and o.get(h, tenant=T) is None
    assert raw.dbsize() == 0
    assert RedisOriginals(RedisConn(redis_url), ttl=None).put(T, "x", salt=SALT)
    assert all(raw.pttl(k) == -1 for k in raw.keys())


def test_shared_between_instances(redis_url):
    a, b = RedisOriginals(RedisConn(redis_url)), RedisOriginals(RedisConn(redis_url))
    h = a.put(T, TEXT, salt=SALT)
    assert b.get(h) == TEXT


def test_redis_down(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.3)
    o = RedisOriginals(conn)
    h = o.put(T, TEXT, salt=SALT)
    redis_proc.stop()
    for _ in range(10):
        t0 = time.monotonic()
        assert o.get(h) is None and o.get(h, tenant=T) is None
        with pytest.raises(redis.exceptions.ConnectionError):
            o.put(T, "new", salt=SALT)  # nothing may point at an original that was not kept
        assert time.monotonic() - t0 < 0.5
    assert degrade.status["originals"].startswith("unavailable")
    redis_proc.start()
    eventually(lambda: not conn.breaker.open)
    h2 = o.put(T, "new", salt=SALT)
    assert o.get(h2) == "new" and degrade.status["originals"] == "ok"
