"""The response store: complete 2xx responses (buffered or SSE with timing) keyed by request key.

One store serves the read-through cache and recorded-flow replay. Values are self-checking byte
frames in `diskcache` (SQLite + files): bounded, expiring, shared by processes, never pickled.
Blocking disk I/O; thread-safe; failures are logged and read as "no entry" / "not stored".
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import diskcache
import orjson
import zstandard
from diskcache.core import MODE_PICKLE, UNKNOWN

from . import cachekey

log = logging.getLogger("headroom.store")

Fields = list[tuple[bytes, bytes]]

DEFAULT_SIZE_LIMIT = 2 * 1024**3

# Response header fields never stored. Framing is recomputed on replay; hop-by-hop fields belong
# to one connection; the rest change on every response, identify the account, or set state.
DROP_HEADERS = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade", b"content-length",
    b"authorization", b"proxy-authorization", b"proxy-authenticate", b"www-authenticate",
    b"x-api-key", b"set-cookie", b"cookie",
    b"date", b"age", b"expires", b"via", b"request-id", b"x-request-id", b"cf-ray",
    b"cf-cache-status", b"alt-svc", b"server-timing", b"report-to", b"nel",
    b"x-envoy-upstream-service-time", b"openai-processing-ms",
    b"anthropic-organization-id", b"openai-organization", b"openai-project",
})
DROP_PREFIXES = (
    b"x-ratelimit-",  # live quota state of one account
    b"anthropic-ratelimit-",
    b"x-codex-",  # Codex plan usage (x-codex-primary-used-percent, ...)
    b"x-headroom-",  # Headroom's own annotations are added per response, never replayed
)

_MAGIC = b"HRS1"
_DIGEST = 32
_PREFIX = struct.Struct(">4s32sII")  # magic, sha256(rest), header length, request length


def storable_headers(fields: Iterable[tuple[bytes, bytes]]) -> Fields:
    """The response header fields worth replaying, in wire order and case."""
    fields = list(fields)
    listed = set()  # fields a `Connection:` header declares hop-by-hop
    for name, value in fields:
        if name.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    return [(n, v) for n, v in fields
            if (nl := n.lower()) not in DROP_HEADERS and nl not in listed
            and not nl.startswith(DROP_PREFIXES)]


@dataclass(slots=True)
class Entry:
    """A stored response. `chunks` is None for a buffered body; for SSE it holds every chunk with
    its offset in seconds from the first byte, and `body` is their concatenation."""

    status: int
    headers: Fields
    body: bytes = b""
    chunks: list[tuple[float, bytes]] | None = None
    request: dict | None = None  # the canonical request (cachekey.canonical_request)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chunks is not None:
            joined = b"".join(c for _, c in self.chunks)
            if self.body and self.body != joined:
                raise ValueError("body and chunks disagree")
            self.body = joined

    @property
    def stream(self) -> bool:
        return self.chunks is not None


def refusal(entry: Entry, complete: bool) -> str | None:
    """Why `entry` must not be stored (None: it may). Only complete 2xx responses are kept."""
    if not isinstance(entry.status, int) or not 200 <= entry.status < 300:
        return f"status {entry.status}"
    if not complete:
        return "incomplete stream" if entry.stream else "incomplete body"
    return None


# --- the frame -------------------------------------------------------------------------------


def _header_doc(entry: Entry, meta: dict) -> bytes:
    doc = {
        "meta": meta,
        "status": entry.status,
        # latin-1 maps every byte to one code point: lossless for any header bytes.
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        "chunks": None if entry.chunks is None else [[t, len(c)] for t, c in entry.chunks],
    }
    return orjson.dumps(doc, default=str)


def encode_entry(entry: Entry, meta: dict) -> bytes:
    """Entry -> frame bytes: magic, digest, lengths, JSON header, zstd request, body."""
    header = _header_doc(entry, meta)
    request = b"" if entry.request is None else \
        zstandard.ZstdCompressor(level=3).compress(cachekey.canonical_bytes(entry.request))
    rest = b"".join((struct.pack(">II", len(header), len(request)), header, request, entry.body))
    digest = hashlib.sha256(rest).digest()
    return _MAGIC + digest + rest


class CorruptEntry(ValueError):
    """A stored value that is not a whole, intact frame."""


def decode_entry(data: bytes, *, with_request: bool = True) -> Entry:
    """Frame bytes -> Entry. Raises CorruptEntry unless every byte checks out.
    `with_request=False` skips decoding the recorded request (`request` is then None)."""
    if len(data) < _PREFIX.size or data[:4] != _MAGIC:
        raise CorruptEntry("not an entry frame")
    _, digest, hlen, rlen = _PREFIX.unpack_from(data)
    if hashlib.sha256(data[4 + _DIGEST:]).digest() != digest:
        raise CorruptEntry("checksum mismatch")
    try:
        pos = _PREFIX.size
        doc = orjson.loads(data[pos:pos + hlen])
        pos += hlen
        request = None
        if rlen and with_request:
            raw = zstandard.ZstdDecompressor().decompress(data[pos:pos + rlen])
            request = cachekey.parse_json(raw)
        pos += rlen
        body = data[pos:]
        chunks = None
        if doc["chunks"] is not None:
            chunks, off = [], 0
            for t, n in doc["chunks"]:
                chunks.append((t, body[off:off + n]))
                off += n
            if off != len(body):
                raise CorruptEntry("chunk lengths do not add up")
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in doc["headers"]]
        return Entry(doc["status"], headers, body, chunks, request, doc["meta"])
    except CorruptEntry:
        raise
    except Exception as e:
        raise CorruptEntry(f"undecodable entry: {e}") from None


def _read_meta(value: bytes | BinaryIO) -> dict:
    # Listing reads only the JSON header, not the (possibly large) body; `get` checks the digest.
    if isinstance(value, bytes):
        prefix = value[:_PREFIX.size]
    else:
        with value:
            prefix = value.read(_PREFIX.size)
            if len(prefix) == _PREFIX.size:
                value = prefix + value.read(_PREFIX.unpack(prefix)[2])
    if len(prefix) != _PREFIX.size or prefix[:4] != _MAGIC:
        raise CorruptEntry("not an entry frame")
    hlen = _PREFIX.unpack(prefix)[2]
    header = value[_PREFIX.size:_PREFIX.size + hlen]
    if len(header) != hlen:
        raise CorruptEntry("truncated entry frame")
    try:
        doc = orjson.loads(header)
        meta = dict(doc["meta"])
        meta.setdefault("status", doc["status"])
        return meta
    except Exception as e:
        raise CorruptEntry(f"undecodable header: {e}") from None


class _BytesDisk(diskcache.Disk):
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
    ) -> None:
        """Open (or create) the store. `size_limit_bytes` / `eviction_policy` None keep what the
        directory was last opened with (tools use that, so they never resize the addon's store).
        Raises OSError / sqlite3.Error when the directory cannot be used."""
        directory = os.fspath(directory)
        fresh = not os.path.exists(os.path.join(directory, diskcache.core.DBNAME))
        # Recorded prompts and answers are private: the directory is the user's alone.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        settings: dict[str, Any] = {"statistics": False}
        if size_limit_bytes is not None or fresh:
            settings["size_limit"] = int(size_limit_bytes or DEFAULT_SIZE_LIMIT)
        if eviction_policy is not None or fresh:
            settings["eviction_policy"] = eviction_policy or "least-recently-stored"
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._closed = False
        self._cache = diskcache.Cache(directory, timeout=timeout, disk=_BytesDisk, **settings)

    # -- single entries

    def put(self, key: str, entry: Entry, *, complete: bool) -> bool:
        """Store `entry` under `key`; False when refused (see `refusal`) or on a disk error.

        `complete` must be True only when the whole response (every SSE event up to the final
        one) was received. Missing meta fields are filled from `entry.request`.
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
        except Exception as e:
            log.warning("store write failed for %s: %s", key, type(e).__name__)
            return False
        log.debug("stored %s: %d bytes", key, len(frame))
        return True

    def _meta(self, entry: Entry) -> dict:
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

    def get(self, key: str, *, with_request: bool = True) -> Entry | None:
        """The entry under `key`, whole and intact, or None (absent, expired, damaged, error).

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
            return decode_entry(data, with_request=with_request)
        except CorruptEntry as e:
            log.warning("dropping damaged store entry %s: %s", key, e)
            self.delete(key)
            return None

    def meta(self, key: str) -> dict | None:
        """The metadata of the entry under `key` without reading its body, or None."""
        try:
            return self._read_meta(key)
        except Exception:
            return None

    def _read_meta(self, key: str) -> dict | None:
        value = self._cache.get(key, default=None, read=True)
        return None if value is None else _read_meta(value)

    def delete(self, key: str) -> bool:
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

    def entries(self) -> Iterator[tuple[str, dict]]:
        """(key, meta) for every live entry, reading headers only."""
        for key in list(self.keys()):
            meta = self.meta(key)
            if meta is not None:
                yield key, meta

    def nearest(
        self, canonical: dict, *, session_id: str | None = None, limit: int = 10
    ) -> tuple[str, dict, list[str]] | None:
        """The recorded request closest to `canonical`: same tenant, provider, endpoint and model;
        same session first, then fewest differences, then newest. Returns (key, meta, diff lines
        from the recording to `canonical`), or None when nothing comparable is stored.
        """
        body = canonical.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        summary = None
        best: tuple[tuple, str, dict, dict] | None = None
        for key, meta in self.entries():
            if (meta.get("tenant"), meta.get("provider"), meta.get("endpoint"), meta.get("model")) \
                    != (canonical.get("tenant"), canonical.get("provider"),
                        canonical.get("endpoint"), model):
                continue
            entry = self.get(key)
            if entry is None or not isinstance(entry.request, dict):
                continue
            if summary is None:
                summary = cachekey.summarize(canonical)
            try:
                n = sum(1 for _ in cachekey.diff_lines(entry.request, summary))
            except RecursionError:
                continue
            same = bool(session_id) and meta.get("session_id") == session_id
            rank = (0 if same else 1, n, -float(meta.get("created") or 0))
            if best is None or rank < best[0]:
                best = (rank, key, meta, entry.request)
        if best is None:
            return None
        return best[1], best[2], cachekey.diff(best[3], canonical, limit)

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

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
