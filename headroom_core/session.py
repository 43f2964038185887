"""Session identity: which conversation a request belongs to, so per-conversation state stays put.

Client-declared ids (Claude Code, Codex headers and metadata) are high confidence; a hash of the
conversation's stable opening (model, tools, system, first user message) is the low-confidence
fallback. Every id is namespaced by provider and tenant, so two users never share one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

log = logging.getLogger("headroom.session")

Confidence = Literal["high", "low", "none"]

# Claude Code: one id per CLI session; sub-agents (>= 2.1.139) add a stable per-spawn agent id and
# the main agent sends none. Each agent is its own conversation with its own prompt cache.
CLAUDE_SESSION_HEADER = b"x-claude-code-session-id"
CLAUDE_AGENT_HEADER = b"x-claude-code-agent-id"

# Codex, most specific first. Recent versions send both spellings of each (openai/codex#21757);
# older ones sent `conversation_id` and `session_id` with the same value. A thread is one
# conversation; a session can span the sub-agent threads it spawns.
OPENAI_ID_HEADERS: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("header:thread-id", (b"thread-id", b"thread_id")),
    ("header:conversation_id", (b"conversation_id", b"conversation-id")),
    ("header:session-id", (b"session-id", b"session_id")),
)

_ID_HEADERS = frozenset({CLAUDE_SESSION_HEADER, CLAUDE_AGENT_HEADER,
                         *(n for _, names in OPENAI_ID_HEADERS for n in names)})

BILLING_PREFIX = "x-anthropic-billing-header:"
ID_HEX_CHARS = 32  # 128 bits: collisions are not a practical concern

# `user_<hex>_account_<uuid or empty>_session_<uuid>` (Claude Code before 2.1.78)
_LEGACY_USER_ID = re.compile(r"user_[^_]*_account_[^_]*_session_([A-Za-z0-9-]+)")
_MAX_RAW_ID = 256
_PREAMBLE_ROLES = ("system", "developer")


@dataclass(frozen=True, slots=True)
class SessionId:
    id: str | None  # namespaced hex id, or None when nothing identifies the conversation
    source: str  # where it came from: "header:…", "body:…", "content" or "none"
    confidence: Confidence

    @property
    def high_confidence(self) -> bool:
        return self.confidence == "high" and self.id is not None


NONE = SessionId(None, "none", "none")


@functools.lru_cache(maxsize=4096)  # pure, and asked again on every turn of a session
def namespaced_id(provider: str, tenant: str, source: str, raw: str) -> str:
    """Hash a raw id under its provider, tenant and source (length-prefixed, so unambiguous)."""
    h = hashlib.sha256()
    for part in (provider, tenant, source, raw):
        b = part.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.hexdigest()[:ID_HEX_CHARS]


def identify(
    provider: str,
    fields: Iterable[tuple[bytes, bytes]],
    body: dict | None,
    tenant: str,
) -> SessionId:
    """The session a request belongs to. Never raises: malformed input falls to the next source."""
    try:
        headers = _first_values(fields)
    except Exception:
        headers = {}
    return _identify(provider, headers, body, tenant)


def identify_index(provider: str, index: Mapping[bytes, list[bytes]], body: dict | None,
                   tenant: str) -> SessionId:
    """`identify` from a header index (`headers.Index`)."""
    try:
        headers = {n: index[n][0].decode("latin-1").strip() for n in _ID_HEADERS if n in index}
    except Exception:
        headers = {}
    return _identify(provider, headers, body, tenant)


def _identify(provider: str, headers: dict[bytes, str], body: dict | None,
              tenant: str) -> SessionId:
    if not isinstance(body, dict):
        body = None

    steps = (_claude_code,) if provider == "anthropic" else (_codex,) if provider == "openai" else ()
    for step in steps:
        try:
            found = step(headers, body)
        except Exception:
            log.debug("session step %s failed", step.__name__, exc_info=True)
            continue
        if found is not None:
            source, raw = found
            return SessionId(namespaced_id(provider, tenant, source, raw), source, "high")

    try:
        seed = content_seed(body) if body is not None else None
    except Exception:
        log.debug("content seed failed", exc_info=True)
        seed = None
    if seed is None:
        return NONE
    raw = hashlib.sha256(seed).hexdigest()
    return SessionId(namespaced_id(provider, tenant, "content", raw), "content", "low")


# --- declared ids ---------------------------------------------------------------------------


def _first_values(fields: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """First value of each session-identifying header (this runs on every request: only those
    names are decoded)."""
    out: dict[bytes, str] = {}
    for name, value in fields:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            continue  # not a wire header; ignore rather than guess
        n = name.lower()
        if n in _ID_HEADERS and n not in out:
            out[n] = value.decode("latin-1").strip()
    return out


def _valid_raw(value: Any) -> str | None:
    """A usable raw id: a non-empty printable string of sane length."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _MAX_RAW_ID or not value.isprintable():
        return None
    return value


def _claude_code(headers: dict[bytes, str], body: dict | None) -> tuple[str, str] | None:
    found: tuple[str, str] | None = None
    sid = _valid_raw(headers.get(CLAUDE_SESSION_HEADER))
    if sid is not None:
        found = ("header:x-claude-code-session-id", sid)
    elif body is not None:
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            sid = metadata_session_id(metadata.get("user_id"))
            if sid is not None:
                found = ("body:metadata.user_id", sid)
    if found is None:
        return None
    agent = _valid_raw(headers.get(CLAUDE_AGENT_HEADER))
    if agent is not None:
        # Sub-agents share the CLI session id but not the conversation (nor its model or betas).
        return found[0], f"{found[1]}\x1fagent:{agent}"
    return found


def metadata_session_id(user_id: Any) -> str | None:
    """The session id inside Claude Code's `metadata.user_id` (JSON-string or legacy form)."""
    if not isinstance(user_id, str):
        return None
    text = user_id.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return _valid_raw(obj.get("session_id"))
        return None
    m = _LEGACY_USER_ID.fullmatch(text)
    return _valid_raw(m.group(1)) if m else None


def _codex(headers: dict[bytes, str], body: dict | None) -> tuple[str, str] | None:
    for source, names in OPENAI_ID_HEADERS:
        for name in names:
            value = _valid_raw(headers.get(name))
            if value is not None:
                return source, value
    if body is not None:
        key = _valid_raw(body.get("prompt_cache_key"))
        if key is not None:
            return "body:prompt_cache_key", key
    return None


# --- content seed ---------------------------------------------------------------------------


def content_seed(body: dict) -> bytes | None:
    """Canonical bytes of a conversation's stable opening, or None without a user message.

    Only what every turn repeats unchanged goes in: model, tools, system/instructions, the
    system/developer preamble and the *first* user message (Claude Code appends
    `<system-reminder>` blocks to later user turns only). Volatile parts are removed first: the
    per-request billing-header block and `cache_control` markers, which move between turns.
    """
    items = body.get("messages")
    if not isinstance(items, list):
        items = body.get("input")
    preamble: list[Any] = []
    first_user: Any = None
    if isinstance(items, str):  # Responses: `input` as a bare string is the user message
        first_user = items
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict) or item.get("type", "message") != "message":
                continue
            role = item.get("role")
            if role == "user":
                first_user = _strip_blocks(item.get("content"))
                break
            if role in _PREAMBLE_ROLES:
                preamble.append([role, _strip_blocks(item.get("content"))])
    if first_user in (None, "", []):
        return None

    tools = body.get("tools")
    if isinstance(tools, list):
        tools = [_without_cache_control(t) for t in tools]
    seed = {
        "model": body.get("model"),
        "tools": tools,
        "system": _strip_system(body.get("system")),
        "instructions": body.get("instructions"),
        "preamble": preamble,
        "user": first_user,
    }
    return canonical(seed)


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON. The stdlib handles what orjson refuses (huge ints, odd keys)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _strip_blocks(content: Any) -> Any:
    """Drop `cache_control` from typed content blocks, recursing into nested `content` lists
    (tool_result); it is left alone anywhere else, e.g. inside a tool's input."""
    if not isinstance(content, list):
        return content
    out = []
    for block in content:
        if isinstance(block, dict) and "type" in block:
            block = _without_cache_control(block)
            if isinstance(block.get("content"), list):
                block = {**block, "content": _strip_blocks(block["content"])}
        out.append(block)
    return out


def _drop_billing_line(text: str) -> str | None:
    """Claude Code's billing line changes every request; drop it, keep any text after it."""
    if not text.lstrip().startswith(BILLING_PREFIX):
        return text
    rest = text.lstrip().partition("\n")[2]
    return rest if rest.strip() else None


def _strip_system(system: Any) -> Any:
    if isinstance(system, str):
        return _drop_billing_line(system) or ""
    if not isinstance(system, list):
        return system
    out = []
    for block in _strip_blocks(system):
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            text = _drop_billing_line(block["text"])
            if text is None:
                continue
            if text is not block["text"]:
                block = {**block, "text": text}
        out.append(block)
    return out
