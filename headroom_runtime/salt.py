"""The installation's tenant salt, kept beside the state it keys (0600).

Tenant ids, originals handles and hashed query credentials are keyed with it, so they survive
restarts and never reveal a credential.
"""

from __future__ import annotations

import os

from . import private


def new_salt() -> bytes:
    return os.urandom(16)


def load_salt(path: str | os.PathLike[str]) -> bytes:
    """The installation's tenant salt, created (0600) on first use and kept beside the state it
    keys, so tenant ids (and everything stored under them) survive restarts."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            salt = f.read()
        if len(salt) >= 16:
            return salt
    except FileNotFoundError:
        pass
    private.ensure_dir(os.path.dirname(p) or ".", fix=False)  # the folder is fix_own's
    salt = new_salt()
    tmp = f"{p}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(salt)
    try:
        os.link(tmp, p)  # atomic and never overwrites a salt another process just created
    except FileExistsError:
        os.unlink(tmp)
        with open(p, "rb") as f:
            return f.read()
    os.unlink(tmp)
    return salt
