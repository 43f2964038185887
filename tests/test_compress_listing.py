import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core.compress import CompressPolicy, compress
from headroom_core.compress.detect import detect
from headroom_core.compress.listing import compress_listing, dir_key, parse_find, parse_ls, parse_tree
from headroom_core.compress.marker import is_marked, kind_of

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://127.0.0.1:8080/ccr/listing"
POLICY = CompressPolicy()


def dir_lines(out: str) -> dict[str, str]:
    return {k: ln for ln in out.split("\n")[1:-1] if (k := dir_key(ln)) is not None}


def test_find_names_every_directory_and_small_directories_files():
    text = "\n".join([".", "./src", "./src/a.py", "./src/b.py", "./src/lib", "./src/lib/x.js", "./README.md",
                      "./empty", "./docs/guide/intro.md"])
    lst = parse_find(text.split("\n"))
    # find cannot tell an empty directory from a file: "empty" is named in its parent's line
    assert list(lst.dirs) == [".", "./src", "./src/lib", "./docs", "./docs/guide"]
    assert lst.dirs["./src"].files == ["a.py", "b.py"] and lst.dirs["."].files == ["README.md", "empty"]
    rw = compress_listing(text, POLICY, REF)
    lines = dir_lines(rw.text)
    assert lines["./src"] == "./src/: a.py b.py" and lines["."] == "./: README.md empty"
    assert lines["./docs"] == "./docs/" and lines["./docs/guide"] == "./docs/guide/: intro.md"


def test_large_directory_is_counted_by_extension_and_keeps_extensionless_names():
    names = [f"m{i}.js" for i in range(40)] + [f"t{i}.d.ts" for i in range(9)] + ["LICENSE", "bin"]
    text = "\n".join(["pkg", *(f"pkg/{n}" for n in names)])
    rw = compress_listing(text, POLICY, REF)
    assert "pkg/ [51 entries: 40 .js, 9 .ts]: LICENSE bin" in rw.text
    assert rw.text.endswith("]") and is_marked(rw.text) and kind_of(rw.text) == "listing"


def test_find_type_d_keeps_every_leaf_directory_name():
    # Leaves without extensions: directories (find -type d), so none is counted by "extension".
    text = corpus.read_real("find_type_d_node_modules.txt")
    rw = compress_listing(text, POLICY, REF)
    body = rw.text.rsplit("\n", 1)[0]
    lines = dir_lines(rw.text)
    for ln in text.split("\n")[1:]:
        if ln:
            parent, name = ln.rsplit("/", 1)
            assert ln in lines or f" {name}" in lines[parent], ln
    assert "./" not in body.split("\n")  # "node_modules" is the listing's top, not an entry of "."


def test_ls_laR_drops_columns_and_names_every_directory():
    s = corpus.ls_laR_listing(3000)
    rw = compress_listing(s.text, POLICY, REF)
    lines = dir_lines(rw.text)
    assert [d for d in s.extra["dirs"] if d not in lines] == []
    assert "drwx" not in rw.text and "-rw-r--r--" not in rw.text
    assert "current -> releases/v2" in rw.text  # symlinks stay named with their target


def test_ls_la_single_directory():
    text = corpus.read_real("ls_la_site_packages.txt")
    lst = parse_ls(text.split("\n"))
    subdirs = [ln.rsplit(" ", 1)[1] for ln in text.split("\n") if ln.startswith("d")]
    assert {f"./{d}" for d in subdirs if d not in (".", "..")} <= set(lst.dirs)


def test_tree_output_and_its_summary_line():
    text = "\n".join([".", "├── README", "├── src", "│   ├── a.py", "│   └── lib", "│       └── b.py",
                      "└── tests", "    └── test_a.py", "", "4 directories, 4 files"])
    lst = parse_tree(text.split("\n"))
    assert list(lst.dirs) == [".", "./src", "./src/lib", "./tests"]
    assert lst.other == ["4 directories, 4 files"]
    real = corpus.read_real("tree_webpack.txt")
    rw = compress_listing(real, POLICY, REF)
    assert real.rstrip("\n").rsplit("\n", 1)[1] in rw.text.split("\n")  # "N directories, M files"


def test_find_errors_stay_verbatim():
    s = corpus.find_listing(3000, seed=5)
    text = s.text + "find: './node_modules/.cache': Permission denied\n"
    out = compress(text, policy=POLICY, retrieval_ref=REF)
    assert out.action == "compressed" and "find: './node_modules/.cache': Permission denied" in out.text


@pytest.mark.parametrize("name", ["find_node_modules.txt.gz", "find_type_d_node_modules.txt", "find_site_packages.txt",
                                  "ls_laR_eslint.txt", "ls_la_site_packages.txt", "tree_webpack.txt"])
def test_real_listings_are_detected(name):
    assert detect(corpus.read_real(name)).kind == "listing"


def test_large_listing_saves_at_least_60_percent():
    s = corpus.find_listing(20000)
    out = compress(s.text, policy=POLICY, retrieval_ref=REF)
    assert out.action == "compressed" and out.tokens_after <= 0.4 * out.tokens_before
    lines = dir_lines(out.text)
    for d in s.extra["dirs"]:  # its own line, or (an empty one, which find shows as a leaf) named by its parent
        parent, name = d.rsplit("/", 1) if "/" in d else (".", d)
        assert d in lines or f" {name}" in lines[parent], d


@pytest.mark.parametrize("text", [
    "\n".join(f"https://example.com/a/{i}" for i in range(50)),  # URLs are not paths
    "\n".join(f"see the docs/guide for step {i}" for i in range(50)),  # prose
    "\n".join(f"{i}/{i + 1}" for i in range(50)),  # fractions
])
def test_other_text_is_not_a_listing(text):
    assert detect(text).kind != "listing"


NAME = st.text(alphabet="abcdefghij_.-", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(NAME, min_size=1, max_size=4), min_size=1, max_size=60), st.integers(1, 15))
def test_every_directory_of_any_find_output_is_named(paths, max_names):
    lines = sorted({"./" + "/".join(p) for p in paths})
    lst = parse_find(lines)
    rw = compress_listing("\n".join(lines), CompressPolicy(listing_max_names=max_names), REF)
    named = dir_lines(rw.text)
    parents = {ln.rsplit("/", 1)[0] for ln in lines}
    assert parents <= set(named) and set(lst.dirs) == set(named)
    # every entry is either a directory line or named / counted in its parent's line
    total = sum(len(d.files) for d in lst.dirs.values()) + len(lst.dirs)
    assert total >= len(lines)
