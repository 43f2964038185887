from hypothesis import given
from hypothesis import strategies as st

from headroom_core.compress.marker import PREFIX, append, is_marked, kind_of, make, n, plural

REF = "http://headroom.local/ccr/3f9a"


def test_marker_shape_names_what_was_kept_omitted_and_the_ref():
    m = make("kept 40 of 1203 lines (errors, head, tail)", "1163 omitted", REF)
    assert m == (f"[headroom: kept 40 of 1203 lines (errors, head, tail); 1163 omitted; full output: "
                 f"curl -s '{REF}' (slices: ?grep=RE&context=2, ?lines=A-B, ?head=N, ?tail=N)]")


def test_append_puts_the_marker_on_its_own_last_line():
    m = make("k", "o", REF)
    assert append("a\nb", m) == "a\nb\n" + m
    assert append("a\nb\n", m) == "a\nb\n" + m
    assert append("", m) == m


def test_is_marked_only_when_the_marker_ends_the_text():
    m = make("k", "o", REF)
    assert is_marked("body\n" + m)
    assert is_marked("body\n" + m + "\n  \n")
    assert is_marked(m)
    assert not is_marked(m + "\nmore output")
    assert not is_marked("body")
    assert not is_marked("src/a.py:3:" + m)  # a search hit quoting a marker is not a marker
    assert not is_marked("x" + m)
    assert not is_marked(PREFIX + "no ref separator]")


def test_refs_with_brackets_or_newlines_are_still_recognised():
    for ref in ("http://h/ccr/a]b", "weird\nref", "[headroom: nested]", ""):
        assert is_marked("line\n" + make("k", "o", ref)), ref


@given(st.text(), st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=80))
def test_anything_appended_with_a_marker_is_marked(body, ref):
    assert is_marked(append(body, make("kept 1 of 2 lines", "1 omitted", ref)))


def test_number_formatting():
    assert n(1203) == "1203" and n(3004) == "3004"  # plain digits a reader can grep
    assert plural(1, "line") == "1 line"
    assert plural(2, "line") == "2 lines"
    assert plural(1200, "match", "matches") == "1200 matches"


def test_kind_of_reads_the_marker():
    assert kind_of("x\n" + make("kept 3 of 1200 lines (errors)", "o", REF)) == "log"
    assert kind_of("x\n" + make("kept 3 of 1200 matches (up to 1 per file)", "o", REF)) == "search"
    assert kind_of("x\n" + make("kept every header and all 9 +/- lines of 2 files", "o", REF)) == "diff"
    assert kind_of("x\n" + make("12 directories all named, 80 files", "o", REF)) == "listing"
    assert kind_of("x\n" + make("kept 5 of 500 items (first, last)", "o", REF)) == "json"
    assert kind_of(make("60 items as a lossless table", "nothing omitted", REF)) == "json"
    assert kind_of("x\n" + make("something else", "o", REF)) == "text"
