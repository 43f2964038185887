"""Search results (grep -n / ripgrep, flat `path:line:text` or `--heading` groups).

Every file that matched stays named; kept lines stay verbatim (never fused or paraphrased); each
file keeps its first few matches (a fair share of a total budget) and says how many it lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import marker
from .detect import SEARCH_FLAT_RE, SEARCH_NUM_RE, looks_like_path
from .marker import Compressed

if TYPE_CHECKING:
    from . import CompressPolicy

MATCH, CTX, SEP, HEADING, BLANK, OTHER = range(6)


@dataclass(slots=True)
class _Entry:
    kind: int
    path: str
    line: str
    block: int  # entries of one file between separators share a block number


def parse(text: str) -> list[_Entry]:
    """One entry per line: a match, a context line, a `--` separator, a heading, blank or other."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    entries: list[_Entry] = []
    flat_path = ""
    heading = ""
    block = 0
    prev_key: tuple[int, str] | None = None
    for i, ln in enumerate(lines):
        kind, path = OTHER, ""
        if not ln.strip():
            kind, heading = BLANK, ""
        elif ln == "--":
            kind = SEP
        else:
            m = SEARCH_FLAT_RE.match(ln)
            if m and looks_like_path(m.group(1)) and not heading:
                kind, path = MATCH, m.group(1)
                flat_path = path
            elif flat_path and not heading and _is_flat_context(ln, flat_path):
                kind, path = CTX, flat_path
            else:
                num = SEARCH_NUM_RE.match(ln)
                if num and heading:
                    kind, path = (MATCH if num.group(2) == ":" else CTX), heading
                elif (
                    looks_like_path(ln) and " " not in ln
                    and i + 1 < len(lines) and SEARCH_NUM_RE.match(lines[i + 1])
                ):
                    kind, path, heading = HEADING, ln, ln
        if kind in (MATCH, CTX):
            if prev_key is not None and prev_key[1] != path:
                block += 1
            prev_key = (block, path)
        elif kind in (SEP, BLANK, HEADING):
            block += 1
            prev_key = None
        entries.append(_Entry(kind, path, ln, block))
    return entries


def _is_flat_context(line: str, path: str) -> bool:
    # `path-12-text`: rg/grep -C context lines, recognised only for the file just seen.
    if not line.startswith(path + "-"):
        return False
    rest = line[len(path) + 1:]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return digits > 0 and rest[digits:digits + 1] == "-"


def _budgets(order: list[str], counts: dict[str, int], total: int, per_file: int) -> dict[str, int]:
    """Fair share: every file gets one match before any gets two, up to per_file each."""
    budget = dict.fromkeys(order, 0)
    remaining = max(0, total)
    for level in range(1, max(1, per_file) + 1):
        progressed = False
        for f in order:
            if remaining <= 0:
                break
            if counts[f] >= level:
                budget[f] = level
                remaining -= 1
                progressed = True
        if not progressed or remaining <= 0:
            break
    return budget


def choose(entries: list[_Entry], budget: dict[str, int]) -> list[bool]:
    """A file's first `budget` matches stay; a context line stays with a kept match of its block,
    up to the block's first dropped match."""
    keep = [False] * len(entries)
    used = dict.fromkeys(budget, 0)
    has_kept: dict[int, bool] = {}
    first_drop: dict[int, int] = {}
    for idx, e in enumerate(entries):
        if e.kind == MATCH:
            if used[e.path] < budget[e.path]:
                used[e.path] += 1
                keep[idx] = True
                has_kept[e.block] = True
            else:
                first_drop.setdefault(e.block, idx)
    for idx, e in enumerate(entries):
        if e.kind == CTX:
            keep[idx] = has_kept.get(e.block, False) and idx < first_drop.get(e.block, len(entries))
    return keep


class _Writer:
    """Renders the kept entries; every run of dropped matches becomes a note naming its file."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.shown = self.ctx_dropped = self.seg_dropped = 0
        self.seg_path = ""
        self.pending_sep = False
        self.shown_in: dict[str, int] = {}

    def close_segment(self) -> None:
        if self.seg_path and self.seg_dropped:
            more = "more " if self.shown_in.get(self.seg_path) else ""
            what = marker.plural(self.seg_dropped, f"{more}match", f"{more}matches")
            self.out.append(f"… {what} in {self.seg_path} omitted")
        self.seg_dropped = 0

    def hit(self, e: _Entry, kept: bool) -> None:
        if e.path != self.seg_path:
            self.close_segment()
            self.seg_path = e.path
        if not kept:
            if e.kind == MATCH:
                self.seg_dropped += 1
            else:
                self.ctx_dropped += 1
            return
        if e.kind == MATCH:
            self.shown += 1
            self.shown_in[e.path] = self.shown_in.get(e.path, 0) + 1
        if self.pending_sep and self.out and self.out[-1] != "":
            self.out.append("--")
        self.pending_sep = False
        self.out.append(e.line)

    def other(self, e: _Entry) -> None:
        if e.kind == SEP:
            self.pending_sep = True
            return
        self.close_segment()
        self.pending_sep = False
        self.seg_path = e.path if e.kind == HEADING else ""
        if e.kind != BLANK:
            self.out.append(e.line)
        elif self.out and self.out[-1] != "":
            self.out.append("")


def render(entries: list[_Entry], keep: list[bool]) -> _Writer:
    w = _Writer()
    for idx, e in enumerate(entries):
        if e.kind in (MATCH, CTX):
            w.hit(e, keep[idx])
        else:
            w.other(e)
    w.close_segment()
    while w.out and w.out[-1] == "":
        w.out.pop()
    return w


def compress_search(text: str, policy: CompressPolicy, ref: str) -> Compressed | None:
    entries = parse(text)
    counts: dict[str, int] = {}
    for e in entries:
        if e.kind == MATCH:
            counts[e.path] = counts.get(e.path, 0) + 1
    if not counts:
        return None
    budget = _budgets(list(counts), counts, policy.search_max_total, policy.search_max_per_file)
    w = render(entries, choose(entries, budget))
    total = sum(counts.values())
    dropped = total - w.shown
    if dropped == 0 and w.ctx_dropped == 0:
        return None
    omitted = marker.plural(dropped, "match", "matches")
    if w.ctx_dropped:
        omitted += f" and {marker.plural(w.ctx_dropped, 'context line')}"
    kept = (f"kept {w.shown} of {marker.plural(total, 'match', 'matches')} "
            f"(up to {max(budget.values())} per file), all {marker.plural(len(counts), 'file')} named")
    mark = marker.make(kept, f"{omitted} omitted", ref)
    return Compressed(marker.append("\n".join(w.out), mark), f"{omitted} of {total} matches",
                      needles=(*counts, f"of {total} match", f"all {len(counts)} file"))
