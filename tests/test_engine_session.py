"""The engine's session identity and sticky beta-header merge (issue: session identity)."""

import json

import pytest

from headroom_core.flow import RequestIn
from tests.runtime_util import rig

BODY = json.dumps({"model": "claude-x", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def engine(tmp_path):
    e = rig(tmp_path, events=tmp_path / "events.jsonl")
    yield e
    e.close()


def turn(engine, betas, session="sess-1", key=b"sk-ant-api-1", body=BODY, extra=()):
    fields = [(b"x-api-key", key), (b"content-type", b"application/json")]
    if session:
        fields.append((b"X-Claude-Code-Session-Id", session.encode()))
    if betas is not None:
        fields.append((b"anthropic-beta", betas.encode()))
    fields += list(extra)
    plan = engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                           "/v1/messages?beta=true", fields, body, False))
    sent = plan.fields if plan.fields is not None else fields
    return plan, [v.decode() for n, v in sent if n.lower() == b"anthropic-beta"]


def test_dropped_token_is_resent_in_the_same_session(engine):
    plan, sent = turn(engine, "a,b")
    assert plan.fields is None and sent == ["a,b"]  # unchanged: forwarded as the client sent it
    plan, sent = turn(engine, "a")
    assert sent == ["a,b"] and plan.state.decisions["beta"]["added"] == ["b"]
    plan, sent = turn(engine, None)
    assert sent == ["a,b"]


def test_sessions_tenants_and_low_confidence_are_isolated(engine):
    turn(engine, "a,b", session="s1")
    assert turn(engine, "a", session="s2")[1] == ["a"]  # other session
    assert turn(engine, "a", session="s1", key=b"sk-ant-api-2")[1] == ["a"]  # other tenant
    # no client session id: the content fallback is low confidence, never sticky
    turn(engine, "a,b", session=None)
    plan, sent = turn(engine, "a", session=None)
    assert sent == ["a"] and plan.state.session.confidence == "low"


def test_deny_listed_tokens_never_stick(engine):
    turn(engine, "a,context-1m-2025-08-07")
    assert turn(engine, "a")[1] == ["a"]


def test_400_naming_an_added_token_drops_it(engine):
    turn(engine, "a,b")
    plan, sent = turn(engine, "a")
    assert sent == ["a,b"]
    err = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                      "message": "Unexpected value(s) `b` for the `anthropic-beta` header."}}).encode()
    engine.finish(plan.state, status=400, fields=[(b"content-type", b"application/json")], body=err)
    assert plan.state.decisions["beta"]["rejected"] == ["b"]
    assert turn(engine, "a")[1] == ["a"]


def test_event_log_carries_session(engine, tmp_path):
    plan, _ = turn(engine, "a")
    engine.finish(plan.state, status=200, fields=[], body=b"{}")
    engine.flush()
    rec = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])
    assert rec["session_source"] == "header:x-claude-code-session-id"
    assert rec["session_confidence"] == "high" and len(rec["session_id"]) == 32
    assert "sess-1" not in (tmp_path / "events.jsonl").read_text()


def test_sticky_option_off(tmp_path):
    e = rig(tmp_path, events="off", beta_sticky=False)
    turn(e, "a,b")
    assert turn(e, "a")[1] == ["a"]
    e.close()


def test_salt_persists_across_engines(tmp_path):
    e1 = rig(tmp_path, events="off")
    p1, _ = turn(e1, "a")
    e1.close()
    e2 = rig(tmp_path, events="off")
    p2, _ = turn(e2, "a")
    e2.close()
    assert p1.state.session.id == p2.state.session.id and p1.state.tenant == p2.state.tenant
    assert (tmp_path / "salt").stat().st_mode & 0o777 == 0o600


def test_namespace_replaces_credential_tenant(tmp_path):
    e = rig(tmp_path, events="off", namespace="ci")
    a, _ = turn(e, "a", key=b"k1")
    b, _ = turn(e, "a", key=b"k2")
    assert a.state.tenant == b.state.tenant == "ns:ci"
    e.close()


def test_openai_beta_case_variants_collapse_when_changed(tmp_path):
    e = rig(tmp_path, events="off")

    def go(values):
        fields = [(b"authorization", b"Bearer sk-1"), (b"session_id", b"codex-1")] + \
                 [(n, v) for n, v in values]
        plan = e.handle_request(RequestIn("f", "POST", "https", "api.openai.com", 443, "/v1/responses",
                                          fields, b'{"model":"gpt-5","input":"hi"}', False))
        return plan.fields if plan.fields is not None else fields

    go([(b"OpenAI-Beta", b"x=1"), (b"openai-beta", b"y")])
    out = go([(b"openai-beta", b"x=1")])
    assert [(n, v) for n, v in out if n.lower() == b"openai-beta"] == [(b"openai-beta", b"x=1,y")]
    e.close()


def test_several_beta_lines_are_folded_into_one(engine):
    plan, sent = turn(engine, "a", extra=[(b"Anthropic-Beta", b"b")])
    assert sent == ["a,b"] and plan.state.decisions["beta"]["changed"] is True
    names = [n for n, _ in plan.fields if n.lower() == b"anthropic-beta"]
    assert names == [b"anthropic-beta"]  # the first line's casing, at its position
