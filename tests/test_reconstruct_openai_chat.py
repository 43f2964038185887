
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.reconstruct import StreamResult, for_shape
from headroom_core.reconstruct.openai_chat import ChatReconstructor
from headroom_core.sse import SSEEvent
from headroom_core.usage import Usage
from tests.recon_util import STREAMS, run_tee, plain

FIXTURES = sorted(STREAMS.glob("chat_*.sse"))


def run(data: bytes, cuts: list[int] = (), ended_cleanly: bool = True) -> StreamResult:
    return run_tee("chat", data, cuts, ended_cleanly)


def fixture(name: str) -> StreamResult:
    return run((STREAMS / f"{name}.sse").read_bytes())


def chunk(choices: list[dict], **extra) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": choices,
        **extra,
    }


def choice(index: int = 0, finish_reason: str | None = None, **delta) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def rebuild(*objs: dict, done: bool = True, ended_cleanly: bool = True) -> StreamResult:
    r = ChatReconstructor()
    for o in objs:
        r.feed(SSEEvent(None, orjson.dumps(o).decode()))
    if done:
        r.feed(SSEEvent(None, "[DONE]"))
    return r.result(ended_cleanly)


def test_text_stream_rebuilds_the_exact_completion():
    r = fixture("chat_text")
    assert r.state == "complete" and r.error is None and not r.lossy
    assert r.events == 8 and r.model == "gpt-4.1-2025-04-14"
    assert r.message == {
        "id": "chatcmpl-BqG7Xn2mV0aZ3pQk1Lr8sT4uW6yE",
        "object": "chat.completion",
        "created": 1751900000,
        "model": "gpt-4.1-2025-04-14",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Use `zstandard` — it streams 🚀 很好.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 2306,
            "completion_tokens": 14,
            "total_tokens": 2320,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_b3f1157249",
    }
    assert "obfuscation" not in r.message
    # uncached input = prompt_tokens - cached_tokens
    assert r.usage == Usage(input_tokens=386, output_tokens=14, cache_read_tokens=1920)


def test_parallel_tool_calls_keyed_by_index():
    r = fixture("chat_tools")
    assert r.state == "complete"
    msg = r.message["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"] == [
        {
            "id": "call_FthC9qRpsL5kBpwwyw6c7j4k",
            "type": "function",
            "function": {"name": "read_file", "arguments": '{"path": "src/main.py"}'},
        },
        {
            "id": "call_9Lr2HkQwXbN3mYp7TzV1sC8d",
            "type": "function",
            "function": {"name": "run_tests", "arguments": '{"pattern": "test_é*"}'},
        },
    ]
    assert r.message["choices"][0]["finish_reason"] == "tool_calls"
    assert r.usage == Usage(input_tokens=242, output_tokens=48, cache_read_tokens=3968)


def test_multiple_choices():
    r = fixture("chat_n2")
    assert r.state == "complete" and r.usage is None
    assert [
        (c["index"], c["message"]["content"], c["finish_reason"]) for c in r.message["choices"]
    ] == [(0, "Spaces, four of them.", "length"), (1, "Tabs, obviously.", "stop")]


def test_refusal():
    r = fixture("chat_refusal")
    msg = r.message["choices"][0]["message"]
    assert msg == {
        "role": "assistant",
        "content": None,
        "refusal": "I'm sorry, I can't help with that.",
    }


def test_error_object_in_a_chunk():
    r = fixture("chat_error")
    assert r.state == "errored"
    assert r.error["type"] == "server_error"
    assert r.message["choices"][0]["message"]["content"] == "Partial ans"


def test_completeness_without_done_marker():
    parts = [chunk([choice(role="assistant", content="a")]), chunk([choice(0, "stop")])]
    assert rebuild(*parts, done=False, ended_cleanly=True).state == "complete"
    lost = rebuild(*parts, done=False, ended_cleanly=False)
    assert lost.state == "truncated" and lost.reason == "connection_lost"
    open_choice = rebuild(chunk([choice(0, content="a"), choice(1, "stop")]), done=False)
    assert open_choice.state == "truncated" and open_choice.reason == "no_terminal_event"
    assert rebuild(done=False).state == "truncated"


def test_done_marker_is_terminal_even_if_the_connection_then_drops():
    r = rebuild(chunk([choice(content="x")]), chunk([choice(0, "stop")]), ended_cleanly=False)
    assert r.state == "complete"


def test_generic_delta_fields_logprobs_and_repeated_identity_fields():
    r = rebuild(
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "He", "reasoning_content": "th"},
                    "logprobs": {"content": [{"token": "He", "logprob": -0.1}], "refusal": None},
                    "finish_reason": None,
                }
            ]
        ),
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "llo", "reasoning_content": "ink"},
                    "logprobs": {"content": [{"token": "llo", "logprob": -0.2}]},
                    "finish_reason": None,
                }
            ]
        ),
        chunk(
            [
                choice(
                    0,
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                )
            ]
        ),
        chunk([choice(0, tool_calls=[{"index": 0, "id": "c1", "function": {"arguments": ""}}])]),
        chunk([choice(0, "stop")]),
    )
    c = r.message["choices"][0]
    assert c["message"]["role"] == "assistant"  # replaced, not "assistantassistant"
    assert c["message"]["content"] == "Hello" and c["message"]["reasoning_content"] == "think"
    assert c["message"]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    assert c["logprobs"] == {
        "content": [{"token": "He", "logprob": -0.1}, {"token": "llo", "logprob": -0.2}],
        "refusal": None,
    }


def test_usage_chunk_wins_and_null_usage_ignored():
    r = rebuild(
        chunk([choice(content="x")], usage=None),
        chunk([choice(0, "stop")], usage=None),
        chunk(
            [],
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 30},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        ),
    )
    assert r.usage == Usage(
        input_tokens=6,
        output_tokens=5,
        cache_read_tokens=64,
        cache_creation_tokens=30,
        reasoning_tokens=3,
    )
    assert r.usage.total_input == 100


def test_malformed_choices_are_lossy_not_fatal():
    r = rebuild(
        chunk("nope"), chunk([{"delta": {}}, 7, choice(content="ok")]), chunk([choice(0, "stop")])
    )
    assert r.state == "complete" and r.lossy
    assert r.message["choices"][0]["message"]["content"] == "ok"


def test_for_shape():
    assert isinstance(for_shape("chat"), ChatReconstructor)


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
    assert run(data, sorted({c % (len(data) + 1) for c in cuts})) == run(path.read_bytes())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "index",
                    "delta",
                    "content",
                    "tool_calls",
                    "function",
                    "arguments",
                    "usage",
                    "error",
                    "finish_reason",
                    "logprobs",
                    "id",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=14,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, max_size=10))
def test_garbage_chunks_never_raise(objs):
    r = ChatReconstructor()
    for o in objs:
        r.feed_json(o)
    res = r.result(True)
    assert res.state in ("complete", "errored", "truncated")
    assert not r.failed
    assert plain(res.message)  # only JSON types: no internal accumulator leaks out
