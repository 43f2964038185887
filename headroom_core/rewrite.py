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
from headroom_core.compress import DEFAULT_MIN_BYTES, CompressPolicy, compress
from headroom_core.jsonutil import loads
from headroom_core.ledger import Entry, Ledger, Original
from headroom_core.livezone import DEFAULT_ERROR_LIMIT, DEFAULT_EXCLUDE, Candidate
from headroom_core.originals import DEFAULT_RETRIEVAL_BASE, Originals, handle_for

log = logging.getLogger("headroom.rewrite")

# Whatever a ledger or originals backend raises (a full disk, a lock held too long, Redis gone)
# degrades to forwarding the client's bytes; the backend is not ours to second-guess.
_STORE_ERRORS = (Exception,)


def _store_failed(message: str, e: Exception) -> None:
    # A backend that reported the failure itself (Redis: once a minute, as a degradation) marks
    # the exception `reported`; warning again on every request would flood the log.
    level = logging.DEBUG if getattr(e, "reported", False) is True else logging.WARNING
    log.log(level, message, type(e).__name__)

Compressor = Callable[..., Any]  # compress(text, *, policy, retrieval_ref) -> Outcome


@dataclass(frozen=True, slots=True)
class RewritePolicy:
    """What may be rewritten. `exclude` replaces the default list when set (add to DEFAULT_EXCLUDE
    to extend it); `include`, when set, is the only tools allowed. Patterns are fnmatch-style."""

    compress_policy: Any = None  # what the compressor takes as `policy` (None: its defaults)
    min_bytes: int = 0  # below this many UTF-8 bytes no compressor applies (their lowest threshold)
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    error_limit: int = DEFAULT_ERROR_LIMIT  # is_error outputs up to this many bytes are kept
    retrieval_base: str = DEFAULT_RETRIEVAL_BASE

    @classmethod
    def from_config(cls, config: Any, retrieval_base: str) -> RewritePolicy:
        """The policy the `headroom_compress*` options describe."""
        min_bytes = dict(DEFAULT_MIN_BYTES)
        min_bytes.update(dict(config.compress_min_bytes))
        return cls(
            compress_policy=CompressPolicy(min_bytes=min_bytes,
                                           min_saving_ratio=config.compress_min_ratio,
                                           min_saving_tokens=config.compress_min_tokens),
            min_bytes=min(min_bytes.values()),
            include=config.compress_include, exclude=config.compress_exclude,
            error_limit=config.compress_error_limit, retrieval_base=retrieval_base)


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


class _Pass:
    """One request's rewrite while it is worked out: candidates, their literals, decisions."""

    __slots__ = ("body", "cands", "settled", "spans", "literal", "hits", "decided", "manifest",
                 "edits", "tokens_saved", "counts")

    def __init__(self, body: bytes, cands: list[Candidate]) -> None:
        self.body, self.cands = body, cands
        self.settled: dict[int, _Decision] = {}  # id(candidate) -> decision made before locating
        self.spans: dict = {}
        self.literal: dict = {}
        self.hits: dict[Original, Entry] = {}
        self.decided: dict[Original, _Decision] = {}
        self.manifest: list[dict] = []
        self.edits: list[tuple[int, int, bytes]] = []
        self.tokens_saved = 0
        self.counts: dict[str, int] = {}

    def report(self, c: Candidate, d: _Decision, before: bytes, after: bytes | None) -> None:
        self.counts[d.action] = self.counts.get(d.action, 0) + 1
        self.manifest.append(_entry(c, d.action, before, after, d.kind, d.tokens_before,
                                    d.tokens_after, d.reason))

    def result(self) -> RewriteResult:
        if not self.edits:
            return RewriteResult(None, self.manifest)
        new_body = jsonspan.splice(self.body, self.edits)
        log.info("rewrite: %s; %d -> %d bytes",
                 ", ".join(f"{n} {a}" for a, n in sorted(self.counts.items())), len(self.body),
                 len(new_body))
        return RewriteResult(new_body, self.manifest, self.tokens_saved,
                             len(self.body) - len(new_body))


class Rewriter:
    """Rewrites request bodies for one proxy; shares its ledger and originals across threads."""

    def __init__(
        self,
        policy: RewritePolicy,
        ledger: Ledger,
        originals: Originals,
        salt: bytes,
        compressor: Compressor = compress,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.originals = originals
        self.salt = salt
        self._compressor = compressor

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
            _store_failed("rewrite: ledger unavailable (%s); forwarding unchanged", e)
            return RewriteResult(None, [{"action": "error", "reason": "ledger-unavailable"}])
        p = _Pass(body, cands)
        wanted = self._settle(p, floor)
        if not wanted:
            return RewriteResult(None, [_entry(c, d.action, _utf8(c.text), None, d.kind,
                                               reason=d.reason)
                                        for c in cands if (d := p.settled.get(id(c)))])
        failed = self._locate(p, wanted) or self._lookup(p, wanted, floor, tenant)
        if failed is not None:
            return failed
        for c in cands:
            self._apply(p, c, tenant)
        return p.result()

    def _settle(self, p: _Pass, floor: int | None) -> list[Candidate]:
        """Decide what needs neither the body's bytes nor the compressor; the candidates left
        to locate: live outputs not yet settled, and historic ones the ledger could know."""
        for c in p.cands:
            if c.live:
                d = self._precheck(c)
                if d is not None:
                    p.settled[id(c)] = d
        return [c for c in p.cands
                if (floor is not None and _may_reach(c.text, floor))
                or (c.live and id(c) not in p.settled)]

    def _locate(self, p: _Pass, wanted: list[Candidate]) -> RewriteResult | None:
        """Find each wanted output's JSON string literal in the raw body (None: all found)."""
        spans = jsonspan.locate_checked(p.body, {c.path: c.text for c in wanted})
        if spans is None:
            log.warning("rewrite: cannot map %d tool outputs to body bytes; forwarding unchanged",
                        len(wanted))
            return RewriteResult(None, [{"action": "error", "reason": "unmapped-body"}])
        p.spans = spans
        p.literal = {c.path: p.body[spans[c.path][0]:spans[c.path][1]] for c in wanted}
        return None

    def _lookup(self, p: _Pass, wanted: list[Candidate], floor: int | None,
                tenant: str) -> RewriteResult | None:
        """What the ledger recorded for these literals (None: looked up)."""
        keys: set[Original] = set()
        if floor is not None:
            keys = {(c.call_id, p.literal[c.path]) for c in wanted
                    if len(p.literal[c.path]) >= floor}
        try:
            p.hits = self.ledger.lookup(tenant, keys)
        except _STORE_ERRORS as e:
            _store_failed("rewrite: ledger lookup failed (%s); forwarding unchanged", e)
            return RewriteResult(None, [{"action": "error", "reason": "ledger-unavailable"}])
        return None

    def _apply(self, p: _Pass, c: Candidate, tenant: str) -> None:
        """One candidate's decision: replayed, newly decided, or reported as settled."""
        if c.path not in p.literal:
            d = p.settled.get(id(c))
            if d is not None:  # settled before locating: reported, never touched
                p.report(c, d, _utf8(c.text), None)
            return
        lit = p.literal[c.path]
        orig = (c.call_id, lit)
        hit = p.hits.get(orig)
        if hit is not None:
            d = _Decision("replayed", hit.kind, hit.forwarded, hit.tokens_before, hit.tokens_after)
        elif c.live:
            # The same output twice in the live zone is decided once.
            d = p.settled.get(id(c)) or p.decided.get(orig)
            if d is None:
                d = p.decided[orig] = self._decide(c, lit, tenant)
        else:
            return
        p.report(c, d, lit, d.forwarded)
        if d.forwarded is not None and d.forwarded != lit:
            start, end = p.spans[c.path]
            p.edits.append((start, end, d.forwarded))
            if d.tokens_before is not None and d.tokens_after is not None:
                p.tokens_saved += d.tokens_before - d.tokens_after

    def _precheck(self, c: Candidate) -> _Decision | None:
        """Decisions that need neither the body's bytes nor the compressor."""
        policy = self.policy
        if not livezone.tool_allowed(c.tool, policy.include, policy.exclude):
            return _Decision("excluded")
        # len(str) <= UTF-8 length <= raw literal length: a short text is below every threshold.
        if len(c.text) * 4 < policy.min_bytes:
            return _Decision("below-threshold")
        if c.is_error and len(c.text) * 12 + 2 <= policy.error_limit:
            return _Decision("error-kept")
        return None

    def _decide(self, c: Candidate, lit: bytes, tenant: str) -> _Decision:
        """What to do with a live-zone literal the ledger does not know."""
        policy = self.policy
        if c.is_error and len(lit) <= policy.error_limit:
            return _Decision("error-kept")
        try:
            handle = handle_for(self.salt, tenant, c.text)
        except UnicodeEncodeError:
            return _Decision("unchanged-type", reason="lone-surrogate")
        try:
            outcome = self._compressor(c.text, policy=policy.compress_policy,
                                       retrieval_ref=policy.retrieval_base + handle)
        except Exception as e:  # someone else's code on live traffic: keep the original
            # The type only: an exception message may quote the output.
            log.error("rewrite: compressor raised %s on a %d-byte output of %s",
                      type(e).__name__, len(lit), c.tool)
            return _Decision("compressor-error", reason="raised")
        if outcome.action != "compressed":
            return _Decision(outcome.action, outcome.kind, tokens_before=outcome.tokens_before,
                             tokens_after=outcome.tokens_after)
        new = jsonspan.encode_literal(outcome.text) if isinstance(outcome.text, str) else None
        if new is None:
            return _Decision("compressor-error", outcome.kind, reason="bad-text")
        if len(new) >= len(lit):
            return _Decision("rejected-not-smaller", outcome.kind,
                             tokens_before=outcome.tokens_before,
                             tokens_after=outcome.tokens_after)
        return self._record(c, lit, tenant, Entry(new, outcome.kind, outcome.tokens_before,
                                                  outcome.tokens_after))

    def _record(self, c: Candidate, lit: bytes, tenant: str, entry: Entry) -> _Decision:
        try:
            # The original must be retrievable before anything points at it, and the ledger must
            # hold the bytes before they go upstream, or the next turn could not repeat them.
            self.originals.put(tenant, c.text, salt=self.salt)
            entry_in_force = self.ledger.record(tenant, (c.call_id, lit), entry)
        except _STORE_ERRORS as e:
            _store_failed("rewrite: cannot record a compressed output (%s); keeping the original",
                          e)
            return _Decision("store-error", entry.kind)
        action = "compressed" if entry_in_force.forwarded == entry.forwarded else "replayed"
        return _Decision(action, entry_in_force.kind, entry_in_force.forwarded,
                         entry_in_force.tokens_before, entry_in_force.tokens_after)
