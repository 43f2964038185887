"""The rewriter on the Redis ledger and originals: two instances forward the same bytes, a dead
Redis forwards the client's bytes unchanged; no credential in any Redis key or value."""

import copy
import threading

import orjson
import pytest
import redis

from headroom_core import cachekey, tenant
from headroom_core.beta import StickyBetas, sticky_key
from headroom_core.jsonspan import locate
from headroom_core.rewrite import RewritePolicy, Rewriter
from headroom_core.store import Entry, decode_entry
from headroom_runtime.redisbetas import RedisBetaMemory
from headroom_runtime.redisconn import RedisConn
from headroom_runtime.redisledger import RedisLedger
from headroom_runtime.redisoriginals import RedisOriginals
from headroom_runtime.redissalt import load_salt
from headroom_runtime.redisstore import RedisStore
from tests.redis_server import RedisServer
from tests.test_rewrite import LIVE1, FakePolicy, a_body, a_history, a_turn1_tail, \
    fake_compress, handle_of, turn2_messages

API_KEY = "sk-ant-api03-VERYSECRETvalue0123456789"
PASSWORD = "redis-pass-Zq9"


def instance(url, keep=40):
    """One Headroom's rewrite state: its own connection pool, the shared Redis."""
    conn = RedisConn(url, cooldown=0.3)
    salt = load_salt(conn)
    return Rewriter(RewritePolicy(compress_policy=FakePolicy(keep=keep)), RedisLedger(conn),
                    RedisOriginals(conn), salt, fake_compress)


def test_a_session_alternating_instances_forwards_one_instances_bytes(redis_url):
    # The instances even compress differently: replay, not the compressor, decides turn 2.
    a, b = instance(redis_url, keep=40), instance(redis_url, keep=200)
    raw1 = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    out1 = a.rewrite("anthropic", raw1, tenant="t:1").body
    assert out1 is not None
    raw2 = orjson.dumps(a_body(turn2_messages(a_turn1_tail())))
    res2 = b.rewrite("anthropic", raw2, tenant="t:1")
    assert [e["action"] for e in res2.manifest] == ["replayed", "compressed"]
    assert res2.body.startswith(out1[:-2])  # turn 1's bytes, byte for byte
    # The marker's original is retrievable from either instance, without a tenant.
    text = orjson.loads(out1)["messages"][2]["content"][0]["content"][0]["text"]
    h = handle_of(text)
    assert a.originals.get(h) == b.originals.get(h) == orjson.loads(raw1)[
        "messages"][2]["content"][0]["content"][0]["text"]


def test_concurrent_first_rewrites_forward_the_winners_bytes(redis_url):
    instances = [instance(redis_url, keep=20 + 10 * n) for n in range(6)]
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    barrier = threading.Barrier(len(instances))
    outs = []

    def go(rw):
        barrier.wait()
        outs.append(rw.rewrite("anthropic", raw, tenant="t:1").body)

    threads = [threading.Thread(target=go, args=(rw,)) for rw in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lits = {o[slice(*locate(o, [LIVE1])[LIVE1])] for o in outs}
    assert len(outs) == 6 and len(lits) == 1


def test_redis_down_forwards_the_client_bytes_unchanged(redis_proc):
    rw = instance(redis_proc.url)
    raw1 = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    assert rw.rewrite("anthropic", raw1, tenant="t:1").body is not None
    redis_proc.stop()
    tail = copy.deepcopy(a_turn1_tail())
    raw2 = orjson.dumps(a_body(turn2_messages(tail)))
    for raw in (raw1, raw2):
        res = rw.rewrite("anthropic", raw, tenant="t:1")
        assert res.body is None  # nothing that could bust the rewrite the ledger holds
        assert res.manifest[0]["reason"] == "ledger-unavailable"


def test_no_credential_in_any_key_or_value(tmp_path):
    from tests.conftest import _need_redis
    _need_redis()
    server = RedisServer(tmp_path / "r", password=PASSWORD).start()
    try:
        conn = RedisConn(server.url)
        salt = load_salt(conn)
        fields = [(b"x-api-key", API_KEY.encode()), (b"content-type", b"application/json")]
        t = tenant.tenant_id(fields, salt)
        assert t.startswith("t:") and API_KEY not in t
        # Every backend writes something for this tenant.
        canon = cachekey.canonical_request(
            provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
            path="/v1/messages", fields=fields, body=orjson.dumps(a_body(a_history())), tenant=t)
        store = RedisStore(conn)
        assert store.put(cachekey.request_key(canon), Entry(200, [], b"{}", request=canon),
                         complete=True)
        rw = Rewriter(RewritePolicy(), RedisLedger(conn), RedisOriginals(conn), salt,
                      fake_compress)
        assert rw.rewrite("anthropic", orjson.dumps(a_body(a_history() + a_turn1_tail())),
                          tenant=t).body is not None
        StickyBetas(memory=RedisBetaMemory(conn)).apply(
            sticky_key("session-1", "messages", "m"), True, ["beta-1"])
        raw = conn.client
        keys = list(raw.scan_iter(count=1000))
        tag = f"headroom:{{{t}}}:"
        for kind in (tag + "store:", tag + "ledger:", tag + "orig:", "headroom:storeidx:",
                     "headroom:orig:", "headroom:beta:", "headroom:salt", "headroom:ledger:"):
            assert any(k.decode().startswith(kind) for k in keys), kind
        secrets = [API_KEY, API_KEY[-12:], PASSWORD, "sk-ant"]
        for k in keys:
            for s in secrets:
                assert s.encode() not in k
            values = raw.lrange(k, 0, -1) if raw.type(k) == b"list" else [raw.get(k)]
            if b":store:" in k:  # the frame's request is zstd-compressed: look inside
                e = decode_entry(values[0])
                values.append(orjson.dumps([e.request, e.meta, e.headers], default=repr))
            for value in values:
                for s in secrets:
                    assert s.encode() not in value, (k, s)
    finally:
        server.close()


def test_wrong_password_is_an_unavailable_redis(tmp_path):
    from tests.conftest import _need_redis
    _need_redis()
    server = RedisServer(tmp_path / "r", password=PASSWORD).start()
    try:
        url = server.url.replace(PASSWORD, "not-it")
        with pytest.raises(redis.exceptions.AuthenticationError) as e:
            load_salt(RedisConn(url))
        assert PASSWORD not in str(e.value) and "not-it" not in str(e.value)
        assert RedisStore(RedisConn(url)).get("k") is None
    finally:
        server.close()
