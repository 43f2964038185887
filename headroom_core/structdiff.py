"""Structural differences between two canonical requests, in lines a person reads.

A replay miss names what changed against the nearest recording (`system[0].text changed`,
`messages[3] added`); `scripts/store.py diff` shows the same. Long strings are compared by digest
(`summarize`), so a recording keeps only a summary of its request.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterator
from typing import Any

from .cachekey import dumps

JSON = Any

SUMMARY_MAX = 80  # strings longer than this are replaced by a digest in a summary
_MARKER = re.compile(r"<str \d+ chars [0-9a-f]{16}>")
_SHORT = 48  # longest string value quoted in a diff line
_ENVELOPE = ("v", "tenant", "provider", "endpoint", "method", "host", "path", "query", "headers",
             "stream", "body_raw")


def _summarize(node: JSON) -> JSON:
    if isinstance(node, str):
        if len(node) > SUMMARY_MAX and not _MARKER.fullmatch(node):
            digest = hashlib.blake2b(node.encode("utf-8", "surrogatepass"), digest_size=8)
            return f"<str {len(node)} chars {digest.hexdigest()}>"
        return node
    if isinstance(node, dict):
        return {k: _summarize(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_summarize(v) for v in node]
    return node


def summarize(canonical: dict) -> dict:
    """The canonical form with every long string replaced by its length and digest.

    Same structure, much smaller: enough for `diff` (equal digests mean equal strings) and to keep
    beside a stored response. Idempotent.
    """
    return _summarize(canonical)


def describe(canonical: dict) -> dict:
    """A flat overview for humans: envelope, model, counts, short top-level body settings."""
    out: dict[str, Any] = {k: canonical[k] for k in _ENVELOPE if k in canonical and k != "v"}
    body = canonical.get("body")
    if isinstance(body, dict):
        for k, v in sorted(body.items()):
            if isinstance(v, list):
                out[f"{k}[]"] = len(v)
            elif isinstance(v, str):
                out[k] = v if len(v) <= _SHORT else f"<{len(v)} chars>"
            elif isinstance(v, dict):
                out[k] = v if len(dumps(v)) <= 2 * _SHORT else f"<object, {len(v)} keys>"
            else:
                out[k] = v
    elif "body" in canonical:
        out["body"] = f"<JSON {type(body).__name__}>"
    return out


def _scalar(v: JSON) -> str | None:
    """How a value is shown in a diff line, or None when it is too big to show."""
    if v is None or isinstance(v, bool | int | float):
        return dumps(v).decode("ascii")
    if isinstance(v, str) and len(v) <= _SHORT and "\n" not in v and not _MARKER.fullmatch(v):
        return v
    return None


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _length(v: JSON) -> int | None:
    """A string's length in characters (a summarised one's included)."""
    if not isinstance(v, str):
        return None
    m = _MARKER.fullmatch(v)
    return int(v.split()[1]) if m else len(v)


def _changed(path: str, a: JSON, b: JSON) -> str:
    sa, sb = _scalar(a), _scalar(b)
    path = path or "body"
    if sa is not None and sb is not None:
        return f"{path} changed: {sa} -> {sb}"
    la, lb = _length(a), _length(b)
    if la is not None and lb is not None and not path.endswith("sha256"):
        # Too long to quote: how long each is (the same length hints at a date or a number
        # in the text, such as a timestamp in a system prompt).
        return f"{path} changed ({la} -> {lb} chars)" if la != lb else \
            f"{path} changed (same length, {la} chars)"
    return f"{path} changed"


def _is_number(v: JSON) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _walk(a: JSON, b: JSON, path: str) -> Iterator[str]:
    if type(a) is not type(b) and not (_is_number(a) and _is_number(b)):
        yield _changed(path, a, b)
        return
    if isinstance(a, dict):
        for k in sorted(a.keys() | b.keys()):
            p = _child(path, k)
            if k not in b:
                yield _added_removed(p, "removed", a[k])
            elif k not in a:
                yield _added_removed(p, "added", b[k])
            else:
                yield from _walk(a[k], b[k], p)
    elif isinstance(a, list):
        yield from _walk_list(a, b, path)
    elif a != b or dumps(a) != dumps(b):  # 1 vs 1.0 serialise (and so key) differently
        yield _changed(path, a, b)


def _added_removed(path: str, what: str, v: JSON) -> str:
    s = _scalar(v)
    return f"{path} {what}: {s}" if s is not None else f"{path} {what}"


def _walk_list(a: list, b: list, path: str) -> Iterator[str]:
    # Align by element digest so one message inserted mid-conversation reads as one addition,
    # not as every later message changed.
    ha = [dumps(x) for x in a]
    hb = [dumps(x) for x in b]
    sm = difflib.SequenceMatcher(None, ha, hb, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        common = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(common):
            yield from _walk(a[i1 + k], b[j1 + k], f"{path}[{i1 + k}]")
        for i in range(i1 + common, i2):
            yield _added_removed(f"{path}[{i}]", "removed", a[i])
        for j in range(j1 + common, j2):
            yield _added_removed(f"{path}[{j}]", "added", b[j])


def diff_lines(a: dict, b: dict) -> Iterator[str]:
    """Every difference from `a` to `b`, lazily. Body paths are bare (`messages[3]`)."""
    a, b = summarize(a), summarize(b)
    for k in _ENVELOPE:
        if k in a or k in b:
            if k not in b:
                yield _added_removed(k, "removed", a[k])
            elif k not in a:
                yield _added_removed(k, "added", b[k])
            else:
                yield from _walk(a[k], b[k], k)
    ba, bb = a.get("body"), b.get("body")
    if "body" in a and "body" in b:
        yield from _walk(ba, bb, "")
    elif "body" in a or "body" in b:
        yield "body " + ("removed" if "body" in a else "added")


def diff(a: dict, b: dict, limit: int = 10) -> list[str]:
    """Human-readable differences between two canonical requests (or their summaries), by path.

    E.g. `model changed: a -> b`, `system[2].text changed`, `tools[5] added`,
    `messages[3] removed`. At most `limit` lines; the last says how many more when cut.
    """
    out: list[str] = []
    extra = 0
    for line in diff_lines(a, b):
        if len(out) < limit:
            out.append(line)
        else:
            extra += 1
    if extra and limit > 0:
        extra += 1
        out[-1] = f"... and {extra} more differences"
    return out
