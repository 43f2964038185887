"""The tenant salt shared through Redis: instances agree, a local copy covers Redis being down."""

import os
import threading

import pytest
import redis

from headroom_core import tenant
from headroom_runtime.redisconn import RedisConn
from headroom_runtime.redissalt import SALT_KEY, load_salt


def test_created_once_and_shared(redis_url):
    a = load_salt(RedisConn(redis_url))
    b = load_salt(RedisConn(redis_url))
    assert a == b and len(a) == 16
    raw = redis.Redis.from_url(redis_url)
    assert raw.get(SALT_KEY) == a and raw.pttl(SALT_KEY) == -1


def test_instances_starting_at_once_agree(redis_url):
    conns = [RedisConn(redis_url) for _ in range(12)]
    barrier = threading.Barrier(len(conns))
    got = []

    def start(c):
        barrier.wait()
        got.append(load_salt(c))

    threads = [threading.Thread(target=start, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 12 and len(set(got)) == 1
    # ... so they derive the same tenant from the same credential.
    fields = [(b"x-api-key", b"sk-ant-api03-secret")]
    assert len({tenant.tenant_id(fields, s) for s in got}) == 1


def test_local_copy_when_redis_is_down(redis_proc, tmp_path):
    path = tmp_path / "redis-salt"
    conn = RedisConn(redis_proc.url, cooldown=0.1)
    salt = load_salt(conn, cache_path=path)
    assert path.read_bytes() == salt and (os.stat(path).st_mode & 0o777) == 0o600
    redis_proc.stop()
    assert load_salt(conn, cache_path=path) == salt
    with pytest.raises(redis.exceptions.ConnectionError):
        load_salt(conn)  # no copy: the caller decides


def test_a_new_shared_salt_replaces_the_copy(redis_url, tmp_path):
    path = tmp_path / "redis-salt"
    path.write_bytes(b"stale-salt-from-another-redis")
    redis.Redis.from_url(redis_url).set(SALT_KEY, b"the-shared-salt-0123")
    salt = load_salt(RedisConn(redis_url), cache_path=path)
    assert path.read_bytes() == salt == b"the-shared-salt-0123"


def test_a_redis_that_lost_its_data_gets_the_salt_in_use_back(redis_url, tmp_path):
    # Running instances keep their salt when Redis restarts empty: the copy (or the salt a
    # process uses) is put back, not a new random one that would change every tenant id.
    path = tmp_path / "redis-salt"
    conn = RedisConn(redis_url)
    salt = load_salt(conn, cache_path=path)
    redis.Redis.from_url(redis_url).flushall()
    assert load_salt(conn, cache_path=path) == salt
    redis.Redis.from_url(redis_url).flushall()
    assert load_salt(conn, prefer=b"p" * 16) == b"p" * 16
    assert redis.Redis.from_url(redis_url).get(SALT_KEY) == b"p" * 16
