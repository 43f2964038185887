"""Slices of a kept original: what `/ccr/<handle>?...` returns, and every way to ask wrongly."""

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headroom_core.retrieval import Slice, SliceError, apply, parse

TEXT = "".join(f"line {i}\n" for i in range(1, 31))


def get(query: str, text: str = TEXT) -> str:
    return apply(text, parse(query))


def test_no_query_is_the_whole_original_byte_for_byte():
    assert get("") == TEXT
    assert apply("no newline at end", parse("")) == "no newline at end"


def test_lines_are_one_based_and_inclusive():
    assert get("lines=3-5") == "line 3\nline 4\nline 5\n"
    assert get("lines=30-30") == get("lines=30") == "line 30\n"
    assert get("lines=29-99") == "line 29\nline 30\n"  # past the end: what exists
    assert get("lines=40-50") == ""


def test_head_and_tail():
    assert get("head=2") == "line 1\nline 2\n"
    assert get("tail=2") == "line 29\nline 30\n"
    assert get("head=0") == get("tail=0") == ""
    assert get("tail=999") == TEXT


def test_grep_prefixes_line_numbers_and_groups_context():
    assert get("grep=line 1[05]$&context=1") == (
        "9-line 9\n10:line 10\n11-line 11\n--\n14-line 14\n15:line 15\n16-line 16\n")
    assert get("grep=^line 2$") == "2:line 2\n"
    assert get("grep=nothing") == ""


def test_grep_keeps_a_plus_and_decodes_percent_escapes():
    text = "aab\nab\nb\n"
    assert apply(text, parse("grep=a+b")) == "1:aab\n2:ab\n"  # not form-decoded to "a b"
    assert apply(text, parse("grep=%5Eab%24")) == "2:ab\n"


def test_overlapping_context_is_shown_once():
    assert get("grep=line [34]$&context=2") == "".join(
        f"{i}{':' if i in (3, 4) else '-'}line {i}\n" for i in range(1, 7))


@pytest.mark.parametrize("query,why", [
    ("lines=9-3", "before the start"),
    ("lines=0-3", "from 1"),
    ("lines=a-b", "whole number"),
    ("lines=-3", "whole number"),
    ("head=-1", "whole number"),
    ("tail=1e9", "whole number"),
    ("grep=(", "invalid regular expression"),
    ("grep=", "needs a pattern"),
    ("grep=x&context=100000", "whole number from 0 to 1000"),
    ("context=2", "goes with grep"),
    ("head=1&tail=1", "one slice at a time"),
    ("lines=1&lines=2", "given twice"),
    ("foo=1", "unknown parameter"),
    ("grep=" + "a" * 1001, "longer than 1000"),
])
def test_bad_requests_say_why(query, why):
    with pytest.raises(SliceError) as e:
        parse(query)
    assert why in str(e.value)


@pytest.mark.parametrize("pattern,refused", [
    ("(%3F:(%3F:a{1000}){1000}){4}", True),  # gigabytes to compile: refused before compiling
    ("(%3F:a{1000}){1000}", True),
    ("a{20000}", True),
    ("x{,5000}{,5000}", True),
    ("(a{100}b){101}", True),
    (r"\\{1000}{1000}", True),  # an escaped backslash, then a count of it
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", False),  # 6144
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", False),
    (r"\{1000000}", False),  # an escaped brace is no count
    ("a{3,}b{2}", False),
])
def test_counted_repeats_that_multiply_past_the_bound_are_refused_before_compiling(pattern,
                                                                                  refused):
    started = time.monotonic()
    if refused:
        with pytest.raises(SliceError, match="too complex"):
            parse("grep=" + pattern)
    else:
        assert parse("grep=" + pattern).kind == "grep"
    assert time.monotonic() - started < 1.0


def test_a_catastrophic_regex_is_stopped_in_bounded_time():
    text = "a" * 5000 + "!\n" + TEXT
    started = time.monotonic()
    with pytest.raises(SliceError) as e:
        apply(text, parse("grep=(a|a)%2B$"))
    assert "took longer" in str(e.value) and time.monotonic() - started < 5.0


def test_many_lines_stop_at_the_total_time_bound_too():
    # Each line is cheap; together they are not: the bound is on the whole grep.
    text = "".join(f"{'b' * 24}\n" for _ in range(400_000))
    started = time.monotonic()
    with pytest.raises(SliceError) as e:
        apply(text, parse("grep=(b|b)%2Bc"))
    assert "took longer" in str(e.value)
    assert time.monotonic() - started < 5.0  # generous: a loaded machine is slow, not unbounded


@given(st.text(alphabet="ab\n", max_size=200), st.integers(1, 40), st.integers(0, 40))
def test_lines_slice_matches_splitlines(text, start, length):
    end = start + length
    want = "".join(line + "\n" for line in text.splitlines()[start - 1:end])
    if "\r" not in text:
        assert apply(text, Slice("lines", start, end)) == want
