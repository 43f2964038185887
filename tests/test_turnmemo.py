"""The turn memo gives exactly what a full pass gives: same bytes, same manifest, every request.

Two worlds see the same requests: one works every request out in full, the other from the
conversation's previous turn where it can. They must agree byte for byte and entry for entry,
whatever the client does to its history: append, edit, truncate, fork, compact, restart, other
tenants with the same bytes, other sessions interleaved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_core import jsonspan
from headroom_core.rewrite import Rewriter, RewritePolicy
from headroom_core.turnmemo import Turn, TurnMemo
from headroom_runtime.diskledger import Ledger
from headroom_runtime.diskoriginals import Originals

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

SALT = b"m" * 16
BIG = [corpus.pytest_log(passes=300, failures=2, seed=s).text for s in range(6)]
GREP = corpus.ripgrep(files=30, per_file=12, seed=3).text


class World:
    """A rewriter over its own ledger and originals; `memo` decides whether turns are reused."""

    def __init__(self, tmp: Path, memo: bool) -> None:
        self.tmp, self.memo = tmp, memo
        tmp.mkdir(parents=True, exist_ok=True)
        self.ledger, self.originals = Ledger(tmp / "ledger"), Originals(tmp / "originals")
        self.rw = Rewriter(RewritePolicy.from_config(_Cfg(), "http://127.0.0.1:8080/ccr/"),
                           self.ledger, self.originals, SALT)
        self.turns = 0

    def restart(self) -> None:
        self.close()
        self.__init__(self.tmp, self.memo)

    def send(self, body: bytes, tenant: str = "t:a", session: str = "s1"):
        key = (tenant, session, "messages", "claude-x")
        if self.memo:
            res = self.rw.rewrite_turn(body, tenant=tenant, memo_key=key)
            if res is not None:
                self.turns += 1
                return res
            return self.rw.rewrite("anthropic", body, tenant=tenant, memo_key=key)
        return self.rw.rewrite("anthropic", body, tenant=tenant)

    def close(self) -> None:
        self.ledger.close()
        self.originals.close()


class _Cfg:
    compress_min_bytes = ()
    compress_min_ratio = 0.10
    compress_min_tokens = 200
    compress_include = None
    compress_exclude = ("Read",)
    compress_error_limit = 2048


@pytest.fixture
def worlds(tmp_path):
    full, memo = World(tmp_path / "full", False), World(tmp_path / "memo", True)
    yield full, memo
    full.close()
    memo.close()


def same(full, memo, body, **kw):
    a, b = full.send(body, **kw), memo.send(body, **kw)
    assert b.body == a.body
    assert b.manifest == a.manifest
    assert (b.tokens_saved, b.bytes_saved) == (a.tokens_saved, a.bytes_saved)
    return a


# -- conversations -------------------------------------------------------------------------------


def tool_turn(i: int, output: str, tool: str = "Bash", is_error: bool = False,
              ids: str = "toolu") -> list[dict]:
    tid = f"{ids}_{i:04d}"  # tool call ids are unique to a conversation, as the APIs make them
    result = {"type": "tool_result", "tool_use_id": tid, "content": output}
    if is_error:
        result["is_error"] = True
    return [{"role": "assistant", "content": [{"type": "text", "text": f"step {i}"},
                                              {"type": "tool_use", "id": tid, "name": tool,
                                               "input": {"n": i}}]},
            {"role": "user", "content": [result]}]


def output_for(i: int) -> tuple[str, str, bool]:
    """Outputs of all kinds: big logs (compressed), search results, small ones, a Read
    (excluded), an error, list-shaped content."""
    kind = i % 7
    if kind == 0:
        return BIG[i % len(BIG)] + f"\nrun {i}\n", "Bash", False
    if kind == 1:
        return f"small output {i}", "Bash", False
    if kind == 2:
        return GREP + f"\n{i}", "Grep", False
    if kind == 3:
        return "\n".join(f"{n:>6}\u2192line {n} of file {i}" for n in range(300)), "Read", False
    if kind == 4:
        return BIG[(i + 1) % len(BIG)][:1500] + f"\nerror {i}", "Bash", True
    if kind == 5:
        return "é✓😀 \x01 \"quoted\" \\ " * 10 + str(i), "Bash", False
    return BIG[(i + 2) % len(BIG)] + f"\nagain {i}", "Bash", False


def conversation(turns: int, first: str = "Fix the tests.", ids: str = "toolu") -> list[dict]:
    msgs = [{"role": "user", "content": [{"type": "text", "text": first}]}]
    for i in range(turns):
        out, tool, err = output_for(i)
        msgs += tool_turn(i, out, tool, err, ids)
    return msgs


def body(messages: list[dict], *, cache_last: bool = True, system: str = "sys",
         seq: int = 0, order: str = "claude") -> bytes:
    msgs = json.loads(json.dumps(messages))
    if cache_last and msgs and isinstance(msgs[-1]["content"], list):
        msgs[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    doc = {"model": "claude-x", "messages": msgs,
           "system": [{"type": "text", "text": f"x-anthropic-billing-header: cch={seq:05x};"},
                      {"type": "text", "text": system}],
           "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
           "max_tokens": 100, "stream": True}
    if order == "system-first":
        doc = {"model": doc.pop("model"), "system": doc.pop("system"), **doc}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- the properties --------------------------------------------------------------------------------


def test_a_growing_conversation_is_reused_and_identical(worlds):
    full, memo = worlds
    msgs = conversation(0)
    for i in range(14):
        out, tool, err = output_for(i)
        msgs += tool_turn(i, out, tool, err)
        same(full, memo, body(msgs, seq=i))
    assert memo.turns >= 12  # every turn after the first came from the memo


def test_a_compact_tail_is_read_in_one_parse(worlds, monkeypatch):
    # The messages after the shared ones are parsed at once (`parsed_tail`); the slower scan is
    # only for bodies it cannot prove, such as one with spaces after its commas.
    full, memo = worlds
    scans = []
    real = jsonspan.elements_after
    monkeypatch.setattr(jsonspan, "elements_after", lambda raw, pos: scans.append(pos) or
                        real(raw, pos))
    msgs = conversation(0)
    for i in range(10):
        out, tool, err = output_for(i)
        msgs += tool_turn(i, out, tool, err)
        same(full, memo, body(msgs, seq=i))
        if i == 0:
            scans.clear()  # (a full pass reads the whole array)
    assert memo.turns == 9 and scans == []
    spaced = body(msgs + tool_turn(10, "ok"), seq=10).replace(b'"text","text"', b'"text", "text"')
    same(full, memo, spaced)
    assert len(scans) == 1


def test_rewritten_outputs_are_replayed_with_the_same_bytes_turn_after_turn(worlds):
    full, memo = worlds
    msgs = conversation(0)
    forwarded = []
    for i in range(8):
        msgs += tool_turn(i, BIG[i % len(BIG)] + f"\n{i}")
        res = same(full, memo, body(msgs, seq=i))
        forwarded.append(res.body)
    # turn N's rewritten block is in every later forwarded body, byte for byte
    first_lit = json.loads(forwarded[0])["messages"][2]["content"][0]["content"]
    lit = json.dumps(first_lit, ensure_ascii=False).encode()
    assert all(lit in b for b in forwarded[1:])


def test_history_forwarded_unchanged_stays_unchanged_when_another_session_rewrites_it(worlds):
    # A resumed copy of a conversation (a new session id) forwards output X as history before
    # the original session compresses X. The resumed conversation's provider cache holds X as
    # it was sent: its memo keeps sending X so. (A full pass, with no memory of what this
    # conversation sent, replays the ledger's rewrite: one cache miss; that is what the memo's
    # periodic full pass and a restart do too.)
    full, memo = worlds
    x = tool_turn(1, BIG[0] + "\nfirst seen as history")
    resumed = conversation(0) + x + tool_turn(2, "small output 2")
    first = same(full, memo, body(resumed, seq=1), session="resumed")
    assert first.body is None  # the ledger is empty: X is history, nothing to replay
    original = same(full, memo, body(conversation(0) + x, seq=2), session="original")
    assert original.body is not None  # X is live there: compressed, in the ledger
    resumed += tool_turn(3, "small output 3")
    sent = memo.send(body(resumed, seq=3), session="resumed")
    assert memo.turns == 1 and sent.body is None
    assert full.send(body(resumed, seq=3), session="resumed").manifest[0]["action"] == "replayed"


def test_a_live_turn_sent_again_locates_what_it_did_not_need_before(worlds):
    # The newest user turn holds a big log and a big Read output (excluded). With the ledger
    # empty, the Read output is never looked for; the log's rewrite makes the ledger's floor
    # reach it, so the same live turn sent again (a retry, then more typed by the user) must
    # find its bytes from the memo exactly as a full pass does.
    full, memo = worlds
    read = "\n".join(f"{n:>6}\u2192line {n} of a long file" for n in range(3000))
    msgs = conversation(0) + [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_b", "name": "Bash", "input": {}},
            {"type": "tool_use", "id": "toolu_r", "name": "Read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": BIG[1]},
            {"type": "tool_result", "tool_use_id": "toolu_r", "content": read}]}]
    first = same(full, memo, body(msgs, cache_last=False, seq=1))
    assert [e["action"] for e in first.manifest] == ["compressed", "excluded"]
    same(full, memo, body(msgs, cache_last=False, seq=2))
    msgs += [{"role": "user", "content": [{"type": "text", "text": "and the tests?"}]}]
    again = same(full, memo, body(msgs, cache_last=False, seq=3))
    assert memo.turns == 2 and again.manifest[1]["bytes_before"] > len(read)


@pytest.mark.parametrize("edit", ["earlier output", "earlier text", "first message", "system"])
def test_an_edited_history_is_worked_out_anew(worlds, edit):
    full, memo = worlds
    msgs = conversation(8)
    same(full, memo, body(msgs, seq=1))
    msgs = json.loads(json.dumps(msgs))
    if edit == "earlier output":
        msgs[4]["content"][0]["content"] += " (edited)"
    elif edit == "earlier text":
        msgs[3]["content"][0]["text"] = "a different step"
    elif edit == "first message":
        msgs[0]["content"][0]["text"] = "Something else."
    msgs += tool_turn(99, BIG[0] + "\nnew")
    same(full, memo, body(msgs, seq=2, system="sys2" if edit == "system" else "sys"))


def test_truncated_history_and_outputs_live_again(worlds):
    full, memo = worlds
    msgs = conversation(10)
    same(full, memo, body(msgs, seq=1))
    # the client drops its last turns (an undo): the old last user message is live again
    same(full, memo, body(msgs[:-4], seq=2))
    same(full, memo, body(msgs[:-3], seq=3))  # ends with an assistant message
    same(full, memo, body(msgs[:5], seq=4))
    same(full, memo, body(msgs, seq=5))


def test_forks_under_one_session_id_alternate(worlds):
    full, memo = worlds
    base = conversation(6)
    a = base + tool_turn(50, BIG[1] + "\nfork a")
    b = base + tool_turn(60, BIG[2] + "\nfork b")
    for n in range(4):
        a = a + tool_turn(70 + n, output_for(n)[0])
        b = b + tool_turn(80 + n, output_for(n + 3)[0])
        same(full, memo, body(a, seq=2 * n))
        same(full, memo, body(b, seq=2 * n + 1))


def test_a_compacted_history_starts_over(worlds):
    full, memo = worlds
    msgs = conversation(9)
    same(full, memo, body(msgs, seq=1))
    compact = [{"role": "user", "content": [{"type": "text", "text": "Summary of the work so far."}]}]
    compact += tool_turn(200, BIG[3] + "\ncompacted")
    same(full, memo, body(compact, seq=2))
    compact += tool_turn(201, BIG[4] + "\nafter")
    same(full, memo, body(compact, seq=3))


def test_a_restart_forgets_the_memo_but_not_the_ledger(worlds):
    full, memo = worlds
    msgs = conversation(0)
    for i in range(10):
        msgs += tool_turn(i, output_for(i)[0], output_for(i)[1], output_for(i)[2])
        if i == 5:
            full.restart()
            memo.restart()
        same(full, memo, body(msgs, seq=i))


def test_other_tenants_and_sessions_never_share_a_memo(worlds):
    full, memo = worlds
    msgs = conversation(0)
    for i in range(6):
        msgs += tool_turn(i, BIG[i % len(BIG)] + f"\n{i}")
        b = body(msgs, seq=i)
        for tenant, session in (("t:a", "s1"), ("t:b", "s1"), ("t:a", "s2")):
            same(full, memo, b, tenant=tenant, session=session)
    # each tenant's ledger got its own rewrites: t:b never replays t:a's bytes on faith
    keys = {k for k in memo.rw.memo._turns}
    assert {("t:a", "s1"), ("t:b", "s1"), ("t:a", "s2")} == {k[:2] for k in keys}


def test_bodies_with_system_first_and_odd_spacing(worlds):
    full, memo = worlds
    msgs = conversation(0)
    for i in range(6):
        msgs += tool_turn(i, output_for(i)[0])
        same(full, memo, body(msgs, seq=i, order="system-first"))
    pretty = json.dumps(json.loads(body(msgs, seq=9)), indent=2).encode()
    same(full, memo, pretty)


def test_a_later_duplicate_messages_key_is_never_missed(worlds):
    full, memo = worlds
    msgs = conversation(5)
    same(full, memo, body(msgs, seq=1))
    more = msgs + tool_turn(40, BIG[5] + "\ndup")
    raw = body(more, seq=2)
    other = json.dumps(conversation(2), separators=(",", ":")).encode()
    dup = raw[:-1] + b',"messages":' + other + b"}"  # parsers keep the last one
    same(full, memo, dup)


# A client's history over time: each step keeps, edits, drops or extends what came before.
OPS = st.lists(st.sampled_from(["turn", "turn", "turn", "edit", "truncate", "compact", "restart",
                                "other-session", "resend"]), min_size=3, max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, seed=st.integers(0, 1000))
def test_any_history_the_client_may_send(tmp_path_factory, ops, seed):
    tmp = tmp_path_factory.mktemp("prop")
    full, memo = World(tmp / "full", False), World(tmp / "memo", True)
    try:
        msgs = conversation(1)
        n = seed
        for step, op in enumerate(ops):
            n += 1
            if op == "turn":
                out, tool, err = output_for(n)
                msgs = msgs + tool_turn(n, out, tool, err)
            elif op == "edit" and len(msgs) > 2:
                msgs = json.loads(json.dumps(msgs))
                msgs[1]["content"][0]["text"] = f"edited {n}"
            elif op == "truncate" and len(msgs) > 3:
                msgs = msgs[: max(1, len(msgs) - 2 - n % 3)]
            elif op == "compact":
                msgs = [{"role": "user", "content": [{"type": "text", "text": f"summary {n}"}]}]
            elif op == "restart":
                memo.restart()
                full.restart()
            elif op == "other-session":
                same(full, memo, body(conversation(2 + n % 3, ids="other"), seq=step),
                     session="other")
                continue
            same(full, memo, body(msgs, seq=step))
    finally:
        full.close()
        memo.close()


# -- the memo itself -------------------------------------------------------------------------------


def _turn(body_: bytes) -> Turn:
    first, spans, _ = jsonspan.array_elements(body_, "messages")
    return Turn(body=body_, spans=spans, assistants=[], names=[[] for _ in spans], known=[],
                refreshed=0.0)


def test_shared_counts_identical_leading_messages():
    msgs = conversation(4)
    old = body(msgs, seq=1)
    t = _turn(old)
    assert t.shared(old) == len(msgs)
    assert t.shared(body(msgs + tool_turn(9, "x"), seq=2)) == len(msgs) - 1  # cache_control moved
    edited = json.loads(json.dumps(msgs))
    edited[3]["content"][0]["text"] = "changed"
    assert t.shared(body(edited, seq=1)) == 3
    assert t.shared(b'{"model":"other"}') == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]),
                                   st.sampled_from(["Bash", "Read", "Grep"])), max_size=3),
                max_size=6), st.data())
def test_names_before_is_the_fold_of_the_messages_names(names, data):
    """Whatever the messages define (nothing after `j`, repeated ids, names in the messages a
    turn drops): the names of the first `j` messages, as folding them one by one gives."""
    names_all: dict[str, str] = {}
    for pairs in names:
        names_all.update(pairs)
    t = Turn(body=b"", spans=[(0, 0)] * len(names), assistants=[], names=names, known=[],
             refreshed=0.0, names_all=data.draw(st.sampled_from([names_all, None])))
    for j in range(len(names) + 1):
        expected: dict[str, str] = {}
        for pairs in names[:j]:
            expected.update(pairs)
        got = t.names_before(j)
        assert got == expected
        got["zz"] = "x"  # the caller's own dict: the turn is never changed through it
    assert t.names_all in (names_all, None) and "zz" not in (t.names_all or {})


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), st.integers(0, 15), st.booleans(), st.integers(0, 3))
def test_shared_is_the_count_of_identical_leading_messages(turns, edit_at, cache_last, more):
    """Against counting message by message: an edit anywhere (or none), the cache marker
    moved or not, messages appended or not."""
    msgs = conversation(turns)
    t = _turn(body(msgs, seq=1))
    new = json.loads(json.dumps(msgs)) + tool_turn(50, "x") * more
    if edit_at < len(new):
        new[edit_at]["content"].insert(0, {"type": "text", "text": "edited"})
    new_body = body(new, seq=2, cache_last=cache_last)
    _, new_spans, _ = jsonspan.array_elements(new_body, "messages")
    expected = 0
    for (a, b), (c, d) in zip(t.spans, new_spans):
        if t.body[a:b] != new_body[c:d]:
            break
        expected += 1
    assert t.shared(new_body) == expected


def test_the_memo_is_bounded_by_sessions_and_bytes():
    m = TurnMemo(max_sessions=3, max_bytes=1000, clock=lambda: 0.0)
    for i in range(5):
        m.put(("t", i), Turn(b"x" * 100, [], [], [], [], 0.0))
    assert len(m) == 3 and m.bytes == 300 and m.get(("t", 0)) is None
    m.put(("t", "big"), Turn(b"x" * 600, [], [], [], [], 0.0))  # over a quarter: not kept
    assert m.get(("t", "big")) is None
    for i in range(5, 9):
        m.put(("t", i), Turn(b"x" * 240, [], [], [], [], 0.0))
    assert m.bytes <= 1000


def test_a_memo_is_refreshed_through_the_ledger_now_and_then():
    now = [0.0]
    m = TurnMemo(clock=lambda: now[0])
    m.put(("t", 1), Turn(b"x", [], [], [], [], 0.0))
    assert m.get(("t", 1)) is not None
    now[0] = 10_000.0
    assert m.get(("t", 1)) is None  # a full pass looks every entry up (and refreshes it)


def test_the_engine_gives_the_same_plans_and_event_lines_either_way(tmp_path):
    from headroom_core.flow import RequestIn
    from tests.runtime_util import rig

    fast = rig(tmp_path / "fast", events="off")
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "salt").write_bytes((tmp_path / "fast" / "salt").read_bytes())
    slow = rig(tmp_path / "slow", events="off")  # same salt: same tenants and handles
    slow.engine._turn_applies = lambda state: False  # always the full pass
    headers = [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json"),
               (b"X-Claude-Code-Session-Id", b"sess-42"), (b"anthropic-beta", b"b1")]
    msgs = conversation(0)
    records = []
    try:
        for i in range(10):
            out, tool, err = output_for(i)
            msgs += tool_turn(i, out, tool, err)
            raw = body(msgs, seq=i)
            plans = []
            for r in (fast, slow):
                plan = r.handle_request(RequestIn(f"f{i}", "POST", "https", "api.anthropic.com",
                                                  443, "/v1/messages", headers, raw, False))
                r.mark_forwarded(plan.state)
                rec = r.engine.finish(plan.state, status=200, fields=[], body=b"{}")
                plans.append((plan.body, plan.fields, rec))
            (fb, ff, frec), (sb, sf, srec) = plans
            assert (fb, ff) == (sb, sf)
            for rec in (frec, srec):
                rec.pop("ts"), rec.pop("duration_ms")
            assert frec == srec
            records.append(frec)
        assert fast.engine.rewriter.memo._turns  # the fast engine did use its memo
        assert any(r["decisions"]["rewrite"]["actions"].get("replayed") for r in records)
    finally:
        fast.close()
        slow.close()
