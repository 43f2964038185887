import re
import sys
from collections import Counter
from pathlib import Path

from headroom_core.compress import CompressPolicy
from headroom_core.compress.marker import is_marked
from headroom_core.compress.search import MATCH, compress_search, parse

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://headroom.local/ccr/search1"
POLICY = CompressPolicy()
NOTE = re.compile(r"^… ([\d,]+) (?:more )?match(?:es)? in (.+) omitted$")
MARK = re.compile(
    r"^\[headroom: kept (\d+) of (\d+) match(?:es)? \(up to (\d+) per file\), all (\d+) files? named; "
    r"(\d+) match(?:es)?(?: and (\d+) context lines?)? omitted; full output: curl -s '(.*)' \(slices: [^)]*\)\]$"
)


def _int(s):
    return int(s.replace(",", "")) if s else 0


def check(sample, out: str, heading: bool = False):
    """Every file named, kept lines verbatim and in order, per-file counts add up."""
    in_lines = sample.text.rstrip("\n").split("\n")
    body, _, mark = out.rpartition("\n")
    m = MARK.match(mark)
    assert m, mark
    kept, total, per_file, nfiles, dropped = map(_int, m.groups()[:5])
    assert m[7] == REF
    entries = parse(sample.text)
    truth = Counter(e.path for e in entries if e.kind == MATCH)
    assert total == sum(truth.values()) and nfiles == len(truth) == len(sample.files)
    assert kept + dropped == total

    shown: Counter = Counter()
    noted: Counter = Counter()
    pos = 0
    current = None
    for line in body.split("\n"):
        if n := NOTE.match(line):
            noted[n[2]] += _int(n[1])
            continue
        if line == "--" or line == "":
            continue
        # a verbatim input line, found further down the input
        pos = in_lines.index(line, pos) + 1
        if heading and line in truth:
            current = line
        elif heading:
            if re.match(r"^\d+:", line):
                shown[current] += 1
        else:
            path = line.split(":", 1)[0]
            if path in truth and re.match(rf"^{re.escape(path)}:\d+:", line):
                shown[path] += 1
    assert sum(shown.values()) == kept
    for path in truth:
        assert shown[path] + noted[path] == truth[path], path
        assert shown[path] <= per_file
        named = path in body  # heading line, match line or note
        assert named, path
    return {"kept": kept, "per_file": per_file, "shown": shown}


def test_ripgrep_60_files_every_file_named_fair_share_per_file():
    s = corpus.ripgrep(files=60, per_file=20)
    rw = compress_search(s.text, POLICY, REF)
    assert rw is not None and is_marked(rw.text)
    stats = check(s, rw.text)
    # 150 budget over 60 files: everyone gets 2, the first 30 get a third
    assert stats["kept"] == 150
    assert sorted(set(stats["shown"].values())) == [2, 3]


def test_heading_mode_groups():
    s = corpus.ripgrep(files=40, per_file=12, heading=True, seed=21)
    rw = compress_search(s.text, POLICY, REF)
    assert rw is not None
    check(s, rw.text, heading=True)
    for path in s.files:
        assert path in rw.text.split("\n")  # the heading line itself survives


def test_context_lines_stay_only_with_kept_matches():
    s = corpus.ripgrep(files=20, per_file=15, context=2, seed=22)
    rw = compress_search(s.text, POLICY, REF)
    assert rw is not None
    check(s, rw.text)
    lines = rw.text.split("\n")
    assert "--" in lines
    assert lines[0] != "--" and lines[-2] != "--"
    assert all(not (a == b == "--") for a, b in zip(lines, lines[1:], strict=False))
    # a kept context line belongs to a file whose matches are (partly) shown
    for ln in lines:
        m = re.match(r"^(.+\.py)-(\d+)-", ln)
        if m:
            assert any(x.startswith(m[1] + ":") for x in lines)


def test_more_files_than_budget_still_names_every_file():
    s = corpus.ripgrep(files=300, per_file=3, seed=23)
    rw = compress_search(s.text, POLICY, REF)
    assert rw is not None
    stats = check(s, rw.text)
    assert stats["kept"] == POLICY.search_max_total
    assert stats["per_file"] == 1


def test_per_file_cap_is_respected_when_budget_is_plenty():
    s = corpus.ripgrep(files=3, per_file=40, seed=24)
    rw = compress_search(s.text, CompressPolicy(search_max_per_file=4, search_max_total=1000), REF)
    stats = check(s, rw.text)
    assert set(stats["shown"].values()) == {4}


def test_nothing_to_omit_returns_none():
    s = corpus.ripgrep(files=10, per_file=3, seed=25)
    assert compress_search(s.text, POLICY, REF) is None


def test_windows_paths_and_columns():
    lines = [f"C:\\src\\app\\mod{i % 3}.cs:{i + 1}:{i % 7 + 1}:    var x{i} = Load();" for i in range(60)]
    text = "\n".join(lines)
    rw = compress_search(text, CompressPolicy(search_max_per_file=2), REF)
    assert rw is not None
    for i in range(3):
        assert f"C:\\src\\app\\mod{i}.cs" in rw.text
    assert "kept 6 of 60 matches" in rw.text


def test_other_lines_are_kept_verbatim():
    s = corpus.ripgrep(files=8, per_file=10, seed=26)
    text = s.text + "\n5 matches\n80 matched lines\n8 files contained matches\n"
    rw = compress_search(text, POLICY, REF)
    assert "80 matched lines\n8 files contained matches" in rw.text
