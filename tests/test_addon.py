import json

import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow, tutils

from headroom_core import encoding
from tests.addon_util import load_addon_module

mod = load_addon_module()


@pytest.fixture
def ctx(tmp_path):
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path))
        addon.running()
        yield tctx, addon
        addon.done()


def run(tctx, coro):
    return tctx.master.event_loop.run_until_complete(coro)


def llm_flow(body=b'{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}',
             host="api.anthropic.com", path="/v1/messages?beta=true", headers=None, reverse=False):
    f = tflow.tflow()
    f.request = tutils.treq(method=b"POST", host=host, port=443, scheme=b"https",
                            path=path.encode(), content=body,
                            headers=http.Headers(headers or [
                                (b"Content-Type", b"application/json"),
                                (b"X-Api-Key", b"sk-ant-api-secret"),
                                (b"X-Headroom-Trace", b"abc"),
                                (b"Content-Length", str(len(body)).encode())]))
    if reverse:
        f.client_conn.proxy_mode = mode_specs.ProxyMode.parse("reverse:https://gw.internal")
    return f


def events(tmp_path, addon):
    addon.runtime.flush()
    p = tmp_path / "events.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_request_strips_internal_headers_and_keeps_body_bytes(ctx):
    tctx, addon = ctx
    f = llm_flow()
    raw = f.request.raw_content
    run(tctx, addon.request(f))
    assert "x-headroom-trace" not in f.request.headers
    assert [n for n, _ in f.request.headers.fields] == [b"Content-Type", b"X-Api-Key", b"Content-Length"]
    assert f.request.raw_content is raw or f.request.raw_content == raw


def test_full_cycle_writes_one_event(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow()
    f.response = None
    run(tctx, addon.request(f))
    f.response = tutils.tresp(content=b'{"type":"message"}')
    addon.responseheaders(f)
    addon.response(f)
    (rec,) = events(tmp_path, addon)
    assert rec["provider"] == "anthropic" and rec["model"] == "claude-x" and rec["status"] == 200
    assert rec["stripped_headers"] == 1 and rec["transport"] == "http"
    assert addon.states == {}


def test_non_llm_flow_passes_untouched_and_unlogged(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow(host="example.com", path="/api")
    before = f.request.headers.fields
    run(tctx, addon.request(f))
    assert f.request.headers.fields == tuple(x for x in before if x[0] != b"X-Headroom-Trace")
    f.response = tutils.tresp()
    addon.response(f)
    assert events(tmp_path, addon) == []


def test_reverse_mode_classifies_by_path(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow(host="gw.internal", path="/v1/chat/completions",
                 body=b'{"model":"gpt-x","messages":[]}', reverse=True)
    run(tctx, addon.request(f))
    assert addon.states[f.id].route.endpoint == "chat_completions"


def test_sse_response_is_streamed_with_tee(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow(body=b'{"model":"m","stream":true,"messages":[]}')
    run(tctx, addon.request(f))
    f.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=b"")
    addon.responseheaders(f)
    assert callable(f.response.stream)
    assert f.response.stream(b"event: ping\ndata: {}\n\n") == b"event: ping\ndata: {}\n\n"
    addon.response(f)
    (rec,) = events(tmp_path, addon)
    assert rec["resp_bytes"] == len(b"event: ping\ndata: {}\n\n") and rec["ttfb_ms"] is not None


def test_error_hook_records_failure(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow()
    run(tctx, addon.request(f))
    f.error = tflow.terr("connection killed")
    addon.error(f)
    (rec,) = events(tmp_path, addon)
    assert rec["error"] == "connection killed" and rec["status"] is None


def test_big_body_processed_off_loop_still_byte_identical(ctx):
    tctx, addon = ctx
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (1 << 20)}]}).encode()
    body = encoding.encode(big, "zstd")
    f = llm_flow(body=body, headers=[(b"Content-Encoding", b"zstd"), (b"X-Headroom-A", b"1")])
    run(tctx, addon.request(f))
    assert f.request.raw_content == body
    assert list(f.request.headers.fields) == [(b"Content-Encoding", b"zstd")]
    assert addon.states[f.id].model == "m"


def test_internal_failure_leaves_flow_as_sent(ctx, monkeypatch):
    tctx, addon = ctx
    f = llm_flow()
    raw = f.request.raw_content
    monkeypatch.setattr(addon.engine, "_process", lambda *a: 1 / 0)
    run(tctx, addon.request(f))
    assert f.request.raw_content == raw and "x-headroom-trace" not in f.request.headers
    assert addon.states[f.id].decisions["error"] == "ZeroDivisionError"


def test_bad_option_raises_options_error(ctx):
    tctx, addon = ctx
    with pytest.raises(exceptions.OptionsError, match="headroom_max_body"):
        tctx.configure(addon, headroom_max_body="huge")
    with pytest.raises(exceptions.OptionsError, match="headroom_hosts"):
        tctx.configure(addon, headroom_hosts=["not a host"])


def test_flows_already_answered_are_left_alone(ctx):
    tctx, addon = ctx
    f = llm_flow()
    f.response = tutils.tresp()
    run(tctx, addon.request(f))
    assert "x-headroom-trace" in f.request.headers and f.id not in addon.states


def test_stats_command_reports_sessions(ctx, tmp_path):
    tctx, addon = ctx
    for sess in ("a", "a", "b"):
        f = llm_flow(headers=[(b"X-Claude-Code-Session-Id", sess.encode()),
                              (b"x-api-key", b"sk-ant-api-x")])
        run(tctx, addon.request(f))
        f.response = tutils.tresp(headers=http.Headers(content_type="application/json"),
                                  content=b'{"usage":{"input_tokens":7,"output_tokens":1,"cache_read_input_tokens":93}}')
        addon.responseheaders(f)
        addon.response(f)
    addon.runtime.flush()
    table = tctx.command(addon.stats)
    lines = table.splitlines()
    assert lines[0].startswith("SESSION") and lines[-1].startswith("TOTAL")
    total = lines[-1].split()
    assert total[1] == "3" and "93.0%" in lines[-1]  # cache-read share 93 / (7 + 93)
    assert len(lines) == 6  # header, rule, two sessions, rule, total


def test_connections_are_always_lazy(ctx):
    # Local answers (recordings, refusals, /ccr/, health, upstream errors) must never need, or
    # make, an upstream connection first.
    tctx, addon = ctx
    tctx.options.add_option("connection_strategy", str, "eager", "as proxyserver declares it")
    tctx.configure(addon, headroom_store_mode="off")
    assert tctx.options.connection_strategy == "lazy"
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(addon, headroom_store_exclude=["bad[path"])


def test_a_failure_outside_the_engine_still_strips_and_forwards(ctx, monkeypatch):
    tctx, addon = ctx
    f = llm_flow()
    raw = f.request.raw_content
    monkeypatch.setattr(mod, "_request_in", lambda flow: 1 / 0)
    run(tctx, addon.request(f))
    assert f.response is None and f.request.raw_content == raw
    assert "x-headroom-trace" not in f.request.headers and "x-api-key" in f.request.headers
