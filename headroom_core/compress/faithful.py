"""The faithfulness gate: a compressed text is used only if every fact its compressor owes is in it.

Facts are whole lines of the original (errors, summaries, diff lines, directories) and short strings
(file paths, totals, anomalous object indices, key names). One set lookup or substring test each.
"""

from __future__ import annotations

import re

from .listing import dir_key
from .marker import Compressed

_REPEAT_RE = re.compile(r"^\[×\d+\] ")


def _line_keys(body: str, kind: str) -> set[str]:
    lines = body.split("\n")
    keys = set(lines)
    if kind == "log":  # a collapsed run keeps its line once, after a count
        keys.update(_REPEAT_RE.sub("", ln, count=1) for ln in lines if ln.startswith("[×"))
    elif kind == "listing":
        keys.update(k for ln in lines if (k := dir_key(ln)) is not None)
    return keys


def missing(c: Compressed, kind: str) -> int:
    """How many owed facts the compressed text lacks (0 = faithful)."""
    body = c.text.rsplit("\n", 1)[0] if "\n" in c.text else ""
    lost = 0
    if c.facts:
        keys = _line_keys(body, kind)
        lost += sum(1 for f in c.facts if f not in keys)
    if c.needles:
        lost += sum(1 for s in c.needles if s not in c.text)
    return lost
