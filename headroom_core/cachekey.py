"""The canonical form of a model-API request and its store key.

Everything that shapes the answer goes into the key (unknown body fields included); volatile noise
is removed by an explicit, per-provider list of JSON paths. Computed on the request as the client
sent it, before any Headroom rewriting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson

log = logging.getLogger("headroom.cachekey")

VERSION = 1  # bump when the canonical form changes: old keys must stop matching

# Header fields that shape the answer. Values are comma-separated token lists; a beta's *order*
# does not change what the API does, so tokens are trimmed, de-duplicated and sorted.
KEY_HEADERS = (b"anthropic-version", b"anthropic-beta", b"openai-beta")

BILLING_PREFIX = "x-anthropic-billing-header:"

# Volatile fields removed before keying (path syntax: see `parse_path`). Anything not listed counts.
DEFAULT_EXCLUDE: dict[str, tuple[str, ...]] = {
    "anthropic": (
        "metadata.user_id",  # carries the account and a per-session uuid
        "diagnostics",  # Claude Code: previous_message_id, new every turn
    ),
    "openai": (
        "user",
        "safety_identifier",
        "client_metadata",  # Codex
        "prompt_cache_key",  # a routing hint (Codex puts the session uuid here)
    ),
}

# 19+ digit runs may be integers beyond 64 bits, which orjson silently turns into floats. Found
# by mapping every digit to "0" and searching: several times faster than a regex on big bodies.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_LONG_RUN = b"0" * 19

# Deeper bodies are keyed as raw bytes. orjson serialises at most this many levels.
MAX_DEPTH = 254

JSON = Any
Step = str | int | None  # key, list index, or None for "[*]" (every element)


# --- JSON in and out -------------------------------------------------------------------------


def _finite_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise ValueError("non-finite number")
    return f


def _reject_constant(s: str) -> Any:
    raise ValueError(f"not JSON: {s}")


def _parse(data: bytes) -> tuple[JSON, bool]:
    if _LONG_RUN not in data.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass  # maybe a lone surrogate escape, which the stdlib accepts
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant), False
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {e}") from None


def parse_json(data: bytes) -> JSON:
    """Parse JSON exactly: orjson when it is exact, else the stdlib (big ints, lone surrogates).

    Raises ValueError on anything that is not strict JSON (NaN, Infinity, 1e400, bad UTF-8).
    """
    return _parse(data)[0]


def _depth(node: JSON, limit: int) -> bool:
    """True when `node` nests no deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if isinstance(n, dict | list):
            if d > limit:
                return False
            stack.extend((c, d + 1) for c in (n.values() if isinstance(n, dict) else n))
    return True


def dumps(obj: JSON) -> bytes:
    """Deterministic compact JSON (sorted keys). The stdlib takes over for what orjson refuses;
    which one runs depends only on the data, so equal data always gives equal bytes."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: integer beyond 64 bits or a lone surrogate
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")


# --- exclusion paths -------------------------------------------------------------------------

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[(?:\d+|\*)\])*)")
_INDEX = re.compile(r"\[(\d+|\*)\]")


@lru_cache(maxsize=256)
def parse_path(path: str) -> tuple[Step, ...]:
    """`metadata.user_id`, `tools[0].x`, `messages[*].content[*].citations` -> steps.

    Dot-separated object keys, each optionally followed by `[N]` (one element) or `[*]` (every
    element). Keys containing `.`, `[` or `]` cannot be addressed. Raises ValueError.
    """
    steps: list[Step] = []
    if not path or path != path.strip():
        raise ValueError(f"invalid JSON path {path!r}")
    for part in path.split("."):
        m = _SEGMENT.fullmatch(part)
        if not m:
            raise ValueError(f"invalid JSON path {path!r}")
        steps.append(m.group(1))
        for idx in _INDEX.findall(m.group(2)):
            steps.append(None if idx == "*" else int(idx))
    return tuple(steps)


def _remove(node: JSON, steps: Sequence[Step]) -> None:
    step, rest = steps[0], steps[1:]
    if isinstance(step, str):
        if isinstance(node, dict) and step in node:
            if rest:
                _remove(node[step], rest)
            else:
                del node[step]
    elif isinstance(node, list):
        if step is None:
            if rest:
                for item in node:
                    _remove(item, rest)
            else:
                node.clear()
        elif step < len(node):
            if rest:
                _remove(node[step], rest)
            else:
                del node[step]


def _strip_billing(body: dict) -> None:
    # Claude Code's billing line changes on every request; it sits alone in a system block or
    # as the first line of one. Only that line goes.
    system = body.get("system")
    if isinstance(system, str):
        if system.startswith(BILLING_PREFIX):
            body["system"] = system.partition("\n")[2]
        return
    if not isinstance(system, list):
        return
    kept = []
    for block in system:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text.startswith(BILLING_PREFIX):
                rest = text.partition("\n")[2]
                if not rest.strip():
                    continue
                block["text"] = rest
        kept.append(block)
    body["system"] = kept


def _strip_block_cache_control(block: JSON) -> None:
    if not isinstance(block, dict):
        return
    block.pop("cache_control", None)
    # tool_result / search_result blocks nest content blocks that may carry their own breakpoint.
    inner = block.get("content")
    if isinstance(inner, list):
        for b in inner:
            if isinstance(b, dict) and "type" in b:
                _strip_block_cache_control(b)


def _strip_cache_control(body: dict) -> None:
    # Breakpoints move from turn to turn without changing the answer. Only annotation positions
    # are touched: tool input_schema / tool_use input content is data and keeps the name.
    system = body.get("system")
    if isinstance(system, list):
        for block in system:
            _strip_block_cache_control(block)
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                tool.pop("cache_control", None)
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict) and isinstance(msg.get("content"), list):
                for block in msg["content"]:
                    _strip_block_cache_control(block)


# --- the canonical request -------------------------------------------------------------------


# `headroom_store_exclude` paths under this prefix name request headers, not body fields.
HEADER_PATH = "headers."


def header_exclusions(paths: Iterable[str]) -> frozenset[bytes]:
    """The header names `headers.NAME` paths leave out of the key (lower case)."""
    return frozenset(p[len(HEADER_PATH):].strip().lower().encode("latin-1") for p in paths
                     if p[:len(HEADER_PATH)].lower() == HEADER_PATH)


def _key_headers(fields: Iterable[tuple[bytes, bytes]],
                 drop: frozenset[bytes] = frozenset()) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for name, value in fields:
        n = name.lower()
        if n in KEY_HEADERS and n not in drop:
            tokens = out.setdefault(n.decode("ascii"), set())
            tokens.update(t.strip() for t in value.decode("latin-1").split(","))
            tokens.discard("")
    return {n: sorted(t) for n, t in out.items() if t}


# Query parameters that may carry credentials (gateways accept `?key=`, `?api-key=`, `?token=`,
# `?accessToken=`, `?sig=`...): their values count for the key but are never kept as such in a
# stored canonical request. Matched anywhere in the name, in any case or spelling: a harmless
# name caught by mistake only has its value shown as a hash.
_SECRET_PARAM = re.compile(
    r"key|token|secret|sig|pass|pwd|auth|credential|jwt|bearer|session|cookie|code|sas",
    re.IGNORECASE)


def _query_value(name: str, value: str) -> str:
    if _SECRET_PARAM.search(name):
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value


def canonical_request(
    *,
    provider: str,
    endpoint: str,
    method: str,
    host: str,
    path: str,
    fields: Iterable[tuple[bytes, bytes]],
    body: bytes,
    tenant: str,
    extra_exclude: Iterable[str] = (),
) -> dict:
    """The canonical form of a request (a JSON-able dict); `request_key` hashes it.

    `body` is the decoded body; anything that is not strict JSON is represented by its hash.
    `extra_exclude` paths (see `parse_path`) are removed from the body besides `DEFAULT_EXCLUDE`;
    validate them with `parse_path` at configuration time: invalid ones are skipped here.
    `headers.NAME` removes a key header instead (`headers.anthropic-version`: recordings survive
    an SDK upgrade); only `KEY_HEADERS` are ever keyed, so other names change nothing.
    Never raises.
    """
    extra_exclude = tuple(extra_exclude)
    dropped = header_exclusions(extra_exclude) if extra_exclude else frozenset()
    p, _, q = path.partition("?")
    canon: dict[str, Any] = {
        "v": VERSION,
        "tenant": tenant,
        "provider": provider,
        "endpoint": endpoint,
        "method": method.upper(),
        "host": host.lower().rstrip("."),
        "path": p,
        "query": sorted([k, _query_value(k, v)] for k, v in parse_qsl(q, keep_blank_values=True)),
        "headers": _key_headers(fields, dropped),
        "stream": False,
    }
    body = body or b""
    try:
        parsed, exact = _parse(body)
        # Bound the nesting so serialising, summarising and diffing can never hit a recursion
        # limit. orjson refuses to serialise deeper than MAX_DEPTH, which makes the check cheap.
        if exact:
            orjson.dumps(parsed)
        elif not _depth(parsed, MAX_DEPTH):
            raise ValueError("too deep")
    except (ValueError, TypeError):
        canon["body_raw"] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
        return canon
    if isinstance(parsed, dict):
        # Absent and false mean the same; the flag lives outside the body so a streamed and a
        # buffered request never share a key, whatever the body looks like.
        if isinstance(parsed.get("stream"), bool):
            canon["stream"] = parsed.pop("stream")
        if provider == "anthropic":
            _strip_billing(parsed)
            _strip_cache_control(parsed)
        paths = list(DEFAULT_EXCLUDE.get(provider, ()))
        paths.extend(x for x in extra_exclude if x[:len(HEADER_PATH)].lower() != HEADER_PATH)
        for spec in paths:
            try:
                _remove(parsed, parse_path(spec))
            except ValueError:
                log.warning("ignoring invalid exclude path %r", spec)
    canon["body"] = parsed
    return canon


def canonical_bytes(canonical: dict) -> bytes:
    """The exact bytes that are hashed: deterministic across processes and Python versions."""
    return dumps(canonical)


def request_key(canonical: dict) -> str:
    """64 hex digits: SHA-256 of `canonical_bytes` (hardware-accelerated on most CPUs)."""
    return hashlib.sha256(canonical_bytes(canonical)).hexdigest()
