"""Where tool outputs sit in a request body, which are in the live zone, and per-tool policy.

The live zone is the part of the conversation the provider has not seen yet (the tool outputs after
the model's last output): the only place a new rewrite cannot bust the prompt cache. Earlier tool
outputs are listed too, because the ledger may have to replay an earlier rewrite of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from headroom_core.jsonspan import Path

SHAPES = ("anthropic", "chat", "responses", "responses_ws")

# Tools whose output is file content the agent later edits against (exact text matters):
# Claude Code's file tools and Codex's read_file.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "Read", "Edit", "Write", "MultiEdit", "NotebookEdit", "NotebookRead", "read_file",
)
DEFAULT_ERROR_LIMIT = 32 * 1024

_OUTPUT_ITEMS = ("function_call_output", "custom_tool_call_output")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One tool-output string literal: where it is, what it says, who produced it."""

    path: Path  # keys/indices of the string in the parsed document
    text: str  # its parsed value
    tool: str | None  # tool name, None when no call in sight names it
    call_id: str | None  # tool_use_id / tool_call_id / call_id tying it to its call
    live: bool  # in the live zone (never sent to the provider before)
    index: int  # message index (anthropic, chat) or input item index (responses)
    block: int | None  # content block index within the message (anthropic only)
    part: int | None  # index within a list-shaped tool output, None for a plain string
    is_error: bool = False  # Anthropic tool_result with is_error: true


def tool_allowed(
    tool: str | None, include: Sequence[str] | None = None, exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> bool:
    """Whether a tool's output may be compressed: in `include` (when given), not in `exclude`.

    Patterns are fnmatch-style and case-sensitive (tool names are). An unknown tool (None) is
    allowed unless an include list is set, since it cannot match one.
    """
    if tool is None:
        return include is None
    if include is not None and not any(fnmatchcase(tool, p) for p in include):
        return False
    return not any(fnmatchcase(tool, p) for p in exclude)


def candidates(
    shape: str, doc: Any, *, tool_names: Mapping[str, str] | None = None
) -> list[Candidate]:
    """Every tool-output string literal of a parsed request body, in document order.

    `tool_names` (call_id -> name) fills in names the document does not carry (the WebSocket
    shape, where the naming function_call was in the server's previous response). Anything not
    shaped as expected yields no candidates rather than an error.
    """
    if not isinstance(doc, dict):
        return []
    if shape == "anthropic":
        return _anthropic(doc)
    if shape == "chat":
        return _chat(doc)
    if shape in ("responses", "responses_ws"):
        return _responses(doc, tool_names or {})
    return []


def _last_index(items: list, pred) -> int:
    for i in range(len(items) - 1, -1, -1):
        if pred(items[i]):
            return i
    return -1


def _is_assistant(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") == "assistant"


def _anthropic(doc: dict) -> list[Candidate]:
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return []
    # Everything after the model's last turn is new to the provider. Normally that is just the
    # newest user message; consecutive user messages (an interrupted turn) are covered the same way.
    return anthropic_candidates(messages, last_assistant=_last_index(messages, _is_assistant))


def last_assistant(messages: Sequence, start: int = 0) -> int:
    """Index (counted from `start`) of the last assistant message, or -1."""
    i = _last_index(messages, _is_assistant)
    return i + start if i >= 0 else -1


def tool_uses(msg: Any) -> list[tuple[str, str]]:
    """(id, name) of every tool_use block of an Anthropic message, in order."""
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return []
    return [(b["id"], b["name"]) for b in content
            if isinstance(b, dict) and b.get("type") == "tool_use"
            and isinstance(b.get("id"), str) and isinstance(b.get("name"), str)]


def anthropic_candidates(messages: Sequence, *, last_assistant: int, start: int = 0,
                         names: dict[str, str] | None = None,
                         per_message: list[list[tuple[str, str]]] | None = None
                         ) -> list[Candidate]:
    """The candidates of Anthropic `messages`, numbered from `start` (a tail of a conversation
    whose earlier tool_use names are in `names`, which this updates). `per_message` gets, for
    each message, what `tool_uses` gives for it."""
    names = {} if names is None else names
    out: list[Candidate] = []
    for k, msg in enumerate(messages):
        i = start + k
        uses: list[tuple[str, str]] = []
        if per_message is not None:
            per_message.append(uses)
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if not isinstance(content, list):
            continue
        live = i > last_assistant and msg.get("role") == "user"
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "tool_use":
                if isinstance(block.get("id"), str) and isinstance(block.get("name"), str):
                    names[block["id"]] = block["name"]
                    uses.append((block["id"], block["name"]))
                continue
            # Only client tool results: server tool results, thinking, text typed by the user,
            # images and documents are never candidates.
            if btype != "tool_result":
                continue
            use_id = block.get("tool_use_id")
            call_id = use_id if isinstance(use_id, str) else None
            tool = names.get(call_id) if call_id is not None else None
            is_error = block.get("is_error") is True
            base = ("messages", i, "content", j, "content")
            body = block.get("content")
            if isinstance(body, str):
                out.append(Candidate(base, body, tool, call_id, live, i, j, None, is_error))
            elif isinstance(body, list):
                for k2, part in enumerate(body):
                    if isinstance(part, dict) and part.get("type") == "text" \
                            and isinstance(part.get("text"), str):
                        out.append(Candidate((*base, k2, "text"), part["text"], tool, call_id,
                                             live, i, j, k2, is_error))
    return out


def _chat(doc: dict) -> list[Candidate]:
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return []
    names: dict[str, str] = {}
    out: list[Candidate] = []
    last_assistant = _last_index(messages, _is_assistant)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "assistant":
            calls = msg.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                        continue
                    fn = call.get("function") or call.get("custom")
                    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                        names[call["id"]] = fn["name"]
            continue
        if role != "tool":
            continue
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str):
            call_id = None
        tool = names.get(call_id) if call_id is not None else None
        live = i > last_assistant
        content = msg.get("content")
        if isinstance(content, str):
            out.append(Candidate(("messages", i, "content"), content, tool, call_id, live, i, None,
                                 None))
        elif isinstance(content, list):
            for k, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text" \
                        and isinstance(part.get("text"), str):
                    out.append(Candidate(("messages", i, "content", k, "text"), part["text"], tool,
                                         call_id, live, i, None, k))
    return out


def _is_model_item(item: Any) -> bool:
    """A Responses input item the model produced (ends the already-sent part of the input)."""
    if not isinstance(item, dict):
        return False
    itype = item.get("type", "message")
    if itype == "message":
        return item.get("role") == "assistant"
    # function_call, custom_tool_call, reasoning, local_shell_call, web_search_call,
    # item_reference, compaction, ...: anything but the client's own *_output replies.
    return not (isinstance(itype, str) and (itype.endswith("_output")
                                           or itype == "mcp_approval_response"))


def _responses(doc: dict, tool_names: Mapping[str, str]) -> list[Candidate]:
    items = doc.get("input")
    prefix: Path = ("input",)
    if items is None and isinstance(doc.get("response"), dict):
        # Older response.create envelopes nest the request under "response".
        items = doc["response"].get("input")
        prefix = ("response", "input")
    if not isinstance(items, list):
        return []
    names: dict[str, str] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("call_id"), str):
            itype = item.get("type")
            if itype in ("function_call", "custom_tool_call") and isinstance(item.get("name"), str):
                names[item["call_id"]] = item["name"]
            elif itype == "local_shell_call":
                names[item["call_id"]] = "local_shell"
    # The same rule for WebSocket messages: after a tool call Codex sends only the new items (no
    # model item, so all outputs are live), but a fresh connection resends the whole input, whose
    # earlier outputs were already sent and cached as they were.
    last_model = _last_index(items, _is_model_item)
    out: list[Candidate] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") not in _OUTPUT_ITEMS:
            continue
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            call_id = None
        tool = None
        if call_id is not None:
            tool = names.get(call_id)
            if tool is None:
                supplied = tool_names.get(call_id)
                tool = supplied if isinstance(supplied, str) else None
        live = i > last_model
        base = (*prefix, i, "output")
        output = item.get("output")
        if isinstance(output, str):
            out.append(Candidate(base, output, tool, call_id, live, i, None, None))
        elif isinstance(output, list):
            for k, part in enumerate(output):
                if isinstance(part, dict) and part.get("type") == "input_text" \
                        and isinstance(part.get("text"), str):
                    out.append(Candidate((*base, k, "text"), part["text"], tool, call_id, live, i,
                                         None, k))
    return out
