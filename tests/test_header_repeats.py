"""A connection's repeated header block reuses what was read from it (`headers.Repeats`,
`Engine.strip_headers(fields, conn)`): never for a block that differs in anything but the value
of one `content-length`, never across connections or engines."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import headers
from headroom_core.flow import RequestIn
from tests.runtime_util import rig

BODY = json.dumps({"model": "claude-x", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()

BLOCK = (
    (b"Host", b"api.anthropic.com"),
    (b"x-api-key", b"sk-ant-api-1"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"120"),
    (b"X-Claude-Code-Session-Id", b"sess-1"),
    (b"anthropic-beta", b"a,b"),
)


def with_(block, name: bytes, value: bytes | None):
    """`block` with the first field named `name` (any case) given `value` (None: removed)."""
    out = []
    done = False
    for n, v in block:
        if not done and n.lower() == name.lower():
            done = True
            if value is not None:
                out.append((n, value))
        else:
            out.append((n, v))
    return tuple(out)


@pytest.fixture
def engine(tmp_path):
    e = rig(tmp_path, events="off")
    yield e
    e.close()


def fresh(engine, fields):
    """What the engine reads from `fields` with no memory of earlier blocks."""
    return engine.strip_headers(list(fields))


def same_plan(a, b) -> bool:
    return (a.kept == b.kept and a.stripped == b.stripped and a.controls == b.controls
            and a.index == b.index)


def request(engine, fields, conn):
    hp = engine.strip_headers(fields, conn)
    return engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                           "/v1/messages", hp.kept, BODY, False), hp)


# -- Repeats ----------------------------------------------------------------------------------

def test_a_repeat_but_for_content_length_is_found_with_its_new_length():
    r = headers.Repeats()
    r.keep("c1", BLOCK, "plan")
    assert r.find("c1", BLOCK) == ("plan", b"120")
    assert r.find("c1", with_(BLOCK, b"content-length", b"99999")) == ("plan", b"99999")
    assert r.find("c1", list(with_(BLOCK, b"content-length", b"7"))) == ("plan", b"7")


@pytest.mark.parametrize("changed", [
    with_(BLOCK, b"x-api-key", b"sk-ant-api-2"),  # another credential: another tenant
    with_(BLOCK, b"x-claude-code-session-id", b"sess-2"),
    with_(BLOCK, b"anthropic-beta", b"a"),
    with_(BLOCK, b"x-api-key", None),  # a field fewer
    BLOCK + ((b"x-headroom-bypass", b"1"),),  # a field more (an internal one)
    tuple((n.lower(), v) for n, v in BLOCK),  # the same names in another case
    tuple(reversed(BLOCK)),  # another order
    BLOCK[:3] + ((b"content-length", b"120"),) + BLOCK[4:],  # content-length spelled otherwise
    BLOCK[:2] + (BLOCK[3], BLOCK[2]) + BLOCK[4:],  # content-length moved
])
def test_anything_else_that_differs_is_not_a_repeat(changed):
    r = headers.Repeats()
    r.keep("c1", BLOCK, "plan")
    assert r.find("c1", changed) is None


def test_connections_are_apart_forgotten_and_bounded():
    r = headers.Repeats(size=2)
    r.keep("c1", BLOCK, "one")
    assert r.find("c2", BLOCK) is None
    r.keep("c2", BLOCK, "two")
    r.keep("c3", BLOCK, "three")  # the oldest connection goes
    assert len(r) == 2 and r.find("c1", BLOCK) is None and r.find("c3", BLOCK) == ("three", b"120")
    r.forget("c3")
    assert r.find("c3", BLOCK) is None and len(r) == 1


def test_a_block_with_two_content_lengths_is_not_kept():
    r = headers.Repeats()
    r.keep("c1", BLOCK, "plan")
    twice = BLOCK + ((b"content-length", b"120"),)
    r.keep("c1", twice, "other")
    assert r.find("c1", twice) is None and r.find("c1", BLOCK) is None


def test_a_block_without_content_length_must_repeat_exactly():
    block = with_(BLOCK, b"content-length", None) + ((b"Transfer-Encoding", b"chunked"),)
    r = headers.Repeats()
    r.keep("c1", block, "plan")
    assert r.find("c1", block) == ("plan", None)
    assert r.find("c1", with_(block, b"transfer-encoding", b"gzip, chunked")) is None


# -- the engine ---------------------------------------------------------------------------------

def test_a_repeat_gives_the_plan_a_fresh_read_gives(engine):
    first = engine.strip_headers(BLOCK, "c1")
    again = engine.strip_headers(with_(BLOCK, b"content-length", b"4567"), "c1")
    assert same_plan(again, fresh(engine, with_(BLOCK, b"content-length", b"4567")))
    assert again.index[b"content-length"] == [b"4567"]
    assert first.index[b"content-length"] == [b"120"]  # the earlier plan is left as it was
    assert again.derived is first.derived  # what was worked out from the headers is shared


def test_tenant_and_session_follow_the_headers_on_one_connection(engine):
    a = request(engine, BLOCK, "c1").state
    b = request(engine, with_(BLOCK, b"x-api-key", b"sk-ant-api-2"), "c1").state
    c = request(engine, with_(BLOCK, b"X-Claude-Code-Session-Id", b"sess-2"), "c1").state
    d = request(engine, with_(BLOCK, b"content-length", b"1"), "c1").state
    assert a.tenant != b.tenant and a.session.id != b.session.id  # another tenant
    assert c.tenant == a.tenant and c.session.id not in (a.session.id, b.session.id)
    assert (d.tenant, d.session) == (a.tenant, a.session)  # a repeat
    # each the same as a connection-less read of the same block
    for fields, state in ((BLOCK, a), (with_(BLOCK, b"x-api-key", b"sk-ant-api-2"), b)):
        plain = engine.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                                "/v1/messages", list(fields), BODY, False)).state
        assert (plain.tenant, plain.session) == (state.tenant, state.session)


def test_internal_headers_are_stripped_every_time(engine):
    block = BLOCK + ((b"X-Headroom-Bypass", b"1"),)
    for _ in range(3):
        hp = engine.strip_headers(block, "c1")
        assert hp.stripped == [b"X-Headroom-Bypass"] and hp.controls.bypass
        assert all(not n.lower().startswith(b"x-headroom-") for n, _ in hp.kept)
    hp = engine.strip_headers(BLOCK, "c1")  # the next request without it
    assert hp.stripped == [] and not hp.controls.bypass


def test_a_forgotten_connection_and_another_engine_share_nothing(engine, tmp_path):
    first = engine.strip_headers(BLOCK, "c1")
    engine.forget_connection("c1")
    assert engine.strip_headers(BLOCK, "c1").derived is not first.derived
    request(engine, BLOCK, "c2")
    other = rig(tmp_path / "other", events="off")  # another salt: other tenant ids
    try:
        hp = engine.strip_headers(BLOCK, "c2")
        assert hp.derived  # this engine worked out tenant and session
        state = other.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                               "/v1/messages", hp.kept, BODY, False), hp).state
        own = other.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                             "/v1/messages", list(BLOCK), BODY, False)).state
        assert state.tenant == own.tenant != request(engine, BLOCK, "c2").state.tenant
    finally:
        other.close()


_names = st.sampled_from([b"Host", b"host", b"x-api-key", b"X-Api-Key", b"authorization",
                          b"Content-Length", b"content-length", b"x-claude-code-session-id",
                          b"X-Claude-Code-Agent-Id", b"anthropic-beta", b"cache-control",
                          b"x-headroom-bypass", b"X-Headroom-Cache", b"proxy-connection",
                          b"session_id", b"x-client-request-id"])
_values = st.sampled_from([b"", b"1", b"true", b"sk-ant-api-1", b"sk-ant-api-2", b"Bearer x",
                           b"sess-1", b"sess-2", b"no-store", b"a,b", b"120", b" 7 "])
_blocks = st.lists(st.tuples(_names, _values), max_size=8).map(tuple)


_repeat = st.tuples(st.just("repeat"), _values)
_edit = st.tuples(st.just("edit"), st.integers(0, 7), _values)
_steps = st.lists(st.one_of(_blocks, _repeat, _edit), min_size=1, max_size=6)


def _played(steps):
    """Blocks from steps: a new block, the previous one with another content-length, or the
    previous one with one value changed."""
    prev = BLOCK
    for step in steps:
        if step and step[0] == "repeat":
            block = tuple((n, step[1] if n.lower() == b"content-length" else v) for n, v in prev)
        elif step and step[0] == "edit":
            i = step[1] % max(1, len(prev))
            block = prev[:i] + ((prev[i][0], step[2]),) + prev[i + 1:] if prev else prev
        else:
            block = step
        yield block
        prev = block


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_whatever_blocks_follow_each_other_the_plan_is_a_fresh_reads(tmp_path_factory, steps):
    e = rig(tmp_path_factory.mktemp("r"), events="off")
    try:
        for fields in (BLOCK, *_played(steps)):
            hp = e.strip_headers(fields, "conn")
            want = fresh(e, fields)
            assert same_plan(hp, want)
            assert e._tenant(hp) == e.tenants.identify(want.index)
            for provider in ("anthropic", "openai"):
                t = e._tenant(hp)[0]
                assert e._header_session(hp, provider, t) == e._header_session(want, provider, t)
    finally:
        e.close()
