"""OpenAI Chat Completions streams: rebuild the non-streaming `chat.completion` from its chunks.

Owns the merge of `chat.completion.chunk` deltas (content, refusal, tool calls keyed by index,
several choices, logprobs), the trailing usage chunk, `[DONE]` and in-stream `error` objects.
"""

from __future__ import annotations

from typing import Any

from headroom_core.reconstruct import Reconstructor
from headroom_core.usage import Usage, from_usage

# Identity fields are repeated verbatim by some servers; concatenating them would corrupt them.
_REPLACED = frozenset(("index", "type", "role", "id"))


class _Text(list):
    """Fragments of a string value, joined once at the end (linear, unlike repeated `+=`)."""


class _Indexed(dict):
    """Entries of a list streamed by `index` (tool_calls), merged per index."""


def _merge(acc: dict[str, Any], delta: dict[str, Any]) -> None:
    """Merge a streamed delta into an accumulator: strings append, objects merge recursively,
    lists of `{"index": n, ...}` merge per index, other lists extend, other values replace."""
    for key, value in delta.items():
        cur = acc.get(key)
        if isinstance(value, str):
            if key in _REPLACED:
                acc[key] = value
            elif isinstance(cur, _Text):
                cur.append(value)
            else:
                acc[key] = _Text((value,))
        elif isinstance(value, dict):
            if type(cur) is not dict:
                cur = acc[key] = {}
            _merge(cur, value)
        elif isinstance(value, list):
            if value and all(isinstance(e, dict) and type(e.get("index")) is int for e in value):
                if not isinstance(cur, _Indexed):
                    cur = acc[key] = _Indexed()
                for entry in value:
                    sub = cur.get(entry["index"])
                    if sub is None:
                        sub = cur[entry["index"]] = {}
                    _merge(sub, entry)
            elif type(cur) is list:
                cur.extend(value)
            elif not (isinstance(cur, _Indexed) and not value):
                acc[key] = list(value)
        elif value is None:
            # A null never erases what earlier chunks built (`content: null` beside tool calls).
            acc.setdefault(key, None)
        else:
            acc[key] = value


def _final(value: Any) -> Any:
    if isinstance(value, _Text):
        return "".join(value)
    if isinstance(value, _Indexed):
        return [_final(value[i]) for i in sorted(value)]
    if isinstance(value, dict):
        return {k: _final(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_final(v) for v in value]
    return value


class ChatReconstructor(Reconstructor):
    """Feed the events of a `POST /v1/chat/completions` stream; `result()` gives the completion.

    Complete means `data: [DONE]` was seen, or the HTTP stream ended cleanly after every choice
    got a `finish_reason` (servers that omit `[DONE]`; only the optional usage chunk can be
    missing then). An `error` object in a chunk makes the stream "errored".
    """

    shape = "chat"

    def __init__(self) -> None:
        super().__init__()
        self._top: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def _done(self) -> None:
        self.finished = True

    def _apply(self, obj: dict[str, Any], type_: str | None) -> None:
        error = obj.get("error")
        if error is not None:
            self.error = dict(error) if isinstance(error, dict) else {"message": str(error)}
            return
        for key, value in obj.items():
            if key == "choices":
                if isinstance(value, list):
                    for choice in value:
                        self._choice(choice)
                else:
                    self.lossy = True
            elif key == "usage":
                if isinstance(value, dict):
                    self._usage = value
            elif key in ("object", "obfuscation"):
                pass  # the chunk's own type and per-chunk padding have no place in a completion
            elif value is not None:
                self._top[key] = value

    def _choice(self, choice: Any) -> None:
        index = choice.get("index") if isinstance(choice, dict) else None
        if type(index) is not int:
            self.lossy = True
            return
        acc = self._choices.get(index)
        if acc is None:
            acc = self._choices[index] = {
                "index": index,
                "message": {},
                "logprobs": None,
                "finish_reason": None,
            }
        for key, value in choice.items():
            if key == "delta":
                if isinstance(value, dict):
                    _merge(acc["message"], value)
            elif key == "logprobs":
                if isinstance(value, dict):
                    if type(acc["logprobs"]) is not dict:
                        acc["logprobs"] = {}
                    _merge(acc["logprobs"], value)
            elif key != "index" and value is not None:
                acc[key] = value

    def _terminal(self, ended_cleanly: bool) -> bool:
        if self.finished:
            return True
        return (
            ended_cleanly
            and bool(self._choices)
            and all(c.get("finish_reason") is not None for c in self._choices.values())
        )

    def _build(self) -> tuple[dict[str, Any], Usage | None, str | None]:
        if not self._top and not self._choices and self._usage is None:
            return {}, None, None
        choices = []
        for i in sorted(self._choices):
            choice = _final(self._choices[i])
            for call in choice["message"].get("tool_calls") or ():
                if isinstance(call, dict):
                    call.pop(
                        "index", None
                    )  # a streaming artefact: the completion lists calls in order
            choices.append(choice)
        top = self._top
        message: dict[str, Any] = {
            "id": top.get("id"),
            "object": "chat.completion",
            "created": top.get("created"),
            "model": top.get("model"),
            "choices": choices,
        }
        if self._usage is not None:
            message["usage"] = self._usage
        for key, value in top.items():
            message.setdefault(key, value)
        model = top.get("model")
        return message, from_usage("chat", self._usage), model if isinstance(model, str) else None
