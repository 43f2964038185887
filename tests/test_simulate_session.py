"""scripts/caching_upstream.py (the prompt-cache simulator) and scripts/simulate_session.py
(a Claude Code-shaped session through real mitmdump, plain vs Headroom), small configuration."""

import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import httpx
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.append(str(SCRIPTS))

import caching_upstream as cu  # noqa: E402
import simulate_session as ss  # noqa: E402

CC = {"type": "ephemeral"}


def words(text: str) -> int:
    return len(text.split())


def sim(**kw) -> cu.CacheSim:
    """Tokens = whitespace-separated words, no per-block overhead: figures checkable by hand."""
    return cu.CacheSim(count=words, overhead=0, **{"min_cacheable": 5, **kw})


def billing(cch: str) -> dict:
    # 4 words
    return {"type": "text",
            "text": "x-anthropic-billing-header: cc_version=2.1.0.abc; cc_entrypoint=cli; "
                    f"cch={cch};"}


def turn1(cch="11111") -> dict:
    return {"model": "m", "system": [billing(cch),
                                     {"type": "text", "text": "one two three four five six",
                                      "cache_control": CC}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "u1 u2 u3", "cache_control": CC}]}]}


def turn2(cch="22222", result="r1 r2 r3 r4") -> dict:
    d = turn1(cch)
    del d["messages"][0]["content"][0]["cache_control"]  # the marker moves to the newest block
    d["messages"] += [{"role": "assistant", "content": [{"type": "text", "text": "a1 a2"}]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                    "content": result, "cache_control": CC}]}]
    return d


# -- the cache simulator, hand-checked ---------------------------------------------------------


def test_hand_checked_mini_session():
    c = sim()
    # turn 1: billing 4 | system 6 (bp, prefix 10) | user 3 (bp, prefix 13). Nothing cached yet.
    r1 = c.process(turn1())
    assert [b.cum for b in r1.blocks] == [4, 10, 13]
    assert (r1.cache_read, r1.cache_write, r1.input, r1.total) == (0, 13, 0, 13)
    # turn 2: + assistant 2 + tool_result 4 (bp, prefix 19). The marker left the user block, but
    # the prefix written at it (13) is 2 blocks behind the new breakpoint: read 13, write 6.
    r2 = c.process(turn2())
    assert [b.cum for b in r2.blocks] == [4, 10, 13, 15, 19]
    assert (r2.cache_read, r2.cache_write, r2.input) == (13, 6, 0)
    assert r2.read_at == 2 and r2.blocks[2].label == "messages[0].content[0]"
    # moving the marker changed no content
    assert r2.blocks[2].content == r1.blocks[2].content
    # turn 3: two more blocks after the last breakpoint: read 19, nothing to write, 3 uncached.
    d3 = turn2("33333")
    d3["messages"] += [{"role": "assistant", "content": "b1"},
                       {"role": "user", "content": "q1 q2"}]
    r3 = c.process(d3)
    assert (r3.cache_read, r3.cache_write, r3.input, r3.total) == (19, 0, 3, 22)
    assert r3.usage() == {"input_tokens": 3, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 19}


def test_changed_history_falls_back_to_the_longest_unchanged_prefix():
    c = sim()
    c.process(turn1())
    c.process(turn2())
    # a historic tool result changes: only the prefix up to the user block (13) still matches
    r = c.process(turn2("33333", result="r1 r2 R3 r4"))
    assert (r.cache_read, r.cache_write) == (13, 6)


def test_billing_block_cch_ignored_by_default_raw_busts():
    c = sim(billing="raw")
    c.process(turn1())
    r = c.process(turn2())  # another cch: system[0] differs, every prefix after it too
    assert (r.cache_read, r.cache_write) == (0, 19)
    # the rest of the billing line still counts in the default mode
    c = sim()
    c.process(turn1())
    d = turn2()
    d["system"][0]["text"] = d["system"][0]["text"].replace("2.1.0.abc", "2.1.0.fff")
    assert c.process(d).cache_read == 0


def test_min_cacheable_and_lookback():
    c = sim(min_cacheable=11)
    r = c.process(turn1())  # the system breakpoint (10 tokens) is too short to be written
    assert r.cache_write == 13 and r.write_to == 2
    assert len(c.cache) == 1
    c = sim(lookback=3)
    c.process(turn1())
    d = turn2()
    d["messages"][2]["content"] = [{"type": "text", "text": f"x{i}"} for i in range(3)] + \
        d["messages"][2]["content"]
    # the previous breakpoint (block 2) is 5 blocks behind the new one (block 7): out of reach,
    # so only the system prefix (block 1, 4 words of billing + 6) is found
    r = c.process(d)
    assert r.read_at == 1 and r.cache_read == 10 and r.cache_write == 22 - 10


def test_cache_control_inside_tool_result_parts_is_not_content():
    c = sim()
    a = turn2()
    a["messages"][2]["content"][0]["content"] = [{"type": "text", "text": "r1 r2",
                                                  "cache_control": CC}]
    b = copy.deepcopy(a)
    del b["messages"][2]["content"][0]["content"][0]["cache_control"]
    assert c.blocks(a)[-1].content == c.blocks(b)[-1].content
    # ...while any change to the text is
    b["messages"][2]["content"][0]["content"][0]["text"] = "r1 r2 "
    assert c.blocks(a)[-1].content != c.blocks(b)[-1].content


def test_upstream_reports_the_simulation_in_the_sse_stream():
    up = cu.CachingUpstream()
    try:
        up.reply = [{"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash",
                     "input": {"command": "ls"}}]
        s = ss.generate_session(3, seed=5, scale=0.2, fixed_scale=0.1)
        fields, body = ss.build_request(s, 2)
        with httpx.Client() as client:
            r = client.post(f"{up.url}/v1/messages?beta=true", headers=fields, content=body)
        usage, stopped = ss._parse_sse_usage(r.content)
        (rec,) = up.records
        assert stopped and r.headers["content-type"].startswith("text/event-stream")
        assert rec.body == body
        expect = rec.sim.usage()
        assert expect["cache_creation_input_tokens"] == rec.sim.total > 0
        assert usage == {**expect, "output_tokens": rec.output_tokens}
        assert b'"partial_json"' in r.content and b'"stop_reason":"tool_use"' in r.content
    finally:
        up.close()


# -- the session generator ---------------------------------------------------------------------


def test_session_is_claude_code_shaped_and_deterministic():
    s = ss.generate_session(6, seed=9, scale=0.3, fixed_scale=0.1)
    assert ss.build_request(s, 4) == ss.build_request(ss.generate_session(6, 9, 0.3, 0.1), 4)
    cchs = []
    for turn in range(1, 7):
        fields, body = ss.build_request(s, turn)
        doc = json.loads(body)
        assert dict(fields)["x-api-key"].startswith("sk-ant-api03-")
        assert dict(fields)["X-Claude-Code-Session-Id"] == s.session_id
        assert doc["stream"] is True and doc["model"].startswith("claude-")
        m = re.fullmatch(r"x-anthropic-billing-header: cc_version=[\d.]+\.[0-9a-f]{3}; "
                         r"cc_entrypoint=cli; cch=([0-9a-f]{5});", doc["system"][0]["text"])
        assert m
        cchs.append(m.group(1))
        marked = [k for k, b in enumerate(doc["system"]) if "cache_control" in b]
        assert marked == [1, 2]
        in_messages = [(i, j) for i, msg in enumerate(doc["messages"])
                       for j, b in enumerate(msg["content"]) if "cache_control" in b]
        assert in_messages == [(len(doc["messages"]) - 1, len(doc["messages"][-1]["content"]) - 1)]
        assert all("input_schema" in t for t in doc["tools"])
        # the placeholder was replaced by a hash of the body
        placeholder = body.replace(f"cch={m.group(1)};".encode(), b"cch=00000;")
        assert hashlib.sha256(placeholder).hexdigest()[:5] == m.group(1)
    assert len(set(cchs)) == 6  # changes every request
    calls = [c for st in s.steps for c in st.calls]
    assert {c.name for c in calls} >= {"Bash", "Read", "TodoWrite"}
    assert any(c.is_error and str(c.output).startswith("Exit code 1\n") for c in calls)


def test_bash_cap_keeps_head_and_tail():
    text = "".join(f"line {i}\n" for i in range(10000))
    out = ss.bash_cap(text, 1000)
    assert out.startswith("line 0\n") and out.endswith("line 9999\n")
    assert "lines truncated] ..." in out and len(out) < 1100


# -- bust detection and attribution (no proxy) -------------------------------------------------


def _run(name, docs) -> ss.Run:
    c = cu.CacheSim()
    run = ss.Run(name, name)
    for i, d in enumerate(docs, 1):
        rec = cu.Record("/v1/messages", [], json.dumps(d).encode(), d, c.process(d), 1)
        run.turns.append(ss.Turn(i, rec, {}, 0, 0, []))
    ss.detect_busts(run)
    return run


def test_bust_attributed_to_headroom_only_when_plain_kept_the_prefix():
    s = ss.generate_session(5, seed=2, scale=0.3, fixed_scale=0.1)
    docs = [json.loads(ss.build_request(s, t)[1]) for t in range(1, 6)]
    plain = _run("plain", docs)
    assert not any(t.bust["bust"] for t in plain.turns[1:])
    # a proxy that rewrites a tool result it forwarded before (turn 3's history changes at turn 4)
    bad = copy.deepcopy(docs)
    for d in bad[3:]:
        d["messages"][2]["content"][0]["content"] += " "
    other = _run("headroom", bad)
    (fault,) = ss.attribute(plain, other)
    assert fault["turn"] == 4 and fault["label"] == "messages[2].content[0]"
    assert fault["lost"] > 0 and fault["first_diff"]["offset"] > 0
    # the client changes its own system prompt: both bust at the same block, not Headroom's fault
    client = copy.deepcopy(docs)
    for d in client[3:]:
        d["system"][2]["text"] += " (updated)"
    assert [t.turn for t in _run("plain", client).turns if t.bust and t.bust["bust"]] == [4]
    assert ss.attribute(_run("plain", client), _run("headroom", client)) == []


# -- the whole thing through real mitmdump -----------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    # 6 turns, small outputs and tool definitions; mitmdump restarted before turn 5 (turn 4
    # compressed a ripgrep output that turn 5 must replay from the ledger on disk); the client
    # changes its system prompt on turn 6, so both runs must bust there, and only there.
    return ss.simulate(6, seed=1, scale=0.4, fixed_scale=0.12, restart_at=5,
                       variants=("plain", "headroom"), client_bust_at=6,
                       workroot=tmp_path_factory.mktemp("sim"), log=lambda *_: None)


def test_no_headroom_caused_busts_and_a_smaller_bill(small_run):
    plain, head = small_run.runs["plain"], small_run.runs["headroom"]
    assert small_run.headroom_busts == []
    busts = {n: [t.turn for t in r.turns if t.bust and t.bust["bust"]]
             for n, r in small_run.runs.items()}
    assert busts == {"plain": [6], "headroom": [6]}
    assert plain.turns[5].bust["label"] == head.turns[5].bust["label"] == "system[2]"
    p, h = plain.totals(), head.totals()
    assert h["billed_input_side"] < p["billed_input_side"]
    assert h["billed_all"] < p["billed_all"]
    assert h["upstream_bytes"] < p["upstream_bytes"]
    assert p["upstream_bytes"] == p["client_bytes"]  # plain mitmdump forwards what it got
    # the session really was cached: every turn but the first read the previous prefix
    assert all(t.sim.cache_read > 0 for t in head.turns[1:])


def test_ledger_replays_across_the_restart(small_run):
    head = small_run.runs["headroom"]
    assert head.turns[4].restarted
    actions = [((t.event or {}).get("decisions", {}).get("rewrite") or {}).get("actions", {})
               for t in head.turns]
    assert actions[3].get("compressed", 0) >= 1  # turn 4, first process
    assert actions[4].get("replayed", 0) >= 1  # turn 5, second process
    # the compressed bytes went upstream again unchanged
    t4, t5 = head.turns[3].record.doc, head.turns[4].record.doc
    assert t5["messages"][6]["content"] == [
        {k: v for k, v in b.items() if k != "cache_control"} for b in t4["messages"][6]["content"]]
    assert head.turns[4].bust == {"bust": False, "expected": head.turns[3].sim.blocks[
        head.turns[3].sim.write_to].cum}


def test_usage_reaches_the_client_and_the_event_log(small_run):
    for run in small_run.runs.values():
        for t in run.turns:
            u = t.record.usage()
            assert t.client_usage == u
    assert small_run.runs["headroom"].events_ok is True


def test_report_renders(small_run):
    text = ss.report(small_run, verbose=True, markdown=True)
    assert "| billed equivalents, input side |" in text
    assert "Headroom-caused busts" in text and "6 (restart)" not in text and "5 (restart)" in text
    js = ss.to_json(small_run)
    assert js["headroom_busts"] == [] and js["ratio_billed_input_side"] < 1
