"""The rewrite ledger in Redis: first record wins across every Headroom sharing it.

Records and their digests are `headroom_core.ledger`'s; each lives under
`headroom:{<tenant>}:ledger:<digest>` with a lifetime that a replay renews (the bytes never
change). Every Redis failure raises: the rewriter then forwards the client's bytes unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis

from headroom_core.ledger import Entry, Original, ledger_key

from .redisconn import PREFIX, RedisConn, tenant_key

log = logging.getLogger("headroom.ledger")

# A conversation resumed within a month still replays its rewrites; each replay renews this.
DEFAULT_LIFETIME = 30 * 86400.0
# An entry replayed with less than (lifetime - this) left gets its full lifetime back: at most
# one renewal per entry per hour, not a write on every lookup.
DEFAULT_REFRESH_AFTER = 3600.0
FLOOR_REFRESH = 2.0  # seconds between re-reads of the shared size floor
# The size floor is one small key shared by all tenants, without TTL (it must outlive entries).
FLOOR_KEY = f"{PREFIX}:ledger:minlen"

_EFFECT = "compression off: requests forwarded as the client sent them"

# GET each key (all in one tenant's hash slot), renewing those close enough to expiry: one round
# trip for the whole lookup. PEXPIRE keeps the value as it is.
_LOOKUP = """
local ttl = tonumber(ARGV[1])
local below = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  out[i] = v
  if v and ttl > 0 then
    local left = redis.call('PTTL', key)
    if left >= 0 and left < below then redis.call('PEXPIRE', key, ttl) end
  end
end
return out
"""

# Lower the floor to ARGV[1] unless it is already lower; returns the floor in force.
_FLOOR = """
local cur = tonumber(redis.call('GET', KEYS[1]))
local n = tonumber(ARGV[1])
if cur == nil or n < cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return n
end
return cur
"""


class RedisLedger:
    """Sticky cross-turn replay map in Redis: (tenant, call id, original literal) -> forwarded
    literal. The first record wins for good (SET NX): two instances compressing the same output
    at once both forward the winner's bytes. Bounded by `lifetime` (seconds; None: no TTL, then
    Redis's maxmemory policy decides), renewed on replay.
    """

    def __init__(
        self,
        conn: RedisConn,
        *,
        lifetime: float | None = DEFAULT_LIFETIME,
        refresh_after: float = DEFAULT_REFRESH_AFTER,
        floor_refresh: float = FLOOR_REFRESH,
        clock=time.time,
    ) -> None:
        self.conn = conn
        self.lifetime = lifetime
        self._refresh_after = refresh_after
        self._floor_refresh = floor_refresh
        self._clock = clock
        self._floor: int | None = None
        self._floor_read_at = -floor_refresh
        self._lookup = conn.client.register_script(_LOOKUP)
        self._lower_floor = conn.client.register_script(_FLOOR)

    def close(self) -> None:
        """Nothing to release: the connection pool is the `RedisConn`'s."""

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def key(tenant: str, original: Original) -> str:
        """`headroom:{<tenant>}:ledger:<hex digest of call id and literal>`."""
        return tenant_key(tenant, "ledger", ledger_key(tenant, original)[-20:].hex())

    def min_length(self) -> int | None:
        """Raw length of the shortest original ever recorded (None: nothing recorded), read from
        Redis at most every `floor_refresh` seconds; this process's records update it at once.
        Raises on a Redis failure (unless a fresh enough value is cached)."""
        now = time.monotonic()
        if now - self._floor_read_at < self._floor_refresh:
            return self._floor
        value = self.conn.call("ledger", _EFFECT, lambda c: c.get(FLOOR_KEY))
        floor = int(value) if value is not None and value.isdigit() else None
        self._floor, self._floor_read_at = floor, now
        return floor

    def lookup(self, tenant: str, originals: Iterable[Original]) -> dict[Original, Entry]:
        """The recorded entries for those of `originals` that have one (one round trip)."""
        wanted = {orig: self.key(tenant, orig) for orig in originals}
        if not wanted:
            return {}
        keys = list(wanted.values())
        if self.lifetime is None:
            values = self.conn.call("ledger", _EFFECT, lambda c: c.mget(keys))
        else:
            ttl = _px(self.lifetime)
            below = max(0, ttl - int(self._refresh_after * 1000))
            values = self.conn.call("ledger", _EFFECT, lambda c: self._lookup(
                keys=keys, args=[ttl, below], client=c))
        found: dict[Original, Entry] = {}
        for orig, value in zip(wanted, values):
            if value is None:
                continue
            entry = Entry.load(value) if isinstance(value, bytes) else None
            if entry is None:
                log.warning("ledger: ignoring a malformed entry")
                continue
            found[orig] = entry
        return found

    def record(self, tenant: str, original: Original, entry: Entry) -> Entry:
        """Record `entry` for `original` unless one exists (atomically); return the entry in
        force: ours, or the one another instance stored first."""
        # Floor first, so no reader ever skips an entry that is already stored.
        size = len(original[1])
        floor = int(self.conn.call("ledger", _EFFECT, lambda c: self._lower_floor(
            keys=[FLOOR_KEY], args=[size], client=c)))
        if self._floor is None or floor < self._floor:
            self._floor = floor
        key = self.key(tenant, original)
        value = entry.dump(int(self._clock()))
        return self.conn.call("ledger", _EFFECT, lambda c: self._settle(c, key, value, entry))

    def _settle(self, c: redis.Redis, key: str, value: bytes, entry: Entry) -> Entry:
        px = _px(self.lifetime)
        for _ in range(3):
            if c.set(key, value, nx=True, px=px):
                return entry
            existing = c.get(key)
            if existing is None:
                continue  # expired between the two calls: race for it again
            current = Entry.load(existing)
            if current is not None:
                return current
            if self._replace(c, key, existing, value, px):
                log.warning("ledger: replaced a malformed entry")
                return entry
        raise RuntimeError("ledger entry kept changing; not recorded")

    @staticmethod
    def _replace(c: redis.Redis, key: str, old: bytes, value: bytes, px: int | None) -> bool:
        """Overwrite `key` only while it still holds `old` (optimistic: WATCH / MULTI)."""
        with c.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != old:
                    return False
                pipe.multi()
                pipe.set(key, value, px=px)
                pipe.execute()
                return True
            except redis.WatchError:
                return False


def _px(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, int(seconds * 1000))
