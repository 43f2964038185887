"""Tenant scope: who a request belongs to, without ever keeping the credential.

A tenant is a salted hash of the credential (`x-api-key` or the bearer token) or an explicit
namespace (for rotating OAuth tokens and for CI). Session state, beta stickiness, the response store
and the ledger are all keyed under it, so two users never share state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

# x-api-key (Anthropic), Authorization (OpenAI, OAuth), api-key (Azure OpenAI gateways)
CREDENTIAL_HEADERS = (b"x-api-key", b"authorization", b"api-key")
ANONYMOUS = "anon"


def credential(fields: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The raw credential of a request (x-api-key first, then the Authorization value)."""
    found: dict[bytes, bytes] = {}
    for name, value in fields:
        n = name.lower()
        if n in CREDENTIAL_HEADERS and n not in found:
            found[n] = value.strip()
    for name in (b"x-api-key", b"api-key"):
        if found.get(name):
            return found[name]
    auth = found.get(b"authorization")
    if auth:
        scheme, _, token = auth.partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" and token.strip() else auth
    return None


def credential_kind(fields: Iterable[tuple[bytes, bytes]]) -> str:
    """"api_key", "oauth" (Claude `sk-ant-oat…` or a ChatGPT-login JWT) or "none"."""
    return kind_of(credential(fields))


def kind_of(cred: bytes | None) -> str:
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
    return tenant_of(credential(fields), salt, namespace)


def tenant_of(cred: bytes | None, salt: bytes, namespace: str | None = None) -> str:
    if namespace:
        return "ns:" + namespace
    if not cred:
        return ANONYMOUS
    return "t:" + hashlib.blake2b(cred, key=salt[:64], digest_size=12).hexdigest()


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
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
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
