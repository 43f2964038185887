"""Structural diffs of canonical requests: what a replay miss and `store.py diff` report."""

import copy
import json

import orjson
from hypothesis import given, settings

from headroom_core import cachekey
from headroom_core.cachekey import request_key
from headroom_core.structdiff import describe, diff, summarize
from tests.test_cachekey import ANTHROPIC, CHAT, FIELDS, JSONS, LONG, canon

def test_summarize_hashes_long_strings_only_and_is_idempotent():
    c = canon()
    s = summarize(c)
    assert s["body"]["system"][0]["text"] == "You are Claude Code."
    marker = s["body"]["system"][1]["text"]
    assert marker.startswith(f"<str {len(LONG)} chars ") and LONG not in orjson.dumps(s).decode()
    assert summarize(s) == s
    assert diff(c, s) == [] and diff(s, c) == []
    assert len(cachekey.canonical_bytes(s)) < len(cachekey.canonical_bytes(c))


def test_diff_messages():
    a = canon()
    b_body = copy.deepcopy(ANTHROPIC)
    b_body["model"] = "claude-opus-4-1"
    b_body["max_tokens"] = 100
    b_body["system"][2]["text"] = LONG + "!"
    b_body["tools"].append({"name": "Bash", "input_schema": {"type": "object"}})
    del b_body["messages"][1:]
    b_body["top_k"] = 3
    del b_body["thinking"]
    b = canon(body=b_body, fields=FIELDS + [(b"anthropic-beta", b"new-beta")])
    lines = diff(a, b, limit=50)
    assert "model changed: claude-sonnet-4-5 -> claude-opus-4-1" in lines
    assert "max_tokens changed: 32000 -> 100" in lines
    # index after the billing block was removed; too long to quote, so the lengths
    assert "system[1].text changed (640 -> 641 chars)" in lines
    assert "tools[2] added" in lines
    assert "messages[1] removed" in lines and "messages[2] removed" in lines
    assert "top_k added: 3" in lines
    assert "thinking removed" in lines
    assert "headers.anthropic-beta[2] added: new-beta" in lines
    assert all(LONG[:40] not in line for line in lines)
    assert len(lines) == 9


def test_diff_aligns_inserted_list_elements():
    a = canon("chat")
    body = copy.deepcopy(CHAT)
    body["messages"].insert(1, {"role": "user", "content": "first"})
    assert diff(a, canon("chat", body)) == ["messages[1] added"]


def test_diff_of_envelope_and_raw_bodies():
    assert diff(canon(), canon(tenant="t:x", path="/v1/messages")) == [
        "tenant changed: ns:ci -> t:x", "query[0] removed"]
    assert diff(canon(raw=b"x"), canon(raw=b"y")) == ["body_raw.sha256 changed"]
    assert diff(canon(), canon(raw=b"x"))[-2:] == ["body_raw added", "body removed"]
    assert diff(canon(), canon()) == []


def test_diff_limit():
    body = copy.deepcopy(CHAT)
    for i in range(20):
        body[f"k{i:02}"] = i
    lines = diff(canon("chat"), canon("chat", body), limit=5)
    assert lines[:4] == ["k00 added: 0", "k01 added: 1", "k02 added: 2", "k03 added: 3"]
    assert lines[4] == "... and 16 more differences"


def test_describe():
    d = describe(canon())
    assert d["model"] == "claude-sonnet-4-5" and d["messages[]"] == 3 and d["tools[]"] == 2
    assert d["stream"] is True and d["tenant"] == "ns:ci" and d["max_tokens"] == 32000


@settings(max_examples=50, deadline=None)
@given(JSONS, JSONS)
def test_diff_is_empty_exactly_when_keys_match(x, y):
    a = canon(raw=json.dumps({"model": "m", "x": x}).encode())
    b = canon(raw=json.dumps({"model": "m", "x": y}).encode())
    assert (diff(a, b) == []) == (request_key(a) == request_key(b))


def test_a_long_string_changed_in_place_says_so():
    recorded = summarize({"body": {"system": "Today is 2026-12-05. " + "x" * 500}})
    new = {"body": {"system": "Today is 2026-12-06. " + "x" * 500}}
    assert diff(recorded, new) == ["system changed (same length, 521 chars)"]
