"""The Redis connection shared by the Redis backends: pool, breaker, keys (URLs: `redisurl`).

A dead or slow Redis costs one short timeout, then every call fails fast until a trial call after
a cool-down succeeds; failures are reported per part through `Degradations`, never with the
password (only `redact`ed URLs and error class names are ever logged).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from headroom_core.redisurl import SCHEMES, Target, URLError, parse_url, redact  # noqa: F401

from .degrade import Degradations

log = logging.getLogger("headroom.redis")

# One LAN round trip is well under a millisecond: a quarter second is a Redis that is not there
# (or stalled), and that is all one request (in a worker thread: see runtime.offload_request)
# may lose to it before the breaker opens.
DEFAULT_CONNECT_TIMEOUT = 0.25
DEFAULT_SOCKET_TIMEOUT = 0.25
# After a connection error or timeout, calls fail at once for this long; then one trial call.
DEFAULT_COOLDOWN = 1.0

PREFIX = "headroom"
# Tenant ids ("t:<hex>", "ns:<name>", "anon") go into keys as they are when they hold no glob or
# hash-tag characters; anything else is hashed, so a key pattern can never match across tenants.
_SAFE_TENANT = re.compile(r"[A-Za-z0-9_.:@/-]{1,160}")

T = TypeVar("T")


# --- keys ------------------------------------------------------------------------------------


def tenant_tag(tenant: str) -> str:
    """`{<tenant>}`: a Redis Cluster hash tag, so all of one tenant's keys share a slot (multi-key
    calls stay legal). Tenant ids are salted hashes or namespaces, never credentials."""
    if _SAFE_TENANT.fullmatch(tenant):
        return "{" + tenant + "}"
    digest = hashlib.blake2b(tenant.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return "{h:" + digest + "}"


def tenant_key(tenant: str, kind: str, name: str) -> str:
    """`headroom:{<tenant>}:<kind>:<name>`."""
    return f"{PREFIX}:{tenant_tag(tenant)}:{kind}:{name}"


def tenant_of_key(key: bytes | str) -> str:
    """The tag's content of a tenant key (the tenant id, or its `h:` hash)."""
    k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return k[k.index("{") + 1:k.index("}")]


# --- the breaker -----------------------------------------------------------------------------


class CircuitOpen(redis.exceptions.ConnectionError):
    """Raised without touching the network while Redis is considered down."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"redis unavailable ({cause}); not retrying yet")
        self.cause = cause


# Errors that say "Redis is not there" (refused, reset, timed out, loading, auth): they open the
# breaker. Anything else (a ResponseError) means Redis answered.
NETWORK_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Breaker:
    """Closed -> (network error) -> open for `cooldown` -> one trial call -> closed or open again.
    Thread-safe; while open or while the trial runs, `before` raises CircuitOpen at once.

    With `caller_trials` False no caller is ever the trial: a prober takes it (`take_trial`), so
    a request never waits for a Redis that may still be gone.
    """

    def __init__(self, cooldown: float = DEFAULT_COOLDOWN,
                 clock: Callable[[], float] = time.monotonic, *, caller_trials: bool = True
                 ) -> None:
        self.cooldown = cooldown
        self.caller_trials = caller_trials
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._trial = False
        self.cause: str | None = None  # error class name that opened it

    @property
    def open(self) -> bool:
        return self._open_until is not None

    def before(self) -> bool:
        """Admit a call; True when it is the trial call. Raises CircuitOpen otherwise."""
        with self._lock:
            if self._open_until is None:
                return False
            if self._trial or not self.caller_trials or self._clock() < self._open_until:
                raise CircuitOpen(self.cause or "error")
            self._trial = True
            return True

    def due(self) -> float:
        """Seconds until a trial may run (0: now, or closed)."""
        with self._lock:
            return 0.0 if self._open_until is None else max(0.0, self._open_until - self._clock())

    def take_trial(self) -> bool:
        """The prober's `before`: True when it now holds the trial (open, due, none running)."""
        with self._lock:
            if self._open_until is None or self._trial or self._clock() < self._open_until:
                return False
            self._trial = True
            return True

    def success(self) -> bool:
        """Redis answered; True when this closed an open breaker."""
        with self._lock:
            was_open = self._open_until is not None
            self._open_until, self._trial, self.cause = None, False, None
            return was_open

    def failure(self, cause: str) -> bool:
        """A network error; True when this opened a closed breaker."""
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = self._clock() + self.cooldown
            self._trial = False
            self.cause = cause
            return not was_open

    def release(self) -> None:
        """The trial call ended without a verdict (interrupted): let the next caller try."""
        with self._lock:
            self._trial = False


# --- the connection --------------------------------------------------------------------------


class RedisConn:
    """One connection pool to one Redis, shared by the backends (thread-safe).

    `call(part, effect, fn)` runs `fn(client)` through the breaker and reports failures as a
    degradation of `part` ("store", "ledger", "originals", "betas"; "redis" for the connection
    itself); the first success after failures marks them ok again. Constructing it does no I/O.

    With `probe` (the default) the breaker's trial calls are PINGs from a daemon thread that runs
    only while Redis is down: callers fail fast until it answers, so one outage costs a request
    at most one timeout. Without it, the first caller after each cool-down is the trial.
    """

    def __init__(
        self,
        url: str | Target,
        *,
        password: str | None = None,
        degrade: Degradations | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        cooldown: float = DEFAULT_COOLDOWN,
        max_connections: int | None = None,
        probe: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`url`: a `headroom_redis` URL or its parsed `Target`; `password` (from a file or the
        environment) replaces the URL's. Raises ValueError for a bad URL (password redacted)."""
        target = url if isinstance(url, Target) else parse_url(url)
        if password is not None:
            target = target.with_password(password)
        self.target = target
        self.url = target.display  # never the password: this is what log lines show
        # Called (in the prober's thread) when Redis answers again after an outage.
        self.on_reconnect: list[Callable[[], None]] = []
        self.degrade = degrade if degrade is not None else Degradations()
        self.breaker = Breaker(cooldown, clock, caller_trials=not probe)
        self.probe = probe
        self._degraded: set[str] = set()
        # Parts that have used this connection, and those shown as down only because Redis is
        # (health then says so for every part, not just the ones called since it went down).
        self._parts: set[str] = set()
        self._down: set[str] = set()
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._stop = threading.Event()
        self.pool = redis.ConnectionPool(max_connections=max_connections,
                                         **_pool_kwargs(self.target, connect_timeout,
                                                        socket_timeout))
        self.client = redis.Redis(connection_pool=self.pool)

    def call(self, part: str, effect: str, fn: Callable[[redis.Redis], T]) -> T:
        """`fn(client)`, or the exception it raised (CircuitOpen while Redis is down). A raised
        exception has been reported already (once a minute per part, through `Degradations`) and
        says so (`reported`): callers log it at debug level only."""
        if part not in self._parts and part != "redis":
            with self._lock:
                self._parts.add(part)
        try:
            trial = self.breaker.before()
        except CircuitOpen as e:
            self._report(part, e.cause, effect)
            self._start_probe()  # a no-op while one runs
            raise _reported(e)
        try:
            result = fn(self.client)
        except NETWORK_ERRORS as e:
            kind = type(e).__name__
            if self.breaker.failure(kind):
                self._opened(kind)
            self._report(part, kind, effect)
            raise _reported(e)
        except BaseException as e:
            if trial:
                self.breaker.release()
            if isinstance(e, Exception):
                # Redis answered (e.g. a ResponseError: out of memory, wrong type).
                self._closed_again()
                self._report(part, type(e).__name__, effect)
                _reported(e)
            raise
        self._closed_again()
        if part in self._degraded:
            with self._lock:
                self._degraded.discard(part)
            self.degrade.ok(part)
        return result

    def _opened(self, kind: str) -> None:
        self.degrade.report("redis", kind, f"{self.url} unreachable: shared state off, "
                            f"retried every {self.breaker.cooldown:g}s")
        with self._lock:
            self._degraded.add("redis")
            down = self._parts - self._degraded
            self._down |= down
            self._degraded |= down
        for part in sorted(down):
            self.degrade.ok(part, "unavailable (redis down)")  # said once, by the "redis" line
        self._start_probe()

    def _start_probe(self) -> None:
        if not self.probe or self._stop.is_set():
            return
        with self._lock:
            if self._prober is not None and self._prober.is_alive():
                return
            self._prober = threading.Thread(target=self._probe, name="headroom-redis-probe",
                                            daemon=True)
            self._prober.start()

    def _probe(self) -> None:
        """While the breaker is open: PING once per cool-down; close it when Redis answers."""
        while self.breaker.open and not self._stop.is_set():
            if not self.breaker.take_trial():
                self._stop.wait(max(self.breaker.due(), 0.01))
                continue
            try:
                self.client.ping()
            except NETWORK_ERRORS as e:
                self.breaker.failure(type(e).__name__)
                continue
            except Exception:
                pass  # Redis answered, if not with PONG
            self._closed_again()
            return

    def _closed_again(self) -> None:
        reopened = self.breaker.success()
        if reopened or "redis" in self._degraded:
            with self._lock:
                self._degraded.discard("redis")
                down, self._down = self._down, set()
                self._degraded -= down
            self.degrade.ok("redis")
            for part in sorted(down):
                self.degrade.ok(part)
            log.info("redis_reconnected %s", self.target.where)
        if reopened:
            for callback in list(self.on_reconnect):
                try:
                    callback()
                except Exception as e:  # a callback must not keep the others from running
                    log.warning("redis reconnect callback failed: %s", type(e).__name__)

    def _report(self, part: str, kind: str, effect: str) -> None:
        with self._lock:
            self._degraded.add(part)
        self.degrade.report(part, kind, effect)

    def ping(self) -> bool:
        """Whether Redis answers now (through the breaker: fails fast while it is open)."""
        try:
            return bool(self.call("redis", "shared state off", lambda c: c.ping()))
        except Exception:
            return False

    def eviction_policy(self) -> str | None:
        """Redis's `maxmemory-policy` (None when CONFIG is not allowed or Redis is down). The salt
        and the ledger's size floor carry no TTL: an `allkeys-*` policy may evict them."""
        def read(c: redis.Redis) -> dict:
            try:
                return c.config_get("maxmemory-policy")
            except redis.exceptions.ResponseError:
                return {}  # CONFIG renamed or refused (managed Redis): not a degradation

        try:
            got = self.call("redis", "shared state off", read)
        except Exception:
            return None
        policy = got.get("maxmemory-policy") or got.get(b"maxmemory-policy")
        if isinstance(policy, bytes):
            policy = policy.decode("latin-1")
        if isinstance(policy, str) and policy.startswith("allkeys-"):
            log.warning("redis_eviction_policy %s: may evict headroom:salt (tenant ids change) "
                        "and the ledger floor; use volatile-lru or noeviction", policy)
        return policy

    def close(self) -> None:
        """Stop probing and close the pooled sockets (a later call opens new ones)."""
        self._stop.set()
        prober = self._prober
        if prober is not None:
            prober.join(timeout=2.0)
        self._stop.clear()
        try:
            self.pool.disconnect()
        except Exception as e:
            log.warning("redis close failed: %s", type(e).__name__)

    def __repr__(self) -> str:
        return f"RedisConn({self.url!r})"


def _reported(e: BaseException) -> BaseException:
    """Mark `e` as logged through `Degradations` (`headroom_core.rewrite` then logs it at debug
    level, not once per request)."""
    try:
        e.reported = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return e


def reported(e: BaseException) -> bool:
    return getattr(e, "reported", False) is True


def _pool_kwargs(t: Target, connect_timeout: float, socket_timeout: float) -> dict:
    kwargs: dict = {
        "db": t.db, "username": t.username, "password": t.password,
        "socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
        # No retries inside the client: a retry doubles the wait on a dead Redis, and the breaker
        # already decides when to try again. (A stale pooled socket is re-opened on checkout.)
        "retry": Retry(NoBackoff(), 0),
        "client_name": "headroom",
    }
    if t.scheme == "unix":
        kwargs.update(connection_class=redis.UnixDomainSocketConnection, path=t.path)
        return kwargs
    kwargs.update(host=t.host, port=t.port)
    if t.tls:
        kwargs["connection_class"] = redis.SSLConnection
        kwargs.update(t.ssl)
    return kwargs
