"""Tenant scope: who a request belongs to, without ever keeping the credential.

A tenant is a salted hash of the credential (`x-api-key` or the bearer token) or an explicit
namespace (for rotating OAuth tokens and for CI). Session state, beta stickiness, the response store
and the ledger are all keyed under it, so two users never share state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

CREDENTIAL_HEADERS = (b"x-api-key", b"authorization")
ANONYMOUS = "anon"


def credential(fields: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The raw credential of a request (x-api-key first, then the Authorization value)."""
    found: dict[bytes, bytes] = {}
    for name, value in fields:
        n = name.lower()
        if n in CREDENTIAL_HEADERS and n not in found:
            found[n] = value.strip()
    if found.get(b"x-api-key"):
        return found[b"x-api-key"]
    auth = found.get(b"authorization")
    if auth:
        scheme, _, token = auth.partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" and token.strip() else auth
    return None


def credential_kind(fields: Iterable[tuple[bytes, bytes]]) -> str:
    """"api_key", "oauth" (Claude `sk-ant-oat…` or a ChatGPT-login JWT) or "none"."""
    cred = credential(fields)
    if not cred:
        return "none"
    if cred.startswith(b"sk-ant-oat"):
        return "oauth"
    if cred.startswith(b"eyJ") and cred.count(b".") == 2:  # a JWT: ChatGPT login (Codex)
        return "oauth"
    return "api_key"


def new_salt() -> bytes:
    return os.urandom(16)


def tenant_id(
    fields: Iterable[tuple[bytes, bytes]], salt: bytes, namespace: str | None = None
) -> str:
    """A short, stable, non-reversible tenant id. An explicit namespace wins over the credential."""
    if namespace:
        return "ns:" + namespace
    cred = credential(fields)
    if not cred:
        return ANONYMOUS
    return "t:" + hashlib.blake2b(cred, key=salt[:64], digest_size=12).hexdigest()
