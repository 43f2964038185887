"""Slices of a kept original, as `GET /ccr/<handle>` answers them: lines, grep, head, tail.

A retrieval must not flood the context it was meant to save, so the agent asks for a part:
`?lines=START-END` (1-based, inclusive), `?grep=REGEX[&context=N]` (matching lines prefixed with
their line number, N lines around each), `?head=N`, `?tail=N`; no query: the whole original.
Bad input is a `SliceError` saying why; a regex runs under a time bound (the `regex` module's
timeout), so a catastrophic pattern costs at most that long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import unquote

import regex

GREP_TIMEOUT = 0.25  # seconds of regex matching per request
MAX_CONTEXT = 1000  # lines around each grep match
MAX_PATTERN = 1000  # characters
# Counted repeats are expanded when a pattern compiles: `(?:(?:a{1000}){1000}){4}` takes over a
# gigabyte before any timeout applies. The product of every count in a pattern (as if they were
# all nested) is bounded: a few MB at most (a UUID pattern needs 6144). Compiled patterns are
# not cached: every distinct one would stay in memory.
MAX_REPEAT_PRODUCT = 10_000
_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_KEYS = ("lines", "grep", "context", "head", "tail")


class SliceError(ValueError):
    """A bad slice request: the message is the 400 answer."""


@dataclass(frozen=True, slots=True)
class Slice:
    kind: str = "all"  # "all" | "lines" | "grep" | "head" | "tail"
    start: int = 0  # lines: 1-based first line; head/tail: count
    end: int = 0  # lines: 1-based last line
    pattern: str = ""
    context: int = 0


def _count(name: str, value: str, low: int = 0, high: int = 1 << 31) -> int:
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or not low <= int(v) <= high:
        raise SliceError(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return int(v)


def parse(query: str) -> Slice:
    """The slice a query string asks for. Raises SliceError."""
    # Not form decoding: "+" stays a plus, as a regex means it (`curl '...?grep=a+b'`).
    params = [(unquote(k), unquote(v)) for k, _, v in
              (part.partition("=") for part in query.split("&") if part)]
    seen: dict[str, str] = {}
    for k, v in params:
        if k not in _KEYS:
            raise SliceError(f"unknown parameter {k!r}: use lines=START-END, grep=REGEX "
                             "(&context=N), head=N or tail=N")
        if k in seen:
            raise SliceError(f"{k} given twice")
        seen[k] = v
    kinds = [k for k in ("lines", "grep", "head", "tail") if k in seen]
    if len(kinds) > 1:
        raise SliceError(f"one slice at a time, got {', '.join(kinds)}")
    if "context" in seen and kinds != ["grep"]:
        raise SliceError("context=N goes with grep=REGEX")
    if not kinds:
        return Slice()
    kind = kinds[0]
    value = seen[kind]
    if kind == "lines":
        a, sep, b = value.partition("-")
        start = _count("lines start", a, 1)
        end = _count("lines end", b, 1) if sep else start
        if end < start:
            raise SliceError(f"lines={value!r}: the end comes before the start")
        return Slice("lines", start, end)
    if kind == "grep":
        if not value:
            raise SliceError("grep= needs a pattern")
        if len(value) > MAX_PATTERN:
            raise SliceError(f"grep pattern longer than {MAX_PATTERN} characters")
        if _repeat_product(value) > MAX_REPEAT_PRODUCT:
            raise SliceError(f"grep={value[:80]!r}: pattern too complex (its counted repeats "
                             f"multiply past {MAX_REPEAT_PRODUCT})")
        try:
            regex.compile(value, cache_pattern=False)
        except regex.error as e:
            raise SliceError(f"grep={value[:80]!r}: invalid regular expression ({e})") from None
        except (RecursionError, MemoryError, OverflowError, ValueError):
            raise SliceError(f"grep={value[:80]!r}: pattern too complex") from None
        ctx = _count("context", seen["context"], 0, MAX_CONTEXT) if "context" in seen else 0
        return Slice("grep", pattern=value, context=ctx)
    return Slice(kind, _count(kind, value, 0))


def _repeat_product(pattern: str) -> int:
    """The product of the counts of every `{m}`, `{m,}`, `{m,n}`, `{,n}` in `pattern` (escaped
    characters skipped; a brace in a character class counts too, which only errs on the safe
    side)."""
    product, i, n = 1, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            m = _COUNT.match(pattern, i)
            if m is not None:
                product *= max([1, *(int(g) for g in m.groups() if g)])
                if product > MAX_REPEAT_PRODUCT:
                    return product
                i = m.end()
                continue
        i += 1
    return product


def apply(text: str, s: Slice) -> str:
    """The slice of `text`. Raises SliceError when a grep runs out of time."""
    if s.kind == "all":
        return text
    lines = text.split("\n")
    if lines[-1] == "":  # the empty rest after a final newline (or an empty text) is no line
        lines.pop()
    if s.kind == "head":
        return _join(lines[: s.start])
    if s.kind == "tail":
        return _join(lines[len(lines) - s.start:] if s.start else [])
    if s.kind == "lines":
        return _join(lines[s.start - 1: s.end])
    return _grep(lines, s.pattern, s.context)


def _join(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _grep(lines: list[str], pattern: str, context: int) -> str:
    """grep -n with -C context: `12:match`, `11-context`, `--` between groups."""
    try:
        rx = regex.compile(pattern, cache_pattern=False)
    except Exception:
        raise SliceError(f"grep={pattern[:80]!r}: pattern too complex") from None
    slow = SliceError(f"grep={pattern[:80]!r} took longer than {GREP_TIMEOUT} s; use a simpler "
                      "pattern")
    deadline = time.monotonic() + GREP_TIMEOUT
    hits = []
    for i, line in enumerate(lines):
        left = deadline - time.monotonic()
        if left <= 0:
            raise slow
        try:
            if rx.search(line, timeout=left):
                hits.append(i)
        except TimeoutError:
            raise slow from None
        except (RecursionError, MemoryError):
            raise SliceError(f"grep={pattern[:80]!r}: pattern too complex") from None
    shown: list[int] = []
    for i in hits:
        lo, hi = max(0, i - context), min(len(lines), i + context + 1)
        shown.extend(range(max(lo, shown[-1] + 1) if shown else lo, hi))
    matched = set(hits)
    out = []
    prev = None
    for i in shown:
        if prev is not None and i != prev + 1:
            out.append("--")
        out.append(f"{i + 1}{':' if i in matched else '-'}{lines[i]}")
        prev = i
    return _join(out)
