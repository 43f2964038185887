"""redisconn: URL parsing and redaction, the breaker, the pool against a real redis-server."""

import ast
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from headroom_runtime.degrade import Degradations
from headroom_runtime.redisconn import Breaker, CircuitOpen, RedisConn, parse_url, redact, \
    tenant_key, tenant_tag
from tests.redis_server import RedisServer, eventually

SECRET = "s3cr3t-P@ss/word?x"

# --- URLs ------------------------------------------------------------------------------------


def test_parse_tcp_urls():
    t = parse_url("redis://cache.internal:6380/3")
    assert (t.scheme, t.host, t.port, t.db, t.username, t.password, t.tls) == \
        ("redis", "cache.internal", 6380, 3, None, None, False)
    t = parse_url("redis://localhost")
    assert (t.host, t.port, t.db) == ("localhost", 6379, 0)
    t = parse_url("rediss://alice:pw%3Aw@r.example.com/1?ssl_cert_reqs=none")
    assert (t.tls, t.username, t.password, t.db, t.ssl) == \
        (True, "alice", "pw:w", 1, {"ssl_cert_reqs": "none"})
    t = parse_url("redis://:only-pass@[::1]:7000")
    assert (t.host, t.port, t.username, t.password) == ("::1", 7000, None, "only-pass")
    t = parse_url("redis://127.0.0.1:6379?db=2")
    assert t.db == 2


def test_parse_unix_urls():
    t = parse_url("unix:///run/redis/redis.sock")
    assert (t.scheme, t.path, t.db, t.host) == ("unix", "/run/redis/redis.sock", 0, None)
    t = parse_url("unix://u:p@/tmp/r.sock?db=4")
    assert (t.path, t.db, t.username, t.password) == ("/tmp/r.sock", 4, "u", "p")


def test_password_with_url_delimiters_is_still_userinfo():
    t = parse_url(f"redis://bob:{SECRET}@host:1234/0")
    assert (t.host, t.port, t.username, t.password) == ("host", 1234, "bob", SECRET)


def test_password_never_in_repr():
    t = parse_url(f"redis://bob:{SECRET}@host:1234/0")
    assert SECRET not in repr(t) and SECRET not in str(t)
    conn = RedisConn(f"redis://bob:{SECRET}@host:1234/0")
    assert SECRET not in repr(conn) and SECRET not in conn.url and SECRET not in repr(conn.pool)


@pytest.mark.parametrize("url, why", [
    ("", "empty"),
    ("http://host:6379", "scheme"),
    ("host:6379", "scheme"),
    ("redis://", "no host"),
    ("redis://:pw@", "no host"),
    ("redis://host:notaport/0", "port"),
    ("redis://host:70000/0", "port"),
    ("redis://host/abc", "database"),
    ("redis://host/0?db=1", "twice"),
    ("redis://host/0?socket_timeout=60", "unknown query option"),
    ("redis://host/0?password=hunter2", "userinfo"),
    ("redis://host/0?ssl_cert_reqs=none", "rediss"),
    ("rediss://host/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("redis://host/0#frag", "fragment"),
    ("redis://ho st/0", "spaces"),
    ("unix://relative.sock", "socket path"),
    ("unix:///", "absolute"),
    ("unix:///tmp/r.sock?db=x", "database"),
    ("redis://userwithoutcolon@host/0", "userinfo"),
])
def test_bad_urls_name_the_problem(url, why):
    with pytest.raises(ValueError, match=why):
        parse_url(url)


@pytest.mark.parametrize("url", [
    f"redis://bob:{SECRET}@host:notaport/0",
    f"redis://:{SECRET}@/0",
    f"http://bob:{SECRET}@host/0",
    f"redis://bob:{SECRET}@host/zz",
    f"unix://bob:{SECRET}@relative",
    f"redis://host/0?password={SECRET}",
    f"redis://bob:{SECRET}@host/0?bogus=1",
])
def test_errors_never_echo_the_password(url):
    with pytest.raises(ValueError) as e:
        parse_url(url)
    assert SECRET not in str(e.value)
    assert "***" in str(e.value) or "password" in str(e.value)
    with pytest.raises(ValueError) as e:
        RedisConn(url)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("url, want", [
    ("redis://bob:pw@host:1/0", "redis://bob:***@host:1/0"),
    ("redis://:pw@host", "redis://:***@host"),
    ("rediss://hunter2secret@host", "rediss://***@host"),  # (refused: likely a password)
    ("redis://host:6379/0", "redis://host:6379/0"),
    (f"redis://u:{SECRET}@h/0", "redis://u:***@h/0"),
    ("unix://u:pw@/tmp/r.sock?db=1", "unix://u:***@/tmp/r.sock?db=1"),
    ("redis://h/0?db=1&password=pw&x=1", "redis://h/0?db=1&password=***&x=1"),
    ("garbage:pw@x", "garbage:***@x"),
])
def test_redact(url, want):
    assert redact(url) == want


# --- keys ------------------------------------------------------------------------------------


def test_tenant_tags_are_cluster_hash_tags_and_glob_safe():
    assert tenant_key("t:0123abcd", "store", "k") == "headroom:{t:0123abcd}:store:k"
    assert tenant_tag("ns:team/ci@x") == "{ns:team/ci@x}"
    for odd in ("a}b", "x*y", "q?[z]", "naïve", "sp ace", "", "a\\b", "x" * 200):
        tag = tenant_tag(odd)
        assert tag.startswith("{h:") and tag.count("{") == tag.count("}") == 1
        assert tag == tenant_tag(odd)  # stable
    assert tenant_tag("a}b") != tenant_tag("a]b")


# --- the breaker -----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_breaker_cycle():
    clock = Clock()
    b = Breaker(1.0, clock)
    assert b.before() is False and not b.open
    assert b.failure("ConnectionError") is True  # opened
    with pytest.raises(CircuitOpen) as e:
        b.before()
    assert e.value.cause == "ConnectionError"
    assert isinstance(e.value, redis.exceptions.ConnectionError)
    clock.t += 1.0
    assert b.before() is True  # the one trial
    with pytest.raises(CircuitOpen):
        b.before()  # others still fail fast while it runs
    assert b.failure("TimeoutError") is False  # stayed open
    with pytest.raises(CircuitOpen):
        b.before()
    clock.t += 1.0
    assert b.before() is True
    assert b.success() is True  # closed
    assert b.before() is False and b.success() is False


def test_breaker_without_caller_trials_leaves_the_trial_to_the_prober():
    clock = Clock()
    b = Breaker(1.0, clock, caller_trials=False)
    assert b.before() is False and b.due() == 0
    b.failure("TimeoutError")
    assert b.due() == 1.0 and not b.take_trial()
    clock.t += 1.0
    with pytest.raises(CircuitOpen):
        b.before()  # a caller never waits for a Redis that may still be gone
    assert b.take_trial() is True and b.take_trial() is False
    b.failure("TimeoutError")
    clock.t += 1.0
    assert b.take_trial()
    assert b.success() and b.before() is False


def test_breaker_released_trial_lets_the_next_caller_try():
    clock = Clock()
    b = Breaker(1.0, clock)
    b.failure("ConnectionError")
    clock.t += 2
    assert b.before() is True
    b.release()
    assert b.before() is True


# --- against a real server --------------------------------------------------------------------


def test_ping_tcp_and_unix(redis_url, redis_unix):
    assert RedisConn(redis_url).ping()
    conn = RedisConn(redis_unix.url)
    assert conn.ping()
    assert conn.call("redis", "-", lambda c: c.set("headroom:x", b"1"))
    conn.close()
    assert conn.ping()  # a closed pool reconnects on demand


def test_ping_through_a_password(tmp_path):
    from tests.conftest import _need_redis
    _need_redis()
    server = RedisServer(tmp_path / "r", password=SECRET).start()
    try:
        assert RedisConn(server.url).ping()
        wrong = server.url.replace(SECRET, "wrong-one")
        assert not RedisConn(wrong).ping()
    finally:
        server.close()


def test_dead_redis_costs_one_timeout_then_fails_fast(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.5)
    assert conn.ping()
    redis_proc.pause()  # accepts, never answers: every call would time out
    t0 = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        conn.call("store", "-", lambda c: c.get("k"))
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    for _ in range(50):
        with pytest.raises(CircuitOpen):
            conn.call("store", "-", lambda c: c.get("k"))
    # no network at all: the breaker answers (50 calls that waited would take 50 × 0.25 s)
    assert time.monotonic() - t0 < 1.0
    assert degrade.status["redis"].startswith("unavailable")
    assert degrade.status["store"] == "unavailable (TimeoutError)"
    redis_proc.resume()
    # The prober closes the breaker by itself: no request is ever the one that waits.
    eventually(lambda: not conn.breaker.open)
    assert degrade.status["redis"] == "ok"
    assert conn.call("store", "-", lambda c: c.get("k")) is None
    assert degrade.status["store"] == "ok"


def test_without_the_prober_the_first_caller_after_the_cooldown_is_the_trial(redis_proc):
    conn = RedisConn(redis_proc.url, cooldown=1.5, probe=False)
    assert conn.ping()
    redis_proc.stop()
    assert not conn.ping()
    redis_proc.start()  # (well within the cooldown, even on a loaded machine)
    with pytest.raises(CircuitOpen):
        conn.call("store", "-", lambda c: c.get("k"))  # still cooling down
    time.sleep(1.55)
    assert conn.breaker.open  # nobody probed
    assert conn.call("store", "-", lambda c: c.get("k")) is None
    assert not conn.breaker.open


def test_the_prober_runs_only_while_redis_is_down(redis_proc):
    conn = RedisConn(redis_proc.url, cooldown=0.1)
    assert conn.ping()
    def probes():
        return [t for t in threading.enumerate()
                if t.name == "headroom-redis-probe" and t is conn._prober]

    assert probes() == []
    redis_proc.stop()
    assert not conn.ping()
    assert len(probes()) == 1
    for _ in range(5):
        assert not conn.ping()
    assert len(probes()) == 1
    redis_proc.start()
    eventually(lambda: not probes())
    assert conn.ping()
    conn.close()


def test_reconnects_after_a_restart_by_itself(redis_proc):
    conn = RedisConn(redis_proc.url, cooldown=0.2)
    conn.call("store", "-", lambda c: c.set("headroom:a", b"1"))
    redis_proc.stop()
    assert not conn.ping()
    redis_proc.start()
    deadline = time.monotonic() + 5
    while not conn.ping():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Stale pooled sockets are replaced, not handed out.
    for _ in range(20):
        conn.call("store", "-", lambda c: c.set("headroom:a", b"2"))


def test_response_errors_do_not_open_the_breaker(redis_url):
    conn = RedisConn(redis_url)
    conn.call("store", "-", lambda c: c.set("headroom:l", b"x"))
    with pytest.raises(redis.exceptions.ResponseError):
        conn.call("store", "-", lambda c: c.lpush("headroom:l", b"y"))  # WRONGTYPE
    assert not conn.breaker.open
    assert conn.ping()


def test_eviction_policy(redis_url, caplog):
    conn = RedisConn(redis_url)
    assert conn.eviction_policy() == "noeviction"
    conn.client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, "headroom.redis"):
            assert conn.eviction_policy() == "allkeys-lru"
        assert "volatile-lru" in caplog.text
    finally:
        conn.client.config_set("maxmemory-policy", "noeviction")


def test_eviction_policy_where_config_is_refused(tmp_path):
    from tests.conftest import _need_redis
    _need_redis()
    server = RedisServer(tmp_path / "r")
    server.start()
    try:
        degrade = Degradations()
        conn = RedisConn(server.url, degrade=degrade)
        conn.client.acl_setuser("default", commands=["-config"])  # like a managed Redis
        assert conn.eviction_policy() is None
        assert degrade.status.get("redis", "ok") == "ok"
    finally:
        server.close()


def test_password_never_logged(tmp_path, caplog):
    from tests.conftest import _need_redis
    _need_redis()
    server = RedisServer(tmp_path / "r", password=SECRET).start()
    url = server.url
    try:
        with caplog.at_level(logging.DEBUG):
            degrade = Degradations()
            bad = RedisConn(url.replace(SECRET, SECRET + "-wrong"), degrade=degrade)
            assert not bad.ping()  # AuthenticationError
            good = RedisConn(url, degrade=degrade, cooldown=0.05)
            assert good.ping()
            server.stop()
            for _ in range(3):
                assert not good.ping()
                time.sleep(0.06)
            server.start()
            eventually(good.ping)
        assert caplog.records
        for r in caplog.records:
            assert SECRET not in r.getMessage(), r.getMessage()
            assert SECRET not in str(r.args)
        assert all(SECRET not in v for v in degrade.status.values())
    finally:
        server.close()


def test_core_never_imports_redis():
    core = Path(__file__).resolve().parents[1] / "headroom_core"
    offenders = []
    for f in core.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{f.name}: {n}" for n in names if n.split(".")[0] == "redis"]
    assert offenders == []
    # And the disk-only runtime imports without the client installed.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'redis': raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import headroom_runtime.state, headroom_runtime.runtime\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=core.parent)
    assert r.returncode == 0, r.stderr


def test_health_shows_every_part_down_while_redis_is_and_ok_again_after(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.2)
    for part in ("store", "ledger", "originals"):
        conn.call(part, "-", lambda c: c.get("headroom:x"))
    redis_proc.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        conn.call("store", "-", lambda c: c.get("headroom:x"))
    # only the store was called, but the ledger and the originals are down just as much
    assert degrade.status["redis"].startswith("unavailable")
    assert degrade.status["store"] == "unavailable (ConnectionError)"
    assert degrade.status["ledger"] == degrade.status["originals"] == "unavailable (redis down)"
    redis_proc.start()
    deadline = time.monotonic() + 5
    while degrade.status["redis"] != "ok":  # the probe reconnects by itself
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {p: degrade.status[p] for p in ("store", "ledger", "originals")} == {
        "store": "ok", "ledger": "ok", "originals": "ok"}
    conn.close()
