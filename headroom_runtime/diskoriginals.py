"""Kept originals on disk (diskcache): the full text behind each compression marker, by handle.

Bounded by size and age, private (0600 / 0700); handles come from `headroom_core.originals`.
"""

from __future__ import annotations

import logging
import os

from headroom_core.originals import handle_for, is_handle, pack, unpack

from . import private

log = logging.getLogger("headroom.originals")

DEFAULT_SIZE_LIMIT = 1 << 30  # originals are the large side of every rewrite
DEFAULT_TIMEOUT = 2.0


class Originals:
    """Persistent handle -> original text (diskcache, bounded oldest-first, thread- and
    process-safe)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.ttl = ttl
        self._cache = private.open_cache(
            directory, timeout=timeout, size_limit=size_limit,
            # Stored order, not used order: a read must never write (a full disk must still
            # serve originals, and a retrieval is no reason to keep one longer).
            eviction_policy="least-recently-stored",
        )

    def close(self) -> None:
        self._cache.close()

    def release_thread(self) -> None:
        """Close the calling thread's connection (diskcache keeps one per thread; a later call
        opens a new one)."""
        self.close()

    def __enter__(self) -> Originals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, tenant: str, text: str, *, salt: bytes) -> str:
        """Keep `text` for `tenant`; return its handle (idempotent)."""
        handle = handle_for(salt, tenant, text)
        self._cache.add(handle, pack(tenant, text), expire=self.ttl)
        return handle

    def get(self, handle: str, *, tenant: str | None = None) -> str | None:
        """The original for `handle`, or None (unknown, malformed, evicted, or another tenant's
        when `tenant` is given)."""
        if not isinstance(handle, str) or not is_handle(handle):
            return None
        return unpack(self._cache.get(handle), tenant)
