"""The engine's live-zone rewriting: cache-safe compression of the newest tool outputs."""

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from headroom_core import encoding
from headroom_core.flow import RequestIn
from tests.runtime_util import rig

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
from tool_output_corpus import pytest_log, ripgrep  # noqa: E402

SYSTEM = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.0; cch=abc12;"},
          {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
         {"name": "Read", "description": "read", "input_schema": {"type": "object"}}]


def conversation(turns):
    """Claude-Code-shaped messages: each turn is (tool, output)."""
    msgs = [{"role": "user", "content": [{"type": "text", "text": "fix the tests"}]}]
    for i, (tool, out) in enumerate(turns):
        msgs.append({"role": "assistant", "content": [
            {"type": "text", "text": f"step {i}"},
            {"type": "tool_use", "id": f"toolu_{i}", "name": tool, "input": {"command": "x"}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}",
             "content": [{"type": "text", "text": out}]}]})
    return msgs


def body(turns, **extra):
    msgs = conversation(turns)
    msgs[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}  # Claude Code marks it
    return json.dumps({"model": "claude-x", "messages": msgs, "system": SYSTEM, "tools": TOOLS,
                       "max_tokens": 100, "stream": True, **extra}).encode()


@pytest.fixture
def engine(tmp_path):
    e = rig(tmp_path, events="off")
    yield e
    e.close()


def send(engine, raw, key=b"sk-ant-api03-k", coding=None, path="/v1/messages"):
    fields = [(b"x-api-key", key), (b"content-type", b"application/json"),
              (b"X-Claude-Code-Session-Id", b"s1")]
    if coding:
        fields.append((b"content-encoding", coding.encode()))
    plan = engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443, path,
                                           fields, raw, False))
    return plan


LOG = pytest_log(passes=600, failures=2).text
RG = ripgrep(files=40, per_file=15).text


def test_newest_tool_output_compressed_everything_else_byte_identical(engine):
    raw = body([("Bash", LOG)])
    plan = send(engine, raw)
    out = plan.body
    assert out is not None and len(out) < len(raw) // 3
    rw = plan.state.decisions["rewrite"]
    assert rw["changed"] and rw["tokens_saved"] > 1000 and rw["actions"] == {"compressed": 1}
    assert rw["cch"] is True
    # the only difference is the tool output's string literal
    lit = json.dumps(LOG).encode()
    start = raw.index(lit)
    end_from_tail = len(raw) - (start + len(lit))
    assert hashlib.sha256(out[:start]).digest() == hashlib.sha256(raw[:start]).digest()
    assert out[len(out) - end_from_tail:] == raw[len(raw) - end_from_tail:]
    new_text = json.loads(out)["messages"][-1]["content"][0]["content"][0]["text"]
    assert "FAILED" in new_text and "http://127.0.0.1:8080/ccr/" in new_text
    # the marker's handle serves the original, to the agent's shell on this machine
    handle = re.search(r"/ccr/([0-9a-f]{32})", new_text).group(1)
    got = engine.handle_request(RequestIn("g", "GET", "http", "127.0.0.1", 8080,
                                          f"/ccr/{handle}", [], b"", False, client="127.0.0.1"))
    got = got.resolve(got.deferred())  # (answered in a worker thread)
    assert got.response.status == 200 and got.response.body.decode() == LOG


def test_next_turn_replays_the_same_bytes(engine, tmp_path):
    t1 = send(engine, body([("Bash", LOG)])).body
    t2_raw = body([("Bash", LOG), ("Bash", RG)])
    t2 = send(engine, t2_raw).body
    doc1, doc2 = json.loads(t1), json.loads(t2)
    assert doc2["messages"][:3][2]["content"][0]["content"] == doc1["messages"][2]["content"][0]["content"]
    # byte level: turn 1's forwarded bytes up to its last message are a prefix of turn 2's
    # (Claude Code moves its cache_control marker, so cut before the tool_result block ends)
    cut = t1.index(b', "cache_control"', t1.index(b"toolu_0"))
    assert t2[:cut] == t1[:cut]
    # and after a restart with different settings, the ledger still wins
    engine.close()
    e2 = rig(tmp_path, events="off", compress_min_ratio=0.9)
    t2b = send(e2, t2_raw).body
    assert t2b[:cut] == t1[:cut]
    e2.close()


@pytest.mark.parametrize("extra", [[], [(b"x-api-key", b"placeholder")]])
def test_oauth_traffic_untouched_in_auto_mode(engine, extra):
    # (a gateway's placeholder key beside the user's own subscription token changes nothing)
    raw = body([("Bash", LOG)])
    fields = [*extra, (b"authorization", b"Bearer sk-ant-oat01-xyz"),
              (b"content-type", b"application/json")]
    plan = engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                           "/v1/messages", fields, raw, False))
    assert plan.body is None and "rewrite" not in plan.state.decisions


def test_mode_on_rewrites_oauth_and_off_never(tmp_path):
    raw = body([("Bash", LOG)])
    fields = [(b"authorization", b"Bearer sk-ant-oat01-xyz")]
    on = rig(tmp_path / "on", events="off", compress="on")
    assert on.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                       "/v1/messages", fields, raw, False)).body is not None
    on.close()
    off = rig(tmp_path / "off", events="off", compress="off")
    assert send(off, raw).body is None
    off.close()


@pytest.mark.parametrize("coding", ["gzip", "zstd", "br"])
def test_content_coding_is_kept(engine, coding):
    raw = body([("Bash", LOG)])
    plan = send(engine, encoding.encode(raw, coding), coding=coding)
    assert plan.body is not None
    doc = json.loads(encoding.decode(plan.body, coding))
    assert "http://127.0.0.1:8080/ccr/" in doc["messages"][-1]["content"][0]["content"][0]["text"]
    assert plan.state.req_bytes_upstream == len(plan.body)


def test_excluded_tools_small_outputs_and_count_tokens(engine):
    assert send(engine, body([("Read", LOG)])).body is None
    assert send(engine, body([("Bash", "ok\n" * 20)])).body is None
    assert send(engine, body([("Bash", LOG)]), path="/v1/messages/count_tokens").body is None


def test_openai_chat_and_responses_shapes(engine):
    chat = {"model": "gpt-x", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": LOG}]}
    fields = [(b"authorization", b"Bearer sk-proj-k")]
    p = engine.handle_request(RequestIn("f", "POST", "https", "api.openai.com", 443,
                                        "/v1/chat/completions", fields,
                                        json.dumps(chat).encode(), False))
    assert p.body is not None and p.state.decisions["rewrite"]["tokens_saved"] > 1000
    resp = {"model": "gpt-x", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": RG}]}
    p = engine.handle_request(RequestIn("f", "POST", "https", "api.openai.com", 443,
                                        "/v1/responses", fields, json.dumps(resp).encode(), False))
    assert p.body is not None and json.loads(p.body)["input"][:2] == resp["input"][:2]


def test_unknown_handle_is_404_and_only_ccr_paths_are_served(engine):
    r = engine.handle_request(RequestIn("g", "GET", "http", "headroom.local", 80,
                                        "/ccr/" + "0" * 32, [], b"", False, client="::1"))
    assert r.response is None and r.deferred is not None  # (answered in a worker thread)
    assert r.resolve(r.deferred()).response.status == 404
    r = engine.handle_request(RequestIn("g", "GET", "http", "headroom.local", 80, "/other", [],
                                        b"", False, client="::1"))
    assert r.response is None
