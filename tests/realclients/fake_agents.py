"""A fake model upstream that answers the way the real agent CLIs need (Claude Code, Codex).

It is `tests.e2e.fake_upstream.FakeUpstream` (same HTTP + TLS listeners, same exact recording of
every request: method, path, header fields in wire order and case, raw body) with answers of its
own, because the e2e fake is shaped for the SDKs:

* Responses streams carry the full item life cycle (`output_item.added` ... `output_item.done`).
  Codex builds its turn from `response.output_item.done`; with the e2e fake's shorter stream it
  exits 0 but prints no answer.
* Anthropic Messages answer with a fixed, recognisable text (`ANSWER`) so a test can find it in
  the client's stdout, and can run one tool round trip: a request carrying
  `x-test-scenario: bash-tool` (Claude Code sends it when started with
  `ANTHROPIC_CUSTOM_HEADERS`) whose newest user turn holds no `tool_result` is answered with a
  `tool_use` of `Bash` running `BASH_COMMAND`. The request that brings the result back gets
  `tool_result_answer(n)`, n being the length of the result text the fake received: the client
  prints it, so a test can tell whether the upstream saw the original or a compressed output.
* `x-test-scenario: gzip` / `br` / `zstd` content-encodes the answer (SSE incrementally), as the
  e2e fake does.
* A Codex request whose input mentions `CODEX_TOOL_TRIGGER` and carries no function-call output
  yet is answered with an `exec_command` function call (Codex's unified exec tool) running
  `CODEX_SHELL`; the follow-up gets `tool_result_answer(n)` the same way.

Any other path gets a 404 with an Anthropic-shaped `not_found_error`, as the real API answers
routes it does not serve.

`AgentWebSocketFake` gives the same answers over the Responses WebSocket transport (Codex's
built-in provider), optionally behind TLS for regular mode.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator

from websockets.asyncio.server import serve

from tests.e2e.fake_upstream import FakeUpstream, Received, _decode, _self_signed, _sse
from tests.e2e.fake_ws import FakeWebSocketUpstream

ANSWER = "Hi from the Headroom fake upstream 7f3a."
# A pytest-like log of ~24 KB: Headroom's log compressor applies (a bare `seq 1 3000` is plain
# text, which Headroom leaves alone: `unchanged-type`), and it stays under Claude Code's own limit
# (~30,000 characters; a larger Bash output is saved to a file and only a 2 KB preview is sent).
BASH_COMMAND = "seq -f 'tests/test_mod.py::test_case_%g PASSED' 1 600"
CODEX_TOOL_TRIGGER = "HEADROOM-RUN-SHELL"
CODEX_SHELL = BASH_COMMAND


def tool_result_answer(n: int) -> str:
    return f"Tool result seen upstream: {n} chars."


def _text_of(content) -> str:
    """The text of a tool_result / function_call_output (string or list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# -- Anthropic -------------------------------------------------------------------------------------


def _anthropic_plan(doc: dict, scenario: set[str]) -> tuple[str, dict]:
    """('text', {'text': ...}) or ('tool_use', {...}) for a Messages request."""
    msgs = doc.get("messages") if isinstance(doc.get("messages"), list) else []
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    content = last.get("content") if isinstance(last.get("content"), list) else []
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    if results:
        n = sum(len(_text_of(b.get("content"))) for b in results)
        return "text", {"text": tool_result_answer(n)}
    if "bash-tool" in scenario and doc.get("tools"):
        return "tool_use", {"type": "tool_use", "id": "toolu_fake_bash_1", "name": "Bash",
                            "input": {"command": BASH_COMMAND,
                                      "description": "Print a long pytest-like log"}}
    return "text", {"text": ANSWER}


def _anthropic_usage() -> dict:
    return {"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100,
            "output_tokens": 9}


def anthropic_message(model: str, kind: str, block: dict) -> dict:
    content = [{"type": "text", "text": block["text"]}] if kind == "text" else [block]
    return {"id": "msg_fake_rc", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "end_turn" if kind == "text" else "tool_use",
            "stop_sequence": None, "usage": _anthropic_usage()}


def anthropic_events(model: str, kind: str, block: dict) -> Iterator[bytes]:
    start = {**anthropic_message(model, kind, block), "content": [], "stop_reason": None,
             "usage": {**_anthropic_usage(), "output_tokens": 1}}
    yield _sse("message_start", {"type": "message_start", "message": start})
    if kind == "text":
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        yield _sse("ping", {"type": "ping"})
        words = block["text"].split(" ")
        for i, w in enumerate(words):
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": w + (" " if i < len(words) - 1 else "")}})
        stop = "end_turn"
    else:
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {**block, "input": {}}})
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        stop = "tool_use"
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 9}})
    yield _sse("message_stop", {"type": "message_stop"})


# -- Responses -------------------------------------------------------------------------------------


def _responses_plan(doc: dict) -> tuple[str, dict]:
    items = doc.get("input") if isinstance(doc.get("input"), list) else []
    outputs = [i for i in items if isinstance(i, dict)
               and i.get("type") in ("function_call_output", "custom_tool_call_output")]
    if outputs:
        n = sum(len(_text_of(i.get("output"))) for i in outputs)
        return "text", {"text": tool_result_answer(n)}
    if CODEX_TOOL_TRIGGER in json.dumps(items):
        return "call", {"name": "exec_command", "arguments": json.dumps(
            {"cmd": CODEX_SHELL, "yield_time_ms": 10000})}
    return "text", {"text": ANSWER}


def responses_events(model: str, kind: str, plan: dict) -> Iterator[bytes]:
    usage = {"input_tokens": 1200, "output_tokens": 9, "total_tokens": 1209,
             "input_tokens_details": {"cached_tokens": 1000},
             "output_tokens_details": {"reasoning_tokens": 0}}
    base = {"id": "resp_fake_rc", "object": "response", "created_at": 1700000000, "model": model,
            "status": "in_progress", "output": [], "usage": None}
    seq = iter(range(1000))

    def ev(name: str, **data) -> bytes:
        return _sse(name, {"type": name, "sequence_number": next(seq), **data})

    yield ev("response.created", response=base)
    yield ev("response.in_progress", response=base)
    if kind == "text":
        text = plan["text"]
        item = {"type": "message", "id": "msg_fake_rc", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
        yield ev("response.output_item.added", output_index=0,
                 item={**item, "status": "in_progress", "content": []})
        yield ev("response.content_part.added", item_id=item["id"], output_index=0,
                 content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        words = text.split(" ")
        for i, w in enumerate(words):
            yield ev("response.output_text.delta", item_id=item["id"], output_index=0,
                     content_index=0, delta=w + (" " if i < len(words) - 1 else ""))
        yield ev("response.output_text.done", item_id=item["id"], output_index=0,
                 content_index=0, text=text)
        yield ev("response.content_part.done", item_id=item["id"], output_index=0,
                 content_index=0, part=item["content"][0])
    else:
        item = {"type": "function_call", "id": "fc_fake_rc", "status": "completed",
                "call_id": "call_fake_rc_1", **plan}
        yield ev("response.output_item.added", output_index=0,
                 item={**item, "status": "in_progress", "arguments": ""})
        yield ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                 delta=item["arguments"])
        yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                 arguments=item["arguments"])
    yield ev("response.output_item.done", output_index=0, item=item)
    yield ev("response.completed",
             response={**base, "status": "completed", "output": [item], "usage": usage})


# -- the server ------------------------------------------------------------------------------------


class AgentFake(FakeUpstream):
    """`FakeUpstream` with agent-shaped answers (see the module docstring)."""

    def llm_requests(self) -> list[Received]:
        """Recorded requests to an LLM path, in arrival order."""
        with self._lock:
            return [r for r in self.received
                    if r.path.split("?")[0].endswith(("/messages", "/responses",
                                                      "/chat/completions"))]

    def _respond(self, h, rec: Received) -> None:
        path = rec.path.split("?")[0]
        scenario = {s.strip() for s in (rec.header("x-test-scenario") or "").split(",")}
        if path.endswith("/count_tokens"):
            return self._send(h, 200, b'{"input_tokens":42}', "application/json", None)
        if not path.endswith(("/messages", "/responses")):
            # Like the real API for a route it does not serve. Claude Code's first-party
            # start-up calls (/api/claude_code/policy_limits, /settings) read 404 as "none";
            # any other answer (the e2e fake's text/plain 200) makes it retry with back-off.
            return self._send(h, 404, json.dumps({"type": "error", "error": {
                "type": "not_found_error", "message": "Not Found"}}).encode(),
                "application/json", None)
        try:
            doc = json.loads(_decode(rec.body, rec.header("content-encoding")) or b"{}")
        except Exception:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        model = str(doc.get("model") or "fake-model")
        coding = next((c for c in ("gzip", "br", "zstd") if c in scenario), None)
        opts = {"batch": "3"}  # a few events per chunk, like a busy upstream
        if path.endswith("/messages"):
            kind, block = _anthropic_plan(doc, scenario)
            if doc.get("stream"):
                return self._stream(h, anthropic_events(model, kind, block), opts, coding)
            body = anthropic_message(model, kind, block)
        else:
            kind, plan = _responses_plan(doc)
            if doc.get("stream", True):
                return self._stream(h, responses_events(model, kind, plan), opts, coding)
            body = {"id": "resp_fake_rc", "object": "response", "status": "completed",
                    "model": model, "output": []}
        return self._send(h, 200, json.dumps(body).encode(), "application/json", coding)


class AgentWebSocketFake(FakeWebSocketUpstream):
    """The e2e Responses-over-WebSocket fake (`tests/e2e/fake_ws.py`: records handshakes and
    messages) with the same agent-shaped answers as `AgentFake`, optionally behind TLS
    (self-signed; the proxy under test runs with ssl_insecure) for regular mode, where mitmproxy
    reaches "api.openai.com" over TLS.

    `generate: false` (Codex's pre-warm) gets the e2e fake's empty completed response; a create
    carrying a function-call output gets `tool_result_answer(n)`; one mentioning
    `CODEX_TOOL_TRIGGER` gets an `exec_command` call; anything else gets `ANSWER`.
    """

    def __init__(self, tls: bool = False) -> None:
        self.tls = tls
        super().__init__()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _run(self, ready) -> None:
        asyncio.set_event_loop(self._loop)
        ctx = None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*_self_signed())

        async def main():
            self._server = await serve(self._handler, "127.0.0.1", 0, ssl=ctx,
                                       process_request=self._hs)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            await self._server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def _answer(self, doc: dict) -> list[dict]:
        if doc.get("generate") is False:
            return super()._answer(doc)
        self._n += 1
        kind, plan = _responses_plan(doc)
        events = [json.loads(chunk.decode().split("data: ", 1)[1])
                  for chunk in responses_events(str(doc.get("model") or "gpt-x"), kind, plan)]
        for ev in events:  # distinct ids per response, like the real service
            if isinstance(ev.get("response"), dict):
                ev["response"]["id"] = f"resp_{self._n}"
        return events
