"""The rewrite ledger's records: which literal bytes Headroom forwarded in place of which tool output.

Clients resend their original history every turn; replaying the recorded bytes keeps each turn's
prefix byte-identical to what the provider cached on the previous turn. This module owns the
record format and key (tenant, tool call id, original literal); backends (`headroom_runtime.
diskledger`, later Redis) keep them, first record wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson


@dataclass(frozen=True, slots=True)
class Entry:
    """What was forwarded for one original literal, and what the compressor said about it."""

    forwarded: bytes  # the exact JSON string literal sent upstream (quotes included)
    kind: str | None = None
    tokens_before: int | None = None
    tokens_after: int | None = None
    stored_at: int = 0  # unix seconds of the last (re-)store; drives the LRU refresh

    def dump(self, stored_at: int) -> bytes:
        # Header line, then the literal: a JSON string literal never holds a raw newline.
        head = orjson.dumps({"k": self.kind, "tb": self.tokens_before, "ta": self.tokens_after,
                             "t": stored_at})
        return head + b"\n" + self.forwarded

    @classmethod
    def load(cls, value: bytes) -> Entry | None:
        """Parse a stored value; None for anything that is not a sane record."""
        head, sep, forwarded = value.partition(b"\n")
        if not sep:
            return None
        try:
            meta = orjson.loads(head)
            text = orjson.loads(forwarded)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(meta, dict) or not isinstance(text, str):
            return None
        kind, tb, ta, t = meta.get("k"), meta.get("tb"), meta.get("ta"), meta.get("t")
        return cls(
            forwarded,
            kind if isinstance(kind, str) else None,
            tb if isinstance(tb, int) else None,
            ta if isinstance(ta, int) else None,
            t if isinstance(t, int) else 0,
        )


Original = tuple[str | None, bytes]  # (tool call id, raw original literal)


def ledger_key(tenant: str, original: Original) -> bytes:
    """Store key: the tenant, then a digest of the call id and the original literal's raw bytes.

    The call id keeps an identical output at another place in the conversation (the same command
    run twice, once before Headroom was on) from being rewritten retroactively, which would bust
    the cache at that older position.
    """
    call_id, literal = original
    h = hashlib.blake2b(digest_size=20)
    if call_id is not None:
        h.update(call_id.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(literal)
    return tenant.encode("utf-8", "surrogatepass") + b"\x00" + h.digest()


class Ledger(Protocol):
    """What the rewriter needs of a ledger backend (`headroom_runtime.diskledger.Ledger`, ...).
    Any exception it raises makes the rewriter forward the client's bytes unchanged."""

    def min_length(self) -> int | None:
        """Raw length of the shortest original ever recorded (None: empty): shorter literals
        cannot be in the ledger, so they are never hashed."""

    def lookup(self, tenant: str, originals: Iterable[Original]) -> dict[Original, Entry]:
        """The recorded entries for those of `originals` that have one."""

    def record(self, tenant: str, original: Original, entry: Entry) -> Entry:
        """Record `entry` unless one exists (atomically); return the entry in force."""

    def close(self) -> None: ...
