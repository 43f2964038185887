"""Facts of a tool output, by simple conservative rules of their own (not the compressors'), and
which of them a compressed text lost. Used by tests/test_compress_facts.py and bench_compress.py.

A fact is (what, value): "line" must be a line of the output (a collapsed `[×N] line` counts),
"lines" a multiset of lines (diffs), "text" a substring, "dir" a directory line, "index" a kept
JSON element (`#i `). An output that was not compressed keeps every fact.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

import orjson

Fact = tuple[str, Any]

# --- logs ------------------------------------------------------------------------------------
_LOG_ERROR_RE = re.compile(
    r"(?i)(?<![\w.-])(?:error|errors|fail|failed|failure|failures|panic|panicked|fatal|exception"
    r"|traceback)(?![\w-])|[a-z](?:Error|Exception)\b"
)
_LOG_SUMMARY_RE = re.compile(
    r"^=+ .*\b(?:passed|failed|errors?)\b.* in [\d.]+s|^test result: |^Tests?:\s+\d+|^Test Suites:"
    r"|^Ran \d+ tests? in |^(?:OK|FAILED)(?: \(|$)|\b\d+ (?:passed|failed)\b|^BUILD (?:SUCCESS|FAILURE)"
    r"|^Found \d+ errors?"
)


_LINT_RE = re.compile(r"^[A-Z]+\d+ \S")  # a linter's diagnostic, followed by its "--> path:line:col"


def log_facts(text: str) -> list[Fact]:
    lines = text.rstrip("\n").split("\n")
    out = [("line", ln) for ln in lines if _LOG_ERROR_RE.search(ln) or _LOG_SUMMARY_RE.search(ln)]
    for ln, nxt in zip(lines, lines[1:], strict=False):
        if _LINT_RE.match(ln) and nxt.lstrip().startswith("--> "):
            out += [("line", ln), ("line", nxt)]
    return out


# --- search ----------------------------------------------------------------------------------
_FLAT_RE = re.compile(r"^([^\s:][^:]*?):(\d+):")
_NUM_RE = re.compile(r"^\d+:")


def search_facts(text: str) -> list[Fact]:
    lines = text.rstrip("\n").split("\n")
    paths: dict[str, None] = {}
    total = 0
    for i, ln in enumerate(lines):
        m = _FLAT_RE.match(ln)
        if m and ("/" in m[1] or "." in m[1]):
            paths[m[1]] = None
            total += 1
        elif _NUM_RE.match(ln):
            total += 1
        elif ln and " " not in ln and i + 1 < len(lines) and _NUM_RE.match(lines[i + 1]):
            paths[ln] = None  # --heading mode
    return [*(("text", p) for p in paths), ("text", f"of {total} match")]


# --- diffs -----------------------------------------------------------------------------------
def diff_facts(text: str) -> list[Fact]:
    keep = Counter(ln for ln in text.rstrip("\n").split("\n")
                   if ln.startswith(("diff --git ", "commit ", "+", "-")))
    return [("lines", keep)]


# --- listings --------------------------------------------------------------------------------
_LS_RE = re.compile(r"^([-dlcbps])[-rwxsStT]{9}\S*\s+\d+\s.*?\d\d:\d\d\s(.+)$|"
                    r"^([-dlcbps])[-rwxsStT]{9}\S*\s+\d+\s.*?\s\d{4}\s(.+)$")
_TREE_RE = re.compile("^((?:[\u2502|][\u00a0 ]{2} |    )*)(?:[\u251c\u2514]\u2500\u2500|[|`]--)[ \u00a0](.+)$")
_TREE_SUMMARY_RE = re.compile(r"^\d+ director(?:y|ies)(?:, \d+ files?)?$")


def listing_facts(text: str) -> list[Fact]:
    lines = text.rstrip("\n").split("\n")
    tree = sum(1 for ln in lines if _TREE_RE.match(ln))
    ls = sum(1 for ln in lines if _LS_RE.match(ln))
    if tree > len(lines) / 2:
        return _tree_facts(lines)
    if ls > len(lines) / 2:
        return _ls_facts(lines)
    dirs: dict[str, None] = {}
    for ln in lines:
        p = ln.rstrip("/")
        if "/" in p:
            dirs[p.rsplit("/", 1)[0] or "/"] = None
    return [("dir", d) for d in dirs]


def _ls_facts(lines: list[str]) -> list[Fact]:
    dirs: dict[str, None] = {}
    cur = "."
    for ln in lines:
        m = _LS_RE.match(ln)
        if m:
            kind, name = (m[1], m[2]) if m[1] else (m[3], m[4])
            if kind == "d" and name not in (".", ".."):
                dirs[f"{cur}/{name}"] = None
        elif ln.endswith(":") and " " not in ln:
            cur = ln[:-1].rstrip("/")
            dirs[cur] = None
    return [("dir", d) for d in dirs]


def _tree_facts(lines: list[str]) -> list[Fact]:
    rows = [(len(m[1]) // 4, m[2]) for ln in lines if (m := _TREE_RE.match(ln))]
    root = lines[0].rstrip("/")
    facts: list[Fact] = [("dir", root)]
    stack = [root]
    for i, (depth, name) in enumerate(rows):
        del stack[depth + 1:]
        if i + 1 < len(rows) and rows[i + 1][0] > depth:
            stack.append(f"{stack[-1]}/{name.rstrip('/')}")
            facts.append(("dir", stack[-1]))
    facts += [("line", ln) for ln in lines if _TREE_SUMMARY_RE.match(ln)]
    return facts


# --- JSON ------------------------------------------------------------------------------------
_STATUS_KEYS = {"outcome", "status", "severity", "issue_severity", "level", "state", "conclusion", "result"}
_RARE_KEYS = {"code", "rule", "rule_id", "test_id", "check_id", "category"}
_NPM_PROBLEMS = ("invalid", "extraneous", "missing")


def _largest_array(doc: Any) -> list[dict] | None:
    best: list[dict] | None = None
    todo = [(doc, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, list) and len(node) >= 3 and all(isinstance(x, dict) for x in node):
            if best is None or len(node) > len(best):
                best = node
        elif isinstance(node, dict) and depth < 5:
            todo.extend((v, depth + 1) for v in node.values())
    return best


def _status_hits(items: list[dict]) -> set[int]:
    hits: set[int] = set()
    for key in _STATUS_KEYS:
        for sub in (None, *{k for it in items for k, v in it.items() if isinstance(v, dict)}):
            col = [(i, (it.get(sub) or {}).get(key) if sub else it.get(key)) for i, it in enumerate(items)]
            col = [(i, v) for i, v in col if isinstance(v, str)]
            if len({v for _, v in col}) > 1:
                top = Counter(v for _, v in col).most_common(1)[0][0]
                hits |= {i for i, v in col if v != top}
    return hits


def _other_hits(items: list[dict]) -> set[int]:
    hits: set[int] = set()
    sets = Counter(frozenset(it) for it in items)
    common, count = sets.most_common(1)[0]
    if count >= len(items) / 2:
        hits |= {i for i, it in enumerate(items) if sets[frozenset(it)] == 1 and frozenset(it) != common}
    for key in _RARE_KEYS:
        col = Counter(it[key] for it in items if isinstance(it.get(key), str))
        if col and col.most_common(1)[0][1] >= 3 and len(col) <= len(items) / 2:
            hits |= {i for i, it in enumerate(items) if isinstance(it.get(key), str) and col[it[key]] == 1}
    for key, v0 in items[0].items():
        nums = [(i, it[key]) for i, it in enumerate(items)
                if type(it.get(key)) in (int, float)]
        if type(v0) not in (int, float) or len(nums) < 20:
            continue
        med = statistics.median_low(v for _, v in nums)
        mad = statistics.median_low(abs(v - med) for _, v in nums)
        far = [i for i, v in nums if mad > 0 and abs(v - med) > 20 * 1.4826 * mad]
        if len(far) <= 2:
            hits |= set(far)
    return hits


def _npm_problems(doc: Any) -> list[Fact]:
    facts: list[Fact] = []
    todo = [doc]
    while todo:
        node = todo.pop()
        deps = node.get("dependencies") if isinstance(node, dict) else None
        if isinstance(deps, dict):
            for name, dep in deps.items():
                if isinstance(dep, dict):
                    if any(dep.get(k) for k in _NPM_PROBLEMS):
                        facts.append(("text", name))
                    todo.append(dep)
    return facts


def json_facts(text: str) -> list[Fact]:
    doc = orjson.loads(text)
    facts = _npm_problems(doc)
    items = _largest_array(doc)
    if items is None:
        return facts
    facts += [("index", i) for i in sorted(_status_hits(items) | _other_hits(items))]
    keys = {k for it in items for k in it}
    return facts + [("text", k) for k in sorted(keys)]


# --- checking --------------------------------------------------------------------------------
EXTRACTORS = {"log": log_facts, "search": search_facts, "diff": diff_facts,
              "listing": listing_facts, "json": json_facts, "text": lambda text: []}
_REPEAT_RE = re.compile(r"^\[×\d+\] ")


def facts(kind: str, text: str) -> list[Fact]:
    return EXTRACTORS[kind](text)


def count(fs: list[Fact]) -> int:
    return sum(sum(v.values()) if what == "lines" else 1 for what, v in fs)


def _out_dirs(lines: list[str]) -> set[str]:
    out = set()
    for ln in lines:
        for sep in ("/: ", "/ ["):
            if sep in ln:
                out.add(ln.split(sep, 1)[0])
                break
        else:
            if ln.endswith("/"):
                out.add(ln[:-1])
    return out


def lost(fs: list[Fact], out: str | None) -> list[Fact]:
    """The facts `out` (a compressed text; None = forwarded unchanged) does not keep."""
    if out is None or "as a lossless table" in out.rsplit("\n", 1)[-1]:
        return []
    lines = out.split("\n")
    line_set = set(lines) | {_REPEAT_RE.sub("", ln, count=1) for ln in lines if ln.startswith("[×")}
    dirs = _out_dirs(lines)
    missing: list[Fact] = []
    for what, v in fs:
        if what == "line" and v not in line_set:
            missing.append((what, v))
        elif what == "text" and v not in out:
            missing.append((what, v))
        elif what == "dir" and v not in dirs:
            missing.append((what, v))
        elif what == "index" and f"#{v} " not in out:
            missing.append((what, v))
        elif what == "lines":
            have = Counter(lines)
            missing += [("line", ln) for ln, c in v.items() for _ in range(max(0, c - have[ln]))]
    return missing
