"""The marker that ends every rewrite: what was kept, what was omitted, where the original is.

Its exact shape is what makes compression idempotent: text whose last line is a marker was
already rewritten by Headroom and is never rewritten again.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PREFIX = "[headroom: "
_REF_SEP = "; full output: "


class Rewrite(NamedTuple):
    """A compressor's result: the new text (ending with the marker) and what it omitted."""

    text: str
    omitted: str
    tokens: int | None = None  # count_tokens(text), when the compressor already knows it


def make(kept: str, omitted: str, ref: str) -> str:
    """`[headroom: <kept>; <omitted>; full output: <ref>]` (ref verbatim)."""
    return f"{PREFIX}{kept}; {omitted}{_REF_SEP}{ref}]"


def append(body: str, marker: str) -> str:
    """Body, then the marker on its own last line."""
    if body and not body.endswith("\n"):
        body += "\n"
    return body + marker


def is_marked(text: str) -> bool:
    """True if the text ends with a Headroom marker (trailing whitespace aside)."""
    t = text.rstrip()
    if not t.endswith("]"):
        return False
    tail = t[-4096:]
    # The ref is opaque and may itself contain "[" or newlines: anchor on the last marker start.
    start = tail.rfind("\n" + PREFIX)
    if start >= 0:
        start += 1
    elif len(t) <= 4096 and t.startswith(PREFIX):
        start = 0
    else:
        return False
    return _REF_SEP in tail[start:]


# What each compressor's marker starts with, so an already-compressed text still reports its kind.
_KIND_PREFIXES = (
    (re.compile(r"kept [\d,]+ of [\d,]+ lines? "), "log"),
    (re.compile(r"kept [\d,]+ of [\d,]+ match(?:es)? "), "search"),
    (re.compile(r"kept the headers of all "), "diff"),
    (re.compile(r"(?:kept [\d,]+ of )?[\d,]+ items? "), "json"),
)


def kind_of(text: str) -> str:
    """The kind named by the marker that ends `text` ("text" if none is recognised)."""
    last = text.rstrip()[-4096:]
    start = last.rfind("\n" + PREFIX)
    body = last[start + 1 + len(PREFIX):] if start >= 0 else last[len(PREFIX):]
    for regex, kind in _KIND_PREFIXES:
        if regex.match(body):
            return kind
    return "text"


def n(count: int) -> str:
    """1203 -> "1,203"."""
    return f"{count:,}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """plural(1, "line") -> "1 line"; plural(3, "line") -> "3 lines"."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"
