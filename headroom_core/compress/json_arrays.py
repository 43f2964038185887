"""JSON arrays of objects (API responses): a lossless table when that is enough, else a digest.

The table names the columns once and gives one JSON array per object, so nothing is lost. When it
is still too large, the digest keeps every key (type, values or range, example), the first and last
objects and the anomalous ones (error/status fields with non-ok values, numeric outliers) verbatim.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import marker
from .detect import dumps, get_path
from .marker import Rewrite
from .tokens import count_tokens, saves_enough

if TYPE_CHECKING:
    from . import CompressPolicy

_MAX_FLATTEN_DEPTH = 3
_MAX_SCHEMA_DEPTH = 4
_EXAMPLE_CHARS = 60

_ERROR_KEYS = frozenset({
    "error", "errors", "err", "exception", "exceptions", "failure", "failures", "fault", "faults",
    "error_message", "errormessage", "error_code", "errorcode", "error_details", "stderr",
})
_TRUE_IS_BAD = frozenset({
    "failed", "fail", "is_error", "iserror", "has_error", "haserror", "has_errors", "timed_out",
    "timedout", "crashed", "aborted", "is_failure", "flaky",
})
_FALSE_IS_BAD = frozenset({"success", "ok", "passed", "succeeded", "healthy", "valid", "is_success"})
_STATUS_KEYS = frozenset({
    "status", "state", "level", "severity", "conclusion", "result", "outcome", "health",
    "status_code", "statuscode", "http_status", "httpstatus", "loglevel", "log_level",
})
_BAD_VALUES = frozenset({
    "error", "errored", "errors", "err", "failed", "failure", "fail", "failing", "fatal", "critical",
    "crit", "crashed", "crash", "timeout", "timed_out", "timedout", "cancelled", "canceled",
    "aborted", "rejected", "invalid", "unhealthy", "down", "degraded", "warning", "warn",
    "action_required", "startup_failure", "exception", "panic", "broken", "denied",
    "unauthorized", "forbidden", "emergency", "alert", "dead", "killed", "oomkilled",
})


def path_label(path: tuple[str, ...]) -> str:
    """("data", "items") -> "$.data.items"; odd keys are quoted."""
    out = "$"
    for key in path:
        out += f".{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"[{dumps(key)}]"
    return out


def _replace_at(obj: Any, path: tuple[str, ...], placeholder: str) -> Any:
    if not path:
        return placeholder
    new = dict(obj)
    new[path[0]] = _replace_at(obj[path[0]], path[1:], placeholder)
    return new


# ---------------------------------------------------------------------------------------------
# Lossless table


def table_columns(items: list[dict]) -> list[tuple[str, ...]] | None:
    """Column paths if every object has the same keys (nested objects of one shape flatten)."""
    first = items[0]
    keys = first.keys()
    if any(it.keys() != keys for it in items):
        return None
    flatten = not any("." in k for k in keys)
    cols: list[tuple[str, ...]] = []
    for key in first:
        cols.extend(_expand(items, (key,), flatten))
    return cols


def _expand(items: list[dict], path: tuple[str, ...], flatten: bool) -> list[tuple[str, ...]]:
    if not flatten or len(path) >= _MAX_FLATTEN_DEPTH:
        return [path]
    values = [get_path(it, path) for it in items]
    v0 = values[0]
    if type(v0) is not dict or not v0 or any("." in k for k in v0):
        return [path]
    keys = v0.keys()
    if any(type(v) is not dict or v.keys() != keys for v in values):
        return [path]
    out: list[tuple[str, ...]] = []
    for key in v0:
        out.extend(_expand(items, path + (key,), flatten))
    return out


def render_table(
    items: list[dict], cols: list[tuple[str, ...]], max_chars: int | None = None
) -> list[str] | None:
    """Header row and one row per object; None as soon as the rows pass `max_chars`."""
    rows = [dumps([".".join(c) for c in cols])]
    size = len(rows[0])
    flat = all(len(c) == 1 for c in cols)
    names = [c[0] for c in cols]
    n = len(items)
    for i, it in enumerate(items, 1):
        row = dumps([it[k] for k in names] if flat else [get_path(it, c) for c in cols])
        size += len(row) + 1
        if max_chars is not None and (size > max_chars or (i == 16 and size * n / i > 1.2 * max_chars)):
            return None  # over budget, or clearly heading there (rows of one array are alike)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Digest: schema, anomalies, kept items


class _Stat:
    __slots__ = ("count", "types", "example", "lo", "hi", "values", "overflow")

    def __init__(self) -> None:
        self.count = 0
        self.types: dict[str, int] = {}
        self.example: Any = None
        self.lo: Any = None
        self.hi: Any = None
        self.values: dict[str, int] = {}
        self.overflow = False


_TYPE_NAMES = {str: "str", bool: "bool", int: "int", float: "float", type(None): "null",
               dict: "object", list: "array"}


def _walk(obj: dict, prefix: str, stats: dict[str, _Stat], depth: int) -> None:
    # Hot loop (every key of every object): no helper calls for the common scalar cases.
    deeper = depth < _MAX_SCHEMA_DEPTH
    for key, v in obj.items():
        name = f"{prefix}.{key}" if prefix else key
        st = stats.get(name)
        if st is None:
            st = stats[name] = _Stat()
        st.count += 1
        t = type(v)
        tn = _TYPE_NAMES.get(t) or t.__name__
        types = st.types
        types[tn] = types.get(tn, 0) + 1
        if t is int or t is float:
            if st.lo is None or v < st.lo:
                st.lo = v
            if st.hi is None or v > st.hi:
                st.hi = v
        elif t is str:
            if not st.overflow:
                values = st.values
                values[v] = values.get(v, 0) + 1
                if len(values) > 6:
                    st.overflow = True
                    st.values = {}
            if st.example is None and v:
                st.example = v
        elif t is bool:
            word = "true" if v else "false"
            st.values[word] = st.values.get(word, 0) + 1
        elif t is dict:
            if deeper:
                _walk(v, name, stats, depth + 1)
        elif t is list:
            if st.example is None and v:
                st.example = v
            if deeper:
                for el in v:
                    if type(el) is dict:
                        _walk(el, name + "[]", stats, depth + 1)


def _short(v: Any) -> str:
    s = dumps(v)
    return s if len(s) <= _EXAMPLE_CHARS else s[: _EXAMPLE_CHARS - 1] + "…"


def schema_lines(items: list[dict], max_keys: int) -> tuple[list[str], int]:
    """Lines describing every key path, and how many key paths there are."""
    stats: dict[str, _Stat] = {}
    for it in items:
        _walk(it, "", stats, 1)
    n = len(items)
    lines = []
    for i, (name, st) in enumerate(stats.items()):
        if i >= max_keys:
            lines.append(f"  … {marker.plural(len(stats) - max_keys, 'more key')} (see full output)")
            break
        types = " | ".join(
            (f"{t} ×{c}" if len(st.types) > 1 else t) for t, c in st.types.items()
        )
        parts = [f"  {name}: {types}"]
        if "." not in name and "[]" not in name and st.count < n:
            parts.append(f"in {marker.n(st.count)} of {marker.n(n)}")
        if st.lo is not None:
            parts.append(f"{dumps(st.lo)}..{dumps(st.hi)}" if st.lo != st.hi else f"always {dumps(st.lo)}")
        if st.values and not st.overflow and (st.count >= 8 or "bool" in st.types):
            shown = sorted(st.values.items(), key=lambda kv: -kv[1])
            vals = ", ".join(
                (k if "bool" in st.types and k in ("true", "false") else _short(k)) + f" ×{c}"
                for k, c in shown
            )
            parts.append(vals)
        elif st.example is not None:
            parts.append(f"e.g. {_short(st.example)}")
        lines.append(", ".join(parts[:1]) + ("; " + ", ".join(parts[1:]) if parts[1:] else ""))
    return lines, len(stats)


@lru_cache(maxsize=4096)
def _key_kind(key: str) -> str | None:
    """Which rule makes a key's value anomalous: "error", "true", "false", "status", "http" or None."""
    k = key.lower().replace("-", "_")
    if k in _ERROR_KEYS:
        return "error"
    if k in _TRUE_IS_BAD:
        return "true"
    if k in _FALSE_IS_BAD:
        return "false"
    if k in ("status", "status_code", "statuscode", "http_status", "httpstatus"):
        return "http"
    if k in _STATUS_KEYS:
        return "status"
    return None


def _bad_value(key: str, v: Any) -> bool:
    kind = _key_kind(key)
    if kind is None:
        return False
    if kind == "error":
        return v not in (None, False, "", 0) and v != [] and v != {}
    if kind == "true":
        return v is True or (type(v) is str and v.lower() == "true")
    if kind == "false":
        return v is False or (type(v) is str and v.lower() == "false")
    if type(v) is str:
        return v.strip().lower() in _BAD_VALUES
    return kind == "http" and type(v) is int and 400 <= v <= 599


def _error_reason(item: dict, paths: list[tuple[str, ...]]) -> str | None:
    """The first anomalous value among `paths` (keys with an anomaly rule, 1-2 levels deep)."""
    for path in paths:
        v: Any = item
        for key in path:
            if type(v) is not dict or key not in v:
                break
            v = v[key]
        else:
            if _bad_value(path[-1], v):
                return f"{'.'.join(path)}: {_short(v)}"
    return None


def _rule_paths(items: list[dict]) -> list[tuple[str, ...]]:
    """Key paths (top level and one object down) whose last key has an anomaly rule."""
    top: dict[str, None] = {}
    nested: dict[tuple[str, str], None] = {}
    for it in items:
        for key, v in it.items():
            if key not in top:
                top[key] = None
            if type(v) is dict:
                for k2 in v:
                    if (key, k2) not in nested:
                        nested[(key, k2)] = None
    paths: list[tuple[str, ...]] = [(k,) for k in top if _key_kind(k)]
    paths += [p for p in nested if _key_kind(p[1])]
    return paths


def _outliers(items: list[dict]) -> dict[int, str]:
    """Index -> reason for values far outside their column (robust z-score over median/MAD)."""
    out: dict[int, str] = {}
    first = items[0]
    keys = [k for k, v in first.items() if type(v) in (int, float)]
    n = len(items)
    for key in keys:
        col = [(i, it.get(key)) for i, it in enumerate(items)]
        nums = [(i, v) for i, v in col if type(v) in (int, float)]
        if len(nums) < 8:
            continue
        vals = sorted(v for _, v in nums)
        med = vals[len(vals) // 2]
        devs = sorted(abs(v - med) for v in vals)
        mad = devs[len(devs) // 2]
        if mad > 0:
            limit = 6 * 1.4826 * mad
            hits = [(i, v) for i, v in nums if abs(v - med) > limit]
        else:
            hits = [(i, v) for i, v in nums if v != med]
            if len(hits) > max(1, n // 100):
                continue
        if len(hits) > max(2, n // 20):
            continue  # not outliers: a second population
        for i, v in hits:
            out.setdefault(i, f"{key}: {dumps(v)}, median {dumps(med)}")
    return out


def _ranges(indices: list[int]) -> str:
    parts = []
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"#{start}" if start == prev else f"#{start}-{prev}")
            start = prev = i
    if start is not None:
        parts.append(f"#{start}" if start == prev else f"#{start}-{prev}")
    return ", ".join(parts)


def digest(
    items: list[dict], label: str, container: str | None, policy: CompressPolicy, ref: str
) -> Rewrite:
    n = len(items)
    errors = []
    paths = _rule_paths(items)
    if paths:
        for i, it in enumerate(items):
            reason = _error_reason(it, paths)
            if reason:
                errors.append((i, reason))
    outliers = _outliers(items)
    budget = max(0, policy.json_max_anomalies)
    anomalies: dict[int, str] = {}
    for i, reason in errors[:budget]:
        anomalies[i] = reason
    for i, reason in outliers.items():
        if len(anomalies) >= budget:
            break
        anomalies.setdefault(i, reason + " (outlier)")
    kept = sorted({0, n - 1, *anomalies})
    omitted_idx = [i for i in range(n) if i not in anomalies and i != 0 and i != n - 1]
    n_anom = sum(1 for i in kept if i in anomalies)
    n_anom_all = len({i for i, _ in errors} | set(outliers))

    why = ["first", "last"] if n > 1 else ["first"]
    if n_anom:
        why.append(f"{n_anom} anomalous")
    if n_anom_all > n_anom:
        why.append(f"{n_anom_all - n_anom} more anomalous not shown")
    max_keys = max(1, policy.json_max_schema_keys)
    schema, n_keys = schema_lines(items, max_keys)
    keys = f"all {marker.plural(n_keys, 'key')}" if n_keys <= max_keys else f"{max_keys} of {n_keys} keys"

    out = [
        f"{label}: JSON array of {marker.n(n)} objects, digested. Kept {len(kept)} verbatim "
        f"({', '.join(why)}); {marker.n(len(omitted_idx))} omitted.",
    ]
    if container is not None:
        out.append(f"Enclosing object: {container}")
    out.append(f"Keys ({keys}; type; values ×count, range or example, over all {marker.n(n)} objects):")
    out.extend(schema)
    out.append("Kept objects, verbatim (#index):")
    for i in kept:
        note = f" ({anomalies[i]})" if i in anomalies else ""
        out.append(f"#{i}{note} {dumps(items[i])}")
    if omitted_idx:
        out.append(f"Omitted objects: {_ranges(omitted_idx)}.")
    mark = marker.make(
        f"kept {len(kept)} of {marker.plural(n, 'item')} ({', '.join(why)}) and {keys}",
        f"{marker.plural(len(omitted_idx), 'item')} omitted",
        ref,
    )
    omitted = f"{marker.n(len(omitted_idx))} of {marker.plural(n, 'item')}"
    return Rewrite(marker.append("\n".join(out), mark), omitted)


def lossless(
    items: list[dict], label: str, container: str | None, ref: str, max_chars: int | None = None
) -> Rewrite | None:
    cols = table_columns(items)
    if cols is None:
        return None
    rows = render_table(items, cols, max_chars)
    if rows is None:
        return None
    n = len(items)
    nested = any(len(c) > 1 for c in cols)
    out = [
        f"{label}: JSON array of {marker.n(n)} objects as a lossless table. The first row names the "
        f"columns{' (a.b = key b of object a)' if nested else ''}; each further row is one object's "
        f"values in that order, as a JSON array."
    ]
    if container is not None:
        out.append(f"Enclosing object: {container}")
    out.extend(rows)
    mark = marker.make(
        f"{marker.plural(n, 'item')} as a lossless table (keys listed once)", "nothing omitted", ref
    )
    return Rewrite(marker.append("\n".join(out), mark), "")


def compress_json(
    value: Any, path: tuple[str, ...], policy: CompressPolicy, ref: str, tokens_before: int
) -> Rewrite | None:
    items = get_path(value, path)
    n = len(items)
    label = path_label(path)
    container = dumps(_replace_at(value, path, f"<{n} objects, below>")) if path else None

    # Tokenizing is the expensive part: a table too long even at 5 characters per token (JSON
    # tables average under 3) cannot be under the lossless budget, so it is not even finished.
    table = lossless(items, label, container, ref, max_chars=5 * policy.json_lossless_max_tokens)
    table_tokens = None
    if table is not None:
        table_tokens = count_tokens(table.text)
        if table_tokens <= policy.json_lossless_max_tokens and saves_enough(
            tokens_before, table_tokens, policy.min_saving_ratio, policy.min_saving_tokens
        ):
            return table._replace(tokens=table_tokens)
    lossy = digest(items, label, container, policy, ref)
    lossy_tokens = count_tokens(lossy.text)
    if table_tokens is not None and table_tokens <= lossy_tokens:
        return table._replace(tokens=table_tokens)  # type: ignore[union-attr]
    return lossy._replace(tokens=lossy_tokens)
