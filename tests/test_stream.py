import gzip
import logging
import zlib
from itertools import pairwise
from pathlib import Path

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.stream import StreamTee

STREAMS = Path(__file__).parent / "data" / "streams"
TEXT = (STREAMS / "anthropic_text.sse").read_bytes()
SHAPE_OF = {
    "anthropic": "anthropic",
    "chat": "chat",
    "responses": "responses",
    "codex": "responses",
}
FIXTURES = sorted(STREAMS.glob("*.sse"))


def shape_of(path: Path) -> str:
    return SHAPE_OF[path.stem.split("_")[0]]


class FakeClock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def feed_all(tee: StreamTee, data: bytes, cuts: list[int] = ()) -> None:
    edges = [0, *cuts, len(data)]
    for a, b in pairwise(edges):
        tee.feed(data[a:b])


def events_of(data: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in data.split(b"\n\n") if e]


def stream_compress(data: bytes, coding: str) -> bytes:
    """Compress the way a server streams: one flush per SSE event, so events decode as they come."""
    out = []
    if coding in ("gzip", "deflate"):
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + 15 if coding == "gzip" else 15)
        for ev in events_of(data):
            out.append(c.compress(ev) + c.flush(zlib.Z_SYNC_FLUSH))
        out.append(c.flush())
    elif coding == "br":
        c = brotli.Compressor()
        for ev in events_of(data):
            out.append(c.process(ev) + c.flush())
        out.append(c.finish())
    elif coding == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        for ev in events_of(data):
            out.append(c.compress(ev) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        out.append(c.flush())
    return b"".join(out)


# --- capture and timing --------------------------------------------------------------------------


def test_raw_chunks_kept_exactly_with_offsets_from_the_first_chunk():
    tee = StreamTee("anthropic", clock=FakeClock(100.0, 100.25, 101.5))
    chunks = [TEXT[:10], TEXT[10:500], TEXT[500:]]
    for c in chunks:
        assert tee(c) is c  # the mitmproxy stream callable hands every chunk back untouched
    tee(b"")  # mitmproxy's end-of-stream marker: ignored
    assert tee.raw_chunks == [(0.0, chunks[0]), (0.25, chunks[1]), (1.5, chunks[2])]
    assert tee.first_chunk_at == 100.0
    assert tee.bytes_seen == len(TEXT) and tee.chunks_seen == 3
    assert tee.kept_complete and tee.kept_bytes == len(TEXT)
    assert tee.finish(True).state == "complete"


def test_keep_limit_drops_the_copy_but_keeps_reading():
    tee = StreamTee("anthropic", keep_bytes_limit=1000)
    feed_all(tee, TEXT, list(range(300, len(TEXT), 300)))
    assert not tee.kept_complete and tee.raw_chunks == [] and tee.kept_bytes == 0
    assert tee.bytes_seen == len(TEXT)
    assert tee.finish(True).state == "complete"


def test_first_chunk_time_unset_without_chunks():
    tee = StreamTee("chat")
    assert tee.first_chunk_at is None
    r = tee.finish(False)
    assert r.state == "truncated" and r.reason == "connection_lost" and r.events == 0


def test_finish_is_idempotent_and_terminal_beats_a_dropped_connection():
    tee = StreamTee("anthropic")
    tee.feed(TEXT)
    first = tee.finish(False)
    assert first.state == "complete"
    assert tee.finish(True) is first


# --- content codings -----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("name", ["anthropic_thinking_tool", "chat_tools", "codex_tools"])
def test_encoded_streams_with_odd_chunking(coding, name):
    data = (STREAMS / f"{name}.sse").read_bytes()
    shape = shape_of(STREAMS / f"{name}.sse")
    plain = StreamTee(shape)
    plain.feed(data)
    expected = plain.finish(True)
    assert expected.state == "complete"
    wire = stream_compress(data, coding)
    for step in (1, 7, 64, 1000):
        tee = StreamTee(shape, content_encoding=coding)
        feed_all(tee, wire, list(range(step, len(wire), step)))
        assert b"".join(c for _, c in tee.raw_chunks) == wire
        assert tee.finish(True) == expected, step
        assert tee.decode_errors == 0 and tee.bytes_seen == len(wire)


def test_encoded_stream_is_read_incrementally():
    wire = stream_compress(TEXT, "gzip")
    tee = StreamTee("anthropic", content_encoding="gzip")
    tee.feed(wire[: len(wire) * 3 // 4])
    assert tee.events >= 5  # events were parsed before the stream ended


def test_a_stream_gzipped_event_by_event_is_read_whole():
    # Each event its own gzip member (a server flushing per event): usage is in the last ones.
    events = [e + b"\n\n" for e in TEXT.split(b"\n\n") if e.strip()]
    wire = b"".join(gzip.compress(e) for e in events)
    plain = StreamTee("anthropic")
    plain.feed(TEXT)
    tee = StreamTee("anthropic", content_encoding="gzip")
    feed_all(tee, wire, list(range(13, len(wire), 13)))
    r = tee.finish(True)
    assert tee.decode_errors == 0 and r.state == "complete"
    assert r == plain.finish(True)


def test_stacked_codings():
    wire = brotli.compress(zlib.compress(TEXT))
    tee = StreamTee("anthropic", content_encoding="deflate, br")
    feed_all(tee, wire, list(range(5, len(wire), 5)))
    assert tee.finish(True).state == "complete"


def test_corrupt_encoding_stops_inspection_not_the_stream(caplog):
    wire = stream_compress(TEXT, "gzip")
    bad = wire[:40] + bytes(b ^ 0x5A for b in wire[40:80]) + wire[80:]
    tee = StreamTee("anthropic", content_encoding="gzip")
    with caplog.at_level(logging.WARNING, logger="headroom.stream"):
        feed_all(tee, bad, list(range(16, len(bad), 16)))
    r = tee.finish(True)
    assert tee.decode_errors == 1 and r.state == "truncated"
    assert tee.bytes_seen == len(bad) and b"".join(c for _, c in tee.raw_chunks) == bad
    assert len([rec for rec in caplog.records if rec.name == "headroom.stream"]) == 1


def test_unsupported_encoding():
    tee = StreamTee("anthropic", content_encoding="compress")
    tee.feed(TEXT)
    r = tee.finish(True)
    assert tee.decode_errors == 1 and r.state == "truncated" and tee.bytes_seen == len(TEXT)


def test_decode_error_after_terminal_event_still_not_complete():
    wire = stream_compress(TEXT, "gzip")
    tee = StreamTee("anthropic", content_encoding="gzip")
    tee.feed(wire[:-8])
    assert tee.events == 11  # message_stop was decoded and parsed already
    tee.feed(bytes(b ^ 0xFF for b in wire[-8:]))  # ...but the gzip trailer (CRC, size) is corrupt
    r = tee.finish(True)
    assert r.state == "truncated" and r.reason == "decode_error"


# --- what we could not read is never complete -----------------------------------------------------


def test_invalid_utf8_event_makes_a_finished_stream_truncated():
    bad = TEXT.replace(b"The test suite", b"The test \xff suite")
    tee = StreamTee("anthropic")
    tee.feed(bad)
    r = tee.finish(True)
    assert tee.parse_errors == 1
    assert r.state == "truncated" and r.reason == "invalid_utf8"
    assert r.message["content"][0]["text"].startswith(" passes now")  # the other events were read


def test_non_json_event_counts_as_parse_error():
    tee = StreamTee("anthropic")
    tee.feed(TEXT.replace(b'data: {"type": "ping"}', b"data: {oops"))
    r = tee.finish(True)
    assert tee.parse_errors == 1 and r.state == "truncated" and r.reason == "unreadable_event"


def test_overflow_makes_the_stream_truncated():
    tee = StreamTee("anthropic", max_event_bytes=200)
    feed_all(tee, TEXT, list(range(50, len(TEXT), 50)))
    r = tee.finish(True)
    assert tee.overflowed and r.state == "truncated"
    assert tee.bytes_seen == len(TEXT)


def test_unterminated_event_after_the_terminal_one():
    tee = StreamTee("anthropic")
    tee.feed(TEXT + b"event: ping\ndata: {")
    assert tee.finish(True).reason == "unterminated_event"
    tee = StreamTee("anthropic")
    tee.feed(TEXT + b": keep-alive\n")
    assert tee.finish(True).state == "complete"


def test_internal_error_disables_parsing_once_and_keeps_counting(caplog, monkeypatch):
    tee = StreamTee("anthropic")
    tee.feed(TEXT[:100])

    def boom(data: bytes):
        raise RuntimeError("secret body text")

    monkeypatch.setattr(tee._parser, "feed", boom)
    with caplog.at_level(logging.WARNING, logger="headroom.stream"):
        tee.feed(TEXT[100:200])
        tee.feed(TEXT[200:])
    r = tee.finish(True)
    assert tee.failed and r.state == "truncated" and r.reason == "internal_error"
    assert tee.bytes_seen == len(TEXT) and b"".join(c for _, c in tee.raw_chunks) == TEXT
    logs = [rec.getMessage() for rec in caplog.records if rec.name == "headroom.stream"]
    assert len(logs) == 1 and "RuntimeError" in logs[0] and "secret" not in logs[0]


def test_finish_never_raises(monkeypatch):
    tee = StreamTee("anthropic")
    tee.feed(TEXT)
    monkeypatch.setattr(tee._recon, "result", lambda ended_cleanly: 1 / 0)
    r = tee.finish(True)
    assert r.state == "truncated" and r.reason == "internal_error"


def test_unknown_shape_is_only_counted():
    tee = StreamTee("gemini")
    tee.feed(TEXT)
    r = tee.finish(True)
    assert r.state == "truncated" and tee.bytes_seen == len(TEXT) and tee.raw_chunks[0][1] == TEXT


# --- hostile input --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    shape=st.sampled_from(["anthropic", "chat", "responses"]),
    coding=st.sampled_from([None, "gzip", "br", "zstd", "deflate", "identity"]),
    chunks=st.lists(st.binary(max_size=80), max_size=25),
    ended=st.booleans(),
)
def test_arbitrary_bytes_never_raise(shape, coding, chunks, ended):
    tee = StreamTee(shape, content_encoding=coding, max_event_bytes=64)
    for c in chunks:
        tee.feed(c)
    r = tee.finish(ended)
    assert r.state in ("complete", "errored", "truncated")
    assert tee.bytes_seen == sum(map(len, chunks))
    assert b"".join(c for _, c in tee.raw_chunks) == b"".join(chunks)


@settings(max_examples=60, deadline=None)
@given(
    path=st.sampled_from(FIXTURES),
    cuts=st.lists(st.integers(0, 1 << 14), max_size=30),
    flips=st.lists(st.integers(0, 1 << 14), max_size=3),
)
def test_damaged_fixtures_never_raise_and_never_complete_when_damaged(path, cuts, flips):
    data = bytearray(path.read_bytes())
    for f in flips:
        data[f % len(data)] = 0xFF  # never valid UTF-8
    data = bytes(data)
    tee = StreamTee(shape_of(path))
    feed_all(tee, data, sorted({c % (len(data) + 1) for c in cuts}))
    r = tee.finish(True)
    if flips:
        assert r.state != "complete"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
       batch=st.sampled_from([1, 7, 100, 1000, 1 << 20]))
def test_batched_parsing_gives_the_same_result(path, cuts, batch):
    data = path.read_bytes()
    cuts = sorted({c for c in cuts if c < len(data)})
    whole = StreamTee(shape_of(path))
    whole.feed(data)
    batched = StreamTee(shape_of(path), batch_bytes=batch)
    feed_all(batched, data, cuts)
    a, b = whole.finish(True), batched.finish(True)
    assert (a.state, a.reason, a.usage, a.message, a.error) == \
           (b.state, b.reason, b.usage, b.message, b.error)
    assert batched.bytes_seen == len(data)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_accounting_only_reads_the_same_usage_and_state(path):
    """Skipping content deltas changes nothing the event log reports."""
    data = path.read_bytes()
    full = StreamTee(shape_of(path))
    lean = StreamTee(shape_of(path), accounting_only=True)
    feed_all(full, data, list(range(97, len(data), 97)))
    feed_all(lean, data, list(range(97, len(data), 97)))
    a, b = full.finish(True), lean.finish(True)
    assert (a.state, a.usage, a.error, a.model) == (b.state, b.usage, b.error, b.model)
    # the reason may only differ where the full reader found a lossy/unknown delta
    assert a.reason == b.reason or a.lossy


def test_accounting_only_still_catches_invalid_utf8_in_a_skipped_event():
    marker = b'"type":"text_delta","text":"'
    assert marker in TEXT
    data = TEXT.replace(marker, marker + b"\xff", 1)
    tee = StreamTee("anthropic", accounting_only=True)
    tee.feed(data)
    assert tee.finish(True).state != "complete"


@pytest.mark.parametrize("path", FIXTURES[:4], ids=lambda p: p.stem)
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
       batch=st.sampled_from([1, 100, 32 << 10]), keep=st.sampled_from([0, 500, 64 << 20]),
       lean=st.booleans())
def test_counts_and_kept_chunks_do_not_depend_on_batching(path, cuts, batch, keep, lean):
    # Empty chunks (mitmproxy's end marker) included; the steady state only queues chunks.
    data = path.read_bytes()
    cuts = sorted(c for c in cuts if c <= len(data))  # repeated cuts: empty chunks
    tees = [StreamTee(shape_of(path), keep_bytes_limit=keep, batch_bytes=b,
                      accounting_only=lean, clock=lambda: 1.0) for b in (0, batch)]
    for t in tees:
        for a, b in pairwise([0, *cuts, len(data)]):
            assert t(data[a:b]) == data[a:b]
    plain, batched = tees
    pieces = [data[a:b] for a, b in pairwise([0, *cuts, len(data)]) if b > a]
    assert batched.bytes_seen == plain.bytes_seen == len(data)
    assert batched.chunks_seen == plain.chunks_seen == len(pieces)
    assert batched.raw_chunks == plain.raw_chunks
    assert batched.kept_complete == plain.kept_complete == (len(data) <= keep)
    a, b = plain.finish(True), batched.finish(True)
    assert (a.state, a.reason, a.usage, a.error) == (b.state, b.reason, b.usage, b.error)
