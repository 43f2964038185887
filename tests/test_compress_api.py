"""The `headroom_core.compress` contract: actions, thresholds, determinism, idempotence, safety."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core.compress import (
    DEFAULT_MIN_BYTES,
    CompressPolicy,
    Outcome,
    compress,
    count_tokens,
)
from headroom_core.compress.marker import SLICES, is_marked

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://headroom.local/ccr/3f9a0c1d2e"
POLICY = CompressPolicy()
ACTIONS = {"compressed", "below-threshold", "rejected-not-smaller", "unfaithful", "unchanged-type",
           "already-compressed"}
KINDS = {"json", "log", "search", "diff", "listing", "text"}

SAMPLES = {
    "pytest": (corpus.pytest_log(), "log"),
    "cargo": (corpus.cargo_build(), "log"),
    "npm": (corpus.npm_install(), "log"),
    "rg": (corpus.ripgrep(), "search"),
    "rg-heading": (corpus.ripgrep(heading=True), "search"),
    "diff": (corpus.git_diff(), "diff"),
    "runs": (corpus.github_runs(500, 3), "json"),
    "flat": (corpus.flat_records(60), "json"),
    "find": (corpus.find_listing(3000), "listing"),
    "ls-laR": (corpus.ls_laR_listing(2000), "listing"),
}


def test_default_policy():
    p = CompressPolicy()
    assert p.min_bytes == {"json": 1024, "log": 512, "search": 1024, "diff": 1024, "listing": 1024} == DEFAULT_MIN_BYTES
    assert (p.min_saving_ratio, p.min_saving_tokens) == (0.10, 200)
    assert p.min_bytes is not CompressPolicy().min_bytes  # no shared mutable default
    assert CompressPolicy(min_bytes={"log": 10}).min_bytes_for("diff") == 1024
    assert hash(p) == hash(CompressPolicy()) and p == CompressPolicy()
    assert CompressPolicy(log_head_lines=1) != p


@pytest.mark.parametrize("name", list(SAMPLES))
def test_generated_outputs_are_compressed_honestly(name):
    sample, kind = SAMPLES[name]
    out = compress(sample.text, policy=POLICY, retrieval_ref=REF)
    assert (out.action, out.kind) == ("compressed", kind)
    assert out.tokens_before == count_tokens(sample.text)
    assert out.tokens_after == count_tokens(out.text)
    assert out.tokens_after <= out.tokens_before * 0.9 and out.tokens_before - out.tokens_after >= 200
    last = out.text.rsplit("\n", 1)[-1]
    assert last.startswith("[headroom: ") and last.endswith(f"; full output: curl -s '{REF}' {SLICES}]")
    assert out.omitted or "lossless" in last


@pytest.mark.parametrize("name", list(SAMPLES))
def test_compressing_twice_changes_nothing(name):
    sample, kind = SAMPLES[name]
    first = compress(sample.text, policy=POLICY, retrieval_ref=REF)
    again = compress(first.text, policy=POLICY, retrieval_ref="http://headroom.local/ccr/other")
    assert again == Outcome("already-compressed", kind, None, None, None, "")


def test_below_threshold():
    text = "\n".join(corpus.cargo_build(crates=2, warnings=0).text.split("\n")[:6])
    assert len(text.encode()) < 512
    out = compress(text, policy=POLICY, retrieval_ref=REF)
    assert out == Outcome("below-threshold", "log", None, None, None, "")
    big = CompressPolicy(min_bytes={"json": 10**9})
    out = compress(SAMPLES["flat"][0].text, policy=big, retrieval_ref=REF)
    assert (out.action, out.kind) == ("below-threshold", "json")


def test_rejected_when_the_saving_is_too_small():
    # 26 files x 6 matches: each file loses one match but gains an omission note, so the
    # rewrite saves under 10% and the tokenizer rejects it.
    sample = corpus.ripgrep(files=26, per_file=6, seed=53)
    out = compress(sample.text, policy=POLICY, retrieval_ref=REF)
    assert (out.action, out.kind, out.text) == ("rejected-not-smaller", "search", None)
    assert out.tokens_before == count_tokens(sample.text)
    assert out.tokens_before * 0.9 < out.tokens_after < out.tokens_before
    # the same rewrite is accepted under a laxer policy
    lax = CompressPolicy(min_saving_ratio=0.05, min_saving_tokens=1)
    assert compress(sample.text, policy=lax, retrieval_ref=REF).action == "compressed"


def test_rejected_when_nothing_can_be_dropped():
    sample = corpus.git_diff(files=4, target_lines=800, seed=52, context=0)
    out = compress(sample.text, policy=CompressPolicy(diff_context_lines=0), retrieval_ref=REF)
    assert out.action == "rejected-not-smaller" and out.text is None
    assert out.tokens_before == out.tokens_after == count_tokens(sample.text)


def test_source_code_and_prose_are_unchanged():
    for path in (ROOT / "headroom_core" / "encoding.py", ROOT / "docs" / "architecture.md"):
        out = compress(path.read_text(), policy=POLICY, retrieval_ref=REF)
        assert out == Outcome("unchanged-type", "text", None, None, None, "")


@pytest.mark.parametrize("text", ["", "   \n", None, 42, b"bytes"])
def test_odd_inputs_are_left_alone(text):
    out = compress(text, policy=POLICY, retrieval_ref=REF)  # type: ignore[arg-type]
    assert out.action == "unchanged-type" and out.text is None


def test_codex_json_envelope_keeps_the_wrapper_and_compresses_the_output():
    log = corpus.pytest_log().text
    meta = {"exit_code": 1, "duration_seconds": 12.3}
    text = json.dumps({"output": log, "metadata": meta})
    out = compress(text, policy=POLICY, retrieval_ref=REF)
    assert (out.action, out.kind) == ("compressed", "log")
    doc = json.loads(out.text)
    assert list(doc) == ["output", "metadata"] and doc["metadata"] == meta
    assert is_marked(doc["output"]) and REF in doc["output"]
    assert out.tokens_before == count_tokens(text) and out.tokens_after == count_tokens(out.text)
    assert compress(out.text, policy=POLICY, retrieval_ref=REF).action == "already-compressed"


def test_codex_text_header_is_kept_verbatim():
    head = "Exit code: 101\nWall time: 3.2 seconds\nOutput:\n"
    out = compress(head + corpus.cargo_build().text, policy=POLICY, retrieval_ref=REF)
    assert out.action == "compressed" and out.text.startswith(head)
    assert "error[E0308]: mismatched types" in out.text
    assert compress(out.text, policy=POLICY, retrieval_ref=REF).action == "already-compressed"


def test_codex_envelope_around_json_search_and_diff():
    for name in ("runs", "rg", "diff"):
        sample, kind = SAMPLES[name]
        text = json.dumps({"output": sample.text, "metadata": {"exit_code": 0, "duration_seconds": 0.4}})
        out = compress(text, policy=POLICY, retrieval_ref=REF)
        assert (out.action, out.kind) == ("compressed", kind)


def test_ref_is_included_verbatim():
    for ref in ("http://headroom.local/ccr/ä b]c", "opaque-123"):
        out = compress(SAMPLES["cargo"][0].text, policy=POLICY, retrieval_ref=ref)
        assert out.text.endswith(f"; full output: curl -s '{ref}' {SLICES}]")


_DIGEST_SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, "tests/data/tool_outputs")
import tool_output_corpus as corpus
from headroom_core.compress import CompressPolicy, compress
h = hashlib.sha256()
for kind, samples in corpus.corpus().items():
    for name, s in samples:
        o = compress(s.text, policy=CompressPolicy(), retrieval_ref="ref")
        h.update(json.dumps([o.action, o.kind, o.text, o.tokens_before, o.tokens_after, o.omitted]).encode())
print(h.hexdigest())
"""


def test_output_bytes_are_identical_across_processes_and_hash_seeds():
    digests = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        digests.add(res.stdout.strip())
    h = hashlib.sha256()
    for samples in corpus.corpus().values():
        for _, s in samples:
            o = compress(s.text, policy=CompressPolicy(), retrieval_ref="ref")
            h.update(json.dumps([o.action, o.kind, o.text, o.tokens_before, o.tokens_after, o.omitted]).encode())
    digests.add(h.hexdigest())
    assert len(digests) == 1


# Never raises ------------------------------------------------------------------------------

EAGER = CompressPolicy(
    min_bytes={"json": 0, "log": 0, "search": 0, "diff": 0, "listing": 0}, min_saving_ratio=0.0, min_saving_tokens=0,
    log_head_lines=1, log_tail_lines=1, search_max_per_file=1, search_max_total=2, diff_context_lines=0,
    json_lossless_max_tokens=0,
)


def _check(text: str, policy: CompressPolicy) -> None:
    out = compress(text, policy=policy, retrieval_ref=REF)
    assert isinstance(out, Outcome) and out.action in ACTIONS and out.kind in KINDS
    if out.action == "compressed":
        assert isinstance(out.text, str) and REF in out.text
        assert compress(out.text, policy=policy, retrieval_ref=REF).action == "already-compressed"
    else:
        assert out.text is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_never_raises(text):
    _check(text, EAGER)
    _check(text, POLICY)


LINE = st.one_of(
    st.sampled_from([
        "error: boom", "warning: careful", "Traceback (most recent call last):", "  File \"x.py\", line 1",
        "ValueError: x", "3 failed, 2 passed", "PASSED", "", "--", "@@ -1,2 +1,2 @@", "@@ -0,0 +1 @@",
        "diff --git a/x b/x", "--- a/x", "+++ b/x", " ctx", "+add", "-del", "\\ No newline at end of file",
        "src/a.py:12:hit", "src/b.py:3:4:hit", "src/a.py-13-ctx", "src/a.py", "12:hit", "13-ctx",
        "Exit code: 1", "Output:", "[×3] x", "… 4 lines omitted …", "[headroom: kept 1 of 2 lines; 1 omitted; full output: r]",
        "2024-01-01T00:00:00Z INFO ok", "npm WARN deprecated x", "   Compiling x v1.0.0",
        "./src/a.py", "./src/lib", "src/lib/x.js", "node_modules/a b/c", ".:", "total 8", "./sub:",
        "drwxr-xr-x  2 dev dev 4096 Mar  3 10:12 lib", "-rw-r--r--  1 dev dev 12 Feb 28  2024 a.py",
        "├── src", "│   └── main.py", "└── README", "3 directories, 2 files",
    ]),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE, max_size=60), st.sampled_from(["", "Exit code: 0\nWall time: 1 seconds\nOutput:\n"]))
def test_tool_output_shaped_text_never_raises(lines, head):
    text = head + "\n".join(lines)
    _check(text, EAGER)
    _check(json.dumps({"output": text, "metadata": {"exit_code": 0}}), EAGER)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(["id", "status", "error", "a.b", "n", "x"]), JSON_VALUE), min_size=0, max_size=30),
       st.booleans())
def test_json_arrays_never_raise(items, wrap):
    doc = {"items": items, "total": len(items)} if wrap else items
    _check(json.dumps(doc), EAGER)
