"""Rebuild a streamed model response into the provider's non-streaming JSON shape.

Owns `StreamResult`, the shared reconstructor machinery (JSON decoding, completeness rules,
never-raise guards) and `for_shape`; one module per provider shape holds the event semantics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any


from headroom_core.jsonutil import loads
from headroom_core.sse import DONE, SSEEvent
from headroom_core.usage import Usage

log = logging.getLogger("headroom.reconstruct")

COMPLETE = "complete"
ERRORED = "errored"
TRUNCATED = "truncated"


@dataclass(slots=True)
class StreamResult:
    """What a stream amounted to.

    `state`: "complete" (terminal event seen, no error, every event read), "errored" (the provider
    reported an error in the stream) or "truncated" (the stream ended before its terminal event, or
    part of it could not be read). `reason` says why a stream is not complete: "provider_error",
    "connection_lost", "no_terminal_event" (ended cleanly without it), "unreadable_event",
    "invalid_utf8", "event_too_large", "unterminated_event", "decode_error", "internal_error"; or,
    for a complete Responses stream that ended `incomplete`, "incomplete:<provider's reason>".
    `lossy` is set when the stream held something the rebuilt `message` may not represent
    faithfully (unknown delta types, tool input that is not JSON): a response store should keep
    only `complete` and not `lossy`. `usage` is None when the stream never reported usage.
    """

    message: dict[str, Any]
    usage: Usage | None
    state: str
    error: dict[str, Any] | None
    model: str | None
    events: int
    reason: str | None = None
    lossy: bool = False
    unknown: list[str] = field(default_factory=list)  # distinct unknown event/delta types seen


def loads_exact(text: str) -> Any:
    """Parse model-produced JSON (tool input) with the stdlib: orjson turns huge ints to floats."""
    return json.loads(text)


class Reconstructor:
    """Base class: subclasses implement `_apply(obj, type_)` and `_build()`.

    `feed(event)` takes SSE events, `feed_json(obj)` already-parsed events (WebSocket transport),
    `feed_message(text)` a raw JSON text message. None of them raises: an internal error stops
    reconstruction for the stream (`failed`), which can then never be "complete".
    """

    shape = ""

    def __init__(self) -> None:
        self.events = 0
        self.unreadable = 0  # events whose data was not a JSON object
        self.failed = False
        self.finished = False  # the terminal event was seen (a WebSocket adapter may start anew)
        self.error: dict[str, Any] | None = None
        self.lossy = False
        self.unknown: list[str] = []

    def feed(self, event: SSEEvent) -> None:
        self.events += 1
        if self.failed:
            return
        data = event.data
        if data == DONE:
            try:
                self._done()
            except Exception as e:
                self._fail(e)
            return
        try:
            obj = loads(data)
        except Exception:  # ValueError, or RecursionError on absurdly nested input
            self.unreadable += 1
            return
        self._dispatch(obj, event.event)

    def feed_json(self, obj: dict[str, Any]) -> None:
        self.events += 1
        if not self.failed:
            self._dispatch(obj, None)

    def feed_message(self, text: str | bytes) -> None:
        self.events += 1
        if self.failed:
            return
        try:
            obj = loads(text)
        except Exception:
            self.unreadable += 1
            return
        self._dispatch(obj, None)

    def _dispatch(self, obj: Any, name: str | None) -> None:
        if not isinstance(obj, dict):
            self.unreadable += 1
            return
        # The JSON `type` is authoritative; the SSE `event:` name is only a fallback, so the same
        # code serves SSE and WebSocket transports.
        type_ = obj.get("type")
        try:
            self._apply(obj, type_ if type(type_) is str else name)
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        self.failed = True
        log.warning(
            "reconstruct stopped: shape=%s error=%s events=%d",
            self.shape,
            type(e).__name__,
            self.events,
        )

    def _note_unknown(self, name: str) -> None:
        if name not in self.unknown and len(self.unknown) < 32:
            self.unknown.append(name)

    def _done(self) -> None:
        """`data: [DONE]`: terminal for Chat; other shapes ignore it."""

    def _apply(self, obj: dict[str, Any], type_: str | None) -> None:
        raise NotImplementedError

    def _build(self) -> tuple[dict[str, Any], Usage | None, str | None]:
        """(message, usage, model) from what was fed so far; may be called more than once."""
        raise NotImplementedError

    def _terminal(self, ended_cleanly: bool) -> bool:
        """Whether the stream reached its end (subclasses with softer rules override)."""
        return self.finished

    def _complete_reason(self) -> str | None:
        return None

    def result(self, ended_cleanly: bool) -> StreamResult:
        """The stream's outcome. Call once the stream has ended; never raises."""
        try:
            message, usage, model = self._build()
        except Exception as e:
            log.warning(
                "reconstruct failed: shape=%s error=%s events=%d",
                self.shape,
                type(e).__name__,
                self.events,
            )
            self.failed = True
            message, usage, model = {}, None, None
        if self.error is not None:
            state, reason = ERRORED, "provider_error"
        elif self.failed:
            state, reason = TRUNCATED, "internal_error"
        elif self.unreadable:
            state, reason = TRUNCATED, "unreadable_event"
        elif self._terminal(ended_cleanly):
            state, reason = COMPLETE, self._complete_reason()
        else:
            state, reason = TRUNCATED, "no_terminal_event" if ended_cleanly else "connection_lost"
        return StreamResult(
            message,
            usage,
            state,
            self.error,
            model,
            self.events,
            reason,
            self.lossy,
            list(self.unknown),
        )


def for_shape(shape: str) -> Reconstructor:
    """A new reconstructor for "anthropic", "chat" or "responses" (`Route.shape`).

    Raises ValueError for any other shape.
    """
    if shape == "anthropic":
        from headroom_core.reconstruct.anthropic import AnthropicReconstructor

        return AnthropicReconstructor()
    if shape == "chat":
        from headroom_core.reconstruct.openai_chat import ChatReconstructor

        return ChatReconstructor()
    if shape == "responses":
        from headroom_core.reconstruct.openai_responses import ResponsesReconstructor

        return ResponsesReconstructor()
    raise ValueError(f"no stream reconstructor for shape {shape!r}")
