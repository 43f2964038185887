"""The cassette document: readable, deterministic, byte-exact on the way back, loud when broken."""

import gzip
import json
import re

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import cachekey, cassette, storemode
from headroom_core.cassette import CassetteError
from headroom_core.store import Entry
from tests.e2e.fake_upstream import anthropic_stream, chat_stream, responses_json

SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]


def request(model="claude-x", **body):
    return cachekey.canonical_request(
        provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
        path="/v1/messages", fields=[(b"anthropic-version", b"2023-06-01")],
        body=json.dumps({"model": model, "max_tokens": 8, **body}).encode(),
        tenant=cassette.TENANT)


def roundtrip(entry):
    kept = cassette.prepare(entry)
    key = cachekey.request_key(kept.request)
    data = cassette.encode(key, kept)
    got_key, got = cassette.decode(data)
    assert got_key == key
    assert (got.status, got.headers, got.body, got.chunks) == (
        kept.status, kept.headers, kept.body, kept.chunks)
    return data, got


def stream_entry(pieces, dt=0.004, fields=SSE, req=None):
    return Entry(200, list(fields), b"", [(i * dt, p) for i, p in enumerate(pieces)],
                 req or request(stream=True))


def test_sse_stream_is_one_event_per_line_with_delays_and_replays_byte_exact():
    pieces = list(anthropic_stream("claude-x", 3))
    data, got = roundtrip(stream_entry(pieces))
    assert got.body == b"".join(pieces)
    text = data.decode()
    events = [line.strip() for line in text.splitlines() if '"delay_ms"' in line]
    assert len(events) == len(pieces)
    assert events[0].startswith('{"delay_ms": 0, "event": "message_start", "json": {')
    # the fake writes \u escapes; the file shows the text itself, the stream is flagged ascii
    assert '"text":"Hello 1 é😀 "' in text and '"ascii": true' in text
    assert all(json.loads(e.rstrip(","))["delay_ms"] == 4 for e in events[1:])
    assert [t for t, _ in got.chunks] == [i * 0.004 for i in range(len(pieces))]


def test_document_is_sorted_json_ending_in_a_newline():
    data, _ = roundtrip(stream_entry(list(anthropic_stream("m", 1))))
    doc = json.loads(data)
    assert list(doc) == sorted(doc) and list(doc["response"]) == sorted(doc["response"])
    assert list(doc["request"]) == sorted(doc["request"])
    for ev in doc["response"]["body"]["events"]:
        assert list(ev) == sorted(ev)
    assert data.endswith(b"}\n") and doc["format"] == cassette.FORMAT


def test_utf8_stream_and_raw_data_events():
    body = ("event: x\ndata: {\"text\":\"café ☕\"}\n\n"
            "data: [DONE]\n\n").encode()
    data, got = roundtrip(stream_entry([body]))
    assert got.body == body and b'"ascii"' not in data
    assert '{"delay_ms": 0, "event": "x", "json": {"text":"café ☕"}}' in data.decode()
    assert '{"data": "[DONE]", "delay_ms": 0}' in data.decode()


@pytest.mark.parametrize("piece", [
    b"event: x\r\ndata: {}\r\n\r\n",  # CRLF framing
    b": keep-alive comment\n\n",
    b"id: 7\nevent: x\ndata: {}\n\n",
    b"data: line one\ndata: line two\n\n",
    b"event: x\ndata: {\"a\": 1}\n\n",  # JSON no serializer writes back exactly: kept as data
    b'data: {"n":1e5,"f":1.50}\n\n',
    b'data: {"a":1,"a":2}\n\n',
    b"data: {\"big\":123456789012345678901234567890}\n\n",
    b"data: unterminated tail",
    b"\xff\xfe binary \x00\n\n",
])
def test_odd_events_stay_exact(piece):
    pieces = [b"data: {\"ok\":true}\n\n", piece]
    _, got = roundtrip(stream_entry(pieces))
    assert got.body == b"".join(pieces)


def test_an_event_split_across_chunks_takes_the_time_its_last_byte_arrived():
    ev = b'event: a\ndata: {"type":"x"}\n\n'
    chunks = [(0.0, ev[:10]), (0.010, ev[10:] + ev[:5]), (0.025, ev[5:])]
    kept = cassette.prepare(Entry(200, SSE, b"", chunks, request(stream=True)))
    assert kept.chunks == [(0.01, ev), (0.025, ev)]
    roundtrip(Entry(200, SSE, b"", chunks, request(stream=True)))


def test_openai_chat_stream():
    pieces = list(chat_stream("gpt-x", 4))
    data, got = roundtrip(stream_entry(pieces))
    assert got.body == b"".join(pieces) and b'"data": "[DONE]"' in data


@pytest.mark.parametrize("body,form", [
    (json.dumps({"b": 1, "a": "é"}, separators=(",", ":")).encode(), '"ascii": true'),
    (b'{"b":1,"a":"\xc3\xa9"}', '"json": {'),
    (json.dumps(responses_json("gpt-x"), indent=2).encode() + b"\n", '"newline": true'),
    (b"plain text answer \xe2\x9c\x93", '"text": "plain text answer ✓"'),
    (b"\x89PNG\r\n\x1a\n\x00", '"base64": "iVBORw0KGgoA"'),
    (b"", '"text": ""'),
    (b'{"a": 1}', '"text"'),
])
def test_buffered_bodies(body, form):
    data, got = roundtrip(Entry(200, JSON, body, None, request()))
    assert got.body == body and form in data.decode()


def test_json_body_keeps_recorded_key_order():
    body = b'{"zeta":1,"alpha":{"y":2,"x":3}}'
    data, got = roundtrip(Entry(200, JSON, body, None, request()))
    assert got.body == body
    assert data.index(b'"zeta"') < data.index(b'"alpha"') < data.index(b'"y"') < data.index(b'"x"')


def test_credentials_accounts_and_volatile_headers_are_never_written():
    fields = [(b"Content-Type", b"application/json"), (b"x-api-key", b"sk-ant-secret"),
              (b"Authorization", b"Bearer sk-secret"), (b"set-cookie", b"__cf=secret"),
              (b"chatgpt-account-id", b"acct-secret"), (b"openai-organization", b"org-secret"),
              (b"anthropic-organization-id", b"org-secret"), (b"request-id", b"req_1"),
              (b"date", b"Mon"), (b"anthropic-ratelimit-tokens-remaining", b"9"),
              (b"x-headroom-cache", b"miss"), (b"Strict-Transport-Security", b"max-age=1")]
    data, got = roundtrip(Entry(200, fields, b"{}", None, request()))
    assert b"secret" not in data and b"req_1" not in data and b"Mon" not in data
    assert got.headers == [(b"Content-Type", b"application/json"),
                           (b"Strict-Transport-Security", b"max-age=1")]


def test_content_coded_bodies_are_kept_decoded():
    raw = json.dumps({"a": "b"}, separators=(",", ":")).encode()
    fields = [*JSON, (b"content-encoding", b"gzip")]
    data, got = roundtrip(Entry(200, fields, gzip.compress(raw), None, request()))
    assert got.body == raw and got.headers == JSON and b'"json": {' in data
    events = b"".join(anthropic_stream("m", 2))
    c = zstandard.ZstdCompressor().compressobj()
    z1 = c.compress(events[:100]) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    z2 = c.compress(events[100:]) + c.flush()
    _, got = roundtrip(stream_entry([z1, z2], fields=[*SSE, (b"content-encoding", b"zstd")]))
    assert got.body == events and len(got.chunks) == events.count(b"\n\n")


def test_an_undecodable_coded_body_is_kept_as_recorded():
    fields = [*JSON, (b"content-encoding", b"gzip")]
    data, got = roundtrip(Entry(200, fields, b"\x1f\x8b\x08 cut", None, request()))
    assert got.body == b"\x1f\x8b\x08 cut" and got.headers == fields and b'"base64"' in data
    _, got = roundtrip(stream_entry([b"\x00\x01", b"\x02"], fields=[*SSE, *fields[1:]]))
    assert got.body == b"\x00\x01\x02" and len(got.chunks) == 2


def test_same_answer_same_bytes_and_the_name_is_readable():
    pieces = list(anthropic_stream("claude-sonnet-4-5", 5))
    a, _ = roundtrip(stream_entry(pieces, req=request("claude-sonnet-4-5", stream=True)))
    b, _ = roundtrip(stream_entry(pieces, req=request("claude-sonnet-4-5", stream=True)))
    assert a == b
    key = cachekey.request_key(request("claude-sonnet-4-5", stream=True))
    name = cassette.file_name(key, request("claude-sonnet-4-5", stream=True))
    assert name == f"anthropic-messages-claude-sonnet-4-5-{key[:12]}.json"
    assert cassette.file_name(key, {"provider": "openai", "endpoint": "other"}) == \
        f"openai-other-{key[:12]}.json"
    assert cassette.file_name(key, request("../../etc/passwd x")) == \
        f"anthropic-messages-etc-passwd-x-{key[:12]}.json"


# -- hand edits ------------------------------------------------------------------------------


def test_hand_edited_event_text_is_served_byte_for_byte_with_new_lengths():
    pieces = list(anthropic_stream("claude-x", 3))
    data, _ = roundtrip(stream_entry(pieces))
    edited = data.decode().replace('"text":"Hello 1 é😀 "', '"text":"Bonjour, ça va? 🙂🙂"')
    _, got = cassette.decode(edited.encode())
    want = b"".join(pieces).replace(b"Hello 1 \\u00e9\\ud83d\\ude00 ",
                                    b"Bonjour, \\u00e7a va? \\ud83d\\ude42\\ud83d\\ude42")
    assert got.body == want and len(got.body) != len(b"".join(pieces))
    fields = storemode.hit_fields(got.headers, "k", len(got.body))
    assert (b"content-length", str(len(want)).encode()) in fields


def test_hand_edited_raw_data_and_delays():
    body = b"event: x\ndata: plain words\n\n"
    data, _ = roundtrip(stream_entry([body, body]))
    edited = data.replace(b'"data": "plain words", "delay_ms": 4',
                          b'"data": "other words!", "delay_ms": 250')
    _, got = cassette.decode(edited)
    assert got.body == body + b"event: x\ndata: other words!\n\n"
    assert got.chunks[1][0] == 0.25


# -- broken files ----------------------------------------------------------------------------


def good():
    return roundtrip(stream_entry(list(anthropic_stream("claude-x", 2))))[0].decode()


def line_of(text, needle):
    return text[:text.index(needle)].count("\n") + 1


def broken(text):
    with pytest.raises(CassetteError) as e:
        cassette.decode(text.encode() if isinstance(text, str) else text)
    return e.value


def test_invalid_json_names_the_line():
    text = good()
    bad = text.replace('"status": 200', '"status": 200,')
    assert broken(bad).line == line_of(bad, '"status"') + 1  # the trailing comma's object end
    bad = text.replace('"events": [', '"events": [,')
    e = broken(bad)
    assert e.line == line_of(bad, '"events"') and "invalid JSON" in str(e)


def test_duplicated_key_names_the_line_of_the_second():
    text = good()
    bad = text.replace('    "status": 200', '    "status": 200,\n    "status": 500')
    e = broken(bad)
    assert "duplicated key 'status' in response" in str(e)
    assert e.line == line_of(bad, '"status": 500')
    # inside a recorded event too: the edit would lose one of the two values
    bad = text.replace('{"type":"ping"}', '{"type":"ping","type":"pong"}')
    e = broken(bad)
    assert "duplicated key 'type'" in str(e) and e.line == line_of(bad, '"pong"')


@pytest.mark.parametrize("old,new,message,at", [
    ('    "status": 200\n', '    "statu": 200\n', "unknown field response.statu", '"statu"'),
    ('    "headers": [\n      "content-type: text/event-stream; charset=utf-8"\n    ],\n', '',
     "missing field response.headers", '"response"'),
    ('"status": 200', '"status": "200"', "response.status must be a whole number", '"status"'),
    ('"status": 200', '"status": 1200', "HTTP status", '"status"'),
    ('"content-type: text', '"content-type:text', 'must be a "name: value" string',
     'content-type:text'),
    ('"delay_ms": 4, "event": "ping"', '"delay_ms": -1, "event": "ping"',
     "must not be negative", '"delay_ms": -1'),
    ('{"delay_ms": 4, "event": "ping", "json": {"type":"ping"}}',
     '{"delay_ms": 4, "event": "ping", "json": {"type":"ping"}, "text": "x"}',
     "needs exactly one of", '"text": "x"'),
    ('{"delay_ms": 4, "event": "ping", "json": {"type":"ping"}}',
     '{"delay_ms": 4, "event": "a\\nb", "json": {"type":"ping"}}', "must be one line", 'a\\nb'),
    ('"format": "headroom-cassette/1"', '"format": "headroom-cassette/9"', "is not", '"format"'),
    ('"max_tokens": 8', '"max_tokens": 9', "key does not match the request", '"key"'),
    ('"tenant": "cassette"', '"tenant": "t:abc"', "request.tenant must be", '"tenant"'),
])
def test_broken_fields_name_field_and_line(old, new, message, at):
    text = good()
    assert old in text
    bad = text.replace(old, new, 1)
    e = broken(bad)
    assert message in str(e), str(e)
    assert e.line == line_of(bad, at), (str(e), line_of(bad, at))


def test_not_utf8_and_not_an_object():
    assert "not UTF-8" in str(broken(b'{\n"a": "\xff"}'))
    assert broken(b'{\n"a": "\xff"}').line == 2
    assert "one JSON object" in str(broken(b"[]"))
    assert "invalid JSON" in str(broken(b""))
    assert "not JSON" in str(broken(good().replace('"status": 200', '"status": NaN')))


# -- the format holds for any stream ------------------------------------------------------------

_piece = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda n, d: f"event: {n}\ndata: {d}\n\n".encode(),
              st.text(alphabet="abc._", max_size=8),
              st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                             blacklist_characters="\r\n"), max_size=20)),
    st.builds(lambda v: b"data: " + json.dumps(v, separators=(",", ":")).encode() + b"\n\n",
              st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8),
                                                             st.none()), max_size=3)),
    st.builds(lambda v: b"data: " + json.dumps(v, ensure_ascii=False,
                                               separators=(",", ":")).encode() + b"\n\n",
              # raw UTF-8 on the wire holds no lone surrogate (escaped ones: the builder above)
              st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
                       max_size=3)),
    st.sampled_from([b"\n\n", b"\r\n\r\n", b"data: [DONE]\n\n", b"\n"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30, allow_nan=False), _piece), max_size=12),
       st.booleans())
def test_any_stream_round_trips(chunks, stream):
    if stream:
        entry = Entry(200, SSE, b"", chunks, request(stream=True))
    else:
        entry = Entry(200, JSON, b"".join(c for _, c in chunks), None, request())
    data, got = roundtrip(entry)
    assert got.body == b"".join(c for _, c in chunks)
    assert re.fullmatch(rb"[\x09\x0a\x20-\xff]*", data)  # no raw control characters
    assert cassette.encode(cachekey.request_key(got.request), got) == data  # stable
