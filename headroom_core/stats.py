"""Aggregate event-log records (one per LLM flow) into per-session and total figures; render them.

Owns the reading of the event-log schema for reporting: requests, tokens by kind, cache-read
share, errors and tokens saved by rewriting. Records may miss any field; nothing here raises.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NO_SESSION = "(none)"
OTHER = "(other sessions)"
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


@dataclass(slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0  # uncached input (see headroom_core.usage)
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    errors: int = 0
    tokens_saved: int = 0

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens

    @property
    def cache_read_share(self) -> float | None:
        """cache_read / (input + cache_read + cache_creation); None when no input was counted."""
        total = self.total_input
        return self.cache_read_tokens / total if total else None

    def add(self, tokens: tuple[int, int, int, int], error: bool, saved: int) -> None:
        """`tokens`: input, output, cache read, cache creation."""
        self.requests += 1
        self.input_tokens += tokens[0]
        self.output_tokens += tokens[1]
        self.cache_read_tokens += tokens[2]
        self.cache_creation_tokens += tokens[3]
        self.errors += error
        self.tokens_saved += saved


def _count(value: Any) -> int:
    if type(value) is int:
        return max(0, value)
    if type(value) is float and value.is_integer():
        return max(0, int(value))
    return 0


def is_error(record: dict[str, Any]) -> bool:
    """status >= 400, an `error` set, or a stream that errored or was truncated."""
    status = record.get("status")
    if type(status) is int and status >= 400:
        return True
    if record.get("error"):
        return True
    return record.get("stream_state") in ("errored", "truncated")


def tokens_saved(record: dict[str, Any]) -> int:
    decisions = record.get("decisions")
    rewrite = decisions.get("rewrite") if isinstance(decisions, dict) else None
    return _count(rewrite.get("tokens_saved")) if isinstance(rewrite, dict) else 0


class Stats:
    """Feed event-log records with `add`; read `total` and `sessions` (session id -> Totals)."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self.total = Totals()
        self.sessions: dict[str, Totals] = {}
        self.ignored = 0  # records that were not JSON objects
        self.max_sessions = max_sessions  # past it, new sessions are counted under OTHER
        self.labels: dict[str, str] = {}  # session id -> readable name (record's session_label)
        # The proxy adds from its background thread while `headroom.stats` reads on the loop.
        self._lock = threading.Lock()

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> Stats:
        stats = cls()
        for record in records:
            stats.add(record)
        return stats

    def add(self, record: Any, read: Any = None) -> None:
        """`read`: the record as `figures.turn_of` read it (the proxy reads each record once
        for the dashboard and these figures alike); None: read it here."""
        if not isinstance(record, dict):
            self.ignored += 1
            return
        if read is not None:
            tokens = (read.input, read.output, read.cache_read, read.cache_write)
            error, saved = read.error, read.saved_tokens
        else:
            raw = record.get("usage")
            raw = raw if isinstance(raw, dict) else {}
            tokens = tuple(_count(raw.get(k)) for k in TOKEN_FIELDS)
            error, saved = is_error(record), tokens_saved(record)
        session = record.get("session_id")
        key = session if isinstance(session, str) and session else NO_SESSION
        with self._lock:
            totals = self.sessions.get(key)
            if totals is None:
                if len(self.sessions) >= self.max_sessions:
                    key = OTHER
                totals = self.sessions.setdefault(key, Totals())
            totals.add(tokens, error, saved)
            self.total.add(tokens, error, saved)
            label = record.get("session_label")
            if key != OTHER and isinstance(label, str) and label:
                self.labels[key] = label

    def rows(self) -> list[tuple[str, Totals]]:
        """Sessions by requests, most first (ties by session id, so the order is stable)."""
        with self._lock:
            items = [(k, dataclasses.replace(v)) for k, v in self.sessions.items()]
        return sorted(items, key=lambda kv: (-kv[1].requests, kv[0]))


_COLUMNS = (
    ("REQS", 6),
    ("INPUT", 12),
    ("OUTPUT", 11),
    ("CACHE_READ", 13),
    ("CACHE_WRITE", 12),
    ("CACHE%", 7),
    ("ERRORS", 7),
    ("SAVED", 10),
)
SESSION_WIDTH = 36


def _cells(t: Totals) -> list[str]:
    share = t.cache_read_share
    return [
        f"{t.requests:,}",
        f"{t.input_tokens:,}",
        f"{t.output_tokens:,}",
        f"{t.cache_read_tokens:,}",
        f"{t.cache_creation_tokens:,}",
        "-" if share is None else f"{share:.1%}",
        f"{t.errors:,}",
        f"{t.tokens_saved:,}",
    ]


def _line(label: str, cells: list[str]) -> str:
    if len(label) > SESSION_WIDTH:
        label = label[: SESSION_WIDTH - 1] + "…"
    out = [label.ljust(SESSION_WIDTH)]
    out += [cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True)]
    return " ".join(out).rstrip()


def _name(stats: Stats, session: str) -> str:
    """The session's readable name with the start of its id, or the id alone."""
    label = stats.labels.get(session)
    if label is None:
        return session
    room = SESSION_WIDTH - 10
    label = label if len(label) <= room else label[: room - 1] + "…"
    return f"{label} {session[:8]}"


def format_table(stats: Stats) -> str:
    """A fixed-width table: one row per session (most requests first), then a TOTAL row."""
    header = _line("SESSION", [name for name, _ in _COLUMNS])
    rule = "-" * len(header)
    lines = [header, rule]
    lines += [_line(_name(stats, session), _cells(t)) for session, t in stats.rows()]
    lines += [rule, _line("TOTAL", _cells(stats.total))]
    return "\n".join(lines)
