"""Which model API a request is for: classify by method, upstream host and path.

In reverse mode the user pointed the client at the listener on purpose, so the path alone decides
(any upstream host, e.g. a local gateway). In regular (system-proxy) mode the host must also be a
known API host or one the user added. Anything unclassified passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOSTS = ("api.anthropic.com", "api.openai.com", "chatgpt.com")

# endpoint -> (provider, body shape)
ENDPOINTS = {
    "messages": ("anthropic", "anthropic"),
    "count_tokens": ("anthropic", "anthropic"),
    "chat_completions": ("openai", "chat"),
    "responses": ("openai", "responses"),
    "codex_responses": ("openai", "responses"),
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


def classify(
    method: str,
    host: str,
    path: str,
    *,
    reverse: bool,
    hosts: frozenset[str] | tuple[str, ...] = DEFAULT_HOSTS,
    websocket_upgrade: bool = False,
) -> Route | None:
    """Return the Route of a model-API request, or None for everything else."""
    if not reverse and host.lower().rstrip(".") not in hosts:
        return None
    p = split_path(path)[0].rstrip("/")
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
    return None
