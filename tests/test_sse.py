import logging
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.sse import SSEEvent, SSEParser

STREAMS = Path(__file__).parent / "data" / "streams"
FIXTURES = sorted(STREAMS.glob("*.sse"))


def parse(data: bytes, chunks: list[int] | None = None, **kw) -> tuple[list[SSEEvent], SSEParser]:
    """Feed `data` cut at the given offsets (None: in one piece), then close."""
    p = SSEParser(**kw)
    events: list[SSEEvent] = []
    cuts = [0, *(chunks or []), len(data)]
    for a, b in pairwise(cuts):
        events += p.feed(data[a:b])
    events += p.close()
    return events, p


def state(p: SSEParser) -> tuple:
    return p.errors, p.overflowed, p.pending_bytes, p.pending_event, p.bytes_fed


def with_endings(data: bytes, eol: bytes) -> bytes:
    return data.replace(b"\n", eol)


# --- framing and fields -------------------------------------------------------------------------


def test_event_data_id_retry():
    data = b'event: ping\ndata: {"a": 1}\nid: 7\nretry: 1500\n\n'
    events, p = parse(data)
    assert events == [SSEEvent("ping", '{"a": 1}', "7", 1500, len(data))]
    assert p.last_event_id == "7" and p.retry == 1500


def test_no_space_after_colon_and_only_one_space_stripped():
    events, _ = parse(b"event:delta\ndata:x\n\ndata:  two spaces\n\n")
    assert [(e.event, e.data) for e in events] == [("delta", "x"), (None, " two spaces")]


def test_multiple_data_lines_joined_with_newline():
    events, _ = parse(b"data: first\ndata:\ndata: third\n\n")
    assert events[0].data == "first\n\nthird"


def test_comments_and_blocks_without_data_dispatch_nothing():
    events, p = parse(b": ping\n\nevent: lonely\n\nid: 3\n\n:\n\ndata: real\n\n")
    assert [(e.event, e.data, e.id) for e in events] == [(None, "real", None)]
    assert p.last_event_id == "3"


def test_field_without_colon_and_unknown_fields():
    data = b"data\nfoo: bar\nretry: 12x\n\n"
    events, _ = parse(data)
    assert events == [SSEEvent(None, "", None, None, len(data))]


def test_id_with_nul_is_ignored():
    events, p = parse(b"id: a\x00b\ndata: x\n\n")
    assert events[0].id is None and p.last_event_id is None


def test_done_marker_is_an_ordinary_event():
    events, _ = parse(b"data: [DONE]\n\n")
    assert events[0].data == "[DONE]"


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_leading_bom_stripped_even_when_split(cut):
    data = b"\xef\xbb\xbfevent: e\ndata: x\n\n"
    events, _ = parse(data, [cut])
    assert [(e.event, e.data) for e in events] == [("e", "x")]


def test_bom_only_at_stream_start():
    events, _ = parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    # Mid-stream the BOM is part of the line, so the field name is not "data".
    assert [e.data for e in events] == ["a"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol):
    data = b"event: a\ndata: 1\ndata: 2\n\nevent: b\ndata: 3\n\n".replace(b"\n", eol)
    events, p = parse(data)
    assert [(e.event, e.data) for e in events] == [("a", "1\n2"), ("b", "3")]
    assert sum(e.size for e in events) == len(data)
    assert p.pending_bytes == 0


def test_mixed_line_endings():
    data = b"event: a\r\ndata: 1\n\r\nevent: b\rdata: 2\r\n\rdata: 3\n\r"
    events, _ = parse(data)
    assert [(e.event, e.data) for e in events] == [("a", "1"), ("b", "2"), (None, "3")]
    assert sum(e.size for e in events) == len(data)


def test_crlf_inside_an_event_is_not_a_blank_line():
    events, _ = parse(b"data: a\r\ndata: b\r\n\r\n")
    assert [e.data for e in events] == ["a\nb"]


def test_terminator_split_across_chunks_dispatches_on_completion():
    p = SSEParser()
    assert p.feed(b"data: a\r\n") == []
    assert p.feed(b"\r") == []  # could still be the start of CRLF
    assert [e.data for e in p.feed(b"\ndata: b")] == ["a"]
    assert [e.data for e in p.feed(b"\n\n")] == ["b"]


def test_bare_cr_terminator_waits_for_next_byte_or_close():
    p = SSEParser()
    assert p.feed(b"data: a\r\r") == []
    assert [e.data for e in p.close()] == ["a"]
    assert p.pending_bytes == 0


def test_unterminated_trailing_event_reported_not_dispatched():
    events, p = parse(b"data: one\n\ndata: tw")
    assert [e.data for e in events] == ["one"]
    assert p.pending_bytes == len(b"data: tw") and p.pending_event


def test_trailing_comment_is_pending_but_not_an_event():
    events, p = parse(b"data: one\n\n: keep-alive\n")
    assert [e.data for e in events] == ["one"]
    assert p.pending_bytes > 0 and not p.pending_event


def test_feed_after_close_is_ignored():
    p = SSEParser()
    p.close()
    assert p.feed(b"data: x\n\n") == [] and p.close() == []


# --- UTF-8 -------------------------------------------------------------------------------------


def test_multibyte_characters_split_at_every_byte():
    text = "🎉 日本語 é 𝄞"
    data = b"data: " + text.encode() + b"\n\n"
    for cut in range(1, len(data)):
        events, p = parse(data, [cut])
        assert [e.data for e in events] == [text], cut
        assert p.errors == 0


def test_invalid_utf8_event_skipped_counted_and_logged_once(caplog):
    data = b"data: ok1\n\ndata: bad \xff\xfe secret\n\ndata: ok2\n\ndata: \xc3\n\ndata: ok3\n\n"
    with caplog.at_level(logging.WARNING, logger="headroom.sse"):
        events, p = parse(data)
    assert [e.data for e in events] == ["ok1", "ok2", "ok3"]
    assert p.errors == 2 and not p.intact
    warnings = [r for r in caplog.records if r.name == "headroom.sse"]
    assert len(warnings) == 1
    assert "secret" not in warnings[0].getMessage()


# --- size cap ----------------------------------------------------------------------------------


def test_never_terminated_event_overflows_and_releases_memory():
    p = SSEParser(max_event_bytes=4096)
    first = p.feed(b"data: before\n\ndata: ")
    assert [e.data for e in first] == ["before"]
    for _ in range(100):
        assert p.feed(b"x" * 100) == []
    assert p.overflowed and not p.intact
    assert p.buffered_bytes == 0
    assert p.feed(b"\n\ndata: after\n\n") == []  # parsing stays off for the rest of the stream
    assert p.close() == []
    assert p.bytes_fed == len(b"data: before\n\ndata: ") + 100 * 100 + len(b"\n\ndata: after\n\n")


def test_oversized_complete_event_in_one_chunk_overflows_too():
    events, p = parse(
        b"data: ok\n\ndata: " + b"y" * 200 + b"\n\ndata: later\n\n", max_event_bytes=100
    )
    assert [e.data for e in events] == ["ok"]
    assert p.overflowed


def test_event_exactly_at_the_cap_is_fine():
    data = b"data: " + b"z" * 92 + b"\n\n"
    assert len(data) == 100
    events, p = parse(data, max_event_bytes=100)
    assert len(events) == 1 and not p.overflowed


# --- chunk-boundary invariance -----------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.stem)
def test_every_single_split_gives_identical_events(fixture, eol):
    data = with_endings(fixture.read_bytes(), eol)
    whole, p = parse(data)
    assert whole
    for cut in range(1, len(data)):
        events, q = parse(data, [cut])
        assert events == whole, cut
        assert state(q) == state(p)


@settings(max_examples=60, deadline=None)
@given(
    fixture=st.sampled_from(FIXTURES),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40),
)
def test_random_multi_splits_give_identical_events(fixture, eol, cuts):
    data = with_endings(fixture.read_bytes(), eol)
    offsets = sorted({c % (len(data) + 1) for c in cuts})
    whole, p = parse(data)
    events, q = parse(data, offsets)
    assert events == whole
    assert state(q) == state(p)


# --- hostile input ------------------------------------------------------------------------------

SSE_ALPHABET = st.sampled_from(
    [
        b"\n",
        b"\r",
        b"\r\n",
        b"data:",
        b"data: ",
        b"event: x",
        b"id: 1",
        b"retry: 5",
        b":",
        b" ",
        b"a",
        b"\xff",
        b"\xf0\x9f",
        b"\x98\x80",
        b"\xef\xbb\xbf",
        b"\x00",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(SSE_ALPHABET, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    limit=st.sampled_from([8, 32, 1 << 20]),
)
def test_arbitrary_sse_like_bytes_same_events_however_chunked(pieces, cuts, limit):
    data = b"".join(pieces)
    offsets = sorted({c % (len(data) + 1) for c in cuts})
    whole, p = parse(data, max_event_bytes=limit)
    events, q = parse(data, offsets, max_event_bytes=limit)
    assert events == whole
    assert state(q) == state(p)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=30), limit=st.sampled_from([16, 1 << 20]))
def test_arbitrary_bytes_never_raise(chunks, limit):
    p = SSEParser(max_event_bytes=limit)
    for chunk in chunks:
        for ev in p.feed(chunk):
            assert isinstance(ev.data, str)
    p.close()
    assert p.bytes_fed == sum(map(len, chunks))


# --- skipping whole batches of events nobody reads ---------------------------------------------

_SKIP = frozenset({"content_block_delta", "ping"})
_BLOCK = st.sampled_from([
    b'event: content_block_delta\ndata: {"type":"content_block_delta","text":"a"}\n\n',
    b"event: ping\ndata: {}\n\n",
    b"event: ping\n\n",  # no data: dispatches nothing either way
    b"event: content_block_delta\nid: 7\nretry: 9\ndata: x\ndata: y\n\n",
    b"event: content_block_delta\ndata: \xc3\xa9\n\n",
    b"event: content_block_delta\ndata: \xff\n\n",  # invalid UTF-8: counted, not skipped
    b"event:content_block_delta\ndata: z\n\n",  # (no space)
    b"event: content_block_deltas\ndata: z\n\n",  # another name
    b'event: message_delta\ndata: {"usage":{"output_tokens":3}}\n\n',
    b"data: unnamed\n\n",
    b"id: 5\n\n",
    b": comment\n\n",
    b"\n",  # an extra blank line
    b"event: ping\r\ndata: cr\r\n\r\n",
    b'event: content_block_delta\nevent: message_delta\ndata: {"usage":{}}\n\n',  # renamed
    b"event: ping\nevent\ndata: renamed to the default\n\n",
    b"event: ping\ndata:\n\n",  # an empty data line
    b"event: content_block_delta\ndata: a\n: comment\ndata: b\n\n",
    b"event: content_block_delta\ndata: a\nevent_x: unknown field\n\n",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_BLOCK, max_size=30), st.lists(st.integers(1, 400), max_size=8),
       st.sampled_from([1 << 20, 60]))
def test_a_batch_of_skippable_events_reads_as_the_event_by_event_path(blocks, cuts, limit):
    data = b"".join(blocks)
    offsets = sorted({c for c in cuts if c < len(data)})
    fast_events, fast = parse(data, offsets, max_event_bytes=limit, skip_events=_SKIP)
    slow = SSEParser(max_event_bytes=limit, skip_events=_SKIP)
    slow._skip_run = None  # every event split and looked at one by one
    slow_events = []
    for a, b in pairwise([0, *offsets, len(data)]):
        slow_events += slow.feed(data[a:b])
    slow_events += slow.close()
    assert fast_events == slow_events
    assert state(fast) == state(slow) and slow.last_event_id == fast.last_event_id


def test_an_event_renamed_by_a_later_event_line_is_not_skipped():
    data = (b"event: content_block_delta\ndata: a\n\n" * 3
            + b"event: content_block_delta\nevent: message_delta\ndata: usage\n\n")
    events, p = parse(data, skip_events=_SKIP)
    assert [(e.event, e.data) for e in events] == [("message_delta", "usage")]


def test_deltas_as_providers_send_them_are_recognised_in_one_match():
    deltas = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n' * 50
    p = SSEParser(skip_events=_SKIP)
    assert p._skip_all(bytearray(deltas + b"event: ping\ndata: {}\n\n"))
    assert not p._skip_all(bytearray(deltas + b'event: message_delta\ndata: {}\n\n'))
