"""State in Redis (`headroom_redis`): options, the password, two runtimes sharing one Redis,
Redis down at start and mid-run, the offload rule, switching backends; no password anywhere."""

import json
import logging
import os

import orjson
import pytest
import redis

from headroom_core import options
from headroom_core.flow import RequestIn
from headroom_runtime import state as hstate
from headroom_runtime.redisbetas import RedisBetaMemory
from headroom_runtime.redissalt import SALT_KEY
from headroom_runtime.redisstore import RedisStore
from headroom_runtime.runtime import Runtime
from tests.addon_util import load_addon_module
from tests.redis_server import eventually

SECRET = "pw-Zq9-never-shown"
BODY = json.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}).encode()
FIELDS = [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json"),
          (b"X-Claude-Code-Session-Id", b"s1"), (b"anthropic-beta", b"b1,b2")]
JSON = [(b"content-type", b"application/json")]
RESP = b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":1}}'


def req(fid="f", fields=FIELDS, body=BODY, host="api.anthropic.com", path="/v1/messages",
        method="POST", reverse=False):
    return RequestIn(fid, method, "https", host, 443, path, fields, body, reverse)


def runtime(tmp_path, name, url, **values):
    values.setdefault("flush_interval", "0.01")
    return Runtime(options.make(dir=str(tmp_path / name), redis=url, **values))


def answer(rt, plan, body=RESP):
    rt.engine.mark_forwarded(plan.state)
    rt.finish_later(plan.state, status=200, fields=JSON, body=body)
    rt.flush()


# -- options and the password -------------------------------------------------------------------


def test_the_option_parses_to_a_target_whose_repr_hides_the_password():
    c = options.make(redis=f"redis://app:{SECRET}@cache.internal:6380/2")
    assert (c.redis.host, c.redis.port, c.redis.db, c.redis.username) == (
        "cache.internal", 6380, 2, "app")
    assert SECRET not in repr(c) and SECRET not in c.redis.display
    assert c.redis.display == "redis://app:***@cache.internal:6380/2"
    assert options.make().redis is None and options.make(redis="  ").redis is None


@pytest.mark.parametrize("url", [f"redis://app:{SECRET}@host:port/0", f"http://:{SECRET}@h/0",
                                 f"redis://:{SECRET}@h/0?bogus=1"])
def test_a_bad_url_names_the_option_and_never_the_password(url):
    with pytest.raises(options.ConfigError) as e:
        options.make(redis=url)
    assert str(e.value).startswith("headroom_redis: invalid value ") and SECRET not in str(e.value)


def test_the_password_from_a_file_or_the_environment(tmp_path, caplog):
    f = tmp_path / "pw"
    f.write_text(SECRET + "\nignored\n")
    f.chmod(0o600)
    c = options.make(redis="redis://h/0", redis_password_file=str(f))
    assert hstate.redis_password(c, {}) == SECRET
    assert hstate.redis_password(options.make(redis="redis://h/0"), {}) is None
    assert hstate.redis_password(options.make(redis="redis://h/0"),
                                 {hstate.PASSWORD_ENV: SECRET}) == SECRET
    f.chmod(0o644)
    caplog.set_level(logging.WARNING)
    hstate.redis_password(c, {})
    assert any("readable by other users" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url,file,env,why", [
    (f"redis://:{SECRET}@h/0", None, SECRET, "password given in a password in headroom_redis "
                                             "and in HEADROOM_REDIS_PASSWORD"),
    ("redis://h/0", "pw", SECRET, "headroom_redis_password_file and in HEADROOM_REDIS_PASSWORD"),
    ("redis://h/0", "missing", None, "cannot read it (FileNotFoundError)"),
    ("redis://h/0", "empty", None, "its first line is empty"),
])
def test_password_problems_are_config_errors_without_the_password(tmp_path, url, file, env, why):
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "empty").write_text("\n")
    c = options.make(redis=url, redis_password_file=str(tmp_path / file) if file else "")
    with pytest.raises(options.ConfigError) as e:
        hstate.redis_password(c, {hstate.PASSWORD_ENV: env} if env else {})
    assert why in str(e.value) and SECRET not in str(e.value)


def test_an_unreadable_password_file_stops_the_addon_at_startup(tmp_path, caplog):
    from mitmproxy.test import taddons

    mod = load_addon_module()
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path), headroom_redis="redis://127.0.0.1:1/0",
                       headroom_redis_password_file=str(tmp_path / "nope"))
        assert addon.failed.startswith("headroom_redis_password_file: invalid value ")
        assert addon.runtime is None
        addon.done()


# -- two runtimes, one Redis --------------------------------------------------------------------


def test_two_runtimes_share_recordings_betas_and_the_salt(tmp_path, redis_url):
    a = runtime(tmp_path, "a", redis_url, store_mode="cache")
    b = runtime(tmp_path, "b", redis_url, store_mode="cache")
    assert a.state.salt == b.state.salt and isinstance(a.state.store, RedisStore)
    assert isinstance(a.betas.memory, RedisBetaMemory) and a.state.backend == \
        f"redis {redis_url}"
    plan = a.engine.handle_request(req())
    assert plan.state.store_decision == "miss"
    answer(a, plan)
    hit = b.engine.handle_request(req("g"))
    assert hit.state.store_decision == "hit" and hit.response.body == RESP
    # A's session tokens are B's: a turn without the header gets them back on B
    later = b.engine.handle_request(req("h", [f for f in FIELDS if f[0] != b"anthropic-beta"]))
    assert later.state.decisions["beta"]["added"] == ["b1", "b2"]
    # every key is namespaced, and the tenant's keys carry its hash tag
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("*")]
    assert keys and all(k.startswith("headroom:") for k in keys)
    assert any(k.startswith("headroom:{t:") and ":store:" in k for k in keys)
    a.close()
    b.close()


def test_the_offload_rule_with_redis(tmp_path, redis_url):
    rt = runtime(tmp_path, "a", redis_url)
    assert rt.offload_request(req())  # sticky betas and the ledger live in Redis
    assert rt.offload_request(req(method="GET", path="/ccr/" + "0" * 32, body=b"",
                                  reverse=True))  # originals
    assert not rt.offload_request(req(host="example.com", path="/"))  # not an API host
    assert not rt.offload_request(req(method="GET", path="/headroom/health", body=b"",
                                      reverse=True))
    disk = Runtime(options.make(dir=str(tmp_path / "disk")))
    assert not disk.offload_request(req())  # SQLite readers never wait: inline
    rt.close()
    disk.close()


def test_switching_between_disk_and_redis_at_runtime(tmp_path, redis_url):
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="cache"))
    parts = rt.reconfigure(rt.config.replace(redis=options.make(redis=redis_url).redis))
    assert {"state", "store", "rewrite", "betas"} <= parts
    assert isinstance(rt.state.store, RedisStore) and rt.betas.memory.shared
    assert rt.engine.recorder.store is rt.state.store
    rt.reconfigure(rt.config.replace(store_ttl=60.0))
    assert rt.state.store.ttl_seconds == 60.0
    rt.reconfigure(rt.config.replace(ledger_ttl=3600.0))
    assert rt.state.ledger.lifetime == 3600.0
    rt.reconfigure(rt.config.replace(redis=None))
    assert rt.state.redis is None and not rt.betas.memory.shared
    rt.close()


# -- faults -------------------------------------------------------------------------------------


def test_redis_down_at_start_then_back(tmp_path, caplog, redis_factory):
    caplog.set_level(logging.INFO)
    server = redis_factory()  # not started yet
    rt = runtime(tmp_path, "a", server.url, store_mode="replay", namespace="ci")
    try:
        assert rt.state.salt_pending and rt.engine.rewriter is None
        assert rt.degrade.status["salt"] == "waiting for redis"
        plan = rt.engine.handle_request(req())
        assert plan.response.status == 503 and b"store is unavailable" in plan.response.body
        assert plan.state.store_decision == "store-unavailable"
        server.start()
        eventually(lambda: not rt.state.salt_pending, timeout=10)
        assert rt.engine.rewriter is not None and isinstance(rt.state.store, RedisStore)
        assert redis.Redis.from_url(server.url).get(SALT_KEY) == rt.state.salt
        assert (tmp_path / "a" / "redis-salt").read_bytes() == rt.state.salt
        assert rt.degrade.status["salt"] == "ok"
        miss = rt.engine.handle_request(req("g"))
        assert miss.response is None and miss.deferred is not None  # an ordinary replay miss
    finally:
        rt.close()
        server.close()


def test_passthrough_forwards_the_client_bytes_while_redis_is_down(tmp_path, redis_proc, caplog):
    rt = runtime(tmp_path, "a", redis_proc.url, store_mode="cache")
    answer(rt, rt.engine.handle_request(req()))
    redis_proc.stop()
    caplog.set_level(logging.WARNING)
    for i in range(20):
        plan = rt.engine.handle_request(req(f"d{i}", [f for f in FIELDS
                                                      if f[0] != b"anthropic-beta"]))
        assert plan.response is None and plan.body is None and plan.fields is None
        answer(rt, plan)
    said = [r.getMessage() for r in caplog.records]
    degraded = [m for m in said if "headroom_degraded" in m]
    parts = [orjson.loads(m.split(" ", 1)[1])["part"] for m in degraded]
    assert sorted(parts) == sorted(set(parts)) and {"redis", "store", "betas"} <= set(parts)
    assert not any("store_write_failed" in m for m in said)  # reported once, not per write
    redis_proc.start()
    eventually(lambda: rt.degrade.status.get("redis") == "ok", timeout=10)
    eventually(lambda: rt.engine.handle_request(req("u")).state.store_decision == "miss")
    rt.close()


def test_replay_with_redis_down_mid_run_answers_locally_then_recovers(tmp_path, redis_proc):
    rec = runtime(tmp_path, "rec", redis_proc.url, store_mode="record", namespace="ci")
    answer(rec, rec.engine.handle_request(req()))
    rec.close()
    rt = runtime(tmp_path, "rep", redis_proc.url, store_mode="replay", namespace="ci")
    assert rt.engine.handle_request(req("h1")).state.store_decision == "hit"
    redis_proc.pause()  # a Redis that accepts and never answers: one timeout, then fail fast
    try:
        plan = rt.engine.handle_request(req("h2"))
        assert plan.response.status == 503 and plan.deferred is None
        body = json.loads(plan.response.body)
        assert "store is unavailable" in body["error"]["message"]
    finally:
        redis_proc.resume()
    eventually(lambda: rt.engine.handle_request(req("h3")).state.store_decision == "hit",
               timeout=10)
    rt.close()


def test_a_copy_of_the_salt_covers_a_restart_while_redis_is_down(tmp_path, redis_proc):
    first = runtime(tmp_path, "a", redis_proc.url)
    salt = first.state.salt
    first.close()
    redis_proc.stop()
    again = runtime(tmp_path, "a", redis_proc.url)
    assert again.state.salt == salt and not again.state.salt_pending
    assert again.engine.rewriter is not None  # fails fast through the breaker until Redis is back
    redis_proc.start()  # empty: the salt in use goes back
    eventually(lambda: redis.Redis.from_url(redis_proc.url).get(SALT_KEY) == salt, timeout=10)
    again.close()


@pytest.mark.parametrize("loss", ["flushall", "restart"])
def test_a_salt_lost_under_running_instances_goes_back_and_a_new_one_agrees(
        tmp_path, redis_proc, monkeypatch, loss):
    # Neither is an outage the connection notices (a pooled socket reconnects quietly): an
    # instance started afterwards created a salt of its own, and the two derived different
    # tenant ids for the same key from then on (each missing the other's ledger and store).
    monkeypatch.setattr(hstate, "SALT_CHECK", 0.2)
    a = runtime(tmp_path, "a", redis_proc.url)
    try:
        salt = a.state.salt
        if loss == "flushall":
            redis.Redis.from_url(redis_proc.url).flushall()
        else:
            redis_proc.stop()
            redis_proc.start()  # empty, and `a` never saw it go
        eventually(lambda: redis.Redis.from_url(redis_proc.url).get(SALT_KEY) == salt,
                   timeout=10)
        c = runtime(tmp_path, "c", redis_proc.url)
        try:
            assert c.state.salt == salt
            tid = a.engine.handle_request(req()).state.tenant
            assert c.engine.handle_request(req("c")).state.tenant == tid
        finally:
            c.close()
    finally:
        a.close()


def test_health_sends_redis_no_scan(tmp_path, redis_proc):
    # It is answered on the event loop (a load balancer polls it): counting the sticky-beta
    # sessions there scanned the whole keyspace (0.5 s with a million keys of another app).
    rt = runtime(tmp_path, "a", redis_proc.url, store_mode="cache")
    try:
        answer(rt, rt.engine.handle_request(req()))
        r = redis.Redis.from_url(redis_proc.url)
        before = r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
        health = rt.health()
        assert health["memory"]["sticky_beta_sessions"] == "in redis"
        assert r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0) == before
    finally:
        rt.close()


# -- the password in no output ------------------------------------------------------------------


def test_no_password_in_health_logs_or_errors(tmp_path, caplog, redis_factory):
    caplog.set_level(logging.DEBUG)
    server = redis_factory(password=SECRET).start()
    try:
        pwfile = tmp_path / "pw"
        pwfile.write_text(SECRET)
        os.chmod(pwfile, 0o600)
        url = server.url.replace(f":{SECRET}@", "")
        rt = runtime(tmp_path, "a", url, store_mode="cache", redis_password_file=str(pwfile))
        assert not rt.state.salt_pending
        answer(rt, rt.engine.handle_request(req()))
        server.stop()
        rt.engine.handle_request(req("g"))
        health = json.dumps(rt.health())
        rt.close()
        # and a URL that carries it: accepted, warned about, still never shown
        rt = runtime(tmp_path, "b", f"redis://:{SECRET}@127.0.0.1:{server.port}/0")
        health += json.dumps(rt.health()) + repr(rt.config) + repr(rt.state)
        rt.close()
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "carries a password" in logged
        assert SECRET not in health and SECRET not in logged
        events = "".join(p.read_text() for p in tmp_path.rglob("events.jsonl"))
        assert events and SECRET not in events
    finally:
        server.close()


# -- with a cassette ------------------------------------------------------------------------------


def test_a_cassette_is_the_store_even_with_redis(tmp_path, redis_url):
    from headroom_runtime.cassettestore import CassetteStore

    cas = tmp_path / "cassette"
    rt = runtime(tmp_path, "a", redis_url, store_mode="record", cassette=str(cas))
    assert isinstance(rt.state.store, CassetteStore) and rt.state.ledger is not None
    answer(rt, rt.engine.handle_request(req()))
    assert list(cas.glob("*.json")), "recorded into the cassette"
    assert not [k for k in redis.Redis.from_url(redis_url).keys("*") if b":store:" in k]
    rt.close()
    again = runtime(tmp_path, "b", redis_url, store_mode="replay", cassette=str(cas))
    hit = again.engine.handle_request(req("g", [(b"x-api-key", b"sk-ant-api03-other"),
                                                *FIELDS[1:]]))
    assert hit.state.store_decision == "hit" and hit.response.body == RESP
    again.close()


def test_redis_down_at_start_a_cassette_still_replays_and_once_never_forwards(
        tmp_path, redis_url, redis_factory):
    cas = tmp_path / "cassette"
    rec = runtime(tmp_path, "a", redis_url, store_mode="record", cassette=str(cas))
    answer(rec, rec.engine.handle_request(req()))
    rec.close()
    server = redis_factory()  # never started: no salt for the run
    rt = runtime(tmp_path, "b", server.url, store_mode="replay", cassette=str(cas))
    assert rt.state.salt_pending
    hit = rt.engine.handle_request(req("g"))
    assert hit.state.store_decision == "hit" and hit.response.body == RESP
    rt.close()
    # `once` on a Redis store it cannot read yet: decided as replay, so nothing is forwarded
    once = runtime(tmp_path, "c", server.url, store_mode="once", namespace="ci")
    assert once.store_mode == "replay"
    plan = once.engine.handle_request(req("h"))
    assert plan.response is not None and plan.response.status == 503
    once.close()
