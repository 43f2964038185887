"""Stored responses: the `Entry` a store keeps, what may be kept, and its self-checking byte frame.

A store backend (`headroom_runtime.diskstore`, later Redis) keeps frames by request key; this
module owns their format (magic, SHA-256, JSON header, zstd request, body) and the rules of what
is storable. Pure: bytes in, entries out.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import orjson
import zstandard

from . import cachekey, structdiff, tenant
from .headers import Fields


# Response header fields never stored. Framing is recomputed on replay; hop-by-hop fields belong
# to one connection; the rest change on every response, identify the account, or set state.
DROP_HEADERS = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade", b"content-length",
    b"authorization", b"proxy-authorization", b"proxy-authenticate", b"www-authenticate",
    b"x-api-key", b"set-cookie", b"set-cookie2", b"cookie",  # (and any credential: `tenant`)
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
            and not nl.startswith(DROP_PREFIXES) and not tenant.is_credential(nl)]


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


def read_meta(value: bytes | BinaryIO) -> dict:
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


# --- backends --------------------------------------------------------------------------------


class Store(Protocol):
    """What Headroom needs of a response store backend (`headroom_runtime.diskstore`, Redis,
    cassettes). Reads never raise (a failure reads as "no entry"); `put` returns False when it
    refuses or fails. `read_only` backends refuse every write.

    `tenant`, when given, confines a call to that tenant's entries (Redis keeps them apart by
    tenant and finds them fastest so); None is any tenant's (tools, scripts)."""

    read_only: bool

    def get(self, key: str, *, with_request: bool = True, tenant: str | None = None
            ) -> Entry | None: ...

    def put(self, key: str, entry: Entry, *, complete: bool, tenant: str | None = None
            ) -> bool: ...

    def meta(self, key: str, *, tenant: str | None = None) -> dict | None: ...

    def entries(self, *, tenant: str | None = None) -> Iterator[tuple[str, dict]]:
        """(key, meta) of every live entry, without reading bodies."""

    def delete(self, key: str, *, tenant: str | None = None) -> bool: ...

    def close(self) -> None: ...


def nearest(store: Store, canonical: dict, *, session_id: str | None = None, limit: int = 10
            ) -> tuple[str, dict, list[str]] | None:
    """The recorded request closest to `canonical`: same tenant, provider, endpoint and model;
    same session first, then fewest differences, then newest. Returns (key, meta, diff lines
    from the recording to `canonical`), or None when nothing comparable is stored."""
    body = canonical.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    want = (canonical.get("tenant"), canonical.get("provider"), canonical.get("endpoint"), model)
    # Only the tenant's own recordings are candidates: a backend that keeps tenants apart (Redis)
    # then lists just those.
    scope = {"tenant": want[0]} if isinstance(want[0], str) else {}
    summary = None
    best: tuple[tuple, str, dict, dict] | None = None
    for key, meta in store.entries(**scope):
        if (meta.get("tenant"), meta.get("provider"), meta.get("endpoint"),
                meta.get("model")) != want:
            continue
        entry = store.get(key, **scope)
        if entry is None or not isinstance(entry.request, dict):
            continue
        if summary is None:
            summary = structdiff.summarize(canonical)
        try:
            n = sum(1 for _ in structdiff.diff_lines(entry.request, summary))
        except RecursionError:
            continue
        same = bool(session_id) and meta.get("session_id") == session_id
        rank = (0 if same else 1, n, -float(meta.get("created") or 0))
        if best is None or rank < best[0]:
            best = (rank, key, meta, entry.request)
    if best is None:
        return None
    return best[1], best[2], structdiff.diff(best[3], canonical, limit)
