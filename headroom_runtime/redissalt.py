"""The tenant salt shared through Redis, so every instance derives the same tenant ids.

`headroom:salt` (16 random bytes, no TTL) is created once with SET NX: two instances starting at
once both read back the winner. An optional local copy covers a restart while Redis is down, and
a Redis that lost its data (restarted without persistence) gets the salt in use back, so tenant
ids do not change under running instances.
"""

from __future__ import annotations

import logging
import os

from . import salt as salts
from .redisconn import PREFIX, RedisConn

log = logging.getLogger("headroom.redis")

SALT_KEY = f"{PREFIX}:salt"


def load_salt(conn: RedisConn, *, cache_path: str | os.PathLike[str] | None = None,
              prefer: bytes | None = None) -> bytes:
    """The shared salt, created on first use. With `cache_path`, the salt is also kept there
    (0600) and read from there when Redis cannot be reached. Raises the Redis error otherwise.

    When Redis holds no salt, `prefer` (the salt this process uses), else the local copy, is put
    there (SET NX) instead of a new random one."""
    if prefer is None and cache_path is not None:
        prefer = _cached(cache_path)
    try:
        salt = conn.call("redis", "tenant salt unavailable", lambda c: _shared(c, prefer))
    except Exception as e:
        if cache_path is not None:
            cached = _cached(cache_path)
            if cached is not None:
                log.warning("redis salt unavailable (%s): using the copy kept at %s",
                            type(e).__name__, os.fspath(cache_path))
                return cached
        raise
    if cache_path is not None:
        keep_copy(cache_path, salt)
    return salt


def keep_copy(path: str | os.PathLike[str], salt: bytes) -> None:
    """Keep `salt` as the local copy at `path` (0600) unless it is there already."""
    if _cached(path) != salt:
        _keep(path, salt)


def _shared(c, prefer: bytes | None = None) -> bytes:
    salt = c.get(SALT_KEY)
    if salt is not None and len(salt) >= 16:
        return salt
    c.set(SALT_KEY, prefer if prefer and len(prefer) >= 16 else salts.new_salt(), nx=True)
    salt = c.get(SALT_KEY)
    if salt is None or len(salt) < 16:
        raise RuntimeError("redis did not keep the tenant salt")
    return salt


def _cached(path: str | os.PathLike[str]) -> bytes | None:
    try:
        with open(path, "rb") as f:
            salt = f.read()
    except OSError:
        return None
    return salt if len(salt) >= 16 else None


def _keep(path: str | os.PathLike[str], salt: bytes) -> None:
    p = os.fspath(path)
    tmp = f"{p}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(salt)
        os.replace(tmp, p)  # the shared salt wins over whatever copy was there
    except OSError as e:
        log.warning("cannot keep a copy of the redis salt at %s: %s", p, type(e).__name__)
