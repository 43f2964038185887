"""A cassette: a folder of plain JSON files, one per recorded exchange, as the response store.

Meant to live in a repository next to the tests that use it: files are written deterministically
(`headroom_core.cassette`), so a re-recording shows in `git diff` exactly what changed, and a
replay opens the folder read-only and changes nothing in it. Every file is read and checked once
when the cassette opens (and again when it changes on disk: a stat scan at most once per
`rescan_interval`), so a hit is a dictionary lookup. A bad file is reported with its name and
line and skipped; the rest of the cassette keeps working.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from headroom_core import cassette
from headroom_core.cassette import CassetteError
from headroom_core.store import Entry, nearest, refusal

from .cassettewriter import Helper, HelperError, digest, shared, write_file
from .diskstore import entry_meta

log = logging.getLogger("headroom.cassette")

RESCAN_INTERVAL = 1.0  # seconds between checks for files changed on disk


@dataclass(slots=True)
class _File:
    stat: tuple[int, int]  # (mtime_ns, size): a change means read it again
    key: str | None = None
    entry: Entry | None = None
    meta: dict | None = None
    error: str | None = None  # why the file is skipped
    answer: bytes | None = None  # `cassettewriter.digest` of the entry, once asked for


def _warn(event: str, **fields) -> None:
    log.warning("%s %s", event, orjson.dumps(fields, default=str).decode())


class CassetteStore:
    """The `headroom_core.store.Store` protocol over a cassette folder.

    Every entry belongs to `cassette.TENANT` (`fixed_tenant`): recordings replay whatever
    credential the request carries. `read_only` (replay) never creates, writes or deletes
    anything under the folder; a folder that does not exist is an empty cassette."""

    fixed_tenant = cassette.TENANT

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False,
                 rescan_interval: float = RESCAN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 helper: Helper | None = None) -> None:
        """`helper`: the process that encodes and writes files (`cassettewriter`); None writes
        them in this process (tools)."""
        self.directory = Path(directory)
        self.read_only = read_only
        self.helper = helper
        self.rescan_interval = rescan_interval
        self._clock = clock
        self._lock = threading.Lock()  # guards _files and _keys
        self._scan_lock = threading.Lock()  # one scan at a time
        self._files: dict[str, _File] = {}
        self._keys: dict[str, str] = {}  # key -> file name (keys claimed by one file only)
        self._dups: dict[str, str] = {}  # file name -> why it is skipped (same key as others)
        self._scanned = float("-inf")
        self.scan()

    # -- loading

    @property
    def problems(self) -> list[str]:
        """One line per file that is skipped: `name: line N: why`."""
        with self._lock:
            bad = {n: f.error for n, f in self._files.items() if f.error} | self._dups
        return [f"{name}: {why}" for name, why in sorted(bad.items())]

    @property
    def has_files(self) -> bool:
        """Whether the folder holds any cassette file, readable or not (`once` replays then)."""
        with self._lock:
            return bool(self._files)

    def miss_note(self) -> str | None:
        """What a replay miss should also say about this cassette (skipped files, no files)."""
        problems = self.problems
        if problems:
            shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
            return f"Cassette {self.directory}: {len(problems)} file(s) skipped: {shown}."
        if not self.has_files:
            return f"Cassette {self.directory} holds no recordings."
        return None

    def scan(self) -> None:
        """Read new and changed files, forget removed ones. Bad files are reported once per
        change (name, line, why) and skipped."""
        if not self._scan_lock.acquire(blocking=False):
            return
        try:
            self._scanned = self._clock()
            found = self._listing()
            with self._lock:
                known = {n: f.stat for n, f in self._files.items()}
            changed = {n: st for n, st in found.items() if known.get(n) != st}
            loaded = {n: self._load(n, st) for n, st in changed.items()}
            with self._lock:
                for n in set(self._files) - set(found):
                    del self._files[n]
                self._files.update(loaded)
                if loaded or len(found) != len(known):
                    self._index()
        finally:
            self._scan_lock.release()

    def _listing(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    if e.name.endswith(cassette.SUFFIX) and not e.name.startswith(".") \
                            and e.is_file():
                        st = e.stat()
                        out[e.name] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            pass
        except OSError as e:
            _warn("cassette_unreadable", dir=str(self.directory), error=type(e).__name__)
        return out

    def _load(self, name: str, stat: tuple[int, int]) -> _File:
        path = self.directory / name
        try:
            key, entry = cassette.decode(path.read_bytes())
        except CassetteError as e:
            _warn("cassette_file_skipped", file=str(path), line=e.line, error=e.args[0])
            return _File(stat, error=str(e))
        except OSError as e:
            _warn("cassette_file_skipped", file=str(path), error=type(e).__name__)
            return _File(stat, error=f"unreadable ({type(e).__name__})")
        entry.meta = entry_meta(entry)
        entry.meta.update(created=stat[0] / 1e9, file=name)
        return _File(stat, key, entry, entry.meta)

    def _index(self) -> None:
        """key -> file, leaving out (and reporting) keys that several files claim."""
        claims: dict[str, list[str]] = {}
        for name, f in self._files.items():
            if f.key is not None:
                claims.setdefault(f.key, []).append(name)
        keys, dups = {}, {}
        for key, names in claims.items():
            if len(names) == 1:
                keys[key] = names[0]
                continue
            for n in names:
                others = sorted(o for o in names if o != n)
                dups[n] = "the same recording (key) as " + ", ".join(others)
                if n not in self._dups:
                    _warn("cassette_file_skipped", file=str(self.directory / n),
                          error="duplicate recording", others=others)
        self._keys, self._dups = keys, dups

    def _fresh(self) -> None:
        if self._clock() - self._scanned >= self.rescan_interval:
            self.scan()

    def _found(self, key: str) -> _File | None:
        with self._lock:
            name = self._keys.get(key)
            return self._files.get(name) if name is not None else None

    # -- the Store protocol

    def get(self, key: str, *, with_request: bool = True, tenant: str | None = None
            ) -> Entry | None:
        """The entry recorded under `key` (held in memory since the file was read)."""
        if tenant is not None and tenant != self.fixed_tenant:
            return None
        self._fresh()
        f = self._found(key)
        return f.entry if f is not None else None

    def meta(self, key: str, *, tenant: str | None = None) -> dict | None:
        if tenant is not None and tenant != self.fixed_tenant:
            return None
        f = self._found(key)
        return dict(f.meta) if f is not None else None

    def entries(self, *, tenant: str | None = None) -> Iterator[tuple[str, dict]]:
        if tenant is not None and tenant != self.fixed_tenant:
            return
        self._fresh()
        with self._lock:
            found = [(k, self._files[n]) for k, n in self._keys.items()]
        for key, f in found:
            yield key, dict(f.meta)

    def keys(self) -> Iterator[str]:
        for key, _ in self.entries():
            yield key

    def path_of(self, key: str) -> Path | None:
        with self._lock:
            name = self._keys.get(key)
        return self.directory / name if name is not None else None

    def put(self, key: str, entry: Entry, *, complete: bool, tenant: str | None = None) -> bool:
        """Write `entry` as `<prefix>-<key12>.json` (replacing the file of an earlier recording
        of `key`). An answer identical to the recorded one leaves the file untouched, its delays
        included: re-recording never churns a fixture. False when refused or on a disk error."""
        why = refusal(entry, complete)
        if why is None and self.read_only:
            why = "read-only cassette"
        if why is None and not isinstance(entry.request, dict):
            why = "no recorded request"
        if why is not None:
            log.debug("cassette refused %s: %s", key, why)
            return False
        try:
            old = self._found(key)
            if old is not None and old.answer is None:
                old.answer = digest(old.entry)
            name = self._name_for(key, entry.request)
            args = (self.directory, name, key, entry, old.answer if old else None)
            try:
                if self.helper is None:
                    raise HelperError("inline")
                kept, stat = self.helper.write(*args)
            except HelperError:
                kept, stat = write_file(*args)
        except Exception as e:
            _warn("cassette_write_failed", key=key, dir=str(self.directory),
                  error=type(e).__name__)
            return False
        if kept is None:  # the same answer as recorded: the file stays as it is
            return True
        # What a reader of the file gets back (`prepare` makes `decode(encode(kept))` equal it).
        kept.meta = entry_meta(kept)
        kept.meta.update(created=stat[0] / 1e9, file=name)
        f = _File(stat, key, kept, kept.meta)
        with self._lock:
            self._files[name] = f
            self._index()
        log.debug("cassette wrote %s: %d bytes", name, stat[1])
        return True

    def _name_for(self, key: str, request: dict) -> str:
        with self._lock:
            name = self._keys.get(key)
            if name is not None:
                return name  # an earlier recording of this request: replace that file
            name = cassette.file_name(key, request)
            other = self._files.get(name)
        if other is not None and other.key != key:
            name = cassette.file_name(key, request, long=True)  # 48-bit prefixes collided
        return name

    def delete(self, key: str, *, tenant: str | None = None) -> bool:
        if self.read_only or (tenant is not None and tenant != self.fixed_tenant):
            return False
        path = self.path_of(key)
        if path is None:
            return False
        try:
            path.unlink()
        except OSError as e:
            _warn("cassette_delete_failed", file=str(path), error=type(e).__name__)
            return False
        with self._lock:
            self._files.pop(path.name, None)
            self._index()
        return True

    # -- tools (scripts/store.py)

    def nearest(self, canonical: dict, *, session_id: str | None = None, limit: int = 10):
        return nearest(self, canonical, session_id=session_id, limit=limit)

    def prune(self, older_than: float | None = None, provider: str | None = None, **_: object
              ) -> int:
        """Delete the recordings of `provider`; with none given, nothing. `older_than` is
        refused (ValueError): a file's time is neither when it was recorded nor when it was last
        replayed (a checkout resets it, an identical re-recording leaves it), so pruning by it
        would delete recordings in use."""
        if older_than is not None:
            raise ValueError("a cassette's files carry no recording time (a checkout resets "
                             "it): prune a cassette by provider, or remove files with git")
        if provider is None:
            return 0
        removed = 0
        for key, meta in list(self.entries()):
            if meta.get("provider") != provider:
                continue
            removed += self.delete(key)
        return removed

    def clear(self) -> int:
        return sum(self.delete(k) for k in list(self.keys()))

    def volume(self) -> int:
        with self._lock:
            return sum(f.stat[1] for f in self._files.values())

    def close(self) -> None:
        pass

    def __enter__(self) -> CassetteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cassette(config, degrade) -> CassetteStore:
    """The cassette `config.cassette`, read-only unless this mode records into it: `replay` (and
    `off`, which replays a cassette) never write; `once` writes only into a cassette without
    files. A cassette that cannot be written where it should be is reported, never fatal."""
    mode = config.store_mode
    store = CassetteStore(config.cassette, read_only=True, helper=shared())
    if mode in ("record", "cache") or (mode == "once" and not store.has_files):
        store.read_only = False
    path = str(config.cassette)
    if not store.read_only and not _writable(config.cassette):
        store.read_only = True
        degrade.report("store", "read-only", "cassette not writable: recordings are served, "
                       "nothing new is recorded", path=path, status="read-only")
    elif store.problems:
        degrade.report("store", "bad-files", f"{len(store.problems)} cassette file(s) skipped "
                       "(see the warnings above): they are not served", path=path,
                       status=f"cassette ({len(store.problems)} files skipped)")
    else:
        degrade.ok("store", "cassette (read-only)" if store.read_only else "cassette")
    return store


def _writable(directory: Path) -> bool:
    """Whether files can be created in `directory` (or in the nearest existing parent, which a
    first recording creates it under)."""
    d = Path(directory)
    while not d.exists() and d.parent != d:
        d = d.parent
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)
