"""Which model API a request is for: classify by method, upstream host and path.

In reverse mode the user pointed the client at the listener on purpose, so the path alone decides
(any upstream host, e.g. a local gateway). In regular (system-proxy) mode the host must also be a
known API host or one the user added. Paths are classified decoded and normalised (percent
escapes, duplicate slashes, dot segments, case), never forwarded so: `/v1/mess%61ges` is the
Messages API. Anything unclassified passes through untouched (in replay mode, nothing does).
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

DEFAULT_HOSTS = ("api.anthropic.com", "api.openai.com", "chatgpt.com")

# endpoint -> (provider, body shape)
ENDPOINTS = {
    "messages": ("anthropic", "anthropic"),
    "count_tokens": ("anthropic", "anthropic"),
    "chat_completions": ("openai", "chat"),
    "responses": ("openai", "responses"),
    "codex_responses": ("openai", "responses"),
    "other": ("", "other"),  # any other request to an API host (GET /v1/models, ...)
}

# Longest suffix first: "/codex/responses" must win over "/responses".
_SUFFIXES = (
    ("/backend-api/codex/responses", "codex_responses"),
    ("/v1/messages/count_tokens", "count_tokens"),
    ("/v1/messages", "messages"),
    ("/chat/completions", "chat_completions"),
    ("/responses", "responses"),
)


@dataclass(frozen=True, slots=True)
class Route:
    provider: str  # "anthropic" | "openai"
    endpoint: str  # a key of ENDPOINTS
    websocket: bool = False  # a WebSocket upgrade (Codex Responses transport)
    inspect: bool = True  # a POST whose body Headroom reads; other methods on a model path: False

    @property
    def shape(self) -> str:
        """Body shape: "anthropic", "chat" or "responses"."""
        return ENDPOINTS[self.endpoint][1]

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.endpoint}"


def split_path(path: str) -> tuple[str, str]:
    """"/v1/messages?beta=true" -> ("/v1/messages", "beta=true")."""
    p, _, q = path.partition("?")
    return p, q


@functools.lru_cache(maxsize=4096)  # every request of a client asks for the same few paths
def normalize_path(path: str) -> str:
    """The path part of a request target as a server would read it, for classification only:
    percent escapes decoded (twice over, so `%2561` cannot hide an `a`), backslashes, duplicate
    slashes and dot segments folded, lower case, no trailing slash."""
    p = split_path(path)[0]
    for _ in range(2):
        p = unquote(p, errors="replace")
    p = p.replace("\\", "/")
    p = posixpath.normpath("/" + p.lstrip("/")) if p else "/"
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p.lower().rstrip("/") or "/"


def is_api_host(host: str, *, reverse: bool,
                hosts: frozenset[str] | tuple[str, ...] = DEFAULT_HOSTS) -> bool:
    """Whether a request goes to a model API's host at all (in reverse mode: always)."""
    return reverse or host.lower().rstrip(".") in hosts


def guess_provider(host: str, path: str) -> str:
    """The provider whose error shape fits a request that is not a model call."""
    h = host.lower().rstrip(".")
    if h.endswith("anthropic.com") or normalize_path(path).startswith(("/v1/messages",
                                                                          "/v1/complete")):
        return "anthropic"
    return "openai"


@functools.lru_cache(maxsize=4096)
def classify(
    method: str,
    host: str,
    path: str,
    *,
    reverse: bool,
    hosts: frozenset[str] | tuple[str, ...] = DEFAULT_HOSTS,
    websocket_upgrade: bool = False,
) -> Route | None:
    """Return the Route of a request to a model endpoint (any method), or None for everything
    else. Only a POST has `inspect` (its body is a model request); a WebSocket upgrade to the
    Responses API is a `websocket` route."""
    if not is_api_host(host, reverse=reverse, hosts=hosts):
        return None
    p = normalize_path(path)
    for suffix, endpoint in _SUFFIXES:
        if p.endswith(suffix):
            break
    else:
        return None
    provider, shape = ENDPOINTS[endpoint]
    method = method.upper()
    if method == "POST":
        return Route(provider, endpoint)
    if method == "GET" and websocket_upgrade and shape == "responses":
        return Route(provider, endpoint, websocket=True)
    return Route(provider, endpoint, inspect=False)
