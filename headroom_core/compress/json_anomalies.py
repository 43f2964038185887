"""Which objects of a JSON collection are anomalous, and why: the facts a digest must keep.

Bad or minority status values, error fields, key sets that differ from the rest, rare rule codes and
numeric outliers. Every anomaly is reported (index -> reason); nothing here is capped.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

from .detect import dumps

_EXAMPLE_CHARS = 60

_ERROR_KEYS = frozenset({
    "error", "errors", "err", "exception", "exceptions", "failure", "failures", "fault", "faults",
    "error_message", "errormessage", "error_code", "errorcode", "error_details", "stderr", "invalid",
    "problems",
})
_TRUE_IS_BAD = frozenset({
    "failed", "fail", "is_error", "iserror", "has_error", "haserror", "has_errors", "timed_out",
    "timedout", "crashed", "aborted", "is_failure", "flaky", "extraneous", "missing", "peermissing",
    "deprecated", "vulnerable",
})
_FALSE_IS_BAD = frozenset({"success", "ok", "passed", "succeeded", "healthy", "valid", "is_success"})
# The last word of a key (issue_severity -> severity) that makes it a status.
_STATUS_WORDS = frozenset({
    "status", "state", "level", "severity", "conclusion", "result", "outcome", "health", "loglevel",
})
_HTTP_KEYS = frozenset({"status", "status_code", "statuscode", "http_status", "httpstatus"})
_BAD_VALUES = frozenset({
    "error", "errored", "errors", "err", "failed", "failure", "fail", "failing", "fatal", "critical",
    "crit", "crashed", "crash", "timeout", "timed_out", "timedout", "cancelled", "canceled",
    "aborted", "rejected", "invalid", "unhealthy", "down", "degraded", "warning", "warn",
    "action_required", "startup_failure", "exception", "panic", "broken", "denied",
    "unauthorized", "forbidden", "emergency", "alert", "dead", "killed", "oomkilled", "high",
})
# Keys naming a rule, code or category: a value seen only a few times is worth its own row.
_RARE_KEYS = frozenset({
    "rule", "rule_id", "ruleid", "code", "category", "check", "check_id", "test_id", "error_code",
    "errno", "symbol", "message_id", "msg_id", "checkid",
})
_RARE_MAX = 2


def short(v: Any, limit: int = _EXAMPLE_CHARS) -> str:
    s = dumps(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


@lru_cache(maxsize=4096)
def key_kind(key: str) -> str | None:
    """The rule a key's values follow: "error", "true", "false", "status", "rare" or None."""
    k = key.lower().replace("-", "_")
    if k in _ERROR_KEYS:
        return "error"
    if k in _TRUE_IS_BAD:
        return "true"
    if k in _FALSE_IS_BAD:
        return "false"
    last = re.split(r"_|(?<=[a-z])(?=[A-Z])", key)[-1].lower()
    if k in _HTTP_KEYS or last in _STATUS_WORDS:
        return "status"
    if k in _RARE_KEYS:
        return "rare"
    return None


def _bad_value(kind: str, key: str, v: Any) -> bool:
    if kind == "error":
        return v not in (None, False, "", 0) and v != [] and v != {}
    if kind == "true":
        return v is True or (type(v) is str and v.lower() == "true")
    if kind == "false":
        return v is False or (type(v) is str and v.lower() == "false")
    if type(v) is str:
        return v.strip().lower() in _BAD_VALUES
    return key.lower() in _HTTP_KEYS and type(v) is int and 400 <= v <= 599


def _paths(items: list[dict]) -> list[tuple[str, ...]]:
    """Key paths (top level and one object down) that follow a rule."""
    seen: dict[tuple[str, ...], None] = {}
    for it in items:
        for key, v in it.items():
            seen[(key,)] = None
            if type(v) is dict:
                for k2 in v:
                    seen[(key, k2)] = None
    return [p for p in seen if key_kind(p[-1])]


def _value(item: dict, path: tuple[str, ...]) -> tuple[bool, Any]:
    v: Any = item
    for key in path:
        if type(v) is not dict or key not in v:
            return False, None
        v = v[key]
    return True, v


def _column(items: list[dict], path: tuple[str, ...]) -> list[tuple[int, Any]]:
    out = []
    for i, it in enumerate(items):
        ok, v = _value(it, path)
        if ok:
            out.append((i, v))
    return out


def _hashable(v: Any) -> Any:
    return v if type(v) in (str, int, float, bool) or v is None else dumps(v)


def _rule_hits(items: list[dict], path: tuple[str, ...], out: dict[int, str]) -> None:
    kind = key_kind(path[-1])
    col = _column(items, path)
    name = ".".join(path)
    if kind in ("error", "true", "false", "status") and not _constant(col, len(items)):
        for i, v in col:
            if _bad_value(kind, path[-1], v):
                out.setdefault(i, f"{name}: {short(v)}")
    if kind in ("status", "rare"):
        _minority_hits(col, name, kind, len(items), out)


def _constant(col: list[tuple[int, Any]], n: int) -> bool:
    """Every object has the same value here (all "error"): it distinguishes none of them."""
    if len(col) < n or n < 3:
        return False
    first = _hashable(col[0][1])
    return all(_hashable(v) == first for _, v in col)


def _minority_hits(col: list[tuple[int, Any]], name: str, kind: str, n: int, out: dict[int, str]) -> None:
    """Status values other than the most common one; rule codes seen at most twice."""
    counts = Counter(_hashable(v) for _, v in col if type(v) in (str, int, bool))
    if len(counts) < 2:
        return
    top_value, top = counts.most_common(1)[0]
    if kind == "rare" and (top < 3 or len(counts) > n / 2):
        return  # mostly unique values (an id): nothing is rare
    for i, v in col:
        if type(v) not in (str, int, bool):
            continue
        c = counts[_hashable(v)]
        if (kind == "status" and v != top_value) or (kind == "rare" and c <= _RARE_MAX):
            out.setdefault(i, f"{name}: {short(v)}" + (" (rare)" if kind == "rare" else ""))


def _keyset_hits(items: list[dict], out: dict[int, str]) -> None:
    """Objects whose key set differs from the most common one, when theirs is rare."""
    sets = [frozenset(it) for it in items]
    counts = Counter(sets)
    common, top = counts.most_common(1)[0]
    if top < len(items) / 2:
        return  # no shape is the rule, so none is the exception
    rare = max(2, len(items) // 20)
    for i, ks in enumerate(sets):
        if ks != common and counts[ks] <= rare:
            extra = sorted(ks - common)
            gone = sorted(common - ks)
            what = ", ".join([*(f"+{k}" for k in extra[:4]), *(f"-{k}" for k in gone[:4])])
            out.setdefault(i, f"keys differ: {what}")


def _outlier_hits(items: list[dict], out: dict[int, str]) -> None:
    """Values far outside their column (robust z-score over median/MAD)."""
    n = len(items)
    keys: dict[str, None] = {}
    for it in items:
        for k, v in it.items():
            if type(v) in (int, float):
                keys[k] = None
    for key in keys:
        nums = [(i, it[key]) for i, it in enumerate(items) if type(it.get(key)) in (int, float)]
        if len(nums) < 8:
            continue
        vals = sorted(v for _, v in nums)
        med = vals[len(vals) // 2]
        mad = sorted(abs(v - med) for v in vals)[len(vals) // 2]
        hits = _far(nums, med, mad, 6, n)
        if hits is None and mad > 0:
            hits = _far(nums, med, mad, 20, n)
        for i, v in hits or ():
            out.setdefault(i, f"{key}: {dumps(v)}, median {dumps(med)} (outlier)")


def _far(nums: list[tuple[int, Any]], med: Any, mad: Any, z: float, n: int) -> list | None:
    if mad > 0:
        hits = [(i, v) for i, v in nums if abs(v - med) > z * 1.4826 * mad]
        return hits if len(hits) <= max(2, n // 20) else None  # more is a second population
    hits = [(i, v) for i, v in nums if v != med]
    return hits if len(hits) <= max(1, n // 100) else None


def find(items: list[dict]) -> dict[int, str]:
    """Index -> reason for every anomalous object, in index order."""
    out: dict[int, str] = {}
    for path in _paths(items):
        _rule_hits(items, path, out)
    if len(items) >= 3:
        _keyset_hits(items, out)
    _outlier_hits(items, out)
    return dict(sorted(out.items()))
