import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import cachekey
from headroom_core.cachekey import canonical_request, request_key

LONG = "You are a careful coding agent. " * 20

ANTHROPIC = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "stream": True,
    "metadata": {"user_id": "user_abc_account_123_session_11111111"},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.37; cch=fa690;"},
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a.py"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "print(1)"}]},
            {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}},
        ]},
    ],
    "tools": [
        {"name": "Read", "description": "read a file",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
        {"name": "Write", "description": "write a file",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "tool_choice": {"type": "auto"},
    "temperature": 1,
    "diagnostics": {"previous_message_id": "msg_01"},
}

CHAT = {
    "model": "gpt-4.1",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "max_completion_tokens": 100,
    "temperature": 0.2,
    "user": "u-1",
    "safety_identifier": "sid-1",
    "prompt_cache_key": "pck-1",
}

RESPONSES = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex.",
    "input": [{"type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "hi"}]}],
    "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199-session",
    "client_metadata": {"x": "y"},
}

ROUTES = {
    "anthropic": dict(provider="anthropic", endpoint="messages", host="api.anthropic.com",
                      path="/v1/messages?beta=true"),
    "chat": dict(provider="openai", endpoint="chat_completions", host="api.openai.com",
                 path="/v1/chat/completions"),
    "responses": dict(provider="openai", endpoint="codex_responses", host="chatgpt.com",
                      path="/backend-api/codex/responses"),
}
BODIES = {"anthropic": ANTHROPIC, "chat": CHAT, "responses": RESPONSES}
FIELDS = [(b"Anthropic-Version", b"2023-06-01"),
          (b"anthropic-beta", b"claude-code-20250219,interleaved-thinking-2025-05-14"),
          (b"x-api-key", b"sk-secret")]


def canon(shape="anthropic", body=None, *, fields=FIELDS, tenant="ns:ci", raw=None, **over):
    args = dict(ROUTES[shape], method="POST", fields=fields, tenant=tenant)
    args.update(over)
    data = raw if raw is not None else json.dumps(BODIES[shape] if body is None else body).encode()
    return canonical_request(body=data, **args)


def key(*a, **kw):
    return request_key(canon(*a, **kw))


def mutated(shape, fn):
    body = copy.deepcopy(BODIES[shape])
    fn(body)
    return body


# --- every field that shapes the answer is in the key ----------------------------------------

def _set(path, value):
    def fn(body):
        node = body
        for p in path[:-1]:
            node = node.setdefault(p, {}) if isinstance(p, str) else node[p]
        node[path[-1]] = value
    return fn


BODY_CHANGES = [
    ("anthropic", "model", _set(["model"], "claude-opus-4-1")),
    ("anthropic", "system text", _set(["system", 1, "text"], "You are someone else.")),
    ("anthropic", "system as string", _set(["system"], "plain")),
    ("anthropic", "message text", _set(["messages", 0, "content", 0, "text"], "fix another bug")),
    ("anthropic", "tool_result text",
     _set(["messages", 2, "content", 0, "content", 0, "text"], "print(2)")),
    ("anthropic", "tool_use input", _set(["messages", 1, "content", 0, "input"], {"path": "b"})),
    ("anthropic", "tools order", lambda b: b["tools"].reverse()),
    ("anthropic", "tool description", _set(["tools", 0, "description"], "read it")),
    ("anthropic", "tool schema", _set(["tools", 0, "input_schema", "required"], ["path"])),
    ("anthropic", "tool_choice", _set(["tool_choice"], {"type": "any"})),
    ("anthropic", "thinking", _set(["thinking", "budget_tokens"], 2048)),
    ("anthropic", "effort", _set(["output_config"], {"effort": "high"})),
    ("anthropic", "max_tokens", _set(["max_tokens"], 100)),
    ("anthropic", "temperature", _set(["temperature"], 0.5)),
    ("anthropic", "top_p", _set(["top_p"], 0.9)),
    ("anthropic", "top_k", _set(["top_k"], 5)),
    ("anthropic", "stop_sequences", _set(["stop_sequences"], ["END"])),
    ("anthropic", "metadata other than user_id", _set(["metadata", "tag"], "x")),
    ("anthropic", "context_management", _set(["context_management"], {"edits": []})),
    ("anthropic", "unknown field", _set(["future_knob"], 1)),
    ("anthropic", "openai-only name is data here", _set(["user"], "u")),
    ("anthropic", "int vs float", _set(["temperature"], 1.0)),
    ("chat", "model", _set(["model"], "gpt-4o")),
    ("chat", "system message", _set(["messages", 0, "content"], "be verbose")),
    ("chat", "tools", _set(["tools", 0, "function", "name"], "g")),
    ("chat", "tool_choice", _set(["tool_choice"], "required")),
    ("chat", "response_format", _set(["response_format"], {"type": "json_object"})),
    ("chat", "seed", _set(["seed"], 7)),
    ("chat", "frequency_penalty", _set(["frequency_penalty"], 0.5)),
    ("chat", "presence_penalty", _set(["presence_penalty"], 0.5)),
    ("chat", "logit_bias", _set(["logit_bias"], {"50256": -100})),
    ("chat", "n", _set(["n"], 2)),
    ("chat", "logprobs", _set(["logprobs"], True)),
    ("chat", "top_logprobs", _set(["top_logprobs"], 3)),
    ("chat", "stop", _set(["stop"], ["\n"])),
    ("chat", "max_completion_tokens", _set(["max_completion_tokens"], 5)),
    ("chat", "modalities", _set(["modalities"], ["text", "audio"])),
    ("chat", "verbosity", _set(["verbosity"], "low")),
    ("chat", "reasoning_effort", _set(["reasoning_effort"], "high")),
    ("chat", "parallel_tool_calls", _set(["parallel_tool_calls"], False)),
    ("chat", "stream_options", _set(["stream_options"], {"include_usage": True})),
    ("chat", "cache_control is data in OpenAI bodies", _set(["messages", 1, "cache_control"], 1)),
    ("responses", "instructions", _set(["instructions"], "You are not Codex.")),
    ("responses", "input", _set(["input", 0, "content", 0, "text"], "bye")),
    ("responses", "reasoning", _set(["reasoning", "effort"], "high")),
    ("responses", "text", _set(["text"], {"verbosity": "low"})),
    ("responses", "max_output_tokens", _set(["max_output_tokens"], 10)),
    ("responses", "include", _set(["include"], [])),
    ("responses", "store", _set(["store"], True)),
    ("responses", "previous_response_id", _set(["previous_response_id"], "resp_1")),
    ("responses", "parallel_tool_calls", _set(["parallel_tool_calls"], True)),
]


@pytest.mark.parametrize("shape,what,fn", BODY_CHANGES,
                         ids=[f"{s}:{w}" for s, w, _ in BODY_CHANGES])
def test_every_answer_shaping_body_field_changes_the_key(shape, what, fn):
    assert key(shape, mutated(shape, fn)) != key(shape)


ENVELOPE_CHANGES = [
    ("method", dict(method="PUT")),
    ("host", dict(host="gateway.local")),
    ("path", dict(path="/v2/messages?beta=true")),
    ("query value", dict(path="/v1/messages?beta=false")),
    ("query added", dict(path="/v1/messages?beta=true&x=1")),
    ("no query", dict(path="/v1/messages")),
    ("tenant", dict(tenant="t:other")),
    ("provider", dict(provider="openai")),
    ("endpoint", dict(endpoint="count_tokens")),
    ("anthropic-version", dict(fields=[(b"anthropic-version", b"2024-01-01"), FIELDS[1]])),
    ("beta added", dict(fields=FIELDS + [(b"anthropic-beta", b"context-1m-2025-08-07")])),
    ("beta removed", dict(fields=FIELDS[:1])),
    ("openai-beta", dict(fields=FIELDS + [(b"OpenAI-Beta", b"responses=experimental")])),
]


@pytest.mark.parametrize("what,over", ENVELOPE_CHANGES, ids=[w for w, _ in ENVELOPE_CHANGES])
def test_every_envelope_field_changes_the_key(what, over):
    assert key(**over) != key()


def test_stream_and_buffered_never_share_a_key():
    body = copy.deepcopy(ANTHROPIC)
    body["stream"] = False
    assert key(body=body) != key()
    assert canon()["stream"] is True and canon(body=body)["stream"] is False


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=5))
def test_stream_flag_alone_separates_keys(extra):
    base = {k: v for k, v in extra.items() if k != "stream"}
    on = key(body={**base, "stream": True})
    off = key(body={**base, "stream": False})
    assert on != off
    assert key(body=base) == off  # absent means not streamed


# --- noise does not change the key -----------------------------------------------------------

def _shuffled(node, rnd):
    if isinstance(node, dict):
        items = list(node.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(node, list):
        return [_shuffled(v, rnd) for v in node]
    return node


@pytest.mark.parametrize("shape", list(BODIES))
@settings(deadline=None)
@given(rnd=st.randoms(use_true_random=False), indent=st.sampled_from([None, 1, 4]))
def test_key_order_and_whitespace_do_not_matter(shape, rnd, indent):
    text = json.dumps(_shuffled(BODIES[shape], rnd), indent=indent,
                      separators=None if indent else (", ", ": "))
    assert key(shape, raw=text.encode()) == key(shape)


def test_header_case_whitespace_duplicates_and_beta_order_do_not_matter():
    messy = [(b"ANTHROPIC-BETA", b" interleaved-thinking-2025-05-14 ,claude-code-20250219, "),
             (b"x-api-key", b"sk-secret"),
             (b"anthropic-beta", b"claude-code-20250219"),
             (b"anthropic-version", b" 2023-06-01 ")]
    assert key(fields=messy) == key()


def test_query_order_and_host_case_do_not_matter():
    a = key(path="/v1/messages?b=2&a=1")
    assert key(path="/v1/messages?a=1&b=2") == a
    assert key(path="/v1/messages?a=1&b=2", host="API.Anthropic.COM.") == a


def test_credentials_and_other_headers_are_not_in_the_key_but_the_tenant_is():
    other = [FIELDS[0], FIELDS[1], (b"x-api-key", b"sk-other"), (b"user-agent", b"claude-cli/9"),
             (b"x-stainless-retry-count", b"3")]
    assert key(fields=other) == key()
    assert b"sk-secret" not in cachekey.canonical_bytes(canon())
    assert key(tenant="t:a") != key(tenant="t:b")


VOLATILE = [
    ("anthropic", _set(["metadata", "user_id"], "user_abc_account_123_session_22222222")),
    ("anthropic", _set(["system", 0, "text"], "x-anthropic-billing-header: cc_version=2.1.38;")),
    ("anthropic", _set(["diagnostics"], {"previous_message_id": "msg_02"})),
    ("anthropic", lambda b: b.pop("diagnostics")),
    ("chat", _set(["user"], "u-2")),
    ("chat", _set(["safety_identifier"], "sid-2")),
    ("chat", _set(["prompt_cache_key"], "pck-2")),
    ("responses", _set(["prompt_cache_key"], "0199-other-session")),
    ("responses", _set(["client_metadata"], {"x": "z"})),
]


@pytest.mark.parametrize("shape,fn", VOLATILE)
def test_volatile_fields_do_not_change_the_key(shape, fn):
    assert key(shape, mutated(shape, fn)) == key(shape)


def test_the_default_exclusion_list_is_exactly_this():
    assert cachekey.DEFAULT_EXCLUDE == {
        "anthropic": ("metadata.user_id", "diagnostics"),
        "openai": ("user", "safety_identifier", "client_metadata", "prompt_cache_key"),
    }


def test_billing_line_is_removed_whether_alone_or_first_line_of_a_block():
    alone = key()
    no_billing = mutated("anthropic", lambda b: b["system"].pop(0))
    assert key(body=no_billing) == alone
    merged = mutated("anthropic", lambda b: b["system"].pop(0))
    merged["system"][0]["text"] = "x-anthropic-billing-header: cch=1;\nYou are Claude Code."
    assert key(body=merged) == alone
    as_string = {**no_billing, "system": "x-anthropic-billing-header: cch=9;\nYou are X."}
    assert key(body=as_string) == key(body={**no_billing, "system": "You are X."})
    # The rest of a block that merely mentions the header later on still counts.
    other = mutated("anthropic", _set(["system", 1, "text"], "See x-anthropic-billing-header:"))
    assert key(body=other) != alone


def _move_breakpoints(body):
    for block in body["system"]:
        block.pop("cache_control", None)
    body["system"][1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body["tools"][1].pop("cache_control")
    body["tools"][0]["cache_control"] = {"type": "ephemeral"}
    body["messages"][2]["content"][1].pop("cache_control")
    body["messages"][2]["content"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    body["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}


def test_moving_cache_breakpoints_does_not_change_the_key():
    assert key(body=mutated("anthropic", _move_breakpoints)) == key()


def test_cache_control_as_data_still_counts():
    schema = mutated("anthropic", _set(["tools", 0, "input_schema", "properties", "cache_control"],
                                       {"type": "string"}))
    assert key(body=schema) != key()
    c = canon(body=schema)
    assert "cache_control" in c["body"]["tools"][0]["input_schema"]["properties"]
    tool_input = mutated("anthropic", _set(["messages", 1, "content", 0, "input", "cache_control"],
                                           "yes"))
    assert key(body=tool_input) != key()


def test_extra_exclude_paths():
    body = mutated("anthropic", _set(["metadata", "trace"], "t1"))
    other = mutated("anthropic", _set(["metadata", "trace"], "t2"))
    assert key(body=body) != key(body=other)
    assert key(body=body, extra_exclude=["metadata.trace"]) == \
        key(body=other, extra_exclude=["metadata.trace"])
    # [*] reaches every element, [N] one element
    a = mutated("anthropic", _set(["messages", 0, "content", 0, "citations"], [1]))
    b = mutated("anthropic", _set(["messages", 0, "content", 0, "citations"], [2]))
    assert key(body=a, extra_exclude=["messages[*].content[*].citations"]) == \
        key(body=b, extra_exclude=["messages[*].content[*].citations"])
    assert key(body=a, extra_exclude=["messages[1].content[*].citations"]) != \
        key(body=b, extra_exclude=["messages[1].content[*].citations"])
    assert key(body=a, extra_exclude=["messages[0].content[0].citations"]) == key()
    # absent paths and paths through the wrong type are ignored; invalid ones too
    assert key(extra_exclude=["nope.deeper", "model[0]", "messages.x", "bad..path"]) == key()


@pytest.mark.parametrize("path,steps", [
    ("metadata.user_id", ("metadata", "user_id")),
    ("messages[*].content[3]", ("messages", None, "content", 3)),
    ("a[0][*].b", ("a", 0, None, "b")),
])
def test_parse_path(path, steps):
    assert cachekey.parse_path(path) == steps


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "[0]", "a[x]", "a[-1]", "a[0", " a"])
def test_parse_path_rejects(path):
    with pytest.raises(ValueError):
        cachekey.parse_path(path)


# --- JSON pitfalls ---------------------------------------------------------------------------

def test_integers_beyond_64_bits_stay_exact():
    a = b'{"model":"m","seed":18446744073709551616}'
    b = b'{"model":"m","seed":18446744073709551617}'
    assert key(raw=a) != key(raw=b)
    assert canon(raw=a)["body"]["seed"] == 18446744073709551616
    assert b"18446744073709551616" in cachekey.canonical_bytes(canon(raw=a))
    assert key(raw=b'{"seed":18446744073709551616, "model":"m"}') == key(raw=a)
    neg = b'{"model":"m","seed":-9223372036854775809}'
    assert canon(raw=neg)["body"]["seed"] == -9223372036854775809


def test_lone_surrogates_are_json_not_raw():
    a = canon(raw=b'{"messages":[{"role":"user","content":"\\ud800"}]}')
    b = canon(raw=b'{"messages":[{"role":"user","content":"\\ud801"}]}')
    assert a["body"]["messages"][0]["content"] == "\ud800"
    assert request_key(a) != request_key(b)
    assert request_key(a) == key(raw=b'{ "messages": [{"content":"\\ud800", "role":"user"}]}')


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{}", b'{"a":NaN}', b'{"a":Infinity}',
                                 b'{"a":1e400}', b'{"a":1', b"[" * 300 + b"]" * 300])
def test_non_json_bodies_are_hashed_raw(raw):
    c = canon(raw=raw)
    assert "body" not in c and c["body_raw"]["bytes"] == len(raw)
    assert c["stream"] is False
    assert key(raw=raw) != key(raw=raw + b" x")


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_key(raw):
    assert len(key(raw=raw)) == 64


def test_nan_is_not_confused_with_null():
    assert key(raw=b'{"a":NaN}') != key(raw=b'{"a":null}')


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=6), ch, max_size=4),
    max_leaves=25)


@settings(deadline=None)
@given(JSONS)
def test_canonical_form_survives_serialisation(value):
    c = canon(raw=json.dumps({"model": "m", "x": value}).encode())
    assert request_key(cachekey.parse_json(cachekey.canonical_bytes(c))) == request_key(c)
    assert cachekey.parse_json(cachekey.canonical_bytes(c)) == c


@pytest.mark.parametrize("shape", list(BODIES))
def test_canonicalisation_is_idempotent(shape):
    # A body rebuilt from the canonical form (as `store.py export` does) keys the same.
    c = canon(shape)
    body = dict(c["body"], stream=True) if c["stream"] else c["body"]
    assert canon(shape, body, fields=[(n.encode(), ", ".join(t).encode())
                                      for n, t in c["headers"].items()]) == c


def test_key_is_the_same_in_other_processes():
    code = ("import sys; from headroom_core.cachekey import *; "
            "print(request_key(canonical_request(provider='anthropic', endpoint='messages', "
            "method='POST', host='api.anthropic.com', path='/v1/messages?beta=true', "
            "fields=[(b'anthropic-beta', b'a, b')], body=sys.stdin.buffer.read(), "
            "tenant='ns:ci')))")
    body = {"model": "m", "seed": 2**70, "x": {"z": 1, "a": [1.5, "\u00e9"]}, "k": {"b": 1, "a": 2}}
    expected = request_key(canonical_request(
        provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
        path="/v1/messages?beta=true", fields=[(b"anthropic-beta", b"b,a")],
        body=json.dumps(body).encode(), tenant="ns:ci"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], cwd=root,
                             input=json.dumps(body, indent=2, sort_keys=True).encode(),
                             capture_output=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.decode().strip() == expected


def test_credential_query_values_are_hashed_not_kept():
    from headroom_core.cachekey import canonical_request, request_key

    def canon(q):
        return canonical_request(provider="openai", endpoint="responses", method="POST",
                                 host="gw", path="/v1/responses?" + q, fields=[],
                                 body=b'{"model":"m"}', tenant="t")

    a, b = canon("api-key=SECRET1&region=eu"), canon("api-key=SECRET2&region=eu")
    assert "SECRET1" not in str(a) and dict(a["query"])["region"] == "eu"
    assert dict(a["query"])["api-key"].startswith("sha256:")
    assert request_key(a) != request_key(b)  # still distinct per credential
    assert "s3cr3t" not in str(canon("access_token=s3cr3t"))
    for name in ("key", "KEY", "apiKey", "apikey2", "accessToken", "authToken", "sessionToken",
                 "clientSecret", "jwt", "bearer", "pwd", "password", "code", "sig",
                 "X-Amz-Signature", "sv_sas", "subscription-key", "cookie"):
        q = dict(canon(f"{name}=SECRET&beta=true&api-version=2024-10-21")["query"])
        assert q[name].startswith("sha256:"), name
        assert q["beta"] == "true" and q["api-version"] == "2024-10-21"  # the usual ones stay


def test_header_exclusions_leave_a_keyed_header_out():
    from headroom_core.cachekey import canonical_request, request_key

    def key(version, beta=b"b1", exclude=()):
        return request_key(canonical_request(
            provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
            path="/v1/messages", fields=[(b"Anthropic-Version", version),
                                         (b"anthropic-beta", beta), (b"user-agent", version)],
            body=b'{"model":"m","headers":{"anthropic-version":"kept"}}', tenant="t",
            extra_exclude=exclude))

    assert key(b"2023-06-01") != key(b"2024-10-22")
    same = ("headers.anthropic-version",)
    assert key(b"2023-06-01", exclude=same) == key(b"2024-10-22", exclude=same)
    assert key(b"1", b"b1", same) != key(b"1", b"b2", same)  # only the named header goes
    assert key(b"1", exclude=("HEADERS.Anthropic-Version",)) == key(b"2", exclude=same)
    # user-agent is never keyed: leaving it out changes nothing
    assert key(b"1", exclude=("headers.user-agent",)) == key(b"1")
    canon = canonical_request(provider="anthropic", endpoint="messages", method="POST", host="h",
                              path="/v1/messages", fields=[(b"anthropic-version", b"1")],
                              body=b'{"headers":{"anthropic-version":"kept"}}', tenant="t",
                              extra_exclude=same)
    assert canon["headers"] == {} and canon["body"] == {"headers": {"anthropic-version": "kept"}}
