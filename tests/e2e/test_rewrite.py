"""End to end: live-zone compression through the real proxy, sticky across turns."""

import json
import re
import sys
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
from websockets.sync.client import connect

from tests.e2e.fake_ws import FakeWebSocketUpstream
from tests.e2e.proxy import Mitmdump

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
from tool_output_corpus import github_runs, pytest_log  # noqa: E402

LOG = pytest_log(passes=700, failures=2).text
RUNS = github_runs(n=200, errors=2).text


def claude_messages(outputs):
    msgs = [{"role": "user", "content": "make the tests pass"}]
    for i, out in enumerate(outputs):
        msgs.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"command": "pytest"}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": out}]})
    return msgs


def test_sdk_turns_compressed_and_replayed(regular_proxy, upstream):
    client = anthropic.Anthropic(api_key="sk-ant-api03-rewrite", base_url="https://api.anthropic.com",
                                 max_retries=0, http_client=httpx2.Client(
                                     proxy=regular_proxy.url, verify=regular_proxy.verify))
    sess = {"X-Claude-Code-Session-Id": "rewrite-e2e"}
    client.messages.create(model="claude-x", max_tokens=8, messages=claude_messages([LOG]),
                           system="You are terse.", extra_headers=sess)
    client.messages.create(model="claude-x", max_tokens=8, messages=claude_messages([LOG, RUNS]),
                           system="You are terse.", extra_headers=sess)
    t1, t2 = upstream.requests_to("/v1/messages")
    out1 = t1.json()["messages"][2]["content"][0]["content"]
    out2 = t2.json()["messages"][2]["content"][0]["content"]
    assert len(out1) < len(LOG) // 3 and f"http://127.0.0.1:{regular_proxy.port}/ccr/" in out1
    assert out2 == out1  # the client resent the original; upstream got turn 1's bytes again
    end = t1.body.rindex(b"]}]")  # end of turn 1's last message content
    assert t2.body[:end] == t1.body[:end]
    assert len(t2.json()["messages"][4]["content"][0]["content"]) < len(RUNS) // 2
    evs = regular_proxy.events(wait_for=2, settle=0.1)
    assert evs[-1]["decisions"]["rewrite"]["actions"] == {"compressed": 1, "replayed": 1}
    assert evs[-1]["req_bytes_upstream"] < evs[-1]["req_bytes"]
    # the agent's shell can fetch the original at the marker's URL, through the proxy or not
    url = re.search(r"http://[^\s']+/ccr/[0-9a-f]{32}", out1).group(0)
    with httpx.Client(proxy=regular_proxy.url) as c:
        r = c.get(url)
    assert r.status_code == 200 and r.text == LOG
    with httpx.Client(trust_env=False) as c:
        assert c.get(url).text == LOG


@pytest.mark.parametrize("placeholder_key", [None, "gateway-placeholder"])
def test_oauth_traffic_is_not_rewritten(reverse_proxy, upstream, capture, placeholder_key):
    # (a gateway's placeholder x-api-key beside the user's own subscription token: still
    # subscription traffic, forwarded byte for byte)
    client = anthropic.Anthropic(auth_token="sk-ant-oat01-subscription",
                                 default_headers={"x-api-key": placeholder_key} if placeholder_key
                                 else None, base_url=reverse_proxy.url, max_retries=0,
                                 http_client=httpx2.Client(event_hooks={"request": [capture]}))
    client.messages.create(model="claude-x", max_tokens=8, messages=claude_messages([LOG]))
    (rec,) = upstream.requests_to("/v1/messages")
    assert rec.json()["messages"][2]["content"][0]["content"] == LOG
    assert rec.sha256 == capture.last_sha()
    assert (rec.header("x-api-key") is not None) is (placeholder_key is not None)


def test_openai_responses_sdk(reverse_proxy, upstream):
    client = openai.OpenAI(api_key="sk-proj-rw", base_url=reverse_proxy.url + "/v1", max_retries=0,
                           http_client=httpx2.Client())
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
             {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c1", "output": LOG}]
    client.responses.create(model="gpt-x", input=items)
    (rec,) = upstream.requests_to("/v1/responses")
    out = rec.json()["input"][2]["output"]
    assert len(out) < len(LOG) // 3 and "FAILED" in out


def test_websocket_create_rewritten_and_replayed(tmp_path):
    up = FakeWebSocketUpstream()
    try:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path) as p:
            url = p.url.replace("http", "ws") + "/v1/responses"
            h = {"Authorization": "Bearer sk-proj-ws", "session_id": "ws-rw"}
            output = {"type": "function_call_output", "call_id": "call_1", "output": LOG}
            with connect(url, additional_headers=h) as ws:
                ws.send(json.dumps({"type": "response.create", "model": "gpt-5-codex",
                                    "input": [{"type": "message", "role": "user", "content": [
                                        {"type": "input_text", "text": "run tests"}]}]}))
                while json.loads(ws.recv(timeout=10))["type"] != "response.completed":
                    pass  # the fake answers with a `shell` call, call_id call_1
                ws.send(json.dumps({"type": "response.create", "model": "gpt-5-codex",
                                    "previous_response_id": "resp_1", "input": [output]}))
                while json.loads(ws.recv(timeout=10))["type"] != "response.completed":
                    pass
            # a reconnect that resends the same output gets the same bytes (the ledger)
            with connect(url, additional_headers=h) as ws:
                ws.send(json.dumps({"type": "response.create", "model": "gpt-5-codex",
                                    "input": [output]}))
                while json.loads(ws.recv(timeout=10))["type"] != "response.completed":
                    pass
            evs = p.events(wait_for=3)
        sent = [json.loads(m) for m in up.messages]
        first = sent[1]["input"][0]["output"]
        assert len(first) < len(LOG) // 3 and "/ccr/" in first
        assert sent[2]["input"][0]["output"] == first
        assert evs[1]["decisions"]["rewrite"]["actions"] == {"compressed": 1}
        assert evs[1]["decisions"]["rewrite"]["blocks"][0]["tool"] == "shell"
        assert evs[2]["decisions"]["rewrite"]["actions"] == {"replayed": 1}
        assert evs[1]["req_bytes_upstream"] < evs[1]["req_bytes"]
    finally:
        up.close()
