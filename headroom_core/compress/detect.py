"""What kind of tool output a text is: "json", "log", "search", "diff", "listing" or "text".

Also unwraps the envelopes Codex puts around shell output (a JSON object with "output" and
"metadata", or an "Exit code: …\\nOutput:\\n" header) so the inner output is what gets compressed.
Detection is deliberately conservative: a misread log costs savings, a misread source file costs trust.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

# A text longer than this is sampled (head and tail) for the line-statistics detectors.
_SAMPLE_CHARS = 24 * 1024


@dataclass(frozen=True, slots=True)
class Detection:
    kind: str  # "json" | "log" | "search" | "diff" | "listing" | "text"
    json_value: Any = None  # the parsed document, when kind == "json"
    json_path: tuple[str, ...] = ()  # keys from the root to the array of objects ("" path = root)


TEXT = Detection("text")


# ---------------------------------------------------------------------------------------------
# Codex envelopes


@dataclass(frozen=True, slots=True)
class Envelope:
    inner: str  # the shell output proper
    wrapper: str  # "none" | "codex-json" | "codex-text"
    head: str = ""  # codex-text: everything up to and including "Output:\n"
    obj: dict | None = None  # codex-json: the parsed envelope (key order kept)

    def rewrap(self, new_inner: str) -> str:
        if self.wrapper == "codex-text":
            return self.head + new_inner
        if self.wrapper == "codex-json" and self.obj is not None:
            return dumps({**self.obj, "output": new_inner})
        return new_inner


# codex-rs formats shell results as "Exit code: N\nWall time: X seconds\n[Total output lines: N\n]
# Output:\n…" (freeform shell) or "Chunk ID: …\nWall time: …\nProcess exited with code N\n
# [Original token count: N\n]Output:\n…" (unified exec).
_CODEX_HEAD_RE = re.compile(
    r"(?:(?:Exit code: -?\d+|Wall time: [\d.]+ seconds|Total output lines: \d+|Chunk ID: [^\n]*"
    r"|Process exited with code -?\d+|Process running with session ID [^\n]+"
    r"|Original token count: \d+)\n){1,8}Output:\n"
)


def unwrap(text: str) -> Envelope:
    """Split a Codex shell envelope from its output; anything else is its own inner text."""
    if text.startswith("{") and '"output"' in text[:64] and text.rstrip().endswith("}"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if (
            isinstance(obj, dict)
            and isinstance(obj.get("output"), str)
            and isinstance(obj.get("metadata"), dict)
        ):
            return Envelope(obj["output"], "codex-json", obj=obj)
    if text.startswith(("Exit code: ", "Chunk ID: ", "Wall time: ", "Process ")):
        m = _CODEX_HEAD_RE.match(text)
        if m:
            return Envelope(text[m.end():], "codex-text", head=text[: m.end()])
    return Envelope(text, "none")


def dumps(value: Any) -> str:
    """Compact JSON text; exact for values orjson cannot take (>64-bit ints, lone surrogates)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# JSON

# orjson silently turns integers beyond 64 bits into floats: documents with a 19+ digit run go to
# the stdlib. Mapping digits to "0" and searching for a run is far cheaper than a regex.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _has_long_digit_run(s: str) -> bool:
    # On bytes: str.translate is a slow per-character loop as soon as the text is not ASCII.
    return _LONG_RUN in s.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_ZERO)


def parse_json(text: str) -> tuple[bool, Any]:
    """(ok, value) for a JSON document; never raises."""
    s = text.strip()
    if not s or s[0] not in "[{":
        return False, None
    try:
        value = orjson.loads(s)
        if _has_long_digit_run(s):
            value = json.loads(s)
        return True, value
    except Exception:
        try:
            return True, json.loads(s)  # lone surrogates, NaN, ...
        except Exception:
            return False, None


def _is_object_array(value: Any, min_items: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= min_items
        and all(type(x) is dict for x in value)
        and any(value)
    )


def tree_key(values: list[dict]) -> str | None:
    """The key under which these objects nest maps of further objects (npm's `dependencies`)."""
    for v in values:
        for key, sub in v.items():
            if type(sub) is dict and sub and all(type(x) is dict for x in sub.values()):
                return key
    return None


def _is_object_map(value: Any, min_items: int) -> bool:
    """A JSON object used as a keyed collection: 8+ object values, or a tree of such maps."""
    if type(value) is not dict or len(value) < max(1, min_items):
        return False
    values = list(value.values())
    if not all(type(v) is dict for v in values) or not any(values):
        return False
    return len(values) >= 8 or tree_key(values) is not None


def flatten_map(value: dict) -> tuple[list[dict], list[str]]:
    """Elements of an object map, nested maps flattened depth-first; labels are key paths (a > b)."""
    items: list[dict] = []
    labels: list[str] = []
    key = tree_key(list(value.values()))
    stack: list[tuple[str, dict]] = [(k, v) for k, v in reversed(value.items())]
    while stack:
        label, obj = stack.pop()
        sub = obj.get(key) if key is not None else None
        if type(sub) is dict and sub and all(type(x) is dict for x in sub.values()):
            obj = {k: v for k, v in obj.items() if k != key}
            stack.extend((f"{label} > {k}", v) for k, v in reversed(sub.items()))
        items.append(obj)
        labels.append(label)
        if len(items) > 200_000:
            break  # a pathological document: what is listed stays correct, the rest is cut
    return items, labels


def is_collection(value: Any, min_items: int) -> bool:
    """An array of objects, or an object used as a keyed map of objects."""
    return _is_object_array(value, min_items) or _is_object_map(value, min_items)


def _collection_size(value: Any, min_items: int) -> int:
    if _is_object_array(value, min_items):
        return len(value)
    if _is_object_map(value, min_items):
        return len(flatten_map(value)[0])
    return 0


def find_object_array(value: Any, min_items: int = 3) -> tuple[str, ...] | None:
    """Path to the largest array (or keyed map) of objects: the root, or inside objects (4 deep)."""
    if _is_object_array(value, min_items):
        return ()
    best: tuple[str, ...] | None = () if _is_object_map(value, min_items) else None
    best_len = _collection_size(value, min_items) if best is not None else 0
    frontier: list[tuple[tuple[str, ...], dict]] = [((), value)] if type(value) is dict else []
    for _ in range(4):
        nxt: list[tuple[tuple[str, ...], dict]] = []
        for path, obj in frontier:
            for key, v in obj.items():
                size = _collection_size(v, min_items)
                if size > best_len:
                    best, best_len = path + (key,), size
                elif type(v) is dict and size == 0:
                    nxt.append((path + (key,), v))
        frontier = nxt
    return best


def elements(node: Any) -> tuple[list[dict], list[str] | None]:
    """The objects of a found collection, and their labels when it is a keyed map."""
    if type(node) is dict:
        return flatten_map(node)
    return node, None


def get_path(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


# ---------------------------------------------------------------------------------------------
# Line-statistics detectors (diff, search, log), run on a sample of the text


def _sample(text: str) -> str:
    if len(text) <= 2 * _SAMPLE_CHARS:
        return text
    head = text[:_SAMPLE_CHARS]
    tail = text[-_SAMPLE_CHARS:]
    # Cut at line boundaries so no half line skews the statistics.
    head = head[: head.rfind("\n") + 1] or head
    tail = tail[tail.find("\n") + 1:] or tail
    return head + tail


HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_HUNK_SEARCH_RE = re.compile(r"(?m)^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@")
_DIFF_FIRST = ("diff ", "--- ", "Index: ", "commit ", "From ")
DIFF_HEADER_PREFIXES = (
    "diff ", "index ", "--- ", "+++ ", "new file mode", "deleted file mode", "old mode", "new mode",
    "similarity index", "dissimilarity index", "rename from", "rename to", "copy from", "copy to",
    "Binary files", "Index: ", "====",
)
_DIFF_OTHER = ("commit ", "Author:", "AuthorDate:", "Commit:", "CommitDate:", "Date:", "Merge:",
               "From ", "From:", "Subject:")


def _is_diff(text: str, sample: str) -> bool:
    first = text.lstrip()[:16]
    if not first.startswith(_DIFF_FIRST):
        return False
    m = _HUNK_SEARCH_RE.search(text)
    if not m:
        return False
    before = text[: m.start()]
    if "diff " not in before and "\n+++ " not in before and not before.startswith("+++ "):
        return False
    lines = sample.split("\n")
    grammar = sum(
        1 for ln in lines
        if not ln or ln[0] in " +-\\@" or ln.startswith(DIFF_HEADER_PREFIXES)
        or ln.startswith(_DIFF_OTHER)
    )
    return grammar >= 0.9 * len(lines)


# path:line:text and path:line:col:text (grep -n, rg --no-heading); the path must look like one.
SEARCH_FLAT_RE = re.compile(r"^((?:[A-Za-z]:)?[^\s:\x00][^:\x00\s]*?):(\d+):(?:(\d+):)?(.*)$", re.S)
SEARCH_NUM_RE = re.compile(r"^(\d+)([:-])(.*)$", re.S)
# Compiler diagnostics share the path:line:col shape; they make a log, not search results.
_DIAG_TEXT_RE = re.compile(r"\s*(?:fatal error|error|warning|note|In function|undefined reference)\b")


def looks_like_path(p: str) -> bool:
    return ("/" in p or "\\" in p or "." in p) and not p.isdigit() and "://" not in p


def _is_search(sample: str) -> bool:
    lines = [ln for ln in sample.split("\n") if ln.strip()]
    if not lines:
        return False
    flat = diag = numbered = headings = seps = ctx = 0
    last_path = ""
    for i, ln in enumerate(lines):
        m = SEARCH_FLAT_RE.match(ln)
        if m and looks_like_path(m.group(1)):
            flat += 1
            last_path = m.group(1)
            if _DIAG_TEXT_RE.match(m.group(4)):
                diag += 1
            continue
        if ln == "--":
            seps += 1
            continue
        if last_path and ln.startswith(last_path + "-"):
            ctx += 1
            continue
        if SEARCH_NUM_RE.match(ln):
            numbered += 1
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if looks_like_path(ln) and " " not in ln and SEARCH_NUM_RE.match(nxt):
            headings += 1
    total = len(lines)
    if flat >= 3 and diag <= 0.2 * flat and flat + ctx + seps >= 0.8 * total:
        return True
    return headings >= 1 and numbered >= 3 and numbered + headings + seps >= 0.8 * total


# `ls -l` entries: type and mode, links, owner [group], size, date, name.
LS_RE = re.compile(
    r"^([-dlcbpsD])[-rwxsStTlL]{9}\S*\s+\d+\s+(?:\S+\s+){1,2}(?:\d+,\s*)?[\d.,]+[KMGTPE]?\s+"
    r"(?:[A-Z][a-z]{2}\s+\d{1,2}\s+(?:\d{4}|\d\d:\d\d)|\d{1,2}\s+[A-Z][a-z]{2}\s+(?:\d{4}|\d\d:\d\d)"
    r"|\d{4}-\d\d-\d\d(?:\s+\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\s+[+-]\d{4})?)?)\s(.+)$"
)
# `tree` entries: 4-character indent units, then a branch (Unicode, ASCII, or with NBSPs).
TREE_RE = re.compile(
    "^((?:\u2502\u00a0\u00a0 |\u2502   |\\|   |    |\u00a0\u00a0\u00a0 )*)"
    "(?:\u251c\u2500\u2500[ \u00a0]|\u2514\u2500\u2500[ \u00a0]|\\|-- |`-- )(.+)$"
)
_FIND_LINE_RE = re.compile(r"^(?:\.|/|[^\s/:][^\t:]*/[^\t:]*|[^\s/:][^\t: ]*/?)$")


def _is_listing(sample: str) -> bool:
    lines = [ln for ln in sample.split("\n") if ln.strip()]
    if len(lines) < 8:
        return False
    if sum(1 for ln in lines if TREE_RE.match(ln)) >= 0.7 * len(lines):
        return True
    ls = sum(1 for ln in lines if LS_RE.match(ln))
    aux = sum(1 for ln in lines if ln.startswith("total ") or (ln.endswith(":") and " " not in ln))
    if ls >= 0.6 * len(lines) and ls + aux >= 0.9 * len(lines):
        return True
    return _is_find(lines)


def _is_find(lines: list[str]) -> bool:
    """One path per line, nearly all with a "/", sharing their first component (no URLs)."""
    paths = [ln for ln in lines if _FIND_LINE_RE.match(ln) and "://" not in ln and ln.count(" ") <= 1]
    if len(paths) < 0.9 * len(lines) or sum(1 for p in paths if "/" in p) < 0.8 * len(lines):
        return False
    first = Counter(p.split("/", 1)[0] for p in paths).most_common(1)[0][1]
    return first >= 0.5 * len(paths) and len(set(paths)) >= 0.95 * len(paths)


_LOG_SIGNAL_RE = re.compile(
    r"""(?mx)^(?:
      \[?\d{4}[-/]\d\d[-/]\d\d[T\ ]\d\d:\d\d(?::\d\d)?
     |\d\d:\d\d:\d\d(?:[.,]\d+)?[\ \t]
     |\[[\ \t]*\d+\.\d+\]
     |\[?(?:ERROR|WARN(?:ING)?|INFO|DEBUG|TRACE|FATAL|CRITICAL|NOTICE)\]?(?::|[\ \t]+[-:|]|\]|[\ \t]{2,})
     |(?:level|lvl)=\w+|time="?\d
     |\{"(?:level|lvl|severity|time|timestamp|ts|msg|message)":
     |Traceback\ \(most\ recent\ call\ last\):
     |[\ \t]+at\ [\w$.<>\[\]]+\ ?\(.*:\d+(?::\d+)?\)[\ \t]*$
     |[\ \t]+File\ ".*",\ line\ \d+
     |={3,}\ .*\ ={3,}[\ \t]*$
     |_{3,}\ .*\ _{3,}[\ \t]*$
     |(?:PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\ \S
     |\S+\.py::\S+
     |\S+\.py\ [.FEsxX]+[\ \t]+\[[\ \t]*\d+%\]
     |collected\ \d+\ items?
     |(?:PASS|FAIL)\ +\S
     |Tests?:[\ \t]+\d+|Test\ Suites:
     |\ {2,}(?:Compiling|Checking|Finished|Running|Downloaded|Downloading|Fresh|Documenting
              |Installing|Updating|Locking|Adding|Blocking|Packaging|Verifying|Uploading)\ \S
     |(?:error|warning)(?:\[\w+\])?:[ ]
     |\ +-->\ \S+:\d+:\d+|-->\ \S+:\d+:\d+|[A-Z]{1,5}\d{2,4}(?:\[\*\])?\ \S(?=[^\n]*\n[\ \t]*-->\ )
     |test\ result:\ |test\ \S+\ \.\.\.\ (?:ok|FAILED|ignored)
     |===\ RUN\ |---\ (?:PASS|FAIL|SKIP):|ok[\ \t]+\S+[\ \t]+[\d.]+s|FAIL[\ \t]+\S+[\ \t]+[\d.]+s
     |PASS[\ \t]*$|FAIL[\ \t]*$
     |npm\ (?:ERR!|WARN|warn|notice|error|http|info|verb|sill|timing)\b
     |added\ \d+\ packages?|found\ \d+\ vulnerabilit|up\ to\ date,\ audited
     |make(?:\[\d+\])?:[ ]
     |\S+\.(?:c|cc|cpp|cxx|h|hpp|m|mm|rs|go|swift|ts|tsx|js|jsx|py|java|kt|cs|rb|php):\d+:(?:\d+:)?
       \ (?:fatal\ error|error|warning|note):
     |\S+\(\d+,\d+\):\ (?:error|warning)\ [A-Z]+\d+
     |error\ TS\d+:
     |\[(?:INFO|WARNING|WARN|ERROR|DEBUG)\][ ]
     |>\ Task\ :|BUILD\ (?:SUCCESS|SUCCESSFUL|FAILED|FAILURE)
     |(?:Collecting|Requirement\ already\ satisfied|Installing\ collected\ packages
        |Successfully\ (?:installed|built)|Building\ wheel|Using\ cached|Attempting\ uninstall)\b
     |(?:Get|Hit|Ign|Err):\d+[ ]
     |Reading\ (?:package|state)|Building\ dependency|Unpacking\ \S+\ \(|Setting\ up\ \S+\ \(
     |Selecting\ previously|Preparing\ to\ unpack
     |\#\d+\ \S|Step\ \d+/\d+\ :|\ --->[ ]
     |\[\d{1,2}:\d\d:\d\d(?:\ ?[AP]M)?\][ ]
     |\[\d+/\d+\]\ \S
     |(?:gcc|g\+\+|cc|c\+\+|clang|clang\+\+|ar|ld|nvcc|libtool|javac|rustc)\ +-
     |\ +(?:CC|CXX|LD|AR|AS|GEN|HOSTCC|CC\ \[M\])\ +\S
     |[^\n]*\ \.\.\.\ (?:ok|FAIL|FAILED|ERROR|ignored|skipped|expected\ failure)\b
     |\x1b\[[\d;]*m
     |E\ {3,}\S
     |[\ \t]*\d+\ (?:passed|failed|errors?)\b
     |(?:Exit\ code|exit\ status|exit\ code)\ -?\d
     |Ran\ \d+\ tests?\ in|OK(?:\ \(|[\ \t]*$)|FAILED\ \(
     |Segmentation\ fault|panic:|thread\ '.*'\ panicked\ at
    )"""
)

# Lines that read as program text. Source code must never be treated as a log.
_CODE_RE = re.compile(
    r"""(?mx)^(?:
      [\ \t]*(?:def|class|import|from\ +[\w.]+\ +import|function|const|let|var|export|public|private
          |protected|static|fn|func|package|using|namespace|struct|enum|interface|impl|trait|module
          |return|async|await|yield|raise|throw|try|catch|except|finally|elif|else|switch|case
          |break|continue|pub|use|mod|typedef|template|val|lambda|with)\b
     |[\ \t]*\#[\ \t]*(?:include|define|if|ifdef|ifndef|endif|pragma|import)\b
     |[\ \t]*(?://|/\*|\*/|\*\ |\#\ )
     |[^\n]*[{};,(\[][\ \t]*$
     |[\ \t]*[}\])]
     |[\ \t]*@\w+
     |[\ \t]*(?:if|for|while)[\ \t]*\(
     |[\ \t]*(?:if|for|while|elif)\ [^\n]*:[\ \t]*$
    )"""
)

# Claude Code's Read tool and `cat -n` number every line: that is file content, not output.
_NUMBERED_CONTENT_RE = re.compile(r"(?m)^[ \t]*\d+(?:→|\t)")


def _is_log(sample: str) -> bool:
    total = sample.count("\n") + 1 - len(re.findall(r"(?m)^[ \t]*$", sample))
    if total < 3:
        return False
    if len(_NUMBERED_CONTENT_RE.findall(sample)) >= 0.5 * total:
        return False
    signals = len(_LOG_SIGNAL_RE.findall(sample))
    if signals < 3 or signals < 0.1 * total:
        return False
    code = len(_CODE_RE.findall(sample))
    return signals >= 0.5 * code


def detect(text: str, *, min_items: int = 3) -> Detection:
    """Classify a tool output. Never raises; anything unsure is "text"."""
    try:
        return _detect(text, min_items)
    except Exception:
        return TEXT


def _detect(text: str, min_items: int) -> Detection:
    stripped = text.lstrip()
    if not stripped:
        return TEXT
    if stripped[0] in "[{":
        ok, value = parse_json(stripped)
        if ok:
            path = find_object_array(value, min_items)
            return TEXT if path is None else Detection("json", value, path)
    sample = _sample(text)
    if _is_diff(text, sample):
        return Detection("diff")
    if _is_search(sample):
        return Detection("search")
    if _is_listing(sample):
        return Detection("listing")
    if _is_log(sample):
        return Detection("log")
    return TEXT
