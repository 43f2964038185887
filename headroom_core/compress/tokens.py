"""Offline token counting for compression decisions.

There is no public Claude tokenizer, so OpenAI's o200k_base encoding stands in for it, through the
`rs_bpe` wheel, which embeds the vocabulary (no download at run time; counts verified equal to
tiktoken's o200k_base). If it cannot load, counts fall back to a deterministic estimate,
ceil(UTF-8 bytes / 4); `tokenizer_name()` says which one is in use.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("headroom.compress.tokens")

O200K = "o200k_base"
ESTIMATE = "estimate:utf8-bytes/4"

_lock = threading.Lock()
_encoder: Any = None
_name: str | None = None


def _load() -> None:
    global _encoder, _name
    with _lock:
        if _name is not None:
            return
        try:
            from rs_bpe.bpe import openai  # the vocabulary ships inside the extension module

            encoder = openai.o200k_base()
            if encoder.count("hello world") != 2:  # a broken build must not skew every decision
                raise RuntimeError("o200k_base self-check failed")
        except Exception as e:  # ImportError, a missing wheel for this platform, ...
            log.warning("o200k tokenizer unavailable (%s); using %s", type(e).__name__, ESTIMATE)
            _name = ESTIMATE
            return
        _encoder = encoder
        _name = O200K


def tokenizer_name() -> str:
    """"o200k_base" when the real tokenizer is loaded, else "estimate:utf8-bytes/4"."""
    if _name is None:
        _load()
    return _name  # type: ignore[return-value]


def estimate_tokens(text: str) -> int:
    """The documented fallback: ceil(UTF-8 length / 4)."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def count_tokens(text: str) -> int:
    """Tokens of `text` under o200k_base (or the estimate, see `tokenizer_name`). Never raises."""
    if _name is None:
        _load()
    if _encoder is None:
        return estimate_tokens(text)
    try:
        return _encoder.count(text)
    except UnicodeEncodeError:
        # Lone surrogates (from JSON "\ud800" escapes) cannot be UTF-8: count them as U+FFFD.
        return _encoder.count(text.encode("utf-8", "replace").decode("utf-8"))
    except Exception:
        return estimate_tokens(text)


def saves_enough(before: int, after: int, min_ratio: float, min_tokens: int) -> bool:
    """The policy test: at least `min_ratio` of the tokens and at least `min_tokens` tokens saved."""
    return after <= before * (1 - min_ratio) and before - after >= min_tokens
