"""Kept originals: the full text of each tool output Headroom compressed, by unguessable handle.

The compressed text points at `retrieval_base + handle`; the handle is a keyed hash (secret salt and
tenant) of the original, so it can be neither guessed nor derived by another tenant.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

DEFAULT_RETRIEVAL_BASE = "http://127.0.0.1:8080/ccr/"

_HANDLE = re.compile(r"[0-9a-f]{32}")


def handle_for(salt: bytes, tenant: str, text: str) -> str:
    """The handle of `text` for `tenant`: 32 hex digits, stable for one salt.

    Raises UnicodeEncodeError for text with lone surrogates (such text is never compressed).
    """
    tenant_key = hashlib.blake2b(
        tenant.encode("utf-8", "surrogatepass"), key=salt[:64], digest_size=32,
        person=b"hr-originals",
    ).digest()
    return hashlib.blake2b(text.encode("utf-8"), key=tenant_key, digest_size=16).hexdigest()


def is_handle(value: str) -> bool:
    return _HANDLE.fullmatch(value) is not None


def pack(tenant: str, text: str) -> bytes:
    """What a backend stores for an original: the owner, a NUL, the UTF-8 text."""
    return tenant.encode("utf-8", "surrogatepass") + b"\x00" + text.encode("utf-8")


def unpack(value: object, tenant: str | None = None) -> str | None:
    """The text of a stored value, or None (malformed, or not `tenant`'s when given)."""
    if not isinstance(value, bytes):
        return None
    owner, sep, text = value.partition(b"\x00")
    if not sep or (tenant is not None and owner != tenant.encode("utf-8", "surrogatepass")):
        return None
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Originals(Protocol):
    """What the rewriter and `/ccr/` need of a kept-originals backend
    (`headroom_runtime.diskoriginals.Originals`, ...)."""

    def put(self, tenant: str, text: str, *, salt: bytes) -> str:
        """Keep `text` for `tenant`; return its handle (idempotent)."""

    def get(self, handle: str, *, tenant: str | None = None) -> str | None:
        """The original under `handle` (only `tenant`'s when given), or None."""

    def close(self) -> None: ...
