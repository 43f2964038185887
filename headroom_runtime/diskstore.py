"""The response store on disk: frames (`headroom_core.store`) by request key in `diskcache`.

SQLite plus value files: bounded, expiring, shared by processes, never pickled, private (0600 /
0700). Blocking disk I/O, thread-safe; failures are logged and read as "no entry" / "not stored".
A directory that cannot be written is opened read-only (replaying a fixture volume in CI).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, UNKNOWN

from headroom_core.store import CorruptEntry, Entry, decode_entry, encode_entry, nearest, \
    read_meta, refusal, storable_headers

from . import private
from .degrade import Degradations
from .readonly import ReadOnlyCache

log = logging.getLogger("headroom.store")

DEFAULT_SIZE_LIMIT = 2 * 1024**3


class _BytesDisk(private.PrivateDisk):
    """diskcache's Disk, minus pickle: values must be bytes; a pickled row is never loaded."""

    def store(self, value, read, key=UNKNOWN):
        if not read and not isinstance(value, bytes):
            raise TypeError("the response store holds bytes only")
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE:
            raise CorruptEntry("pickled value refused")
        return super().fetch(mode, filename, value, read)

    def get(self, key, raw):
        return super().get(key, raw) if raw else None  # a pickled key: not ours, skip it


def entry_meta(entry: Entry) -> dict:
    """The metadata a store frame carries: `entry.meta`, completed from its request (tenant,
    provider, model, ...) and its response (status, sizes). Shared by the disk and Redis stores."""
    meta = dict(entry.meta)
    req = entry.request
    if isinstance(req, dict):
        body = req.get("body")
        for k in ("tenant", "provider", "endpoint", "host", "path", "stream"):
            if k in req:
                meta.setdefault(k, req[k])
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            meta.setdefault("model", body["model"])
    meta.setdefault("created", time.time())
    meta.setdefault("usage", None)
    meta.setdefault("session_id", None)
    meta["status"] = entry.status
    meta["response_stream"] = entry.stream
    meta["body_bytes"] = len(entry.body)
    meta["chunks"] = None if entry.chunks is None else len(entry.chunks)
    meta["duration_s"] = entry.chunks[-1][0] if entry.chunks else None
    return meta


def _owned(meta: dict, tenant: str | None) -> bool:
    """Whether an entry with `meta` may be served to `tenant` (None: any caller, e.g. scripts)."""
    return tenant is None or meta.get("tenant") == tenant


# --- the store -------------------------------------------------------------------------------


class ResponseStore:
    """Responses by request key, in a directory several processes may share.

    Bounded by `size_limit_bytes` (oldest stored evicted first by default), entries expire after
    `ttl_seconds` (None: never). Only complete 2xx responses are accepted (`refusal`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        size_limit_bytes: int | None = DEFAULT_SIZE_LIMIT,
        ttl_seconds: float | None = None,
        *,
        eviction_policy: str | None = "least-recently-stored",
        timeout: float = 60.0,
        read_only: bool = False,
        degrade: Degradations | None = None,
    ) -> None:
        """Open (or create) the store. `size_limit_bytes` / `eviction_policy` None keep what the
        directory was last opened with (tools use that, so they never resize the addon's store).
        `read_only` opens an existing store without writing anything (puts are refused).
        Raises OSError / sqlite3.Error when the directory cannot be used."""
        directory = os.fspath(directory)
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        self.read_only = read_only
        self.degrade = degrade or Degradations()
        self._failing = False  # the last write failed (said through `degrade`, once a minute)
        self._lock = threading.Lock()
        self._closed = False
        if read_only:
            self._cache = ReadOnlyCache(directory, disk=_BytesDisk)
            return
        fresh = not os.path.exists(os.path.join(directory, diskcache.core.DBNAME))
        settings: dict[str, Any] = {"statistics": False}
        if size_limit_bytes is not None or fresh:
            settings["size_limit"] = int(size_limit_bytes or DEFAULT_SIZE_LIMIT)
        if eviction_policy is not None or fresh:
            settings["eviction_policy"] = eviction_policy or "least-recently-stored"
        # Recorded prompts and answers are private: the directory is the user's alone.
        self._cache = private.open_cache(directory, timeout=timeout, disk=_BytesDisk, **settings)

    # -- single entries

    def put(self, key: str, entry: Entry, *, complete: bool, tenant: str | None = None) -> bool:
        """Store `entry` under `key`; False when refused (see `refusal`) or on a disk error.

        `complete` must be True only when the whole response (every SSE event up to the final
        one) was received. Missing meta fields are filled from `entry.request`. `tenant` is
        accepted for the Redis store's sake: here the tenant is the one in `entry.request`.
        """
        why = refusal(entry, complete)
        if why is None and (not isinstance(key, str) or not key):
            why = "no key"
        if why is not None:
            log.debug("store refused %s: %s", key, why)
            return False
        try:
            headers = storable_headers(entry.headers)
            stored = Entry(entry.status, headers, entry.body, entry.chunks, entry.request,
                           entry.meta)
            frame = encode_entry(stored, self._meta(stored))
            self._cache.set(key, frame, expire=self.ttl_seconds)
        except Exception as e:  # a full disk, a lock: the response went out, it is not kept
            self._failing = True
            self.degrade.report("store", e, "store writes failing: responses are forwarded but "
                                "not kept", path=self.directory, status="failing")
            return False
        if self._failing:
            self._failing = False
            self.degrade.ok("store")
        log.debug("stored %s: %d bytes", key, len(frame))
        return True

    def _meta(self, entry: Entry) -> dict:
        return entry_meta(entry)

    def get(self, key: str, *, with_request: bool = True, tenant: str | None = None
            ) -> Entry | None:
        """The entry under `key`, whole and intact, or None (absent, expired, damaged, error,
        or recorded for another tenant than `tenant` when given).

        Serving a hit needs no recorded request: `with_request=False` saves parsing it.
        """
        try:
            data = self._cache.get(key, default=None)
        except Exception as e:
            log.warning("store read failed for %s: %s", key, type(e).__name__)
            return None
        if data is None:
            return None
        try:
            entry = decode_entry(data, with_request=with_request)
        except CorruptEntry as e:
            log.warning("dropping damaged store entry %s: %s", key, e)
            self.delete(key)
            return None
        return entry if _owned(entry.meta, tenant) else None

    def meta(self, key: str, *, tenant: str | None = None) -> dict | None:
        """The metadata of the entry under `key` without reading its body, or None."""
        try:
            meta = self._read_meta(key)
        except Exception:
            return None
        return meta if meta is not None and _owned(meta, tenant) else None

    def _read_meta(self, key: str) -> dict | None:
        value = self._cache.get(key, default=None, read=True)
        return None if value is None else read_meta(value)

    def delete(self, key: str, *, tenant: str | None = None) -> bool:
        if tenant is not None and self.meta(key, tenant=tenant) is None:
            return False
        try:
            return bool(self._cache.delete(key))
        except Exception as e:
            log.warning("store delete failed for %s: %s", key, type(e).__name__)
            return False

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._cache  # diskcache checks expiry here too
        except Exception:
            return False

    # -- listing and maintenance

    def keys(self) -> Iterator[str]:
        """Every stored key (expired ones may still be listed until pruned)."""
        try:
            for key in self._cache:
                if isinstance(key, str):
                    yield key
        except Exception as e:
            log.warning("store listing failed: %s", type(e).__name__)

    def entries(self, *, tenant: str | None = None) -> Iterator[tuple[str, dict]]:
        """(key, meta) for every live entry (of `tenant` when given), reading headers only."""
        for key in list(self.keys()):
            meta = self.meta(key, tenant=tenant)
            if meta is not None:
                yield key, meta

    def nearest(self, canonical: dict, *, session_id: str | None = None, limit: int = 10):
        return nearest(self, canonical, session_id=session_id, limit=limit)

    def prune(
        self,
        older_than: float | None = None,
        provider: str | None = None,
        *,
        tenant: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
    ) -> int:
        """Delete entries matching every given criterion (`older_than` in seconds); with none
        given, only expired and damaged entries go. Returns how many entries were deleted."""
        removed = 0
        try:
            removed += self._cache.expire()
        except Exception as e:
            log.warning("store expire failed: %s", type(e).__name__)
        criteria = any(c is not None for c in (older_than, provider, tenant, endpoint, model))
        now = time.time()
        for key in list(self.keys()):
            try:
                meta = self._read_meta(key)
            except CorruptEntry:
                removed += self.delete(key)
                continue
            except Exception:
                continue
            if meta is None:
                continue
            if not criteria:
                continue
            if older_than is not None and now - float(meta.get("created") or 0) <= older_than:
                continue
            if any(want is not None and meta.get(k) != want for k, want in
                   (("provider", provider), ("tenant", tenant), ("endpoint", endpoint),
                    ("model", model))):
                continue
            removed += self.delete(key)
        return removed

    def clear(self) -> int:
        """Delete every entry; returns how many."""
        try:
            return int(self._cache.clear())
        except Exception as e:
            log.warning("store clear failed: %s", type(e).__name__)
            return 0

    def volume(self) -> int:
        """Bytes on disk (database and value files), as eviction measures it."""
        try:
            return int(self._cache.volume())
        except Exception:
            return 0

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._cache.close()

    def release_thread(self) -> None:
        """Close the calling thread's connection (diskcache keeps one per thread); a later call
        from this thread opens a new one. A read-only store has a single shared connection."""
        if not self.read_only:
            self._cache.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
