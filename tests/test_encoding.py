import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import encoding

DATA = b'{"model":"m","messages":[{"role":"user","content":"' + "h\u00e9llo".encode() * 500 + b'"}]}'


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "br", "zstd", "identity", ""])
def test_roundtrip(coding):
    assert encoding.decode(encoding.encode(DATA, coding), coding) == DATA


def test_decodes_foreign_encoders():
    assert encoding.decode(gzip.compress(DATA), "gzip") == DATA
    assert encoding.decode(zlib.compress(DATA), "deflate") == DATA
    raw = zlib.compressobj(wbits=-15)
    assert encoding.decode(raw.compress(DATA) + raw.flush(), "deflate") == DATA
    assert encoding.decode(brotli.compress(DATA), "br") == DATA
    assert encoding.decode(zstandard.ZstdCompressor().compress(DATA), "zstd") == DATA
    # zstd frame without content size (as streaming compressors write it)
    cobj = zstandard.ZstdCompressor().compressobj()
    assert encoding.decode(cobj.compress(DATA) + cobj.flush(), "zstd") == DATA


def test_chained_codings_undone_in_reverse_order():
    body = brotli.compress(gzip.compress(DATA))
    assert encoding.decode(body, "gzip, br") == DATA
    assert encoding.encode(DATA, "gzip, br") and encoding.decode(encoding.encode(DATA, "gzip, br"), "gzip, br") == DATA


@pytest.mark.parametrize("coding,body", [
    ("gzip", b"not gzip"), ("br", b"\x00\x01garbage"), ("zstd", b"nope"),
    ("gzip", gzip.compress(DATA)[:-10]),  # truncated
    ("compress", b"x"), ("snappy", b"x"),
])
def test_bad_input_raises_encoding_error(coding, body):
    with pytest.raises(encoding.EncodingError):
        encoding.decode(body, coding)


def test_limit_guards_against_bombs():
    bomb = gzip.compress(b"\0" * (10 << 20))
    with pytest.raises(encoding.EncodingError):
        encoding.decode(bomb, "gzip", limit=1 << 20)
    with pytest.raises(encoding.EncodingError):
        encoding.decode(zstandard.ZstdCompressor().compress(b"\0" * (10 << 20)), "zstd", limit=1 << 20)
    with pytest.raises(encoding.EncodingError):
        encoding.decode(brotli.compress(b"\0" * (10 << 20)), "br", limit=1 << 20)
    assert encoding.decode(bomb, "gzip", limit=20 << 20) == b"\0" * (10 << 20)


def test_is_supported():
    assert encoding.is_supported(None) and encoding.is_supported("gzip, zstd")
    assert not encoding.is_supported("gzip, lz4")


def _stream_encode(coding, data, pieces):
    if coding == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        out = [c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
        return out + [c.flush()]
    if coding == "br":
        c = brotli.Compressor()
        return [c.process(p) + c.flush() for p in pieces] + [c.finish()]
    c = zstandard.ZstdCompressor().compressobj()
    return [c.compress(p) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for p in pieces] + [c.flush()]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(DATA)), max_size=8),
       rechunk=st.integers(min_value=1, max_value=97))
def test_incremental_decoder_any_split(coding, cuts, rechunk):
    bounds = sorted(set([0, len(DATA), *cuts]))
    pieces = [DATA[a:b] for a, b in zip(bounds, bounds[1:])]
    wire = b"".join(_stream_encode(coding, DATA, pieces))
    dec = encoding.IncrementalDecoder(coding)
    out = b"".join(dec.feed(wire[i:i + rechunk]) for i in range(0, len(wire), rechunk))
    out += dec.close()
    assert out == DATA


def test_incremental_decoder_reports_garbage():
    dec = encoding.IncrementalDecoder("gzip")
    with pytest.raises(encoding.EncodingError):
        dec.feed(b"definitely not gzip data")
    with pytest.raises(encoding.EncodingError):
        encoding.IncrementalDecoder("lz4")


@pytest.mark.parametrize("accept,coding,ok", [
    (None, "gzip", True),
    ("gzip, deflate, br, zstd", "zstd", True),
    ("identity", "gzip", False),
    ("gzip;q=0, br", "gzip", False),
    ("*", "br", True),
    ("*;q=0", "br", False),
    ("br", None, True),
    ("x-gzip", "gzip", True),
    ("gzip", "gzip, br", False),
])
def test_accepts(accept, coding, ok):
    assert encoding.accepts(accept, coding) is ok


def test_identity_bodies_respect_the_limit_too():
    with pytest.raises(encoding.EncodingError):
        encoding.decode(b"x" * 2000, None, limit=1000)
    assert encoding.decode(b"x" * 1000, "identity", limit=1000) == b"x" * 1000


def test_brotli_bomb_stops_at_the_limit_without_decoding_it_all():
    bomb = brotli.compress(b"\0" * (64 << 20), quality=1)  # a few kilobytes
    with pytest.raises(encoding.EncodingError):
        encoding.decode(bomb, "br", limit=4 << 20)


def test_multi_member_gzip_is_decoded_whole():
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert encoding.decode(body, "gzip") == b"first second"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br"])
def test_a_streamed_bomb_stops_at_the_limit_chunk_by_chunk(coding):
    # A streamed response is decoded in mitmproxy's streaming callback: never past the limit.
    limit = 4 << 20
    bomb = encoding.encode(b"\0" * (64 << 20), coding)
    assert len(bomb) < (1 << 20)
    dec = encoding.IncrementalDecoder(coding, limit=limit)
    seen = 0
    with pytest.raises(encoding.EncodingError, match="exceeds"):
        for i in range(0, len(bomb), 16384):
            out = dec.feed(bomb[i:i + 16384])
            seen += len(out)
            assert seen <= limit
    small = b"event: x\ndata: y\n\n" * 1000
    dec = encoding.IncrementalDecoder(coding, limit=limit)  # (and a real stream passes)
    body = encoding.encode(small, coding)
    assert b"".join(dec.feed(body[i:i + 100]) for i in range(0, len(body), 100)) \
        + dec.close() == small


def test_gzip_members_are_bounded_in_number_and_decoded_in_linear_time(monkeypatch):
    # Each member's end copies the rest of its input: 150,000 tiny members in one body took
    # seconds while the whole body was handed over at once.
    tiny = gzip.compress(b"x")
    many = tiny * 150_000
    assert encoding.decode(many, "gzip") == b"x" * 150_000  # (in well under a second)
    monkeypatch.setattr(encoding, "MAX_MEMBERS", 1000)
    with pytest.raises(encoding.EncodingError, match="gzip members"):
        encoding.decode(tiny * 1001, "gzip")
    assert encoding.decode(tiny * 1000 + b"\0" * 10, "gzip") == b"x" * 1000


@pytest.mark.parametrize("tail", [b"garbage", b"\x1f", b"\x1f\x8b\x08"])
def test_gzip_body_with_garbage_or_a_cut_member_after_the_first_is_an_error(tail):
    with pytest.raises(encoding.EncodingError):
        encoding.decode(gzip.compress(b"first") + tail, "gzip")


def test_deflate_zlib_wrapped_or_raw_and_bytes_after_it_ignored():
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert encoding.decode(raw.compress(b"raw body") + raw.flush(), "deflate") == b"raw body"
    assert encoding.decode(zlib.compress(b"wrapped") + b"xx", "deflate") == b"wrapped"
    with pytest.raises(encoding.EncodingError):
        encoding.decode(zlib.compress(b"wrapped")[:-3], "deflate")


@pytest.mark.parametrize("rechunk", [1, 7, 100, 1 << 20])
def test_a_streamed_gzip_body_of_many_members_is_decoded_whole(rechunk):
    # A server may gzip each event as a member of its own; the stream goes on after the first.
    events = [b"event: e%d\ndata: {\"n\": %d}\n\n" % (i, i) for i in range(300)]
    wire = b"".join(gzip.compress(e) for e in events) + b"\0" * 8  # (zero padding at the end)
    dec = encoding.IncrementalDecoder("gzip")
    out = b"".join(dec.feed(wire[i:i + rechunk]) for i in range(0, len(wire), rechunk))
    assert out + dec.close() == b"".join(events)


def test_a_streamed_gzip_body_with_garbage_after_a_member_is_an_error():
    dec = encoding.IncrementalDecoder("gzip")
    assert dec.feed(gzip.compress(b"first ")) == b"first "
    with pytest.raises(encoding.EncodingError):
        dec.feed(b"not a gzip member")


def test_streamed_gzip_members_are_bounded_and_cost_no_quadratic_copying(monkeypatch):
    monkeypatch.setattr(encoding, "MAX_MEMBERS", 5000)
    tiny = gzip.compress(b"x")
    dec = encoding.IncrementalDecoder("gzip")
    assert dec.feed(tiny * 4000) == b"x" * 4000  # one chunk, many members: linear work
    with pytest.raises(encoding.EncodingError, match="gzip members"):
        dec.feed(tiny * 1001)
