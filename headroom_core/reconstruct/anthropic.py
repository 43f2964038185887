"""Anthropic Messages streams: rebuild the non-streaming `message` object from SSE events.

Owns the semantics of `message_start` / `content_block_*` / `message_delta` / `message_stop` /
`error`, following the accumulation rules of Anthropic's own SDK so the rebuilt message matches
what the client itself assembled.
"""

from __future__ import annotations

from typing import Any

from headroom_core.reconstruct import Reconstructor, loads_exact
from headroom_core.usage import Usage, from_usage

_MISSING = object()


class _Block:
    """One content block: the `content_block_start` object plus what its deltas appended."""

    __slots__ = ("base", "citations", "json_parts", "parsed_input", "parts")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.parts: dict[str, list[str]] = {}
        self.citations: list[Any] = []
        self.json_parts: list[str] | None = None
        self.parsed_input: Any = _MISSING

    def add(self, name: str, text: str) -> None:
        parts = self.parts.get(name)
        if parts is None:
            self.parts[name] = [text]
        else:
            parts.append(text)

    def parse_input(self) -> tuple[Any, bool]:
        if self.json_parts is None:
            return _MISSING, True
        text = "".join(self.json_parts)
        if not text.strip():
            return {}, True  # a tool called with no arguments streams no JSON at all
        try:
            return loads_exact(text), True
        except Exception:
            return _MISSING, False

    def build(self) -> dict[str, Any]:
        out = dict(self.base)
        for name, parts in self.parts.items():
            prefix = out.get(name)
            out[name] = (prefix if isinstance(prefix, str) else "") + "".join(parts)
        if self.citations:
            prior = out.get("citations")
            out["citations"] = (list(prior) if isinstance(prior, list) else []) + self.citations
        value = self.parsed_input
        if value is _MISSING:
            value, _ = self.parse_input()  # block never stopped (truncated stream): best effort
        if value is not _MISSING:
            out["input"] = value
        return out


class AnthropicReconstructor(Reconstructor):
    """Feed the events of a `POST /v1/messages` stream; `result()` gives the Messages response."""

    shape = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self._message: dict[str, Any] = {}
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}

    def _apply(self, obj: dict[str, Any], type_: str | None) -> None:
        if type_ == "content_block_delta":
            self._delta(obj)
        elif type_ == "ping":
            pass
        elif type_ == "content_block_start":
            index, block = obj.get("index"), obj.get("content_block")
            if type(index) is int and isinstance(block, dict):
                self._blocks[index] = _Block(dict(block))
            else:
                self.lossy = True
        elif type_ == "content_block_stop":
            block = self._block(obj)
            if block is not None and block.json_parts is not None:
                block.parsed_input, ok = block.parse_input()
                if not ok:
                    self.lossy = True
        elif type_ == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._message = dict(message)
                self._merge_usage(message.get("usage"))
        elif type_ == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                for key, value in delta.items():
                    # stop_reason/stop_sequence are set even when null; extras only when present.
                    if value is not None or key in ("stop_reason", "stop_sequence"):
                        self._message[key] = value
            for key, value in obj.items():
                if key not in ("type", "delta", "usage") and value is not None:
                    self._message[key] = value  # e.g. beta `context_management`
            self._merge_usage(obj.get("usage"))
        elif type_ == "message_stop":
            self.finished = True
        elif type_ == "error":
            error = obj.get("error")
            self.error = (
                dict(error) if isinstance(error, dict) else {"type": "error", "message": None}
            )
        else:
            self._note_unknown(str(type_))

    def _block(self, obj: dict[str, Any]) -> _Block | None:
        index = obj.get("index")
        return self._blocks.get(index) if type(index) is int else None

    def _merge_usage(self, usage: Any) -> None:
        # message_delta usage is cumulative; a null or absent figure keeps the message_start value.
        if isinstance(usage, dict):
            for key, value in usage.items():
                if value is not None:
                    self._usage[key] = value

    def _delta(self, obj: dict[str, Any]) -> None:
        block = self._block(obj)
        delta = obj.get("delta")
        if block is None or not isinstance(delta, dict):
            self.lossy = True  # a delta for a block that never started
            return
        kind = delta.get("type")
        if kind == "text_delta":
            self._text(block, "text", delta.get("text"))
        elif kind == "input_json_delta":
            text = delta.get("partial_json")
            if isinstance(text, str):
                if block.json_parts is None:
                    block.json_parts = [text]
                else:
                    block.json_parts.append(text)
            else:
                self.lossy = True
        elif kind == "thinking_delta":
            self._text(block, "thinking", delta.get("thinking"))
        elif kind == "signature_delta":
            block.base["signature"] = delta.get("signature")  # the SDK replaces, so does the client
        elif kind == "citations_delta":
            block.citations.append(delta.get("citation"))
        elif kind == "compaction_delta":
            for key in ("content", "encrypted_content"):
                if key in delta:
                    block.base[key] = delta[key]
        else:
            # Keep what we can (strings appended, other values set) but flag the message as
            # possibly unfaithful: we do not know this delta's semantics.
            self._note_unknown(f"delta:{kind}")
            self.lossy = True
            for key, value in delta.items():
                if key == "type":
                    continue
                if isinstance(value, str) and (
                    key in block.parts or isinstance(block.base.get(key), str)
                ):
                    block.add(key, value)
                else:
                    block.base[key] = value

    def _text(self, block: _Block, name: str, text: Any) -> None:
        if isinstance(text, str):
            block.add(name, text)
        else:
            self.lossy = True

    def _build(self) -> tuple[dict[str, Any], Usage | None, str | None]:
        message = dict(self._message)
        if self._blocks:
            message["content"] = [self._blocks[i].build() for i in sorted(self._blocks)]
        elif message:
            message.setdefault("content", [])
        if self._usage:
            message["usage"] = dict(self._usage)
        model = message.get("model")
        return (
            message,
            from_usage("anthropic", self._usage),
            model if isinstance(model, str) else None,
        )
