import json
import sys
from pathlib import Path

import orjson
import pytest

from headroom_core.compress.detect import (
    Envelope,
    detect,
    find_object_array,
    parse_json,
    unwrap,
)

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402


@pytest.mark.parametrize(
    "sample, kind",
    [
        (corpus.pytest_log(), "log"),
        (corpus.pytest_log(verbose=False), "log"),
        (corpus.cargo_build(), "log"),
        (corpus.npm_install(), "log"),
        (corpus.service_log(), "log"),
        (corpus.ripgrep(), "search"),
        (corpus.ripgrep(heading=True), "search"),
        (corpus.ripgrep(context=2), "search"),
        (corpus.git_diff(), "diff"),
        (corpus.github_runs(50), "json"),
        (corpus.flat_records(), "json"),
        (corpus.find_listing(2000), "listing"),
        (corpus.find_listing(2000, dirs_only=True), "listing"),
        (corpus.ls_laR_listing(1000), "listing"),
        (corpus.pytest_json_report(), "json"),
        (corpus.bandit_report(), "json"),
        *((corpus.Sample(corpus.read_real(name)), kind) for name, kind in corpus.REAL_KINDS.items()),
    ],
)
def test_generated_outputs_are_recognised(sample, kind):
    assert detect(sample.text).kind == kind


def test_json_finds_the_array_of_objects_and_its_path():
    items = [{"id": i} for i in range(5)]
    assert detect(json.dumps(items)).json_path == ()
    d = detect(json.dumps({"total": 5, "items": items}))
    assert (d.kind, d.json_path) == ("json", ("items",))
    d = detect(json.dumps({"data": {"repo": {"issues": {"nodes": items}}}, "small": [{"a": 1}]}))
    assert d.json_path == ("data", "repo", "issues", "nodes")
    # the largest array wins
    doc = {"a": [{"x": 1}] * 4, "b": [{"y": 1}] * 9}
    assert find_object_array(doc) == ("b",)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(list(range(100))),  # scalars
        json.dumps([{"a": 1}, {"a": 2}]),  # too few items
        json.dumps({"config": {"a": 1, "b": [1, 2, 3]}}),  # no array of objects
        json.dumps([{"a": 1}, 2, {"b": 3}]),  # mixed
        '{"truncated": [{"a": 1}, {"a": ',  # invalid
    ],
)
def test_other_json_is_text(text):
    assert detect(text).kind == "text"


def test_json_numbers_beyond_64_bits_stay_exact():
    ok, value = parse_json(json.dumps([{"n": 2**70}, {"n": 1}, {"n": 2}]))
    assert ok and value[0]["n"] == 2**70 and type(value[0]["n"]) is int


def test_json_with_lone_surrogate_escapes_parses():
    ok, value = parse_json('[{"s": "\\ud800"}, {"s": "b"}, {"s": "c"}]')
    assert ok and value[0]["s"] == "\ud800"


def test_compiler_diagnostics_are_a_log_not_search_results():
    lines = []
    for i in range(30):
        lines += [
            f"src/mod{i}.c:{i + 3}:5: error: implicit declaration of function 'foo{i}'",
            f"    {i + 3} |     foo{i}();",
            "      |     ^~~~",
        ]
    assert detect("\n".join(lines)).kind == "log"


def test_go_log_lines_with_file_positions_are_not_search_results():
    text = "\n".join(f"2024/01/02 12:00:{i % 60:02d} main.go:{i}: handled request {i}" for i in range(50))
    assert detect(text).kind != "search"


def test_numbered_file_content_from_a_read_tool_is_text():
    # Claude Code's Read tool numbers lines; even a log file read that way is file content.
    log = corpus.service_log(200).text.splitlines()
    text = "\n".join(f"{i + 1:6}→{ln}" for i, ln in enumerate(log))
    assert detect(text).kind == "text"


def _source_and_prose_files():
    import httpx
    import hypothesis
    import mitmproxy

    roots = [Path(m.__file__).parent for m in (mitmproxy, hypothesis, httpx)]
    files = [p for r in roots for p in sorted(r.rglob("*.py"))]
    files += sorted(Path(json.__file__).parents[1].glob("*.py"))  # the stdlib
    files += sorted(Path(orjson.__file__).parents[1].glob("*.dist-info/METADATA"))  # markdown
    return [f for f in files if f.stat().st_size >= 512]


def test_source_code_and_prose_are_never_classified():
    files = _source_and_prose_files()
    assert len(files) > 500
    wrong = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        kind = detect(text).kind
        if kind != "text":
            wrong.append((str(f), kind))
    assert wrong == []


def test_markdown_blockquotes_and_prose_about_errors_are_text():
    text = "\n".join(
        [
            "# Troubleshooting",
            "",
            "If the build fails with an error, check the following:",
            "",
            ">    1. Set _resolved_ to the result of parsing the specifier.",
            ">       1. Throw an _Invalid Module Specifier_ error.",
            "",
            "- A warning is printed when the cache is stale.",
            "- Errors are reported on stderr.",
        ]
        * 20
    )
    assert detect(text).kind == "text"


# Codex envelopes --------------------------------------------------------------------------


def test_codex_structured_json_envelope():
    inner = corpus.pytest_log().text
    text = json.dumps({"output": inner, "metadata": {"exit_code": 1, "duration_seconds": 12.3}})
    env = unwrap(text)
    assert env.wrapper == "codex-json" and env.inner == inner
    rebuilt = json.loads(env.rewrap("short"))
    assert rebuilt == {"output": "short", "metadata": {"exit_code": 1, "duration_seconds": 12.3}}
    assert list(rebuilt) == ["output", "metadata"]


@pytest.mark.parametrize(
    "head",
    [
        "Exit code: 0\nWall time: 1.2 seconds\nOutput:\n",
        "Exit code: 101\nWall time: 0 seconds\nTotal output lines: 4096\nOutput:\n",
        "Chunk ID: 3f2a\nWall time: 2.5000 seconds\nProcess exited with code 1\nOriginal token count: 9000\nOutput:\n",
        "Wall time: 0.5000 seconds\nProcess running with session ID 7\nOutput:\n",
    ],
)
def test_codex_text_headers(head):
    inner = corpus.cargo_build().text
    env = unwrap(head + inner)
    assert env == Envelope(inner, "codex-text", head=head)
    assert env.rewrap(inner) == head + inner
    assert detect(env.inner).kind == "log"


def test_plain_text_is_its_own_envelope():
    for text in ("hello", '{"output": 3}', '{"output": "x"}', "Exit code: zero\nOutput:\nx"):
        env = unwrap(text)
        assert env.wrapper == "none" and env.inner == text and env.rewrap("y") == "y"


def test_detect_never_raises_on_odd_input():
    for text in ("", " ", "\x00" * 10, "[" * 5000, "{" * 100000, "\ud800\n" * 100, "@@ -1 +1 @@\n" * 3):
        assert detect(text).kind in ("json", "log", "search", "diff", "text")
