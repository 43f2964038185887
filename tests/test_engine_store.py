"""The engine's response-store modes and usage accounting, without a proxy."""

import json

import pytest

from headroom_core import encoding
from headroom_core.flow import RequestIn
from tests.runtime_util import rig

BODY = json.dumps({"model": "claude-x", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
RESP = json.dumps({"type": "message", "content": [{"type": "text", "text": "ok"}],
                   "usage": {"input_tokens": 3, "output_tokens": 2,
                             "cache_read_input_tokens": 40}}).encode()
SSE = (b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x",'
       b'"content":[],"usage":{"input_tokens":3,"cache_read_input_tokens":40,"output_tokens":1}}}\n\n'
       b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
       b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}\n\n'
       b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
       b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}\n\n'
       b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
JSON_H = [(b"content-type", b"application/json"), (b"request-id", b"req_1")]
SSE_H = [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]


def make(tmp_path, mode, **kw):
    return rig(tmp_path, events=tmp_path / "ev.jsonl",
                         store_mode=mode, **kw)


def request(engine, body=BODY, key=b"sk-ant-api-1", extra=()):
    fields = [(b"x-api-key", key), (b"content-type", b"application/json"), *extra]
    return engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                           "/v1/messages", fields, body, False))


def respond(engine, plan, status=200, fields=JSON_H, body=RESP, chunks=None, error=None):
    st = plan.state
    engine.mark_forwarded(st)
    rh = engine.response_headers(st, status, fields)
    if chunks is not None:
        for c in chunks:
            assert rh.stream(c) == c
        body = None
    rec = engine.finish(st, status=status, fields=fields, body=body, error=error)
    engine.flush()
    return rh, rec


def test_cache_mode_miss_then_hit(tmp_path):
    e = make(tmp_path, "cache")
    plan = request(e)
    assert plan.response is None and plan.state.decisions["store"]["decision"] == "miss"
    rh, rec = respond(e, plan)
    assert (b"x-headroom-cache", b"miss") in rh.add_fields
    assert rec["decisions"]["store"]["stored"] is True
    hit = request(e)
    r = hit.response
    assert r.status == 200 and r.body == RESP
    names = dict(r.fields)
    assert names[b"x-headroom-cache"] == b"hit" and names[b"content-length"] == str(len(RESP)).encode()
    assert b"request-id" not in names  # volatile headers are not replayed
    e.close()


def test_stream_entry_round_trip_and_separate_from_buffered(tmp_path):
    e = make(tmp_path, "cache")
    sbody = json.dumps({**json.loads(BODY), "stream": True}).encode()
    plan = request(e, sbody)
    chunks = [SSE[:100], SSE[100:101], SSE[101:]]
    _, rec = respond(e, plan, fields=SSE_H, chunks=chunks)
    assert rec["stream_state"] == "complete" and rec["usage"]["cache_read_tokens"] == 40
    hit = request(e, sbody)
    assert hit.response.body == SSE
    assert request(e).response is None  # the buffered twin is its own entry
    e.close()


@pytest.mark.parametrize("status,chunks,error", [
    (200, [SSE[:200]], "connection reset"),  # truncated
    (200, [SSE.replace(b"message_stop", b"error")], None),  # no terminal event
    (529, None, None),  # error status
])
def test_incomplete_or_failed_responses_are_not_stored(tmp_path, status, chunks, error):
    e = make(tmp_path, "cache")
    sbody = json.dumps({**json.loads(BODY), "stream": chunks is not None}).encode()
    plan = request(e, sbody)
    _, rec = respond(e, plan, status=status, fields=SSE_H if chunks else JSON_H,
                     chunks=chunks, error=error)
    assert rec["decisions"]["store"].get("stored") is False
    assert request(e, sbody).response is None
    e.close()


def test_replay_miss_explains_difference(tmp_path):
    e = make(tmp_path, "record")
    respond(e, request(e))
    e.close()
    e = make(tmp_path, "replay")
    other = json.dumps({"model": "claude-x", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "hi"}]}).encode()
    plan = request(e, other)
    assert plan.response is None and plan.deferred is not None  # explained off the event loop
    r = plan.deferred()
    assert r.status == 400
    doc = json.loads(r.body)
    assert doc["type"] == "error" and "max_tokens changed: 5 -> 50" in doc["error"]["message"]
    assert plan.state.decisions["store"]["decision"] == "replay-miss"
    assert request(e).response.status == 200
    e.close()


def test_volatile_fields_and_breakpoints_do_not_change_the_key(tmp_path):
    e = make(tmp_path, "cache")
    respond(e, request(e))
    noisy = json.dumps({"model": "claude-x", "max_tokens": 5, "metadata": {"user_id": "u-123"},
                        "messages": [{"role": "user", "content": [
                            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]})
    plain = json.dumps({"model": "claude-x", "max_tokens": 5, "metadata": {"user_id": "u-999"},
                        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    respond(e, request(e, plain.encode()))
    assert request(e, noisy.encode()).response is not None
    e.close()


def test_controls(tmp_path):
    e = make(tmp_path, "cache")
    respond(e, request(e))
    assert request(e, extra=[(b"x-headroom-cache", b"bypass")]).response is None
    assert request(e, extra=[(b"Cache-Control", b"no-cache")]).response is None
    e.close()
    e = make(tmp_path, "replay")
    # in replay mode only the explicit Headroom control reaches upstream
    assert request(e, extra=[(b"Cache-Control", b"no-cache")]).response.status == 200
    assert request(e, extra=[(b"x-headroom-cache", b"bypass")]).response is None
    e.close()


def test_stats_aggregate_usage_per_session(tmp_path):
    e = make(tmp_path, "off")
    sess = [(b"X-Claude-Code-Session-Id", b"s-1")]
    for _ in range(3):
        respond(e, request(e, extra=sess))
    respond(e, request(e, extra=[(b"X-Claude-Code-Session-Id", b"s-2")]), status=500,
            body=b"{}")
    t = e.stats.total
    assert t.requests == 4 and t.errors == 1 and t.cache_read_tokens == 120
    assert sorted(x.requests for x in e.stats.sessions.values()) == [1, 3]
    e.close()


def test_hit_decoded_for_a_client_that_does_not_accept_the_stored_coding(tmp_path):
    e = make(tmp_path, "cache")
    gz = encoding.encode(RESP, "gzip")
    respond(e, request(e), fields=JSON_H + [(b"content-encoding", b"gzip")], body=gz)
    hit = request(e, extra=[(b"accept-encoding", b"gzip, br")]).response
    assert hit.body == gz and dict(hit.fields)[b"content-encoding"] == b"gzip"
    plain = request(e, extra=[(b"accept-encoding", b"identity")]).response
    assert plain.body == RESP and b"content-encoding" not in dict(plain.fields)
    assert dict(plain.fields)[b"content-length"] == str(len(RESP)).encode()
    e.close()


def test_a_recording_that_inflates_past_the_bound_is_not_decoded_for_a_client(tmp_path,
                                                                            monkeypatch):
    # 1 MB of gzip can hold 1 GB: served decoded, it was built on the event loop, unbounded.
    monkeypatch.setattr(encoding, "STREAM_LIMIT", len(RESP) - 1)
    e = make(tmp_path, "cache")
    gz = encoding.encode(RESP, "gzip")
    respond(e, request(e), fields=JSON_H + [(b"content-encoding", b"gzip")], body=gz)
    assert request(e, extra=[(b"accept-encoding", b"gzip")]).response.body == gz  # as recorded
    plain = request(e, extra=[(b"accept-encoding", b"identity")])
    assert plain.response is None  # not served: a miss, the upstream answers
    assert plain.state.decisions["store"]["decision"] == "miss"
    e.close()


def test_requests_without_a_tenant_never_share_store_entries(tmp_path):
    e = make(tmp_path, "cache")
    anon = e.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                      "/v1/messages", [], BODY, False))
    assert anon.state.decisions["store"]["decision"] == "no-tenant" and not anon.state.store_write
    e.close()
    e = make(tmp_path, "replay")
    refused = e.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                         "/v1/messages", [], BODY, False))
    assert refused.response.status == 400 and b"headroom_namespace" in refused.response.body
    e.close()
    e = rig(tmp_path, events="off", store_mode="cache", namespace="ci")
    p = e.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                   "/v1/messages", [], BODY, False))
    assert p.state.store_write  # an explicit namespace is a tenant
    e.close()


@pytest.mark.parametrize("through", ["engine", "runtime"])
def test_a_stream_whose_end_had_passed_is_whole_however_the_connection_ended(tmp_path, through):
    # The OpenAI SDK's sync stream hangs up once it reads `data: [DONE]`, often before the
    # upstream's last bytes (the chunked terminator) reached the proxy: the flow ends in an error.
    e = make(tmp_path, "cache")
    sbody = json.dumps({**json.loads(BODY), "stream": True}).encode()
    plan = request(e, sbody)
    if through == "engine":
        _, rec = respond(e, plan, fields=SSE_H, chunks=[SSE], error="Client disconnected.")
    else:  # the store decision is taken on the event loop, the record in the background
        e.mark_forwarded(plan.state)
        assert e.response_headers(plan.state, 200, SSE_H).stream(SSE) == SSE
        e.finish_later(plan.state, status=200, fields=SSE_H, body=None,
                       error="Client disconnected.")
        e.flush()
        rec = json.loads((tmp_path / "ev.jsonl").read_text().splitlines()[-1])
    assert rec["stream_state"] == "complete" and rec["error"] is None
    assert rec["decisions"]["stream"]["closed_after_end"] == "Client disconnected."
    assert rec["decisions"]["store"]["stored"] is True
    assert request(e, sbody).response.body == SSE
    e.close()


CHAT_SSE = (b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,'
            b'"delta":{"role":"assistant","content":"ok"},"finish_reason":null}]}\n\n'
            b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,'
            b'"delta":{},"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
            b'data: [DONE]\n\n')


@pytest.mark.parametrize("cut,stored", [
    (len(CHAT_SSE), True),  # [DONE] had passed
    (CHAT_SSE.index(b'data: [DONE]'), False),  # every choice finished, but not the stream
    (CHAT_SSE.index(b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-x",'
                    b'"choices":[]'), False),  # the usage chunk never came
    (len(CHAT_SSE) - 3, False),  # a last event cut short
])
def test_only_a_chat_stream_that_reached_done_is_whole_when_the_client_hangs_up(tmp_path, cut,
                                                                                stored):
    e = make(tmp_path, "cache")
    body = json.dumps({"model": "gpt-x", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()

    def ask():
        return e.handle_request(RequestIn("f", "POST", "https", "api.openai.com", 443,
                                          "/v1/chat/completions",
                                          [(b"authorization", b"Bearer sk-proj-1"),
                                           (b"content-type", b"application/json")], body, False))

    _, rec = respond(e, ask(), fields=SSE_H, chunks=[CHAT_SSE[:cut]], error="Client disconnected.")
    assert rec["decisions"]["store"]["stored"] is stored
    assert (rec["error"] is None) is stored
    hit = ask().response
    assert (hit.body if hit else None) == (CHAT_SSE if stored else None)
    e.close()


def test_no_credential_reaches_the_store_in_any_spelling(tmp_path):
    # The stored request is compressed on disk: a grep of the files proves nothing, so every
    # entry is read back and searched whole.
    e = make(tmp_path, "cache")
    secrets = {"x-api-key": "sk-ant-api03-S3CRET-k", "authorization": "Bearer S3CRET-bearer",
               "chatgpt-account-id": "S3CRET-acct", "cookie": "sid=S3CRET-cookie",
               "openai-organization": "S3CRET-org", "x-portkey-api-key": "S3CRET-portkey"}
    params = ["key", "api-key", "apiKey", "accessToken", "authToken", "sessionToken",
              "clientSecret", "jwt", "bearer", "pwd", "sig", "code", "X-Amz-Security-Token"]
    query = "&".join(f"{p}=S3CRET-q{i}" for i, p in enumerate(params)) + "&beta=true"
    fields = [(n.title().encode(), v.encode()) for n, v in secrets.items()]
    fields.append((b"content-type", b"application/json"))
    for stream in (False, True):
        body = json.dumps({**json.loads(BODY), "stream": stream}).encode()
        plan = e.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                          "/v1/messages?" + query, fields, body, False))
        respond(e, plan, fields=SSE_H if stream else JSON_H, body=RESP,
                chunks=[SSE] if stream else None)
    store = e.state.store
    keys = list(store.keys())
    assert len(keys) == 2
    for k in keys:
        entry = store.get(k)
        seen = repr((entry.request, entry.headers, entry.body, entry.chunks, store.meta(k)))
        assert "beta" in seen and "S3CRET" not in seen, seen[:2000]
    e.close()
