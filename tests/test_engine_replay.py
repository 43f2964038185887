"""Replay mode answers every request locally; record mode records what goes to API hosts."""

import json

import pytest

from headroom_core.flow import RequestIn
from tests.runtime_util import rig

BODY = json.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}).encode()
KEY = [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json")]
MODELS = b'{"data":[{"id":"claude-x"}]}'


def req(method="POST", path="/v1/messages", host="api.anthropic.com", body=BODY, fields=KEY,
        reverse=False, upgrade=False):
    return RequestIn("f", method, "https", host, 443, path, list(fields), body, reverse,
                     websocket_upgrade=upgrade, client="127.0.0.1")


def resolved(plan):
    return plan.resolve(plan.deferred()) if plan.deferred is not None else plan


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    e = rig(tmp_path_factory.mktemp("replay"), store_mode="replay", namespace="ci", events="off")
    yield e
    e.close()


@pytest.mark.parametrize("method", ["POST", "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", [
    "/v1/messages", "/v1/mess%61ges", "//v1//messages", "/v1/messages/", "/V1/MESSAGES",
    "/v1%2Fmessages", "/v1/./messages", "/v1/messages?beta=true", "/v1/models", "/anything",
    "/backend-api/codex/respo%6Eses", "/v1/respo%6Eses",
])
def test_every_method_and_spelling_is_answered_locally(replay, method, path):
    for reverse, host in ((False, "api.anthropic.com"), (True, "gw.internal")):
        plan = resolved(replay.handle_request(req(method, path, host=host, reverse=reverse)))
        assert plan.response is not None, (method, path, reverse)
        assert plan.body is None and plan.response.status in (400, 426)


@pytest.mark.parametrize("body,fields", [
    (b"{not json", KEY),
    (b"\x1f\x8b garbage", [*KEY, (b"content-encoding", b"gzip")]),
    (BODY, [*KEY, (b"content-encoding", b"x-unknown")]),
    (BODY, [*KEY, (b"x-headroom-bypass", b"1")]),
    (BODY, [(b"content-type", b"application/json")]),  # no credential
    (None, KEY),  # a streamed (unread) body
    (b"[]", KEY),
    (b"", KEY),
])
def test_bad_input_is_answered_locally(replay, body, fields):
    plan = resolved(replay.handle_request(req(body=body, fields=fields)))
    assert plan.response.status == 400
    assert plan.state.local


def test_non_api_hosts_in_regular_mode_are_refused_too(replay):
    plan = resolved(replay.handle_request(req("GET", "/", host="github.com")))
    assert b"not an API host" in plan.response.body


def test_websocket_upgrade_gets_426(replay):
    plan = replay.handle_request(req("GET", "/v1/responses", host="api.openai.com", body=b"",
                                     upgrade=True))
    assert plan.response.status == 426


def test_only_cache_bypass_and_the_allow_list_go_upstream(tmp_path):
    e = rig(tmp_path, store_mode="replay", namespace="ci", events="off",
            replay_allow=["registry.npmjs.org", "github.com/org/*"])
    try:
        bypass = e.handle_request(req(fields=[*KEY, (b"x-headroom-cache", b"bypass")]))
        assert bypass.response is None and bypass.deferred is None
        assert bypass.fields == KEY  # the control header itself never goes upstream
        assert e.handle_request(req("GET", "/pkg", host="registry.npmjs.org")).response is None
        assert e.handle_request(req("GET", "/org/repo", host="github.com")).response is None
        assert resolved(e.handle_request(req("GET", "/other/repo", host="github.com"))).response
        assert resolved(e.handle_request(req("GET", "/x", host="evil.registry.npmjs.org"))).response
    finally:
        e.close()


def test_record_mode_records_other_api_requests_and_replay_serves_them(tmp_path):
    rec = rig(tmp_path, store_mode="record", namespace="ci", events="off")
    plan = rec.handle_request(req("GET", "/v1/models", body=b""))
    assert plan.response is None and plan.state.store_write
    assert plan.state.route.endpoint == "other"
    rec.mark_forwarded(plan.state)
    rec.finish_later(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                     body=MODELS)
    rec.flush()
    # a site that is not an API host is not recorded
    assert rec.handle_request(req("GET", "/", host="github.com")).state is None
    rec.close()
    rep = rig(tmp_path, store_mode="replay", namespace="ci", events="off")
    hit = rep.handle_request(req("GET", "/v1/models", body=b""))
    assert hit.response.status == 200 and hit.response.body == MODELS
    miss = resolved(rep.handle_request(req("GET", "/v1/models?limit=5", body=b"")))
    assert miss.response.status == 400
    rep.close()


def test_cache_mode_leaves_other_requests_alone(tmp_path):
    e = rig(tmp_path, store_mode="cache", namespace="ci", events="off")
    plan = e.handle_request(req("GET", "/v1/models", body=b""))
    assert plan.state is None and plan.response is None
    e.close()


def test_an_internal_error_in_replay_mode_is_still_answered_locally(tmp_path, monkeypatch):
    e = rig(tmp_path, store_mode="replay", namespace="ci", events="off")

    def boom(*a, **k):
        raise RuntimeError("x")

    monkeypatch.setattr(e.engine, "_process", boom)
    for r in (req(), req("GET", "/v1/models", body=b"")):
        plan = resolved(e.handle_request(r))
        assert plan.response.status == 400
    e.close()
