import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.stats import NO_SESSION, Stats, Totals, format_table, is_error, tokens_saved


def rec(session="s1", input=0, output=0, read=0, write=0, **extra) -> dict:
    return {
        "ts": "2025-08-17T10:00:00Z",
        "flow_id": "f",
        "provider": "anthropic",
        "endpoint": "messages",
        "session_id": session,
        "status": 200,
        "error": None,
        "stream": True,
        "stream_state": "complete",
        "usage": {
            "input_tokens": input,
            "output_tokens": output,
            "cache_read_tokens": read,
            "cache_creation_tokens": write,
        },
        **extra,
    }


def test_aggregates_per_session_and_total():
    s = Stats.from_records(
        [
            rec("a", 10, 5, 100, 20),
            rec("a", 2, 1, 300, 0, decisions={"rewrite": {"tokens_saved": 40}}),
            rec("b", 7, 3, 0, 50, status=529, error="overloaded"),
        ]
    )
    a, b = s.sessions["a"], s.sessions["b"]
    assert (
        a.requests,
        a.input_tokens,
        a.output_tokens,
        a.cache_read_tokens,
        a.cache_creation_tokens,
    ) == (2, 12, 6, 400, 20)
    assert a.errors == 0 and a.tokens_saved == 40
    assert b.errors == 1 and b.requests == 1
    t = s.total
    assert (
        t.requests,
        t.input_tokens,
        t.output_tokens,
        t.cache_read_tokens,
        t.cache_creation_tokens,
        t.errors,
        t.tokens_saved,
    ) == (3, 19, 9, 400, 70, 1, 40)


def test_cache_read_share():
    t = Totals(input_tokens=100, cache_read_tokens=800, cache_creation_tokens=100)
    assert t.cache_read_share == pytest.approx(0.8)
    assert Totals().cache_read_share is None


@pytest.mark.parametrize(
    "record,expected",
    [
        ({"status": 200}, False),
        ({"status": 399, "stream_state": "complete"}, False),
        ({"status": 400}, True),
        ({"status": "500"}, False),  # not a number we trust
        ({"error": "connection reset"}, True),
        ({"error": ""}, False),
        ({"stream_state": "errored"}, True),
        ({"stream_state": "truncated"}, True),
        ({"stream_state": None}, False),
    ],
)
def test_is_error(record, expected):
    assert is_error(record) is expected


def test_tolerates_missing_null_and_garbage_fields():
    s = Stats()
    for r in [
        {},
        {"usage": None},
        {"usage": {"input_tokens": "12", "output_tokens": -3, "cache_read_tokens": 2.0}},
        {"session_id": None, "decisions": None},
        {"session_id": "", "decisions": {"rewrite": None}},
        {"decisions": {"rewrite": {"tokens_saved": True}}},
        {"session_id": 7},
    ]:
        s.add(r)
    s.add("not a record")
    s.add(None)
    assert s.ignored == 2
    assert list(s.sessions) == [NO_SESSION]
    t = s.total
    assert (
        t.requests == 7
        and t.input_tokens == 0
        and t.output_tokens == 0
        and t.cache_read_tokens == 2
    )
    assert t.tokens_saved == 0 and t.errors == 0


def test_tokens_saved():
    assert tokens_saved({"decisions": {"rewrite": {"tokens_saved": 1200, "blocks": 3}}}) == 1200
    assert tokens_saved({"decisions": {"rewrite": []}}) == 0


def test_rows_sorted_by_requests_then_name():
    s = Stats.from_records([rec("z"), rec("b"), rec("b"), rec("a"), rec("c"), rec("c")])
    assert [k for k, _ in s.rows()] == ["b", "c", "a", "z"]


def test_format_table():
    s = Stats.from_records(
        [rec("session-one", 1000, 20, 9000, 0)] * 3 + [rec("two", 5, 1, 0, 0, status=500)]
    )
    lines = format_table(s).splitlines()
    assert lines[0].split() == [
        "SESSION",
        "REQS",
        "INPUT",
        "OUTPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "CACHE%",
        "ERRORS",
        "SAVED",
    ]
    assert lines[2].split() == ["session-one", "3", "3,000", "60", "27,000", "0", "90.0%", "0", "0"]
    assert lines[3].split() == ["two", "1", "5", "1", "0", "0", "0.0%", "1", "0"]
    assert lines[-1].split() == ["TOTAL", "4", "3,005", "61", "27,000", "0", "90.0%", "1", "0"]
    # fixed width: numbers right-aligned under their header
    assert lines[0].index("REQS") + len("REQS") == lines[2].index(" 3 ") + 2


def test_format_table_empty_and_long_session_ids():
    empty = format_table(Stats()).splitlines()
    assert empty[-1].split() == ["TOTAL", "0", "0", "0", "0", "0", "-", "0", "0"]
    long_id = "x" * 80
    table = format_table(Stats.from_records([rec(long_id)]))
    assert long_id not in table and ("x" * 35 + "…") in table


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                ["session_id", "usage", "status", "error", "stream_state", "decisions"]
            ),
            st.recursive(
                st.none() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=True),
                lambda inner: st.dictionaries(
                    st.sampled_from(["input_tokens", "rewrite", "tokens_saved"]), inner, max_size=3
                ),
                max_leaves=6,
            ),
            max_size=6,
        ),
        max_size=10,
    )
)
def test_arbitrary_records_never_raise(records):
    s = Stats.from_records(records)
    assert s.total.requests == len(records)
    assert sum(t.requests for t in s.sessions.values()) == len(records)
    format_table(s)


_FIELD = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=3)
    | st.floats(allow_nan=True) | st.sampled_from([3.0, -2.0, "errored", "truncated", 404]),
    lambda inner: st.dictionaries(
        st.sampled_from(["input_tokens", "output_tokens", "cache_read_tokens",
                         "cache_creation_tokens", "rewrite", "tokens_saved"]), inner, max_size=4),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(
    st.sampled_from(["session_id", "usage", "status", "error", "stream_state", "decisions",
                     "session_label"]), _FIELD, max_size=7), max_size=8))
def test_a_record_read_once_for_the_dashboard_counts_the_same(records):
    # The proxy hands Stats the record as the dashboard's figures read it (one reading each).
    from headroom_core.figures import turn_of
    direct, shared = Stats(), Stats()
    for r in records:
        direct.add(r)
        shared.add(r, turn_of(r, None, 0.0))
    assert shared.total == direct.total and shared.sessions == direct.sessions
    assert shared.labels == direct.labels


def test_sessions_are_bounded_and_adds_are_thread_safe():
    import threading

    from headroom_core.stats import OTHER, Stats

    st = Stats(max_sessions=50)

    def work(t):
        for i in range(500):
            st.add({"session_id": f"s{t}-{i % 40}", "usage": {"input_tokens": 1}})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert st.total.requests == 4000 and st.total.input_tokens == 4000
    assert len(st.sessions) <= 51 and OTHER in st.sessions
    assert sum(t.requests for _, t in st.rows()) == 4000
