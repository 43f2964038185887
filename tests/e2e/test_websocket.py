"""End to end: Codex's Responses-over-WebSocket transport through the real proxy."""

import json
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.fake_ws import FakeWebSocketUpstream
from tests.e2e.proxy import Mitmdump

BETA = "responses_websockets=2026-02-04"


@pytest.fixture(scope="module")
def ws_upstream():
    up = FakeWebSocketUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def ws_proxy(ws_upstream, tmp_path_factory):
    with Mitmdump(mode=f"reverse:{ws_upstream.url}", workdir=tmp_path_factory.mktemp("ws")) as p:
        yield p


@pytest.fixture(autouse=True)
def _clear(ws_upstream):
    ws_upstream.clear()


def create(**kw):
    return json.dumps({"type": "response.create", "model": "gpt-5-codex", **kw})


def recv_until_completed(ws):
    events = []
    while True:
        ev = json.loads(ws.recv(timeout=10))
        events.append(ev)
        if ev["type"] in ("response.completed", "response.failed", "error"):
            return events


def codex_headers(session="codex-ws-1", beta=BETA, **extra):
    return {"Authorization": "Bearer sk-proj-ws", "OpenAI-Beta": beta, "session_id": session,
            "X-Headroom-Note": "internal", **extra}


def test_messages_pass_untouched_and_usage_is_logged(ws_proxy, ws_upstream):
    before = len(ws_proxy.events(settle=0.1))
    sent = [create(generate=False, input=[]),
            create(input=[{"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "run the tests ✓"}]}],
                   previous_response_id="resp_0")]
    with connect(ws_proxy.url.replace("http", "ws") + "/v1/responses",
                 additional_headers=codex_headers()) as ws:
        ws.send(sent[0])
        warm = recv_until_completed(ws)
        ws.send(sent[1])
        turn = recv_until_completed(ws)
    assert warm[-1]["type"] == turn[-1]["type"] == "response.completed"
    assert ws_upstream.messages == sent  # byte-identical text frames
    (hs,) = ws_upstream.handshakes
    names = [n.lower() for n, _ in hs]
    assert "x-headroom-note" not in names
    assert dict((n.lower(), v) for n, v in hs)["openai-beta"] == BETA
    for n in ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"):
        assert n in names
    evs = ws_proxy.events(wait_for=before + 2)[before:]
    assert [e["transport"] for e in evs] == ["websocket", "websocket"]
    assert evs[0]["decisions"].get("warmup") is True
    last = evs[1]
    assert last["stream_state"] == "complete" and last["model"] == "gpt-5-codex"
    assert last["usage"]["cache_read_tokens"] == 900 and last["usage"]["input_tokens"] == 100
    assert last["session_source"] == "header:session-id" and last["session_confidence"] == "high"
    assert last["stripped_headers"] == 1


def test_handshake_betas_are_sticky_per_session(ws_proxy, ws_upstream):
    url = ws_proxy.url.replace("http", "ws") + "/v1/responses"
    with connect(url, additional_headers=codex_headers(session="sticky", beta=f"{BETA},x-extra")):
        pass
    with connect(url, additional_headers=codex_headers(session="sticky", beta=BETA)):
        pass
    first, second = ws_upstream.handshakes
    beta = lambda hs: [v for n, v in hs if n.lower() == "openai-beta"]  # noqa: E731
    assert beta(first) == [f"{BETA},x-extra"]
    assert beta(second) == [f"{BETA},x-extra"]


def test_binary_and_malformed_frames_pass(ws_proxy, ws_upstream):
    with connect(ws_proxy.url.replace("http", "ws") + "/v1/responses",
                 additional_headers=codex_headers()) as ws:
        ws.send(b"\x00\x01\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\x01\xffbinary"
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=10))["type"] == "error"
    assert ws_upstream.messages == [b"\x00\x01\xffbinary", "{not json"]


def test_connection_closed_mid_response_is_truncated(ws_proxy, ws_upstream):
    with connect(ws_proxy.url.replace("http", "ws") + "/v1/responses",
                 additional_headers=codex_headers()) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-cut", "input": []}))
        ws.recv(timeout=10)  # response.created; close before the rest is read
    deadline = time.monotonic() + 10
    mine = []
    while not mine and time.monotonic() < deadline:
        mine = [e for e in ws_proxy.events() if e["model"] == "gpt-cut"]
        time.sleep(0.05)
    assert mine, "no event line for the closed connection"
    # the fake may have sent everything before the close reached it
    assert mine[-1]["stream_state"] in ("complete", "truncated")


def test_refused_in_replay_mode_then_http_is_served_from_the_store(upstream, tmp_path):
    body = json.dumps({"model": "gpt-5-codex", "input": "hi", "stream": True}).encode()
    h = {"content-type": "application/json", "authorization": "Bearer sk-proj-ws"}
    work = tmp_path / "codex"
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=work,
                  options={"headroom_store_mode": "record"}) as rec:
        recorded = httpx.post(rec.url + "/v1/responses", content=body, headers=h).content
    upstream.clear()
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=work,
                  options={"headroom_store_mode": "replay"}) as rep:
        with pytest.raises(InvalidStatus) as e:
            connect(rep.url.replace("http", "ws") + "/v1/responses",
                    additional_headers=codex_headers())
        assert e.value.response.status_code == 426
        r = httpx.post(rep.url + "/v1/responses", content=body, headers=h)
        assert r.headers["x-headroom-cache"] == "hit" and r.content == recorded
        ev = rep.events(wait_for=3)[-2]
        assert ev["status"] == 426 and ev["transport"] == "websocket"
    assert upstream.received == []


def test_refuse_option(ws_upstream, tmp_path):
    with Mitmdump(mode=f"reverse:{ws_upstream.url}", workdir=tmp_path,
                  options={"headroom_websocket": "refuse"}) as p:
        with pytest.raises(InvalidStatus) as e:
            connect(p.url.replace("http", "ws") + "/v1/responses",
                    additional_headers=codex_headers())
        assert e.value.response.status_code == 426
        # however the client spells its offer (the upstream may take any protocol offered; the
        # fake upstream answers these 426 too: the handshake count below tells who did)
        for upgrade in ([("Upgrade", "websocket, foo/1")], [("Upgrade", "WebSocket/13")],
                        [("Upgrade", "h2c"), ("Upgrade", "websocket")]):
            r = httpx.get(p.url + "/v1/responses", headers=[
                ("Connection", "Upgrade"), *upgrade, ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Authorization", "Bearer sk-proj-ws")])
            assert r.status_code == 426, upgrade
        # other WebSocket endpoints are not ours to refuse
        with connect(p.url.replace("http", "ws") + "/elsewhere") as ws:
            ws.send(b"ping")
            assert ws.recv(timeout=10) == b"ping"
    assert len(ws_upstream.handshakes) == 1  # only the /elsewhere one reached upstream


def test_codex_websocket_sessions_are_named_from_the_opening_message(ws_proxy, ws_upstream):
    before = len(ws_proxy.events(settle=0.1))
    env = ("<environment_context>\n  <cwd>/home/dev/work/api</cwd>\n  <approval_policy>never"
           "</approval_policy>\n</environment_context>")
    sent = [create(generate=False, input=[]),
            create(input=[{"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": env}]},
                          {"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "fix it"}]}])]
    with connect(ws_proxy.url.replace("http", "ws") + "/v1/responses",
                 additional_headers=codex_headers(session="codex-ws-label",
                                                  **{"User-Agent": "codex_cli_rs/0.60.0"})) as ws:
        for msg in sent:
            ws.send(msg)
            recv_until_completed(ws)
    evs = ws_proxy.events(wait_for=before + 2, settle=0.2)[before:]
    assert [e["session_label"] for e in evs] == ["codex", "codex · ~/work/api"]
    rows = httpx.get(ws_proxy.url + "/headroom/api/sessions").json()["sessions"]
    assert any(r["label"] == "codex · ~/work/api" and r["turns"] == 2 for r in rows)


def test_a_rewritten_message_keeps_non_ascii_text_whole(ws_proxy, ws_upstream):
    # A changed message goes upstream in ~4000-byte frames; a frame cut inside a character
    # used to reach the upstream as U+FFFD (mitmproxy decodes each frame on its own).
    log = "\n".join([f"tests/test_mod_{i}.py::test_case_{i} PASSED ✓ ünïcödé" for i in range(3000)]
                    + ["FAILED tests/test_x.py::test_bad - AssertionError: ✗ mismatch",
                       "===== 1 failed, 3000 passed in 12.3s ====="])
    prompt = "日本語テキスト✓" * 3000
    with connect(ws_proxy.url.replace("http", "ws") + "/v1/responses",
                 additional_headers=codex_headers(session="codex-ws-utf8"), max_size=None) as ws:
        ws.send(create(input=[]))  # the upstream answers with a shell call, call_1...
        first = recv_until_completed(ws)
        call = first[-1]["response"]["output"][0]["call_id"]
        sent = json.dumps({
            "type": "response.create", "model": "gpt-5-codex",
            "input": [{"type": "function_call_output", "call_id": call, "output": log},
                      {"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": prompt}]}]},
            ensure_ascii=False)
        ws.send(sent)
        recv_until_completed(ws)
    got = ws_upstream.messages[-1]
    assert len(got) < len(sent) // 2  # it was rewritten...
    assert "\ufffd" not in got  # ...and no character was cut
    doc = json.loads(got)
    assert doc["input"][1]["content"][0]["text"] == prompt
    failure = "FAILED tests/test_x.py::test_bad - AssertionError: ✗ mismatch"
    assert failure in doc["input"][0]["output"]
