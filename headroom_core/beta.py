"""Beta headers (`anthropic-beta`, `OpenAI-Beta`): merging, header folding, session stickiness.

Some beta tokens change what the provider caches, so a token dropped mid-conversation can cost
the whole prompt cache. `StickyBetas` keeps re-sending, for the rest of a conversation, every
token once sent upstream in it; `apply_to_fields` writes the result without touching the request
when nothing changed. Tokens are opaque strings (`responses_websockets=2026-02-04` included).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

log = logging.getLogger("headroom.beta")

ANTHROPIC_BETA = b"anthropic-beta"
OPENAI_BETA = b"OpenAI-Beta"
HEADER_NAMES = {"anthropic": ANTHROPIC_BETA, "openai": OPENAI_BETA}

# Tokens that are the client's per-request call, never carried over by Headroom. A client that
# sends one still has it forwarded.
DEFAULT_DENY: tuple[str, ...] = (
    # Entitlement-gated (400 without the usage tier) and priced differently above 200k tokens.
    "context-1m-*",
    # Opus fast mode: a research preview at premium pricing; switching it off must stick.
    "fast-mode-*",
    # Belongs to OAuth (subscription) credentials only; the client adds it when it applies.
    "oauth-*",
    # Codex's WebSocket transport selector: meaningless (or refused) on its HTTP fallback.
    "responses_websockets=*",
)

DEFAULT_MAX_TOKENS_PER_SESSION = 64  # a bound against a client inventing tokens forever
# Real tokens are a few dozen characters: longer ones are sent on as the client sent them but
# never remembered, and a header longer than MEMO_CHARS is not memoised (a client could send
# megabytes per session, for a thousand sessions).
MAX_TOKEN_CHARS = 128
MEMO_CHARS = 4096

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_name(provider: str) -> bytes | None:
    """The beta header of a provider, in its documented casing."""
    return HEADER_NAMES.get(provider)


def header_values(fields: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every value of header `name` (any case), in wire order, decoded as latin-1 (lossless)."""
    n = name.lower()
    return [v.decode("latin-1") for k, v in fields if k.lower() == n]


def split_tokens(value: str) -> list[str]:
    """"a, b,,c " -> ["a", "b", "c"]."""
    return [t for t in (p.strip() for p in value.split(",")) if t]


def merge_tokens(client_values: Iterable[str], required: Iterable[str] = ()) -> list[str]:
    """Client tokens in their order, then the required ones; de-duplicated case-insensitively
    (first casing wins), trimmed, blanks dropped. Each value may hold several comma-separated
    tokens. Tokens with control characters are dropped: they cannot go on a header line."""
    out: list[str] = []
    seen: set[str] = set()
    for value in (*client_values, *required):
        for token in split_tokens(value):
            key = token.lower()
            if key in seen or _CONTROL.search(token):
                continue
            seen.add(key)
            out.append(token)
    return out


def _encode(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def apply_to_fields(
    fields: list[tuple[bytes, bytes]], header_name: bytes, tokens: Sequence[str],
    *, fold: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Header fields with `header_name` carrying exactly `tokens`.

    When the lines present already carry exactly these tokens in this order, `fields` itself is
    returned, untouched (byte fidelity: several lines or odd spacing included) — unless `fold`
    asks for several lines (case variants) to become one even then. Otherwise every
    line of the header (any case) is folded into one at the first line's position, with the first
    line's name casing; tokens are joined with ", " if the client's value used ", " and with ","
    otherwise (Claude Code and the SDKs use ","). Without tokens the header is removed; a new
    header goes last, named `header_name` as given.
    """
    target = header_name.lower()
    positions = [i for i, (k, _) in enumerate(fields) if k.lower() == target]
    original = [fields[i][1].decode("latin-1") for i in positions]
    present: list[str] = []
    for value in original:
        present.extend(split_tokens(value))
    if present == list(tokens) and not (fold and len(positions) > 1):
        return fields
    if not tokens:
        gone = set(positions)
        return [f for i, f in enumerate(fields) if i not in gone]
    sep = ", " if any(", " in v for v in original) else ","
    line = _encode(sep.join(tokens))
    if not positions:
        return [*fields, (header_name, line)]
    first = positions[0]
    drop = set(positions[1:])
    out = []
    for i, (k, v) in enumerate(fields):
        if i == first:
            out.append((k, line))
        elif i not in drop:
            out.append((k, v))
    return out


def sticky_key(session_id: str | None, *scope: str | None) -> str | None:
    """A `StickyBetas` key: the session id narrowed by e.g. endpoint and model.

    Betas differ per model (Claude Code sends fewer to Haiku) and per endpoint (count_tokens),
    and the prompt cache is per model anyway, so stickiness across them gains nothing.
    """
    if session_id is None:
        return None
    if len(scope) == 2:  # (endpoint, model): every request asks this
        return f"{session_id}\x1f{scope[0] or ''}\x1f{scope[1] or ''}"
    return "\x1f".join((session_id, *(s or "" for s in scope)))


@dataclass(frozen=True, slots=True)
class BetaDecision:
    tokens: list[str]  # what goes upstream, in order
    added: list[str]  # tokens upstream that the client did not send (required + sticky)
    changed: bool  # False: leave the client's header lines exactly as they are


class BetaMemory(Protocol):
    """Where sticky tokens live, per session key (in memory, or shared by several proxies).
    `shared` memories can change under this process, so their answers are never memoised."""

    shared: bool

    def get(self, key: str) -> list[str]:
        """The session's sticky tokens, first-seen order (empty when unknown); marks it used."""

    def touch(self, key: str) -> None:
        """Mark a session used, as `get` does (memories that are not `shared` only)."""

    def extend(self, key: str, tokens: Sequence[str], limit: int) -> list[str]:
        """Remember `tokens` not yet remembered (case-insensitively), keeping at most `limit`;
        return the session's tokens afterwards."""

    def remove(self, key: str, token: str) -> bool:
        """Forget one token (case-insensitive). True if it was remembered."""

    def forget(self, key: str) -> None: ...

    def __len__(self) -> int: ...


class LocalBetaMemory:
    """Sticky tokens in this process: an LRU of at most `max_sessions` sessions."""

    shared = False

    def __init__(self, max_sessions: int = 1000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, list[str]] = OrderedDict()
        self.evicted: list[str] = []  # keys dropped by the bound since the caller last looked

    def get(self, key: str) -> list[str]:
        memory = self._sessions.get(key)
        if memory is None:
            return []
        self._sessions.move_to_end(key)
        return list(memory)

    def touch(self, key: str) -> None:
        """Mark a session used (as `get` does), without copying its tokens."""
        if key in self._sessions:
            self._sessions.move_to_end(key)

    def extend(self, key: str, tokens: Sequence[str], limit: int) -> list[str]:
        memory = self._sessions.get(key, [])
        known = {t.lower() for t in memory}
        new = [t for t in tokens if t.lower() not in known]
        if new:
            memory = memory + new[: max(0, limit - len(memory))]
        if memory and key not in self._sessions:
            self._sessions[key] = memory
            while len(self._sessions) > self.max_sessions:
                self.evicted.append(self._sessions.popitem(last=False)[0])
        elif memory:
            self._sessions[key] = memory
        return list(memory)

    def remove(self, key: str, token: str) -> bool:
        memory = self._sessions.get(key)
        if not memory:
            return False
        t = token.strip().lower()
        kept = [x for x in memory if x.lower() != t]
        if len(kept) == len(memory):
            return False
        if kept:
            self._sessions[key] = kept
        else:
            del self._sessions[key]
        return True

    def forget(self, key: str) -> None:
        self._sessions.pop(key, None)

    def __len__(self) -> int:
        return len(self._sessions)


class StickyBetas:
    """Per-session memory of beta tokens sent upstream; thread-safe.

    Only high-confidence session ids get memory: a content-derived id can be shared by two
    conversations, and gluing one's betas onto the other would change its requests. Where the
    memory lives is a `BetaMemory` (this process by default; Redis for a team gateway).
    """

    def __init__(
        self,
        max_sessions: int = 1000,
        deny: Sequence[str] = DEFAULT_DENY,
        max_tokens_per_session: int = DEFAULT_MAX_TOKENS_PER_SESSION,
        memory: BetaMemory | None = None,
    ) -> None:
        self.memory = memory if memory is not None else LocalBetaMemory(max_sessions)
        self.max_tokens_per_session = max_tokens_per_session
        self.deny = tuple(p.lower() for p in deny)
        # One regex for the whole deny list (fnmatch's own syntax), and the verdict per token:
        # clients send the same few tokens all day.
        self._deny_re = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.deny)
                                   or "(?!)")
        self._denied: dict[str, bool] = {}
        # session key -> (the last request's (client tokens, required), its decision); valid
        # while the session's memory is unchanged (any change drops the entry). Local memory only.
        self._memo: dict[str, tuple[tuple, BetaDecision]] = {}
        self._lock = threading.Lock()

    def denied(self, token: str) -> bool:
        verdict = self._denied.get(token)
        if verdict is None:
            verdict = self._deny_re.match(token.lower()) is not None
            if len(self._denied) < 4096:
                self._denied[token] = verdict
        return verdict

    def apply(
        self,
        session_key: str | None,
        high_confidence: bool,
        client_tokens: Sequence[str],
        required: Sequence[str] = (),
    ) -> BetaDecision:
        """Tokens for this request: the client's, then `required`, then the session's sticky
        ones the client dropped (first-seen order); and remember what is sent."""
        if session_key is None or not high_confidence:
            return self._decision(client_tokens, merge_tokens(client_tokens, required))
        if self.memory.shared:
            return self._apply_shared(session_key, client_tokens, required)
        client_tokens, required = tuple(client_tokens), tuple(required)
        with self._lock:
            # Most turns repeat the previous turn's header: answer those from the memo (only
            # headers of at most MEMO_CHARS are kept there; the adapter hands the same tuple
            # for a repeated header block, so the comparison is mostly by identity).
            memo = self._memo.get(session_key)
            if memo is not None:
                sig = memo[0]
                if (sig[0] is client_tokens or sig[0] == client_tokens) and sig[1] == required:
                    self.memory.touch(session_key)  # keeps the session young in the LRU
                    return memo[1]
            memo_ok = sum(map(len, client_tokens)) <= MEMO_CHARS
            sig = (client_tokens, required)
            merged = merge_tokens(client_tokens, required)
            memory = self.memory.get(session_key)
            sent = {t.lower() for t in merged}
            tokens = merged + [t for t in memory if t.lower() not in sent]
            fresh = self._rememberable(merged)
            if fresh:
                self.memory.extend(session_key, fresh, self.max_tokens_per_session)
            decision = self._decision(client_tokens, tokens)
            if memo_ok:
                self._memo[session_key] = (sig, decision)
            else:
                self._memo.pop(session_key, None)  # (what it answered may be stale now)
            for key in getattr(self.memory, "evicted", ()):
                self._memo.pop(key, None)
            if getattr(self.memory, "evicted", None):
                self.memory.evicted.clear()
        return decision

    def _rememberable(self, tokens: Sequence[str]) -> list[str]:
        return [t for t in tokens if len(t) <= MAX_TOKEN_CHARS and not self.denied(t)]

    def _apply_shared(self, session_key: str, client_tokens: Sequence[str],
                      required: Sequence[str]) -> BetaDecision:
        """`apply` on a memory other instances change (Redis): never memoised, one call, and no
        lock held over its network round trip (`extend` returns the session's tokens after
        remembering the new ones, atomically)."""
        merged = merge_tokens(client_tokens, required)
        fresh = self._rememberable(merged)
        memory = (self.memory.extend(session_key, fresh, self.max_tokens_per_session) if fresh
                  else self.memory.get(session_key))
        sent = {t.lower() for t in merged}
        return self._decision(client_tokens, merged + [t for t in memory if t.lower() not in sent])

    @staticmethod
    def _decision(client_tokens: Sequence[str], tokens: list[str]) -> BetaDecision:
        client = {t.lower() for t in merge_tokens(client_tokens)}
        added = [t for t in tokens if t.lower() not in client]
        if added:
            log.debug("beta tokens added: %s", ",".join(added))
        return BetaDecision(tokens, added, bool(added))

    def reject(self, session_key: str | None, token: str) -> bool:
        """Forget a token (e.g. the provider refused it). True if it was remembered."""
        if session_key is None:
            return False
        with self._lock:
            self._memo.pop(session_key, None)
            dropped = self.memory.remove(session_key, token)
        if dropped:
            log.info("beta token dropped from session after rejection: %s", token)
        return dropped

    def remembered(self, session_key: str) -> list[str]:
        """The sticky tokens of a session (a copy)."""
        with self._lock:
            return self.memory.get(session_key)

    def forget(self, session_key: str) -> None:
        with self._lock:
            self.memory.forget(session_key)
            self._memo.pop(session_key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self.memory)


def _boundary_pattern(token: str) -> re.Pattern[str]:
    # A token is a whole word when no token character touches it; a trailing "." ends a sentence.
    return re.compile(
        r"(?<![\w.=:/+-])" + re.escape(token) + r"(?![\w=:/+-]|\.[\w])", re.IGNORECASE
    )


def tokens_named_in_error(body: bytes, sent_tokens: Sequence[str]) -> list[str]:
    """The sent tokens a (decoded) 400 error body names, e.g. Anthropic's "Unexpected value(s)
    `x` for the `anthropic-beta` header". Only messages about betas count; never raises."""
    try:
        doc = orjson.loads(body)
    except Exception:
        return []
    if not isinstance(doc, dict):
        return []
    error = doc.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or "beta" not in message.lower():
        return []
    found: list[str] = []
    for token in merge_tokens(sent_tokens):
        if _boundary_pattern(token).search(message):
            found.append(token)
    return found
