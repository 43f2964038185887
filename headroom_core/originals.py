"""Kept originals: the full text of each tool output Headroom compressed, by unguessable handle.

The compressed text points at `retrieval_base + handle`; the handle is a keyed hash (secret salt and
tenant) of the original, so it can be neither guessed nor derived by another tenant.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

import diskcache

log = logging.getLogger("headroom.originals")

DEFAULT_SIZE_LIMIT = 2 << 30  # originals are the large side of every rewrite
DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIEVAL_BASE = "http://headroom.local/ccr/"

_HANDLE = re.compile(r"[0-9a-f]{32}")


def handle_for(salt: bytes, tenant: str, text: str) -> str:
    """The handle of `text` for `tenant`: 32 hex digits, stable for one salt.

    Raises UnicodeEncodeError for text with lone surrogates (such text is never compressed).
    """
    tenant_key = hashlib.blake2b(
        tenant.encode("utf-8", "surrogatepass"), key=salt[:64], digest_size=32,
        person=b"hr-originals",
    ).digest()
    return hashlib.blake2b(text.encode("utf-8"), key=tenant_key, digest_size=16).hexdigest()


def is_handle(value: str) -> bool:
    return _HANDLE.fullmatch(value) is not None


class Originals:
    """Persistent handle -> original text (diskcache, LRU-bounded, thread- and process-safe)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._cache = diskcache.Cache(
            os.fspath(directory), timeout=timeout, size_limit=size_limit,
            eviction_policy="least-recently-used",
        )

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> Originals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, tenant: str, text: str, *, salt: bytes) -> str:
        """Keep `text` for `tenant`; return its handle (idempotent)."""
        handle = handle_for(salt, tenant, text)
        value = tenant.encode("utf-8", "surrogatepass") + b"\x00" + text.encode("utf-8")
        self._cache.add(handle, value)
        return handle

    def get(self, handle: str, *, tenant: str | None = None) -> str | None:
        """The original for `handle`, or None (unknown, malformed, evicted, or another tenant's
        when `tenant` is given)."""
        if not isinstance(handle, str) or not is_handle(handle):
            return None
        value = self._cache.get(handle)
        if not isinstance(value, bytes):
            return None
        owner, sep, text = value.partition(b"\x00")
        if not sep:
            return None
        if tenant is not None and owner != tenant.encode("utf-8", "surrogatepass"):
            return None
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("originals: undecodable entry")
            return None
