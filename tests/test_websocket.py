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
