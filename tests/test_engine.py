import json

import pytest

from headroom_core import encoding
from headroom_core.flow import RequestIn
from tests.runtime_util import rig


@pytest.fixture
def engine(tmp_path):
    e = rig(tmp_path, events=tmp_path / "events.jsonl")
    yield e
    e.close()


def req(body=b'{"model":"claude-x","stream":true,"messages":[]}', path="/v1/messages",
        host="api.anthropic.com", fields=None, reverse=False, method="POST"):
    return RequestIn(
        flow_id="f1", method=method, scheme="https", host=host, port=443, path=path,
        fields=fields if fields is not None else [
            (b"Host", b"api.anthropic.com"), (b"x-api-key", b"sk-ant-secret"),
            (b"Content-Type", b"application/json")],
        body=body, reverse=reverse,
    )


def events(tmp_path, engine):
    engine.flush()
    p = tmp_path / "events.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_llm_flow_untouched_and_classified(engine):
    plan = engine.handle_request(req())
    assert plan.fields is None and plan.body is None and plan.response is None
    st = plan.state
    assert st.route.name == "anthropic/messages" and st.model == "claude-x" and st.stream is True


def test_non_llm_flow_has_no_state_but_is_stripped(engine):
    plan = engine.handle_request(req(host="example.com", fields=[(b"X-Headroom-Bypass", b"1"), (b"A", b"b")]))
    assert plan.state is None
    assert plan.fields == [(b"A", b"b")] and plan.body is None


def test_bypass_turns_features_off_and_is_logged(engine, tmp_path):
    f = [(b"x-api-key", b"k"), (b"X-Headroom-Bypass", b"1")]
    plan = engine.handle_request(req(fields=f))
    assert plan.fields == [(b"x-api-key", b"k")]
    assert plan.state.decisions == {"bypass": True}
    assert plan.state.model is None  # the body was not even parsed
    engine.finish(plan.state, status=200, fields=[], body=b"{}")
    (rec,) = events(tmp_path, engine)
    assert rec["decisions"]["bypass"] is True and rec["stripped_headers"] == 1


@pytest.mark.parametrize("body,coding,reason", [
    (b"{not json", None, "invalid-json"),
    (b"[1,2]", None, "not-an-object"),
    (b"\x00garbage", b"gzip", "undecodable-body"),
    (b"whatever", b"lz4", "unsupported-encoding"),
])
def test_bad_bodies_pass_through(engine, body, coding, reason):
    f = [(b"content-type", b"application/json")] + ([(b"Content-Encoding", coding)] if coding else [])
    plan = engine.handle_request(req(body=body, fields=f))
    assert plan.body is None and plan.fields is None and plan.response is None
    assert plan.state.decisions["passthrough"] == reason


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_bodies_are_inspected_but_not_changed(engine, coding):
    raw = encoding.encode(b'{"model":"gpt-5","input":"hi","stream":false}', coding)
    plan = engine.handle_request(req(body=raw, path="/v1/responses", host="api.openai.com",
                                     fields=[(b"Content-Encoding", coding.encode())]))
    assert plan.body is None and plan.state.model == "gpt-5" and plan.state.stream is False


def test_internal_error_forwards_original_and_logs(engine, tmp_path, monkeypatch, caplog):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(engine.engine, "_process", boom)
    f = [(b"x-api-key", b"sk-ant-secret"), (b"x-headroom-foo", b"1")]
    plan = engine.handle_request(req(fields=f))
    assert plan.fields == [(b"x-api-key", b"sk-ant-secret")]  # internal header still stripped
    assert plan.body is None and plan.response is None
    assert plan.state.decisions["error"] == "RuntimeError"
    assert any("internal_error" in r.getMessage() and "RuntimeError" in r.getMessage()
               for r in caplog.records)
    # an exception's message may quote the request: neither it nor credentials are logged
    assert not any("kaboom" in r.getMessage() or "sk-ant-secret" in r.getMessage()
                   for r in caplog.records)


def test_event_record_fields_and_no_secrets(engine, tmp_path):
    clock = iter([100.0, 100.5])
    engine.engine.clock = lambda: next(clock)
    plan = engine.handle_request(req())
    engine.mark_forwarded(plan.state)
    rec = engine.finish(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                        body=b'{"ok":1}', response_started=100.75, response_ended=101.0)
    assert rec["upstream_ms"] == 250.0 and rec["duration_ms"] == 500.0
    (logged,) = events(tmp_path, engine)
    for key in ("ts", "flow_id", "provider", "endpoint", "model", "stream", "status",
                "req_bytes", "resp_bytes", "upstream_ms", "stripped_headers", "decisions"):
        assert key in logged
    assert logged["resp_bytes"] == 8 and logged["transport"] == "http"
    text = (tmp_path / "events.jsonl").read_text()
    assert "sk-ant-secret" not in text and '"messages":[]' not in text


def test_sse_response_gets_a_tee_that_returns_chunks_unchanged(engine):
    plan = engine.handle_request(req())
    tee = engine.response_headers(plan.state, 200, [(b"Content-Type", b"text/event-stream; charset=utf-8")]).stream
    assert tee is not None
    assert tee(b"data: 1\n\n") == b"data: 1\n\n"
    assert engine.response_headers(plan.state, 200, [(b"content-type", b"application/json")]).stream is None
    # SSE on a non-LLM flow is streamed too (plain mitmproxy would buffer it), without a tee.
    assert engine.response_headers(None, 200, [(b"content-type", b"text/event-stream")]).stream(b"x") == b"x"


def test_state_is_private_to_the_user(tmp_path):
    d = tmp_path / "new-state"
    e = rig(d, events=d / "events.jsonl")
    plan = e.handle_request(req())
    e.finish(plan.state, status=200, fields=[], body=b"{}")
    e.flush()
    e.close()
    assert d.stat().st_mode & 0o777 == 0o700
    assert (d / "events.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_huge_model_name_is_cut_in_the_event_line_and_forwarded_untouched(engine, tmp_path):
    model = "claude-" + "x" * 100_000
    raw = json.dumps({"model": model, "messages": []}).encode()
    plan = engine.handle_request(req(body=raw))
    assert plan.body is None  # the request itself goes on as sent
    engine.mark_forwarded(plan.state)
    engine.finish(plan.state, status=400, fields=[], body=b"{}")
    (ev,) = events(tmp_path, engine)
    assert len(ev["model"]) == 128 and ev["model"].startswith("claude-xxx")
    assert len((tmp_path / "events.jsonl").read_bytes()) < 5000


def _fresh_target(e, r):
    """What `Engine.target` works out, from scratch."""
    from headroom_core import routing
    path = routing.normalize_path(r.path)
    kind = e.local.kind(r.method, r.host, r.port, path, to_listener=r.reverse or r.to_self)
    route = None if kind is not None else e.route_of(
        r.method, r.host, r.path, reverse=r.reverse, websocket_upgrade=r.websocket_upgrade)
    return (path, routing.split_path(r.path)[1], kind, route, routing.split_path(r.path)[0])


@pytest.mark.parametrize("bound", [7, 1024])
def test_request_targets_are_remembered_exactly_and_within_bounds(engine, monkeypatch, bound):
    import itertools
    import random

    from headroom_core import engine as hengine
    monkeypatch.setattr(hengine, "MAX_TARGETS", bound)
    e = engine.engine
    combos = list(itertools.product(
        ("POST", "GET", "post"),
        ("api.anthropic.com", "example.com", "API.OPENAI.COM", "127.0.0.1"),
        ("/v1/messages", "/v1/messages?beta=true", "/v1/chat/completions", "/V1//messages/",
         "/headroom/health", "/ccr/h1", "/v1/responses"), (False, True), (False, True),
        (False, True), (443, 8080)))
    random.Random(7).shuffle(combos)
    for method, host, path, reverse, upgrade, to_self, port in combos * 2:
        r = RequestIn("f", method, "https", host, port, path, [], b"{}", reverse,
                      websocket_upgrade=upgrade, to_self=to_self)
        assert e.target(r) == _fresh_target(e, r)
        assert len(e._targets) <= bound
