import json

from headroom_core.websocket import WebSocketConversation


def clock():
    t = [0.0]

    def tick():
        t[0] += 1.0
        return t[0]

    return tick


def server_events(rid, call=None):
    base = {"id": rid, "object": "response", "model": "gpt-5-codex", "status": "in_progress",
            "output": []}
    out = [{"type": "response.created", "response": base}]
    items = []
    if call:
        item = {"type": "function_call", "id": "fc", "call_id": call, "name": "shell",
                "arguments": "{}", "status": "completed"}
        out.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        items.append(item)
    usage = {"input_tokens": 50, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 40}}
    out.append({"type": "response.completed",
                "response": {**base, "status": "completed", "output": items, "usage": usage}})
    return [json.dumps(e).encode() for e in out]


def test_responses_reconstructed_one_after_another_with_tool_names():
    conv = WebSocketConversation(clock=clock())
    assert conv.client_message(json.dumps({"type": "response.create", "model": "m1",
                                           "input": []}).encode(), True) is None
    recs = []
    for msg in server_events("r1", call="call_9"):
        recs += conv.server_message(msg, True)
    (r1,) = recs
    assert r1.result.state == "complete" and r1.model == "gpt-5-codex"
    assert r1.result.usage.cache_read_tokens == 40 and r1.result.usage.input_tokens == 10
    assert conv.tool_names == {"call_9": "shell"}
    conv.client_message(b'{"type":"response.create","generate":false}', True)
    recs = [r for m in server_events("r2") for r in conv.server_message(m, True)]
    assert len(recs) == 1 and recs[0].generate is False and conv.responses == 2


def test_connection_end_truncates_the_response_in_flight():
    conv = WebSocketConversation(clock=clock())
    conv.client_message(b'{"type":"response.create","model":"m"}', True)
    conv.server_message(server_events("r1")[0], True)
    (rec,) = conv.end()
    assert rec.result.state == "truncated" and rec.model == "gpt-5-codex"
    assert conv.end() == []


def test_binary_malformed_and_other_messages_are_left_alone():
    calls = []

    def rewrite(text, names):
        calls.append(text)
        return b'{"type":"response.create","rewritten":true}', {"compressed": 1}

    conv = WebSocketConversation(clock=clock(), rewrite=rewrite)
    assert conv.client_message(b"\x00\xff", False) is None
    assert conv.client_message(b"{broken", True) is None
    assert conv.client_message(b'{"type":"session.update"}', True) is None
    assert conv.binary_messages == 1 and conv.malformed_messages == 1 and calls == []
    assert conv.server_message(b"\x00", False) == [] and conv.server_message(b"junk", True) == []
    new = conv.client_message(b'{"type":"response.create","input":[]}', True)
    assert new == b'{"type":"response.create","rewritten":true}'


def test_a_failing_rewriter_forwards_the_original():
    def boom(text, names):
        raise RuntimeError("x")

    conv = WebSocketConversation(clock=clock(), rewrite=boom)
    assert conv.client_message(b'{"type":"response.create","input":[]}', True) is None


def _create(model="m", **kw):
    return json.dumps({"type": "response.create", "model": model, **kw}).encode()


def test_an_error_ends_its_response_and_the_next_one_is_counted_on_its_own():
    # The API answers a bad create (previous_response_not_found) with a bare error event.
    conv = WebSocketConversation(clock=clock())
    conv.client_message(_create("m-bad", previous_response_id="resp_gone"), True)
    (err,) = conv.server_message(json.dumps({"type": "error", "status": 400, "error": {
        "type": "invalid_request_error", "code": "previous_response_not_found"}}).encode(), True)
    assert err.result.state == "errored" and err.model == "m-bad"
    conv.client_message(_create("m-ok"), True)
    recs = [r for m in server_events("r2") for r in conv.server_message(m, True)]
    assert [r.result.state for r in recs] == ["complete"] and conv.responses == 2
    assert recs[0].request_bytes == len(_create("m-ok"))


def test_messages_outside_any_response_start_none():
    conv = WebSocketConversation(clock=clock())
    conv.client_message(_create(), True)
    recs = [r for m in server_events("r1") for r in conv.server_message(m, True)]
    assert len(recs) == 1
    assert conv.server_message(b'{"type":"codex.rate_limits","primary":{"used_percent":3}}',
                               True) == []
    assert conv.server_message(b"not json", True) == []
    assert conv.end() == []  # no phantom truncated response at close


def test_pipelined_creates_are_answered_in_order():
    conv = WebSocketConversation(clock=clock())
    small, big = _create("a"), _create("b", input=[{"type": "message", "role": "user",
                                                    "content": "x" * 5000}])
    conv.client_message(small, True)
    conv.client_message(big, True)
    recs = [r for rid in ("r1", "r2") for m in server_events(rid)
            for r in conv.server_message(m, True)]
    assert [r.request_bytes for r in recs] == [len(small), len(big)]


def test_a_server_message_over_the_limit_is_not_parsed_and_its_response_is_truncated():
    conv = WebSocketConversation(clock=clock(), max_message=4096)
    conv.client_message(_create(), True)
    created, *_, completed = server_events("r1")
    assert conv.server_message(created, True) == []
    doc = json.loads(completed)
    doc["response"]["output"] = [{"type": "message", "content": "y" * 10_000}]
    (rec,) = conv.server_message(json.dumps(doc).encode(), True)  # still ends the response
    assert rec.result.state == "truncated" and conv.oversized_messages == 1
    conv.client_message(_create(), True)
    assert [r.result.state for m in server_events("r2")
            for r in conv.server_message(m, True)] == ["complete"]


def test_ascii_only_leaves_non_ascii_messages_unrewritten():
    calls = []

    def rewrite(text, names):
        calls.append(text)
        return text.replace(b"LONG", b"S"), {"changed": True}

    conv = WebSocketConversation(clock=clock(), rewrite=rewrite, ascii_only=True)
    raw = '{"type":"response.create","input":"LONG ✓"}'.encode()
    assert conv.client_message(raw, True) is None and calls == []
    assert conv.client_message(_create(input="LONG"), True) == _create(input="S")


def test_the_opening_message_kept_for_the_name_is_bounded():
    from headroom_core import websocket
    conv = WebSocketConversation(clock=clock())
    conv.client_message(_create(input="x" * (websocket.MAX_OPENING + 1)), True)
    assert conv.opening is None
    conv.client_message(_create(input="<cwd>/w</cwd>"), True)
    assert conv.opening == _create(input="<cwd>/w</cwd>")
