"""Request-body rewriting: replay the ledger over the whole conversation, compress the live zone.

One pass per request: parse, locate tool-output literals, replace those the ledger knows by the
bytes forwarded before, compress new live-zone outputs (recording them first), splice once. Every
byte outside a replaced literal goes upstream exactly as the client sent it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headroom_core import jsonspan, livezone
from headroom_core.jsonutil import loads
from headroom_core.ledger import Entry, Ledger, Original
from headroom_core.livezone import DEFAULT_ERROR_LIMIT, DEFAULT_EXCLUDE, Candidate
from headroom_core.originals import DEFAULT_RETRIEVAL_BASE, Originals, handle_for

log = logging.getLogger("headroom.rewrite")

# Whatever a ledger or originals backend raises (a full disk, a lock held too long, Redis gone)
# degrades to forwarding the client's bytes; the backend is not ours to second-guess.
_STORE_ERRORS = (Exception,)

Compressor = Callable[..., Any]  # compress(text, *, policy, retrieval_ref) -> Outcome


@dataclass(frozen=True, slots=True)
class RewritePolicy:
    """What may be rewritten. `exclude` replaces the default list when set (add to DEFAULT_EXCLUDE
    to extend it); `include`, when set, is the only tools allowed. Patterns are fnmatch-style."""

    compress_policy: Any = None  # a CompressPolicy; None -> CompressPolicy() defaults
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    error_limit: int = DEFAULT_ERROR_LIMIT  # is_error outputs up to this many bytes are kept
    retrieval_base: str = DEFAULT_RETRIEVAL_BASE


@dataclass(slots=True)
class RewriteResult:
    body: bytes | None  # None: forward the body unchanged
    manifest: list[dict] = field(default_factory=list)
    tokens_saved: int = 0
    bytes_saved: int = 0


@dataclass(slots=True)
class _Decision:
    action: str
    kind: str | None = None
    forwarded: bytes | None = None  # new literal, when the action changes the bytes
    tokens_before: int | None = None
    tokens_after: int | None = None
    reason: str | None = None


def _parse(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, RecursionError):
        return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _may_reach(text: str, floor: int) -> bool:
    # A character takes at most 12 raw bytes (a \\uXXXX\\uXXXX surrogate-pair escape), plus quotes.
    return len(text) * 12 + 2 >= floor


def _entry(c: Candidate, action: str, before: bytes, after: bytes | None,
           kind: str | None = None, tb: int | None = None, ta: int | None = None,
           reason: str | None = None) -> dict:
    e = {
        "index": c.index, "block": c.block, "part": c.part, "tool": c.tool, "live": c.live,
        "kind": kind, "action": action,
        "bytes_before": len(before), "bytes_after": len(after if after is not None else before),
        "tokens_before": tb, "tokens_after": ta,
    }
    if reason is not None:
        e["reason"] = reason
    return e


class Rewriter:
    """Rewrites request bodies for one proxy; shares its ledger and originals across threads."""

    def __init__(
        self,
        policy: RewritePolicy,
        ledger: Ledger,
        originals: Originals,
        salt: bytes,
        compressor: Compressor | None = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.originals = originals
        self.salt = salt
        self._compressor = compressor
        self._compress_policy = policy.compress_policy
        self._resolved = compressor is not None

    def _resolve(self) -> Compressor | None:
        """The default compressor, imported on first use so the core loads without it."""
        if not self._resolved:
            self._resolved = True
            try:
                from headroom_core.compress import CompressPolicy, compress
            except ImportError:
                log.error("rewrite: headroom_core.compress is unavailable; compression is off")
                return None
            self._compressor = compress
            if self._compress_policy is None:
                self._compress_policy = CompressPolicy()
        return self._compressor

    def rewrite(
        self,
        shape: str,
        body: bytes,
        *,
        tenant: str,
        tool_names: Mapping[str, str] | None = None,
        doc: Any = None,
    ) -> RewriteResult:
        """Rewrite a decoded request body of `shape` ("anthropic", "chat", "responses",
        "responses_ws") for `tenant`. `doc` may pass the already-parsed body to save a parse.

        Never raises on bad input or store failures: those return `body=None` (forward unchanged).
        """
        body = bytes(body)
        if doc is None:
            doc = _parse(body)
        if doc is None:
            return RewriteResult(None, [{"action": "error", "reason": "unparsable-body"}])
        cands = livezone.candidates(shape, doc, tool_names=tool_names)
        if not cands:
            return RewriteResult(None)
        try:
            floor = self.ledger.min_length()
        except _STORE_ERRORS as e:
            log.warning("rewrite: ledger unavailable (%s); forwarding unchanged", type(e).__name__)
            return RewriteResult(None, [{"action": "error", "reason": "ledger-unavailable"}])

        # Live outputs the policy or their size rules out are settled without touching the
        # body; historic outputs only matter when they could be in the ledger.
        settled: dict[int, _Decision] = {}
        smallest = self._smallest_candidate()
        for c in cands:
            if c.live:
                d = self._precheck(c, smallest)
                if d is not None:
                    settled[id(c)] = d
        wanted = [c for c in cands
                  if (floor is not None and _may_reach(c.text, floor))
                  or (c.live and id(c) not in settled)]
        if not wanted:
            return RewriteResult(None, [_entry(c, d.action, _utf8(c.text), None, d.kind,
                                               reason=d.reason)
                                        for c in cands if (d := settled.get(id(c)))])
        spans = jsonspan.locate_checked(body, {c.path: c.text for c in wanted})
        if spans is None:
            log.warning("rewrite: cannot map %d tool outputs to body bytes; forwarding unchanged",
                        len(wanted))
            return RewriteResult(None, [{"action": "error", "reason": "unmapped-body"}])
        literal = {c.path: body[spans[c.path][0]:spans[c.path][1]] for c in wanted}

        keys: set[Original] = set()
        if floor is not None:
            keys = {(c.call_id, literal[c.path]) for c in wanted
                    if len(literal[c.path]) >= floor}
        try:
            hits = self.ledger.lookup(tenant, keys)
        except _STORE_ERRORS as e:
            log.warning("rewrite: ledger lookup failed (%s); forwarding unchanged",
                        type(e).__name__)
            return RewriteResult(None, [{"action": "error", "reason": "ledger-unavailable"}])

        manifest: list[dict] = []
        edits: list[tuple[int, int, bytes]] = []
        decided: dict[Original, _Decision] = {}
        tokens_saved = 0
        counts: dict[str, int] = {}
        for c in cands:
            if c.path not in literal:
                d = settled.get(id(c))
                if d is not None:  # settled before locating: reported, never touched
                    counts[d.action] = counts.get(d.action, 0) + 1
                    manifest.append(_entry(c, d.action, _utf8(c.text), None, d.kind,
                                           reason=d.reason))
                continue
            lit = literal[c.path]
            orig = (c.call_id, lit)
            hit = hits.get(orig)
            if hit is not None:
                d = _Decision("replayed", hit.kind, hit.forwarded, hit.tokens_before,
                              hit.tokens_after)
            elif c.live:
                d = settled.get(id(c)) or decided.get(orig)
                if d is None:
                    d = decided[orig] = self._decide(c, lit, tenant)
            else:
                continue
            counts[d.action] = counts.get(d.action, 0) + 1
            manifest.append(_entry(c, d.action, lit, d.forwarded, d.kind, d.tokens_before,
                                   d.tokens_after, d.reason))
            if d.forwarded is not None and d.forwarded != lit:
                start, end = spans[c.path]
                edits.append((start, end, d.forwarded))
                if d.tokens_before is not None and d.tokens_after is not None:
                    tokens_saved += d.tokens_before - d.tokens_after

        if not edits:
            return RewriteResult(None, manifest)
        new_body = jsonspan.splice(body, edits)
        log.info("rewrite: %s; %d -> %d bytes",
                 ", ".join(f"{n} {a}" for a, n in sorted(counts.items())), len(body), len(new_body))
        return RewriteResult(new_body, manifest, tokens_saved, len(body) - len(new_body))

    def _smallest_candidate(self) -> int:
        """Below this many UTF-8 bytes no compressor applies (the smallest per-type threshold)."""
        self._resolve()
        sizes = getattr(self._compress_policy, "min_bytes", None)
        if isinstance(sizes, dict) and sizes and all(isinstance(v, int) for v in sizes.values()):
            return min(sizes.values())
        return 0

    def _precheck(self, c: Candidate, smallest: int) -> _Decision | None:
        """Decisions that need neither the body's bytes nor the compressor."""
        policy = self.policy
        if not livezone.tool_allowed(c.tool, policy.include, policy.exclude):
            return _Decision("excluded")
        # len(str) <= UTF-8 length <= raw literal length: a short text is below every threshold.
        if len(c.text) * 4 < smallest:
            return _Decision("below-threshold")
        if c.is_error and len(c.text) * 12 + 2 <= policy.error_limit:
            return _Decision("error-kept")
        return None

    def _decide(self, c: Candidate, lit: bytes, tenant: str) -> _Decision:
        """What to do with a live-zone literal the ledger does not know."""
        policy = self.policy
        if not livezone.tool_allowed(c.tool, policy.include, policy.exclude):
            return _Decision("excluded")
        if c.is_error and len(lit) <= policy.error_limit:
            return _Decision("error-kept")
        try:
            handle = handle_for(self.salt, tenant, c.text)
        except UnicodeEncodeError:
            return _Decision("unchanged-type", reason="lone-surrogate")
        compressor = self._resolve()
        if compressor is None:
            return _Decision("compressor-error", reason="unavailable")
        try:
            outcome = compressor(c.text, policy=self._compress_policy,
                                 retrieval_ref=policy.retrieval_base + handle)
        except Exception as e:  # someone else's code on live traffic: keep the original
            # The type only: an exception message may quote the output.
            log.error("rewrite: compressor raised %s on a %d-byte output of %s",
                      type(e).__name__, len(lit), c.tool)
            return _Decision("compressor-error", reason="raised")
        action = getattr(outcome, "action", None)
        kind = getattr(outcome, "kind", None)
        tb = getattr(outcome, "tokens_before", None)
        ta = getattr(outcome, "tokens_after", None)
        if action != "compressed":
            return _Decision(action if isinstance(action, str) else "compressor-error", kind,
                             tokens_before=tb, tokens_after=ta)
        text = getattr(outcome, "text", None)
        new = jsonspan.encode_literal(text) if isinstance(text, str) else None
        if new is None:
            return _Decision("compressor-error", kind, reason="bad-text")
        if len(new) >= len(lit):
            return _Decision("rejected-not-smaller", kind, tokens_before=tb, tokens_after=ta)
        entry = Entry(new, kind, tb if isinstance(tb, int) else None,
                      ta if isinstance(ta, int) else None)
        try:
            # The original must be retrievable before anything points at it, and the ledger must
            # hold the bytes before they go upstream, or the next turn could not repeat them.
            self.originals.put(tenant, c.text, salt=self.salt)
            entry = self.ledger.record(tenant, (c.call_id, lit), entry)
        except _STORE_ERRORS as e:
            log.warning("rewrite: cannot record a compressed output (%s); keeping the original",
                        type(e).__name__)
            return _Decision("store-error", kind)
        action = "compressed" if entry.forwarded == new else "replayed"
        return _Decision(action, entry.kind, entry.forwarded, entry.tokens_before,
                         entry.tokens_after)
