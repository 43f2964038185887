"""Kept originals in Redis: the full text behind each compression marker, by handle.

`headroom:{<tenant>}:orig:<handle>` holds the disk store's bytes (tenant, NUL, UTF-8 text);
`headroom:orig:<handle>` names the owner tenant, so a credential-less `/ccr/` call from loopback
finds it. Both expire after the originals lifetime.
"""

from __future__ import annotations

import logging

import redis

from headroom_core.originals import handle_for, is_handle, pack, unpack

from .redisconn import PREFIX, RedisConn, tenant_key

log = logging.getLogger("headroom.originals")

DEFAULT_TTL = 30 * 86400.0  # headroom_originals_ttl's default

_EFFECT = "compression off and /ccr/ answers 404: originals cannot be kept or read"


class RedisOriginals:
    """handle -> original text in Redis, per tenant; `put` raises on failure (nothing may point
    at an original that was not kept), `get` reads a failure as "unknown" (None)."""

    def __init__(self, conn: RedisConn, *, ttl: float | None = DEFAULT_TTL) -> None:
        self.conn = conn
        self.ttl = ttl

    def close(self) -> None:
        """Nothing to release: the connection pool is the `RedisConn`'s."""

    def __enter__(self) -> RedisOriginals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, tenant: str, text: str, *, salt: bytes) -> str:
        """Keep `text` for `tenant`; return its handle (idempotent: a kept one is not rewritten)."""
        handle = handle_for(salt, tenant, text)
        owner = tenant.encode("utf-8", "surrogatepass")
        value = pack(tenant, text)
        px = None if self.ttl is None else max(1, int(self.ttl * 1000))

        def keep(c: redis.Redis) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.set(tenant_key(tenant, "orig", handle), value, nx=True, px=px)
            pipe.set(_pointer(handle), owner, nx=True, px=px)
            pipe.execute()

        self.conn.call("originals", _EFFECT, keep)
        return handle

    def get(self, handle: str, *, tenant: str | None = None) -> str | None:
        """The original for `handle`, or None (unknown, malformed, expired, Redis down, or another
        tenant's when `tenant` is given)."""
        if not isinstance(handle, str) or not is_handle(handle):
            return None
        try:
            value = self.conn.call("originals", _EFFECT, lambda c: _fetch(c, handle, tenant))
        except Exception as e:
            log.debug("originals: read failed: %s", type(e).__name__)
            return None
        if value is None:
            return None
        owner, data = value
        # The value names its owner too: a pointer or key that disagrees is never trusted.
        return unpack(data, owner)


def _pointer(handle: str) -> str:
    return f"{PREFIX}:orig:{handle}"


def _fetch(c: redis.Redis, handle: str, tenant: str | None) -> tuple[str, bytes] | None:
    if tenant is None:
        raw = c.get(_pointer(handle))
        if not raw:
            return None
        try:
            tenant = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    data = c.get(tenant_key(tenant, "orig", handle))
    return None if data is None else (tenant, data)
