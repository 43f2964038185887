
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.reconstruct import StreamResult, for_shape
from headroom_core.reconstruct.openai_responses import ResponsesReconstructor
from headroom_core.sse import SSEParser
from headroom_core.usage import Usage
from tests.recon_util import STREAMS, run_tee, plain

FIXTURES = sorted([*STREAMS.glob("responses_*.sse"), *STREAMS.glob("codex_*.sse")])


def run(data: bytes, cuts: list[int] = (), ended_cleanly: bool = True) -> StreamResult:
    return run_tee("responses", data, cuts, ended_cleanly)


def fixture(name: str) -> StreamResult:
    return run((STREAMS / f"{name}.sse").read_bytes())


def event_objs(name: str) -> list[dict]:
    p = SSEParser()
    evs = p.feed((STREAMS / f"{name}.sse").read_bytes()) + p.close()
    return [orjson.loads(e.data) for e in evs]


def terminal(name: str) -> dict:
    return event_objs(name)[-1]["response"]


def rebuild(*objs: dict, ended_cleanly: bool = True) -> StreamResult:
    r = ResponsesReconstructor()
    for o in objs:
        r.feed_json(o)
    return r.result(ended_cleanly)


CREATED = {
    "type": "response.created",
    "response": {
        "id": "resp_1",
        "object": "response",
        "status": "in_progress",
        "model": "gpt-x",
        "output": [],
        "usage": None,
    },
}


def added(oi: int, item: dict) -> dict:
    return {"type": "response.output_item.added", "output_index": oi, "item": item}


def completed(output=None, usage=None) -> dict:
    response = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-x",
        "usage": usage,
    }
    if output is not None:
        response["output"] = output
    return {"type": "response.completed", "response": response}


# --- fixtures ------------------------------------------------------------------------------------


def test_terminal_response_object_wins():
    r = fixture("responses_text")
    assert r.state == "complete" and r.reason is None and not r.lossy
    assert r.message == terminal("responses_text")
    assert r.model == "gpt-4.1-2025-04-14" and r.events == 11
    assert r.usage == Usage(input_tokens=506, output_tokens=19, cache_read_tokens=1024)


def test_codex_backend_empty_terminal_output_is_filled_from_done_items():
    r = fixture("codex_tools")
    assert r.state == "complete" and not r.lossy
    done_items = [
        o["item"] for o in event_objs("codex_tools") if o["type"] == "response.output_item.done"
    ]
    assert r.message["output"] == done_items
    reasoning, call, custom = r.message["output"]
    assert reasoning["summary"][0]["text"].endswith("list the files before editing.")
    assert orjson.loads(call["arguments"]) == {
        "command": ["bash", "-lc", "ls -la && rg --files | head"],
        "workdir": "/work/main",
    }
    assert custom["input"].endswith("+Hello 👋\n*** End Patch\n")
    assert r.usage == Usage(
        input_tokens=1088, output_tokens=322, cache_read_tokens=10752, reasoning_tokens=192
    )


def test_items_rebuilt_from_deltas_when_never_closed_are_lossy():
    r = fixture("responses_reasoning_text")
    assert r.state == "complete" and r.lossy
    assert r.message["output"] == [
        {
            "id": "rs_77aa01",
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Need the sum: 2 + 2 = 4."}],
        },
        {
            "id": "msg_77aa02",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "text": "4"}],
        },
    ]
    assert r.usage.reasoning_tokens == 9


def test_failed_response_is_errored():
    r = fixture("responses_failed")
    assert r.state == "errored"
    assert r.error == {
        "code": "server_error",
        "message": "An error occurred while processing your request.",
    }
    assert r.message["status"] == "failed" and not r.lossy


def test_incomplete_response_is_complete_with_reason():
    r = fixture("responses_incomplete")
    assert r.state == "complete" and r.reason == "incomplete:max_output_tokens"
    assert r.message == terminal("responses_incomplete")


def test_error_event():
    r = fixture("responses_error")
    assert r.state == "errored"
    assert r.error == {
        "code": "rate_limit_exceeded",
        "param": None,
        "message": "Rate limit reached for gpt-4.1 in organization org-xyz "
        "on tokens per min (TPM).",
    }
    assert r.message["id"] == "resp_3rr0"


def test_truncated_stream_keeps_what_arrived():
    data = (STREAMS / "codex_tools.sse").read_bytes()
    cut = data.index(b"event: response.custom_tool_call_input.done")
    r = run(data[:cut], ended_cleanly=False)
    assert r.state == "truncated" and r.reason == "connection_lost"
    assert r.message["status"] == "in_progress"
    assert [i["type"] for i in r.message["output"]] == [
        "reasoning",
        "function_call",
        "custom_tool_call",
    ]
    assert r.message["output"][2]["input"].endswith("+Hello 👋\n*** End Patch\n")  # from the deltas
    assert r.usage is None


# --- event semantics -----------------------------------------------------------------------------


def test_parts_refusal_annotations_and_done_text():
    r = rebuild(
        CREATED,
        added(
            0,
            {
                "id": "msg_1",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        ),
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "text": ""},
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "See ",
        },
        {
            "type": "response.output_text.annotation.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "annotation_index": 0,
            "annotation": {
                "type": "url_citation",
                "url": "https://x.test",
                "start_index": 0,
                "end_index": 3,
            },
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "content_index": 0,
            "delta": "docs",
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 1,
            "part": {"type": "refusal", "refusal": ""},
        },
        {
            "type": "response.refusal.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 1,
            "delta": "no",
        },
        {
            "type": "response.refusal.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 1,
            "refusal": "no.",
        },
        completed(usage={"input_tokens": 5, "output_tokens": 2}),
    )
    assert r.state == "complete" and r.lossy  # the message item never got output_item.done
    assert r.message["output"][0]["content"] == [
        {
            "type": "output_text",
            "text": "See docs",
            "annotations": [
                {"type": "url_citation", "url": "https://x.test", "start_index": 0, "end_index": 3}
            ],
        },
        {"type": "refusal", "refusal": "no."},
    ]


def test_function_call_arguments_from_deltas_then_done():
    base = [
        CREATED,
        added(
            0, {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": ""}
        ),
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 0,
            "delta": '{"a"',
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 0,
            "delta": ": 1}",
        },
    ]
    assert rebuild(*base).message["output"][0]["arguments"] == '{"a": 1}'
    final = rebuild(
        *base,
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "arguments": '{"a": 2}',
        },
    )
    assert final.message["output"][0]["arguments"] == '{"a": 2}'


def test_summary_parts_by_index():
    r = rebuild(
        CREATED,
        added(0, {"id": "rs_1", "type": "reasoning", "summary": []}),
        {
            "type": "response.reasoning_summary_part.added",
            "output_index": 0,
            "summary_index": 1,
            "part": {"type": "summary_text", "text": ""},
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 1,
            "delta": "second",
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 0,
            "delta": "first",
        },
    )
    assert r.message["output"][0]["summary"] == [
        {"type": "summary_text", "text": "first"},
        {"type": "summary_text", "text": "second"},
    ]


def test_response_done_status_and_lifecycle_updates():
    r = rebuild(
        CREATED,
        {"type": "response.in_progress", "response": {**CREATED["response"], "model": "gpt-y"}},
    )
    assert r.model == "gpt-y" and r.state == "truncated" and r.reason == "no_terminal_event"
    done = rebuild(
        CREATED,
        {
            "type": "response.done",
            "response": {
                "id": "resp_1",
                "status": "incomplete",
                "incomplete_details": {"reason": "content_filter"},
            },
        },
    )
    assert done.state == "complete" and done.reason == "incomplete:content_filter"
    cancelled = rebuild(
        CREATED, {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}
    )
    assert cancelled.state == "errored"


def test_websocket_error_message_shape():
    r = rebuild(
        {
            "type": "error",
            "status": 429,
            "error": {"type": "usage_limit_reached", "message": "You've hit your usage limit."},
        }
    )
    assert r.state == "errored"
    assert r.error == {
        "type": "usage_limit_reached",
        "message": "You've hit your usage limit.",
        "status": 429,
    }


def test_unknown_events_are_recorded_not_fatal():
    r = rebuild(
        CREATED,
        {"type": "response.web_search_call.searching", "output_index": 0},
        {"type": "codex.rate_limits", "primary": {"used_percent": 3}},
        completed(output=[]),
    )
    assert r.state == "complete" and not r.lossy
    assert r.unknown == ["response.web_search_call.searching", "codex.rate_limits"]


# --- transports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda f: f.stem)
def test_websocket_messages_give_the_same_result_as_sse(path):
    objs = event_objs(path.stem)
    ws_json, ws_text = ResponsesReconstructor(), ResponsesReconstructor()
    for o in objs:
        ws_json.feed_json(o)
        ws_text.feed_message(orjson.dumps(o).decode())
    assert ws_json.result(True) == ws_text.result(True) == run(path.read_bytes())


def test_finished_flag_lets_a_websocket_adapter_start_anew():
    r = ResponsesReconstructor()
    for o in event_objs("responses_text")[:-1]:
        r.feed_json(o)
        assert not r.finished
    r.feed_json(event_objs("responses_text")[-1])
    assert r.finished


def test_for_shape():
    assert isinstance(for_shape("responses"), ResponsesReconstructor)


# --- chunk-boundary invariance -------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda f: f.stem)
def test_every_single_split_gives_identical_reconstruction(path):
    data = path.read_bytes()
    whole = run(data)
    for cut in range(1, len(data)):
        assert run(data, [cut]) == whole, cut


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(FIXTURES), cuts=st.lists(st.integers(0, 1 << 15), max_size=50))
def test_random_multi_splits_give_identical_reconstruction(path, cuts):
    data = path.read_bytes().replace(b"\n", b"\r")
    assert run(data, sorted({c % (len(data) + 1) for c in cuts})) == run(path.read_bytes())


# --- never raises ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "output_index",
                    "content_index",
                    "summary_index",
                    "item",
                    "part",
                    "delta",
                    "text",
                    "response",
                    "output",
                    "id",
                    "item_id",
                    "usage",
                    "error",
                    "status",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=14,
)
TYPES = st.sampled_from(
    [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.output_text.annotation.added",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.done",
        "error",
        "other",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            TYPES,
            st.dictionaries(
                st.sampled_from(
                    [
                        "output_index",
                        "content_index",
                        "summary_index",
                        "item",
                        "part",
                        "delta",
                        "text",
                        "response",
                        "item_id",
                        "arguments",
                        "annotation",
                    ]
                ),
                JSON,
                max_size=5,
            ),
        ),
        max_size=12,
    )
)
def test_garbage_events_never_raise(items):
    r = ResponsesReconstructor()
    for type_, body in items:
        r.feed_json({**body, "type": type_})
    res = r.result(True)
    assert res.state in ("complete", "errored", "truncated")
    assert not r.failed
    assert plain(res.message)
