"""JSON collections of objects (API responses, reports): a lossless table when that is enough, else
a digest that names every key (type, values or range, example) and keeps every anomalous object,
verbatim or, when they are many, as a table of their distinguishing fields. Nested ones too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from . import marker
from .detect import dumps, elements, get_path, is_collection
from .json_anomalies import find as anomalies_of
from .json_anomalies import key_kind, short
from .marker import Compressed
from .tokens import count_tokens, saves_enough

if TYPE_CHECKING:
    from . import CompressPolicy

_MAX_FLATTEN_DEPTH = 3
_MAX_SCHEMA_DEPTH = 4
_EXAMPLE_CHARS = 60
_CELL_CHARS = 120  # a compact-table cell longer than this is cut (the full object is retrievable)
_CONTAINER_CHARS = 1500  # an enclosing object larger than this has its own arrays digested
_MAX_VALUES = 12  # distinct string values counted per key before only an example is shown
_MAX_CODES = 150  # the same for rule/code/status keys: which rules fired, and how often, is a fact
_IDENT_KEYS = frozenset({
    "id", "name", "nodeid", "node_id", "title", "key", "path", "filename", "file", "test_id",
    "check_id", "test_name", "code", "rule", "rule_id", "lineno", "line", "line_number", "row",
    "package", "module", "version",
})
_MESSAGE_KEYS = frozenset({
    "message", "msg", "reason", "issue_text", "description", "detail", "summary", "error", "text",
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
    __slots__ = ("count", "types", "example", "lo", "hi", "values", "overflow", "limit")

    def __init__(self) -> None:
        self.count = 0
        self.types: dict[str, int] = {}
        self.example: Any = None
        self.lo: Any = None
        self.hi: Any = None
        self.values: dict[str, int] = {}
        self.overflow = False
        self.limit = _MAX_VALUES


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
            if key_kind(key) in ("rare", "status"):
                st.limit = _MAX_CODES
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
                if len(values) > st.limit:
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


def _stat_line(name: str, st: _Stat, n: int) -> str:
    types = " | ".join((f"{t} ×{c}" if len(st.types) > 1 else t) for t, c in st.types.items())
    parts = []
    if "." not in name and "[]" not in name and st.count < n:
        parts.append(f"in {st.count} of {n}")
    if st.lo is not None:
        parts.append(f"{dumps(st.lo)}..{dumps(st.hi)}" if st.lo != st.hi else f"always {dumps(st.lo)}")
    listable = len(st.values) <= max(_MAX_VALUES, st.count // 2)  # not a column of identifiers
    if st.values and not st.overflow and listable and (st.count >= 8 or "bool" in st.types):
        shown = sorted(st.values.items(), key=lambda kv: -kv[1])
        parts.append(", ".join(
            (k if "bool" in st.types and k in ("true", "false") else short(k)) + f" ×{c}" for k, c in shown
        ))
    elif st.example is not None:
        parts.append(f"e.g. {short(st.example)}")
    return f"  {name}: {types}" + ("; " + ", ".join(parts) if parts else "")


def schema_lines(items: list[dict], max_keys: int) -> tuple[list[str], int]:
    """Lines describing every key path (past `max_keys`, the rest are named without figures)."""
    stats: dict[str, _Stat] = {}
    for it in items:
        _walk(it, "", stats, 1)
    n = len(items)
    names = list(stats)
    lines = [_stat_line(name, stats[name], n) for name in names[:max_keys]]
    if len(names) > max_keys:
        lines.append(f"  {len(names) - max_keys} more keys, named only: " + ", ".join(names[max_keys:]))
    return lines, len(names)


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


def _flat_scalars(obj: dict, prefix: str = "", depth: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else k
        if type(v) is dict and depth < 3:
            out.update(_flat_scalars(v, name, depth + 1))
        elif type(v) not in (dict, list):
            out[name] = v
    return out


def _compact_columns(rows: list[dict[str, Any]], reasons: list[str]) -> list[str]:
    """The distinguishing fields: identifiers, the fields that made an object anomalous, messages."""
    present: dict[str, None] = {}
    for r in rows:
        present.update(dict.fromkeys(r))
    why = {r.split(":", 1)[0] for r in reasons}
    ident = [c for c in present if c.rsplit(".", 1)[-1].lower() in _IDENT_KEYS]
    rule = [c for c in present if c in why and c not in ident]
    msg = [c for c in present if c.rsplit(".", 1)[-1].lower() in _MESSAGE_KEYS and c not in ident + rule]
    return (ident[:4] + rule[:4] + msg[:3])[:10]


def _cell(v: Any) -> Any:
    return v[: _CELL_CHARS - 1] + "…" if type(v) is str and len(v) > _CELL_CHARS else v


def _compact_rows(items: list[dict], anomalies: dict[int, str], labels: list[str] | None) -> list[str]:
    flat = {i: _flat_scalars(items[i]) for i in anomalies}
    cols = _compact_columns(list(flat.values()), list(anomalies.values()))
    out = [f"Anomalous objects as a table (#index, then {dumps(cols)}; reason):"]
    for i, reason in anomalies.items():
        row = [_cell(flat[i].get(c)) for c in cols]
        label = f" ({labels[i]})" if labels else ""
        out.append(f"#{i}{label} {dumps(row)}; {reason}")
    return out


def _verbatim_rows(items: list[dict], kept: list[int], anomalies: dict[int, str],
                   labels: list[str] | None) -> list[str]:
    out = ["Kept objects, verbatim (#index):"]
    for i in kept:
        note = [labels[i]] if labels else []
        if i in anomalies:
            note.append(anomalies[i])
        out.append(f"#{i}{' (' + '; '.join(note) + ')' if note else ''} {dumps(items[i])}")
    return out


def _kept_section(items: list[dict], anomalies: dict[int, str], labels: list[str] | None,
                  policy: CompressPolicy) -> tuple[list[str], list[int]]:
    """Every anomaly: verbatim while that is small, else a compact table. Plus first and last."""
    n = len(items)
    ends = sorted({0, n - 1} - set(anomalies))
    size = sum(len(dumps(items[i])) for i in anomalies)
    if size <= policy.json_verbatim_anomaly_chars:
        kept = sorted({*ends, *anomalies})
        return _verbatim_rows(items, kept, anomalies, labels), kept
    ends = [i for i in ends if len(dumps(items[i])) <= policy.json_verbatim_anomaly_chars // 4]
    lines = _verbatim_rows(items, ends, {}, labels) if ends else []
    return lines + _compact_rows(items, anomalies, labels), sorted({*ends, *anomalies})


def digest(items: list[dict], label: str, container: str | None, policy: CompressPolicy, ref: str,
           labels: list[str] | None = None, nested: list[str] | None = None) -> Compressed:
    n = len(items)
    anomalies = anomalies_of(items)
    kept_lines, kept = _kept_section(items, anomalies, labels, policy)
    kept_set = set(kept)
    omitted_idx = [i for i in range(n) if i not in kept_set]
    schema, n_keys = schema_lines(items, max(1, policy.json_max_schema_keys))
    what = f"{marker.plural(len(anomalies), 'anomalous object')}, all kept"
    out = [f"{label}: JSON {'map' if labels else 'array'} of {n} objects, digested: {what}; "
           f"{len(omitted_idx)} others omitted."]
    if labels:
        out.append("Objects are labelled by their key path (a > b = entry b nested in entry a).")
    if container is not None:
        out.append(f"Enclosing object: {container}")
    out.append(f"Keys (all {n_keys}; type; values ×count, range or example, over all {n} objects):")
    out.extend(schema)
    out.extend(kept_lines)
    if omitted_idx:
        out.append(f"Omitted objects: {_ranges(omitted_idx)}.")
    out.extend(nested or ())
    mark = marker.make(
        f"kept {len(kept)} of {marker.plural(n, 'item')} ({len(anomalies)} anomalous) and all {n_keys} keys",
        f"{marker.plural(len(omitted_idx), 'item')} omitted", ref)
    needles = (*(f"#{i} " for i in anomalies), *_all_keys(items))
    return Compressed(marker.append("\n".join(out), mark), f"{len(omitted_idx)} of {marker.plural(n, 'item')}",
                      needles=needles)


def _all_keys(items: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for it in items:
        keys.update(dict.fromkeys(it))
    return list(keys)


def _nested_digests(value: Any, path: tuple[str, ...], policy: CompressPolicy) -> tuple[str, list[str]]:
    """The enclosing object, with its other large collections of objects digested below it."""
    n = len(elements(get_path(value, path))[0])
    container = _replace_at(value, path, f"<{n} objects, below>")
    text = dumps(container)
    if len(text) <= _CONTAINER_CHARS:
        return text, []
    sections: list[str] = []
    container = _digest_inside(container, "$", policy, sections)
    return dumps(container), sections


def _digest_inside(node: Any, label: str, policy: CompressPolicy, sections: list[str]) -> Any:
    """`node` with each large collection of objects in it replaced by a note; digests go to `sections`."""
    if type(node) not in (dict, list) or len(dumps(node)) <= _CONTAINER_CHARS // 2:
        return node
    if is_collection(node, max(1, policy.json_min_items)):
        items, labels = elements(node)
        sub = digest(items, label, None, policy, "", labels)
        sections.extend(["", *sub.text.split("\n")[:-1]])
        return f"<{len(items)} objects, digested below as {label}>"
    if type(node) is list:
        return [_digest_inside(v, f"{label}[{i}]", policy, sections) for i, v in enumerate(node)]
    return {k: _digest_inside(v, path_label((k,)).replace("$", label, 1), policy, sections)
            for k, v in node.items()}


def lossless(
    items: list[dict], label: str, container: str | None, ref: str, max_chars: int | None = None
) -> Compressed | None:
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
    return Compressed(marker.append("\n".join(out), mark), "")


def compress_json(
    value: Any, path: tuple[str, ...], policy: CompressPolicy, ref: str, tokens_before: int
) -> Compressed | None:
    items, labels = elements(get_path(value, path))
    label = path_label(path)
    container, nested = _nested_digests(value, path, policy) if path else (None, [])

    # Tokenizing is the expensive part: a table too long even at 5 characters per token (JSON
    # tables average under 3) cannot be under the lossless budget, so it is not even finished.
    table = None
    if labels is None and not nested:
        table = lossless(items, label, container, ref, max_chars=5 * policy.json_lossless_max_tokens)
    table_tokens = None
    if table is not None:
        table_tokens = count_tokens(table.text)
        if table_tokens <= policy.json_lossless_max_tokens and saves_enough(
            tokens_before, table_tokens, policy.min_saving_ratio, policy.min_saving_tokens
        ):
            return table._replace(tokens=table_tokens)
    lossy = digest(items, label, container, policy, ref, labels, nested)
    lossy_tokens = count_tokens(lossy.text)
    if table is not None and table_tokens is not None and table_tokens <= lossy_tokens:
        return table._replace(tokens=table_tokens)
    return lossy._replace(tokens=lossy_tokens)
