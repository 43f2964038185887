"""Readable session names: which client, and where it works (or what it was first asked).

`describe` makes a short label from a request's headers and body: the client (from User-Agent,
Codex's `originator`, Claude Code's headers), and the working directory Claude Code and Codex put
in their prompts, or else a snippet of the first user message with anything that looks like a
credential cut out (kept in memory for the dashboard, never written to the event log:
`for_log`). `SessionLabels` remembers one label per session id, so the work is done once
per session, in the background thread, never on the event loop.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

import orjson

MAX_LABEL = 72
MAX_WHERE = 48
MAX_SNIPPET = 40
PARSE_LIMIT = 4 << 20  # bodies larger than this are not parsed for a prompt snippet
TRIES = 8  # requests of a session searched for a working directory before settling

# Claude Code: "Working directory: /path" in its <env> block (JSON-escaped: ends at `\n`);
# Codex: "<cwd>/path</cwd>" in its environment_context message.
_CWD = (re.compile(rb'Working directory: ((?:[^"\\\n]|\\\\){1,400})'),
        re.compile(rb"<cwd>((?:[^<\"\\\n]|\\\\){1,400})</cwd>"))
_HOME = re.compile(r"^(?:/home/[^/]+|/Users/[^/]+|/root|[A-Za-z]:\\Users\\[^\\]+)(?=$|[/\\])")
_SECRET = re.compile(
    r"(?i)\b(?:sk|pk|rk)-[\w-]{6,}|\bBearer\s+\S+|\beyJ[\w-]+\.[\w-]+\.?[\w-]*"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{12,}|\bgh[pousr]_\w+|\bxox[a-z]-\S+"
    r"|(?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*\S+|[\w+/=-]{28,}")
_SPACE = re.compile(r"\s+")
_PRODUCT = re.compile(r"[A-Za-z][\w.+-]{0,40}")
_UA_NAMES = (  # (User-Agent product, lower case) -> client name
    ("claude-cli", "claude-code"), ("claude-code", "claude-code"),
    ("codex_cli_rs", "codex"), ("codex_exec", "codex exec"), ("codex", "codex"),
    ("anthropic/python", "anthropic-python"), ("anthropic/js", "anthropic-js"),
    ("openai/python", "openai-python"), ("openai/js", "openai-js"),
)


def _header(fields: Any, name: bytes) -> str | None:
    for n, v in fields or ():
        if isinstance(n, bytes) and n.lower() == name and isinstance(v, bytes):
            return v.decode("latin-1").strip()
    return None


def client_of(fields: Any) -> str | None:
    """The client's name from its headers, e.g. "claude-code", "codex", "anthropic-python"."""
    ua = (_header(fields, b"user-agent") or "").lower()
    originator = (_header(fields, b"originator") or "").lower()
    name = None
    for marker, label in _UA_NAMES:
        if ua.startswith(marker) or originator.startswith(marker):
            name = label
            break
    if name is None and (_header(fields, b"x-app") or "").lower() == "cli":
        name = "claude-code"
    if name is None and ua:
        m = _PRODUCT.match(ua)
        name = m.group(0).split("/")[0] if m else None
    if name is not None and _header(fields, b"x-claude-code-agent-id"):
        name += " agent"
    return name


def short_path(path: str) -> str:
    path = _HOME.sub("~", path.strip())
    if len(path) > MAX_WHERE:
        path = "…" + path[-(MAX_WHERE - 1):]
    return path


def cwd_of(body: bytes | None) -> str | None:
    """The working directory an agent names in its prompt, shortened (home as ~)."""
    if not body:
        return None
    for pattern in _CWD:
        m = pattern.search(body)
        if m is not None:
            raw = m.group(1).replace(b"\\\\", b"\\")
            text = raw.decode("utf-8", "replace").strip()
            if text:
                return short_path(text)
    return None


def redact(text: str) -> str:
    return _SECRET.sub("…", text)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
    return out


def first_prompt(doc: Any) -> str | None:
    """A short snippet of the first user message's own text (Anthropic, Chat or Responses
    shape), skipping injected `<system-reminder>`-style blocks; credentials cut out."""
    if not isinstance(doc, dict):
        return None
    items = doc.get("messages")
    if not isinstance(items, list):
        items = doc.get("input")
    if isinstance(items, str):
        candidates = [items]
    elif isinstance(items, list):
        candidates = []
        for item in items:
            if isinstance(item, dict) and item.get("role") == "user":
                candidates = _texts(item.get("content"))
                break
    else:
        return None
    for text in candidates:
        t = text.strip()
        if not t or t.startswith("<"):
            continue
        t = _SPACE.sub(" ", redact(t)).strip()
        if len(t) > MAX_SNIPPET:
            t = t[:MAX_SNIPPET - 1].rstrip() + "…"
        return f"“{t}”" if t else None
    return None


def describe(fields: Any, body: bytes | None) -> tuple[str | None, bool]:
    """(label, settled): settled when the working directory was found (nothing better will
    come); otherwise the label has the client and at most a prompt snippet."""
    client = client_of(fields)
    where = cwd_of(body)
    settled = where is not None
    if where is None and body and len(body) <= PARSE_LIMIT:
        try:
            where = first_prompt(orjson.loads(body))
        except (orjson.JSONDecodeError, RecursionError):
            where = None
    label = " · ".join(p for p in (client, where) if p)
    return (label[:MAX_LABEL] or None), settled


def for_log(label: str | None) -> str | None:
    """The label as the event log keeps it: without the prompt snippet. Prompts never land on
    disk; the snippet lives in memory only, for the dashboard."""
    if not label or "“" not in label:
        return label
    kept = " · ".join(p for p in label.split(" · ") if not p.startswith("“"))
    return kept or None


class SessionLabels:
    """Session id -> label, bounded (least recently labelled forgotten first). Thread-safe."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self.max_sessions = max_sessions
        self._labels: OrderedDict[str, tuple[str | None, bool, int]] = OrderedDict()
        self._lock = threading.Lock()

    def settled(self, session_id: str | None) -> bool:
        """Whether nothing more is to be learnt about the session's name."""
        entry = self._labels.get(session_id) if session_id is not None else None
        return entry is not None and (entry[1] or entry[2] >= TRIES)

    def get(self, session_id: str | None) -> str | None:
        if session_id is None:
            return None
        entry = self._labels.get(session_id)
        return entry[0] if entry else None

    def label(self, session_id: str | None, fields: Any, body: bytes | None) -> str | None:
        """The session's label, working it out from this request while it is not settled."""
        if session_id is None:
            return None
        with self._lock:
            entry = self._labels.get(session_id)
        if entry is not None and (entry[1] or entry[2] >= TRIES):
            return entry[0]
        label, settled = describe(fields, body)
        with self._lock:
            old = self._labels.get(session_id)
            tries = (old[2] if old else 0) + 1
            if old is not None and old[0] and not settled and (
                    "“" in old[0] or not label):
                label = old[0]  # the first snippet names the conversation; keep it
            self._labels[session_id] = (label, settled, tries)
            self._labels.move_to_end(session_id)
            while len(self._labels) > self.max_sessions:
                self._labels.popitem(last=False)
        return label

    def clear(self) -> None:
        with self._lock:
            self._labels.clear()
