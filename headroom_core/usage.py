"""Token usage normalised across the three body shapes (Anthropic Messages, Chat, Responses).

Owns the mapping from each provider's usage object to one `Usage` value, for streamed
reconstructions and non-streamed responses alike. Malformed or missing figures count as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)  # not frozen: made for every response, and a frozen __init__ costs 3x
class Usage:
    """Tokens of one model call, split so the four input/output figures never overlap.

    `input_tokens` is *uncached* input. Anthropic reports it that way already; OpenAI's
    `prompt_tokens` / `input_tokens` include the cached part, so for "chat" and "responses"
    `input_tokens = prompt - cached_tokens - cache_write_tokens` (never below 0) and
    `total_input` gives back the provider's prompt figure.
    `reasoning_tokens` is informational: it is already included in `output_tokens`;
    `cache_creation_1h_tokens` is the part of `cache_creation_tokens` written with Anthropic's
    1-hour TTL (priced higher than the default 5 minutes).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_1h_tokens: int = 0

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens

    def to_dict(self) -> dict[str, int]:
        # by hand: dataclasses.asdict deep-copies recursively, on every flow
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens,
                "cache_creation_tokens": self.cache_creation_tokens,
                "reasoning_tokens": self.reasoning_tokens,
                "cache_creation_1h_tokens": self.cache_creation_1h_tokens}


def _n(value: Any) -> int:
    # bool is an int subclass; a `true` token count is garbage, not 1.
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and value.is_integer() and value > 0:
        return int(value)
    return 0


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


_KNOWN = {
    "anthropic": (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ),
    "chat": ("prompt_tokens", "completion_tokens", "prompt_tokens_details"),
    "responses": ("input_tokens", "output_tokens", "input_tokens_details"),
}


def from_usage(shape: str, usage: Any) -> Usage | None:
    """Normalise a provider `usage` object of the given shape; None when it carries no figures."""
    known = _KNOWN.get(shape)
    if known is None or not isinstance(usage, dict):
        return None
    for k in known:
        if usage.get(k) is not None:
            break
    else:  # none of the figures
        return None
    if shape == "anthropic":
        creation = usage.get("cache_creation_input_tokens")
        breakdown = _d(usage.get("cache_creation"))
        if creation is None:
            # Some responses only carry the per-TTL breakdown.
            creation = sum(_n(v) for v in breakdown.values())
        return Usage(
            input_tokens=_n(usage.get("input_tokens")),
            output_tokens=_n(usage.get("output_tokens")),
            cache_read_tokens=_n(usage.get("cache_read_input_tokens")),
            cache_creation_tokens=_n(creation),
            reasoning_tokens=_n(_d(usage.get("output_tokens_details")).get("thinking_tokens")),
            cache_creation_1h_tokens=_n(breakdown.get("ephemeral_1h_input_tokens")),
        )
    if shape == "chat":
        prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
        in_details = _d(usage.get("prompt_tokens_details"))
        out_details = _d(usage.get("completion_tokens_details"))
    else:
        prompt, output = usage.get("input_tokens"), usage.get("output_tokens")
        in_details = _d(usage.get("input_tokens_details"))
        out_details = _d(usage.get("output_tokens_details"))
    cached = _n(in_details.get("cached_tokens"))
    written = _n(in_details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(0, _n(prompt) - cached - written),
        output_tokens=_n(output),
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        reasoning_tokens=_n(out_details.get("reasoning_tokens")),
    )


def from_response(shape: str, obj: Any) -> Usage | None:
    """Usage of a non-streamed JSON response body (already parsed) of the given shape, or None."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if usage is None and shape == "responses" and isinstance(obj.get("response"), dict):
        # A terminal stream event (`response.completed`) wraps the response object.
        usage = obj["response"].get("usage")
    return from_usage(shape, usage)
