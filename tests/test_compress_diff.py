import difflib
import re
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.compress import CompressPolicy
from headroom_core.compress.diff import compress_diff, trim_hunk
from headroom_core.compress.marker import is_marked

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://headroom.local/ccr/diff1"
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_hunks(old: list[str], lines: list[str]) -> list[str]:
    """Apply one file's hunks strictly: every header must match its body and the old file."""
    new: list[str] = []
    cursor = 0  # next old line (0-based) not yet copied
    i = 0
    while i < len(lines):
        m = HUNK.match(lines[i])
        assert m, lines[i]
        a, b = int(m[1]), 1 if m[2] is None else int(m[2])
        c, d = int(m[3]), 1 if m[4] is None else int(m[4])
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith("@@ "):
            body.append(lines[i])
            i += 1
        old_side = [t[1:] for t in body if t[:1] in " -"]
        new_side = [t[1:] for t in body if t[:1] in " +"]
        assert (len(old_side), len(new_side)) == (b, d), lines
        start = a - 1 if b else a  # 0-based index of the first old line
        assert start >= cursor
        assert old[start:start + b] == old_side
        new.extend(old[cursor:start])
        assert len(new) + 1 == (c if d else c + 1)  # the new-side header number is right too
        new.extend(new_side)
        cursor = start + b
    new.extend(old[cursor:])
    return new


def split_files(diff_text: str) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    current = None
    for line in diff_text.split("\n"):
        if line.startswith("diff --git "):
            current = line.split(" b/", 1)[1]
            files[current] = []
        elif current and (line.startswith("@@ ") or (files[current] and line[:1] in " +-\\")):
            if line.startswith(("--- ", "+++ ")) and not files[current]:
                continue
            files[current].append(line)
    return files


def test_12_file_diff_keeps_every_header_and_change_and_still_applies():
    s = corpus.git_diff(files=12, target_lines=3000)
    assert len(s.text.split("\n")) >= 3000
    rw = compress_diff(s.text, CompressPolicy(), REF)
    assert rw is not None and is_marked(rw.text)
    in_lines = s.text.rstrip("\n").split("\n")
    out_lines = rw.text.split("\n")[:-1]

    headers = [ln for ln in in_lines if ln.startswith(("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file"))]
    assert [ln for ln in out_lines if ln.startswith(("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file"))] == headers
    changes = [ln for ln in in_lines if ln[:1] in "+-" and not ln.startswith(("--- ", "+++ "))]
    assert [ln for ln in out_lines if ln[:1] in "+-" and not ln.startswith(("--- ", "+++ "))] == changes

    files = split_files(rw.text)
    assert len(files) == 12
    for path, hunk_lines in files.items():
        assert apply_hunks(s.extra["old"][path], hunk_lines) == s.extra["new"][path], path

    mark = rw.text.rsplit("\n", 1)[1]
    ctx_in = sum(1 for ln in in_lines if ln.startswith(" "))
    ctx_out = sum(1 for ln in out_lines if ln.startswith(" "))
    m = re.search(r"; (\d+) of (\d+) context lines omitted \(1 kept per side\); full output: curl -s '(.*)' \(slices: [^)]*\)\]$", mark)
    assert m and int(m[2].replace(",", "")) == ctx_in
    assert int(m[1].replace(",", "")) == ctx_in - ctx_out
    assert mark.startswith("[headroom: kept every header and all ") and " lines of 12 files (@@ recomputed); " in mark
    assert m[3] == REF


def test_context_is_at_most_k_lines_around_changes():
    s = corpus.git_diff(files=4, target_lines=800, seed=31, context=5)
    for k in (0, 1, 2):
        rw = compress_diff(s.text, CompressPolicy(diff_context_lines=k), REF)
        run = 0
        lines = rw.text.split("\n")
        for ln in lines:
            if ln.startswith(" "):
                run += 1
                assert run <= 2 * k
            else:
                run = 0
        for path, hunk_lines in split_files(rw.text).items():
            assert apply_hunks(s.extra["old"][path], hunk_lines) == s.extra["new"][path]


def test_pure_insertion_with_zero_context_uses_the_empty_side_convention():
    body = [" a", " b", "+x", "+y", " c", " d"]
    out, dropped, hunks = trim_hunk(10, 4, 10, 6, " def f():", body, 0)
    assert out == ["@@ -11,0 +12,2 @@ def f():", "+x", "+y"]
    assert (dropped, hunks) == (4, 1)


def test_split_hunk_headers_and_section_text():
    body = [" c1", "-old1", "+new1"] + [f" ctx{i}" for i in range(10)] + ["-old2", " c9"]
    out, dropped, hunks = trim_hunk(1, 14, 1, 13, " class A:", body, 1)
    assert hunks == 2 and dropped == 8
    assert out[0] == "@@ -1,3 +1,3 @@ class A:"
    assert out[5] == "@@ -12,3 +12,2 @@"
    old = ["c1", "old1"] + [f"ctx{i}" for i in range(10)] + ["old2", "c9"]
    new = ["c1", "new1"] + [f"ctx{i}" for i in range(10)] + ["c9"]
    assert apply_hunks(old, out) == new


def test_no_newline_marker_follows_its_line():
    text = (
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,8 +1,8 @@\n"
        + "".join(f" l{i}\n" for i in range(1, 8))
        + "-end\n\\ No newline at end of file\n+END\n\\ No newline at end of file\n"
    )
    rw = compress_diff(text, CompressPolicy(), REF)
    assert "-end\n\\ No newline at end of file\n+END\n\\ No newline at end of file" in rw.text
    assert "@@ -7,2 +7,2 @@" in rw.text


def test_malformed_hunks_are_kept_verbatim():
    text = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,50 +1,50 @@\n" + "".join(f" l{i}\n" for i in range(20)) + "-x\n+y\n"
    assert compress_diff(text, CompressPolicy(), REF) is None  # counts disagree: nothing trimmed


def test_nothing_to_trim_returns_none():
    s = corpus.git_diff(files=3, target_lines=300, seed=32, context=0)
    assert compress_diff(s.text, CompressPolicy(diff_context_lines=0), REF) is None


lines_st = st.lists(st.sampled_from(["a", "b", "c", "d", "e", ""]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(lines_st, lines_st, st.integers(0, 6), st.integers(0, 3))
def test_trimmed_diffs_always_apply(old, new, n, k):
    body = list(difflib.unified_diff(old, new, "a/f", "b/f", n=n, lineterm=""))
    text = "diff --git a/f b/f\n" + "\n".join(body) + "\n"
    rw = compress_diff(text, CompressPolicy(diff_context_lines=k), REF)
    out = text if rw is None else rw.text.rsplit("\n", 1)[0]
    hunks = [ln for ln in out.split("\n")[1:] if ln and not ln.startswith(("--- ", "+++ "))]
    if old != new:
        assert apply_hunks(old, hunks) == new
    in_changes = [ln for ln in body if ln[:1] in "+-" and not ln.startswith(("--- ", "+++ "))]
    assert [ln for ln in hunks if ln[:1] in "+-"] == in_changes
