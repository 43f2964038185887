"""End to end: the official SDKs -> real mitmdump + Headroom -> a local fake upstream."""

import hashlib
import json

import anthropic
import httpx
import httpx2  # the HTTP library the official SDKs are built on
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core import encoding

MSG = [{"role": "user", "content": "Hello, wörld — 你好 😀"}]


def anthropic_client(proxy, capture, regular=False, **kw):
    if regular:
        http_client = httpx2.Client(proxy=proxy.url, verify=proxy.verify,
                                    event_hooks={"request": [capture]})
        return anthropic.Anthropic(api_key="sk-ant-api03-fake", base_url="https://api.anthropic.com",
                                   http_client=http_client, max_retries=0, **kw)
    return anthropic.Anthropic(api_key="sk-ant-api03-fake", base_url=proxy.url, max_retries=0,
                               http_client=httpx2.Client(event_hooks={"request": [capture]}), **kw)


def openai_client(proxy, capture, regular=False):
    if regular:
        http_client = httpx2.Client(proxy=proxy.url, verify=proxy.verify,
                                    event_hooks={"request": [capture]})
        return openai.OpenAI(api_key="sk-proj-fake", base_url="https://api.openai.com/v1",
                             http_client=http_client, max_retries=0)
    return openai.OpenAI(api_key="sk-proj-fake", base_url=proxy.url + "/v1", max_retries=0,
                         http_client=httpx2.Client(event_hooks={"request": [capture]}))


def sent_fields(request) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in request.headers.raw]


@pytest.mark.parametrize("mode", ["reverse", "regular"])
def test_anthropic_sdk_bytes_reach_upstream_identical(mode, request, upstream, capture):
    proxy = request.getfixturevalue(f"{mode}_proxy")
    client = anthropic_client(proxy, capture, regular=mode == "regular")
    before = len(proxy.events(settle=0.1))
    msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MSG,
                                 extra_headers={"X-Headroom-Session": "s1", "x-headroom-note": "n"})
    assert msg.content[0].text == "Hello from the fake upstream."
    (rec,) = upstream.requests_to("/v1/messages")
    assert rec.sha256 == capture.last_sha()
    assert rec.scheme == ("https" if mode == "regular" else "http")
    # internal headers gone, every other header in the client's order and case
    names = [n for n, _ in rec.fields]
    assert not [n for n in names if n.lower().startswith("x-headroom-")]
    client_fields = [f for f in sent_fields(capture.last) if not f[0].lower().startswith("x-headroom-")]
    def comparable(fields):  # reverse mode rewrites Host to the upstream (mitmproxy's job)
        return [(n, v) for n, v in fields if n.lower() != "host"]
    assert comparable(rec.fields) == comparable(client_fields)
    ev = proxy.events(wait_for=before + 1)[-1]
    assert ev["provider"] == "anthropic" and ev["model"] == "claude-sonnet-4-6"
    assert ev["stripped_headers"] == 2 and ev["status"] == 200


@pytest.mark.parametrize("mode", ["reverse", "regular"])
def test_sse_reaches_client_before_upstream_finishes(mode, request, upstream, capture):
    proxy = request.getfixturevalue(f"{mode}_proxy")
    client = anthropic_client(proxy, capture, regular=mode == "regular")
    gate = f"first-{mode}"
    stream = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=MSG, stream=True,
        extra_headers={"x-test-scenario": f"gate:{gate},events:3"})
    events = iter(stream)
    first = next(events)
    assert first.type == "message_start"
    upstream.gate(gate).set()  # only now may the upstream send the rest
    rest = list(events)
    assert rest[-1].type == "message_stop"
    assert upstream.gate_state(gate).released_in_time is True
    (rec,) = upstream.requests_to("/v1/messages")
    assert rec.sha256 == capture.last_sha()


def test_sse_bytes_identical_at_the_client(reverse_proxy, upstream):
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 5, "messages": MSG}).encode()
    direct = httpx.post(upstream.url + "/v1/messages", content=body,
                        headers={"content-type": "application/json", "x-test-scenario": "events:40"})
    via = httpx.post(reverse_proxy.url + "/v1/messages", content=body,
                     headers={"content-type": "application/json", "x-test-scenario": "events:40"})
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.content == direct.content


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_chat_and_responses(kind, stream, regular_proxy, upstream, capture):
    client = openai_client(regular_proxy, capture, regular=True)
    if kind == "chat":
        out = client.chat.completions.create(model="gpt-5", messages=MSG, stream=stream,
                                             extra_headers={"X-Headroom-A": "1"})
        text = "".join(c.choices[0].delta.content or "" for c in out if c.choices) if stream \
            else out.choices[0].message.content
    else:
        out = client.responses.create(model="gpt-5", input="hi", stream=stream,
                                      extra_headers={"X-Headroom-A": "1"})
        text = next(e.response.output_text for e in out if e.type == "response.completed") \
            if stream else out.output_text
    assert text
    (rec,) = upstream.requests_to("/chat/completions" if kind == "chat" else "/v1/responses")
    assert rec.sha256 == capture.last_sha()
    assert rec.header("x-headroom-a") is None and rec.header("authorization") == "Bearer sk-proj-fake"


WEIRD_BODIES = [
    b'{ "model" :"m" ,\n\t"messages":[ ] , "max_tokens" : 1.0 }',
    b'{"model":"m","n":123456789012345678901234567890,"messages":[]}',
    b'{"model":"m","model":"m2","messages":[{"role":"user","content":"dup keys"}]}',
    '{"model":"m","messages":[{"role":"user","content":"raw non-ASCII: é 你好 😀"}]}'.encode(),
    b'{"model":"m","messages":[{"role":"user","content":"escaped \\u00e9 \\ud83d\\ude00 \\ud800"}]}',
    b'{"model":"m","temperature":1.0e0,"top_p":0.10,"messages":[]}   \n',
    b'\xef\xbb\xbf{"model":"m","messages":[]}',
    b'{"model":"m",',  # malformed
    b'\xff\xfe not utf-8 at all',
]


@pytest.mark.parametrize("coding", [None, "gzip", "br", "zstd", "deflate"])
@pytest.mark.parametrize("body", WEIRD_BODIES)
def test_unusual_bodies_and_codings_pass_byte_identical(reverse_proxy, upstream, body, coding):
    raw = encoding.encode(body, coding) if coding else body
    h = {"content-type": "application/json"}
    if coding:
        h["content-encoding"] = coding
    for path in ("/v1/messages", "/v1/responses"):
        upstream.clear()
        r = httpx.post(reverse_proxy.url + path, content=raw, headers=h)
        assert r.status_code == 200
        (rec,) = upstream.received
        assert rec.sha256 == hashlib.sha256(raw).hexdigest()
        assert rec.header("content-encoding") == coding


def test_bypass_header(reverse_proxy, upstream, capture):
    client = anthropic_client(reverse_proxy, capture)
    before = len(reverse_proxy.events(settle=0.1))
    client.messages.create(model="claude-x", max_tokens=8, messages=MSG,
                           extra_headers={"x-headroom-bypass": "1"})
    (rec,) = upstream.requests_to("/v1/messages")
    assert rec.sha256 == capture.last_sha() and rec.header("x-headroom-bypass") is None
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["decisions"] == {"bypass": True}


def test_non_llm_host_passes_through_unlogged(regular_proxy, upstream):
    before = len(regular_proxy.events(settle=0.1))
    with httpx.Client(proxy=regular_proxy.url, verify=regular_proxy.verify) as c:
        r = c.post("https://gateway.test/v1/other?x=1", content=b"\x00\x01binary",
                   headers={"X-Headroom-Note": "1", "X-Custom": "Kept"})
    assert r.text == "hello from a non-LLM upstream\n"
    (rec,) = upstream.received
    assert rec.body == b"\x00\x01binary" and rec.header("x-custom") == "Kept"
    assert rec.header("x-headroom-note") is None
    assert len(regular_proxy.events(settle=0.2)) == before


def test_internal_error_forwards_original_bytes(reverse_proxy, upstream, capture):
    client = anthropic_client(reverse_proxy, capture)
    before = len(reverse_proxy.events(settle=0.1))
    msg = client.messages.create(model="claude-x", max_tokens=8, messages=MSG,
                                 extra_headers={"x-test-fault": "1", "x-headroom-a": "1"})
    assert msg.content
    (rec,) = upstream.requests_to("/v1/messages")
    assert rec.sha256 == capture.last_sha() and rec.header("x-headroom-a") is None
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["decisions"]["error"] == "RuntimeError"
    assert "internal_error" in reverse_proxy.log()


def test_truncated_stream_is_logged_as_error(reverse_proxy, upstream):
    before = len(reverse_proxy.events(settle=0.1))
    body = json.dumps({"model": "m", "stream": True, "messages": MSG}).encode()
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("POST", reverse_proxy.url + "/v1/messages", content=body,
                          headers={"content-type": "application/json", "x-test-scenario": "drop"}) as r:
            for _ in r.iter_bytes():
                pass
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["error"] and ev["status"] == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       indent=st.sampled_from([None, 1, 4]), ensure_ascii=st.booleans(),
       coding=st.sampled_from([None, "gzip", "br", "zstd", "deflate"]))
def test_property_random_json_passes_byte_identical(reverse_proxy, upstream, doc, indent, ensure_ascii, coding):
    body = json.dumps({"model": "m", **doc}, indent=indent, ensure_ascii=ensure_ascii).encode()
    raw = encoding.encode(body, coding) if coding else body
    h = {"content-type": "application/json", **({"content-encoding": coding} if coding else {})}
    upstream.clear()
    httpx.post(reverse_proxy.url + "/v1/messages", content=raw, headers=h)
    (rec,) = upstream.received
    assert rec.body == raw


def test_request_body_streaming_does_not_leak_internal_headers(upstream, tmp_path):
    """With mitmproxy's stream_large_bodies the headers go upstream before the `request` hook:
    internal headers are stripped early; the streamed body passes through uninspected."""
    from tests.e2e.proxy import Mitmdump

    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path,
                  extra_args=["--set", "stream_large_bodies=1k"]) as p:
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
        h = {"x-headroom-secret": "s", "content-type": "application/json"}
        httpx.post(p.url + "/v1/messages", content=big.encode(), headers=h)
        httpx.post(p.url + "/upload", content=b"y" * 5000, headers=h)
        ev = p.events(wait_for=1)[-1]
    llm, other = upstream.received
    assert llm.header("x-headroom-secret") is None and other.header("x-headroom-secret") is None
    assert llm.body == big.encode() and other.body == b"y" * 5000
    assert ev["stripped_headers"] == 1 and ev["decisions"]["passthrough"] == "body-streamed"
