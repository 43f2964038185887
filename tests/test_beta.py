import threading

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core.beta import (
    ANTHROPIC_BETA,
    DEFAULT_DENY,
    OPENAI_BETA,
    BetaDecision,
    StickyBetas,
    apply_to_fields,
    header_name,
    header_values,
    merge_tokens,
    split_tokens,
    sticky_key,
    tokens_named_in_error,
)

# --- merge_tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client, required, expected",
    [
        ([], [], []),
        (["a,b"], [], ["a", "b"]),
        (["a", "b"], [], ["a", "b"]),
        (["b,a"], ["c"], ["b", "a", "c"]),
        (["a, b", "c"], ["b", "d"], ["a", "b", "c", "d"]),
        (["A,b"], ["a"], ["A", "b"]),  # first casing wins
        (["Foo", "foo,FOO"], ["fOO"], ["Foo"]),
        ([" a ,, ,b ", ""], ["  "], ["a", "b"]),  # trimmed, blanks dropped
        ([], ["x", "y"], ["x", "y"]),
        (["responses_websockets=2026-02-04"], ["responses=experimental"],
         ["responses_websockets=2026-02-04", "responses=experimental"]),  # opaque, '=' kept
        (["a\r\nx-evil: 1,b"], [], ["b"]),  # control characters cannot go on a header line
    ],
)
def test_merge_tokens(client, required, expected):
    assert merge_tokens(client, required) == expected


_token = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=","), min_size=1, max_size=6)


@given(st.lists(st.lists(_token, max_size=4).map(",".join), max_size=4), st.lists(_token, max_size=4))
def test_merge_tokens_properties(client, required):
    out = merge_tokens(client, required)
    lowered = [t.lower() for t in out]
    assert len(lowered) == len(set(lowered))
    assert merge_tokens(out) == out  # idempotent
    client_tokens = [t for v in client for t in split_tokens(v)]
    # the client's tokens come first, each at its first occurrence, with its first casing
    firsts = merge_tokens(client_tokens)
    assert out[: len(firsts)] == firsts
    assert {t.lower() for t in required} <= set(lowered)


def test_header_names_and_values():
    assert header_name("anthropic") == b"anthropic-beta"
    assert header_name("openai") == b"OpenAI-Beta"
    assert header_name("other") is None
    fields = [(b"OpenAI-Beta", b"a=1"), (b"x", b"y"), (b"openai-beta", b"b=2")]
    assert header_values(fields, OPENAI_BETA) == ["a=1", "b=2"]
    assert header_values(fields, b"openai-beta") == ["a=1", "b=2"]


# --- apply_to_fields --------------------------------------------------------------------------


def test_unchanged_single_line_is_the_same_object():
    fields = [(b"host", b"h"), (b"Anthropic-Beta", b"a,b"), (b"x", b"y")]
    assert apply_to_fields(fields, ANTHROPIC_BETA, ["a", "b"]) is fields
    odd = [(b"anthropic-beta", b" a ,  b,")]
    assert apply_to_fields(odd, ANTHROPIC_BETA, ["a", "b"]) is odd


def test_unchanged_multiple_lines_are_left_alone():
    fields = [(b"OpenAI-Beta", b"a"), (b"x", b"y"), (b"openai-beta", b"b")]
    assert apply_to_fields(fields, OPENAI_BETA, ["a", "b"]) is fields


def test_folds_lines_and_case_variants_at_first_position():
    fields = [
        (b"host", b"h"),
        (b"OpenAI-Beta", b"responses_websockets=2026-02-04"),
        (b"x", b"y"),
        (b"openai-beta", b"other=1"),
        (b"OPENAI-BETA", b"third"),
        (b"z", b"w"),
    ]
    out = apply_to_fields(fields, OPENAI_BETA, ["responses_websockets=2026-02-04", "other=1", "third", "new"])
    assert out == [
        (b"host", b"h"),
        (b"OpenAI-Beta", b"responses_websockets=2026-02-04,other=1,third,new"),
        (b"x", b"y"),
        (b"z", b"w"),
    ]
    assert fields[3] == (b"openai-beta", b"other=1")  # input not mutated


def test_first_line_name_casing_is_kept():
    fields = [(b"anthropic-beta", b"a"), (b"ANTHROPIC-BETA", b"b")]
    out = apply_to_fields(fields, b"Anthropic-Beta", ["a", "b", "c"])
    assert out == [(b"anthropic-beta", b"a,b,c")]


@pytest.mark.parametrize(
    "value, expected",
    [(b"a, b", b"a, b, c"), (b"a,b", b"a,b,c"), (b"a", b"a,b,c")],
)
def test_separator_follows_the_client(value, expected):
    tokens = merge_tokens([value.decode()], ["b", "c"])
    assert apply_to_fields([(b"anthropic-beta", value)], ANTHROPIC_BETA, tokens) == [(b"anthropic-beta", expected)]


def test_absent_header_is_appended_and_empty_tokens_remove_it():
    fields = [(b"host", b"h")]
    assert apply_to_fields(fields, ANTHROPIC_BETA, ["a"]) == [(b"host", b"h"), (b"anthropic-beta", b"a")]
    assert apply_to_fields(fields, ANTHROPIC_BETA, []) is fields
    two = [(b"anthropic-beta", b"a"), (b"host", b"h"), (b"Anthropic-Beta", b"b")]
    assert apply_to_fields(two, ANTHROPIC_BETA, []) == [(b"host", b"h")]


def test_reordering_is_a_change():
    fields = [(b"anthropic-beta", b"a,b")]
    assert apply_to_fields(fields, ANTHROPIC_BETA, ["b", "a"]) == [(b"anthropic-beta", b"b,a")]


_name = st.sampled_from([b"anthropic-beta", b"Anthropic-Beta", b"ANTHROPIC-BETA", b"host", b"x-other"])
_fields = st.lists(st.tuples(_name, st.lists(_token, max_size=3).map(lambda t: ",".join(t).encode())), max_size=6)


@settings(max_examples=300)
@given(fields=_fields, tokens=st.lists(_token, max_size=4).map(merge_tokens))
def test_apply_to_fields_properties(fields, tokens):
    out = apply_to_fields(fields, ANTHROPIC_BETA, tokens)
    assert merge_tokens(header_values(out, ANTHROPIC_BETA)) == tokens
    others = [f for f in fields if f[0].lower() != ANTHROPIC_BETA]
    assert [f for f in out if f[0].lower() != ANTHROPIC_BETA] == others
    if out is not fields:
        assert len(header_values(out, ANTHROPIC_BETA)) == (1 if tokens else 0)
    assert apply_to_fields(out, ANTHROPIC_BETA, tokens) is out  # a second pass changes nothing


# --- StickyBetas ------------------------------------------------------------------------------


def test_dropped_token_sticks_for_the_session():
    sb = StickyBetas()
    assert sb.apply("s", True, ["a,b"]) == BetaDecision(["a", "b"], [], False)
    assert sb.apply("s", True, ["a"]) == BetaDecision(["a", "b"], ["b"], True)
    assert sb.apply("s", True, ["a,b"]) == BetaDecision(["a", "b"], [], False)
    assert sb.apply("s", True, []) == BetaDecision(["a", "b"], ["a", "b"], True)


def test_huge_tokens_are_sent_on_but_never_remembered_nor_memoised():
    # A client could send megabytes of beta header per session, for a thousand sessions.
    sb = StickyBetas()
    huge = "x" * 200_000
    got = sb.apply("s", True, [f"a,{huge}"])
    assert got.tokens == ["a", huge]  # forwarded as the client sent it
    assert sb.remembered("s") == ["a"]
    assert "s" not in sb._memo  # nor kept as the memo's signature
    assert sb.apply("s", True, []).tokens == ["a"]  # and the memory is still right
    long_header = ",".join(f"t{i}-" + "y" * 100 for i in range(60))  # 60 real-length tokens
    assert sb.apply("t", True, [long_header]).tokens == long_header.split(",")
    assert len(sb.remembered("t")) == 60 and "t" not in sb._memo


def test_sticky_tokens_follow_client_tokens_in_first_seen_order():
    sb = StickyBetas()
    sb.apply("s", True, ["a"])
    sb.apply("s", True, ["b"])
    sb.apply("s", True, ["c,A"])
    assert sb.remembered("s") == ["a", "b", "c"]
    got = sb.apply("s", True, ["d"])
    assert got.tokens == ["d", "a", "b", "c"]
    assert got.added == ["a", "b", "c"]


def test_case_insensitive_memory():
    sb = StickyBetas()
    sb.apply("s", True, ["Foo-2025"])
    assert sb.apply("s", True, ["foo-2025"]) == BetaDecision(["foo-2025"], [], False)


def test_required_tokens_are_added_and_then_sticky():
    sb = StickyBetas()
    got = sb.apply("s", True, ["a"], required=["r"])
    assert got == BetaDecision(["a", "r"], ["r"], True)
    assert sb.apply("s", True, ["a"]) == BetaDecision(["a", "r"], ["r"], True)


def test_required_tokens_without_a_session():
    sb = StickyBetas()
    assert sb.apply(None, True, ["a"], ["a", "r"]) == BetaDecision(["a", "r"], ["r"], True)
    assert len(sb) == 0


def test_sessions_are_independent():
    sb = StickyBetas()
    sb.apply("s1", True, ["a,b"])
    assert sb.apply("s2", True, ["a"]) == BetaDecision(["a"], [], False)


@pytest.mark.parametrize("key, high", [("s", False), (None, True), (None, False)])
def test_low_confidence_or_missing_ids_are_never_sticky(key, high):
    sb = StickyBetas()
    sb.apply(key, high, ["a,b"])
    assert sb.apply(key, high, ["a"]) == BetaDecision(["a"], [], False)
    assert len(sb) == 0
    # and a low-confidence request does not read a high-confidence session's memory either
    sb.apply("s", True, ["a,b"])
    assert sb.apply("s", False, ["a"]).tokens == ["a"]


def test_deny_list_is_forwarded_but_never_sticky():
    sb = StickyBetas()
    first = sb.apply("s", True, ["context-1m-2025-08-07,fast-mode-2026-02-01,oauth-2025-04-20,keep-1"])
    assert first.tokens == ["context-1m-2025-08-07", "fast-mode-2026-02-01", "oauth-2025-04-20", "keep-1"]
    assert sb.remembered("s") == ["keep-1"]
    assert sb.apply("s", True, []).tokens == ["keep-1"]
    sb.apply("s", True, ["CONTEXT-1M-2099-01-01"])  # patterns match case-insensitively
    assert sb.remembered("s") == ["keep-1"]


def test_websocket_selector_is_not_sticky():
    sb = StickyBetas()
    sb.apply("codex", True, ["responses_websockets=2026-02-04", "responses=experimental"])
    assert sb.apply("codex", True, []).tokens == ["responses=experimental"]


def test_custom_deny_list():
    sb = StickyBetas(deny=["x-*"])
    sb.apply("s", True, ["x-1,context-1m-2025-08-07"])
    assert sb.remembered("s") == ["context-1m-2025-08-07"]
    assert "context-1m-*" in DEFAULT_DENY


def test_lru_eviction_at_cap():
    sb = StickyBetas(max_sessions=3)
    for key in ("s1", "s2", "s3"):
        sb.apply(key, True, [key])
    sb.apply("s1", True, [])  # touch: s2 is now the least recently used
    sb.apply("s4", True, ["s4"])
    assert len(sb) == 3
    assert sb.remembered("s2") == []
    assert sb.apply("s2", True, []).tokens == []
    assert sb.apply("s1", True, []).tokens == ["s1"]
    assert sb.remembered("s4") == ["s4"]


def test_a_turn_answered_from_the_memo_keeps_its_session_young():
    sb = StickyBetas(max_sessions=3)
    for key in ("s1", "s2", "s3"):
        sb.apply(key, True, (key,))
    first = sb.apply("s1", True, ("s1",))  # the previous turn's header again: the memo answers
    assert sb.apply("s1", True, ["s1"]) is first  # (an equal list is the same header)
    sb.apply("s4", True, ["s4"])
    assert sb.remembered("s2") == [] and sb.remembered("s1") == ["s1"]
    assert sb.apply("s1", True, ("s1",), ("r",)).tokens == ["s1", "r"]  # other required: asked


def test_sessions_without_tokens_take_no_room():
    sb = StickyBetas(max_sessions=1)
    sb.apply("s1", True, ["a"])
    for i in range(10):
        sb.apply(f"empty{i}", True, [])
    assert sb.remembered("s1") == ["a"]


def test_tokens_per_session_are_bounded():
    sb = StickyBetas(max_tokens_per_session=3)
    sb.apply("s", True, ["a,b,c,d,e"])
    assert sb.remembered("s") == ["a", "b", "c"]
    assert sb.apply("s", True, ["z"]).tokens == ["z", "a", "b", "c"]


def test_reject_drops_a_token():
    sb = StickyBetas()
    sb.apply("s", True, ["a,bad-2025,b"])
    assert sb.reject("s", "BAD-2025") is True
    assert sb.apply("s", True, []).tokens == ["a", "b"]
    assert sb.reject("s", "bad-2025") is False
    assert sb.reject("unknown", "a") is False
    assert sb.reject(None, "a") is False
    sb.reject("s", "a")
    sb.reject("s", "b")
    assert len(sb) == 0


def test_invalid_max_sessions():
    with pytest.raises(ValueError):
        StickyBetas(max_sessions=0)


def test_threads_hammering_one_session_lose_nothing():
    sb = StickyBetas(max_tokens_per_session=10_000)
    n_threads, n_turns = 16, 60
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for j in range(n_turns):
                got = sb.apply("shared", True, [f"t{i}-{j}", "common"])
                lowered = set(got.tokens)
                # everything this thread ever sent is still sent (nothing lost to a race)
                missing = [f"t{i}-{k}" for k in range(j + 1) if f"t{i}-{k}" not in lowered]
                assert not missing, missing
                assert len(got.tokens) == len(lowered)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    remembered = set(sb.remembered("shared"))
    assert remembered == {f"t{i}-{j}" for i in range(n_threads) for j in range(n_turns)} | {"common"}


def test_threads_over_many_sessions_respect_the_cap():
    sb = StickyBetas(max_sessions=50)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(200):
                sb.apply(f"s{i}-{j % 30}", True, [f"x{j}"])
                sb.reject(f"s{i}-{(j + 7) % 30}", f"x{j - 7}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(sb) == 50


def test_sticky_key():
    assert sticky_key(None, "messages", "m") is None
    a = sticky_key("sid", "messages", "claude-sonnet-4-5")
    b = sticky_key("sid", "messages", "claude-haiku-4-5")
    c = sticky_key("sid", "count_tokens", "claude-sonnet-4-5")
    assert len({a, b, c}) == 3
    assert sticky_key("sid", None) == sticky_key("sid", "")
    assert sticky_key("sid") == "sid"
    assert sticky_key("sid", "messages", None) == "\x1f".join(("sid", "messages", ""))
    assert sticky_key("sid", "a", "b", "c") == "sid\x1fa\x1fb\x1fc"


# --- tokens_named_in_error --------------------------------------------------------------------


def _anthropic_error(message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}})


def test_names_tokens_in_anthropic_beta_error():
    body = _anthropic_error(
        "Unexpected value(s) `prompt-caching-scope-2026-01-05`, `structured-outputs-2025-12-15` for the "
        "`anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again "
        "without the header."
    )
    sent = ["claude-code-20250219", "Prompt-Caching-Scope-2026-01-05", "structured-outputs-2025-12-15"]
    assert tokens_named_in_error(body, sent) == ["Prompt-Caching-Scope-2026-01-05", "structured-outputs-2025-12-15"]


def test_whole_words_only():
    body = _anthropic_error("Unexpected value(s) `context-1m-2025-08-07-v2` for the `anthropic-beta` header.")
    assert tokens_named_in_error(body, ["context-1m-2025-08-07", "context-1m", "v2"]) == []
    body = _anthropic_error("The beta advisor-tool-2026-03-01.")
    assert tokens_named_in_error(body, ["advisor-tool-2026-03-01", "advisor-tool"]) == ["advisor-tool-2026-03-01"]
    body = _anthropic_error("beta responses_websockets=2026-02-04 is not allowed")
    assert tokens_named_in_error(body, ["responses_websockets=2026-02-04", "responses_websockets"]) == [
        "responses_websockets=2026-02-04"
    ]


def test_openai_shaped_error():
    body = orjson.dumps({"error": {"message": "Invalid OpenAI-Beta header: foo=1", "type": "invalid_request_error"}})
    assert tokens_named_in_error(body, ["foo=1", "bar=2"]) == ["foo=1"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"error":"string"}',
        b'{"error":{"message":5}}',
        _anthropic_error("messages.0.content: `a-1` is wrong"),  # names the token, but not about betas
        b"\xff\xfe",
    ],
)
def test_non_beta_or_garbage_errors_name_nothing(body):
    assert tokens_named_in_error(body, ["a-1"]) == []


@given(st.binary(max_size=200), st.lists(st.text(max_size=10), max_size=4))
def test_error_parser_never_raises(body, sent):
    assert isinstance(tokens_named_in_error(body, sent), list)


def test_fold_forces_one_line_even_when_tokens_are_unchanged():
    from headroom_core.beta import apply_to_fields

    fields = [(b"OpenAI-Beta", b"x=1"), (b"A", b"1"), (b"openai-beta", b"y")]
    assert apply_to_fields(fields, b"OpenAI-Beta", ["x=1", "y"]) is fields
    assert apply_to_fields(fields, b"OpenAI-Beta", ["x=1", "y"], fold=True) == [
        (b"OpenAI-Beta", b"x=1,y"), (b"A", b"1")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab-*?[]!0", max_size=6), max_size=4),
       st.lists(st.text(alphabet="aAbB-0[]*?!", max_size=6), max_size=6))
def test_the_deny_list_matches_as_fnmatch_does(patterns, tokens):
    import fnmatch
    betas = StickyBetas(deny=patterns)
    for token in tokens + tokens:  # (the second time from the verdict kept)
        expected = any(fnmatch.fnmatchcase(token.lower(), p.lower()) for p in patterns)
        assert betas.denied(token) is expected
