"""Opening Headroom's state for a configuration: salt, response store, ledger, kept originals.

A part that cannot be opened (read-only, full or locked disk, a folder of another owner) is off,
said once and loudly; the proxy keeps running. Replay works from a read-only store. The engine
gets the opened parts as constructor arguments and never opens anything itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass

import diskcache

from headroom_core.options import Config

from . import private, salt as salts
from .cassettestore import open_cassette
from .degrade import Degradations
from .diskledger import Ledger
from .diskoriginals import Originals
from .diskstore import ResponseStore

log = logging.getLogger("headroom.state")

STATE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


@dataclass
class State:
    salt: bytes
    store: ResponseStore | None = None
    ledger: Ledger | None = None
    originals: Originals | None = None

    def close(self) -> None:
        for part in (self.store, self.ledger, self.originals):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # closing must never stop the others
                    log.warning("closing %s failed: %s", type(part).__name__, type(e).__name__)


def open_state(config: Config, degrade: Degradations) -> State:
    d = config.dir
    try:
        private.ensure_dir(d)
        private.fix_tree(d)
        degrade.ok("dir")
    except OSError as e:
        degrade.report("dir", e, "state folder not writable: features that write state are off",
                       path=str(d), status="read-only")
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
    has = getattr(store, "has_files", None)  # a cassette: any file, even a broken one
    if has is None:
        has = next(iter(store.entries()), None) is not None  # any backend of the Store protocol
    return "replay" if has else "record"


def open_store(config: Config, degrade: Degradations) -> ResponseStore | None:
    if config.cassette is not None:
        return open_cassette(config, degrade)
    path = str(config.store_dir)
    try:
        store = ResponseStore(config.store_dir, config.store_size, config.store_ttl)
        degrade.ok("store")
        return store
    except STATE_ERRORS as e:
        error = e
    if config.store_mode != "record":
        try:
            store = ResponseStore(config.store_dir, ttl_seconds=config.store_ttl, read_only=True)
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
