"""The marker that ends every rewrite: what was kept, what was omitted, how to fetch the original.

Its exact shape is what makes compression idempotent: text whose last line is a marker was
already rewritten by Headroom and is never rewritten again.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PREFIX = "[headroom: "
_REF_SEP = "; full output: "
# The retrieval endpoint's slice forms, named once so the model can fetch just what it needs.
SLICES = "(slices: ?grep=RE&context=2, ?lines=A-B, ?head=N, ?tail=N)"


class Compressed(NamedTuple):
    """A compressor's result: the new text (ending with the marker) and what it omitted.

    `facts` are lines of the original that must appear as lines of `text` (the faithfulness gate
    checks them); `needles` are short strings that must appear anywhere in `text`.
    """

    text: str
    omitted: str
    tokens: int | None = None  # count_tokens(text), when the compressor already knows it
    facts: tuple[str, ...] = ()
    needles: tuple[str, ...] = ()


def make(kept: str, omitted: str, ref: str) -> str:
    """`[headroom: <kept>; <omitted>; full output: curl -s '<ref>' (slices: ...)]` (ref verbatim)."""
    return f"{PREFIX}{kept}; {omitted}{_REF_SEP}curl -s '{ref}' {SLICES}]"


def append(body: str, marker: str) -> str:
    """Body, then the marker on its own last line."""
    if body and not body.endswith("\n"):
        body += "\n"
    return body + marker


def last_line(text: str) -> str:
    """The marker line of a compressed text."""
    return text.rstrip().rsplit("\n", 1)[-1]


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
    (re.compile(r"kept \d+ of \d+ lines? "), "log"),
    (re.compile(r"kept \d+ of \d+ match(?:es)? "), "search"),
    (re.compile(r"kept every header "), "diff"),
    (re.compile(r"\d+ (?:director(?:y|ies)|entries|entry) "), "listing"),
    (re.compile(r"(?:kept \d+ of )?\d+ items? "), "json"),
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
    """Counts are plain digits a reader can grep: 3004, never "3,004"."""
    return str(count)


def plural(count: int, word: str, words: str | None = None) -> str:
    """plural(1, "line") -> "1 line"; plural(3, "line") -> "3 lines"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"
