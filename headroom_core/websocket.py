"""Codex's Responses-over-WebSocket transport, read on the side like an HTTP stream.

One `WebSocketConversation` per connection: client `response.create` messages give the model (and
their new tool outputs are the live zone a rewriter may shrink); server messages are the same
`response.*` events as the HTTP SSE stream and go through the Responses reconstruction, one
response after another. Each finished response yields an event-log record. Never raises.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .reconstruct import StreamResult, for_shape

log = logging.getLogger("headroom.websocket")

# A rewriter for the text of a client `response.create` message: (text, tool_names) -> new text
# or None to leave the message alone, plus a manifest for the event log.
Rewrite = Callable[[bytes, dict[str, str]], tuple[bytes | None, dict[str, Any] | None]]

_TOOL_CALL_ITEMS = ("function_call", "custom_tool_call", "local_shell_call")
_MAX_TOOL_NAMES = 4096  # per connection; Codex sessions can run for hours


@dataclass(slots=True)
class ResponseRecord:
    """One model response carried by the connection, with what Headroom saw of its request."""

    model: str | None
    started: float
    request_bytes: int
    request_bytes_upstream: int
    first_event_at: float | None
    ended: float
    result: StreamResult
    rewrite: dict[str, Any] | None = None
    generate: bool = True


# `response.*` events that end a response; an `error` event ends the response it answers too.
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete",
                       "response.done"})
_MAX_PENDING = 64  # response.create messages awaiting their response (pipelined), per connection
MAX_OPENING = 1 << 20  # an opening message kept for the session's name (labels.py)
# The `type` of a message too large to read: normally its first key.
_TYPE_PEEK = re.compile(rb'\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.]{1,64})"')


@dataclass
class WebSocketConversation:
    """One connection. Each `response.create` the client sends is answered by one response
    (pipelined creates in order); a response starts with its first `response.*` or `error`
    message and ends with its terminal event or an `error`. Other server messages (Codex's
    `codex.rate_limits`, ...) belong to no response. Server messages over `max_message` bytes
    are not parsed (their response is reported truncated), as SSE events over
    `headroom_sse_max_event` are not. With `ascii_only`, a message with non-ASCII text is not
    rewritten (see addons/headroom_ws_fragments.py)."""

    clock: Callable[[], float]
    rewrite: Rewrite | None = None
    max_message: int = 1 << 20
    ascii_only: bool = False
    tool_names: dict[str, str] = field(default_factory=dict)
    binary_messages: int = 0
    malformed_messages: int = 0
    oversized_messages: int = 0
    responses: int = 0
    _recon: Any = None
    # The create messages the next responses answer, oldest first.
    _pending: deque[dict[str, Any]] = field(default_factory=deque)
    _first_event_at: float | None = None
    opening: bytes | None = None  # a response.create that names the session (labels.py)

    def client_message(self, content: bytes, is_text: bool) -> bytes | None:
        """A message from the client. Returns replacement content, or None to forward as is."""
        if not is_text:
            self.binary_messages += 1
            return None
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            self.malformed_messages += 1
            log.info("websocket client message is not JSON; forwarded untouched (%d bytes)",
                     len(content))
            return None
        if not isinstance(doc, dict) or doc.get("type") != "response.create":
            return None
        body = doc.get("response") if isinstance(doc.get("response"), dict) else doc
        if len(content) <= MAX_OPENING and (
                self.opening is None or (b"<cwd>" not in self.opening and b"<cwd>" in content)):
            self.opening = content  # a warm-up may come first; Codex's cwd names the session
        model = body.get("model")
        pending: dict[str, Any] = {
            "model": model if isinstance(model, str) else None,
            "started": self.clock(),
            "request_bytes": len(content),
            "request_bytes_upstream": len(content),
            "generate": body.get("generate") is not False,
            "rewrite": None,
        }
        if len(self._pending) >= _MAX_PENDING:  # creates nothing answers: forget the oldest
            self._pending.popleft()
        self._pending.append(pending)
        if self.rewrite is None or (self.ascii_only and not content.isascii()):
            return None
        try:
            new, manifest = self.rewrite(content, self.tool_names)
        except Exception as e:  # fail safe: the client's bytes go on unchanged
            log.warning("websocket rewrite failed; message forwarded untouched: %s",
                        type(e).__name__)
            return None
        pending["rewrite"] = manifest
        if new is not None and new != content:
            pending["request_bytes_upstream"] = len(new)
            return new
        return None

    def server_message(self, content: bytes, is_text: bool) -> list[ResponseRecord]:
        """A message from the server; returns the responses it completed (usually none)."""
        if not is_text:
            self.binary_messages += 1
            return []
        if len(content) > self.max_message:
            self.oversized_messages += 1
            peek = _TYPE_PEEK.match(content, 0, 256)
            obj = None
            type_ = peek.group(1).decode() if peek else None
        else:
            try:
                obj = orjson.loads(content)
            except orjson.JSONDecodeError:
                obj = None
            type_ = obj.get("type") if isinstance(obj, dict) else None
            if not isinstance(type_, str):
                type_ = None
        if self._recon is None:
            if type_ is None or not (type_.startswith("response.") or type_ == "error"):
                if isinstance(obj, dict):
                    self._note_tool_names(obj)
                return []  # no response in flight, and this starts none
            self._recon = for_shape("responses")
            self._first_event_at = self.clock()
        recon = self._recon
        if isinstance(obj, dict):
            recon.feed_json(obj)
            self._note_tool_names(obj)
        else:  # too large to read, or not a JSON object: what it said is lost
            recon.events += 1
            recon.unreadable += 1
        if recon.finished or type_ in _TERMINAL or type_ == "error":
            return [self._close_response(ended_cleanly=True)]
        return []

    def end(self) -> list[ResponseRecord]:
        """The connection closed: a response still in flight is truncated."""
        if self._recon is None:
            return []
        return [self._close_response(ended_cleanly=False)]

    def _close_response(self, ended_cleanly: bool) -> ResponseRecord:
        result = self._recon.result(ended_cleanly)
        p = self._pending.popleft() if self._pending else {}
        now = self.clock()
        rec = ResponseRecord(
            model=result.model or p.get("model"),
            started=p.get("started", self._first_event_at or now),
            request_bytes=p.get("request_bytes", 0),
            request_bytes_upstream=p.get("request_bytes_upstream", 0),
            first_event_at=self._first_event_at,
            ended=now,
            result=result,
            rewrite=p.get("rewrite"),
            generate=p.get("generate", True),
        )
        self._recon = None
        self._first_event_at = None
        self.responses += 1
        return rec

    def _note_tool_names(self, doc: dict) -> None:
        """Remember call_id -> tool name from the server's tool-call items: a later
        `response.create` carries only the outputs, keyed by call_id."""
        item = doc.get("item")
        if isinstance(item, dict) and item.get("type") in _TOOL_CALL_ITEMS:
            call_id, name = item.get("call_id"), item.get("name")
            if isinstance(call_id, str) and isinstance(name, str):
                if len(self.tool_names) >= _MAX_TOOL_NAMES:
                    self.tool_names.pop(next(iter(self.tool_names)))
                self.tool_names[call_id] = name
