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

import dataclasses

from headroom_core import jsonspan, livezone
from headroom_core.compress import DEFAULT_MIN_BYTES, CompressPolicy, compress
from headroom_core.jsonutil import loads
from headroom_core.ledger import Entry, Ledger, Original
from headroom_core.livezone import DEFAULT_ERROR_LIMIT, DEFAULT_EXCLUDE, Candidate
from headroom_core.turnmemo import Known, Turn, TurnMemo
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
    if after is not None and action in ("compressed", "replayed"):
        handle = _handle_in(after)
        if handle is not None:  # the dashboard links the original (/ccr/<handle>)
            e["handle"] = handle
    return e


def _handle_in(forwarded: bytes) -> str | None:
    """The handle a compression marker names (it ends the forwarded text)."""
    i = forwarded.rfind(b"/ccr/")
    handle = forwarded[i + 5:i + 37] if i >= 0 else b""
    if len(handle) == 32 and all(c in b"0123456789abcdef" for c in handle):
        return handle.decode()
    return None


class _Pass:
    """One request's rewrite while it is worked out: candidates, their literals, decisions."""

    __slots__ = ("body", "cands", "settled", "spans", "literal", "hits", "decided", "manifest",
                 "edits", "tokens_saved", "counts", "outcome", "known")

    def __init__(self, body: bytes, cands: list[Candidate]) -> None:
        self.body, self.cands = body, cands
        self.settled: dict[int, _Decision] = {}  # id(candidate) -> decision made before locating
        self.spans: dict = {}
        self.literal: dict = {}
        self.hits: dict[Original, Entry] = {}
        self.decided: dict[Original, _Decision] = {}
        self.outcome: dict[int, _Decision] = {}  # id(candidate) -> the decision applied to it
        self.known: dict[int, Known] = {}  # id(candidate) -> what the turn memo said of it
        self.manifest: list[dict] = []
        self.edits: list[tuple[int, int, bytes]] = []
        self.tokens_saved = 0
        self.counts: dict[str, int] = {}

    def report(self, c: Candidate, d: _Decision, before: bytes, after: bytes | None) -> None:
        self.outcome[id(c)] = d
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


MAX_TOOL_NAMES = 4096  # tool names whose policy answer a Rewriter remembers


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
        self.memo = TurnMemo()
        self._allowed: dict[str | None, bool] = {}  # tool name -> `tool_allowed` (the policy's)

    def _tool_allowed(self, tool: str | None) -> bool:
        """`livezone.tool_allowed` under this policy, remembered per tool name (every turn
        asks again about the same few tools; each answer is several fnmatch calls)."""
        allowed = self._allowed.get(tool)
        if allowed is None:
            policy = self.policy
            allowed = livezone.tool_allowed(tool, policy.include, policy.exclude)
            if len(self._allowed) < MAX_TOOL_NAMES:
                self._allowed[tool] = allowed
        return allowed

    def rewrite(
        self,
        shape: str,
        body: bytes,
        *,
        tenant: str,
        tool_names: Mapping[str, str] | None = None,
        doc: Any = None,
        memo_key: tuple | None = None,
    ) -> RewriteResult:
        """Rewrite a decoded request body of `shape` ("anthropic", "chat", "responses",
        "responses_ws") for `tenant`. `doc` may pass the already-parsed body to save a parse.
        With `memo_key` (the conversation), what was decided is kept for `rewrite_turn`.

        Never raises on bad input or store failures: those return `body=None` (forward unchanged).
        """
        body = bytes(body)
        if memo_key is not None:
            self.memo.drop(memo_key)  # whatever happens next, the old turn is no longer valid
        if doc is None:
            doc = _parse(body)
        if doc is None:
            return RewriteResult(None, [{"action": "error", "reason": "unparsable-body"}])
        cands = livezone.candidates(shape, doc, tool_names=tool_names)
        if not cands:
            if memo_key is not None and shape == "anthropic":
                self._remember(memo_key, _Pass(body, []), doc)
            return RewriteResult(None)
        try:
            floor = self.ledger.min_length()
        except _STORE_ERRORS as e:
            _store_failed("rewrite: ledger unavailable (%s); forwarding unchanged", e)
            return RewriteResult(None, [{"action": "error", "reason": "ledger-unavailable"}])
        p = _Pass(body, cands)
        wanted = self._settle(p, floor)
        if not wanted:
            result = RewriteResult(None, [_entry(c, d.action, _utf8(c.text), None, d.kind,
                                                 reason=d.reason)
                                          for c in cands if (d := p.settled.get(id(c)))])
        else:
            failed = self._locate(p, wanted) or self._lookup(p, wanted, floor, tenant)
            if failed is not None:
                return failed
            for c in cands:
                self._apply(p, c, tenant)
            result = p.result()
        if memo_key is not None and shape == "anthropic":
            self._remember(memo_key, p, doc)
        return result

    def rewrite_turn(self, body: bytes, *, tenant: str, memo_key: tuple) -> RewriteResult | None:
        """`rewrite` of an Anthropic request from the conversation's previous turn: the messages
        it shares with that turn keep their decisions; only the messages after them are parsed
        and decided. Same result as `rewrite`, byte for byte and entry for entry, with one
        deliberate exception: an output this conversation already forwarded unchanged as history
        stays unchanged even if another conversation (a resumed copy) has since recorded a
        rewrite of it, since the provider cached it as sent (docs/decisions.md). None when the
        turn cannot be used (then call `rewrite`). Never raises."""
        turn = self.memo.get(memo_key)
        if turn is None:
            return None
        try:
            return self._from_turn(turn, bytes(body), tenant, memo_key)
        except _STORE_ERRORS as e:  # the ledger, or a bug: the full pass decides
            log.debug("rewrite: turn memo not used (%s)", type(e).__name__)
            self.memo.drop(memo_key)
            return None

    def _from_turn(self, turn: Turn, body: bytes, tenant: str,
                   memo_key: tuple) -> RewriteResult | None:
        j = turn.shared(body)
        if not j:
            return None
        pos = turn.spans[j - 1][1]
        tail = (jsonspan.parsed_tail(body, pos, turn.body[turn.tail_at - 1:turn.tail_at + 23])
                if turn.tail_at > 0 else None)
        if tail is None:
            tail = jsonspan.elements_after(body, pos)
            if tail is None:
                return None
            tail = (*tail, [loads(body[a:b]) for a, b in tail[0]])
        spans, tail_at, msgs = tail
        if not jsonspan.no_later_key(body, tail_at, "messages",
                                     (turn.body, turn.tail_at) if turn.tail_at >= 0 else None):
            return None
        tail_last = livezone.last_assistant(msgs, j)
        last_assistant = tail_last if tail_last >= 0 else turn.last_assistant_before(j)
        names = turn.names_before(j)
        tail_names: list[list[tuple[str, str]]] = []
        tail_cands = livezone.anthropic_candidates(msgs, last_assistant=last_assistant, start=j,
                                                   names=names, per_message=tail_names)
        floor = self.ledger.min_length()
        p = _Pass(body, [])
        order: list[Known | Candidate] = []  # the memo's next list: carried Knowns, candidates
        for k in turn.known:
            if k.cand.index >= j:
                break
            live = k.cand.index > last_assistant and k.user
            if not live and k.entry is None:
                order.append(k)  # history forwarded as sent: it stays so (no lookup)
                continue
            c = k.cand if k.cand.live == live else dataclasses.replace(k.cand, live=live)
            if not self._reuse(p, c, k, floor, turn):
                return None
            order.append(c)
        p.cands.extend(tail_cands)
        order.extend(tail_cands)
        wanted = [c for c in tail_cands if self._wanted(p, c, floor)]
        if not self._locate_in(p, wanted, spans, j):
            return None
        for c in wanted:  # what a full pass would have located (and reports as such)
            start, end = p.spans[c.path]
            p.literal[c.path] = body[start:end]
        if self._lookup(p, wanted, floor, tenant):
            return None
        for c in p.cands:
            self._apply(p, c, tenant)
        self._remember_turn(memo_key, p, order, turn, j, spans, msgs, tail_at,
                            tail_names, names)
        if not p.manifest and not p.edits:
            return RewriteResult(None)
        return p.result()

    def _reuse(self, p: _Pass, c: Candidate, k: Known, floor: int | None, turn: Turn) -> bool:
        """Put an output the turn memo knows into the pass exactly as a full pass would have
        found it (located or not, in the ledger or not, settled or decided). False when the
        memo cannot say (then the request is worked out in full)."""
        settled = self._precheck(c) if c.live else None
        located = (floor is not None and _may_reach(c.text, floor)) or (c.live and settled is None)
        if k.entry is not None and not located:
            return False  # the ledger's floor is unknown: only a full pass behaves the same
        if located and k.span is None:
            # Not needed until now: found inside its message, whose bytes this request shares.
            if not self._locate_in(p, [c], turn.spans[c.index:c.index + 1], c.index):
                return False
            k.span = p.spans[c.path]
            k.literal = p.body[k.span[0]:k.span[1]]
        p.cands.append(c)
        p.known[id(c)] = k
        if k.span is not None:
            p.spans[c.path] = k.span
        if located:
            p.literal[c.path] = k.literal
            if k.entry is not None:
                p.hits[(c.call_id, k.literal)] = k.entry
        if c.live and settled is not None:
            p.settled[id(c)] = settled
        elif c.live and k.entry is None and k.decision is not None:
            p.decided[(c.call_id, k.literal)] = k.decision  # (undecided ones are decided anew)
        return True

    def _wanted(self, p: _Pass, c: Candidate, floor: int | None) -> bool:
        if c.live:
            d = self._precheck(c)
            if d is not None:
                p.settled[id(c)] = d
        return (floor is not None and _may_reach(c.text, floor)) or (c.live and id(c) not in
                                                                      p.settled)

    def _locate_in(self, p: _Pass, cands: list[Candidate], spans: list, j: int) -> bool:
        """Locate the tail's outputs, each inside its own message's bytes."""
        by_message: dict[int, dict] = {}
        for c in cands:
            by_message.setdefault(c.index, {})[(0, *c.path[2:])] = c.text
        for index, expected in by_message.items():
            a, b = spans[index - j]
            found, off = jsonspan.locate_fast(p.body, expected, a, b), 0
            if found is None:
                sub = b"[" + p.body[a:b] + b"]"  # the message as a one-element array
                found, off = jsonspan.locate_checked(sub, expected), a - 1
                if found is None:
                    return False
            for rel, (start, end) in found.items():
                p.spans[("messages", index, *rel[1:])] = (off + start, off + end)
        return True

    def _remember(self, key: tuple, p: _Pass, doc: Any) -> None:
        """Keep the turn a full pass decided (needs every message's span; outputs are located
        when a later turn needs them)."""
        messages = doc.get("messages") if isinstance(doc, dict) else None
        where = jsonspan.array_elements(p.body, "messages",
                                        messages if isinstance(messages, list) else None)
        if where is None or not isinstance(messages, list) or len(where[1]) != len(messages):
            return
        self._remember_turn(key, p, p.cands, None, 0, where[1], messages, where[2])

    def _remember_turn(self, key: tuple, p: _Pass, order: list, turn: Turn | None, j: int,
                       spans: list, msgs: list, tail_at: int,
                       tail_names: list[list[tuple[str, str]]] | None = None,
                       names_all: dict[str, str] | None = None) -> None:
        """`tail_names`: the tool_use pairs each of `msgs` defines, when known; `names_all`:
        every tool_use name of the request (what the next turn starts from when it shares all
        of this one's messages)."""
        known = []
        for item in order:
            if isinstance(item, Known):
                known.append(item)
                continue
            c = item
            span = p.spans.get(c.path)  # (None: not located yet; the turn that needs it will)
            lit = p.body[span[0]:span[1]] if span is not None else None
            d = p.outcome.get(id(c)) or p.settled.get(id(c))
            if d is not None and d.action in _TRANSIENT:
                d = None  # not to be repeated: the next turn decides again
            entry = p.hits.get((c.call_id, lit)) if lit is not None else None
            if entry is None and d is not None and d.forwarded is not None:
                entry = Entry(d.forwarded, d.kind, d.tokens_before, d.tokens_after)
            old = p.known.get(id(c))
            user = old.user if old is not None else _role(msgs[c.index - j]) == "user"
            known.append(Known(c, span, lit, entry, d if entry is None else None, user))
        if tail_names is None:
            tail_names = [livezone.tool_uses(m) for m in msgs]
        self.memo.put(key, Turn(
            body=p.body, spans=turn.spans[:j] + spans if turn is not None else list(spans),
            assistants=(turn.assistants_before(j) if turn is not None else [])
            + [j + k for k, m in enumerate(msgs) if _role(m) == "assistant"],
            names=turn.names[:j] + tail_names if turn is not None else tail_names,
            known=known,
            refreshed=turn.refreshed if turn is not None else self.memo.clock(),
            tail_at=tail_at, names_all=names_all))

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
        expected = {c.path: c.text for c in wanted}
        spans = jsonspan.locate_fast(p.body, expected) or jsonspan.locate_checked(p.body, expected)
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
            p.hits.update(self.ledger.lookup(tenant, keys))
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
        if not self._tool_allowed(c.tool):
            return _Decision("excluded")
        # A compressor measures the UTF-8 length of the output (or of the smaller text inside
        # its wrapper): below the lowest threshold, no compressor applies, and none is asked.
        n = len(c.text)
        if n * 4 < policy.min_bytes or (
                n < policy.min_bytes
                and len(c.text.encode("utf-8", "surrogatepass")) < policy.min_bytes):
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


_TRANSIENT = ("store-error", "compressor-error")  # decisions a later turn must not repeat


def _role(msg: Any) -> Any:
    return msg.get("role") if isinstance(msg, dict) else None
