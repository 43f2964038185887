"""Header stripping and inbound controls.

Headers under configured prefixes (default `x-headroom-`) and a few proxy-internal names never go
upstream, every duplicate and case variant removed. Before they go, they steer the addon: the
`Controls` read from them (bypass, cache directives) apply to this flow only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Fields = list[tuple[bytes, bytes]]

DEFAULT_PREFIXES = ("x-headroom-",)
# Non-standard hop-by-hop header some clients still send to proxies; meaningless upstream.
DEFAULT_NAMES = ("proxy-connection",)

_TRUE = {b"1", b"true", b"yes", b"on"}


@dataclass(frozen=True, slots=True)
class StripRules:
    prefixes: tuple[bytes, ...] = tuple(p.encode() for p in DEFAULT_PREFIXES)
    names: frozenset[bytes] = frozenset(n.encode() for n in DEFAULT_NAMES)

    @classmethod
    def parse(cls, prefixes: Iterable[str], names: Iterable[str] = DEFAULT_NAMES) -> StripRules:
        """Build rules from option values; raises ValueError on names that are not tokens."""
        ps = tuple(_token(p).lower().encode() for p in prefixes if p.strip())
        ns = frozenset(_token(n).lower().encode() for n in names if n.strip())
        return cls(ps, ns)

    def matches(self, name: bytes) -> bool:
        n = name.lower()
        return n in self.names or n.startswith(self.prefixes)


def _token(s: str) -> str:
    s = s.strip()
    if not s or any(c in s for c in ' \t:()<>@,;\\"/[]?={}') or not s.isascii():
        raise ValueError(f"not a valid header name (or prefix): {s!r}")
    return s


@dataclass(frozen=True, slots=True)
class Controls:
    """Per-flow directives a client sent in internal headers (read before stripping)."""

    bypass: bool = False
    cache: str | None = None  # "bypass" | "refresh" | ... (x-headroom-cache), or None
    no_store: bool = False  # standard `cache-control: no-cache / no-store` from the client


Index = dict[bytes, list[bytes]]  # lower-case name -> values in wire order


def strip_and_read(fields: Sequence[tuple[bytes, bytes]], rules: StripRules
                   ) -> tuple[Fields, list[bytes], Controls, Index]:
    """Split fields into (kept, stripped names), read the client's controls, and index the kept
    fields by lower-case name, in one pass (this runs on every flow, and every later step looks
    headers up in the index instead of scanning the fields again). Order and case of kept fields
    are untouched."""
    low = b"\n".join([n for n, _ in fields]).lower()
    if not (b"x-headroom-" in low or any(p in low for p in rules.prefixes)
            or any(n in low for n in rules.names)):
        lows = low.split(b"\n")
        if len(lows) == len(fields):  # nothing to strip or read: index only (the common case)
            return _index_only(fields, lows)
    kept: Fields = []
    stripped: list[bytes] = []
    index: Index = {}
    bypass = False
    cache: str | None = None
    names, prefixes = rules.names, rules.prefixes
    for name, value in fields:
        n = name.lower()
        if n.startswith(b"x-headroom-"):  # controls steer Headroom whatever is stripped
            if n == b"x-headroom-bypass":
                bypass = bypass or value.strip().lower() in _TRUE
            elif n == b"x-headroom-cache":
                cache = value.strip().lower().decode("latin-1") or cache
        if n in names or n.startswith(prefixes):
            stripped.append(name)
            continue
        kept.append((name, value))
        values = index.get(n)
        if values is None:
            index[n] = [value]
        else:
            values.append(value)
    if not stripped:
        kept = fields if isinstance(fields, list) else list(fields)
    return kept, stripped, Controls(bypass=bypass, cache=cache, no_store=_no_store(index)), index


_NO_CONTROLS = Controls()


def _index_only(fields: Sequence[tuple[bytes, bytes]], lows: list[bytes]
                ) -> tuple[Fields, list[bytes], Controls, Index]:
    index: Index = {n: [v] for n, (_, v) in zip(lows, fields)}
    if len(index) != len(lows):  # a name repeated: its values in wire order
        index = {}
        for n, (_, value) in zip(lows, fields):
            values = index.get(n)
            if values is None:
                index[n] = [value]
            else:
                values.append(value)
    controls = Controls(no_store=True) if b"cache-control" in index and _no_store(index) \
        else _NO_CONTROLS
    return (fields if isinstance(fields, list) else list(fields)), [], controls, index


def _no_store(index: Index) -> bool:
    """A standard `cache-control: no-cache / no-store` from the client."""
    for value in index.get(b"cache-control", ()):
        directives = {d.strip().split(b"=")[0] for d in value.lower().split(b",")}
        if directives & {b"no-cache", b"no-store"}:
            return True
    return False


def index(fields: Iterable[tuple[bytes, bytes]]) -> Index:
    """Header fields by lower-case name (values in wire order)."""
    out: Index = {}
    for name, value in fields:
        out.setdefault(name.lower(), []).append(value)
    return out


def first(idx: Index, name: bytes) -> bytes | None:
    """The first value of a lower-case `name` in an index."""
    values = idx.get(name)
    return values[0] if values else None


def get(fields: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """First value of a header, case-insensitively."""
    name = name.lower()
    for n, v in fields:
        if n.lower() == name:
            return v
    return None


def remove(fields: Sequence[tuple[bytes, bytes]], name: bytes) -> Fields:
    """Every field but those named `name` (any case)."""
    lname = name.lower()
    return [(n, v) for n, v in fields if n.lower() != lname]


class Repeats:
    """The header block each connection sent last, to tell whether the next request repeats it.

    A client sends the same header fields with every request on a connection but for the value
    of `content-length`, so what was worked out from the previous block (its index, controls,
    tenant, session) holds for the next: comparing the blocks is a few C-level tuple
    comparisons, working it out again is a Python loop over every field. Names and values are
    compared byte for byte (case included); only the value of a single `content-length`, at the
    same place under the same spelling, may differ. Bounded: the oldest connection goes first
    (the adapter also forgets a connection when it closes)."""

    __slots__ = ("_last", "size")

    def __init__(self, size: int = 1024) -> None:
        self._last: dict[Any, tuple[tuple, int, Any]] = {}
        self.size = size

    def find(self, conn: Any, fields: Sequence[tuple[bytes, bytes]]
             ) -> tuple[Any, bytes | None] | None:
        """What `keep` stored for `conn` if `fields` repeat that block, with this block's
        `content-length` value (None when the block has none); else None."""
        last = self._last.get(conn)
        if last is None:
            return None
        prev, at, value = last
        if len(fields) != len(prev):
            return None
        if not isinstance(fields, tuple):
            fields = tuple(fields)
        if at < 0:
            return (value, None) if fields == prev else None
        field = fields[at]
        if field[0] != prev[at][0] or fields[:at] != prev[:at] or fields[at + 1:] != prev[at + 1:]:
            return None
        return value, field[1]

    def keep(self, conn: Any, fields: Sequence[tuple[bytes, bytes]], value: Any) -> None:
        """Remember `value` for `conn`'s block `fields` (not kept when `content-length` appears
        more than once: which value counts would be ambiguous)."""
        at = -1
        for i, (name, _) in enumerate(fields):
            if len(name) == 14 and name.lower() == b"content-length":
                if at >= 0:
                    self._last.pop(conn, None)
                    return
                at = i
        last = self._last
        if conn not in last and len(last) >= self.size:
            del last[next(iter(last))]
        last[conn] = (tuple(fields), at, value)

    def forget(self, conn: Any) -> None:
        self._last.pop(conn, None)

    def __len__(self) -> int:
        return len(self._last)


def strip(fields: Sequence[tuple[bytes, bytes]], rules: StripRules) -> tuple[Fields, list[bytes]]:
    """Split fields into (kept, stripped names). Order and case of kept fields are untouched."""
    kept, stripped, _, _ = strip_and_read(fields, rules)
    return kept, stripped
