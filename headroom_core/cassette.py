"""The cassette format: one stored exchange as a readable, diffable JSON document.

A cassette is a folder of such files (`headroom_runtime.cassettestore` reads and writes them).
This module owns the document: the canonical request (what the key covers, no credential), the
response status and headers (credentials and volatile fields dropped), and the body as text,
JSON, SSE events (each with its delay in ms) or base64. Writing is deterministic (sorted keys,
one field or one event per line), so re-recording the same answer gives the same bytes; reading
checks every field and says which line is wrong. Pure: entries and bytes in, bytes and entries out.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import orjson

from . import cachekey, encoding, headers
from .headers import Fields
from .store import Entry, storable_headers

FORMAT = "headroom-cassette/1"
SUFFIX = ".json"
# The tenant of every recording in a cassette: what was recorded with one credential replays
# with another or none (CI has no real credential).
TENANT = "cassette"

_EVENT = re.compile(rb"(?:event: ([^\r\n]*)\n)?data: ([^\r\n]*)\n\n")
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n")
_NAME_PART = re.compile(r"[^a-z0-9._]+")
_BODY_FORMS = ("base64", "events", "json", "text")
_EVENT_FORMS = ("base64", "data", "json", "text")


class CassetteError(ValueError):
    """A cassette file that cannot be served: `line` (1-based) points at the problem."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.args[0]}" if self.line else str(self.args[0])


# --- names ---------------------------------------------------------------------------------


def file_name(key: str, request: dict | None, *, long: bool = False) -> str:
    """`anthropic-messages-claude-sonnet-4-5-0123456789ab.json`: a readable prefix (provider,
    endpoint, model) and the key's first 12 hex digits (all of them when `long`)."""
    parts = []
    if isinstance(request, dict):
        body = request.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        for p in (request.get("provider"), request.get("endpoint"), model):
            if isinstance(p, str) and (clean := _NAME_PART.sub("-", p.lower()).strip("-.")):
                parts.append(clean[:60])
    parts.append(key if long else key[:12])
    return "-".join(parts) + SUFFIX


# --- entry -> document ---------------------------------------------------------------------


def prepare(entry: Entry) -> Entry:
    """The entry as a cassette keeps it: headers without credentials, account ids or volatile
    fields; a content-coded body decoded (and its `content-encoding` dropped) when it decodes;
    a stream cut into its SSE events, each at its arrival time rounded to the millisecond.
    `decode(encode(key, prepare(e)))` gives back exactly this entry."""
    # (`storable_headers` leaves out anything naming an account or carrying a credential;
    # `content-encoding` goes below when the body is kept decoded)
    fields = storable_headers(entry.headers)
    coding = encoding.coding_of(fields)
    body, chunks = entry.body, entry.chunks
    if coding:
        try:
            if chunks is None:
                body = encoding.decode(body, coding, encoding.STREAM_LIMIT)
            else:
                chunks = _decode_chunks(chunks, coding)
            fields = headers.remove(fields, b"content-encoding")
        except encoding.EncodingError:
            pass  # kept as recorded (base64), with its coding
    if chunks is None:
        return Entry(entry.status, fields, body, None, entry.request)
    if coding and encoding.coding_of(fields):  # undecodable: the recorded chunks, as they came
        return Entry(entry.status, fields, b"", _ms(chunks), entry.request)
    return Entry(entry.status, fields, b"", _events(chunks), entry.request)


def _decode_chunks(chunks: list[tuple[float, bytes]], coding: str) -> list[tuple[float, bytes]]:
    dec = encoding.IncrementalDecoder(coding)
    out = [(t, dec.feed(c)) for t, c in chunks]
    tail = dec.close()
    if tail:
        out.append((out[-1][0] if out else 0.0, tail))
    return out


def _ms(chunks: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Non-empty chunks at whole milliseconds, never earlier than the chunk before."""
    out, last = [], 0
    for t, c in chunks:
        if c:
            last = max(last, round(t * 1000))
            out.append((last / 1000, c))
    return out


def _events(chunks: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Chunks re-cut at SSE event ends; an event's time is when its last byte arrived (whole
    milliseconds, never earlier than the event before)."""
    body = b"".join(c for _, c in chunks)
    ends, times, pos = [], [], 0  # where each chunk ends in `body`, and when it arrived (ms)
    for t, c in chunks:
        if c:
            pos += len(c)
            ends.append(pos)
            times.append(round(t * 1000))
    cuts = [m.end() for m in _EVENT_END.finditer(body)]
    if not cuts or cuts[-1] != len(body):
        cuts.append(len(body))  # an unterminated tail is a piece of its own
    pieces, start, i, last, n = [], 0, 0, 0, len(ends) - 1
    for end in cuts:
        if end > start:
            while i < n and ends[i] < end:  # the chunk that holds the event's last byte
                i += 1
            if times[i] > last:
                last = times[i]
            pieces.append((last / 1000, body[start:end]))
            start = end
    return pieces


def encode(key: str, entry: Entry) -> bytes:
    """The document of a prepared entry (`prepare`): UTF-8 JSON, keys sorted, one field per line
    (an SSE event per line), ending in a newline."""
    if not isinstance(entry.request, dict):
        raise ValueError("a cassette entry needs its canonical request")
    hdrs = [_str(f"{n.decode('latin-1')}: {v.decode('latin-1')}") for n, v in entry.headers]
    return b"\n".join((
        b"{",
        b'  "format": "%s",' % FORMAT.encode(),
        b'  "key": %s,' % _str(key),
        b'  "request": %s,' % _pretty(entry.request, 1, sort=True),
        b'  "response": {',
        b'    "body": %s,' % _body(entry, 2),
        b'    "headers": %s,' % (b"[]" if not hdrs else b"[\n      " + b",\n      ".join(hdrs)
                                  + b"\n    ]"),
        b'    "status": %d' % int(entry.status),
        b"  }",
        b"}",
        b"",
    ))


def _str(s: str) -> bytes:
    return orjson.dumps(s)


def _pretty(value: Any, level: int, *, sort: bool) -> bytes:
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | (
            orjson.OPT_SORT_KEYS if sort else 0))
    except TypeError:  # an integer beyond 64 bits or a lone surrogate: the stdlib writes those
        text = json.dumps(value, indent=2, sort_keys=sort, ensure_ascii=True,
                          allow_nan=False).encode("ascii")
    return text.replace(b"\n", b"\n" + b"  " * level)


# How a JSON text is written again from its value: (indent, ascii). Tried in this order; the
# first that gives back the recorded bytes exactly is kept, else the body stays text. `ascii` is
# orjson's text with every non-ASCII character escaped (`\\u00e9`, surrogate pairs beyond the
# BMP), as Python's json module writes it by default.
_STYLES = ((0, False), (2, False), (0, True), (2, True))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ESCAPES: dict[str, str] = {}


def _escape(m: re.Match) -> str:
    ch = m.group()
    out = _ESCAPES.get(ch)
    if out is None:
        c = ord(ch)
        if c < 0x10000:
            out = f"\\u{c:04x}"
        else:
            c -= 0x10000
            out = f"\\u{0xd800 | (c >> 10):04x}\\u{0xdc00 | (c & 0x3ff):04x}"
        if len(_ESCAPES) < 4096:
            _ESCAPES[ch] = out
    return out


def _ascii(text: bytes) -> bytes:
    """UTF-8 JSON text with every non-ASCII character escaped."""
    if text.isascii():
        return text
    return _NON_ASCII.sub(_escape, text.decode("utf-8")).encode("ascii")


def _dump(value: Any, indent: int, ascii_: bool) -> bytes:
    out = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    return _ascii(out) if ascii_ else out


def _json_style(raw: bytes) -> tuple[Any, int, bool, bool] | None:
    """(value, indent, ascii, newline) when `raw` is a JSON text one of `_STYLES` writes."""
    if raw[:1] not in (b"{", b"["):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    newline = raw.endswith(b"\n")
    text = raw[:-1] if newline else raw
    for indent, ascii_ in _STYLES:
        try:
            if _dump(value, indent, ascii_) == text:
                return value, indent, ascii_, newline
        except (TypeError, ValueError):
            return None
    return None


def _body(entry: Entry, level: int) -> bytes:
    pad = b"  " * level
    if entry.chunks is not None:
        return _events_doc(entry.chunks, level)
    body = entry.body
    style = _json_style(body)
    if style is not None:
        value, indent, ascii_, newline = style
        doc = [b'"ascii": true'] if ascii_ else []
        if indent:
            doc.append(b'"indent": %d' % indent)
        doc.append(b'"json": ' + _pretty(value, level + 1, sort=False))
        if newline:
            doc.append(b'"newline": true')
    else:
        try:
            doc = [b'"text": ' + _str(body.decode("utf-8"))]
        except UnicodeDecodeError:
            doc = [b'"base64": "%s"' % base64.b64encode(body)]
    return b"{\n" + b",\n".join(pad + b"  " + d for d in doc) + b"\n" + pad + b"}"


def _events_doc(chunks: list[tuple[float, bytes]], level: int) -> bytes:
    """`{"events": [...]}`, one event per line. The loop is the recording cost of a stream
    (thousands of events per MB), so it is kept tight: one regex match, one JSON parse and one
    serialisation per event."""
    pad = b"  " * level
    lead = pad + b"    "
    ascii_ = _stream_ascii(chunks)
    names: dict[bytes | None, bytes | None] = {None: b""}  # event name -> its JSON field
    match, loads, dumps = _EVENT.fullmatch, orjson.loads, orjson.dumps
    lines, last = [], 0
    for t, piece in chunks:
        ms = round(t * 1000)
        delay = ms - last if ms > last else 0
        last = max(last, ms)
        line = None
        m = match(piece)
        if m is not None:
            name, data = m.group(1, 2)
            ev = names.get(name, False)
            if ev is False:
                try:
                    ev = b', "event": ' + _bstr(name)
                except UnicodeDecodeError:
                    ev = None
                names[name] = ev
            if ev is not None:
                shown = None
                if data[:1] in (b"{", b"["):
                    try:
                        out = dumps(loads(data))
                    except (orjson.JSONDecodeError, TypeError):
                        out = None
                    if out is not None and (out == data and (not ascii_ or out.isascii())
                                            or ascii_ and _ascii(out) == data):
                        shown = out
                if shown is not None:
                    line = b'%s{"delay_ms": %d%s, "json": %s}' % (lead, delay, ev, shown)
                else:
                    try:
                        line = b'%s{"data": %s, "delay_ms": %d%s}' % (lead, _bstr(data), delay,
                                                                       ev)
                    except UnicodeDecodeError:
                        pass
        if line is None:
            try:
                line = b'%s{"delay_ms": %d, "text": %s}' % (lead, delay, _bstr(piece))
            except UnicodeDecodeError:
                line = b'%s{"base64": "%s", "delay_ms": %d}' % (lead, base64.b64encode(piece),
                                                                 delay)
        lines.append(line)
    flag = pad + b'  "ascii": true,\n' if ascii_ else b""
    inner = b"[]" if not lines else b"[\n" + b",\n".join(lines) + b"\n" + pad + b"  ]"
    return b"{\n" + flag + pad + b'  "events": ' + inner + b"\n" + pad + b"}"


def _event_json(data: bytes, ascii_: bool) -> bool:
    """Whether `_dump` in the stream's style gives back exactly `data`."""
    if data[:1] not in (b"{", b"["):
        return False
    try:
        out = orjson.dumps(orjson.loads(data))
    except (orjson.JSONDecodeError, TypeError):
        return False
    return out == data and (not ascii_ or out.isascii()) or ascii_ and _ascii(out) == data


def _stream_ascii(chunks: list[tuple[float, bytes]]) -> bool:
    """Whether the stream's JSON events escape non-ASCII text (`\\u00e9`): one style per
    stream, decided by its first event that has non-ASCII text either way."""
    for _, piece in chunks:
        m = _EVENT.fullmatch(piece)
        if m is None:
            continue
        data = m.group(2)
        if not data.isascii():
            return False
        if b"\\u" in data and not _event_json(data, False):
            return _event_json(data, True)
    return False


_PLAIN = re.compile(rb"[A-Za-z0-9_.:/-]*")


def _bstr(s: bytes | None) -> bytes:
    """A JSON string literal for UTF-8 `s` (raises UnicodeDecodeError)."""
    return b'"' + s + b'"' if _PLAIN.fullmatch(s) else orjson.dumps(s.decode("utf-8"))


# --- document -> entry ---------------------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(data: bytes) -> tuple[str, Entry]:
    """A cassette file's (key, entry). Raises CassetteError (with the line) unless every field
    is there, well-typed and consistent: the key must be the hash of the request."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CassetteError(f"not UTF-8 ({e.reason})", data.count(b"\n", 0, e.start) + 1) \
            from None
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise CassetteError(f"invalid JSON: {e.msg}", e.lineno) from None
    except _Duplicate as e:
        line, path = _duplicate_at(text)
        where = f" in {path}" if path else ""
        raise CassetteError(f"duplicated key {e.args[0]!r}{where}", line) from None
    except (ValueError, RecursionError) as e:
        raise CassetteError(f"invalid JSON: {e}") from None
    try:
        return _entry(doc)
    except _Bad as e:
        raise CassetteError(e.args[0], _line(text, e.path)) from None


class _Bad(ValueError):
    def __init__(self, message: str, path: tuple) -> None:
        super().__init__(message)
        self.path = path


def _show(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "the document"


def _get(obj: Any, path: tuple, key: str, kind: type | tuple, what: str) -> Any:
    if not isinstance(obj, dict):
        raise _Bad(f"{_show(path)} must be an object", path)
    if key not in obj:
        raise _Bad(f"missing field {_show((*path, key))}", path)
    value = obj[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _Bad(f"{_show((*path, key))} must be {what}", (*path, key))
    return value


def _only(obj: dict, path: tuple, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise _Bad(f"unknown field {_show((*path, extra[0]))}", (*path, extra[0]))


def _entry(doc: Any) -> tuple[str, Entry]:
    if not isinstance(doc, dict):
        raise _Bad("a cassette file holds one JSON object", ())
    _only(doc, (), ("format", "key", "request", "response"))
    fmt = _get(doc, (), "format", str, "a string")
    if fmt != FORMAT:
        raise _Bad(f"format {fmt!r} is not {FORMAT!r}", ("format",))
    key = _get(doc, (), "key", str, "a string")
    request = _get(doc, (), "request", dict, "an object")
    for field in ("provider", "endpoint"):
        _get(request, ("request",), field, str, "a string")
    if request.get("tenant") != TENANT:
        raise _Bad(f"request.tenant must be {TENANT!r}", ("request", "tenant"))
    try:
        actual = cachekey.request_key(request)
    except (TypeError, ValueError):
        raise _Bad("request cannot be keyed", ("request",)) from None
    if actual != key:
        raise _Bad(f"key does not match the request (it hashes to {actual}): a hand-edited "
                   "request needs its key updated, or a new recording", ("key",))
    resp = _get(doc, (), "response", dict, "an object")
    rp = ("response",)
    _only(resp, rp, ("body", "headers", "status"))
    status = _get(resp, rp, "status", int, "a whole number")
    if not 100 <= status <= 999:
        raise _Bad("response.status must be an HTTP status (100-999)", (*rp, "status"))
    fields = _headers(_get(resp, rp, "headers", list, "a list of \"name: value\" strings"),
                      (*rp, "headers"))
    body, chunks = _body_of(_get(resp, rp, "body", dict, "an object"), (*rp, "body"))
    return key, Entry(status, fields, body, chunks, request)


def _headers(items: list, path: tuple) -> Fields:
    out = []
    for i, h in enumerate(items):
        name, sep, value = h.partition(": ") if isinstance(h, str) else ("", "", "")
        if not sep or not name or any(c in name for c in ' \t:\r\n') or "\r" in value \
                or "\n" in value:
            raise _Bad(f'{_show((*path, i))} must be a "name: value" string', (*path, i))
        try:
            out.append((name.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:
            raise _Bad(f"{_show((*path, i))} holds a character outside Latin-1",
                       (*path, i)) from None
    return out


def _flags(body: dict, path: tuple) -> tuple[int, bool, bool]:
    indent = body.get("indent", 0)
    if indent not in (0, 2) or isinstance(indent, bool):
        raise _Bad(f"{_show((*path, 'indent'))} must be 0 or 2", (*path, "indent"))
    flags = []
    for name in ("ascii", "newline"):
        v = body.get(name, False)
        if not isinstance(v, bool):
            raise _Bad(f"{_show((*path, name))} must be true or false", (*path, name))
        flags.append(v)
    return indent, flags[0], flags[1]


def _one_form(obj: dict, path: tuple, forms: tuple[str, ...]) -> str:
    found = [f for f in forms if f in obj]
    if len(found) != 1:
        raise _Bad(f"{_show(path)} needs exactly one of " + ", ".join(forms), path)
    return found[0]


def _body_of(body: dict, path: tuple) -> tuple[bytes, list[tuple[float, bytes]] | None]:
    _only(body, path, (*_BODY_FORMS, "ascii", "indent", "newline"))
    form = _one_form(body, path, _BODY_FORMS)
    indent, ascii_, newline = _flags(body, path)
    if form == "events":
        if indent or newline:
            raise _Bad(f"{_show(path)}: indent and newline do not apply to events", path)
        return b"", list(_event_chunks(_get(body, path, "events", list, "a list"),
                                       (*path, "events"), ascii_))
    if form != "json" and (indent or ascii_ or newline):
        raise _Bad(f"{_show(path)}: ascii, indent and newline apply to json only", path)
    if form == "text":
        return _get(body, path, "text", str, "a string").encode("utf-8", "surrogatepass"), None
    if form == "base64":
        return _b64(body["base64"], (*path, "base64")), None
    try:
        out = _dump(body["json"], indent, ascii_)
    except (TypeError, ValueError):
        raise _Bad(f"{_show((*path, 'json'))} cannot be written back as JSON",
                   (*path, "json")) from None
    return out + (b"\n" if newline else b""), None


def _b64(value: Any, path: tuple) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{_show(path)} must be a base64 string", path)
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise _Bad(f"{_show(path)} is not valid base64", path) from None


def _event_chunks(events: list, path: tuple, ascii_: bool) -> Iterator[tuple[float, bytes]]:
    ms = 0
    for i, ev in enumerate(events):
        p = (*path, i)
        if not isinstance(ev, dict):
            raise _Bad(f"{_show(p)} must be an object", p)
        _only(ev, p, (*_EVENT_FORMS, "delay_ms", "event"))
        delay = _get(ev, p, "delay_ms", int, "a whole number of milliseconds")
        if delay < 0:
            raise _Bad(f"{_show((*p, 'delay_ms'))} must not be negative", (*p, "delay_ms"))
        ms += delay
        form = _one_form(ev, p, _EVENT_FORMS)
        name = ev.get("event")
        if name is not None and form not in ("json", "data"):
            raise _Bad(f"{_show((*p, 'event'))} goes with json or data only", (*p, "event"))
        if form == "text":
            piece = _get(ev, p, "text", str, "a string").encode("utf-8", "surrogatepass")
        elif form == "base64":
            piece = _b64(ev["base64"], (*p, "base64"))
        else:
            if form == "data":
                data = _get(ev, p, "data", str, "a string").encode("utf-8", "surrogatepass")
            else:
                try:
                    data = _dump(ev["json"], 0, ascii_)
                except (TypeError, ValueError):
                    raise _Bad(f"{_show((*p, 'json'))} cannot be written back as JSON",
                               (*p, "json")) from None
            if name is not None and not isinstance(name, str):
                raise _Bad(f"{_show((*p, 'event'))} must be a string", (*p, "event"))
            for what, v in (("event", name or ""), ("data", data)):
                if isinstance(v, str) and ("\n" in v or "\r" in v) or \
                        isinstance(v, bytes) and (b"\n" in v or b"\r" in v):
                    raise _Bad(f"{_show((*p, what))} must be one line (use text for a raw "
                               "event)", (*p, what))
            piece = (b"event: " + name.encode("utf-8") + b"\n" if name is not None else b"") \
                + b"data: " + data + b"\n\n"
        yield ms / 1000, piece


# --- where in the text (only when a file is bad) -------------------------------------------

_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]')
_SPACE = re.compile(r"\s*")


def _walk(text: str) -> Iterator[tuple[str, tuple, int, str | None]]:
    """("value", path, position, None) where each value starts, and ("dup", object path,
    position, key) for a key seen twice in one object."""
    stack: list[list] = []  # [kind, current key or index, keys seen]

    def at() -> tuple:
        return tuple(f[1] for f in stack)

    def start(i: int) -> int:
        return _SPACE.match(text, i).end()

    yield "value", (), start(0), None
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(["o", None, set()])
        elif tok == "[":
            stack.append(["a", 0, None])
            if text[start(m.end()):start(m.end()) + 1] != "]":
                yield "value", at(), start(m.end()), None
        elif tok in "}]":
            if stack:
                stack.pop()
        elif tok == ",":
            if stack and stack[-1][0] == "a":
                stack[-1][1] += 1
                yield "value", at(), start(m.end()), None
            elif stack:
                stack[-1][1] = None
        elif tok == ":":
            if stack and stack[-1][0] == "o":
                yield "value", at(), start(m.end()), None
        elif stack and stack[-1][0] == "o" and stack[-1][1] is None:  # a key
            try:
                key = json.loads(tok)
            except ValueError:
                key = tok
            frame = stack[-1]
            if key in frame[2]:
                yield "dup", at()[:-1], m.start(), key
            frame[2].add(key)
            frame[1] = key


def _lineno(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _line(text: str, path: tuple) -> int:
    """The line where the value at `path` starts (or its deepest existing parent)."""
    best, depth = 0, -1
    for kind, at, pos, _ in _walk(text):
        if kind == "value" and at == path[:len(at)] and len(at) > depth:
            best, depth = pos, len(at)
            if at == path:
                break
    return _lineno(text, best)


def _duplicate_at(text: str) -> tuple[int | None, str]:
    """The line and object path of the first key that repeats within one object."""
    for kind, at, pos, _ in _walk(text):
        if kind == "dup":
            return _lineno(text, pos), _show(at)
    return None, ""
