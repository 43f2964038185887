"""Byte-range surgery on raw JSON: the exact spans of chosen string literals, and splicing.

The document is never re-serialised: every byte outside a replaced literal is copied as received,
which is what keeps a provider's prompt cache valid. A body the scanner cannot map exactly is
refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

Key = str | int
Path = tuple[Key, ...]
Span = tuple[int, int]

# Unrolled-loop forms keep the regex engine linear and in C; `.` must match any byte after a
# backslash so malformed escapes cannot make a string token swallow its closing quote.
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_WS = re.compile(rb"[ \t\n\r]*")
_KEY = re.compile(rb"[ \t\n\r]*(" + _STR + rb")[ \t\n\r]*:[ \t\n\r]*", re.S)
_SEP = re.compile(rb"[ \t\n\r]*([,}\]])")
_SCALAR = re.compile(rb"[-+.0-9A-Za-z]+")
# Everything up to the next bracket that is not inside a string: one C-level match per bracket.
_TO_BRACKET = re.compile(rb'[^"\[\]{}]*(?:' + _STR + rb'[^"\[\]{}]*)*', re.S)

_LEAF = object()  # marks "this path is wanted" in the path trie

_OPEN = frozenset(b"[{")
_QUOTE, _BACKSLASH = 0x22, 0x5C
_LBRACE, _RBRACE, _LBRACK, _RBRACK = 0x7B, 0x7D, 0x5B, 0x5D


class _Refuse(Exception):
    """The raw bytes do not match what the locator expects; the caller gets None."""


def decode_literal(literal: bytes) -> str:
    """The text of a raw JSON string literal (quotes included). Lone surrogates are kept.

    Raises ValueError when `literal` is not one JSON string.
    """
    try:
        value = orjson.loads(literal)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates (\ud800); the stdlib keeps them, as the provider would.
        try:
            value = json.loads(literal.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError("not a JSON string literal") from e
    if not isinstance(value, str):
        raise ValueError("not a JSON string literal")
    return value


def encode_literal(text: str) -> bytes | None:
    """`text` as a compact JSON string literal; None when it cannot be UTF-8 (lone surrogates)."""
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        return None


def _build_trie(paths: Iterable[Path]) -> dict:
    root: dict = {}
    for path in paths:
        if not path:
            raise ValueError("empty path")
        node = root
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if child is _LEAF:
                raise ValueError(f"path {path!r} runs through a wanted leaf")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ValueError(f"path {path!r} is a prefix of another path")
        node[path[-1]] = _LEAF
    return root


def _string_end(raw: bytes, pos: int) -> int:
    """Position just after the string literal whose opening quote is at `pos`."""
    # memchr-speed jumps from quote to quote beat the regex by ~10x on megabyte outputs; a string
    # dense with escaped quotes (a JSON document as text) hands over to the regex instead.
    find = raw.find
    q = pos + 1
    for _ in range(16):
        q = find(b'"', q)
        if q < 0:
            raise _Refuse("unterminated string")
        k = q
        while raw[k - 1] == _BACKSLASH:
            k -= 1
        if not (q - k) & 1:
            return q + 1
        q += 1
    m = _STRING_REST.match(raw, q)  # q is just after an escaped quote: inside the string
    if m is None:
        raise _Refuse("unterminated string")
    return m.end()


def _count_leaves(node: Any) -> int:
    return 1 if node is _LEAF else sum(_count_leaves(c) for c in node.values())


def _skip_value(raw: bytes, pos: int) -> int:
    """Position just after the JSON value starting at `pos` (no leading whitespace)."""
    c = raw[pos]
    if c == _QUOTE:
        return _string_end(raw, pos)
    if c in _OPEN:
        return _skip_container(raw, pos + 1, 1)
    # number, true, false, null (and NaN/Infinity, which the stdlib fallback accepts)
    m = _SCALAR.match(raw, pos)
    if m is None:
        raise _Refuse("bad scalar")
    return m.end()


def _skip_container(raw: bytes, pos: int, depth: int) -> int:
    """Skip to just after the bracket closing `depth` open containers; `pos` is inside them."""
    match = _TO_BRACKET.match
    n = len(raw)
    while True:
        pos = match(raw, pos).end()
        if pos >= n:
            raise _Refuse("unbalanced brackets")
        c = raw[pos]
        if c == _LBRACE or c == _LBRACK:
            depth += 1
        elif c == _RBRACE or c == _RBRACK:
            depth -= 1
            if depth == 0:
                return pos + 1
        else:  # a quote the string pattern could not close
            raise _Refuse("unterminated string")
        pos += 1


def _key_text(token: bytes) -> str:
    inner = token[1:-1]
    if b"\\" not in inner:
        return inner.decode("utf-8")
    return decode_literal(token)


class _Locator:
    __slots__ = ("raw", "found")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.found: dict[Path, Span] = {}

    def value(self, pos: int, node: Any, path: Path) -> int:
        raw = self.raw
        if node is _LEAF:
            if raw[pos] != _QUOTE:
                raise _Refuse("wanted value is not a string")
            end = _string_end(raw, pos)
            self.found[path] = (pos, end)
            return end
        c = raw[pos]
        if c == _LBRACE:
            return self.obj(pos + 1, node, path)
        if c == _LBRACK:
            return self.arr(pos + 1, node, path)
        return _skip_value(raw, pos)

    def obj(self, pos: int, node: dict, path: Path) -> int:
        raw = self.raw
        seen: set[str] = set()
        pos = _WS.match(raw, pos).end()
        if raw[pos:pos + 1] == b"}":
            return pos + 1
        while True:
            m = _KEY.match(raw, pos)
            if m is None:
                raise _Refuse("expected a key")
            pos = m.end()
            key = _key_text(m.group(1))
            child = node.get(key)
            if child is None:
                pos = _skip_value(raw, pos)
            else:
                if key in seen:
                    # Parsers keep the last duplicate; forget what the earlier one yielded.
                    prefix = (*path, key)
                    k = len(prefix)
                    for p in [p for p in self.found if p[:k] == prefix]:
                        del self.found[p]
                seen.add(key)
                pos = self.value(pos, child, (*path, key))
            m = _SEP.match(raw, pos)
            if m is None:
                raise _Refuse("expected , or }")
            pos = m.end()
            sep = m.group(1)
            if sep == b"}":
                return pos
            if sep != b",":
                raise _Refuse("mismatched bracket")

    def arr(self, pos: int, node: dict, path: Path) -> int:
        raw = self.raw
        pos = _WS.match(raw, pos).end()
        if raw[pos:pos + 1] == b"]":
            return pos + 1
        last = max((k for k in node if type(k) is int), default=-1)
        index = 0
        while True:
            if index > last:
                # Nothing more wanted here: jump to the closing bracket in one pass.
                return _skip_container(raw, pos, 1)
            child = node.get(index)
            if child is None:
                pos = _skip_value(raw, pos)
            else:
                pos = self.value(pos, child, (*path, index))
            m = _SEP.match(raw, pos)
            if m is None:
                raise _Refuse("expected , or ]")
            pos = m.end()
            sep = m.group(1)
            if sep == b"]":
                return pos
            if sep != b",":
                raise _Refuse("mismatched bracket")
            pos = _WS.match(raw, pos).end()
            index += 1


def locate(raw: bytes, paths: Iterable[Path]) -> dict[Path, Span] | None:
    """Byte spans `(start, end)` of the string literals at `paths` (quotes included), or None.

    A path is a tuple of object keys (str) and array indices (int) as in the parsed document.
    With duplicate keys the span is the last occurrence, the one parsers keep. None means the
    body could not be mapped exactly (malformed, a path missing or not a string): change nothing.
    Subtrees off every path are skipped a bracket at a time, never tokenised in Python.
    Raises ValueError only for bad `paths` (empty, or one the prefix of another).
    """
    trie = _build_trie(paths)
    if not trie:
        return {}
    loc = _Locator(raw)
    try:
        pos = _WS.match(raw, 0).end()
        if pos >= len(raw):
            return None
        loc.value(pos, trie, ())
    except (_Refuse, IndexError, ValueError, UnicodeDecodeError):
        return None
    found = loc.found
    # Every wanted path must be found, or an edit would be silently dropped.
    if len(found) != _count_leaves(trie):
        return None
    return found


def locate_checked(raw: bytes, expected: Mapping[Path, str]) -> dict[Path, Span] | None:
    """`locate`, then prove each span decodes to the value the parser gave for that path."""
    spans = locate(raw, expected.keys())
    if spans is None:
        return None
    for path, (start, end) in spans.items():
        try:
            if decode_literal(raw[start:end]) != expected[path]:
                return None
        except ValueError:
            return None
    return spans


def splice(raw: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Replace `raw[start:end]` by `new` for each edit; every other byte is copied unchanged.

    Edits may come in any order but must not overlap; raises ValueError otherwise.
    """
    if not edits:
        return raw
    parts: list[bytes] = []
    pos = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < pos or end < start or end > len(raw):
            raise ValueError(f"bad or overlapping edit {start}:{end}")
        parts.append(raw[pos:start])
        parts.append(new)
        pos = end
    parts.append(raw[pos:])
    return b"".join(parts)


# --- arrays element by element (the turn memo) --------------------------------------------------


def elements_after(raw: bytes, pos: int) -> tuple[list[Span], int] | None:
    """The spans of the array elements that follow position `pos` (just after an element, or just
    after the opening bracket of an empty array), and the position just after the closing
    bracket; None when the bytes there are not such an array tail."""
    spans: list[Span] = []
    try:
        pos = _WS.match(raw, pos).end()
        while True:
            c = raw[pos]
            if c == _RBRACK:
                return spans, pos + 1
            if spans or c == 0x2C:  # ","
                if c != 0x2C:
                    return None
                pos = _WS.match(raw, pos + 1).end()
            start = pos
            pos = _skip_value(raw, pos)
            spans.append((start, pos))
            pos = _WS.match(raw, pos).end()
    except (_Refuse, IndexError):
        return None


def parsed_tail(raw: bytes, pos: int, marker: bytes) -> tuple[list[Span], int, list] | None:
    """`elements_after` with the elements parsed, in one parse and without scanning them in
    Python, for compact bodies (JSON.stringify, orjson): the array is taken to end at the first
    `marker` after `pos` (its closing bracket and what followed it in the conversation's previous
    turn), and each element's span is proven by re-encoding it and comparing bytes. None when
    that does not hold (then use `elements_after`).

    A wrong guess cannot pass: the tail is lexed from `pos`, at the array's level, so a
    successful parse means the marker's bracket closes the array; and the re-encoded elements
    must cover its bytes exactly, commas included."""
    if not marker.startswith(b"]"):
        return None
    q = raw.find(marker, pos)
    if q < 0:
        return None
    if q == pos:
        return [], q + 1, []
    if raw[pos] != 0x2C:  # ","
        return None
    try:
        items = orjson.loads(b"[" + raw[pos + 1:q] + b"]")
    except orjson.JSONDecodeError:
        return None
    spans = proven_spans(raw, pos + 1, items)
    if spans is None or not spans or spans[-1][1] != q:
        return None
    return spans, q + 1, items


def proven_spans(raw: bytes, pos: int, items: list) -> list[Span] | None:
    """The spans of `items`, the parsed elements of a compact array whose first element starts
    at `pos`, proven by re-encoding each one and comparing bytes (each element followed by a
    comma, the last by the closing bracket): None when the bytes were written another way."""
    spans: list[Span] = []
    cur = pos
    startswith = raw.startswith
    try:
        for item in items:
            if spans:
                if raw[cur] != 0x2C:  # ","
                    return None
                cur += 1
            enc = orjson.dumps(item)
            if not startswith(enc, cur):
                return None
            spans.append((cur, cur + len(enc)))
            cur += len(enc)
    except (orjson.JSONEncodeError, IndexError):
        return None
    return spans if raw[cur:cur + 1] == b"]" else None


def array_elements(raw: bytes, key: str, items: list | None = None
                   ) -> tuple[int, list[Span], int] | None:
    """For the top-level object's array under `key`: the position just after its opening bracket,
    its elements' spans and the position just after its closing bracket. None when the document
    is not an object with such an array, or when a later duplicate of `key` might exist (the one
    parsers keep would then be another). `items`: the array as parsed, when the caller has it
    (a compact array's spans are then proven by re-encoding instead of scanned)."""
    token = orjson.dumps(key)
    try:
        pos = _WS.match(raw, 0).end()
        if raw[pos] != _LBRACE:
            return None
        pos = _WS.match(raw, pos + 1).end()
        while raw[pos] != _RBRACE:
            m = _KEY.match(raw, pos)
            if m is None:
                return None
            pos = m.end()
            if m.group(1) == token and raw[pos] == _LBRACK:
                first = pos + 1
                tail = None
                if items:
                    spans = proven_spans(raw, first, items)
                    tail = None if spans is None else (spans, spans[-1][1] + 1)
                if tail is None:
                    tail = elements_after(raw, first)
                if tail is None or not no_later_key(raw, tail[1], key):
                    return None
                spans, end = tail
                return first, spans, end
            pos = _skip_value(raw, pos)
            m = _SEP.match(raw, pos)
            if m is None or m.group(1) == b"]":
                return None
            pos = _WS.match(raw, m.end()).end() if m.group(1) == b"," else m.start(1)
    except (_Refuse, IndexError):
        return None
    return None


def no_later_key(raw: bytes, pos: int, key: str,
                 known: tuple[bytes, int] | None = None) -> bool:
    """True when no object key `key` can start at or after `pos` (the bytes hold neither its
    plain spelling nor any \\u escape that could spell it).

    `known`: bytes and a position for which this was already true (the conversation's previous
    request). When `raw` ends with all but the first few KB of that tail (a request's tail is
    mostly the same `system` and `tools` every turn), only the bytes before that shared end are
    searched: a spelling inside it would have been inside the known tail too."""
    lit = orjson.dumps(key)
    end = len(raw)
    if known is not None:
        old, old_pos = known
        for head in _KNOWN_HEADS:
            same = min(end - pos, len(old) - old_pos) - head
            if same > 0 and raw.endswith(memoryview(old)[len(old) - same:]):
                # (a spelling that starts before the shared end may run into it)
                end = end - same + len(lit) - 1
                break
    return raw.find(lit, pos, end) < 0 and raw.find(b"\\u", pos, end) < 0


# How much of a request's tail may differ from the previous turn's for the shorter search: the
# billing line at the start of `system` changes every request (a few hundred bytes in); a new
# system reminder, more. A head that is too short costs one failed comparison, which stops at
# the first differing byte; one too long costs a search of the bytes it spans.
_KNOWN_HEADS = (512, 4096, 32768)


def locate_fast(raw: bytes, expected: Mapping[Path, str], lo: int = 0,
                hi: int | None = None) -> dict[Path, Span] | None:
    """`locate_checked` by searching each text's compact encoding, for bodies written by compact
    serialisers (JSON.stringify, orjson): each occurrence must be an unescaped string literal right
    after its own key (`"key":`) or in an array, and each text must occur exactly as often as it
    is expected, in document order. None when unsure: use `locate_checked`.

    With `lo`/`hi`, only `raw[lo:hi]` is searched: one JSON value (a message) whose texts these
    are; the spans are positions in `raw`."""
    if hi is None:
        hi = len(raw)
    by_text: dict[str, list[Path]] = {}
    for path, text in expected.items():
        by_text.setdefault(text, []).append(path)
    found: dict[Path, Span] = {}
    for text, paths in by_text.items():
        lit = encode_literal(text)
        if lit is None:
            return None
        hits = []
        start = raw.find(lit, lo, hi)
        while start >= 0:
            hits.append(start)
            if len(hits) > len(paths):
                return None
            start = raw.find(lit, start + len(lit), hi)
        if len(hits) != len(paths):
            return None
        for path, start in zip(paths, hits):
            if not _literal_at(raw, start, path[-1]):
                return None
            found[path] = (start, start + len(lit))
    return found


def _literal_at(raw: bytes, start: int, last: Key) -> bool:
    """Whether an unescaped string literal starting at `start` is the value of key `last` (or an
    array element, when `last` is an index)."""
    k = start
    while k > 0 and raw[k - 1] == _BACKSLASH:
        k -= 1
    if (start - k) & 1:
        return False  # the quote is escaped: inside another string
    i = start - 1
    while i >= 0 and raw[i] in b" \t\n\r":
        i -= 1
    if i < 0:
        return False
    if type(last) is int:
        return raw[i] in b"[,"
    if raw[i] != 0x3A:  # ":"
        return False
    i -= 1
    while i >= 0 and raw[i] in b" \t\n\r":
        i -= 1
    key = orjson.dumps(last)
    return raw[i - len(key) + 1:i + 1] == key and _literal_starts(raw, i - len(key) + 1)


def _literal_starts(raw: bytes, q: int) -> bool:
    """Whether the quote at `q` is unescaped and opens a key (after `{` or `,`)."""
    k = q
    while k > 0 and raw[k - 1] == _BACKSLASH:
        k -= 1
    if (q - k) & 1:
        return False
    i = q - 1
    while i >= 0 and raw[i] in b" \t\n\r":
        i -= 1
    return i >= 0 and raw[i] in b"{,"


# --- cheap reads of a request body's first and last keys ---------------------------------

_MODEL_FIRST = re.compile(rb'\A\s*\{\s*"model"\s*:\s*"([^"\\\x00-\x1f]{1,200})"\s*[,}]')
_LAST_STREAM = re.compile(rb'[,{][ \t\n\r]*"stream"[ \t\n\r]*:[ \t\n\r]*(true|false)'
                          rb'[ \t\n\r]*}[ \t\n\r]*\Z')


def peek_stream(data: bytes) -> bool | None:
    """The top-level `stream` flag when it is the body's last key (Claude Code puts it there):
    a key right before the closing brace of the outermost object. None when unsure."""
    m = _LAST_STREAM.search(data, max(0, len(data) - 64))
    return None if m is None else m.group(1) == b"true"


def peek_model(data: bytes) -> str | None:
    """The model when it is the body's first key (Claude Code and Codex put it there), without
    parsing the rest; None when unsure."""
    m = _MODEL_FIRST.match(data)
    if m is None:
        return None
    try:
        return m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None
