"""End to end: streamed and buffered responses of every provider shape through the real proxy:
bytes identical at the client, usage and stream state in the event log (issue: SSE parsing)."""

import json

import httpx
import pytest

SHAPES = {
    "anthropic": ("/v1/messages", {"model": "claude-x", "max_tokens": 9,
                                   "messages": [{"role": "user", "content": "hi"}]}),
    "chat": ("/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", {"model": "gpt-x", "input": "hi"}),
}
# what the fake upstream reports (tests/e2e/fake_upstream.py), normalised
EXPECTED_USAGE = {
    "anthropic": {"input_tokens": 25, "cache_read_tokens": 100, "cache_creation_tokens": 10},
    "chat": {"input_tokens": 20, "cache_read_tokens": 100, "cache_creation_tokens": 0},
    "responses": {"input_tokens": 20, "cache_read_tokens": 100, "cache_creation_tokens": 0},
}


def post(url, body, scenario="", stream=False):
    h = {"content-type": "application/json", "x-test-scenario": scenario}
    return httpx.post(url, content=json.dumps(body).encode(), headers=h, timeout=30)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scenario", ["events:30", "events:30,gzip", "events:300,batch:7",
                                      "events:20,zstd,batch:3", "events:10,br"])
def test_stream_bytes_identical_and_usage_logged(reverse_proxy, upstream, shape, scenario):
    path, body = SHAPES[shape]
    body = {**body, "stream": True}
    direct = post(upstream.url + path, body, scenario)
    before = len(reverse_proxy.events(settle=0.1))
    via = post(reverse_proxy.url + path, body, scenario)
    assert via.content == direct.content  # decoded by httpx identically; raw checked below
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["stream"] is True and ev["stream_state"] == "complete"
    for k, v in EXPECTED_USAGE[shape].items():
        assert ev["usage"][k] == v, (k, ev["usage"])
    assert ev["usage"]["output_tokens"] > 0
    assert ev["ttfb_ms"] is not None and ev["stream_ms"] is not None


@pytest.mark.parametrize("shape", SHAPES)
def test_raw_stream_bytes_identical(reverse_proxy, upstream, shape):
    path, body = SHAPES[shape]
    data = json.dumps({**body, "stream": True}).encode()
    h = {"content-type": "application/json", "x-test-scenario": "events:50,gzip,batch:4"}
    with httpx.stream("POST", upstream.url + path, content=data, headers=h) as r:
        direct = b"".join(r.iter_raw())
    with httpx.stream("POST", reverse_proxy.url + path, content=data, headers=h) as r:
        via = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
    assert via == direct


@pytest.mark.parametrize("shape", SHAPES)
def test_buffered_usage_logged(reverse_proxy, upstream, shape):
    path, body = SHAPES[shape]
    before = len(reverse_proxy.events(settle=0.1))
    r = post(reverse_proxy.url + path, body, "gzip")
    assert r.status_code == 200
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["stream"] is False and ev["stream_state"] is None
    for k, v in EXPECTED_USAGE[shape].items():
        assert ev["usage"][k] == v


def test_dropped_stream_is_truncated(reverse_proxy, upstream):
    path, body = SHAPES["anthropic"]
    before = len(reverse_proxy.events(settle=0.1))
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("POST", reverse_proxy.url + path,
                          content=json.dumps({**body, "stream": True}).encode(),
                          headers={"x-test-scenario": "drop"}) as r:
            for _ in r.iter_raw():
                pass
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["stream_state"] == "truncated"
    assert ev["usage"]["cache_read_tokens"] == 100  # message_start arrived before the drop


def test_error_status_logged(reverse_proxy, upstream):
    path, body = SHAPES["chat"]
    before = len(reverse_proxy.events(settle=0.1))
    r = post(reverse_proxy.url + path, {**body, "stream": True}, "status:529")
    assert r.status_code == 529
    ev = reverse_proxy.events(wait_for=before + 1)[-1]
    assert ev["status"] == 529 and ev["usage"] is None
