"""Private state on disk: every folder Headroom creates or writes to is 0700, every file 0600.

Prompts, answers and tool outputs are the user's alone. Modes are set when things are created and
fixed when pre-existing ones are opened; a mode that cannot be fixed (another owner) is reported
once per path, never fatal.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading

import diskcache

log = logging.getLogger("headroom.private")

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")

_warned: set = set()
_warned_lock = threading.Lock()


def _warn_once(path: str, error: OSError) -> None:
    with _warned_lock:
        if path in _warned:
            return
        _warned.add(path)
    log.warning("private_mode_unfixable %s: %s (state may be readable by others)", path,
                type(error).__name__)


def chmod(path: str | os.PathLike[str], mode: int, *, report: bool = True) -> bool:
    """Set `mode` unless it is already set; False (reported once) if it cannot be."""
    p = os.fspath(path)
    try:
        if stat.S_IMODE(os.stat(p).st_mode) != mode:
            os.chmod(p, mode)
    except FileNotFoundError:
        pass
    except OSError as e:
        if report:
            _warn_once(p, e)
        return False
    return True


def ensure_dir(path: str | os.PathLike[str], *, fix: bool = True) -> None:
    """Create `path` (and missing parents) 0700, and (with `fix`) fix an existing one to 0700.
    Raises OSError when it cannot be created or is not a folder."""
    p = os.path.abspath(os.fspath(path))
    missing = []
    cur = p
    while not os.path.isdir(cur):
        missing.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
    if not os.path.isdir(p):  # a file (or a dangling link) is in the way: never touch it
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", p)
    if fix or missing:
        chmod(p, DIR_MODE)


# What Headroom keeps under headroom_dir; nothing else there is its business (a headroom_dir may
# be a folder with other files in it).
OWN_ENTRIES = ("salt", "redis-salt", "events.jsonl", "store", "ledger", "originals")


def fix_own(root: str | os.PathLike[str]) -> None:
    """Fix the modes of Headroom's own entries under `root` (and of `root` itself when nothing
    else lives there). Never raises."""
    r = os.fspath(root)
    try:
        names = os.listdir(r)
    except OSError as e:
        _warn_once(r, e)
        return
    foreign = sorted(n for n in names if not _own(n))
    if not foreign:
        chmod(r, DIR_MODE)
    else:
        _warn_shared(r, foreign)
    for name in names:
        if not _own(name):
            continue
        p = os.path.join(r, name)
        if os.path.isdir(p) and not os.path.islink(p):
            fix_tree(p)
        elif os.path.isfile(p):
            chmod(p, FILE_MODE)


def _warn_shared(root: str, foreign: list[str]) -> None:
    """A headroom_dir that holds other files (a home folder, /tmp) keeps its mode: changing it
    could break whatever else lives there. Said once, when that mode lets others in."""
    try:
        mode = stat.S_IMODE(os.stat(root).st_mode)
    except OSError:
        return
    if not mode & 0o077:
        return
    with _warned_lock:
        if ("shared", root) in _warned:
            return
        _warned.add(("shared", root))
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    log.warning("private_dir_shared %s holds entries that are not Headroom's (%s): its mode %s "
                "is left as it is (Headroom's own files are 0600); give headroom_dir a folder "
                "of its own", root, shown, oct(mode))


def _own(name: str) -> bool:
    return name in OWN_ENTRIES or name.startswith(("events.jsonl.", "salt."))


def fix_tree(root: str | os.PathLike[str]) -> bool:
    """Fix the modes of everything below `root` (pre-existing state from an older version or
    another umask): folders 0700, files 0600. Stops at the first mode it cannot set (a
    read-only volume, another owner) and reports that once. Never raises."""
    stack = [os.fspath(root)]
    while stack:
        d = stack.pop()
        if not chmod(d, DIR_MODE, report=False):
            _warn_once(os.fspath(root), PermissionError("cannot set modes below this folder"))
            return False
        try:
            with os.scandir(d) as it:
                for entry in it:
                    if entry.is_symlink():
                        continue
                    if entry.is_dir():
                        stack.append(entry.path)
                    elif not chmod(entry.path, FILE_MODE, report=False):
                        _warn_once(os.fspath(root), PermissionError("cannot set file modes"))
                        return False
        except OSError as e:
            _warn_once(d, e)
            return False
    return True


def fix_sqlite(directory: str | os.PathLike[str]) -> None:
    """SQLite creates its -wal and -shm files with the database file's mode: fixing the database
    keeps every later journal file private too."""
    for name in SQLITE_FILES:
        chmod(os.path.join(os.fspath(directory), name), FILE_MODE)


def open_append(path: str | os.PathLike[str]):
    """A binary append handle on a 0600 file (created, or fixed if it existed)."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError as e:
        _warn_once(os.fspath(path), e)
    return os.fdopen(fd, "ab")


class PrivateDisk(diskcache.Disk):
    """diskcache's Disk writing value files 0600 in 0700 folders."""

    def _write(self, full_path, iterator, mode, encoding=None):
        full_dir = os.path.dirname(full_path)
        for count in range(1, 11):
            with contextlib.suppress(OSError):
                ensure_dir(full_dir)
            try:
                # Another cache may have deleted the folder before the file could be opened.
                fd = os.open(full_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except OSError:
                if count == 10:
                    raise
                continue
            with open(fd, "wb" if "b" in mode else "w", encoding=encoding) as writer:
                size = 0
                for chunk in iterator:
                    size += len(chunk)
                    writer.write(chunk)
                return size
        return 0  # unreachable: the tenth failure raises


def open_cache(directory: str | os.PathLike[str], **settings) -> diskcache.Cache:
    """A diskcache.Cache whose folder, database and value files are private."""
    d = os.fspath(directory)
    ensure_dir(d)
    settings.setdefault("disk", PrivateDisk)
    cache = diskcache.Cache(d, **settings)
    fix_sqlite(d)
    return cache
