"""Error responses Headroom sends itself, in the provider's own JSON shape.

SDKs and CLIs parse these exactly like errors from the real API, so a replay miss or a refused
request reads as a normal API error with a clear message. Never raises.
"""

from __future__ import annotations

import orjson

from .headers import Fields

# Status -> error.type, as the Messages API documents it; other 4xx/5xx fall back like the API.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# OpenAI reports authentication and most client errors as invalid_request_error (with a code).
OPENAI_TYPES = {
    401: "invalid_request_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


def error_type(provider: str, status: int) -> str:
    """The `error.type` the provider's API uses for `status`."""
    if provider == "anthropic":
        return ANTHROPIC_TYPES.get(status) or ("api_error" if status >= 500 else
                                               "invalid_request_error")
    return OPENAI_TYPES.get(status) or ("server_error" if status >= 500 else
                                        "invalid_request_error")


def provider_error(
    provider: str, status: int, message: str, code: str | None = None, *, retry: bool = False
) -> tuple[int, Fields, bytes]:
    """(status, header fields, body) of an error response shaped like `provider`'s API.

    Anthropic: `{"type":"error","error":{"type":…,"message":…}}` (the shape has no code field,
    so `code` is dropped); anything else gets the OpenAI shape
    `{"error":{"message":…,"type":…,"param":null,"code":…}}` (Codex's backend included).
    `x-should-retry` tells the SDKs whether to retry (false for Headroom's own refusals, true for
    an upstream that could not be reached); `x-headroom-error: 1` marks the answer as ours.
    """
    etype = error_type(provider, status)
    message = str(message)
    if provider == "anthropic":
        payload: dict = {"type": "error", "error": {"type": etype, "message": message}}
    else:
        payload = {"error": {"message": message, "type": etype, "param": None,
                             "code": code}}
    # A message may carry a lone surrogate (it can quote a client's text); never fail on it.
    try:
        body = orjson.dumps(payload)
    except TypeError:
        payload_message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        payload["error"]["message"] = payload_message
        body = orjson.dumps(payload)
    fields: Fields = [
        (b"content-type", b"application/json"),
        (b"x-should-retry", b"true" if retry else b"false"),
        (b"x-headroom-error", b"1"),
    ]
    return status, fields, body


_KINDS = {"connect": ("could not be reached", 502), "tls": ("failed the TLS handshake", 502),
          "timeout": ("timed out", 504), "reset": ("closed the connection before answering", 502)}


_SOCKET_ERRORS = ("errno", "connect call failed", "refused", "unreachable", "no route",
                  "name or service", "getaddrinfo", "nodename", "name resolution")


def upstream_failure(message: str, *, connected: bool, tls: bool | None = None) -> str:
    """The kind of an upstream failure before any answer: "timeout" (a connect that timed out),
    "connect" (never connected), "tls" (connected, the TLS handshake failed) or "reset"
    (connected, then no usable answer). `tls` is whether a TLS handshake was needed and never
    completed (None: unknown)."""
    m = (message or "").lower()
    if not connected:
        timed_out = "timed out" in m or "timeout" in m or "errno 110" in m or "etimedout" in m
        if timed_out:
            return "timeout"
        # Not (known to be) connected, yet the failure is no socket error: the TLS handshake of
        # the connection being opened failed ("OpenSSL Error(...)", "connection closed").
        if tls and not any(w in m for w in _SOCKET_ERRORS):
            return "tls"
        return "connect"
    if tls:
        return "tls"
    return "reset"


def upstream_error(provider: str, message: str, kind: str) -> tuple[int, Fields, bytes]:
    """The provider-shaped answer for an upstream that failed before responding: a status the
    SDKs retry (502, 504 for a timeout) with `x-should-retry: true`."""
    what, status = _KINDS[kind]
    text = f"headroom: the upstream {what} ({message[:200]})"
    return provider_error(provider, status, text, code=f"upstream_{kind}", retry=True)
