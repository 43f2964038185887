import asyncio
import json
import logging
import threading

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
    """Run a hook's result: None when the hook finished inline, else the coroutine it returned."""
    return tctx.master.event_loop.run_until_complete(coro) if coro is not None else None


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
    # nothing had reached the client: it gets a provider-shaped, retryable error instead
    assert f.response.status_code == 502 and f.response.headers["x-should-retry"] == "true"
    (rec,) = events(tmp_path, addon)
    assert rec["error"] == "connection killed" and rec["status"] == 502
    assert rec["decisions"]["upstream_error"] in ("reset", "tls", "connect")


def test_big_body_processed_off_loop_still_byte_identical(ctx):
    tctx, addon = ctx
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (1 << 20)}]}).encode()
    body = encoding.encode(big, "zstd")
    f = llm_flow(body=body, headers=[(b"Content-Encoding", b"zstd"), (b"X-Headroom-A", b"1")])
    run(tctx, addon.request(f))
    assert f.request.raw_content == body
    assert list(f.request.headers.fields) == [(b"Content-Encoding", b"zstd")]
    assert addon.states[f.id].model == "m"


def test_a_request_handled_in_a_worker_thread_leaves_no_database_open(tmp_path, open_files):
    # The worker looks the store up through its own SQLite connection; left open in the pooled
    # thread, it would be closed by some later garbage collection, writing the database then.
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (1 << 19)}]})
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path), headroom_store_mode="cache")
        addon.running()
        f = llm_flow(body=big.encode())
        coro = addon.request(f)
        assert coro is not None  # a big body: handled in a worker thread
        run(tctx, coro)
        assert addon.states[f.id].store_key is not None  # it did look the store up
        addon.done()
        assert open_files(tmp_path) == []


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


def test_bad_startup_values_fail_closed_with_one_line_each(tmp_path, caplog):
    addon = mod.Headroom()
    with taddons.context() as tctx:
        tctx.options.set("headroom_compress_min_tokens=abc", "headroom_store_mod=cache",
                         "headroom_stream_sse=maybe", f"headroom_dir={tmp_path}", defer=True)
        tctx.master.addons.add(addon)  # load(): checked before mitmproxy converts them
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert sorted(errors) == [
            "headroom_compress_min_tokens: invalid value 'abc': expected a whole number >= 0",
            "headroom_store_mod: unknown option; did you mean headroom_store_mode?",
            "headroom_stream_sse: invalid value 'maybe': expected true or false",
        ]
        assert addon.failed and not any(k.startswith("headroom_") for k in tctx.options.deferred)
        f = llm_flow()
        run(tctx, addon.request(f))
        assert f.response.status_code == 503 and b"nothing was forwarded" in f.response.content
        assert json.loads(f.response.content)["type"] == "error"  # the provider's shape
        g = llm_flow(host="example.com", path="/")  # not even other sites go through
        run(tctx, addon.request(g))
        assert g.response.status_code == 503
        addon.done()


def test_a_bad_value_at_startup_logs_instead_of_a_traceback(tmp_path, caplog):
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path), headroom_max_body="lots")
        assert addon.failed == "headroom_max_body: invalid value 'lots': expected a size such " \
                               "as 65536, 512k, 64m or 2g"
        assert any(r.levelname == "ERROR" and r.getMessage() == addon.failed
                   for r in caplog.records)
        addon.done()


def test_a_valid_flag_given_without_a_value_means_true(tmp_path):
    addon = mod.Headroom()
    with taddons.context() as tctx:
        tctx.options.set("headroom_store_pace", f"headroom_dir={tmp_path}", defer=True)
        tctx.master.addons.add(addon)
        assert addon.failed is None and tctx.options.headroom_store_pace is True
        addon.done()


def test_local_endpoints_only_for_loopback_clients(ctx):
    tctx, addon = ctx
    answers = {}
    for peer in ("127.0.0.1", "10.1.2.3"):
        f = tflow.tflow()
        f.request = tutils.treq(method=b"GET", host="127.0.0.1", port=8080, scheme=b"http",
                                path=b"/headroom/health", content=b"")
        f.client_conn.peername = (peer, 5000)
        run(tctx, addon.request(f))
        answers[peer] = f.response
    health = json.loads(answers["127.0.0.1"].content)
    assert answers["127.0.0.1"].status_code == 200 and health["status"] == "ok"
    assert {"version", "modes", "store_mode", "uptime_s", "state"} <= set(health)
    assert answers["10.1.2.3"].status_code == 403 and b"version" not in answers["10.1.2.3"].content


def test_only_the_cancelled_client_callback_report_is_left_out():
    f = mod._CancelledClientFilter()

    def record(msg, exc):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None,
                                 (type(exc), exc, None))

    cancelled = asyncio.CancelledError()
    noise = "Exception in callback StreamReaderProtocol.connection_made.<locals>.callback(<Task>)"
    assert not f.filter(record(noise, cancelled))
    assert f.filter(record(noise, RuntimeError("a real failure")))
    assert f.filter(record("Task exception was never retrieved", cancelled))
    assert f.filter(logging.LogRecord("asyncio", logging.ERROR, __file__, 1, noise, None, None))


@pytest.mark.parametrize("host,port,sockname,expected", [
    ("10.254.0.1", 8080, ("10.254.0.1", 8080), True),
    ("[::1]", 8080, ("::1", 8080, 0, 0), True),
    ("127.0.0.1", 8080, ("::ffff:127.0.0.1", 8080, 0, 0), True),
    ("10.254.0.1", 443, ("10.254.0.1", 8080), False),  # same machine, another service
    ("10.254.0.2", 8080, ("10.254.0.1", 8080), False),
    ("api.anthropic.com", 8080, ("10.254.0.1", 8080), False),  # names are the listener's list
    ("10.254.0.1", 8080, None, False),
])
def test_a_request_to_the_address_the_client_reached_is_addressed_to_the_proxy(
        host, port, sockname, expected):
    assert mod._addressed_to_self(host, port, sockname) is expected


def test_clear_command_zeroes_the_figures(ctx, tmp_path):
    tctx, addon = ctx
    f = llm_flow()
    run(tctx, addon.request(f))
    f.response = tutils.tresp(headers=http.Headers(content_type="application/json"),
                              content=b'{"usage":{"input_tokens":7,"output_tokens":1}}')
    addon.response(f)
    addon.runtime.flush()
    assert addon.runtime.figures.totals()["since_start"]["requests"] == 1
    assert tctx.command(addon.clear) == "headroom: in-memory stats cleared"
    assert addon.runtime.figures.totals()["since_start"]["requests"] == 0
    assert addon.runtime.stats.total.requests == 0
    assert len(events(tmp_path, addon)) == 1  # the log is kept


def test_dashboard_is_answered_through_the_request_hook(ctx):
    tctx, addon = ctx
    f = tflow.tflow()
    f.request = tutils.treq(method=b"GET", host="127.0.0.1", port=8080, scheme=b"http",
                            path=b"/headroom/", headers=http.Headers(), content=b"")
    f.client_conn.peername = ("127.0.0.1", 5555)
    run(tctx, addon.request(f))
    assert f.response.status_code == 200
    assert f.response.headers["content-type"] == "text/html; charset=utf-8"
    assert b"Headroom" in f.response.content and f.id not in addon.states


def test_an_original_is_answered_in_a_worker_thread_never_on_the_event_loop(ctx, monkeypatch):
    # (a grep of it may run for its whole time bound)
    tctx, addon = ctx
    loop_thread, threads = threading.get_ident(), []
    answer = addon.runtime.engine.local.answer

    def spy(*a, **k):
        threads.append(threading.get_ident())
        return answer(*a, **k)

    monkeypatch.setattr(addon.runtime.engine.local, "answer", spy)
    f = tflow.tflow()
    f.request = tutils.treq(method=b"GET", host="127.0.0.1", port=8080, scheme=b"http",
                            path=b"/ccr/" + b"0" * 32 + b"?grep=x", headers=http.Headers(),
                            content=b"")
    f.client_conn.peername = ("127.0.0.1", 5555)
    coro = addon.request(f)
    assert coro is not None
    run(tctx, coro)
    assert f.response.status_code == 404 and threads and loop_thread not in threads


def test_an_unreadable_price_file_fails_closed_at_startup(tmp_path, caplog):
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path),
                       headroom_prices=str(tmp_path / "nope.json"))
        assert addon.failed.startswith("headroom_prices: invalid value")
        assert "cannot read it" in addon.failed
        f = llm_flow()
        run(tctx, addon.request(f))
        assert f.response.status_code == 503
        addon.done()


def test_a_bad_price_file_is_refused_live(ctx, tmp_path):
    tctx, addon = ctx
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    with pytest.raises(exceptions.OptionsError, match="headroom_prices"):
        tctx.configure(addon, headroom_prices=str(bad))


def test_the_startup_heap_is_frozen_while_running_refrozen_after_a_change_thawed_at_exit(
        tmp_path, monkeypatch):
    from headroom_runtime import heap
    heap.thaw()
    calls = []
    for name in ("thaw", "freeze_startup"):
        real = getattr(heap, name)
        monkeypatch.setattr(mod.hheap, name,
                            lambda real=real, name=name: (calls.append(name), real())[1])
    addon = mod.Headroom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, headroom_dir=str(tmp_path))
        assert not heap.frozen() and calls == []  # not before mitmproxy runs
        addon.running()
        assert heap.frozen() and calls == ["freeze_startup"]
        real_reconfigure = addon.runtime.reconfigure
        monkeypatch.setattr(addon.runtime, "reconfigure", lambda *a, **k: (
            calls.append("reconfigure"), real_reconfigure(*a, **k))[1])
        calls.clear()
        tctx.configure(addon, headroom_compress_min_tokens=300)  # parts rebuilt and dropped
        # thawed before the old parts are dropped (cycles among them collectable), then the
        # collection that freezing starts with takes them, and what is left is frozen again
        assert calls == ["thaw", "reconfigure", "freeze_startup"] and heap.frozen()
        addon.done()
        assert not heap.frozen()


def _connected(addon, local, remote):
    data = tflow.tserver_conn()
    data.sockname, data.peername = local, remote
    addon.server_connected(type("Data", (), {"server": data})())
    return data


def _arrives_from(addon, peer, local):
    f = llm_flow()
    f.client_conn.peername, f.client_conn.sockname = peer, local
    addon.requestheaders(f)
    return f


def test_a_connection_to_itself_is_refused_as_a_loop(ctx):
    tctx, addon = ctx
    listen = ("127.0.0.1", 8080)
    out = _connected(addon, ("127.0.0.1", 50123), listen)  # the proxy dials its own listener
    f = _arrives_from(addon, ("127.0.0.1", 50123), listen)
    assert f.response is not None and f.response.status_code == 508
    # a dual-stack listener reports the same connection with IPv4-mapped addresses
    f = _arrives_from(addon, ("::ffff:127.0.0.1", 50123, 0, 0), ("::ffff:127.0.0.1", 8080, 0, 0))
    assert f.response is not None and f.response.status_code == 508
    addon.server_disconnected(type("Data", (), {"server": out})())
    f = _arrives_from(addon, ("127.0.0.1", 50123), listen)
    assert f.response is None  # that connection is gone: the port is a client's now


def test_a_client_sharing_a_local_port_with_an_upstream_connection_is_served(ctx):
    """Linux hands one local port to connections to different places at once: the proxy's
    connection 127.0.0.1:50123 -> upstream :9999 and a client's 127.0.0.1:50123 -> proxy :8080
    coexist, and the client is no loop."""
    tctx, addon = ctx
    _connected(addon, ("127.0.0.1", 50123), ("127.0.0.1", 9999))
    f = _arrives_from(addon, ("127.0.0.1", 50123), ("127.0.0.1", 8080))
    assert f.response is None
    run(tctx, addon.request(f))
    assert f.response is None and f.request.host == "api.anthropic.com"  # forwarded


def _codex_ws_flow():
    from mitmproxy import websocket
    f = tflow.twebsocketflow()
    f.request.host, f.request.path = "api.openai.com", "/v1/responses"
    f.request.headers["authorization"] = "Bearer sk-proj-ws"
    f.websocket.messages = []
    answer, f.response = f.response, None  # (the upstream's 101 comes after the request)
    return f, answer, websocket


def test_a_closed_websocket_is_let_go_with_its_opening_message(ctx):
    # A connection whose session was not named yet was kept (with its opening message, which
    # can be megabytes) after it closed, up to 1,000 of them.
    tctx, addon = ctx
    for _ in range(3):
        f, answer, websocket = _codex_ws_flow()
        addon.requestheaders(f)
        run(tctx, addon.request(f))
        f.response = answer
        addon.responseheaders(f)
        addon.response(f)
        assert f.id in addon.ws and f.id in addon.runtime._ws_unlabelled
        f.websocket.messages.append(websocket.WebSocketMessage(
            websocket.Opcode.TEXT, True,
            json.dumps({"type": "response.create", "model": "m", "input": "x" * 5000}).encode()))
        run(tctx, addon.websocket_message(f))
        addon.websocket_end(f)
        assert f.id not in addon.ws and f.id not in addon.runtime._ws_unlabelled


def test_a_connection_repeating_its_headers_reuses_them_and_a_change_is_read_afresh(
        ctx, tmp_path):
    """Requests on one client connection, as Claude Code sends them: the same header block but
    for content-length reuses what was read; another key or session on that connection is
    another tenant and session; a closed connection is forgotten."""
    tctx, addon = ctx
    conn = tflow.tclient_conn()

    def one(key=b"sk-ant-api-1", session=b"s-1", body=b'{"model":"claude-x","messages":[]}'):
        f = llm_flow(body=body, headers=[
            (b"Content-Type", b"application/json"), (b"X-Api-Key", key),
            (b"X-Claude-Code-Session-Id", session), (b"Content-Length", str(len(body)).encode())])
        f.client_conn = conn
        addon.requestheaders(f)
        run(tctx, addon.request(f))
        f.response = tutils.tresp(content=b'{"type":"message"}')
        addon.responseheaders(f)
        addon.response(f)
        return f

    one()
    one(body=b'{"model":"claude-x","messages":[{"role":"user","content":"longer"}]}')
    one(key=b"sk-ant-api-2")
    one(session=b"s-2")
    recs = events(tmp_path, addon)
    assert [r["model"] for r in recs] == ["claude-x"] * 4
    a, b, c, d = (r["session_id"] for r in recs)
    assert a == b  # a repeat
    # another credential, same session header: another tenant, so another session id (ids are
    # namespaced by tenant); another session header: another id
    assert c != a and d not in (a, c)
    assert len(addon.engine._repeats) == 1
    addon.client_disconnected(conn)
    assert len(addon.engine._repeats) == 0


def test_a_connection_is_checked_for_a_loop_once_and_a_loop_is_refused_every_time(ctx):
    tctx, addon = ctx
    listen = ("127.0.0.1", 8080)
    _connected(addon, ("127.0.0.1", 50200), listen)  # the proxy dials its own listener
    loop = _arrives_from(addon, ("127.0.0.1", 50200), listen)
    assert loop.response.status_code == 508
    again = llm_flow()
    again.client_conn = loop.client_conn  # a second request on that connection
    addon.requestheaders(again)
    assert again.response is not None and again.response.status_code == 508
    assert loop.client_conn.id not in addon.not_loops
    client = _arrives_from(addon, ("127.0.0.1", 50300), listen)
    assert client.response is None and client.client_conn.id in addon.not_loops
    nxt = llm_flow()
    nxt.client_conn = client.client_conn
    addon.requestheaders(nxt)
    assert nxt.response is None
    addon.client_disconnected(client.client_conn)
    assert client.client_conn.id not in addon.not_loops
