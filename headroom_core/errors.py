"""Error responses Headroom sends itself, in the provider's own JSON shape.

SDKs and CLIs parse these exactly like errors from the real API, so a replay miss or a refused
request reads as a normal API error with a clear message. Never raises.
"""

from __future__ import annotations

import orjson

Fields = list[tuple[bytes, bytes]]

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
    provider: str, status: int, message: str, code: str | None = None
) -> tuple[int, Fields, bytes]:
    """(status, header fields, body) of an error response shaped like `provider`'s API.

    Anthropic: `{"type":"error","error":{"type":…,"message":…}}` (the shape has no code field,
    so `code` is dropped); anything else gets the OpenAI shape
    `{"error":{"message":…,"type":…,"param":null,"code":…}}` (Codex's backend included).
    `x-should-retry: false` stops the SDKs' automatic retries; `x-headroom-error: 1` marks it ours.
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
        (b"x-should-retry", b"false"),
        (b"x-headroom-error", b"1"),
    ]
    return status, fields, body
