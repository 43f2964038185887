import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import diskcache
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core import cachekey, store
from headroom_core.store import Entry
from headroom_runtime import diskstore
from headroom_runtime.diskstore import ResponseStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def canon(model="claude-sonnet-4-5", tenant="ns:ci", provider="anthropic", **body):
    b = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    b.update(body)
    return cachekey.canonical_request(
        provider=provider, endpoint="messages", method="POST", host="api.anthropic.com",
        path="/v1/messages", fields=[(b"anthropic-version", b"2023-06-01")],
        body=json.dumps(b).encode(), tenant=tenant)


def entry(body=b'{"id":"msg_1"}', status=200, chunks=None, request=None, **meta):
    return Entry(status, [(b"Content-Type", b"application/json")], body if chunks is None else b"",
                 chunks, request, meta)


@pytest.fixture
def st_(tmp_path):
    with ResponseStore(tmp_path / "store") as s:
        yield s


def test_put_get_is_byte_exact_for_bodies(st_):
    small = bytes(range(256)) * 3
    big = os.urandom(200_000)  # file-backed in diskcache
    for key, body in (("k-small", small), ("k-big", big), ("k-empty", b"")):
        assert st_.put(key, entry(body), complete=True)
        got = st_.get(key)
        assert got.body == body and got.chunks is None and got.status == 200
        assert got.headers == [(b"Content-Type", b"application/json")]


def test_put_get_is_byte_exact_for_streams(st_):
    chunks = [(0.0, b"event: message_start\ndata: {}\n\n"), (0.125, b"\x00\xff partial "),
              (0.5, b""), (1.75, os.urandom(100_000)), (2.0, b"event: message_stop\n\n")]
    req = canon(stream=True)
    assert st_.put("s", Entry(200, [(b"content-type", b"text/event-stream")], chunks=chunks,
                              request=req), complete=True)
    got = st_.get("s")
    assert got.chunks == chunks and got.stream
    assert got.body == b"".join(c for _, c in chunks)
    assert got.request == req
    assert got.meta["chunks"] == 5 and got.meta["duration_s"] == 2.0
    assert got.meta["response_stream"] is True and got.meta["stream"] is True
    fast = st_.get("s", with_request=False)  # the cache-hit path skips parsing the request
    assert fast.request is None and fast.chunks == chunks


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=3000),
       chunks=st.lists(st.tuples(st.floats(0, 1e4), st.binary(max_size=300)), max_size=8),
       headers=st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.binary(max_size=20)),
                        max_size=5))
def test_frames_round_trip(body, chunks, headers):
    for e in (Entry(200, headers, body), Entry(201, headers, chunks=chunks)):
        got = store.decode_entry(store.encode_entry(e, {"x": 1}))
        assert (got.status, got.headers, got.body, got.chunks, got.meta) == \
            (e.status, e.headers, e.body, e.chunks, {"x": 1})


def test_every_truncation_or_flip_of_a_frame_is_detected():
    frame = store.encode_entry(Entry(200, [(b"a", b"b")], chunks=[(0.0, b"abc"), (1.0, b"de")],
                                     request=canon()), {"m": 1})
    for n in range(len(frame)):
        with pytest.raises(store.CorruptEntry):
            store.decode_entry(frame[:n])
    for i in range(0, len(frame), 7):
        flipped = bytearray(frame)
        flipped[i] ^= 0x01
        with pytest.raises(store.CorruptEntry):
            store.decode_entry(bytes(flipped))


def test_canonical_request_round_trips_including_json_pitfalls(st_):
    req = cachekey.canonical_request(
        provider="openai", endpoint="responses", method="POST", host="api.openai.com",
        path="/v1/responses", fields=[], tenant="t:1",
        body=b'{"model":"m","seed":340282366920938463463374607431768211456,"input":"\\udc00"}')
    assert st_.put("k", entry(request=req), complete=True)
    got = st_.get("k").request
    assert got == req and cachekey.request_key(got) == cachekey.request_key(req)


@pytest.mark.parametrize("status", [0, 100, 199, 300, 304, 400, 404, 429, 500, 529])
def test_only_2xx_is_stored(st_, status):
    assert store.refusal(entry(status=status), True) == f"status {status}"
    assert not st_.put("k", entry(status=status), complete=True)
    assert st_.get("k") is None


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_stored(st_, status):
    assert st_.put("k", entry(status=status), complete=True)
    assert st_.get("k").status == status


def test_incomplete_responses_are_refused(st_):
    partial = entry(chunks=[(0.0, b"event: message_start\n\n")])
    assert store.refusal(partial, False) == "incomplete stream"
    assert not st_.put("s", partial, complete=False)
    assert store.refusal(entry(), False) == "incomplete body"
    assert not st_.put("b", entry(), complete=False)
    assert not st_.put("", entry(), complete=True)
    assert list(st_.keys()) == []


def test_entry_rejects_body_that_disagrees_with_chunks():
    with pytest.raises(ValueError):
        Entry(200, [], b"other", [(0.0, b"abc")])
    assert Entry(200, [], b"abc", [(0.0, b"abc")]).body == b"abc"


RESPONSE_HEADERS = [
    (b"Date", b"Tue, 01 Jul 2025 00:00:00 GMT"), (b"Content-Type", b"text/event-stream"),
    (b"Transfer-Encoding", b"chunked"), (b"Connection", b"keep-alive, X-Hop"),
    (b"X-Hop", b"1"), (b"Keep-Alive", b"timeout=5"), (b"Content-Length", b"10"),
    (b"request-id", b"req_1"), (b"x-request-id", b"r"), (b"anthropic-organization-id", b"org"),
    (b"openai-organization", b"org"), (b"openai-project", b"proj"),
    (b"Set-Cookie", b"__cf_bm=x"), (b"CF-RAY", b"abc"), (b"alt-svc", b"h3"),
    (b"server-timing", b"x"), (b"openai-processing-ms", b"10"),
    (b"anthropic-ratelimit-unified-status", b"allowed"), (b"x-ratelimit-remaining-tokens", b"1"),
    (b"x-codex-primary-used-percent", b"3"), (b"x-headroom-cache", b"hit"),
    (b"Content-Encoding", b"gzip"), (b"Cache-Control", b"no-cache"), (b"X-Custom", b"kept"),
    (b"openai-version", b"2020-10-01"), (b"Via", b"1.1 google"),
    # credentials or account names an upstream or a gateway echoes: never kept
    (b"ChatGPT-Account-Id", b"acct"), (b"api-key", b"k"), (b"Set-Cookie2", b"a=b"),
    (b"X-Amz-Security-Token", b"t"), (b"x-portkey-api-key", b"k"), (b"X-Api-Key", b"k"),
]
KEPT = [(b"Content-Type", b"text/event-stream"), (b"Content-Encoding", b"gzip"),
        (b"Cache-Control", b"no-cache"), (b"X-Custom", b"kept"), (b"openai-version", b"2020-10-01")]


def test_header_filtering(st_):
    assert store.storable_headers(RESPONSE_HEADERS) == KEPT
    assert st_.put("k", Entry(200, RESPONSE_HEADERS, b"x"), complete=True)
    assert st_.get("k").headers == KEPT


def test_meta_is_filled_from_the_request_and_listed_without_bodies(st_):
    req = canon(stream=True)
    assert st_.put("k", Entry(200, [], b"", [(0.0, b"ab")], req,
                              {"usage": {"input_tokens": 3}, "session_id": "s1"}), complete=True)
    meta = st_.meta("k")
    assert meta["tenant"] == "ns:ci" and meta["provider"] == "anthropic"
    assert meta["endpoint"] == "messages" and meta["model"] == "claude-sonnet-4-5"
    assert meta["stream"] is True and meta["status"] == 200 and meta["body_bytes"] == 2
    assert meta["usage"] == {"input_tokens": 3} and meta["session_id"] == "s1"
    assert abs(meta["created"] - time.time()) < 3600
    assert dict(st_.entries()) == {"k": meta}
    assert "k" in st_ and "nope" not in st_ and st_.meta("nope") is None


def test_ttl_expiry(tmp_path, monkeypatch):
    s = ResponseStore(tmp_path / "store", ttl_seconds=60)
    assert s.put("k", entry(), complete=True)
    forever = ResponseStore(tmp_path / "store2")
    assert forever.put("k", entry(), complete=True)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 30)
    assert s.get("k") is not None
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert s.get("k") is None and s.meta("k") is None and list(s.entries()) == []
    assert forever.get("k") is not None
    assert s.prune() == 1 and list(s.keys()) == []


def test_size_limit_evicts_oldest_first(tmp_path):
    s = ResponseStore(tmp_path / "store", size_limit_bytes=1_000_000)
    for i in range(100):
        assert s.put(f"k{i:03}", entry(os.urandom(40_000)), complete=True)
    keys = sorted(s.keys())
    assert 0 < len(keys) < 100
    assert keys == [f"k{i:03}" for i in range(100 - len(keys), 100)]  # the newest survive
    assert s.volume() < 1_000_000 + 10 * 40_000  # diskcache culls up to 10 entries per write


def test_settings_none_keeps_what_the_directory_has(tmp_path):
    ResponseStore(tmp_path / "s", size_limit_bytes=123_456).close()
    tool = ResponseStore(tmp_path / "s", size_limit_bytes=None, eviction_policy=None)
    assert tool._cache.size_limit == 123_456
    assert ResponseStore(tmp_path / "new", size_limit_bytes=None)._cache.size_limit == \
        diskstore.DEFAULT_SIZE_LIMIT


def test_directory_is_private(tmp_path):
    ResponseStore(tmp_path / "store").close()
    assert (os.stat(tmp_path / "store").st_mode & 0o777) == 0o700


def test_pickled_values_are_never_loaded(tmp_path):
    d = tmp_path / "store"
    s = ResponseStore(d)
    assert s.put("ours", entry(), complete=True)
    marker = tmp_path / "unpickled"
    with diskcache.Cache(d) as raw:
        raw.set("evil", _Boom(str(marker)))
        raw.set(("tuple", "key"), b"x")
    assert s.get("evil") is None
    assert sorted(s.keys()) == ["evil", "ours"]
    assert [k for k, _ in s.entries()] == ["ours"]
    assert not marker.exists()
    with pytest.raises(TypeError):
        diskstore._BytesDisk(str(d)).store({"not": "bytes"}, False)


class _Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_damaged_entries_read_as_missing_and_are_removed(tmp_path):
    d = tmp_path / "store"
    s = ResponseStore(d)
    assert s.put("big", entry(os.urandom(100_000)), complete=True)
    vals = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".val")]
    assert len(vals) == 1
    with open(vals[0], "r+b") as f:
        f.seek(50_000)
        b = f.read(1)
        f.seek(50_000)
        f.write(bytes([b[0] ^ 0xFF]))
    assert s.meta("big") is not None  # the header is intact; the digest is not
    assert s.get("big") is None
    assert "big" not in s


def test_prune_removes_damaged_values_only_when_unreadable(tmp_path):
    d = tmp_path / "store"
    s = ResponseStore(d)
    assert s.put("ok", entry(), complete=True)
    with diskcache.Cache(d) as raw:
        raw.set("junk", b"garbage bytes, not a frame")
        raw.set("cut", store.encode_entry(entry(), {})[:30])
    assert s.get("junk") is None and s.meta("cut") is None
    assert s.prune() == 1  # "junk" was already dropped by the failed get
    assert list(s.keys()) == ["ok"]


def test_prune(st_):
    now = time.time()
    st_.put("old-a", entry(request=canon(), created=now - 10 * 86400), complete=True)
    st_.put("old-o", entry(request=canon(provider="openai"), created=now - 10 * 86400),
            complete=True)
    st_.put("new-a", entry(request=canon()), complete=True)
    assert st_.prune() == 0
    assert st_.prune(older_than=7 * 86400, provider="openai") == 1
    assert sorted(st_.keys()) == ["new-a", "old-a"]
    assert st_.prune(tenant="ns:other") == 0
    assert st_.prune(older_than=7 * 86400) == 1
    assert list(st_.keys()) == ["new-a"]
    assert st_.clear() == 1 and list(st_.keys()) == []


def test_nearest_and_its_diff(st_):
    base = canon(temperature=0.5)
    st_.put("base", entry(request=base), complete=True)
    st_.put("far", entry(request=canon(temperature=0.5, top_k=3, max_tokens=7)), complete=True)
    st_.put("other-model", entry(request=canon(model="claude-opus-4-1", temperature=0.6)),
            complete=True)
    st_.put("other-tenant", entry(request=canon(tenant="t:x", temperature=0.6)), complete=True)
    st_.put("no-request", entry(model="claude-sonnet-4-5", tenant="ns:ci", provider="anthropic",
                                endpoint="messages"), complete=True)
    query = canon(temperature=0.6)
    key, meta, lines = st_.nearest(query)
    assert key == "base" and meta["model"] == "claude-sonnet-4-5"
    assert lines == ["temperature changed: 0.5 -> 0.6"]
    assert st_.nearest(canon(model="claude-haiku")) is None
    assert st_.nearest(canon(tenant="t:nobody")) is None


def test_nearest_prefers_the_same_session(st_):
    st_.put("close", entry(request=canon(temperature=0.5), session_id="A"), complete=True)
    st_.put("same-session", entry(request=canon(temperature=0.1, top_k=2), session_id="B"),
            complete=True)
    query = canon(temperature=0.6)
    assert st_.nearest(query)[0] == "close"
    assert st_.nearest(query, session_id="B")[0] == "same-session"
    assert st_.nearest(query, session_id="C")[0] == "close"


def test_threads_share_one_store(st_):
    errors = []

    def work(t):
        try:
            for i in range(30):
                body = f"{t}-{i}".encode() * 50
                assert st_.put(f"{t}-{i}", entry(body), complete=True)
                assert st_.get(f"{t}-{i}").body == body
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(st_.keys())) == 180


def test_operations_after_close_do_not_raise(tmp_path):
    s = ResponseStore(tmp_path / "store")
    s.put("k", entry(), complete=True)
    s.close()
    s.close()
    assert s.get("k").body == b'{"id":"msg_1"}'  # diskcache reconnects on demand


# --- several processes -----------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import hashlib, os, sys, time
    sys.path.insert(0, {root!r})
    from headroom_core.store import Entry
    from headroom_runtime.diskstore import ResponseStore

    def body(i, tag):
        seed = hashlib.sha256(f"{{tag}}-{{i}}".encode()).digest()
        n = [10, 5_000, 40_000, 150_000][i % 4]  # inline and file-backed values
        return (seed * (n // 32 + 1))[:n]

    directory, tag, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = ResponseStore(directory)
    while not os.path.exists(go):
        time.sleep(0.001)
    i = 0
    while count < 0 or i < count:
        chunks = [(j * 0.01, c) for j, c in enumerate([body(i, tag)[:7], body(i, tag)[7:]])]
        ok = s.put(f"{{tag}}-{{i}}", Entry(200, [(b"x-tag", tag.encode())], chunks=chunks),
                   complete=True)
        assert ok
        shared = Entry(200, [(b"x-tag", tag.encode())], body(i, "shared-" + tag))
        assert s.put(f"shared-{{i % 20}}", shared, complete=True)
        i += 1
""")


def _body(i, tag):
    import hashlib
    seed = hashlib.sha256(f"{tag}-{i}".encode()).digest()
    n = [10, 5_000, 40_000, 150_000][i % 4]
    return (seed * (n // 32 + 1))[:n]


def _writer(tmp_path, directory, tag, count, go):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=ROOT))
    return subprocess.Popen([sys.executable, str(script), str(directory), tag, str(count),
                             str(go)])


def test_two_processes_write_concurrently(tmp_path):
    d, go = tmp_path / "store", tmp_path / "go"
    ResponseStore(d).close()
    procs = [_writer(tmp_path, d, tag, 60, go) for tag in ("a", "b")]
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    s = ResponseStore(d)
    for tag in ("a", "b"):
        for i in range(60):
            e = s.get(f"{tag}-{i}")
            assert e.body == _body(i, tag) and e.headers == [(b"x-tag", tag.encode())]
            assert [c for _, c in e.chunks] == [_body(i, tag)[:7], _body(i, tag)[7:]]
    for j in range(20):
        e = s.get(f"shared-{j}")  # last writer wins, whole
        tag = e.headers[0][1].decode()
        assert e.body in {_body(i, "shared-" + tag) for i in range(j, 60, 20)}


def test_reopen_after_a_killed_writer(tmp_path):
    d, go = tmp_path / "store", tmp_path / "go"
    ResponseStore(d).close()
    go.touch()
    proc = _writer(tmp_path, d, "k", -1, go)
    try:
        s = ResponseStore(d)
        deadline = time.monotonic() + 120  # a safety net against hanging, not a speed check
        while sum(1 for k in s.keys() if k.startswith("k-")) < 25:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        s.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    s = ResponseStore(d)
    written = [int(k[2:]) for k in s.keys() if k.startswith("k-")]
    assert len(written) >= 25
    for i in written:
        e = s.get(f"k-{i}")
        assert e is not None  # committed rows are whole: SQLite commits the row after the file
        assert e.body == _body(i, "k")
        assert [c for _, c in e.chunks] == [_body(i, "k")[:7], _body(i, "k")[7:]]
    for key in [k for k in s.keys() if k.startswith("shared-")]:
        j = int(key[7:])
        assert s.get(key).body in {_body(i, "shared-k") for i in range(j, max(written) + 2, 20)}
    # and the store still takes writes
    assert s.put("after", entry(), complete=True) and s.get("after").body == b'{"id":"msg_1"}'
