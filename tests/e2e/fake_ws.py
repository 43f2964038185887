"""A local fake of the Responses API's WebSocket transport (what Codex's built-in provider uses).

Every received handshake (headers in wire order and case) and message (raw bytes) is recorded.
`response.create` is answered with `response.*` events, one per message: `generate: false` gets
an empty completed response (Codex's warm-up); a create without tool outputs gets a function call
(`shell`, call_id `call_<n>`); a create carrying tool outputs gets a short text answer.
"""

from __future__ import annotations

import asyncio
import json
import threading

from websockets.asyncio.server import serve


class FakeWebSocketUpstream:
    def __init__(self) -> None:
        self.handshakes: list[list[tuple[str, str]]] = []
        self.messages: list[bytes | str] = []
        self._n = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.handshakes.clear()
        self.messages.clear()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._hs)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            await self._server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def _hs(self, connection, request):
        self.handshakes.append(list(request.headers.raw_items()))
        return None

    async def _handler(self, ws) -> None:
        async for message in ws:
            self.messages.append(message)
            if isinstance(message, bytes):
                await ws.send(message)  # echo binary frames
                continue
            try:
                doc = json.loads(message)
            except ValueError:
                await ws.send(json.dumps({"type": "error", "error": {"message": "bad json"}}))
                continue
            if doc.get("type") != "response.create":
                continue
            for ev in self._answer(doc):
                await ws.send(json.dumps(ev))

    def _answer(self, doc: dict) -> list[dict]:
        self._n += 1
        rid = f"resp_{self._n}"
        model = doc.get("model", "gpt-x")
        base = {"id": rid, "object": "response", "model": model, "status": "in_progress",
                "output": [], "usage": None}
        usage = {"input_tokens": 1000, "output_tokens": 12, "total_tokens": 1012,
                 "input_tokens_details": {"cached_tokens": 900},
                 "output_tokens_details": {"reasoning_tokens": 0}}
        evs: list[dict] = [{"type": "response.created", "response": base}]
        if doc.get("generate") is False:
            done = {**base, "status": "completed",
                    "usage": {**usage, "input_tokens": 0, "output_tokens": 0,
                              "input_tokens_details": {"cached_tokens": 0}}}
            return evs + [{"type": "response.completed", "response": done}]
        inputs = doc.get("input") or []
        has_output = any(isinstance(i, dict) and i.get("type") == "function_call_output"
                         for i in inputs)
        if has_output:
            item = {"type": "message", "id": f"msg_{self._n}", "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}
            evs += [
                {"type": "response.output_item.added", "output_index": 0,
                 "item": {**item, "status": "in_progress", "content": []}},
                {"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                 "content_index": 0, "delta": "Done."},
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ]
        else:
            item = {"type": "function_call", "id": f"fc_{self._n}", "status": "completed",
                    "call_id": f"call_{self._n}", "name": "shell",
                    "arguments": json.dumps({"command": ["pytest", "-q"]})}
            evs += [
                {"type": "response.output_item.added", "output_index": 0,
                 "item": {**item, "status": "in_progress", "arguments": ""}},
                {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                 "output_index": 0, "delta": item["arguments"]},
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ]
        done = {**base, "status": "completed", "output": [item], "usage": usage}
        return evs + [{"type": "response.completed", "response": done}]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(timeout=5)
