"""Opening Headroom's state for a configuration: salt, response store, ledger, kept originals.

On disk (diskcache under `headroom_dir`) by default; in Redis with `headroom_redis` (one
connection pool per process, shared by every part; the event log stays on disk). A part that
cannot be opened (read-only, full or locked disk, a folder of another owner) is off, said once
and loudly; the proxy keeps running. Replay works from a read-only store. A Redis that is down
turns its parts off through their breaker and back on when it answers again; until the shared
tenant salt has loaded, the store serves nothing and the ledger and originals are off (tenant ids
would differ between instances). The engine gets the opened parts as constructor arguments and
never opens anything itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diskcache

from headroom_core.options import Config, ConfigError
from headroom_core.store import Entry

from . import private, salt as salts
from .cassettestore import CassetteStore, open_cassette
from .degrade import Degradations
from .diskledger import Ledger
from .diskoriginals import Originals
from .diskstore import ResponseStore

if TYPE_CHECKING:  # the Redis modules (and the redis client) load only when Redis is used
    from .redisconn import RedisConn
    from .redisledger import RedisLedger
    from .redisoriginals import RedisOriginals
    from .redisstore import RedisStore

log = logging.getLogger("headroom.state")

STATE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)
PASSWORD_ENV = "HEADROOM_REDIS_PASSWORD"
# Seconds between checks that Redis still holds the shared salt (one GET): instances that
# disagree on it derive different tenant ids, and so miss each other's ledger and recordings.
SALT_CHECK = 5.0
REDIS_SALT_COPY = "redis-salt"  # the shared salt's local copy, under headroom_dir

_SALT_WAIT = ("response store, ledger and kept originals off until the shared tenant salt loads "
              "from Redis (tenant ids would differ between instances)")


@dataclass
class State:
    salt: bytes
    store: Any = None  # a headroom_core.store.Store
    ledger: Any = None  # a headroom_core.ledger.Ledger
    originals: Any = None  # a headroom_core.originals.Originals
    redis: RedisConn | None = None
    # Redis only: the shared tenant salt has not loaded yet (Redis down at start, no local copy).
    salt_pending: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _due: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def backend(self) -> str:
        """Where the state lives, without credentials: 'redis <url>' or 'disk'."""
        return f"redis {self.redis.url}" if self.redis is not None else "disk"

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        for part in (self.store, self.ledger, self.originals):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # closing must never stop the others
                    log.warning("closing %s failed: %s", type(part).__name__, type(e).__name__)
        if self.redis is not None:
            self.redis.close()

    @property
    def parts(self) -> tuple[Any, ...]:
        """The parts a thread may hold a database connection to."""
        return (self.store, self.ledger, self.originals)

    def release_thread(self, parts: Iterable[Any] | None = None) -> None:
        """Close the calling thread's own database connections to `parts` (default: all; disk
        parts only; the next use opens new ones). A SQLite connection sits in a reference cycle,
        so one a thread left open lives on until the garbage collector happens to run, and
        closing it then checkpoints the write-ahead log into the database: the files change
        after `close`. Every thread that used a part calls this before the part is closed."""
        for part in self.parts if parts is None else parts:
            release = getattr(part, "release_thread", None)
            if release is not None:
                try:
                    release()
                except Exception as e:
                    log.warning("releasing %s failed: %s", type(part).__name__, type(e).__name__)

    def watch_salt(self, cache_path: Path, on_salt: Callable[[State, bytes], None]) -> None:
        """Redis only: a daemon thread that loads the shared salt while it is pending, and checks
        it again whenever Redis comes back and every `SALT_CHECK` seconds (a Redis flushed or
        restarted without its data, which a pooled connection may not notice, gets ours back;
        one holding another salt wins, and `on_salt` adopts it). Never on a request's path."""
        from . import redissalt

        conn = self.redis
        assert conn is not None
        conn.on_reconnect.append(self._due.set)
        if self.salt_pending:
            self._due.set()

        def watch() -> None:
            while not self._stop.is_set():
                self._due.wait(0.5 if self.salt_pending else SALT_CHECK)
                if self._stop.is_set():
                    return
                if conn.breaker.open:
                    continue  # the reconnect sets _due again
                self._due.clear()
                try:
                    salt = redissalt.load_salt(conn, prefer=None if self.salt_pending
                                               else self.salt)
                except Exception:
                    continue  # reported by the connection
                redissalt.keep_copy(cache_path, salt)
                if self.salt_pending or salt != self.salt:
                    on_salt(self, salt)

        threading.Thread(target=watch, name="headroom-redis-salt", daemon=True).start()


class WaitingStore:
    """The response store while the shared salt is pending: nothing is served, nothing kept, and
    replay mode says the store is unavailable."""

    read_only = False
    available = False

    def get(self, key: str, *, with_request: bool = True, tenant: str | None = None
            ) -> Entry | None:
        return None

    def put(self, key: str, entry: Entry, *, complete: bool, tenant: str | None = None) -> bool:
        return False

    def meta(self, key: str, *, tenant: str | None = None) -> dict | None:
        return None

    def entries(self, *, tenant: str | None = None) -> Iterator[tuple[str, dict]]:
        return iter(())

    def delete(self, key: str, *, tenant: str | None = None) -> bool:
        return False

    def close(self) -> None:
        pass


def open_state(config: Config, degrade: Degradations,
               on_salt: Callable[[State, bytes], None] | None = None) -> State:
    """The state `config` asks for. With Redis, `on_salt(state, salt)` is called (from a daemon
    thread) when the shared salt arrives after start or changes; the caller adopts it with
    `attach_redis_parts` and rebuilds what holds the salt."""
    d = config.dir
    try:
        fresh = not os.path.exists(d)
        if fresh:
            private.ensure_dir(d)
        elif not os.path.isdir(d):
            raise NotADirectoryError(f"{d} is not a folder")
        private.fix_own(d)
        degrade.ok("dir")
    except OSError as e:
        status = "unavailable (not a folder)" if isinstance(e, NotADirectoryError) else "read-only"
        degrade.report("dir", e, "state folder not usable: features that write state are off",
                       path=str(d), status=status)
    if config.redis is not None:
        return _open_redis_state(config, degrade, on_salt)
    state = State(salt=_salt(d, degrade))
    if wants_store(config):
        state.store = open_store(config, degrade)
    else:
        degrade.ok("store", "off")
    if config.compress != "off":
        state.ledger, state.originals = open_rewrite_state(config, degrade)
    else:
        degrade.ok("ledger", "off")
        degrade.ok("originals", "off")
    return state


# --- Redis -----------------------------------------------------------------------------------


def redis_password(config: Config, environ: Mapping[str, str] = os.environ) -> str | None:
    """The Redis password from `headroom_redis_password_file` or HEADROOM_REDIS_PASSWORD (None:
    the URL's, if it has one). Raises ConfigError naming the source, never the value: a missing
    or empty file, or the password given in more than one place."""
    target = config.redis
    if target is None:
        return None
    path = config.redis_password_file
    env = environ.get(PASSWORD_ENV) or None
    sources = [name for name, given in (("a password in headroom_redis",
                                         target.password is not None),
                                        ("headroom_redis_password_file", path is not None),
                                        (PASSWORD_ENV, env is not None)) if given]
    if len(sources) > 1:
        raise ConfigError("headroom_redis", target.display,
                          "password given in " + " and in ".join(sources) + "; keep one")
    if path is None:
        return env
    try:
        with open(path, "rb") as f:
            first = f.read(64 << 10).decode("utf-8").splitlines()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("headroom_redis_password_file", str(path),
                          f"cannot read it ({type(e).__name__})") from None
    if not first or not first[0]:
        raise ConfigError("headroom_redis_password_file", str(path),
                          "its first line is empty")
    if mode & 0o077:
        log.warning("headroom: %s is readable by other users; chmod 600 it", path)
    return first[0]


def check_redis(config: Config) -> None:
    """Startup check of what the option parsers cannot see (they never touch disk): raises
    ConfigError when the Redis password cannot be had."""
    redis_password(config)


def _open_redis_state(config: Config, degrade: Degradations,
                      on_salt: Callable[[State, bytes], None] | None) -> State:
    from . import redissalt
    from .redisconn import RedisConn

    target = config.redis
    password = redis_password(config)
    if target.password is not None:
        log.warning("headroom: the headroom_redis URL carries a password; mitmproxy shows option "
                    "values in mitmweb and the process list. Use %s or "
                    "headroom_redis_password_file instead.", PASSWORD_ENV)
    conn = RedisConn(target, password=password, degrade=degrade)
    copy = config.dir / REDIS_SALT_COPY
    try:
        salt, pending = redissalt.load_salt(conn, cache_path=copy), False
        degrade.ok("salt")
    except Exception as e:
        salt, pending = salts.new_salt(), True
        degrade.report("salt", e, _SALT_WAIT, status="waiting for redis")
    state = State(salt=salt, redis=conn, salt_pending=pending)
    if pending and config.cassette is not None:  # its own tenant: no salt needed
        state.store = open_cassette(config, degrade)
    elif pending:
        state.store = WaitingStore() if config.store_mode != "off" else None
        degrade.ok("store", "off" if config.store_mode == "off" else "waiting for the salt")
    if pending:
        for part in ("ledger", "originals"):
            degrade.ok(part, "off" if config.compress == "off" else "waiting for the salt")
    else:
        conn.eviction_policy()  # warns when Redis may evict the salt
        attach_redis_parts(state, config, degrade)
    if on_salt is not None:
        state.watch_salt(copy, on_salt)
    log.info("headroom: state in %s%s", conn.url,
             " (waiting for the shared tenant salt)" if pending else "")
    return state


def attach_redis_parts(state: State, config: Config, degrade: Degradations) -> None:
    """The Redis store, ledger and originals on the state's connection (no I/O). They exist
    while Redis is down and fail fast through its breaker until it answers again."""
    conn = state.redis
    assert conn is not None
    state.salt_pending = False
    if config.cassette is None or state.store is None:
        state.store = open_redis_store(config, degrade, conn)
    state.ledger, state.originals = open_redis_rewrite_state(config, degrade, conn)


def open_redis_store(config: Config, degrade: Degradations, conn: RedisConn
                     ) -> RedisStore | CassetteStore | None:
    from .redisstore import RedisStore

    if config.cassette is not None:  # a cassette is the store, whatever holds the rest
        return open_cassette(config, degrade)
    if config.store_mode == "off":
        degrade.ok("store", "off")
        return None
    degrade.ok("store")
    return RedisStore(conn, ttl_seconds=config.store_ttl)


def open_redis_rewrite_state(config: Config, degrade: Degradations, conn: RedisConn
                             ) -> tuple[RedisLedger | None, RedisOriginals | None]:
    from .redisledger import RedisLedger
    from .redisoriginals import RedisOriginals

    if config.compress == "off":
        degrade.ok("ledger", "off")
        degrade.ok("originals", "off")
        return None, None
    degrade.ok("ledger")
    degrade.ok("originals")
    # The size floor is read on every request (floor_refresh 0): a floor cached per process
    # could miss a shorter original another instance recorded a moment ago, and a session
    # alternating between instances would then forward an output uncompressed (a prefix bust).
    return (RedisLedger(conn, lifetime=config.ledger_ttl, floor_refresh=0.0),
            RedisOriginals(conn, ttl=config.originals_ttl))


# --- disk ------------------------------------------------------------------------------------


def _salt(d: os.PathLike[str], degrade: Degradations) -> bytes:
    path = os.path.join(os.fspath(d), "salt")
    try:
        s = salts.load_salt(path)
        degrade.ok("salt")
        return s
    except OSError as e:
        degrade.report("salt", e, "a salt for this run only: tenant ids and original handles will "
                       "differ after a restart", path=path, status="ephemeral")
        return salts.new_salt()


def wants_store(config: Config) -> bool:
    """A cassette is used whatever the mode (with `off` it replays)."""
    return config.store_mode != "off" or config.cassette is not None


def resolved_mode(config: Config, store) -> str:
    """The mode the engine runs: `once` is replay when the store holds recordings and record
    when it is empty; a cassette with mode `off` replays."""
    mode = config.store_mode
    if mode == "off":
        return "replay" if config.cassette is not None else "off"
    if mode != "once":
        return mode
    if store is None:
        return "record"
    if not getattr(store, "available", True):
        return "replay"  # cannot tell yet (Redis without the salt): never forward meanwhile
    has = getattr(store, "has_files", None)  # a cassette: any file, even a broken one
    if has is None:
        has = next(iter(store.entries()), None) is not None  # any backend of the Store protocol
    return "replay" if has else "record"


def open_store(config: Config, degrade: Degradations) -> ResponseStore | None:
    if config.cassette is not None:
        return open_cassette(config, degrade)
    path = str(config.store_dir)
    try:
        store = ResponseStore(config.store_dir, config.store_size, config.store_ttl,
                              degrade=degrade)
        degrade.ok("store")
        return store
    except STATE_ERRORS as e:
        error = e
    if config.store_mode != "record":
        try:
            store = ResponseStore(config.store_dir, ttl_seconds=config.store_ttl, read_only=True,
                                  degrade=degrade)
        except STATE_ERRORS:
            pass
        else:
            degrade.report("store", error, "response store read-only: recordings are served, "
                           "nothing new is stored", path=path, status="read-only")
            return store
    effect = ("replay mode answers every request with an error (never forwards)"
              if config.store_mode == "replay" else "response store off")
    degrade.report("store", error, effect, path=path)
    return None


def open_rewrite_state(config: Config, degrade: Degradations
                   ) -> tuple[Ledger | None, Originals | None]:
    try:
        ledger = Ledger(config.dir / "ledger", size_limit=config.ledger_size)
    except STATE_ERRORS as e:
        degrade.report("ledger", e, "compression off (requests forwarded as the client sent "
                       "them)", path=str(config.dir / "ledger"))
        return None, None
    try:
        originals = Originals(config.dir / "originals", size_limit=config.originals_size,
                              ttl=config.originals_ttl)
    except STATE_ERRORS as e:
        ledger.close()
        degrade.report("originals", e, "compression off (requests forwarded as the client sent "
                       "them)", path=str(config.dir / "originals"))
        return None, None
    degrade.ok("ledger")
    degrade.ok("originals")
    return ledger, originals
