import hashlib
import json

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headroom_core import jsonspan
from headroom_core.jsonspan import (
    array_elements,
    decode_literal,
    encode_literal,
    locate,
    locate_checked,
    locate_fast,
    elements_after,
    no_later_key,
    parsed_tail,
    splice,
)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_locates_nested_string_literals():
    raw = b'{"a": [1, {"b": "x"}, {"c": [true, null, "y"]}], "z": {"q": [[[]]]}}'
    spans = locate(raw, [("a", 1, "b"), ("a", 2, "c", 2)])
    assert {p: raw[s:e] for p, (s, e) in spans.items()} == {
        ("a", 1, "b"): b'"x"', ("a", 2, "c", 2): b'"y"'}


def test_empty_path_list_is_an_empty_map():
    assert locate(b'{"a": "b"}', []) == {}


@pytest.mark.parametrize("literal, text", [
    (rb'"say \"hi\""', 'say "hi"'),
    (rb'"C:\\dir\\"', "C:\\dir\\"),
    (rb'"a\nb\r\tc"', "a\nb\r\tc"),
    (rb'"http:\/\/x\/y"', "http://x/y"),
    (rb'"caf\u00e9"', "café"),
    (rb'"smile \ud83d\ude00"', "smile \U0001F600"),
    (rb'"lone \ud800 high"', "lone \ud800 high"),
    (rb'"\\\"\\"', '\\"\\'),
    ('"raw café ✓ 😀"'.encode(), "raw café ✓ 😀"),
    (rb'"ends with backslash \\"', "ends with backslash \\"),
])
def test_escape_cases_give_exact_spans(literal, text):
    raw = b'{"pre": "x\\"}", "t": ' + literal + b', "post": ["\\"", "]"]}'
    spans = locate_checked(raw, {("t",): text})
    assert spans is not None
    s, e = spans[("t",)]
    assert raw[s:e] == literal
    assert decode_literal(raw[s:e]) == text


@pytest.mark.parametrize("text", [
    'x"' * 100,  # dense escaped quotes: more than the quote-to-quote fast path takes
    '\\"' * 40 + "\\" * 7,  # runs of backslashes before quotes, odd and even
    '"' * 15 + "\\",
    '"' * 16 + "\\",
    '"' * 17 + "\\",
])
def test_strings_dense_with_escapes(text):
    raw = b'{"a": ' + orjson.dumps(text) + b', "b": ' + orjson.dumps(text + "b") + b', "c": 1}'
    spans = locate_checked(raw, {("a",): text, ("b",): text + "b"})
    assert spans is not None
    assert raw[spans[("b",)][1]:] == b', "c": 1}'


def test_encode_literal_refuses_lone_surrogates():
    assert encode_literal("ok \u00e9") == '"ok é"'.encode()
    assert encode_literal("bad \ud800") is None


def test_decode_literal_rejects_non_strings():
    for bad in (b"1", b"[]", b'"unterminated', b"\xff"):
        with pytest.raises(ValueError):
            decode_literal(bad)


def test_escaped_keys_are_matched_by_their_value():
    raw = b'{"mes\\u0073ages": [{"c": "v"}]}'
    assert locate_checked(raw, {("messages", 0, "c"): "v"}) is not None


def test_duplicate_keys_resolve_to_the_last_occurrence():
    raw = b'{"a": "first", "b": {"x": "1"}, "a": "last"}'
    doc = orjson.loads(raw)
    spans = locate_checked(raw, {("a",): doc["a"]})
    s, e = spans[("a",)]
    assert raw[s:e] == b'"last"'
    assert s == raw.rindex(b'"last"')


def test_duplicate_container_keys_forget_the_earlier_subtree():
    raw = b'{"m": [{"c": "old"}, {"c": "v"}], "m": [{"d": 1}]}'
    # The parser keeps the second "m", where the wanted path does not exist.
    assert locate(raw, [("m", 0, "c")]) is None
    raw = b'{"m": [{"c": "old"}], "x": 1, "m": [{"c": "new"}]}'
    spans = locate_checked(raw, {("m", 0, "c"): "new"})
    s, e = spans[("m", 0, "c")]
    assert raw[s:e] == b'"new"' and s > raw.index(b'"x"')


def test_duplicate_key_inside_a_block():
    raw = b'{"content": [{"type": "tool_result", "content": "A", "content": "B"}]}'
    spans = locate_checked(raw, {("content", 0, "content"): "B"})
    assert raw[slice(*spans[("content", 0, "content")])] == b'"B"'


@pytest.mark.parametrize("dumps", [
    lambda d: json.dumps(d).encode(),
    lambda d: json.dumps(d, indent=2).encode(),
    lambda d: json.dumps(d, indent="\t", ensure_ascii=False).encode(),
    lambda d: json.dumps(d, separators=(",", ":")).encode(),
    lambda d: json.dumps(d, indent=1).replace("\n", "\r\n").replace(": ", " :  ").encode(),
])
def test_pretty_and_minified_bodies(dumps):
    doc = {"system": [{"text": "s ]}{["}], "messages": [
        {"role": "user", "content": [{"type": "tool_result", "content": "out \"é\" ]"}]},
        {"role": "user", "content": [{"type": "text", "text": "[{"}]}]}
    raw = dumps(doc)
    paths = {("messages", 0, "content", 0, "content"): 'out "é" ]',
             ("messages", 1, "content", 0, "text"): "[{"}
    spans = locate_checked(raw, paths)
    assert spans is not None
    for p, (s, e) in spans.items():
        assert decode_literal(raw[s:e]) == paths[p]


@pytest.mark.parametrize("raw, path", [
    (b'{"a": 1}', ("a",)),  # not a string
    (b'{"a": {"b": "x"}}', ("a", "c")),  # missing key
    (b'{"a": ["x"]}', ("a", 3)),  # index out of range
    (b'{"a": "x"', ("a",)),  # truncated
    (b'{"a": "x" "b": "y"}', ("b",)),  # missing comma
    (b'{"a": ["x"}', ("a", 0)),  # mismatched bracket
    (b"", ("a",)),
    (b"[]", ("a",)),
    (b'{"a": ["x", {"b": "y"]}', ("a", 1, "b")),
])
def test_unmappable_bodies_are_refused(raw, path):
    assert locate(raw, [path]) is None


def test_checked_locate_refuses_a_value_mismatch():
    raw = b'{"a": "x"}'
    assert locate_checked(raw, {("a",): "y"}) is None
    assert locate_checked(raw, {("a",): "x"}) == {("a",): (6, 9)}


def test_prefix_paths_are_a_programming_error():
    with pytest.raises(ValueError):
        locate(b'{"a": {"b": "c"}}', [("a",), ("a", "b")])


def test_splice_copies_every_other_byte():
    raw = json.dumps({"k": ["é" * 5, "old literal", {"z": "other"}]}, indent=2,
                     ensure_ascii=False).encode()
    s1, e1 = locate(raw, [("k", 1)])[("k", 1)]
    s2, e2 = locate(raw, [("k", 2, "z")])[("k", 2, "z")]
    new1, new2 = encode_literal("new \"text\""), encode_literal("Z")
    out = splice(raw, [(s2, e2, new2), (s1, e1, new1)])  # any order
    assert sha(out[:s1]) == sha(raw[:s1])
    mid = out[s1 + len(new1):s2 - (e1 - s1) + len(new1)]
    assert sha(mid) == sha(raw[e1:s2])
    assert sha(out[len(out) - (len(raw) - e2):]) == sha(raw[e2:])
    assert orjson.loads(out) == {"k": ["é" * 5, 'new "text"', {"z": "Z"}]}


def test_splice_without_edits_returns_the_input():
    raw = b'{"a": "b"}'
    assert splice(raw, []) is raw


@pytest.mark.parametrize("edits", [[(2, 5, b"x"), (4, 6, b"y")], [(3, 2, b"")], [(0, 99, b"")]])
def test_splice_rejects_bad_edits(edits):
    with pytest.raises(ValueError):
        splice(b"0123456789", edits)


# Random documents: every string leaf must be found exactly, in every serialisation style.
_text = st.text(st.characters(codec="utf-8") | st.sampled_from('"\\/\n\t\b\f\x00\u2028é😀'),
                max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                                                                       allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)


def _leaves(doc, path=()):
    if isinstance(doc, str):
        yield path, doc
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))


def _set(doc, path, value):
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


@settings(max_examples=300, deadline=None)
@given(doc=_json, style=st.sampled_from(["orjson", "ascii", "indent", "unicode-indent", "tight"]))
def test_random_documents_locate_and_splice_exactly(doc, style):
    doc = [doc]  # request bodies are containers
    raw = {
        "orjson": lambda: orjson.dumps(doc),
        "ascii": lambda: json.dumps(doc).encode(),
        "indent": lambda: json.dumps(doc, indent=3).encode(),
        "unicode-indent": lambda: json.dumps(doc, indent=1, ensure_ascii=False).encode(),
        "tight": lambda: json.dumps(doc, separators=(",", ":")).encode(),
    }[style]()
    leaves = dict(_leaves(doc))
    spans = locate_checked(raw, leaves)
    assert spans is not None
    edits = [(s, e, encode_literal(f"#{i}")) for i, (s, e) in enumerate(spans.values())]
    out = splice(raw, edits)
    expected = json.loads(json.dumps(doc))
    for i, path in enumerate(spans):
        expected = _set(expected, path, f"#{i}")
    assert orjson.loads(out) == expected


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=60) | st.text(alphabet='{}[]":,\\ abtrue0', max_size=40).map(
    str.encode), path=st.lists(st.sampled_from(["a", "b", 0, 1]), min_size=1, max_size=3))
def test_garbage_never_raises(raw, path):
    result = locate(raw, [tuple(path)])
    assert result is None or set(result) == {tuple(path)}


_surrogate_text = st.text(st.characters(codec="utf-8") | st.sampled_from(
    ["\ud800", "\udc00", "\udbff", "\udfff", "\\", '"']), max_size=10)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(_surrogate_text, st.lists(_surrogate_text, max_size=3), max_size=4))
def test_lone_surrogates_are_located_exactly(doc):
    raw = json.dumps(doc).encode()  # \udxxx escapes, as a client with broken UTF-16 would send
    leaves = dict(_leaves(doc))
    spans = locate_checked(raw, leaves)
    assert spans is not None
    out = splice(raw, [(s, e, b'"r"') for s, e in spans.values()])
    assert json.loads(out) == {k: ["r"] * len(v) for k, v in doc.items()}


# --- no_later_key with the previous turn's tail known ----------------------------------------

_FILLER = b'{"name":"Bash","description":"Run a command. Quote paths; avoid cd.","x":[1,2]},' * 80


def _pair(a: bytes, b: bytes, shared: bytes) -> tuple[bytes, bytes]:
    """A previous request and a new one whose tails (after position 1) are `a + shared` and
    `b + shared`."""
    return b"[" + a + shared, b"[" + b + shared


@pytest.mark.parametrize("new_head, clean", [
    (b'"system":"cch=1234;"', True),
    (b'"system":"x","messages":[]', False),  # a later key in the changed part
    (b'"system":"\\u0041"', False),  # an escape that could spell one
    (b'"system":"x","mess', False),  # runs into the shared end (completed by its "ages")
    (b'"system":"x\\', False),  # a backslash whose "u" is the shared end's first byte
])
def test_no_later_key_searches_what_changed_since_the_known_tail(new_head, clean):
    shared = (b'ages":0,' if new_head.endswith(b"mess") else
              b"u0042" if new_head.endswith(b"\\") else b"") + _FILLER
    old, new = _pair(b'"system":"cch=0000;",', new_head, shared)
    assert no_later_key(old, 1, "messages")  # what the memo knows of the previous turn
    assert no_later_key(new, 1, "messages") is clean
    assert no_later_key(new, 1, "messages", (old, 1)) is clean


def test_no_later_key_with_a_stale_known_tail_searches_everything():
    old = b"[" + _FILLER
    new = b"[" + _FILLER[:-200] + b'"messages":1' + _FILLER[-200:]  # inside the "shared" part?
    assert not no_later_key(new, 1, "messages", (old, 1))  # no: the ends differ, full search


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.lists(st.sampled_from(
           [b"x", b'"', b"\\", b"u", b'"messages"', b"mess", b'ages"', b"\\u00", b","]),
           max_size=30),
       st.integers(0, 9000), st.lists(st.sampled_from([b"x", b'"', b"\\", b"mess", b'ages"']),
                                      max_size=6))
def test_no_later_key_with_known_agrees_with_the_full_search(old_head, new_parts, pad, edge):
    shared = b"".join(edge) + b"y" * pad
    old, new = _pair(old_head, b"".join(new_parts), shared)
    assume(no_later_key(old, 1, "messages"))  # the memo only knows clean tails
    assert no_later_key(new, 1, "messages", (old, 1)) == no_later_key(new, 1, "messages")


@pytest.mark.parametrize("needle, cut, head", [
    (n, c, h) for n in (b'"messages"', b"\\u") for c in range(1, len(n))
    for h in jsonspan._KNOWN_HEADS])
def test_no_later_key_finds_a_spelling_that_runs_into_the_shared_end(needle, cut, head):
    # Equal tail lengths: the bytes from `head` on are compared, not searched (the first head
    # whose end is shared). A spelling that starts before them and ends inside them is found.
    rest = b"y" * 40000
    old = b"[" + b"x" * (head - cut) + b"z" * cut + needle[cut:] + rest
    new = b"[" + b"x" * (head - cut) + needle[:cut] + needle[cut:] + rest
    assert no_later_key(old, 1, "messages")
    assert not no_later_key(new, 1, "messages", (old, 1))


# --- parsed_tail: the array's tail in one parse, proven by re-encoding ------------------------

_AFTER = b'],"temperature":1,"system":[{"type":"text","text":"cch=1;"}],"stream":true}'
_MARKER = _AFTER[:24]


def _body(head: list, tail: list, after: bytes = _AFTER) -> tuple[bytes, int]:
    """A compact body whose messages are `head + tail`, and the position just after `head`."""
    start = b'{"model":"m","messages":['
    pos = len(start) + len(orjson.dumps(head)) - 2 if head else len(start)
    return start + orjson.dumps(head + tail)[1:-1] + after, pos


def _slow(raw: bytes, pos: int):
    tail = elements_after(raw, pos)
    return None if tail is None else (tail[0], tail[1], [json.loads(raw[a:b]) for a, b in tail[0]])


_MSG = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20)
    | st.sampled_from(["]", '],"temperature":1,"system":[{"ty', "\\", '"', "\u2028\u0000"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MSG, min_size=1, max_size=3), st.lists(_MSG, max_size=4))
def test_parsed_tail_agrees_with_scanning_or_says_it_cannot(head, tail):
    raw, pos = _body(head, tail)
    fast = parsed_tail(raw, pos, _MARKER)
    slow = _slow(raw, pos)
    assert slow is not None
    if fast is not None:  # (None only when the marker occurs inside the tail)
        assert fast == slow
    else:
        assert _MARKER in raw[pos:raw.rindex(_MARKER)]


@pytest.mark.parametrize("tail_bytes", [
    b',{"a":1, "b":2}',  # not compact: the re-encoding differs
    b',{"a":1,"a":2}',  # a duplicate key (parsers keep the last)
    b',{"a":1e5}',  # a number spelled another way
    rb',{"a":"\u0041"}',  # an escape compact encoders would not write
    rb',{"a":"\ud800"}',  # a lone surrogate (orjson refuses it)
    b',{"t":[1],"temperature":1,"system":[{"ty":1}]}',  # the marker at another level
    b' ,{"a":1}',  # whitespace before the comma
])
def test_parsed_tail_refuses_what_it_cannot_prove(tail_bytes):
    raw = b'{"messages":[{"x":0}' + tail_bytes + _AFTER
    pos = len(b'{"messages":[{"x":0}')
    assert parsed_tail(raw, pos, _MARKER) is None
    assert _slow(raw, pos) is not None  # the scan still reads it


def test_parsed_tail_with_a_marker_that_is_gone_or_not_a_bracket():
    raw, pos = _body([{"a": 1}], [{"b": 2}])
    assert parsed_tail(raw, pos, b'],"temperature":2') is None  # the old ending is not there
    assert parsed_tail(raw, pos, b',"temperature":1') is None
    assert parsed_tail(raw, pos, _MARKER) == _slow(raw, pos)
    empty, at = _body([{"a": 1}], [])
    assert parsed_tail(empty, at, _MARKER) == ([], at + 1, []) == _slow(empty, at)


def test_locate_fast_within_one_message_counts_only_its_bytes():
    raw = b'[{"content":"out"},{"content":"out"},{"content":"other"}]'
    second = (raw.index(b"},{") + 2, raw.index(b"},{", 20) + 1)
    assert locate_fast(raw, {(0, "content"): "out"}) is None  # twice in the whole array
    found = locate_fast(raw, {(0, "content"): "out"}, *second)
    assert found == {(0, "content"): (second[0] + 11, second[0] + 16)}
    assert raw[slice(*found[(0, "content")])] == b'"out"'
    assert locate_fast(raw, {(0, "content"): "other"}, *second) is None  # not in this one


@settings(max_examples=300, deadline=None)
@given(st.lists(_MSG, max_size=5), st.sampled_from([(",", ":"), (", ", ": ")]),
       st.booleans())
def test_array_elements_from_the_parsed_array_agrees_with_scanning(msgs, seps, later_key):
    doc = {"model": "m", "messages": msgs, "system": "s"}
    raw = json.dumps(doc, separators=seps, ensure_ascii=False).encode()
    if later_key:  # a second "messages" key: parsers keep the last; both ways refuse
        raw = raw[:-1] + b',"messages":[]}'
    assert array_elements(raw, "messages", json.loads(raw)["messages"] if not later_key
                          else msgs) == array_elements(raw, "messages")
