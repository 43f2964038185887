"""The response store in Redis: the same frames as the disk store, by tenant and request key.

`headroom:{<tenant>}:store:<key>` holds the frame (`headroom_core.store.encode_entry`), expiring
after the store TTL; `headroom:storeidx:<key>` names the owner tenant for callers without one.
Reads never raise (a failure reads as "no entry"), writes return False on failure.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator

import redis

from headroom_core.store import CorruptEntry, Entry, decode_entry, encode_entry, nearest, \
    read_meta, refusal, storable_headers

from .diskstore import entry_meta
from .redisconn import PREFIX, RedisConn, tenant_key, tenant_tag

log = logging.getLogger("headroom.store")

# A frame's JSON header (meta, status, response headers) is a few hundred bytes to a few KB:
# one GETRANGE of this much reads it whole almost always; a longer one takes a second call.
META_PEEK = 8192
_PREFIX = struct.Struct(">4s32sII")
_SCAN_COUNT = 500  # keys per SCAN step: big enough to be quick, small enough not to stall Redis
_BATCH = 200  # keys per pipelined batch of reads or deletes

_READ = "recordings not served (store misses)"
_WRITE = "nothing new is recorded"


class RedisStore:
    """Responses by tenant and request key in Redis, shared by every Headroom using it.

    Bounded by TTL (`ttl_seconds`, None: never expire; then by Redis's own maxmemory policy), not
    by a local size cap. Only complete 2xx responses are accepted (`refusal`). Every method takes
    an optional `tenant`; without one, the owner is looked up in the tenant-free index.
    """

    read_only = False

    def __init__(self, conn: RedisConn, *, ttl_seconds: float | None = None) -> None:
        self.conn = conn
        self.ttl_seconds = ttl_seconds

    @property
    def available(self) -> bool:
        """False while Redis is known to be down (a miss then means "cannot look", not "never
        recorded": replay mode says so). No I/O."""
        return not self.conn.breaker.open

    # -- single entries

    def put(self, key: str, entry: Entry, *, complete: bool, tenant: str | None = None) -> bool:
        """Store `entry` under `key` for `tenant` (default: `entry.request["tenant"]`); False when
        refused (see `refusal`, no key, no tenant) or on a Redis error."""
        why = refusal(entry, complete)
        recorded = entry.request.get("tenant") if isinstance(entry.request, dict) else None
        if tenant is None:
            tenant = recorded
        elif recorded is not None and recorded != tenant:
            why = "tenant differs from the recorded request's"
        if why is None and (not isinstance(key, str) or not key):
            why = "no key"
        if why is None and (not isinstance(tenant, str) or not tenant):
            why = "no tenant"
        if why is not None:
            log.debug("store refused %s: %s", key, why)
            return False
        try:
            stored = Entry(entry.status, storable_headers(entry.headers), entry.body,
                           entry.chunks, entry.request, entry.meta)
            frame = encode_entry(stored, entry_meta(stored))
        except Exception as e:
            log.warning("store write failed for %s: %s", key, type(e).__name__)
            return False
        px = _px(self.ttl_seconds)

        def write(c: redis.Redis) -> None:
            # Value first: a reader never finds an index entry pointing at nothing it could read.
            pipe = c.pipeline(transaction=False)
            pipe.set(tenant_key(tenant, "store", key), frame, px=px)
            pipe.set(_index_key(key), tenant.encode("utf-8", "surrogatepass"), px=px)
            pipe.execute()

        try:
            self.conn.call("store", _WRITE, write)
        except Exception as e:
            # Redis failures are reported (once a minute) by the connection, not per request.
            log.debug("store write failed for %s: %s", key, type(e).__name__)
            return False
        log.debug("stored %s: %d bytes", key, len(frame))
        return True

    def get(self, key: str, *, with_request: bool = True, tenant: str | None = None
            ) -> Entry | None:
        """The entry under `key` (only `tenant`'s when given), whole and intact, or None (absent,
        expired, damaged, another tenant's, Redis error)."""
        try:
            found = self.conn.call("store", _READ, lambda c: self._fetch(c, key, tenant))
        except Exception as e:
            log.debug("store read failed for %s: %s", key, type(e).__name__)
            return None
        if found is None:
            return None
        owner, data = found
        try:
            entry = decode_entry(data, with_request=with_request)
        except CorruptEntry as e:
            log.warning("dropping damaged store entry %s: %s", key, e)
            self.delete(key, tenant=owner)
            return None
        if entry.meta.get("tenant") not in (None, owner):
            log.warning("store entry %s is not its index owner's; ignored", key)
            return None
        return entry

    def _fetch(self, c: redis.Redis, key: str, tenant: str | None
               ) -> tuple[str, bytes] | None:
        if not isinstance(key, str) or not key:
            return None
        if tenant is None:
            tenant = _owner(c.get(_index_key(key)))
            if tenant is None:
                return None
        data = c.get(tenant_key(tenant, "store", key))
        return None if data is None else (tenant, data)

    def meta(self, key: str, *, tenant: str | None = None) -> dict | None:
        """The metadata of the entry under `key` without reading its body, or None."""
        def read(c: redis.Redis) -> dict | None:
            owner = tenant if tenant is not None else _owner(c.get(_index_key(key)))
            if owner is None:
                return None
            return _read_meta(c, tenant_key(owner, "store", key))

        try:
            return self.conn.call("store", _READ, read)
        except Exception:
            return None

    def delete(self, key: str, *, tenant: str | None = None) -> bool:
        def drop(c: redis.Redis) -> bool:
            idx = _index_key(key)
            owner = _owner(c.get(idx))
            who = tenant if tenant is not None else owner
            if who is None:
                return False
            gone = c.delete(tenant_key(who, "store", key))
            if owner == who:
                c.delete(idx)
            return bool(gone)

        try:
            return self.conn.call("store", _WRITE, drop)
        except Exception as e:
            log.debug("store delete failed for %s: %s", key, type(e).__name__)
            return False

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.meta(key) is not None

    # -- listing and maintenance

    def _scan(self, tenant: str | None) -> Iterator[bytes]:
        """Every store value key (of `tenant`, or of all tenants): SCAN, never KEYS."""
        tag = tenant_tag(tenant) if tenant is not None else "{*}"
        pattern = f"{PREFIX}:{tag}:store:*"
        cursor: int | None = None
        while cursor != 0:
            cursor, keys = self.conn.call(
                "store", _READ,
                lambda c, cur=cursor or 0: c.scan(cur, match=pattern, count=_SCAN_COUNT))
            yield from keys

    def keys(self, *, tenant: str | None = None) -> Iterator[str]:
        """Every stored key (of `tenant`, or of all tenants)."""
        try:
            for rkey in self._scan(tenant):
                yield _store_key(rkey)
        except Exception as e:
            log.debug("store listing failed: %s", type(e).__name__)

    def entries(self, *, tenant: str | None = None) -> Iterator[tuple[str, dict]]:
        """(key, meta) for every live entry (of `tenant`, or of all tenants), headers only."""
        for rkey, meta in self._metas(tenant):
            if meta is not None:
                yield _store_key(rkey), meta

    def _metas(self, tenant: str | None) -> Iterator[tuple[bytes, dict | None]]:
        """(value key, meta or None when damaged) by SCAN, headers read in pipelined batches."""
        try:
            batch: list[bytes] = []
            for rkey in self._scan(tenant):
                batch.append(rkey)
                if len(batch) >= _BATCH:
                    yield from self._meta_batch(batch)
                    batch = []
            if batch:
                yield from self._meta_batch(batch)
        except Exception as e:
            log.debug("store listing failed: %s", type(e).__name__)

    def _meta_batch(self, rkeys: list[bytes]) -> Iterator[tuple[bytes, dict | None]]:
        def read(c: redis.Redis) -> list[bytes]:
            pipe = c.pipeline(transaction=False)
            for k in rkeys:
                pipe.getrange(k, 0, META_PEEK - 1)
            return pipe.execute()

        for rkey, head in zip(rkeys, self.conn.call("store", _READ, read)):
            if not head:
                continue  # expired between SCAN and now
            try:
                meta = _meta_from(head)
                if meta is None:  # a header longer than the peek
                    meta = self.conn.call("store", _READ, lambda c, k=rkey: _read_meta(c, k))
            except CorruptEntry:
                meta = None
            yield rkey, meta

    def nearest(self, canonical: dict, *, session_id: str | None = None, limit: int = 10):
        """`headroom_core.store.nearest`: scans only the canonical request's tenant."""
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
        given, only damaged entries and index entries whose value is gone (Redis expires the
        rest itself). Returns how many store entries were deleted."""
        criteria = any(c is not None for c in (older_than, provider, endpoint, model))
        now = time.time()
        doomed: list[bytes] = []
        for rkey, meta in self._metas(tenant):
            if meta is None:
                doomed.append(rkey)
                continue
            if not (criteria or tenant is not None):
                continue
            if older_than is not None and now - float(meta.get("created") or 0) <= older_than:
                continue
            if any(want is not None and meta.get(k) != want for k, want in
                   (("provider", provider), ("endpoint", endpoint), ("model", model))):
                continue
            doomed.append(rkey)
        removed = self._unlink(doomed, with_index=True)
        if not criteria and tenant is None:
            self._drop_dangling_index()
        return removed

    def _unlink(self, rkeys: list[bytes], *, with_index: bool) -> int:
        removed = 0
        for i in range(0, len(rkeys), _BATCH):
            part = rkeys[i:i + _BATCH]

            def drop(c: redis.Redis, part=part) -> int:
                pipe = c.pipeline(transaction=False)
                for k in part:
                    pipe.unlink(k)
                if with_index:
                    for k in part:
                        pipe.unlink(_index_key(_store_key(k)))
                return sum(pipe.execute()[:len(part)])

            try:
                removed += self.conn.call("store", _WRITE, drop)
            except Exception as e:
                log.warning("store delete failed: %s", type(e).__name__)
                break
        return removed

    def _drop_dangling_index(self) -> None:
        pattern = f"{PREFIX}:storeidx:*"
        try:
            cursor: int | None = None
            while cursor != 0:
                cursor, keys = self.conn.call(
                    "store", _READ,
                    lambda c, cur=cursor or 0: c.scan(cur, match=pattern, count=_SCAN_COUNT))
                if keys:
                    self.conn.call("store", _WRITE, lambda c, ks=keys: _drop_dangling(c, ks))
        except Exception as e:
            log.warning("store index prune failed: %s", type(e).__name__)

    def clear(self) -> int:
        """Delete every entry (all tenants) and the index; returns how many entries."""
        removed = self._unlink(list(self._scan_safe(None)), with_index=False)
        try:
            cursor: int | None = None
            while cursor != 0:
                cursor, keys = self.conn.call(
                    "store", _WRITE,
                    lambda c, cur=cursor or 0: c.scan(cur, match=f"{PREFIX}:storeidx:*",
                                                      count=_SCAN_COUNT))
                if keys:
                    self.conn.call("store", _WRITE, lambda c, ks=keys: c.unlink(*ks))
        except Exception as e:
            log.warning("store clear failed: %s", type(e).__name__)
        return removed

    def _scan_safe(self, tenant: str | None) -> Iterator[bytes]:
        try:
            yield from self._scan(tenant)
        except Exception as e:
            log.warning("store listing failed: %s", type(e).__name__)

    def volume(self) -> int:
        """Bytes of stored frames (values only: approximate, Redis adds its own overhead)."""
        total = 0
        batch = list(self._scan_safe(None))
        for i in range(0, len(batch), _BATCH):
            part = batch[i:i + _BATCH]

            def sizes(c: redis.Redis, part=part) -> list[int]:
                pipe = c.pipeline(transaction=False)
                for k in part:
                    pipe.strlen(k)
                return pipe.execute()

            try:
                total += sum(self.conn.call("store", _READ, sizes))
            except Exception:
                return total
        return total

    def close(self) -> None:
        """Nothing to release: the connection pool is the `RedisConn`'s, closed by its owner."""

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _px(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, int(seconds * 1000))


def _index_key(key: str) -> str:
    return f"{PREFIX}:storeidx:{key}"


def _store_key(rkey: bytes | str) -> str:
    k = rkey.decode("utf-8", "replace") if isinstance(rkey, bytes) else rkey
    return k.rpartition(":store:")[2]


def _owner(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        return value.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


def _meta_from(head: bytes) -> dict | None:
    """Meta from the first bytes of a frame; None when the header runs past them."""
    if len(head) >= _PREFIX.size and head[:4] == b"HRS1":
        if _PREFIX.size + _PREFIX.unpack_from(head)[2] > len(head):
            return None
    return read_meta(head)


def _read_meta(c: redis.Redis, rkey: str | bytes) -> dict | None:
    head = c.getrange(rkey, 0, META_PEEK - 1)
    if not head:
        return None
    meta = _meta_from(head)
    if meta is None:
        hlen = _PREFIX.unpack_from(head)[2]
        meta = read_meta(c.getrange(rkey, 0, _PREFIX.size + hlen - 1))
    return meta


def _drop_dangling(c: redis.Redis, index_keys: list[bytes]) -> None:
    owners = c.mget(index_keys)
    pipe = c.pipeline(transaction=False)
    pairs = []
    for ik, owner in zip(index_keys, owners):
        who = _owner(owner)
        if who is not None:
            key = ik.decode("utf-8", "replace").partition(":storeidx:")[2]
            pairs.append(ik)
            pipe.exists(tenant_key(who, "store", key))
    gone = [ik for ik, live in zip(pairs, pipe.execute()) if not live]
    if gone:
        c.unlink(*gone)
