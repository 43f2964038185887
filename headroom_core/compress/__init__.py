"""Tool-output compression: decide what the new text of a large tool result is.

`compress(text, policy=..., retrieval_ref=...)` detects the kind of output (JSON collection of
objects, build/test log, search results, unified diff, directory listing; anything else is left
alone), rewrites it keeping every fact an agent needs, ends it with a marker saying what was omitted
and the command that fetches the original, and keeps the rewrite only if the faithfulness gate finds
every fact in it and it saves enough tokens. Deterministic, idempotent, never raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

from . import detect as detection
from . import marker
from .detect import Detection, unwrap
from .diff import compress_diff
from .faithful import missing
from .json_arrays import compress_json
from .listing import compress_listing
from .logs import compress_log
from .search import compress_search
from .tokens import count_tokens, saves_enough, tokenizer_name

__all__ = [
    "CompressPolicy", "Outcome", "compress", "count_tokens", "tokenizer_name", "DEFAULT_MIN_BYTES",
]

log = logging.getLogger("headroom.compress")

DEFAULT_MIN_BYTES = {"json": 1024, "log": 512, "search": 1024, "diff": 1024, "listing": 1024}


def _default_min_bytes() -> dict[str, int]:
    return dict(DEFAULT_MIN_BYTES)


@dataclass(frozen=True)
class CompressPolicy:
    # Below this many UTF-8 bytes (per content type) a text is left alone.
    min_bytes: dict[str, int] = field(default_factory=_default_min_bytes)
    # Apply only if tokens_after <= tokens_before * (1 - ratio) ...
    min_saving_ratio: float = 0.10
    # ... and tokens_before - tokens_after >= this.
    min_saving_tokens: int = 200

    # Logs
    log_head_lines: int = 15
    log_tail_lines: int = 20
    log_context_lines: int = 2  # around each error/warning (after its block)
    log_max_block_lines: int = 40  # a traceback/diagnostic block longer than this keeps its ends
    log_max_flagged_lines: int = 400  # warnings kept with context, after the errors (never capped)
    log_min_repeat: int = 3  # identical lines in a row collapse from this count
    log_show_repeat_min: int = 10  # a run this long is shown collapsed even amid elided lines

    # Search results
    search_max_per_file: int = 5
    search_max_total: int = 150  # matches shown overall; every file is still named

    # Unified diffs
    diff_context_lines: int = 1  # context lines kept around each change (hunks are re-headed)

    # JSON arrays of objects
    json_min_items: int = 3
    json_verbatim_anomaly_chars: int = 6000  # anomalies verbatim up to this size, else as a table
    json_lossless_max_tokens: int = 6000  # a lossless table above this is not "saving enough"
    json_max_schema_keys: int = 250  # keys described with figures; any further keys are named only

    # Directory listings
    listing_max_names: int = 12  # a directory with more files has them counted by extension

    def min_bytes_for(self, kind: str) -> int:
        value = self.min_bytes.get(kind)
        return DEFAULT_MIN_BYTES.get(kind, 1024) if value is None else value

    def __hash__(self) -> int:  # the dict field would make the generated hash raise
        return hash(tuple(
            tuple(sorted(v.items())) if isinstance(v, dict) else v
            for v in (getattr(self, f.name) for f in fields(self))
        ))


@dataclass(frozen=True)
class Outcome:
    # "compressed" | "below-threshold" | "rejected-not-smaller" | "unfaithful" | "unchanged-type"
    # | "already-compressed". "unfaithful": the rewrite lacked a fact, so the original goes upstream.
    action: str
    kind: str  # "json" | "log" | "search" | "diff" | "listing" | "text"
    text: str | None  # the new text when action == "compressed", else None
    tokens_before: int | None
    tokens_after: int | None
    omitted: str  # short human description of what was dropped ("" if nothing)


def compress(text: str, *, policy: CompressPolicy | None = None, retrieval_ref: str) -> Outcome:
    """Rewrite a tool output if that saves enough tokens (`policy` None: the defaults).
    Never raises."""
    try:
        outcome = _compress(text, policy or CompressPolicy(), retrieval_ref)
    except Exception as e:  # a bug here must never break a request: leave the text alone
        log.warning("compress failed (%s); text left unchanged", type(e).__name__)
        return Outcome("unchanged-type", "text", None, None, None, "")
    log.debug(
        "compress kind=%s action=%s tokens_before=%s tokens_after=%s",
        outcome.kind, outcome.action, outcome.tokens_before, outcome.tokens_after,
    )
    return outcome


def _compress(text: str, policy: CompressPolicy, retrieval_ref: str) -> Outcome:
    if not isinstance(text, str) or not text.strip():
        return Outcome("unchanged-type", "text", None, None, None, "")
    env = unwrap(text)
    inner = env.inner
    if marker.is_marked(inner):
        return Outcome("already-compressed", marker.kind_of(inner), None, None, None, "")
    det = detection.detect(inner, min_items=max(1, policy.json_min_items))
    if det.kind == "text":
        return Outcome("unchanged-type", "text", None, None, None, "")
    if len(inner.encode("utf-8", "surrogatepass")) < policy.min_bytes_for(det.kind):
        return Outcome("below-threshold", det.kind, None, None, None, "")

    tokens_before = count_tokens(text)
    wrapped = env.wrapper != "none"
    inner_tokens = count_tokens(inner) if wrapped and det.kind == "json" else tokens_before
    rewrite = _rewrite(inner, det, policy, retrieval_ref, inner_tokens)
    if rewrite is None:
        return Outcome("rejected-not-smaller", det.kind, None, tokens_before, tokens_before, "")
    lost = missing(rewrite, det.kind)
    if lost:
        log.info("compress kind=%s unfaithful: %d facts missing; original kept", det.kind, lost)
        return Outcome("unfaithful", det.kind, None, tokens_before, tokens_before, "")
    new_text = env.rewrap(rewrite.text)
    tokens_after = rewrite.tokens if rewrite.tokens is not None and not wrapped else count_tokens(new_text)
    if not saves_enough(tokens_before, tokens_after, policy.min_saving_ratio, policy.min_saving_tokens):
        return Outcome("rejected-not-smaller", det.kind, None, tokens_before, tokens_after, "")
    return Outcome("compressed", det.kind, new_text, tokens_before, tokens_after, rewrite.omitted)


def _rewrite(
    inner: str, det: Detection, policy: CompressPolicy, ref: str, inner_tokens: int
) -> marker.Compressed | None:
    if det.kind == "log":
        return compress_log(inner, policy, ref)
    if det.kind == "search":
        return compress_search(inner, policy, ref)
    if det.kind == "diff":
        return compress_diff(inner, policy, ref)
    if det.kind == "listing":
        return compress_listing(inner, policy, ref)
    if det.kind == "json":
        return compress_json(det.json_value, det.json_path, policy, ref, inner_tokens)
    return None
