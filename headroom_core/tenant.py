"""Tenant scope: who a request belongs to, without ever keeping a credential.

A tenant is a salted hash over every credential and account header the request carries, or an
explicit namespace (for rotating OAuth tokens and for CI). Session state, beta stickiness, the
response store, the ledger and kept originals are all keyed under it, so no two different
credentials ever share state: a gateway's placeholder `x-api-key` next to each user's own
`Authorization` still makes one tenant per user.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping

# x-api-key (Anthropic), Authorization (OpenAI, OAuth), api-key (Azure OpenAI gateways)
CREDENTIAL_HEADERS = (b"x-api-key", b"authorization", b"api-key")
# Headers that pick the account or project a credential acts for.
ACCOUNT_HEADERS = (b"chatgpt-account-id", b"openai-organization", b"openai-project")
_ALL = frozenset(CREDENTIAL_HEADERS + ACCOUNT_HEADERS)
# Anything else that authenticates a client to a gateway in front of the provider (a cookie,
# `cf-aig-authorization`, `x-portkey-api-key`, `x-amz-security-token`, ...): a credential too.
_OTHER = re.compile(rb"(?:^|-)(?:authorization|api-?key|apikey|token|secret|cookie|"
                    rb"account-id|session-token)$")


@functools.lru_cache(maxsize=1024)  # asked for every header of every request
def is_credential(name: bytes) -> bool:
    """Whether a (lower-case) header name carries a credential or picks an account."""
    return name in _ALL or _OTHER.search(name) is not None
ANONYMOUS = "anon"


def _bearer(value: bytes) -> bytes:
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else value


def credentials(fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Every non-empty credential or account header as (lower-case name, value), bearer tokens
    unwrapped, sorted: the same set in any order or case gives the same list."""
    found = []
    for name, value in fields:
        n = name.lower()
        if is_credential(n):
            v = value.strip()
            if v:
                found.append((n, _bearer(v) if n == b"authorization" else v))
    return sorted(set(found))


def credentials_of(index: Mapping[bytes, list[bytes]]) -> list[tuple[bytes, bytes]]:
    """`credentials` from a header index (`headers.Index`)."""
    return credentials((n, v) for n, values in index.items() if is_credential(n)
                       for v in values)


def credential_kind(fields: Iterable[tuple[bytes, bytes]]) -> str:
    """"oauth", "api_key" or "none": see `kind_of_all`."""
    return kind_of_all(credentials(fields))


def kind_of_all(creds: list[tuple[bytes, bytes]]) -> str:
    """"oauth" (subscription traffic) when any credential header holds a Claude `sk-ant-oat…`
    token or a ChatGPT-login JWT, or the request names a ChatGPT account: such traffic stays as
    the client sent it even beside a gateway's placeholder API key. Otherwise "api_key" when a
    credential header holds anything, else "none"."""
    kind = "none"
    for name, value in creds:
        if name == b"chatgpt-account-id":
            return "oauth"
        if name in CREDENTIAL_HEADERS:
            if kind_of(value) == "oauth":
                return "oauth"
            kind = "api_key"
    return kind


def kind_of(cred: bytes | None) -> str:
    if not cred:
        return "none"
    if cred.startswith(b"sk-ant-oat"):
        return "oauth"
    if cred.startswith(b"eyJ") and cred.count(b".") == 2:  # a JWT: ChatGPT login (Codex)
        return "oauth"
    return "api_key"


def secret_of(creds: list[tuple[bytes, bytes]]) -> bytes | None:
    """What the tenant hash covers. One credential alone hashes as itself (so tenant ids stay
    those of earlier versions); several are joined with their names. Header values never hold
    NUL, so the two forms can never collide."""
    if not creds:
        return None
    if len(creds) == 1 and creds[0][0] in CREDENTIAL_HEADERS:
        return creds[0][1]
    return b"\x00".join(n + b"\x00" + v for n, v in creds)


def tenant_id(
    fields: Iterable[tuple[bytes, bytes]], salt: bytes, namespace: str | None = None
) -> str:
    """A short, stable, non-reversible tenant id. An explicit namespace wins over credentials."""
    return tenant_of(secret_of(credentials(fields)), salt, namespace)


def tenant_of(secret: bytes | None, salt: bytes, namespace: str | None = None) -> str:
    if namespace:
        return "ns:" + namespace
    if not secret:
        return ANONYMOUS
    return "t:" + hashlib.blake2b(secret, key=salt[:64], digest_size=12).hexdigest()


def identify(fields: Iterable[tuple[bytes, bytes]], salt: bytes,
             namespace: str | None = None) -> tuple[str, str]:
    """(tenant id, credential kind) of a request's header fields."""
    return _identify(credentials(fields), salt, namespace)


def _identify(creds: list[tuple[bytes, bytes]], salt: bytes,
              namespace: str | None) -> tuple[str, str]:
    return tenant_of(secret_of(creds), salt, namespace), kind_of_all(creds)


class Tenants:
    """`identify` for a header index, remembering the last few thousand answers: every request
    of a session carries the same credentials, and the salted hash need not be taken again."""

    def __init__(self, salt: bytes, namespace: str | None, size: int = 4096) -> None:
        self.salt, self.namespace, self.size = salt, namespace, size
        self._known: OrderedDict[tuple, tuple[str, str]] = OrderedDict()

    def identify(self, index: Mapping[bytes, list[bytes]]) -> tuple[str, str]:
        key = tuple((n, tuple(v)) for n, v in index.items() if is_credential(n))
        known = self._known.get(key)
        if known is None:
            known = _identify(credentials_of(index), self.salt, self.namespace)
            self._known[key] = known
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        return known

