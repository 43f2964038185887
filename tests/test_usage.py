from pathlib import Path

import pytest

from headroom_core.stream import StreamTee
from headroom_core.usage import Usage, from_response, from_usage

STREAMS = Path(__file__).parent / "data" / "streams"

# Non-streamed response bodies as each API returns them (abridged to the relevant fields).
ANTHROPIC = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 188,
        "cache_read_input_tokens": 7040,
        "cache_creation": {"ephemeral_5m_input_tokens": 188, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "output_tokens_details": {"thinking_tokens": 120},
        "service_tier": "standard",
    },
}
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    },
}
RESPONSES = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-5",
    "output": [],
    "usage": {
        "input_tokens": 5000,
        "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 512},
        "output_tokens": 700,
        "output_tokens_details": {"reasoning_tokens": 600},
        "total_tokens": 5700,
    },
}


def test_anthropic_non_streamed():
    u = from_response("anthropic", ANTHROPIC)
    assert u == Usage(
        input_tokens=21,
        output_tokens=393,
        cache_read_tokens=7040,
        cache_creation_tokens=188,
        reasoning_tokens=120,
    )
    assert u.total_input == 21 + 7040 + 188


def test_chat_non_streamed_input_excludes_cached():
    u = from_response("chat", CHAT)
    assert u == Usage(
        input_tokens=86, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=128
    )
    assert u.total_input == CHAT["usage"]["prompt_tokens"]


def test_responses_non_streamed_input_excludes_cached_and_cache_writes():
    u = from_response("responses", RESPONSES)
    assert u == Usage(
        input_tokens=392,
        output_tokens=700,
        cache_read_tokens=4096,
        cache_creation_tokens=512,
        reasoning_tokens=600,
    )
    assert u.total_input == 5000


def test_responses_terminal_event_wrapper_accepted():
    assert from_response(
        "responses", {"type": "response.completed", "response": RESPONSES}
    ) == from_response("responses", RESPONSES)


def test_to_dict():
    assert Usage(1, 2, 3, 4, 5, 2).to_dict() == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
        "reasoning_tokens": 5,
        "cache_creation_1h_tokens": 2,
    }


def test_anthropic_1h_cache_writes_are_counted_apart():
    u = from_usage("anthropic", {"input_tokens": 5, "output_tokens": 1,
                                 "cache_creation_input_tokens": 300,
                                 "cache_creation": {"ephemeral_5m_input_tokens": 100,
                                                    "ephemeral_1h_input_tokens": 200}})
    assert (u.cache_creation_tokens, u.cache_creation_1h_tokens) == (300, 200)


def test_anthropic_cache_creation_breakdown_only():
    u = from_usage(
        "anthropic",
        {
            "input_tokens": 3,
            "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        },
    )
    assert u.cache_creation_tokens == 30


@pytest.mark.parametrize(
    "shape,obj",
    [
        ("anthropic", {}),
        ("anthropic", {"usage": None}),
        ("chat", {"usage": {}}),
        ("responses", {"usage": "x"}),
        ("chat", []),
        ("responses", None),
        ("gemini", {"usage": {"input_tokens": 1}}),
    ],
)
def test_no_usage_is_none(shape, obj):
    assert from_response(shape, obj) is None


def test_garbage_figures_count_as_zero_and_input_never_negative():
    assert from_usage(
        "anthropic",
        {
            "input_tokens": "12",
            "output_tokens": True,
            "cache_read_input_tokens": -4,
            "cache_creation_input_tokens": 2.0,
        },
    ) == Usage(cache_creation_tokens=2)
    # cached > prompt (a broken server): uncached input clamps at 0 rather than going negative
    assert from_usage(
        "chat",
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50},
        },
    ) == Usage(input_tokens=0, output_tokens=1, cache_read_tokens=50)
    assert from_usage(
        "responses", {"input_tokens": 9, "input_tokens_details": None, "output_tokens_details": []}
    ) == Usage(input_tokens=9)


@pytest.mark.parametrize(
    "name,shape,expected",
    [
        ("anthropic_text", "anthropic", Usage(12, 58, 30512, 2048)),
        ("anthropic_thinking_tool", "anthropic", Usage(2679, 143, 18240, 0)),
        ("chat_text", "chat", Usage(386, 14, 1920, 0)),
        ("chat_tools", "chat", Usage(242, 48, 3968, 0)),
        ("responses_text", "responses", Usage(506, 19, 1024, 0)),
        ("codex_tools", "responses", Usage(1088, 322, 10752, 0, 192)),
    ],
)
def test_streamed_usage_matches_the_non_streamed_reading_of_the_rebuilt_message(
    name, shape, expected
):
    tee = StreamTee(shape)
    tee.feed((STREAMS / f"{name}.sse").read_bytes())
    result = tee.finish(True)
    assert result.usage == expected
    assert from_response(shape, result.message) == expected
