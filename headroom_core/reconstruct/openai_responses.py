"""OpenAI Responses streams (api.openai.com and the Codex ChatGPT backend): rebuild the `response`.

Owns the semantics of the `response.*` events, over SSE or as WebSocket JSON messages (keyed by
their JSON `type`). The `response` object of the terminal event wins; output items are rebuilt
from `output_item.done` and the deltas only where the terminal event does not carry them.
"""

from __future__ import annotations

from typing import Any

from headroom_core.reconstruct import Reconstructor
from headroom_core.usage import Usage, from_usage

_LIFECYCLE = frozenset(("response.created", "response.in_progress", "response.queued"))
_DONE_STATUS = {
    "failed": "response.failed",
    "incomplete": "response.incomplete",
    "cancelled": "response.failed",
}
_TERMINAL = frozenset(
    ("response.completed", "response.failed", "response.incomplete", "response.done")
)

# delta event -> (list in the item, field of the part, index key in the event, default part type)
_PART_DELTAS = {
    "response.output_text.delta": ("content", "text", "content_index", "output_text"),
    "response.refusal.delta": ("content", "refusal", "content_index", "refusal"),
    "response.reasoning_text.delta": ("content", "text", "content_index", "reasoning_text"),
    "response.reasoning_summary_text.delta": ("summary", "text", "summary_index", "summary_text"),
}
# done event -> same, plus the event key holding the full value
_PART_DONES = {
    "response.output_text.done": ("content", "text", "content_index", "output_text", "text"),
    "response.refusal.done": ("content", "refusal", "content_index", "refusal", "refusal"),
    "response.reasoning_text.done": ("content", "text", "content_index", "reasoning_text", "text"),
    "response.reasoning_summary_text.done": (
        "summary",
        "text",
        "summary_index",
        "summary_text",
        "text",
    ),
}
# part added/done event -> (list in the item, index key)
_PARTS = {
    "response.content_part.added": ("content", "content_index"),
    "response.content_part.done": ("content", "content_index"),
    "response.reasoning_summary_part.added": ("summary", "summary_index"),
    "response.reasoning_summary_part.done": ("summary", "summary_index"),
}
# item-level string fields streamed as deltas: delta event -> field;
# done event -> (field, event key holding the full value)
_ITEM_DELTAS = {
    "response.function_call_arguments.delta": "arguments",
    "response.custom_tool_call_input.delta": "input",
    "response.mcp_call_arguments.delta": "arguments",
    "response.code_interpreter_call_code.delta": "code",
}
_ITEM_DONES = {
    "response.function_call_arguments.done": ("arguments", "arguments"),
    "response.custom_tool_call_input.done": ("input", "input"),
    "response.mcp_call_arguments.done": ("arguments", "arguments"),
    "response.code_interpreter_call_code.done": ("code", "code"),
}

PartKey = tuple[int, str, int]  # (output_index, "content" | "summary", part index)


class _Part:
    __slots__ = ("annotations", "base", "done", "field", "final", "parts")

    def __init__(self, base: dict[str, Any], field: str | None = None) -> None:
        self.base = base
        self.field = field
        self.parts: list[str] = []
        self.final: str | None = None  # full text from a `*.done` event
        self.annotations: list[Any] = []
        self.done = False  # `content_part.done` carried the whole part

    def build(self) -> dict[str, Any]:
        out = dict(self.base)
        if self.done:
            return out
        if self.field is not None:
            if self.final is not None:
                out[self.field] = self.final
            elif self.parts:
                prefix = out.get(self.field)
                out[self.field] = (prefix if isinstance(prefix, str) else "") + "".join(self.parts)
        if self.annotations:
            prior = out.get("annotations")
            out["annotations"] = (list(prior) if isinstance(prior, list) else []) + self.annotations
        return out


class ResponsesReconstructor(Reconstructor):
    """Feed the events of a Responses stream; `result()` gives the `response` object.

    Complete: `response.completed`, or `response.incomplete` (the provider's final answer, cut by
    `max_output_tokens` or a content filter, exactly as a non-streamed call would return it; the
    reason goes to `StreamResult.reason` as "incomplete:<reason>"). Errored: `response.failed` or
    an `error` event. A WebSocket adapter should start a new reconstructor once `finished` is set.
    """

    shape = "responses"

    def __init__(self) -> None:
        super().__init__()
        self._response: dict[str, Any] | None = None
        self._terminal_response: dict[str, Any] | None = None
        self._incomplete: str | None = None
        self._items: dict[int, dict[str, Any]] = {}
        self._done_items: set[int] = set()
        self._ids: dict[str, int] = {}
        self._parts: dict[PartKey, _Part] = {}
        self._item_text: dict[tuple[int, str], list[str]] = {}
        self._item_final: dict[tuple[int, str], str] = {}

    def _apply(self, obj: dict[str, Any], type_: str | None) -> None:
        if type_ in _PART_DELTAS:
            lst, field, index_key, default = _PART_DELTAS[type_]
            part = self._part(obj, lst, index_key, default, field)
            delta = obj.get("delta")
            if part is not None and isinstance(delta, str):
                part.parts.append(delta)
            else:
                self.lossy = True
        elif type_ in _ITEM_DELTAS:
            oi = self._index(obj)
            delta = obj.get("delta")
            if oi is not None and isinstance(delta, str):
                self._item_text.setdefault((oi, _ITEM_DELTAS[type_]), []).append(delta)
            else:
                self.lossy = True
        elif type_ in _PART_DONES:
            lst, field, index_key, default, key = _PART_DONES[type_]
            part = self._part(obj, lst, index_key, default, field)
            value = obj.get(key)
            if part is not None and isinstance(value, str):
                part.final = value
        elif type_ in _ITEM_DONES:
            field, key = _ITEM_DONES[type_]
            oi = self._index(obj)
            value = obj.get(key)
            if oi is not None and isinstance(value, str):
                self._item_final[(oi, field)] = value
        elif type_ == "response.output_item.added" or type_ == "response.output_item.done":
            oi, item = obj.get("output_index"), obj.get("item")
            if type(oi) is not int or not isinstance(item, dict):
                self.lossy = True
                return
            self._items[oi] = dict(item)
            if isinstance(item.get("id"), str):
                self._ids[item["id"]] = oi
            if type_ == "response.output_item.done":
                self._done_items.add(oi)
        elif type_ in _PARTS:
            lst, index_key = _PARTS[type_]
            oi, idx, base = self._index(obj), obj.get(index_key), obj.get("part")
            if oi is None or type(idx) is not int or not isinstance(base, dict):
                self.lossy = True
                return
            key = (oi, lst, idx)
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = _Part(dict(base), "text" if "text" in base else None)
            elif type_.endswith(".added"):
                part.base = dict(base)
            if type_.endswith(".done"):
                part.base, part.done = dict(base), True
        elif type_ == "response.output_text.annotation.added":
            part = self._part(obj, "content", "content_index", "output_text", "text")
            if part is not None:
                part.annotations.append(obj.get("annotation"))
        elif type_ in _LIFECYCLE:
            response = obj.get("response")
            if isinstance(response, dict):
                self._response = response
        elif type_ in _TERMINAL:
            self._finish(type_, obj.get("response"))
        elif type_ == "error":
            self.error = _error(obj)
        else:
            # Progress markers (web_search_call.searching, ...) and deltas whose item arrives
            # whole in output_item.done: nothing to rebuild from them.
            self._note_unknown(str(type_))

    def _finish(self, type_: str, response: Any) -> None:
        if not isinstance(response, dict):
            response = dict(self._response or {})
        self._terminal_response = response
        self.finished = True
        status = response.get("status")
        if type_ == "response.done":
            # Realtime-style single terminal event: its status says how it ended.
            type_ = _DONE_STATUS.get(status if isinstance(status, str) else "", "response.completed")
        if type_ == "response.failed":
            error = response.get("error")
            self.error = (
                dict(error)
                if isinstance(error, dict)
                else {"type": "response.failed", "status": status}
            )
        elif type_ == "response.incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self._incomplete = f"incomplete:{reason or 'unknown'}"

    def _index(self, obj: dict[str, Any]) -> int | None:
        oi = obj.get("output_index")
        if type(oi) is int:
            return oi
        item_id = obj.get("item_id")
        return self._ids.get(item_id) if isinstance(item_id, str) else None

    def _part(
        self, obj: dict[str, Any], lst: str, index_key: str, default: str, field: str
    ) -> _Part | None:
        oi, idx = self._index(obj), obj.get(index_key)
        if oi is None or type(idx) is not int:
            return None
        key = (oi, lst, idx)
        part = self._parts.get(key)
        if part is None:
            # A delta without its `part.added` (some servers skip it): start from an empty part.
            base: dict[str, Any] = {"type": default, field: ""}
            if default == "output_text":
                base["annotations"] = []
            part = self._parts[key] = _Part(base, field)
        elif part.field is None:
            part.field = field
        return part

    def _complete_reason(self) -> str | None:
        return self._incomplete

    def _build_items(self) -> tuple[list[dict[str, Any]], bool]:
        """Output items in order, and whether every one of them was closed by output_item.done."""
        indices = set(self._items)
        indices.update(k[0] for k in self._parts)
        indices.update(k[0] for k in self._item_text)
        indices.update(k[0] for k in self._item_final)
        items = []
        for oi in sorted(indices):
            item = dict(self._items.get(oi) or {})
            if oi not in self._done_items:
                for lst in ("content", "summary"):
                    keys = sorted(k for k in self._parts if k[0] == oi and k[1] == lst)
                    if keys:
                        built = list(item.get(lst)) if isinstance(item.get(lst), list) else []
                        for key in keys:
                            idx = key[2]
                            while len(built) <= idx:
                                built.append(None)
                            built[idx] = self._parts[key].build()
                        item[lst] = [p for p in built if p is not None]
                for (i, field), parts in self._item_text.items():
                    if i == oi:
                        item[field] = "".join(parts)
                for (i, field), value in self._item_final.items():
                    if i == oi:
                        item[field] = value
            items.append(item)
        return items, indices <= self._done_items

    def _build(self) -> tuple[dict[str, Any], Usage | None, str | None]:
        if self._terminal_response is not None:
            message = dict(self._terminal_response)
        else:
            message = dict(self._response or {})
        items, all_done = self._build_items()
        if items and not message.get("output"):
            # The Codex backend may close with `output: []`; the items came as output_item.done.
            message["output"] = items
            if self.finished and self.error is None and not all_done:
                self.lossy = (
                    True  # the final text of an item never closed may lack annotations etc.
                )
        model = message.get("model")
        return (
            message,
            from_usage("responses", message.get("usage")),
            model if isinstance(model, str) else None,
        )


def _error(obj: dict[str, Any]) -> dict[str, Any]:
    error = obj.get("error")
    if isinstance(error, dict):
        out = dict(error)
    else:
        out = {k: obj[k] for k in ("code", "message", "param") if k in obj}
    if "status" in obj and "status" not in out:
        out["status"] = obj["status"]  # Codex WebSocket errors carry the HTTP status alongside
    return out or {"type": "error"}
