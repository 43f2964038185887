import os
import threading

import diskcache
import pytest

from headroom_core.ledger import Entry, ledger_key
from headroom_runtime.diskledger import Ledger

ORIG = ("toolu_1", b'"' + b"x" * 2000 + b'"')
FWD = b'"short"'


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger") as led:
        yield led


def test_empty_ledger(ledger):
    assert ledger.min_length() is None
    assert ledger.lookup("t", [ORIG]) == {}
    assert ledger.lookup("t", []) == {}


def test_record_then_lookup(ledger):
    got = ledger.record("t", ORIG, Entry(FWD, "log", 500, 3))
    assert got.forwarded == FWD
    hit = ledger.lookup("t", [ORIG, ("toolu_2", b'"other"')])
    assert list(hit) == [ORIG]
    e = hit[ORIG]
    assert (e.forwarded, e.kind, e.tokens_before, e.tokens_after) == (FWD, "log", 500, 3)


def test_first_record_wins(ledger):
    ledger.record("t", ORIG, Entry(FWD, "log", 500, 3))
    got = ledger.record("t", ORIG, Entry(b'"different"', "json", 1, 1))
    assert got.forwarded == FWD
    assert ledger.lookup("t", [ORIG])[ORIG].forwarded == FWD


def test_survives_a_restart(tmp_path):
    with Ledger(tmp_path / "l") as a:
        a.record("t", ORIG, Entry(FWD, "log", 5, 1))
    with Ledger(tmp_path / "l") as b:
        assert b.lookup("t", [ORIG])[ORIG].forwarded == FWD
        assert b.min_length() == len(ORIG[1])


def test_keys_are_scoped_by_tenant_call_and_literal(ledger):
    ledger.record("t", ORIG, Entry(FWD))
    assert ledger.lookup("u", [ORIG]) == {}
    assert ledger.lookup("t", [("toolu_other", ORIG[1])]) == {}
    assert ledger.lookup("t", [(ORIG[0], ORIG[1][:-2] + b'y"')]) == {}
    assert ledger.lookup("t", [(None, ORIG[1])]) == {}
    keys = {ledger_key(t, o) for t in ("t", "u") for o in (ORIG, (None, ORIG[1]),
                                                              ("a", b'"b"'), ("a\x00", b'b"'))}
    assert len(keys) == 8


def test_min_length_is_the_shortest_original(ledger):
    ledger.record("t", ("a", b'"' + b"a" * 900 + b'"'), Entry(FWD))
    ledger.record("t", ("b", b'"' + b"b" * 600 + b'"'), Entry(FWD))
    ledger.record("t", ("c", b'"' + b"c" * 700 + b'"'), Entry(FWD))
    assert ledger.min_length() == 602


def test_min_length_falls_back_to_zero_when_the_floor_is_lost(tmp_path):
    with Ledger(tmp_path / "l") as led:
        led.record("t", ORIG, Entry(FWD))
    with diskcache.Cache(os.path.join(tmp_path / "l", "meta")) as meta:
        meta.clear()
    with Ledger(tmp_path / "l") as led:
        assert led.min_length() == 0


def test_malformed_stored_values_are_ignored(ledger):
    ledger._cache.set(ledger_key("t", ORIG), b"not a record")
    ledger._cache.set(ledger_key("t", ("k", b'"z"')), b'{"k":null}\n"unterminated')
    assert ledger.lookup("t", [ORIG, ("k", b'"z"')]) == {}


def test_entry_round_trip_rejects_garbage():
    e = Entry(b'"a\\nb"', "diff", None, 7)
    back = Entry.load(e.dump(123))
    assert (back.forwarded, back.kind, back.tokens_before, back.tokens_after, back.stored_at) == (
        b'"a\\nb"', "diff", None, 7, 123)
    for bad in (b"", b"{}", b'[1]\n"x"', b'{}\n[1]', b'{}\n"x'):
        assert Entry.load(bad) is None


def test_replay_refreshes_old_entries(tmp_path):
    now = [1_000_000.0]
    with Ledger(tmp_path / "l", refresh_after=3600, clock=lambda: now[0]) as led:
        led.record("t", ORIG, Entry(FWD))
        assert led.lookup("t", [ORIG])[ORIG].stored_at == 1_000_000
        now[0] += 100  # fresh enough: no write
        led.lookup("t", [ORIG])
        assert led.lookup("t", [ORIG])[ORIG].stored_at == 1_000_000
        now[0] += 4000
        led.lookup("t", [ORIG])  # stale: re-stored with the same bytes
        e = led.lookup("t", [ORIG])[ORIG]
        assert (e.stored_at, e.forwarded) == (1_004_100, FWD)


def test_eviction_never_yields_mismatched_bytes(tmp_path):
    # A tiny limit forces eviction on every store; whatever survives must be exact.
    with Ledger(tmp_path / "l", size_limit=1) as led:
        origs = [(f"c{i}", b'"' + bytes([65 + i % 26]) * (600 + i) + b'"') for i in range(60)]
        for i, o in enumerate(origs):
            led.record("t", o, Entry(b'"fwd %d"' % i))
        hits = led.lookup("t", origs)
        assert len(hits) < len(origs)
        for i, o in enumerate(origs):
            if o in hits:
                assert hits[o].forwarded == b'"fwd %d"' % i


def test_concurrent_records_agree_on_one_entry(tmp_path):
    winners = []
    barrier = threading.Barrier(8)

    def worker(n):
        with Ledger(tmp_path / "l") as led:
            barrier.wait()
            winners.append(led.record("t", ORIG, Entry(b'"w%d"' % n)).forwarded)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(winners)) == 1
    with Ledger(tmp_path / "l") as led:
        assert led.lookup("t", [ORIG])[ORIG].forwarded == winners[0]

