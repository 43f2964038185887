
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.reconstruct import StreamResult, for_shape
from headroom_core.reconstruct.anthropic import AnthropicReconstructor
from headroom_core.sse import SSEEvent, SSEParser
from headroom_core.usage import Usage
from tests.recon_util import STREAMS, run_tee, plain

FIXTURES = sorted(STREAMS.glob("anthropic_*.sse"))


def run(data: bytes, cuts: list[int] = (), ended_cleanly: bool = True) -> StreamResult:
    return run_tee("anthropic", data, cuts, ended_cleanly)


def fixture(name: str) -> StreamResult:
    return run((STREAMS / f"{name}.sse").read_bytes())


def events(*objs: dict) -> list[SSEEvent]:
    return [SSEEvent(o.get("type"), orjson.dumps(o).decode()) for o in objs]


def rebuild(*objs: dict, ended_cleanly: bool = True) -> StreamResult:
    r = AnthropicReconstructor()
    for ev in events(*objs):
        r.feed(ev)
    return r.result(ended_cleanly)


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 1,
        },
    },
}
STOP = {"type": "message_stop"}


def block_start(i: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": i, "content_block": block}


def delta(i: int, d: dict) -> dict:
    return {"type": "content_block_delta", "index": i, "delta": d}


def block_stop(i: int) -> dict:
    return {"type": "content_block_stop", "index": i}


def text(i: int, t: str) -> dict:
    return delta(i, {"type": "text_delta", "text": t})


def message_delta(usage: dict, **d) -> dict:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None, **d},
        "usage": usage,
    }


# --- fixtures ------------------------------------------------------------------------------------


def test_text_stream_rebuilds_the_exact_message():
    r = fixture("anthropic_text")
    assert r.state == "complete" and r.error is None and r.reason is None and not r.lossy
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.events == 11
    assert r.message == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {
                "type": "text",
                "text": "The test suite passes now 🎉. I changed `parse_codings` so that "
                '"gzip, br" keeps its order.\n\n日本語のコメントもそのままです — ✓ done.',
            }
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 30512,
            "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 58,
            "service_tier": "standard",
        },
    }
    assert r.usage == Usage(
        input_tokens=12, output_tokens=58, cache_read_tokens=30512, cache_creation_tokens=2048
    )


def test_thinking_signature_and_tool_use_round_trip():
    r = fixture("anthropic_thinking_tool")
    assert r.state == "complete" and not r.lossy
    thinking, txt, tool, empty_tool = r.message["content"]
    assert thinking == {
        "type": "thinking",
        "thinking": "The user wants the failing test fixed. First I should read "
        "tests/test_encoding.py to see which assertion fails.",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxDdUuZDhsOW9ynB6AiMHAxVB+bF0ZYv0N3W8k5cVw3VU4u"
        "9a0JtDk5BoRTGUr1"
        "W2vUcRwQ/Gy8tOBlzzZjGSoYmNx9eQ==",
    }
    assert txt == {"type": "text", "text": "Let me look at the test first."}
    assert tool == {
        "type": "tool_use",
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "Read",
        "input": {
            "file_path": "/work/main/tests/test_encoding.py",
            "limit": 200,
            "note": "café ☕",
        },
    }
    assert empty_tool["input"] == {}
    assert r.message["stop_reason"] == "tool_use"
    # message_delta carried only output_tokens: the message_start input/cache figures survive.
    assert r.usage == Usage(input_tokens=2679, output_tokens=143, cache_read_tokens=18240)


def test_server_tool_blocks_redacted_thinking_and_citations_are_kept():
    r = fixture("anthropic_server_tools")
    assert r.state == "complete" and not r.lossy
    redacted, server_use, search_result, cited = r.message["content"]
    assert redacted == {
        "type": "redacted_thinking",
        "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
    }
    assert server_use["type"] == "server_tool_use"
    assert server_use["input"] == {"query": "mitmproxy 12 release notes"}
    assert search_result["type"] == "web_search_tool_result"
    assert search_result["content"][0]["page_age"] == "April 2, 2025"
    assert cited["text"] == "mitmproxy 12 adds a new WireGuard mode."
    assert [c["cited_text"] for c in cited["citations"]] == [
        "mitmproxy 12 adds a new WireGuard mode "
    ]
    assert r.message["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert r.usage.input_tokens == 10682 and r.usage.output_tokens == 510


def test_mid_stream_error_is_errored_with_partial_message():
    r = fixture("anthropic_error")
    assert r.state == "errored" and r.reason == "provider_error"
    assert r.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert r.message["content"] == [{"type": "text", "text": "Sure, here is the"}]
    assert r.usage.cache_read_tokens == 4096


def test_connection_dropped_before_message_stop_is_truncated():
    data = (STREAMS / "anthropic_truncated.sse").read_bytes()
    r = run(data, ended_cleanly=False)
    assert r.state == "truncated" and r.reason == "connection_lost"
    assert r.message["content"][0]["text"] == "Running the linter now"
    assert r.message["content"][1]["input"] == {}  # partial JSON stays unparsed
    assert r.usage == Usage(input_tokens=57, output_tokens=1, cache_creation_tokens=1200)
    # Even when the server closed "cleanly", no message_stop means truncated.
    assert run(data, ended_cleanly=True).state == "truncated"


def test_ping_only_stream():
    r = fixture("anthropic_ping_only")
    assert r.state == "truncated" and r.events == 2
    assert r.message == {} and r.usage is None and r.model is None


# --- event semantics -----------------------------------------------------------------------------


def test_interleaved_blocks_are_keyed_by_index():
    r = rebuild(
        START,
        block_start(0, {"type": "text", "text": ""}),
        block_start(1, {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}),
        text(0, "Hel"),
        delta(1, {"type": "input_json_delta", "partial_json": '{"cmd": '}),
        text(0, "lo"),
        delta(1, {"type": "input_json_delta", "partial_json": '"ls"}'}),
        block_stop(1),
        block_start(2, {"type": "text", "text": "pre-"}),
        text(2, "filled"),
        block_stop(0),
        block_stop(2),
        message_delta({"output_tokens": 9}),
        STOP,
    )
    assert r.state == "complete"
    assert r.message["content"] == [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"cmd": "ls"}},
        {"type": "text", "text": "pre-filled"},
    ]


def test_empty_json_string_means_empty_input():
    r = rebuild(
        START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
        delta(0, {"type": "input_json_delta", "partial_json": ""}),
        block_stop(0),
        STOP,
    )
    assert r.message["content"][0]["input"] == {} and not r.lossy


def test_tool_json_keeps_big_integers_exact():
    r = rebuild(
        START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
        delta(
            0, {"type": "input_json_delta", "partial_json": '{"n": 123456789012345678901234567890}'}
        ),
        block_stop(0),
        STOP,
    )
    assert r.message["content"][0]["input"] == {"n": 123456789012345678901234567890}


def test_invalid_tool_json_is_lossy_not_fatal():
    r = rebuild(
        START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
        delta(0, {"type": "input_json_delta", "partial_json": '{"a": '}),
        block_stop(0),
        STOP,
    )
    assert r.state == "complete" and r.lossy
    assert r.message["content"][0]["input"] == {}


def test_unknown_block_kept_unknown_delta_flagged_lossy():
    r = rebuild(
        START,
        block_start(
            0,
            {
                "type": "mcp_tool_result",
                "tool_use_id": "m1",
                "is_error": False,
                "content": [{"type": "text", "text": "ok"}],
            },
        ),
        block_stop(0),
        block_start(1, {"type": "future_block", "body": "a"}),
        delta(1, {"type": "future_delta", "body": "b", "flag": True}),
        block_stop(1),
        {"type": "future_event", "x": 1},
        STOP,
    )
    assert r.state == "complete" and r.lossy
    assert r.message["content"][0]["type"] == "mcp_tool_result"
    assert r.message["content"][1] == {"type": "future_block", "body": "ab", "flag": True}
    assert r.unknown == ["delta:future_delta", "future_event"]  # in order of appearance


def test_compaction_delta_replaces_content():
    r = rebuild(
        START,
        block_start(0, {"type": "compaction", "content": None}),
        delta(0, {"type": "compaction_delta", "content": "summary", "encrypted_content": "enc"}),
        block_stop(0),
        STOP,
    )
    assert r.message["content"] == [
        {"type": "compaction", "content": "summary", "encrypted_content": "enc"}
    ]
    assert not r.lossy


def test_message_delta_usage_latest_non_null_wins_and_extras_kept():
    r = rebuild(
        START,
        message_delta(
            {"input_tokens": None, "cache_read_input_tokens": 300, "output_tokens": 40},
            stop_details=None,
            container={"id": "c1"},
        ),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 50},
            "context_management": {"applied_edits": []},
        },
        STOP,
    )
    assert r.usage == Usage(
        input_tokens=10, output_tokens=50, cache_read_tokens=300, cache_creation_tokens=5
    )
    assert r.message["stop_reason"] == "max_tokens"
    assert r.message["container"] == {"id": "c1"}
    assert "stop_details" not in r.message
    assert r.message["context_management"] == {"applied_edits": []}


def test_error_event_without_error_object():
    r = rebuild(START, {"type": "error"})
    assert r.state == "errored" and r.error["type"] == "error"


def test_unreadable_events_prevent_complete():
    r = AnthropicReconstructor()
    for ev in events(START):
        r.feed(ev)
    r.feed(SSEEvent("content_block_delta", "{not json"))
    r.feed(SSEEvent("ping", "[1, 2]"))
    r.feed_json(STOP)
    res = r.result(True)
    assert r.unreadable == 2
    assert res.state == "truncated" and res.reason == "unreadable_event"


def test_sse_event_name_used_when_json_has_no_type():
    r = AnthropicReconstructor()
    r.feed(SSEEvent("message_start", orjson.dumps({"message": START["message"]}).decode()))
    r.feed(SSEEvent("message_stop", "{}"))
    assert r.result(True).state == "complete"


def test_feed_json_and_feed_message_match_sse():
    objs = [START, block_start(0, {"type": "text", "text": ""}), text(0, "hi"), block_stop(0), STOP]
    a, b = AnthropicReconstructor(), AnthropicReconstructor()
    for o in objs:
        a.feed_json(o)
        b.feed_message(orjson.dumps(o))
    assert a.result(True) == b.result(True) == rebuild(*objs)


def test_for_shape():
    assert isinstance(for_shape("anthropic"), AnthropicReconstructor)
    with pytest.raises(ValueError):
        for_shape("gemini")


# --- chunk-boundary invariance -------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda f: f.stem)
def test_every_single_split_gives_identical_reconstruction(path):
    data = path.read_bytes()
    whole = run(data)
    for cut in range(1, len(data)):
        assert run(data, [cut]) == whole, cut


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(FIXTURES), cuts=st.lists(st.integers(0, 1 << 14), max_size=50))
def test_random_multi_splits_give_identical_reconstruction(path, cuts):
    data = path.read_bytes().replace(b"\n", b"\r\n")
    whole = run(data)
    assert run(data, sorted({c % (len(data) + 1) for c in cuts})) == whole
    assert whole == run(path.read_bytes())  # line endings do not matter either


# --- never raises ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "index",
                    "delta",
                    "content_block",
                    "message",
                    "usage",
                    "text",
                    "partial_json",
                    "error",
                    "citation",
                    "signature",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
TYPES = st.sampled_from(
    [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
        "ping",
        "other",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TYPES, JSON, st.integers(0, 2)), max_size=12))
def test_garbage_events_never_raise(items):
    r = AnthropicReconstructor()
    for type_, body, index in items:
        obj = {"type": type_, "index": index}
        if isinstance(body, dict):
            obj.update(body)
            obj["type"] = type_
        else:
            obj["delta"] = body
        r.feed_json(obj)
    res = r.result(False)
    assert res.state in ("complete", "errored", "truncated")
    assert not r.failed  # no internal error either: garbage is handled, not caught
    assert plain(res.message)  # only JSON types: no internal accumulator leaks out


def test_parser_output_feeds_reconstructor_directly():
    parser, r = SSEParser(), AnthropicReconstructor()
    for ev in parser.feed((STREAMS / "anthropic_text.sse").read_bytes()):
        r.feed(ev)
    assert r.finished and r.result(True) == fixture("anthropic_text")
