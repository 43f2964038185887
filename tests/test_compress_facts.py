"""Every fact survives: independent fact checks (tests/data/tool_outputs/facts.py) over every corpus
sample, real and generated, and cases built to break the promise."""

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core.compress import CompressPolicy, compress
from headroom_core.compress.faithful import missing
from headroom_core.compress.marker import Compressed, make

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import facts as F  # noqa: E402
import tool_output_corpus as corpus  # noqa: E402

REF = "http://127.0.0.1:8080/ccr/0123456789abcdef0123456789abcdef"
POLICY = CompressPolicy()


def _all_samples():
    out = []
    for kind, samples in corpus.corpus().items():
        out += [(kind, name, s) for name, s in samples]
    for kind, samples in corpus.real_samples().items():
        out += [(kind, name, s) for name, s in samples]
    return out


SAMPLES = _all_samples()


def squeeze(text: str, policy: CompressPolicy = POLICY):
    return compress(text, policy=policy, retrieval_ref=REF)


@pytest.mark.parametrize("kind, name, sample", SAMPLES, ids=[f"{k}:{n}" for k, n, _ in SAMPLES])
def test_every_corpus_sample_keeps_every_fact(kind, name, sample):
    out = squeeze(sample.text)
    fs = F.facts(kind, sample.text)
    assert F.lost(fs, out.text) == []
    if out.action == "compressed":
        assert out.kind == kind


def test_the_fact_checker_can_fail():
    # A check that cannot fail proves nothing: drop one fact of each kind and it is noticed.
    s = corpus.pytest_log()
    out = squeeze(s.text).text
    fs = F.facts("log", s.text)
    victim = next(v for w, v in fs if w == "line" and "FAILED" in v)
    assert F.lost(fs, out.replace(victim + "\n", "")) == [("line", victim)]
    d = corpus.git_diff(3, 300, seed=3)
    fs = F.facts("diff", d.text)
    changed = next(ln for ln in d.text.split("\n") if ln.startswith("+") and not ln.startswith("+++"))
    assert F.lost(fs, d.text.replace(changed + "\n", "", 1))


def test_real_samples_are_compressed():
    # Real outputs are not all forwarded unchanged: the compressors earn their keep on them.
    actions = {name: squeeze(s.text).action for _, name, s in SAMPLES if name.endswith((".json", ".gz"))}
    assert set(actions.values()) == {"compressed"}, actions


# JSON -----------------------------------------------------------------------------------------


def _kept_indices(text: str) -> set[int]:
    return {int(ln[1:].split(" ", 1)[0]) for ln in text.split("\n") if ln[:1] == "#" and ln[1:2].isdigit()}


def test_pytest_json_report_keeps_every_failed_test():
    s = corpus.pytest_json_report(tests=400, failures=30)
    out = squeeze(s.text)
    assert out.action == "compressed"
    assert set(s.extra["failed"]) <= _kept_indices(out.text)
    for i in s.extra["failed"]:
        assert s.extra["doc"]["tests"][i]["nodeid"] in out.text
    assert "30 anomalous objects, all kept" in out.text


def test_real_pytest_json_report_keeps_22_failures_and_the_error():
    text = corpus.read_real("pytest_json_report_22_failed.json")
    doc = json.loads(text)
    bad = [i for i, t in enumerate(doc["tests"]) if t["outcome"] != "passed"]
    assert len(bad) >= 23
    out = squeeze(text)
    assert out.action == "compressed" and set(bad) <= _kept_indices(out.text)
    assert "RuntimeError: fixture setup failed: database unavailable" in out.text


def test_nested_collectors_are_digested_not_copied():
    text = corpus.read_real("pytest_json_report_22_failed.json")
    doc = json.loads(text)
    out = squeeze(text).text
    assert "$.collectors[1].result: JSON array of" in out
    enclosing = next(ln for ln in out.split("\n") if ln.startswith("Enclosing object: "))
    assert len(enclosing) < 1500 and doc["tests"][50]["nodeid"] not in enclosing


def test_generated_collectors_keep_the_collection_error():
    s = corpus.pytest_json_report()
    out = squeeze(s.text).text
    assert "$.collectors: JSON array of" in out and "ImportError while importing test module" in out


@pytest.mark.parametrize("name", ["bandit_pytest_8_medium.json", "bandit_pygments.json"])
def test_bandit_keeps_every_medium_and_high_finding(name):
    text = corpus.read_real(name)
    doc = json.loads(text)
    hot = [i for i, r in enumerate(doc["results"]) if r["issue_severity"] in ("MEDIUM", "HIGH")]
    assert len(hot) >= 8
    out = squeeze(text)
    assert out.action == "compressed" and set(hot) <= _kept_indices(out.text)
    assert '"metrics":"<' in out.text  # the per-file metrics map is digested, not copied


def test_generated_bandit_keeps_all_8():
    s = corpus.bandit_report(findings=300, medium_high=8)
    out = squeeze(s.text)
    assert set(s.extra["hot"]) <= _kept_indices(out.text)


def test_ruff_rule_hit_once_is_kept():
    text = corpus.read_real("ruff_requests_select_all.json")
    doc = json.loads(text)
    counts: dict[str, int] = {}
    for r in doc:
        counts[r["code"]] = counts.get(r["code"], 0) + 1
    once = [i for i, r in enumerate(doc) if counts[r["code"]] == 1]
    assert once
    out = squeeze(text)
    assert out.action == "compressed" and set(once) <= _kept_indices(out.text)


def test_npm_problems_are_kept():
    text = corpus.read_real("npm_ls_all_problems.json")
    out = squeeze(text)
    assert out.action == "compressed"
    for name, what in (("chalk-nonexistent-dep", "missing"), ("express", "invalid"), ("left-pad", "extraneous")):
        line = next(ln for ln in out.text.split("\n") if ln.startswith("#") and f"({name};" in ln)
        assert f'"{what}"' in line


def test_odd_key_set_and_numeric_outlier_are_kept():
    items = [{"id": i, "name": f"n{i}", "ms": 40 + i % 9} for i in range(500)]
    items[123]["debug"] = {"trace": "only here"}
    items[321]["ms"] = 90_000
    out = squeeze(json.dumps(items, indent=1))
    assert {123, 321} <= _kept_indices(out.text)
    assert "keys differ: +debug" in out.text and "ms: 90000, median " in out.text


def test_every_key_is_named_even_past_250():
    items = [{"id": i, **{f"metric_{j}": (i * j) % 97 for j in range(270)}} for i in range(60)]
    for i in range(0, 60, 6):
        items[i] |= {f"extra_{i}_{j}": True for j in range(3)}  # rare keys in some objects only
    keys = {k for it in items for k in it}
    assert len(keys) > 250
    out = squeeze(json.dumps(items))
    assert out.action == "compressed"
    assert [k for k in keys if k not in out.text] == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(20, 300), st.lists(st.integers(0, 299), max_size=40, unique=True), st.integers(0, 3))
def test_any_failed_subset_is_kept(n, bad, seed):
    bad = sorted(i for i in bad if i < n)
    items = [{"id": i, "test": f"t{i}", "outcome": "failed" if i in bad else "passed", "ms": 5 + (i * 7 + seed) % 11,
              "detail": "lorem ipsum " * 5} for i in range(n)]
    out = squeeze(json.dumps(items))
    if out.action == "compressed":
        assert set(bad) <= _kept_indices(out.text) or "lossless table" in out.text


# Logs, search, diffs, listings -----------------------------------------------------------------


def test_log_with_450_errors_keeps_every_error_line():
    lines = []
    for i in range(9000):
        lines.append(f"2024-05-01T12:00:{i % 60:02d}Z INFO worker processed batch {i}")
        if i % 20 == 7:
            lines.append(f"2024-05-01T12:00:{i % 60:02d}Z ERROR worker batch {i} failed: timeout")
    text = "\n".join(lines)
    errors = [ln for ln in lines if " ERROR " in ln]
    assert len(errors) == 450
    out = squeeze(text)
    assert out.action == "compressed"
    kept = set(out.text.split("\n"))
    assert [e for e in errors if e not in kept] == []


def test_search_keeps_every_file_and_the_exact_total():
    s = corpus.ripgrep(files=400, per_file=7, seed=77)
    out = squeeze(s.text)
    assert out.action == "compressed"
    assert [p for p in s.files if p not in out.text] == []
    assert "of 2800 matches" in out.text and "all 400 files named" in out.text


def test_git_log_p_keeps_every_header_commit_and_changed_line():
    text = corpus.read_real("git_log_p_12.txt")
    out = squeeze(text, CompressPolicy(min_saving_ratio=0.01, min_saving_tokens=1))
    assert out.action == "compressed"
    kept = out.text.split("\n")
    for ln in text.split("\n"):
        if ln.startswith(("diff --git", "commit ", "+", "-")):
            assert ln in kept, ln


@pytest.mark.parametrize("sample", ["find_node_modules.txt.gz", "find_type_d_node_modules.txt",
                                    "ls_laR_eslint.txt", "tree_webpack.txt", "find_site_packages.txt"])
def test_listings_name_every_directory(sample):
    text = corpus.read_real(sample)
    out = squeeze(text)
    assert out.action == "compressed" and out.kind == "listing"
    assert F.lost(F.facts("listing", text), out.text) == []


# The gate --------------------------------------------------------------------------------------


def test_the_gate_counts_missing_facts():
    body = "kept line\n[×3] repeated error\nsrc/: a.py b.py"
    c = Compressed(body + "\n" + make("k", "o", REF), "", facts=("kept line", "repeated error"))
    assert missing(c, "log") == 0
    assert missing(c._replace(facts=("gone",)), "log") == 1
    assert missing(c._replace(facts=("src",)), "listing") == 0
    assert missing(c._replace(facts=(), needles=("#12 ",)), "json") == 1


def test_an_unfaithful_rewrite_is_not_used(monkeypatch):
    import headroom_core.compress as api

    real = api.compress_log

    def lossy(text, policy, ref):
        c = real(text, policy, ref)
        victim = c.facts[0]
        return c._replace(text=c.text.replace(victim + "\n", "", 1))

    monkeypatch.setattr(api, "compress_log", lossy)
    out = squeeze(corpus.pytest_log().text)
    assert (out.action, out.kind, out.text) == ("unfaithful", "log", None)
    assert out.tokens_before == out.tokens_after


def test_a_log_that_is_all_errors_is_forwarded_unchanged():
    text = "\n".join(f"error: check {i} failed: value {i} out of range" for i in range(3000))
    out = squeeze(text)
    assert out.action == "rejected-not-smaller" and out.text is None


WORD = st.sampled_from(["error", "errors", "Error:", "ERROR", "failed", "FAILED", "failures", "FAIL", "panic:",
                        "Traceback", "exception", "ValueError:", "fatal:", "x", "ok", "passed", "3", "in", "1.2s",
                        "===", "src/a.py:3", "-", "warning:", "test_error_handling", "timed", "out", "Errors:"])
MIXED_LINE = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
ERROR_LINE = st.one_of(MIXED_LINE, st.sampled_from([
    "ERROR db connection lost", "error[E0425]: cannot find value `x`", "FAILED tests/test_a.py::test_b - x",
    "Traceback (most recent call last):", "ValueError: bad input", "panic: runtime error: index out of range",
    "npm ERR! code ELIFECYCLE", "fatal: not a git repository", "3 failed, 10 passed in 1.2s",
]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3999), ERROR_LINE), max_size=80), st.integers(0, 5))
def test_any_error_lines_in_a_long_log_are_kept(errors, seed):
    lines = [f"2024-05-01T12:00:00Z INFO step {i} done in {(i * 7 + seed) % 90}ms" for i in range(4000)]
    for at, line in errors:
        lines[at] = line
    text = "\n".join(lines)
    out = squeeze(text)
    assert F.lost(F.facts("log", text), out.text) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 200), st.integers(1, 40), st.integers(0, 9))
def test_any_search_keeps_every_file_and_total(files, per_file, seed):
    s = corpus.ripgrep(files=files, per_file=per_file, seed=seed)
    out = squeeze(s.text)
    assert F.lost(F.facts("search", s.text), out.text) == []
