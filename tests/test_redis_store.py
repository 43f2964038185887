"""RedisStore against a real redis-server: byte-exact frames, TTLs, tenant isolation, faults."""

import logging
import threading
import time

import orjson
import pytest
import redis

from headroom_core import cachekey
from headroom_core.store import Entry, decode_entry, encode_entry
from headroom_core.store import nearest as store_nearest
from headroom_runtime.degrade import Degradations
from headroom_runtime.diskstore import ResponseStore, entry_meta
from headroom_runtime.redisconn import RedisConn
from tests.redis_server import eventually
from headroom_runtime.redisstore import META_PEEK, RedisStore

A, B = "t:aaaaaaaaaaaaaaaaaaaaaaaa", "t:bbbbbbbbbbbbbbbbbbbbbbbb"
BINARY = bytes(range(256)) * 64


def canonical(tenant=A, content="hi", model="claude-x"):
    return cachekey.canonical_request(
        provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
        path="/v1/messages", fields=[(b"content-type", b"application/json")],
        body=orjson.dumps({"model": model, "messages": [{"role": "user", "content": content}]}),
        tenant=tenant)


def sse_entry(tenant=A, **kw):
    chunks = [(0.0, b"event: message_start\ndata: {}\n\n"), (0.25, b"data: \xff\xfe\x00\r\n\n"),
              (1.5, b"event: message_stop\ndata: {}\n\n")]
    return Entry(200, [(b"Content-Type", b"text/event-stream"), (b"date", b"x"),
                       (b"x-ratelimit-remaining", b"3"), (b"X-Odd", b"\x80\xff")],
                 chunks=chunks, request=canonical(tenant, **kw))


def key_of(entry):
    return cachekey.request_key(entry.request)


@pytest.fixture
def conn(redis_url):
    c = RedisConn(redis_url)
    yield c
    c.close()


@pytest.fixture
def store(conn):
    return RedisStore(conn)


@pytest.fixture
def raw(conn):
    return conn.client


def test_sse_round_trip_is_byte_exact(store):
    e = sse_entry()
    k = key_of(e)
    assert store.put(k, e, complete=True)
    got = store.get(k, tenant=A)
    assert got.chunks == e.chunks and got.body == e.body
    assert got.headers == [(b"Content-Type", b"text/event-stream"), (b"X-Odd", b"\x80\xff")]
    assert got.request == e.request
    assert got.meta["tenant"] == A and got.meta["chunks"] == 3 and got.meta["duration_s"] == 1.5
    assert store.get(k, tenant=A, with_request=False).request is None
    assert store.get(k).body == e.body  # through the tenant-free index


def test_binary_body_round_trip(store):
    e = Entry(201, [(b"content-type", b"application/octet-stream")], BINARY,
              request=canonical(content="bin"))
    k = key_of(e)
    assert store.put(k, e, complete=True)
    got = store.get(k, tenant=A)
    assert (got.status, got.body, got.chunks) == (201, BINARY, None)


def test_values_are_the_disk_stores_frames(store, raw, tmp_path):
    e = sse_entry()
    e.meta = {"created": 1700000000.0, "session_id": "s1", "usage": {"input_tokens": 3}}
    k = key_of(e)
    assert store.put(k, e, complete=True)
    with ResponseStore(tmp_path / "disk") as disk:
        assert disk.put(k, e, complete=True)
        on_disk = disk._cache.get(k)
    in_redis = raw.get(f"headroom:{{{A}}}:store:{k}")
    assert in_redis == on_disk
    stored = Entry(e.status, e.headers[:1] + e.headers[3:], e.body, e.chunks, e.request, e.meta)
    assert in_redis == encode_entry(stored, entry_meta(stored))
    assert decode_entry(in_redis).body == e.body


def test_refusals(store, raw):
    e = sse_entry()
    assert not store.put(key_of(e), e, complete=False)
    bad = Entry(500, [], b"oops", request=canonical())
    assert not store.put(key_of(bad), bad, complete=True)
    assert not store.put("", e, complete=True)
    anon = Entry(200, [], b"x")  # no request, no tenant: cannot be namespaced
    assert not store.put("k", anon, complete=True)
    assert not store.put(key_of(e), e, complete=True, tenant=B)  # e was recorded for A
    assert store.put("k", anon, complete=True, tenant=B)
    assert store.get("k", tenant=B).body == b"x"
    assert raw.dbsize() == 2  # the value and its index entry only


def test_ttl_expiry(conn, raw):
    store = RedisStore(conn, ttl_seconds=1.0)  # (a margin for a loaded machine)
    e = sse_entry()
    k = key_of(e)
    assert store.put(k, e, complete=True)
    assert 0 < raw.pttl(f"headroom:{{{A}}}:store:{k}") <= 1000
    assert 0 < raw.pttl(f"headroom:storeidx:{k}") <= 1000
    assert store.get(k) is not None
    time.sleep(1.15)
    assert store.get(k) is None and store.get(k, tenant=A) is None
    assert raw.dbsize() == 0


def test_no_ttl_means_no_expiry(store, raw):
    e = sse_entry()
    store.put(key_of(e), e, complete=True)
    assert raw.pttl(f"headroom:{{{A}}}:store:{key_of(e)}") == -1


def test_tenant_isolation(store, raw):
    ea, eb = sse_entry(A), sse_entry(B, content="other")
    ka, kb = key_of(ea), key_of(eb)
    assert ka != kb  # the tenant is part of the request key
    store.put(ka, ea, complete=True)
    store.put(kb, eb, complete=True)
    assert store.get(ka, tenant=B) is None and store.meta(ka, tenant=B) is None
    assert store.get(kb, tenant=A) is None
    assert [k for k, _ in store.entries(tenant=A)] == [ka]
    assert [k for k, _ in store.entries(tenant=B)] == [kb]
    assert list(store.keys(tenant=B)) == [kb]
    assert not store.delete(ka, tenant=B)
    assert store.get(ka, tenant=A) is not None
    # A forged index entry points at B's slot, where A's key does not exist.
    raw.set(f"headroom:storeidx:{ka}", B)
    assert store.get(ka) is None
    # A's frame copied into B's slot: the frame names its tenant, so B is never served it.
    raw.set(f"headroom:{{{B}}}:store:{ka}", raw.get(f"headroom:{{{A}}}:store:{ka}"))
    assert store.get(ka, tenant=B) is None and store.get(ka) is None


def test_same_key_same_store_for_two_instances(redis_url):
    one, two = RedisStore(RedisConn(redis_url)), RedisStore(RedisConn(redis_url))
    e = sse_entry()
    assert one.put(key_of(e), e, complete=True)
    assert two.get(key_of(e), tenant=A).chunks == e.chunks
    assert two.get(key_of(e)).chunks == e.chunks


def test_meta_and_entries_read_headers_only(store, raw):
    e = sse_entry()
    k = key_of(e)
    store.put(k, e, complete=True)
    meta = store.meta(k)
    assert meta == store.meta(k, tenant=A)
    assert meta["provider"] == "anthropic" and meta["model"] == "claude-x"
    assert meta["body_bytes"] == len(e.body) and meta["status"] == 200
    assert k in store and "nope" not in store
    assert dict(store.entries()) == {k: meta}


def test_meta_of_a_header_longer_than_the_peek(store):
    big = [(b"x-h%d" % i, b"v" * 500) for i in range(40)]
    e = Entry(200, big, b"body", request=canonical())
    k = key_of(e)
    store.put(k, e, complete=True)
    assert len(str(big)) > META_PEEK
    assert store.meta(k)["body_bytes"] == 4
    assert dict(store.entries())[k]["body_bytes"] == 4


def test_entries_scan_many_across_tenants(store, raw):
    want = {}
    for i in range(1300):
        t = A if i % 2 else B
        e = Entry(200, [], b"%d" % i, request=canonical(t, content=f"q{i}"))
        assert store.put(key_of(e), e, complete=True)
        want[key_of(e)] = t
    got = dict(store.entries())
    assert {k: m["tenant"] for k, m in got.items()} == want
    assert len(list(store.entries(tenant=A))) == 650
    assert sorted(store.keys()) == sorted(want)
    assert store.volume() >= sum(len(b"%d" % i) for i in range(1300))
    assert store.clear() == 1300
    assert raw.dbsize() == 0


def test_damaged_entries_are_dropped(store, raw):
    e = sse_entry()
    k = key_of(e)
    store.put(k, e, complete=True)
    rkey = f"headroom:{{{A}}}:store:{k}"
    frame = raw.get(rkey)
    raw.set(rkey, frame[:-1] + bytes([frame[-1] ^ 1]))
    assert store.get(k) is None
    assert not raw.exists(rkey) and not raw.exists(f"headroom:storeidx:{k}")
    raw.set(f"headroom:{{{A}}}:store:junk", b"not a frame")
    assert store.meta("junk", tenant=A) is None
    assert store.prune() == 1 and not raw.exists(f"headroom:{{{A}}}:store:junk")


def test_prune(store, raw):
    old = sse_entry(content="old")
    old.meta = {"created": time.time() - 3600}
    new = sse_entry(content="new")
    other = sse_entry(B, content="b")
    for e in (old, new, other):
        store.put(key_of(e), e, complete=True)
    raw.set("headroom:storeidx:dangling", A)
    assert store.prune() == 0
    assert not raw.exists("headroom:storeidx:dangling")  # its value is gone
    assert store.prune(older_than=60) == 1
    assert store.get(key_of(old)) is None and store.get(key_of(new)) is not None
    assert not raw.exists(f"headroom:storeidx:{key_of(old)}")
    assert store.prune(provider="openai") == 0
    assert store.prune(tenant=B) == 1
    assert [k for k, _ in store.entries()] == [key_of(new)]


def test_nearest_looks_at_one_tenant_only(store):
    mine = sse_entry(A, content="hello there")
    theirs = sse_entry(B, content="hello there!")
    store.put(key_of(mine), mine, complete=True)
    store.put(key_of(theirs), theirs, complete=True)
    key, meta, diff = store.nearest(canonical(A, content="hello there?"))
    assert key == key_of(mine) and meta["tenant"] == A and diff
    assert store.nearest(canonical("t:cccccccccccccccccccccccc", content="hello there")) is None


def test_concurrent_puts_and_gets(redis_url):
    stores = [RedisStore(RedisConn(redis_url)) for _ in range(2)]
    errors = []

    def work(n):
        s = stores[n % 2]
        try:
            for i in range(30):
                e = Entry(200, [], b"%d-%d" % (n, i), request=canonical(content=f"{n}-{i}"))
                assert s.put(key_of(e), e, complete=True)
                assert s.get(key_of(e), tenant=A).body == e.body
        except Exception as ex:  # pragma: no cover - reported below
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(stores[0].keys())) == 240


# --- faults ----------------------------------------------------------------------------------


def test_redis_killed_reads_none_writes_false_quickly_then_recovers(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.3)
    store = RedisStore(conn, ttl_seconds=60)
    e = sse_entry()
    k = key_of(e)
    assert store.put(k, e, complete=True)
    assert store.available
    redis_proc.stop()
    for _ in range(20):
        t0 = time.monotonic()
        assert store.get(k) is None
        assert not store.available
        assert store.get(k, tenant=A) is None
        assert store.meta(k) is None
        assert not store.put(k, e, complete=True)
        assert list(store.entries()) == [] and not store.delete(k)
        assert time.monotonic() - t0 < 0.5
    assert degrade.status["store"].startswith("unavailable")
    redis_proc.start()  # empty again (no persistence), same address
    eventually(lambda: not conn.breaker.open)
    assert store.available
    assert store.put(k, e, complete=True)  # the same object, no re-creation
    assert store.get(k).body == e.body
    assert degrade.status["store"] == "ok" and degrade.status["redis"] == "ok"


def test_an_outage_is_logged_once_per_part(redis_proc, caplog):
    store = RedisStore(RedisConn(redis_proc.url, degrade=Degradations()))
    e = sse_entry()
    redis_proc.stop()
    with caplog.at_level(logging.DEBUG):
        for _ in range(50):
            assert store.get(key_of(e), tenant=A) is None
            assert not store.put(key_of(e), e, complete=True)
            assert store.nearest(e.request) is None  # replay mode's miss explanation
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split()[0] for r in warnings] == ["headroom_degraded"] * 2
    assert {'"part":"store"', '"part":"redis"'} == {
        m for r in warnings for m in ('"part":"store"', '"part":"redis"') if m in r.getMessage()}


def test_stalled_redis_costs_one_timeout(redis_proc):
    conn = RedisConn(redis_proc.url, cooldown=5)
    store = RedisStore(conn)
    e = sse_entry()
    store.put(key_of(e), e, complete=True)
    redis_proc.pause()
    try:
        t0 = time.monotonic()
        assert store.get(key_of(e), tenant=A) is None
        first = time.monotonic() - t0
        assert 0.2 <= first < 1.0  # the socket timeout, once
        t0 = time.monotonic()
        for _ in range(100):
            assert store.get(key_of(e), tenant=A) is None
            assert not store.put(key_of(e), e, complete=True)
        assert time.monotonic() - t0 < 0.5  # fail fast: no network while the breaker is open
    finally:
        redis_proc.resume()


def test_reads_never_raise_on_a_wrong_type(store, raw):
    e = sse_entry()
    k = key_of(e)
    raw.rpush(f"headroom:{{{A}}}:store:{k}", b"x")
    assert store.get(k, tenant=A) is None
    assert store.meta(k, tenant=A) is None
    with pytest.raises(redis.exceptions.ResponseError):
        raw.get(f"headroom:{{{A}}}:store:{k}")


# --- the same surface as the disk store -------------------------------------------------------


@pytest.fixture(params=["disk", "redis"])
def either(request, tmp_path):
    if request.param == "disk":
        with ResponseStore(tmp_path / "disk") as s:
            yield s
    else:
        yield RedisStore(RedisConn(request.getfixturevalue("redis_url")))


def test_both_stores_honour_the_tenant_keyword(either):
    ea, eb = sse_entry(A), sse_entry(B, content="b")
    ka, kb = key_of(ea), key_of(eb)
    assert either.put(ka, ea, complete=True) and either.put(kb, eb, complete=True, tenant=B)
    assert either.get(ka, tenant=A).body == ea.body and either.get(ka).body == ea.body
    assert either.get(ka, tenant=B) is None and either.meta(ka, tenant=B) is None
    assert either.meta(ka, tenant=A)["tenant"] == A
    assert [k for k, _ in either.entries(tenant=B)] == [kb]
    assert sorted(k for k, _ in either.entries()) == sorted([ka, kb])
    assert not either.delete(ka, tenant=B) and either.get(ka) is not None
    assert either.delete(ka, tenant=A) and either.get(ka) is None
    key, _, _ = store_nearest(either, canonical(B, content="c"))
    assert key == kb
    assert store_nearest(either, canonical(A, content="b")) is None  # B's is not A's
