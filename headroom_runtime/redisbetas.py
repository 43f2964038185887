"""Session-sticky beta tokens in Redis (`headroom_core.beta.BetaMemory`), shared by instances.

One list per session key under `headroom:beta:<digest of the key>` (session ids never appear in
keys), first-seen order, renewed on every use. Redis down: an empty memory (the client's own
tokens go upstream), reported, never raised into the request path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import redis

from .redisconn import PREFIX, RedisConn

log = logging.getLogger("headroom.beta")

DEFAULT_TTL = 7 * 86400.0  # a session idle for a week starts over with the client's tokens

_EFFECT = "sticky beta headers off: requests carry the client's own beta tokens"
_SCAN_COUNT = 500

# Elements are "<lowercased>\n<token>": Lua's string.lower is ASCII-only, so Python lowercases
# and the scripts compare the part before the newline (a token never holds a control character).
# KEYS[1]: the list; ARGV[1]: limit; ARGV[2]: TTL in ms (0: none); ARGV[3..]: new elements.
_EXTEND = r"""
local cur = redis.call('LRANGE', KEYS[1], 0, -1)
local seen = {}
for _, e in ipairs(cur) do seen[string.match(e, '^[^\n]*')] = true end
local n = #cur
local limit = tonumber(ARGV[1])
for i = 3, #ARGV do
  if n >= limit then break end
  local low = string.match(ARGV[i], '^[^\n]*')
  if not seen[low] then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    seen[low] = true
    n = n + 1
  end
end
if n > 0 and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

# KEYS[1]: the list; ARGV[1]: the lowercased token. Returns how many elements went.
_REMOVE = r"""
local removed = 0
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.match(e, '^[^\n]*') == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, e)
  end
end
return removed
"""


class RedisBetaMemory:
    """Sticky tokens per session key in Redis. `shared`: another instance may change them, so
    `StickyBetas` never memoises answers from it."""

    shared = True

    def __init__(self, conn: RedisConn, *, ttl: float | None = DEFAULT_TTL) -> None:
        self.conn = conn
        self.ttl = ttl
        self._extend = conn.client.register_script(_EXTEND)
        self._remove = conn.client.register_script(_REMOVE)

    def _px(self) -> int:
        return 0 if self.ttl is None else max(1, int(self.ttl * 1000))

    def get(self, key: str) -> list[str]:
        """The session's tokens (empty when unknown or Redis is down); renews its TTL."""
        k = _key(key)

        def read(c: redis.Redis) -> list[bytes]:
            pipe = c.pipeline(transaction=False)
            pipe.lrange(k, 0, -1)
            if self.ttl is not None:
                pipe.pexpire(k, self._px())
            return pipe.execute()[0]

        try:
            return _tokens(self.conn.call("betas", _EFFECT, read))
        except Exception as e:
            log.debug("betas: read failed: %s", type(e).__name__)
            return []

    def extend(self, key: str, tokens: Sequence[str], limit: int) -> list[str]:
        """Remember `tokens` not yet remembered (case-insensitively, atomically), at most `limit`
        in all; the session's tokens afterwards. Redis down: what an empty memory would hold."""
        elements = [f"{t.lower()}\n{t}".encode("utf-8", "surrogatepass")
                    for t in tokens if "\n" not in t]
        if not elements:
            return self.get(key)
        try:
            return _tokens(self.conn.call("betas", _EFFECT, lambda c: self._extend(
                keys=[_key(key)], args=[max(0, limit), self._px(), *elements], client=c)))
        except Exception as e:
            log.debug("betas: write failed: %s", type(e).__name__)
            return _fresh(tokens, limit)

    def remove(self, key: str, token: str) -> bool:
        low = token.strip().lower().encode("utf-8", "surrogatepass")
        try:
            return bool(self.conn.call("betas", _EFFECT, lambda c: self._remove(
                keys=[_key(key)], args=[low], client=c)))
        except Exception as e:
            log.debug("betas: remove failed: %s", type(e).__name__)
            return False

    def forget(self, key: str) -> None:
        try:
            self.conn.call("betas", _EFFECT, lambda c: c.delete(_key(key)))
        except Exception as e:
            log.debug("betas: forget failed: %s", type(e).__name__)

    def __len__(self) -> int:
        """Sessions remembered (all instances; SCAN, so meant for reports, not hot paths)."""
        try:
            return sum(1 for _ in self.conn.call("betas", _EFFECT, lambda c: list(
                c.scan_iter(match=f"{PREFIX}:beta:*", count=_SCAN_COUNT))))
        except Exception:
            return 0

    def close(self) -> None:
        """Nothing to release: the connection pool is the `RedisConn`'s."""


def _key(session_key: str) -> str:
    digest = hashlib.blake2b(session_key.encode("utf-8", "surrogatepass"), digest_size=16,
                             person=b"hr-betas").hexdigest()
    return f"{PREFIX}:beta:{digest}"


def _tokens(elements: list[bytes]) -> list[str]:
    out = []
    for e in elements:
        _, sep, token = e.decode("utf-8", "surrogatepass").partition("\n")
        if sep and token:
            out.append(token)
    return out


def _fresh(tokens: Sequence[str], limit: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for t in tokens:
        if t.lower() not in seen and len(out) < limit:
            seen.add(t.lower())
            out.append(t)
    return out
