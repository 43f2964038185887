import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.session import (
    NONE,
    SessionId,
    content_seed,
    identify,
    metadata_session_id,
    namespaced_id,
)

TENANT = "t:0123456789abcdef01234567"
OTHER_TENANT = "t:fedcba9876543210fedcba98"
SID = "7f9c2b1e-3a4d-4e5f-8a6b-1c2d3e4f5a6b"


# --- Claude Code ------------------------------------------------------------------------------


def test_claude_code_header_is_high_confidence_and_case_insensitive():
    got = identify("anthropic", [(b"X-Claude-Code-Session-Id", SID.encode())], {}, TENANT)
    assert got == SessionId(
        namespaced_id("anthropic", TENANT, "header:x-claude-code-session-id", SID),
        "header:x-claude-code-session-id",
        "high",
    )
    assert got.high_confidence
    lower = identify("anthropic", [(b"x-claude-code-session-id", SID.encode())], {}, TENANT)
    assert lower == got


def test_claude_code_header_wins_over_metadata():
    body = {"metadata": {"user_id": orjson.dumps({"session_id": "other"}).decode()}}
    got = identify("anthropic", [(b"x-claude-code-session-id", SID.encode())], body, TENANT)
    assert got.source == "header:x-claude-code-session-id"


def test_metadata_user_id_json_string():
    user_id = orjson.dumps(
        {"device_id": "ab" * 32, "account_uuid": "0b7a1e52-aaaa-bbbb-cccc-000000000001", "session_id": SID}
    ).decode()
    got = identify("anthropic", [], {"metadata": {"user_id": user_id}}, TENANT)
    assert got.source == "body:metadata.user_id"
    assert got.confidence == "high"
    assert got.id == namespaced_id("anthropic", TENANT, "body:metadata.user_id", SID)


@pytest.mark.parametrize(
    "user_id",
    [
        f"user_{'ab' * 32}_account__session_{SID}",
        f"user_{'ab' * 32}_account_0b7a1e52-aaaa-bbbb-cccc-000000000001_session_{SID}",
        f'{{"device_id":"{"cd" * 32}","account_uuid":"","session_id":"{SID}"}}',
    ],
)
def test_metadata_forms_agree_on_the_session(user_id):
    assert metadata_session_id(user_id) == SID
    got = identify("anthropic", [], {"metadata": {"user_id": user_id}}, TENANT)
    assert got.id == namespaced_id("anthropic", TENANT, "body:metadata.user_id", SID)


@pytest.mark.parametrize(
    "user_id",
    [None, 42, "", "{not json", '{"device_id":"x"}', '{"session_id": 5}', '["session_id"]',
     "user_ab_session_only", f"user_ab_account__session_{SID}_extra!", "anonymous"],
)
def test_malformed_metadata_has_no_session(user_id):
    assert metadata_session_id(user_id) is None
    body = {"metadata": {"user_id": user_id}, "messages": [{"role": "user", "content": "hi"}]}
    got = identify("anthropic", [], body, TENANT)
    assert got.source == "content"  # fell through to the next source


def test_sub_agents_are_separate_conversations():
    base = [(b"x-claude-code-session-id", SID.encode())]
    main = identify("anthropic", base, {}, TENANT)
    a1 = identify("anthropic", [*base, (b"X-Claude-Code-Agent-Id", b"agent-1")], {}, TENANT)
    a1_again = identify("anthropic", [*base, (b"x-claude-code-agent-id", b"agent-1")], {}, TENANT)
    a2 = identify("anthropic", [*base, (b"x-claude-code-agent-id", b"agent-2")], {}, TENANT)
    assert len({main.id, a1.id, a2.id}) == 3
    assert a1 == a1_again
    assert a1.source == main.source == "header:x-claude-code-session-id"


def test_unusable_header_value_falls_back():
    body = {"metadata": {"user_id": f"user_ab_account__session_{SID}"}}
    for bad in (b"", b"   ", b"a\x01b", b"x" * 300):
        got = identify("anthropic", [(b"x-claude-code-session-id", bad)], body, TENANT)
        assert got.source == "body:metadata.user_id"


# --- Codex ------------------------------------------------------------------------------------


CODEX_BODY = {"model": "gpt-5-codex", "prompt_cache_key": "pck-1", "input": "hello"}


def _codex(fields):
    return identify("openai", fields, CODEX_BODY, TENANT)


def test_codex_precedence():
    thread = (b"thread-id", b"th-1")
    conv = (b"conversation_id", b"cv-1")
    session = (b"session-id", b"se-1")
    assert _codex([session, conv, thread]).source == "header:thread-id"
    assert _codex([session, conv]).source == "header:conversation_id"
    assert _codex([session]).source == "header:session-id"
    assert _codex([]).source == "body:prompt_cache_key"
    assert all(_codex(f).confidence == "high" for f in ([thread], [session], []))
    assert _codex([thread]).id == namespaced_id("openai", TENANT, "header:thread-id", "th-1")
    assert _codex([]).id == namespaced_id("openai", TENANT, "body:prompt_cache_key", "pck-1")


@pytest.mark.parametrize(
    "a, b",
    [
        ((b"thread-id", b"x"), (b"Thread_Id", b"x")),
        ((b"session-id", b"x"), (b"SESSION_ID", b"x")),
        ((b"conversation_id", b"x"), (b"Conversation-Id", b"x")),
    ],
)
def test_codex_header_spellings_agree(a, b):
    assert _codex([a]) == _codex([b])


def test_provider_specific_headers_are_not_mixed():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert identify("openai", [(b"x-claude-code-session-id", b"s")], body, TENANT).source == "content"
    assert identify("anthropic", [(b"thread-id", b"t")], body, TENANT).source == "content"
    assert identify("anthropic", [], {**body, "prompt_cache_key": "k"}, TENANT).source == "content"


# --- namespacing ------------------------------------------------------------------------------


def test_tenant_and_provider_isolation():
    fields = [(b"x-claude-code-session-id", SID.encode()), (b"session-id", SID.encode())]
    a = identify("anthropic", fields, {}, TENANT)
    b = identify("anthropic", fields, {}, OTHER_TENANT)
    assert a.id != b.id
    body = {"model": "m", "messages": [{"role": "user", "content": "same"}]}
    assert identify("anthropic", [], body, TENANT).id != identify("openai", [], body, TENANT).id
    assert identify("openai", [], body, TENANT).id != identify("openai", [], body, OTHER_TENANT).id
    same_raw = {namespaced_id(p, t, "s", "raw") for p in ("anthropic", "openai") for t in (TENANT, OTHER_TENANT)}
    assert len(same_raw) == 4


def test_namespacing_is_unambiguous():
    assert namespaced_id("a", "b|c", "s", "r") != namespaced_id("a", "b", "c|s", "r")
    assert namespaced_id("ab", "c", "s", "r") != namespaced_id("a", "bc", "s", "r")


# --- content seed -----------------------------------------------------------------------------


def _claude_turn1(billing="cc_version=2.1.80.a1b; cc_entrypoint=cli; cch=11111;"):
    return {
        "model": "claude-sonnet-4-5",
        "system": [
            {"type": "text", "text": f"x-anthropic-billing-header: {billing}"},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Long instructions...", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
            {"name": "Read", "description": "read", "input_schema": {"type": "object"},
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>CLAUDE.md contents</system-reminder>"},
                {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    }


def _claude_turn2():
    body = _claude_turn1(billing="cc_version=2.1.80.a1b; cc_entrypoint=cli; cch=22222;")
    del body["system"][2]["cache_control"]
    del body["tools"][1]["cache_control"]
    del body["messages"][0]["content"][1]["cache_control"]
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "ok"}]},
            {"type": "text", "text": "<system-reminder>todo list changed</system-reminder>",
             "cache_control": {"type": "ephemeral"}},
        ]},
    ]
    return body


def test_content_seed_stable_across_claude_code_turns():
    t1 = identify("anthropic", [], _claude_turn1(), TENANT)
    t2 = identify("anthropic", [], _claude_turn2(), TENANT)
    assert t1 == t2
    assert t1.source == "content" and t1.confidence == "low" and not t1.high_confidence
    assert t1.id is not None


def test_content_seed_ignores_billing_header_in_string_system():
    a = {"system": "x-anthropic-billing-header: cch=1;\nYou are helpful.", "messages": [{"role": "user", "content": "q"}]}
    b = {"system": "x-anthropic-billing-header: cch=2;\nYou are helpful.", "messages": [{"role": "user", "content": "q"}]}
    c = {"system": "x-anthropic-billing-header: cch=2;\nYou are terse.", "messages": [{"role": "user", "content": "q"}]}
    ids = [identify("anthropic", [], x, TENANT).id for x in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


def test_content_seed_distinguishes_conversations():
    base = identify("anthropic", [], _claude_turn1(), TENANT).id
    other_user = _claude_turn1()
    other_user["messages"][0]["content"][1]["text"] = "write the docs"
    other_system = _claude_turn1()
    other_system["system"][2]["text"] = "Other instructions"
    other_model = {**_claude_turn1(), "model": "claude-opus-4-1"}
    other_tools = _claude_turn1()
    other_tools["tools"].pop()
    ids = {base} | {identify("anthropic", [], b, TENANT).id for b in (other_user, other_system, other_model, other_tools)}
    assert len(ids) == 5


def test_cache_control_is_only_stripped_where_it_annotates_a_block():
    # A tool whose *schema* has a property named cache_control is a different tool.
    a = _claude_turn1()
    b = copy.deepcopy(a)
    b["tools"][0]["input_schema"] = {"type": "object", "properties": {"cache_control": {"type": "string"}}}
    assert identify("anthropic", [], a, TENANT).id != identify("anthropic", [], b, TENANT).id


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "assistant", "content": "hi"}]},
        {"model": "m", "system": "s"},
        {"model": "m", "messages": [{"role": "user", "content": ""}]},
        {"model": "m", "messages": [{"role": "user", "content": []}]},
        {"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
        {"instructions": "i", "input": [{"role": "developer", "content": "d"}]},
        {},
    ],
)
def test_no_user_message_means_no_id(body):
    assert content_seed(body) is None
    assert identify("anthropic", [], body, TENANT) == NONE
    assert identify("openai", [], body, TENANT) == NONE


def test_no_body_and_no_headers_is_none():
    assert identify("anthropic", [], None, TENANT) == NONE
    assert identify("other", [], None, TENANT) == NONE


def test_chat_shape_seed():
    t1 = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
        {"role": "user", "content": "first"},
    ], "tools": [{"type": "function", "function": {"name": "f"}}]}
    t2 = copy.deepcopy(t1)
    t2["messages"] += [
        {"role": "assistant", "content": "answer"},
        {"role": "system", "content": "late system note"},  # after the anchor: not in the seed
        {"role": "user", "content": "second"},
    ]
    other_system = copy.deepcopy(t1)
    other_system["messages"][0]["content"] = "other sys"
    ids = [identify("openai", [], b, TENANT).id for b in (t1, t2, other_system)]
    assert ids[0] == ids[1] != ids[2]


def test_responses_shape_seed():
    t1 = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "do it"}]},
        ],
        "tools": [{"type": "function", "name": "shell"}],
    }
    t2 = copy.deepcopy(t1)
    t2["input"] += [
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "model changed"}]},
        {"role": "user", "content": "and then"},
    ]
    other = copy.deepcopy(t1)
    other["input"][1]["content"][0]["text"] = "do something else"
    other_instr = {**t1, "instructions": "You are someone else."}
    ids = [identify("openai", [], b, TENANT).id for b in (t1, t2, other, other_instr)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3


def test_responses_string_input_is_the_user_message():
    a = identify("openai", [], {"model": "m", "input": "hello"}, TENANT)
    b = identify("openai", [], {"model": "m", "input": "bye"}, TENANT)
    assert a.confidence == "low" and a.id and a.id != b.id


def test_huge_integers_do_not_break_the_seed():
    body = {"model": "m", "tools": [{"name": "t", "max": 2**80}], "messages": [{"role": "user", "content": "x"}]}
    got = identify("anthropic", [], body, TENANT)
    assert got.confidence == "low" and got.id is not None
    assert identify("anthropic", [], copy.deepcopy(body), TENANT) == got


# --- robustness -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
_keys = st.sampled_from(
    ["model", "system", "messages", "input", "instructions", "tools", "metadata", "prompt_cache_key",
     "role", "content", "type", "text", "user_id", "cache_control", "session_id"]
)
_shaped = st.recursive(
    _json,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=40,
)
_fields = st.lists(
    st.tuples(
        st.sampled_from([b"x-claude-code-session-id", b"X-Claude-Code-Agent-Id", b"thread-id", b"session_id",
                         b"conversation_id", b"other"]) | st.binary(max_size=10),
        st.binary(max_size=40),
    ),
    max_size=5,
)


@settings(max_examples=300)
@given(
    provider=st.sampled_from(["anthropic", "openai", "other"]),
    fields=_fields,
    body=st.none() | st.dictionaries(_keys, _shaped, max_size=6) | _json,
)
def test_garbage_never_raises_and_is_deterministic(provider, fields, body):
    got = identify(provider, fields, body, TENANT)
    assert isinstance(got, SessionId)
    assert got.confidence in ("high", "low", "none")
    assert (got.id is None) == (got.confidence == "none")
    if got.id is not None:
        assert len(got.id) == 32 and int(got.id, 16) >= 0
    assert identify(provider, list(fields), copy.deepcopy(body), TENANT) == got


@given(fields=st.lists(st.tuples(st.text(max_size=5) | st.binary(max_size=5), st.integers(0, 2**62)), max_size=3))
def test_non_bytes_fields_never_raise(fields):
    got = identify("anthropic", fields, {"messages": [{"role": "user", "content": "x"}]}, TENANT)
    assert got.confidence in ("high", "low")
