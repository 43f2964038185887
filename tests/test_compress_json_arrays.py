import json
import re
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.compress import CompressPolicy
from headroom_core.compress.detect import detect, dumps
from headroom_core.compress.json_arrays import compress_json, digest, lossless, table_columns
from headroom_core.compress.marker import is_marked, make
from headroom_core.compress.tokens import count_tokens

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://headroom.local/ccr/json1"
POLICY = CompressPolicy()


def run(text: str, policy: CompressPolicy = POLICY):
    det = detect(text)
    assert det.kind == "json"
    rw = compress_json(det.json_value, det.json_path, policy, REF, count_tokens(text))
    assert rw is not None and is_marked(rw.text)
    return rw


def rebuild_from_table(out: str) -> list[dict]:
    lines = out.split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("["))
    cols = json.loads(lines[start])
    items = []
    for row in lines[start + 1:-1]:
        values = json.loads(row)
        item: dict = {}
        for col, v in zip(cols, values, strict=True):
            *parents, leaf = col.split(".")
            d = item
            for p in parents:
                d = d.setdefault(p, {})
            d[leaf] = v
        items.append(item)
    return items


def all_key_paths(obj, prefix=""):
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else k
        yield name
        if isinstance(v, dict):
            yield from all_key_paths(v, name)


def test_500_runs_keep_schema_first_last_and_error_items():
    s = corpus.github_runs(500, errors=3)
    rw = run(s.text)
    items = s.extra["items"]
    out = rw.text
    # every key, nested ones included, is named in the schema
    for item in (items[0], items[s.extra["errors"][0]]):
        for path in all_key_paths(item):
            assert f"\n  {path}: " in out, path
    # first, last and the 3 error items, verbatim
    kept_lines = {ln.split(" ", 1)[0]: ln for ln in out.split("\n") if ln.startswith("#")}
    for i in [0, 499, *s.extra["errors"]]:
        assert f"#{i}" in kept_lines
        assert kept_lines[f"#{i}"].endswith(" " + dumps(items[i]))
    for i in s.extra["errors"]:
        assert '(conclusion: "failure")' in kept_lines[f"#{i}"]
    mark = out.rsplit("\n", 1)[1]
    assert mark.startswith("[headroom: kept 5 of 500 items (3 anomalous) and all ")
    assert f"; 495 items omitted; full output: curl -s '{REF}' " in mark
    # the omitted ranges cover exactly the other indices
    ranges = re.search(r"^Omitted objects: (.*)\.$", out, re.M)[1]
    covered = set()
    for part in ranges.split(", "):
        a, _, b = part.lstrip("#").partition("-#" if "-#" in part else "-")
        covered.update(range(int(a), int(b or a) + 1))
    assert covered == set(range(500)) - {0, 499, *s.extra["errors"]}
    # value summaries are computed over all items
    assert '  conclusion: str; "success" ×497, "failure" ×3' in out
    assert rw.tokens == count_tokens(out)


def test_wrapped_array_shows_the_enclosing_object():
    s = corpus.github_runs(200, errors=2, seed=41, wrapped=True)
    rw = run(s.text)
    assert rw.text.startswith("$.workflow_runs: JSON array of 200 objects")
    assert 'Enclosing object: {"total_count":200,"workflow_runs":"<200 objects, below>"}' in rw.text


def test_flat_uniform_records_become_a_lossless_table():
    s = corpus.flat_records(60)
    rw = run(s.text)
    assert "lossless table" in rw.text and rw.omitted == ""
    assert rebuild_from_table(rw.text) == s.extra["items"]
    assert rw.text.rsplit("\n", 1)[1] == make("60 items as a lossless table (keys listed once)", "nothing omitted", REF)


def test_nested_objects_of_one_shape_flatten_losslessly():
    items = [{"id": i, "user": {"login": f"u{i}", "site": {"admin": i % 2 == 0}}, "n": None} for i in range(40)]
    rw = run(json.dumps(items))
    assert '["id","user.login","user.site.admin","n"]' in rw.text
    assert rebuild_from_table(rw.text) == items


def test_dotted_keys_disable_flattening_so_the_table_stays_unambiguous():
    items = [{"a.b": i, "a": {"b": -i}} for i in range(40)]
    cols = table_columns(items)
    assert cols == [("a.b",), ("a",)]
    rw = lossless(items, "$", None, REF)
    rows = rw.text.split("\n")[2:-1]
    assert [json.loads(r) for r in rows] == [[i, {"b": -i}] for i in range(40)]


def test_non_uniform_items_fall_back_to_the_digest():
    items = [{"id": i, "name": f"n{i}"} for i in range(300)]
    items[10]["extra"] = "only here"
    assert table_columns(items) is None
    rw = run(json.dumps(items))
    assert '  extra: str; in 1 of 300, e.g. "only here"' in rw.text


def test_big_table_is_not_lossless_enough():
    s = corpus.flat_records(600, seed=42)
    rw = run(s.text, CompressPolicy(json_lossless_max_tokens=2000))
    assert "digested" in rw.text
    rw = run(s.text, CompressPolicy(json_lossless_max_tokens=100_000))
    assert "lossless table" in rw.text


def test_anomalies_errors_http_status_false_success_and_outliers():
    items = [{"id": i, "status": 200, "ok": True, "latency_ms": 40 + i % 7, "error": None} for i in range(300)]
    items[30]["status"] = 503
    items[60]["ok"] = False
    items[90]["error"] = {"code": "E42", "message": "boom"}
    items[120]["latency_ms"] = 98000
    items[150]["level"] = "FATAL"
    text = json.dumps(items)
    rw = digest(json.loads(text), "$", None, POLICY, REF)
    lines = {ln.split(" ", 1)[0]: ln for ln in rw.text.split("\n") if ln.startswith("#")}
    assert set(lines) == {"#0", "#30", "#60", "#90", "#120", "#150", "#299"}
    assert "(status: 503)" in lines["#30"]
    assert "(ok: false)" in lines["#60"]
    assert "(error: " in lines["#90"]
    assert "(latency_ms: 98000, median 43 (outlier))" in lines["#120"]
    assert '(level: "FATAL")' in lines["#150"]


def test_many_anomalies_are_all_kept_as_a_compact_table():
    items = [{"id": i, "name": f"job-{i}", "state": "failed" if i % 10 == 0 else "ok", "log": "x" * 400}
             for i in range(400)]
    rw = digest(items, "$", None, POLICY, REF)
    assert "40 anomalous objects, all kept" in rw.text and "Anomalous objects as a table" in rw.text
    for i in range(0, 400, 10):
        assert f'#{i} [{i},"job-{i}","failed"]; state: "failed"' in rw.text
    assert "kept 41 of 400 items (40 anomalous)" in rw.text  # the last one is kept verbatim too


def test_integers_beyond_64_bits_stay_exact():
    items = [{"id": 2**70 + i, "v": "x"} for i in range(50)]
    rw = run(json.dumps(items))
    assert str(2**70 + 7) in rw.text


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.integers(), "name": st.text(max_size=20), "v": st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)}
        ),
        min_size=3,
        max_size=40,
    )
)
def test_table_round_trips_any_uniform_records(items):
    rw = lossless(items, "$", None, REF)
    assert rebuild_from_table(rw.text) == json.loads(json.dumps(items))


def test_every_key_is_named_past_the_schema_cap():
    items = [{f"k{j}": j for j in range(30)} | {"id": i} for i in range(50)]
    rw = digest(items, "$", None, CompressPolicy(json_max_schema_keys=10), REF)
    assert "and all 31 keys;" in rw.text.rsplit("\n", 1)[1]
    assert "  21 more keys, named only: k10, k11, " in rw.text and ", k29, id\n" in rw.text
