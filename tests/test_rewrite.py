import copy
import hashlib
import itertools
import json
import re
import sqlite3
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core.jsonspan import locate
from headroom_runtime.diskledger import Ledger
from headroom_runtime.diskoriginals import Originals
from headroom_core.rewrite import RewritePolicy, Rewriter

SALT = b"test-salt-0123456"
MARK = "[hr] "


@dataclass(frozen=True)
class Outcome:
    action: str
    kind: str
    text: str | None = None
    tokens_before: int | None = None
    tokens_after: int | None = None
    omitted: str = ""


@dataclass(frozen=True)
class FakePolicy:
    min_bytes: int = 300
    keep: int = 40


def fake_compress(text, *, policy, retrieval_ref):
    """Deterministic stand-in with the compressor's contract: head of the text plus the ref."""
    policy = policy or FakePolicy()
    if text.startswith(MARK):
        return Outcome("already-compressed", "log")
    if text.startswith("IMAGE"):
        return Outcome("unchanged-type", "text")
    if len(text.encode()) < policy.min_bytes:
        return Outcome("below-threshold", "log")
    if text.startswith("GROW"):
        return Outcome("compressed", "log", text + " " * 10, 10, 12)
    out = f"{MARK}{text[:policy.keep]} [{len(text)} chars; {retrieval_ref}]"
    return Outcome("compressed", "log", out, len(text) // 4, len(out) // 4)


def never_compress(text, *, policy, retrieval_ref):
    return Outcome("below-threshold", "log")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def big(tag: str, n: int = 60) -> str:
    return "".join(f"{tag} line {i}: some output here\n" for i in range(n))


def rewriter(tmp_path, sub="a", *, policy=None, compressor=fake_compress, salt=SALT):
    return Rewriter(policy or RewritePolicy(), Ledger(tmp_path / sub / "ledger"),
                    Originals(tmp_path / sub / "originals"), salt, compressor)


def gaps(buf: bytes, spans) -> list[bytes]:
    out, pos = [], 0
    for s, e in sorted(spans):
        out.append(buf[pos:s])
        pos = e
    out.append(buf[pos:])
    return out


def assert_only_literals_changed(raw: bytes, new: bytes, paths) -> None:
    """SHA-256 of every byte range outside the given literals is identical before and after."""
    a, b = locate(raw, paths), locate(new, paths)
    assert a is not None and b is not None
    assert [sha(g) for g in gaps(raw, a.values())] == [sha(g) for g in gaps(new, b.values())]


def handle_of(text: str) -> str:
    m = re.search(r"/ccr/([0-9a-f]{32})", text)
    assert m, text
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# Anthropic conversations


def a_history():
    return [
        {"role": "user", "content": [{"type": "text", "text": "please look " + big("user")}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": big("think"), "signature": "sig=="},
            {"type": "text", "text": "running"},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash",
             "input": {"command": "make", "blob": big("input")}}]},
    ]


def a_turn1_tail():
    return [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "cache_control": {"type": "ephemeral"},
         "content": [{"type": "text", "text": big("build")}]}]}]


def a_body(messages, **extra):
    return {"model": "claude-sonnet-4-5", "max_tokens": 1000,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
            "messages": messages, **extra}


LIVE1 = ("messages", 2, "content", 0, "content", 0, "text")


def test_compresses_the_live_tool_result_and_copies_every_other_byte(tmp_path):
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    rw = rewriter(tmp_path)
    res = rw.rewrite("anthropic", raw, tenant="t:1")
    assert res.body is not None
    assert_only_literals_changed(raw, res.body, [LIVE1])
    new = orjson.loads(res.body)
    text = new["messages"][2]["content"][0]["content"][0]["text"]
    assert text.startswith(MARK + "build line 0")
    assert rw.originals.get(handle_of(text)) == big("build")
    assert res.manifest == [{
        "index": 2, "block": 0, "part": 0, "tool": "Bash", "live": True, "kind": "log",
        "action": "compressed", "bytes_before": len(orjson.dumps(big("build"))),
        "bytes_after": len(orjson.dumps(text)), "tokens_before": len(big("build")) // 4,
        "tokens_after": len(text) // 4, "handle": handle_of(text)}]
    assert res.bytes_saved == len(raw) - len(res.body) > 0
    assert res.tokens_saved == len(big("build")) // 4 - len(text) // 4


def test_user_text_thinking_tool_use_and_server_blocks_are_untouched(tmp_path):
    msgs = a_history() + [
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("old")}]},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": big("redacted")},
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srv",
             "content": [{"type": "web_search_result", "title": big("web"), "url": "u"}]},
            {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"q": big("q")}}]},
        {"role": "user", "content": [
            {"type": "text", "text": big("typed")},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "A" * 5000}},
            {"type": "document", "source": {"type": "text", "data": big("doc")}},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": big("grep")}]},
    ]
    body = a_body(msgs)
    raw = orjson.dumps(body)
    res = rewriter(tmp_path).rewrite("anthropic", raw, tenant="t")
    live = ("messages", 4, "content", 3, "content")
    assert_only_literals_changed(raw, res.body, [live])
    new = orjson.loads(res.body)
    assert new["messages"][4]["content"][3]["content"].startswith(MARK)
    new["messages"][4]["content"][3]["content"] = big("grep")
    assert new == body
    assert [e["action"] for e in res.manifest] == ["compressed"]  # historic blocks not listed


def test_string_content_and_is_error(tmp_path):
    msgs = a_history() + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("fail", 5),
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("huge fail", 200),
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("ok")}]}]
    raw = orjson.dumps(a_body(msgs))
    res = rewriter(tmp_path, policy=RewritePolicy(error_limit=2048)).rewrite(
        "anthropic", raw, tenant="t")
    assert [(e["block"], e["part"], e["action"]) for e in res.manifest] == [
        (0, None, "error-kept"), (1, None, "compressed"), (2, None, "compressed")]
    paths = [("messages", 2, "content", j, "content") for j in range(3)]
    assert_only_literals_changed(raw, res.body, paths)
    new = orjson.loads(res.body)["messages"][2]["content"]
    assert new[0]["content"] == big("fail", 5)
    assert new[1]["is_error"] is True and new[1]["content"].startswith(MARK)


@pytest.mark.parametrize("policy, tool, action", [
    (RewritePolicy(), "Read", "excluded"),
    (RewritePolicy(), "NotebookEdit", "excluded"),
    (RewritePolicy(), "Bash", "compressed"),
    (RewritePolicy(), "mcp__github__search", "compressed"),
    (RewritePolicy(include=("mcp__*",)), "Bash", "excluded"),
    (RewritePolicy(include=("mcp__*",)), "mcp__github__search", "compressed"),
    (RewritePolicy(exclude=("mcp__github__*",)), "mcp__github__search", "excluded"),
    (RewritePolicy(exclude=()), "Read", "compressed"),
])
def test_per_tool_policy(tmp_path, policy, tool, action):
    msgs = [{"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": tool,
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x",
                                          "content": big("out")}]}]
    raw = orjson.dumps(a_body(msgs))
    res = rewriter(tmp_path, policy=policy).rewrite("anthropic", raw, tenant="t")
    assert [(e["tool"], e["action"]) for e in res.manifest] == [(tool, action)]
    assert (res.body is not None) == (action == "compressed")


@pytest.mark.parametrize("text, action", [
    ("short output", "below-threshold"),
    ("IMAGE" + big("png"), "unchanged-type"),
    (MARK + big("again"), "already-compressed"),
    ("GROW" + big("grow"), "rejected-not-smaller"),
])
def test_compressor_outcomes_that_change_nothing(tmp_path, text, action):
    msgs = a_history() + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": text}]}]
    raw = orjson.dumps(a_body(msgs))
    rw = rewriter(tmp_path)
    res = rw.rewrite("anthropic", raw, tenant="t")
    assert res.body is None
    assert [e["action"] for e in res.manifest] == [action]
    assert res.tokens_saved == res.bytes_saved == 0
    # Nothing was recorded, so nothing will be replayed later.
    assert rw.ledger.min_length() is None


def test_thresholds_come_from_the_compress_policy(tmp_path):
    msgs = a_history() + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("mid", 10)}]}]
    raw = orjson.dumps(a_body(msgs))
    low = rewriter(tmp_path, "low", policy=RewritePolicy(compress_policy=FakePolicy(min_bytes=100)))
    high = rewriter(tmp_path, "high",
                    policy=RewritePolicy(compress_policy=FakePolicy(min_bytes=10_000)))
    assert low.rewrite("anthropic", raw, tenant="t").manifest[0]["action"] == "compressed"
    assert high.rewrite("anthropic", raw, tenant="t").manifest[0]["action"] == "below-threshold"


def test_escapes_in_tool_output_round_trip_exactly(tmp_path):
    tricky = ('quote " backslash \\ newline \n tab \t slash / é ✓ 😀 \u2028 ctrl \x01 end\\'
              * 20)
    msgs = a_history() + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": tricky},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": tricky + "2"}]}]}]
    # ASCII escapes (\u00e9, \ud83d\ude00) plus escaped slashes, as some serialisers emit.
    raw = json.dumps(a_body(msgs)).replace("/", "\\/").encode()
    rw = rewriter(tmp_path)
    res = rw.rewrite("anthropic", raw, tenant="t")
    paths = [("messages", 2, "content", 0, "content"),
             ("messages", 2, "content", 1, "content", 0, "text")]
    assert_only_literals_changed(raw, res.body, paths)
    new = orjson.loads(res.body)["messages"][2]["content"]
    assert rw.originals.get(handle_of(new[0]["content"])) == tricky
    assert rw.originals.get(handle_of(new[1]["content"][0]["text"])) == tricky + "2"


def test_lone_surrogate_output_is_kept_and_others_still_compress(tmp_path):
    msgs = a_history() + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("bad") + "\ud800"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": big("good")}]}]
    raw = json.dumps(a_body(msgs)).encode()  # orjson cannot even parse this body
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    res = rewriter(tmp_path).rewrite("anthropic", raw, tenant="t")
    assert [(e["action"], e.get("reason")) for e in res.manifest] == [
        ("unchanged-type", "lone-surrogate"), ("compressed", None)]
    assert_only_literals_changed(raw, res.body, [("messages", 2, "content", 1, "content")])
    assert json.loads(res.body)["messages"][2]["content"][0]["content"] == big("bad") + "\ud800"


@pytest.mark.parametrize("indent", [2, "\t", 0])
def test_pretty_printed_bodies(tmp_path, indent):
    body = a_body(a_history() + a_turn1_tail())
    raw = json.dumps(body, indent=indent, ensure_ascii=False).encode()
    res = rewriter(tmp_path).rewrite("anthropic", raw, tenant="t")
    assert_only_literals_changed(raw, res.body, [LIVE1])
    assert res.body.count(b"\n") == raw.count(b"\n")  # the client's layout is kept
    assert orjson.loads(res.body)["messages"][2]["content"][0]["content"][0]["text"].startswith(
        MARK)


def test_duplicate_keys_rewrite_the_occurrence_the_provider_reads(tmp_path):
    head = orjson.dumps(a_body(a_history()))[:-2]  # up to the end of the messages list
    first, last = orjson.dumps(big("shadowed")), orjson.dumps(big("effective"))
    raw = (head + b',{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1",'
           b'"content":' + first + b',"content":' + last + b'}]}]}')
    res = rewriter(tmp_path).rewrite("anthropic", raw, tenant="t")
    assert res.body is not None
    assert res.body.startswith(raw[:raw.index(last)])  # the shadowed copy is byte-identical
    assert res.body.endswith(b"}]}]}")
    assert orjson.loads(res.body)["messages"][2]["content"][0]["content"].startswith(
        MARK + "effective")


def test_deterministic_and_idempotent(tmp_path):
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    one = rewriter(tmp_path, "one").rewrite("anthropic", raw, tenant="t")
    two = rewriter(tmp_path, "two").rewrite("anthropic", raw, tenant="t")
    assert one.body == two.body is not None
    rw = rewriter(tmp_path, "one")
    again = rw.rewrite("anthropic", one.body, tenant="t")
    assert again.body is None
    assert [e["action"] for e in again.manifest] == ["already-compressed"]
    retry = rw.rewrite("anthropic", raw, tenant="t")  # the client retries the same request
    assert retry.body == one.body
    assert [e["action"] for e in retry.manifest] == ["replayed"]


# ---------------------------------------------------------------------------------------------
# The ledger across turns


def turn2_messages(history_tail):
    return a_history() + history_tail + [
        {"role": "assistant", "content": [
            {"type": "text", "text": "next"},
            {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"p": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "cache_control": {"type": "ephemeral"},
             "content": [{"type": "text", "text": big("grep")}]}]}]


def test_turn2_replays_turn1_bytes_so_the_prefix_is_identical(tmp_path):
    rw = rewriter(tmp_path)
    raw1 = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    out1 = rw.rewrite("anthropic", raw1, tenant="t").body
    # Claude Code moves its cache_control marker to the newest block each turn.
    tail = copy.deepcopy(a_turn1_tail())
    del tail[0]["content"][0]["cache_control"]
    raw2 = orjson.dumps(a_body(turn2_messages(tail)))
    res2 = rw.rewrite("anthropic", raw2, tenant="t")
    out2 = res2.body
    assert [(e["index"], e["live"], e["action"]) for e in res2.manifest] == [
        (2, False, "replayed"), (4, True, "compressed")]
    lit1 = out1[slice(*locate(out1, [LIVE1])[LIVE1])]
    lit2 = out2[slice(*locate(out2, [LIVE1])[LIVE1])]
    assert lit2 == lit1  # byte-compared with what turn 1 forwarded
    # Everything up to the end of the replayed literal is what turn 1 forwarded, except the moved
    # cache_control marker, which the client itself changed.
    end1 = locate(out1, [LIVE1])[LIVE1][1]
    before, marker, after = out1[:end1].rpartition(b',"cache_control":{"type":"ephemeral"}')
    assert marker
    expect = before + after
    end2 = locate(out2, [LIVE1])[LIVE1][1]
    assert out2[:end2] == expect
    assert res2.tokens_saved > 0


def test_turn_prefix_is_byte_identical_when_the_client_resends_history(tmp_path):
    rw = rewriter(tmp_path)
    raw1 = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    out1 = rw.rewrite("anthropic", raw1, tenant="t").body
    raw2 = orjson.dumps(a_body(turn2_messages(a_turn1_tail())))
    out2 = rw.rewrite("anthropic", raw2, tenant="t").body
    assert out2.startswith(out1[:-2])  # turn 1's body without the closing "]}"


def test_replay_survives_a_restart_and_changed_compressor_settings(tmp_path):
    raw1 = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    first = rewriter(tmp_path)
    out1 = first.rewrite("anthropic", raw1, tenant="t").body
    first.ledger.close()
    first.originals.close()
    # New process, new objects on the same directories, a compressor that now keeps more text.
    changed = rewriter(tmp_path, policy=RewritePolicy(compress_policy=FakePolicy(keep=200)))
    raw2 = orjson.dumps(a_body(turn2_messages(a_turn1_tail())))
    out2 = changed.rewrite("anthropic", raw2, tenant="t").body
    assert out2.startswith(out1[:-2])
    new_live = orjson.loads(out2)["messages"][4]["content"][0]["content"][0]["text"]
    assert len(new_live) > 200  # the new setting applies to new outputs only
    # A retry of turn 1 also gets the recorded bytes, not a recomputation.
    assert changed.rewrite("anthropic", raw1, tenant="t").body == out1


def test_client_edited_history_is_forwarded_as_sent(tmp_path):
    rw = rewriter(tmp_path)
    rw.rewrite("anthropic", orjson.dumps(a_body(a_history() + a_turn1_tail())), tenant="t")
    edited = copy.deepcopy(a_turn1_tail())
    edited[0]["content"][0]["content"][0]["text"] = big("build")[:-1] + "!"
    raw2 = orjson.dumps(a_body(turn2_messages(edited)))
    res2 = rw.rewrite("anthropic", raw2, tenant="t")
    assert [(e["index"], e["action"]) for e in res2.manifest] == [(4, "compressed")]
    assert orjson.loads(res2.body)["messages"][2] == edited[0]
    assert_only_literals_changed(raw2, res2.body,
                                 [("messages", 4, "content", 0, "content", 0, "text")])


def test_compacted_history_replays_nothing(tmp_path):
    rw = rewriter(tmp_path)
    rw.rewrite("anthropic", orjson.dumps(a_body(a_history() + a_turn1_tail())), tenant="t")
    compacted = [{"role": "user", "content": "Summary of the conversation so far: ..."},
                 {"role": "assistant", "content": "ok"},
                 {"role": "user", "content": "continue"}]
    res = rw.rewrite("anthropic", orjson.dumps(a_body(compacted)), tenant="t")
    assert res.body is None and res.manifest == []


def test_ledger_is_per_tenant(tmp_path):
    rw = rewriter(tmp_path)
    rw.rewrite("anthropic", orjson.dumps(a_body(a_history() + a_turn1_tail())), tenant="t:a")
    raw2 = orjson.dumps(a_body(turn2_messages(a_turn1_tail())))
    res = rw.rewrite("anthropic", raw2, tenant="t:b")
    assert [(e["index"], e["action"]) for e in res.manifest] == [(4, "compressed")]
    assert orjson.loads(res.body)["messages"][2] == a_turn1_tail()[0]


def test_same_output_elsewhere_in_history_is_not_rewritten_retroactively(tmp_path):
    # toolu_0 ran before Headroom was on; toolu_1 now produces identical bytes.
    rw = rewriter(tmp_path)
    early = [{"role": "assistant", "content": [
                 {"type": "tool_use", "id": "toolu_0", "name": "Bash", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0",
                                           "content": [{"type": "text", "text": big("build")}]}]}]
    msgs = [{"role": "user", "content": "hi"}, *early, *a_history()[1:], *a_turn1_tail()]
    raw = orjson.dumps(a_body(msgs))
    res = rw.rewrite("anthropic", raw, tenant="t")
    assert [(e["index"], e["action"]) for e in res.manifest] == [(4, "compressed")]
    raw2 = orjson.dumps(a_body(msgs + [{"role": "assistant", "content": "done"},
                                       {"role": "user", "content": "thanks"}]))
    res2 = rw.rewrite("anthropic", raw2, tenant="t")
    assert [(e["index"], e["action"]) for e in res2.manifest] == [(4, "replayed")]
    assert orjson.loads(res2.body)["messages"][2] == early[1]


# ---------------------------------------------------------------------------------------------
# OpenAI shapes


def test_chat_trailing_tool_messages(tmp_path):
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": big("old")},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
            {"id": "c3", "type": "function", "function": {"name": "read_file",
                                                          "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": big("ls")}]},
        {"role": "tool", "tool_call_id": "c3", "content": big("file")}]}
    raw = orjson.dumps(body)
    res = rewriter(tmp_path).rewrite("chat", raw, tenant="t")
    assert [(e["index"], e["part"], e["tool"], e["action"]) for e in res.manifest] == [
        (5, 0, "shell", "compressed"), (6, None, "read_file", "excluded")]
    assert_only_literals_changed(raw, res.body, [("messages", 5, "content", 0, "text")])


def responses_body(extra_items=()):
    return {"model": "gpt-5-codex", "instructions": "be brief", "store": False, "stream": True,
            "input": [
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": big("typed")}]},
                {"type": "reasoning", "summary": [], "encrypted_content": "enc"},
                {"type": "function_call", "call_id": "call_a", "name": "shell",
                 "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call_output", "call_id": "call_a", "output": big("ls")},
                *extra_items]}


def test_responses_shape_and_next_turn_replay(tmp_path):
    rw = rewriter(tmp_path)
    raw1 = orjson.dumps(responses_body())
    res1 = rw.rewrite("responses", raw1, tenant="t")
    assert [(e["index"], e["tool"], e["action"]) for e in res1.manifest] == [
        (3, "shell", "compressed")]
    assert_only_literals_changed(raw1, res1.body, [("input", 3, "output")])
    raw2 = orjson.dumps(responses_body([
        {"type": "custom_tool_call", "call_id": "call_b", "name": "apply_patch", "input": "p"},
        {"type": "custom_tool_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": big("patch")}]}]))
    res2 = rw.rewrite("responses", raw2, tenant="t")
    assert [(e["index"], e["action"]) for e in res2.manifest] == [
        (3, "replayed"), (5, "compressed")]
    assert res2.body.startswith(res1.body[:-2])


def test_websocket_create_with_tool_names(tmp_path):
    msg = {"type": "response.create", "model": "gpt-5-codex", "previous_response_id": "resp_1",
           "input": [
               {"type": "function_call_output", "call_id": "c1", "output": big("exec")},
               {"type": "function_call_output", "call_id": "c2", "output": big("file")}]}
    raw = orjson.dumps(msg)
    rw = rewriter(tmp_path)
    res = rw.rewrite("responses_ws", raw, tenant="t",
                     tool_names={"c1": "exec_command", "c2": "read_file"})
    assert [(e["tool"], e["live"], e["action"]) for e in res.manifest] == [
        ("exec_command", True, "compressed"), ("read_file", True, "excluded")]
    assert_only_literals_changed(raw, res.body, [("input", 0, "output")])
    # Without names both are unknown tools, hence candidates.
    res = rewriter(tmp_path, "b").rewrite("responses_ws", raw, tenant="t")
    assert [e["action"] for e in res.manifest] == ["compressed", "compressed"]


# ---------------------------------------------------------------------------------------------
# Failure modes


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"str"', b"\xff\xfe{}",
                                  b'{"messages": 5}', b'{"messages": [{"role": "user"}]}'])
def test_bad_bodies_change_nothing(tmp_path, body):
    for shape in ("anthropic", "chat", "responses", "responses_ws", "unknown"):
        assert rewriter(tmp_path).rewrite(shape, body, tenant="t").body is None


def test_unparsable_body_is_noted(tmp_path):
    res = rewriter(tmp_path).rewrite("anthropic", b"{oops", tenant="t")
    assert res.body is None and res.manifest == [{"action": "error", "reason": "unparsable-body"}]


def test_parsed_document_can_be_passed_in(tmp_path):
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    a = rewriter(tmp_path, "a").rewrite("anthropic", raw, tenant="t", doc=orjson.loads(raw))
    b = rewriter(tmp_path, "b").rewrite("anthropic", raw, tenant="t")
    assert a.body == b.body is not None
    # A document that does not match the bytes is refused, not half-applied.
    wrong = orjson.loads(raw)
    wrong["messages"][2]["content"][0]["content"][0]["text"] = "something else " * 50
    c = rewriter(tmp_path, "c").rewrite("anthropic", raw, tenant="t", doc=wrong)
    assert c.body is None and c.manifest == [{"action": "error", "reason": "unmapped-body"}]


def test_a_raising_compressor_keeps_the_original(tmp_path):
    def boom(text, *, policy, retrieval_ref):
        raise RuntimeError("bug")
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    res = rewriter(tmp_path, compressor=boom).rewrite("anthropic", raw, tenant="t")
    assert res.body is None
    assert [(e["action"], e["reason"]) for e in res.manifest] == [("compressor-error", "raised")]


class BrokenLedger(Ledger):
    def lookup(self, tenant, originals):
        raise sqlite3.OperationalError("database is locked")


def test_ledger_failure_forwards_unchanged(tmp_path):
    rw = Rewriter(RewritePolicy(), BrokenLedger(tmp_path / "l"), Originals(tmp_path / "o"), SALT,
                  fake_compress)
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    res = rw.rewrite("anthropic", raw, tenant="t")
    assert res.body is None
    assert res.manifest == [{"action": "error", "reason": "ledger-unavailable"}]


class BrokenOriginals(Originals):
    def put(self, tenant, text, *, salt):
        raise OSError("disk full")


def test_originals_failure_keeps_the_output_uncompressed(tmp_path):
    rw = Rewriter(RewritePolicy(), Ledger(tmp_path / "l"), BrokenOriginals(tmp_path / "o"), SALT,
                  fake_compress)
    raw = orjson.dumps(a_body(a_history() + a_turn1_tail()))
    res = rw.rewrite("anthropic", raw, tenant="t")
    assert res.body is None and [e["action"] for e in res.manifest] == ["store-error"]
    assert rw.ledger.min_length() is None  # nothing recorded that points at a lost original


# ---------------------------------------------------------------------------------------------
# Properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "input", "role", "content", "type", "text", "output",
                         "tool_use_id", "call_id", "tool_result", "user", "tool"]) | st.text(),
        inner, max_size=4),
    max_leaves=25)
_example = itertools.count()
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
_shapes = st.sampled_from(["anthropic", "chat", "responses", "responses_ws"])


@settings(max_examples=200, deadline=None, suppress_health_check=_SLOW_OK)
@given(doc=_json, shape=_shapes, pretty=st.booleans())
def test_random_bodies_never_raise_and_come_back_unchanged(tmp_path, doc, shape, pretty):
    raw = json.dumps(doc, indent=2 if pretty else None).encode()
    rw = rewriter(tmp_path, compressor=never_compress)
    res = rw.rewrite(shape, raw, tenant="t")
    assert res.body is None


_tool_text = st.text(st.characters(codec="utf-8") | st.sampled_from('"\\/\n\té😀\x00'),
                     min_size=0, max_size=600)


@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_OK)
@given(texts=st.lists(_tool_text, min_size=1, max_size=4), listy=st.booleans(),
       ascii_=st.booleans())
def test_random_tool_outputs_rewrite_only_their_literals(tmp_path, texts, listy, ascii_):
    blocks = []
    for i, t in enumerate(texts):
        content = [{"type": "text", "text": t}] if listy else t
        blocks.append({"type": "tool_result", "tool_use_id": f"u{i}", "content": content})
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"u{i}", "name": "Bash",
                                               "input": {}} for i in range(len(texts))]},
            {"role": "user", "content": blocks}]
    body = a_body(msgs)
    raw = json.dumps(body, ensure_ascii=ascii_).encode()
    # A new tenant per example: nothing recorded by earlier examples applies.
    res = rewriter(tmp_path).rewrite("anthropic", raw, tenant=f"t:{next(_example)}")
    paths = [("messages", 2, "content", i, "content", *((0, "text") if listy else ()))
             for i in range(len(texts))]
    if res.body is None:
        assert all(len(t.encode()) < 300 for t in texts)
        return
    assert_only_literals_changed(raw, res.body, paths)
    new = orjson.loads(res.body)
    for i, t in enumerate(texts):
        b = new["messages"][2]["content"][i]["content"]
        got = b[0]["text"] if listy else b
        assert got == t or (got.startswith(MARK) and len(t.encode()) >= 300)


# ---------------------------------------------------------------------------------------------
# End to end with the real compressor (the default when none is injected)

def build_log(n: int = 400) -> str:
    lines = [f"2025-01-01T00:00:{i % 60:02d}Z INFO worker {i} processed item ok" for i in range(n)]
    return "\n".join(lines) + "\n2025-01-01T00:01:00Z ERROR connection refused: db:5432\n"


def real_rewriter(tmp_path, sub="real"):
    pytest.importorskip("headroom_core.compress")
    return Rewriter(RewritePolicy(), Ledger(tmp_path / sub / "ledger"),
                    Originals(tmp_path / sub / "originals"), SALT)


def cc_tool_turn(output: str, tool: str = "Bash", use_id: str = "toolu_1"):
    return [{"role": "assistant", "content": [
                {"type": "tool_use", "id": use_id, "name": tool, "input": {"command": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use_id,
                                          "content": [{"type": "text", "text": output}]}]}]


def test_real_compressor_end_to_end_across_turns(tmp_path):
    rw = real_rewriter(tmp_path)
    log_text = build_log()
    msgs1 = [{"role": "user", "content": "run the worker"}, *cc_tool_turn(log_text)]
    raw1 = orjson.dumps(a_body(msgs1))
    res1 = rw.rewrite("anthropic", raw1, tenant="t")
    assert [(e["kind"], e["action"]) for e in res1.manifest] == [("log", "compressed")]
    assert res1.tokens_saved > 0 and res1.bytes_saved > 0
    path = ("messages", 2, "content", 0, "content", 0, "text")
    assert_only_literals_changed(raw1, res1.body, [path])
    text = orjson.loads(res1.body)["messages"][2]["content"][0]["content"][0]["text"]
    assert "ERROR connection refused" in text
    assert rw.originals.get(handle_of(text)) == log_text
    # Idempotent: the compressor recognises its own output.
    again = rw.rewrite("anthropic", res1.body, tenant="t")
    assert again.body is None and again.manifest[0]["action"] == "already-compressed"
    # Next turn: history replayed byte for byte, the new output handled on its own.
    msgs2 = msgs1 + cc_tool_turn(build_log(300), "Bash", "toolu_2")
    res2 = rw.rewrite("anthropic", orjson.dumps(a_body(msgs2)), tenant="t")
    assert [(e["index"], e["action"]) for e in res2.manifest] == [(2, "replayed"),
                                                                  (4, "compressed")]
    assert res2.body.startswith(res1.body[:-2])


def test_real_compressor_leaves_small_and_non_log_outputs(tmp_path):
    rw = real_rewriter(tmp_path)
    source = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))
    msgs = [{"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "u1", "name": "Bash", "input": {}},
                {"type": "tool_use", "id": "u2", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "u1", "content": build_log(5)},
                {"type": "tool_result", "tool_use_id": "u2", "content": source}]}]
    raw = orjson.dumps(a_body(msgs))
    res = rw.rewrite("anthropic", raw, tenant="t")
    assert res.body is None
    assert [e["action"] for e in res.manifest] == ["below-threshold", "unchanged-type"]


def test_real_compressor_on_a_codex_responses_request(tmp_path):
    rw = real_rewriter(tmp_path)
    output = "Exit code: 1\nWall time: 2.5 seconds\nOutput:\n" + build_log()
    raw = orjson.dumps(responses_body([
        {"type": "function_call", "call_id": "call_b", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_b", "output": output}]))
    res = rw.rewrite("responses", raw, tenant="t")
    assert [(e["index"], e["action"]) for e in res.manifest] == [(5, "compressed")]
    new = orjson.loads(res.body)["input"][5]["output"]
    assert new.startswith("Exit code: 1\nWall time: 2.5 seconds\nOutput:\n")
    assert rw.originals.get(handle_of(new)) == output


def test_the_tool_policy_is_asked_once_per_tool_name(monkeypatch):
    """Every turn asks about the same few tools: the policy's answer is remembered per name,
    and it is the answer `tool_allowed` gives (excluded tools stay excluded)."""
    from headroom_core import livezone

    calls = []
    real = livezone.tool_allowed

    def counting(tool, include=None, exclude=livezone.DEFAULT_EXCLUDE):
        calls.append(tool)
        return real(tool, include, exclude)

    monkeypatch.setattr(livezone, "tool_allowed", counting)
    rw = Rewriter(RewritePolicy(exclude=("Read", "mcp__*")), ledger=None, originals=None,
                  salt=b"s")
    answers = [rw._tool_allowed(t) for t in ("Bash", "Read", "mcp__x", "Bash", None, "Read",
                                             None, "mcp__x")]
    assert answers == [True, False, False, True, True, False, True, False]
    assert calls == ["Bash", "Read", "mcp__x", None]
