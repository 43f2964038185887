"""RedisLedger against a real redis-server: first record wins across instances, the size floor,
lifetimes, faults."""

import threading
import time

import pytest
import redis

from headroom_core.ledger import Entry
from headroom_runtime.degrade import Degradations
from headroom_runtime.diskledger import Ledger as DiskLedger
from headroom_runtime.redisconn import RedisConn
from tests.redis_server import eventually
from headroom_runtime.redisledger import FLOOR_KEY, RedisLedger

T, U = "t:aaaaaaaaaaaaaaaaaaaaaaaa", "t:bbbbbbbbbbbbbbbbbbbbbbbb"
ORIG = ("toolu_1", b'"' + b"x" * 2000 + b'"')
FWD = b'"short"'


@pytest.fixture
def ledger(redis_url):
    return RedisLedger(RedisConn(redis_url))


@pytest.fixture
def raw(redis_url):
    return redis.Redis.from_url(redis_url)


def test_empty(ledger):
    assert ledger.min_length() is None
    assert ledger.lookup(T, [ORIG]) == {}
    assert ledger.lookup(T, []) == {}


def test_record_then_lookup(ledger):
    assert ledger.record(T, ORIG, Entry(FWD, "log", 500, 3)).forwarded == FWD
    hit = ledger.lookup(T, [ORIG, ("toolu_2", b'"other"')])
    assert list(hit) == [ORIG]
    e = hit[ORIG]
    assert (e.forwarded, e.kind, e.tokens_before, e.tokens_after) == (FWD, "log", 500, 3)


def test_first_record_wins_across_instances(redis_url):
    a, b = RedisLedger(RedisConn(redis_url)), RedisLedger(RedisConn(redis_url))
    a.record(T, ORIG, Entry(FWD, "log", 500, 3))
    got = b.record(T, ORIG, Entry(b'"different"', "json", 1, 1))
    assert (got.forwarded, got.kind) == (FWD, "log")
    assert b.lookup(T, [ORIG])[ORIG].forwarded == FWD
    assert a.lookup(T, [ORIG])[ORIG].forwarded == FWD


def test_values_are_the_disk_ledgers_bytes(ledger, raw, tmp_path):
    entry = Entry(FWD, "log", 500, 3)
    ledger._clock = lambda: 1700000000
    ledger.record(T, ORIG, entry)
    with DiskLedger(tmp_path / "l", clock=lambda: 1700000000) as disk:
        disk.record(T, ORIG, entry)
        from headroom_core.ledger import ledger_key
        on_disk = disk._cache.get(ledger_key(T, ORIG))
    assert raw.get(RedisLedger.key(T, ORIG)) == on_disk


def test_scoped_by_tenant_call_and_literal(ledger, raw):
    ledger.record(T, ORIG, Entry(FWD))
    assert ledger.lookup(U, [ORIG]) == {}
    assert ledger.lookup(T, [("toolu_other", ORIG[1])]) == {}
    assert ledger.lookup(T, [(ORIG[0], ORIG[1][:-2] + b'y"')]) == {}
    assert ledger.lookup(T, [(None, ORIG[1])]) == {}
    key = RedisLedger.key(T, ORIG)
    assert key.startswith("headroom:{" + T + "}:ledger:") and len(key.rsplit(":", 1)[1]) == 40
    assert sorted(raw.keys()) == sorted([key.encode(), FLOOR_KEY.encode()])


def test_concurrent_first_records_settle_on_one_winner(redis_url):
    ledgers = [RedisLedger(RedisConn(redis_url)) for _ in range(4)]
    for round_ in range(5):
        orig = (f"toolu_race{round_}", b'"' + b"r" * 300 + b'"')
        barrier = threading.Barrier(16)
        results: list[bytes] = []
        lock = threading.Lock()

        def race(n):
            mine = Entry(b'"from-%d"' % n, "log", n, 1)
            barrier.wait()
            got = ledgers[n % 4].record(T, orig, mine)
            with lock:
                results.append(got.forwarded)

        threads = [threading.Thread(target=race, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 16 and len(set(results)) == 1
        winner = results[0]
        for led in ledgers:
            assert led.lookup(T, [orig])[orig].forwarded == winner


def test_min_length_floor_is_shared_and_monotonic_under_races(redis_url, raw):
    ledgers = [RedisLedger(RedisConn(redis_url), floor_refresh=0) for _ in range(4)]
    sizes = [50 + (n * 37) % 400 for n in range(64)]
    barrier = threading.Barrier(len(sizes))
    seen: list[int] = []

    def record(n):
        lit = b'"' + b"f" * (sizes[n] - 2) + b'"'
        barrier.wait()
        ledgers[n % 4].record(T, (f"c{n}", lit), Entry(b'"s"'))
        seen.append(ledgers[n % 4].min_length())

    threads = [threading.Thread(target=record, args=(n,)) for n in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(raw.get(FLOOR_KEY)) == min(sizes)
    assert all(led.min_length() == min(sizes) for led in ledgers)
    assert all(s >= min(sizes) for s in seen)
    # Larger records never raise it again.
    ledgers[0].record(T, ("big", b'"' + b"g" * 5000 + b'"'), Entry(b'"s"'))
    assert int(raw.get(FLOOR_KEY)) == min(sizes)


def test_min_length_is_cached_for_the_refresh_interval(redis_url):
    a = RedisLedger(RedisConn(redis_url), floor_refresh=1.0)  # (a margin for a loaded machine)
    b = RedisLedger(RedisConn(redis_url), floor_refresh=1.0)
    assert a.min_length() is None
    b.record(T, ORIG, Entry(FWD))
    assert b.min_length() == len(ORIG[1])  # its own record: at once
    assert a.min_length() is None  # another instance's: after the refresh interval
    time.sleep(1.05)
    assert a.min_length() == len(ORIG[1])


def test_lifetime_and_renewal_on_replay(redis_url, raw):
    led = RedisLedger(RedisConn(redis_url), lifetime=10.0, refresh_after=2.0)
    led.record(T, ORIG, Entry(FWD))
    key = RedisLedger.key(T, ORIG)
    before = raw.get(key)
    assert 9000 < raw.pttl(key) <= 10000
    raw.pexpire(key, 9000)  # not yet refresh_after into its life: left alone
    led.lookup(T, [ORIG])
    assert raw.pttl(key) <= 9000
    raw.pexpire(key, 7000)  # older than that: renewed to the full lifetime
    led.lookup(T, [ORIG])
    assert raw.pttl(key) > 9000
    assert raw.get(key) == before  # the bytes never change


def test_entries_expire(redis_url):
    led = RedisLedger(RedisConn(redis_url), lifetime=1.0)  # (a margin for a loaded machine)
    led.record(T, ORIG, Entry(FWD))
    assert ORIG in led.lookup(T, [ORIG])
    time.sleep(1.1)
    assert led.lookup(T, [ORIG]) == {}
    assert led.record(T, ORIG, Entry(b'"new"')).forwarded == b'"new"'


def test_no_lifetime(redis_url, raw):
    led = RedisLedger(RedisConn(redis_url), lifetime=None)
    led.record(T, ORIG, Entry(FWD))
    assert raw.pttl(RedisLedger.key(T, ORIG)) == -1
    assert led.lookup(T, [ORIG])[ORIG].forwarded == FWD


def test_malformed_entries_are_ignored_then_replaced(ledger, raw):
    raw.set(RedisLedger.key(T, ORIG), b"garbage")
    assert ledger.lookup(T, [ORIG]) == {}
    assert ledger.record(T, ORIG, Entry(FWD)).forwarded == FWD
    assert ledger.lookup(T, [ORIG])[ORIG].forwarded == FWD


def test_one_round_trip_per_lookup(ledger, redis_url):
    origs = [(f"c{i}", b'"' + b"z" * (100 + i) + b'"') for i in range(50)]
    for o in origs[::2]:
        ledger.record(T, o, Entry(b'"s"'))
    calls = []
    real = ledger.conn.call
    ledger.conn.call = lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1]
    assert len(ledger.lookup(T, origs)) == 25
    assert calls == ["ledger"]


def test_redis_down_raises_fast_and_recovers(redis_proc):
    degrade = Degradations()
    conn = RedisConn(redis_proc.url, degrade=degrade, cooldown=0.3)
    led = RedisLedger(conn, floor_refresh=0)
    led.record(T, ORIG, Entry(FWD))
    redis_proc.stop()
    for _ in range(10):
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            led.lookup(T, [ORIG])
        with pytest.raises(redis.exceptions.ConnectionError):
            led.record(T, ORIG, Entry(FWD))
        with pytest.raises(redis.exceptions.ConnectionError):
            led.min_length()
        assert time.monotonic() - t0 < 0.5
    assert degrade.status["ledger"].startswith("unavailable")
    redis_proc.start()
    eventually(lambda: not conn.breaker.open)
    assert led.min_length() is None  # a fresh, empty server
    assert led.record(T, ORIG, Entry(b'"again"')).forwarded == b'"again"'
    assert degrade.status["ledger"] == "ok"


def test_stalled_redis_raises_after_one_timeout(redis_proc):
    led = RedisLedger(RedisConn(redis_proc.url, cooldown=5))
    led.record(T, ORIG, Entry(FWD))
    redis_proc.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            led.lookup(T, [ORIG])
        assert time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        for _ in range(100):
            with pytest.raises(redis.exceptions.ConnectionError):
                led.lookup(T, [ORIG])
        assert time.monotonic() - t0 < 0.5
    finally:
        redis_proc.resume()
