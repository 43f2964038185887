"""The rewrite ledger on disk (diskcache): first record wins, bounded, shared by processes.

Record format and keys are `headroom_core.ledger`'s; this is where they persist.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from headroom_core.ledger import Entry, Original, ledger_key

from . import private

log = logging.getLogger("headroom.ledger")

# Entries are a few KB (compressed outputs), so 1 GiB holds hundreds of thousands of them: far
# more than all the conversations a user keeps alive at once.
DEFAULT_SIZE_LIMIT = 1 << 30
# Entries replayed longer ago than this are re-stored on their next replay (see Ledger).
DEFAULT_REFRESH_AFTER = 3600.0
# SQLite lock wait. Live traffic must not stall for diskcache's default minute; a timeout raises
# and the caller forwards the request unchanged.
DEFAULT_TIMEOUT = 2.0

_MIN_LEN = b"min_len"
FLOOR_REFRESH = 2.0  # seconds between re-reads of the shared size floor


class Ledger:
    """Sticky cross-turn replay map: (tenant, call id, original literal) -> forwarded literal.

    The first recorded entry for an original wins for good: a later compressor setting, a restart
    or a racing process never changes what a conversation already sent. When the client edits or
    compacts its history, the original bytes (and so the key) change, and nothing is replayed.

    Bounded by `size_limit` with least-recently-used eviction. diskcache's own LRU writes on every
    read; instead entries are evicted least-recently-stored and a replay re-stores an entry when its
    last store is older than `refresh_after` seconds: LRU to within that granularity, with plain
    reads on the hot path.

    Evicting an entry whose conversation is still going costs exactly one prompt-cache miss: the
    next turn forwards the original bytes, so the provider's cached prefix ends just before that
    tool output and everything after it is written to the cache again; from the turn after, the
    prefix is consistent again (nothing is ever forwarded mismatched). Hence the generous default:
    eviction should only ever reach conversations nobody resumes.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        refresh_after: float = DEFAULT_REFRESH_AFTER,
        clock=time.time,
    ) -> None:
        self._cache = private.open_cache(
            directory, timeout=timeout, size_limit=size_limit,
            eviction_policy="least-recently-stored",
        )
        self._refresh_after = refresh_after
        self._clock = clock
        self._floor: int | None = None
        self._floor_read_at = -FLOOR_REFRESH
        # The size floor must outlive eviction, so it lives in a small store that never evicts.
        self._meta = private.open_cache(
            os.path.join(os.fspath(directory), "meta"), timeout=timeout, eviction_policy="none",
        )

    def close(self) -> None:
        self._cache.close()
        self._meta.close()

    def release_thread(self) -> None:
        """Close the calling thread's connections (diskcache keeps one per thread; a later
        call opens new ones)."""
        self.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def min_length(self) -> int | None:
        """Raw length of the shortest original ever recorded (None: the ledger is empty).

        Shorter literals cannot be in the ledger, so callers skip them before hashing. The value
        is read from disk at most every `FLOOR_REFRESH` seconds (it is asked on every request);
        this process's own records update it at once. Another process sharing the directory may
        thus record a shorter original up to that long before this one looks for it.
        """
        now = time.monotonic()
        if now - self._floor_read_at < FLOOR_REFRESH:
            return self._floor
        value = self._meta.get(_MIN_LEN)
        if isinstance(value, int):
            floor: int | None = value
        else:
            # Floor lost but entries kept (meta removed by hand): look everything up.
            floor = 0 if len(self._cache) else None
        self._floor, self._floor_read_at = floor, now
        return floor

    def lookup(self, tenant: str, originals: Iterable[Original]) -> dict[Original, Entry]:
        """The recorded entries for those of `originals` that have one."""
        found: dict[Original, Entry] = {}
        wanted = {orig: ledger_key(tenant, orig) for orig in originals}
        if not wanted:
            return found
        cache = self._cache
        stale: list[tuple[bytes, Entry]] = []
        now = int(self._clock())
        # Plain reads (no transaction): under WAL they never wait for another process's writer.
        for orig, key in wanted.items():
            value = cache.get(key)
            if value is None:
                continue
            entry = Entry.load(value) if isinstance(value, bytes) else None
            if entry is None:
                log.warning("ledger: ignoring a malformed entry")
                continue
            found[orig] = entry
            if now - entry.stored_at > self._refresh_after:
                stale.append((key, entry))
        if stale:
            # Same bytes, fresh store time: moves the entry to the young end of the eviction order.
            with cache.transact():
                for key, entry in stale:
                    value = cache.get(key)
                    current = Entry.load(value) if isinstance(value, bytes) else None
                    # Only if unchanged meanwhile: never put back bytes another process replaced.
                    if current is not None and current.forwarded == entry.forwarded:
                        cache.set(key, entry.dump(now))
        return found

    def record(self, tenant: str, original: Original, entry: Entry) -> Entry:
        """Record `entry` for `original` unless one exists; return the entry that is in force.

        Two processes compressing the same output at once both end up forwarding the first one
        stored, so their conversations stay consistent.
        """
        # Floor first, so no reader ever skips an entry that is already in the store.
        size = len(original[1])
        current = self._meta.get(_MIN_LEN)
        if not isinstance(current, int) or size < current:
            with self._meta.transact():
                current = self._meta.get(_MIN_LEN)
                if not isinstance(current, int) or size < current:
                    self._meta.set(_MIN_LEN, size)
                    current = size
        if self._floor is None or current < self._floor:
            self._floor = current
        key = ledger_key(tenant, original)
        now = int(self._clock())
        if not self._cache.add(key, entry.dump(now)):
            value = self._cache.get(key)
            existing = Entry.load(value) if isinstance(value, bytes) else None
            if existing is not None:
                return existing
            self._cache.set(key, entry.dump(now))
        return entry
