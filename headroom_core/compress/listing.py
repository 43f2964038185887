"""Directory listings (find, ls -la, ls -laR, tree): one line per directory, every one named.

A small directory's files are named; a large one's are counted by extension (extensionless names,
which may be directories, are always named). `ls -l` columns are dropped; other lines stay verbatim.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import marker
from .detect import LS_RE, TREE_RE
from .marker import Compressed

if TYPE_CHECKING:
    from . import CompressPolicy

_LS_HEADER_RE = re.compile(r"^(\S.*):$")
_LS_TOTAL_RE = re.compile(r"^total \d+(?:[.,]\d+)?[KMGTP]?$")


@dataclass
class Dir:
    files: list[str] = field(default_factory=list)  # names of entries that are not known directories


@dataclass
class Listing:
    style: str  # "find" | "ls" | "tree"
    dirs: dict[str, Dir] = field(default_factory=dict)  # path (no trailing "/") -> contents
    other: list[str] = field(default_factory=list)  # lines that are not entries, kept verbatim
    entries: int = 0

    def add_dir(self, path: str) -> Dir:
        d = self.dirs.get(path)
        if d is None:
            d = self.dirs[path] = Dir()
        return d


def _split(path: str) -> tuple[str, str]:
    parent, sep, name = path.rpartition("/")
    return (parent or "/", name) if sep else (".", path)


def parse_find(lines: list[str]) -> Listing:
    """A path is a directory if another path is inside it (or it ends with "/", as `find -type d -printf '%p/'`)."""
    out = Listing("find")
    rows: list[tuple[str, str, str, bool]] = []  # path, parent, name, marked as a directory
    for ln in lines:
        if not ln:
            continue
        if ln.startswith("find: ") or ("/" not in ln and " " in ln):
            out.other.append(ln)
            continue
        p = ln.rstrip("/") or "/"
        parent, sep, name = p.rpartition("/")  # _split, inlined: this loop runs once per line
        if not sep:
            parent = "."
        elif not parent:
            parent = "/"
        rows.append((p, parent, name, ln[-1] == "/" and len(ln) > 1))
    parents = {r[1] for r in rows}
    dirs = out.dirs
    for p, parent, name, marked in rows:
        is_dir = marked or p in parents or p in (".", "/")
        if is_dir and p not in dirs:
            _ensure(out, p)
        if p in (".", "/") or (is_dir and parent == "." and "/" not in p):
            continue  # a top-level directory of the listing ("node_modules"), not an entry of "."
        if parent not in dirs:
            _ensure(out, parent)
        if not is_dir:
            dirs[parent].files.append(name)
    out.entries = len(rows)
    return out


def _ensure(out: Listing, path: str) -> None:
    """Register a directory and its ancestors (parents first, so the order reads as a tree)."""
    chain = []
    while path not in out.dirs:
        chain.append(path)
        if path in (".", "/") or "/" not in path.strip("/"):
            break
        path = _split(path)[0]
    for p in reversed(chain):
        out.add_dir(p)


def parse_ls(lines: list[str]) -> Listing:
    out = Listing("ls")
    cur = "."
    for ln in lines:
        m = LS_RE.match(ln)
        if m:
            kind, name = m.group(1), m.group(2)
            if name in (".", ".."):
                continue
            out.entries += 1
            _ensure(out, cur)
            if kind == "d":
                out.add_dir(f"{cur}/{name}" if cur != "/" else f"/{name}")
            else:
                out.dirs[cur].files.append(name)
        elif (h := _LS_HEADER_RE.match(ln)) and not ln.startswith(("ls: ", "find: ")):
            cur = h.group(1).rstrip("/") or "/"
            out.add_dir(cur)
        elif ln.strip() and not _LS_TOTAL_RE.match(ln):
            out.other.append(ln)
    return out


def parse_tree(lines: list[str]) -> Listing:
    out = Listing("tree")
    rows: list[tuple[int, str]] = []
    root = None
    for ln in lines:
        m = TREE_RE.match(ln)
        if m:
            rows.append((len(m.group(1)) // 4, m.group(2)))
        elif root is None and ln.strip() and not rows:
            root = ln.rstrip("/")
        elif ln.strip():
            out.other.append(ln)
    root = root or "."
    out.add_dir(root)
    stack = [root]
    for i, (depth, name) in enumerate(rows):
        del stack[depth + 1:]
        if len(stack) <= depth:  # a malformed indent: attach to the deepest known directory
            depth = len(stack) - 1
        parent = stack[depth]
        out.entries += 1
        is_dir = name.endswith("/") or (i + 1 < len(rows) and rows[i + 1][0] > depth)
        name = name.rstrip("/") if is_dir else name
        path = f"{parent}/{name}"
        if is_dir:
            out.add_dir(path)
            stack.append(path)
        else:
            out.dirs[parent].files.append(name)
    return out


# "js" for "a.min.js"; none for "LICENSE", ".env" or a name whose suffix is no extension.
_EXT_RE = re.compile(r"[^./]\.([A-Za-z0-9_+-]{1,10})$")


def _exts(names: list[str]) -> list[str]:
    return [m.group(1) if m else "" for m in map(_EXT_RE.search, names)]


def _display(name: str) -> str:
    return f'"{name}"' if " " in name or '"' in name else name


def _dir_line(path: str, d: Dir, max_names: int, noun: str) -> tuple[str, int]:
    """The directory's line and how many names it leaves out."""
    head = path if path.endswith("/") else path + "/"
    if not d.files:
        return head, 0
    if len(d.files) <= max_names:
        return f"{head}: " + " ".join(map(_display, d.files)), 0
    ext_of = _exts(d.files)
    exts = Counter(ext_of)
    named = [f for f, e in zip(d.files, ext_of, strict=True) if not e or " -> " in f]
    counts = [f"{c} .{e}" for e, c in exts.most_common() if e]
    if len(counts) > 6:
        rest = sum(c for e, c in exts.most_common()[6:] if e)
        counts = counts[:6] + [f"{rest} other"]
    line = f"{head} [{len(d.files)} {noun}: {', '.join(counts)}]" if counts else f"{head} [{len(d.files)} {noun}]"
    if named:
        line += ": " + " ".join(map(_display, named))
    return line, len(d.files) - len(named)


def dir_key(line: str) -> str | None:
    """The directory a rendered line names (None for other lines)."""
    for sep in ("/: ", "/ ["):
        i = line.find(sep)
        if i >= 0:
            return line[:i] or "/"
    return line[:-1] or "/" if line.endswith("/") else None


def _max_names(listing: Listing, policy: CompressPolicy) -> int:
    """Names per directory before counting; unlimited when leaves look like directories
    (`find -type d`: few have an extension), since "lodash.merge" must not become "1 .merge"."""
    if listing.style != "find":
        return max(1, policy.listing_max_names)
    leaves = [f for d in listing.dirs.values() for f in d.files]
    with_ext = sum(1 for e in _exts(leaves) if e)
    return max(1, policy.listing_max_names) if with_ext >= 0.3 * len(leaves) else len(leaves) + 1


def compress_listing(text: str, policy: CompressPolicy, ref: str) -> Compressed | None:
    lines = text.rstrip("\n").split("\n")
    listing = parse(lines)
    if listing is None or not listing.dirs:
        return None
    # find and tree cannot tell an empty directory from a file: what is not known is an "entry".
    noun = "files" if listing.style == "ls" else "entries"
    body = [f"Listing ({listing.style}) folded per directory: `dir/: names` names a directory's "
            f"{noun}, `dir/ [N {noun}: counts by extension]` counts a large one's; subdirectories "
            f"have their own lines."]
    dropped = 0
    max_names = _max_names(listing, policy)
    for path, d in listing.dirs.items():
        line, left = _dir_line(path, d, max_names, noun)
        body.append(line)
        dropped += left
    body.extend(listing.other)
    n_files = sum(len(d.files) for d in listing.dirs.values())
    cols = "; ls -l columns dropped" if listing.style == "ls" else ""
    mark = marker.make(
        f"{marker.plural(len(listing.dirs), 'directory', 'directories')} all named, {n_files} other {noun}",
        f"{dropped} names omitted (counted by extension){cols}", ref)
    return Compressed(marker.append("\n".join(body), mark), f"{dropped} of {n_files} names{cols}",
                      facts=(*listing.dirs, *listing.other))


def parse(lines: list[str]) -> Listing | None:
    sample = [ln for ln in lines[:400] if ln.strip()]
    tree = sum(1 for ln in sample if TREE_RE.match(ln))
    ls = sum(1 for ln in sample if LS_RE.match(ln))
    if tree >= 0.5 * len(sample):
        return parse_tree(lines)
    if ls >= 0.5 * len(sample):
        return parse_ls(lines)
    return parse_find(lines)
