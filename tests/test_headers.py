import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import headers
from headroom_core.headers import StripRules

F = [
    (b"Host", b"api.anthropic.com"),
    (b"X-Headroom-Bypass", b"1"),
    (b"x-api-key", b"secret"),
    (b"x-HEADROOM-cache", b"bypass"),
    (b"Content-Type", b"application/json"),
    (b"x-headroom-cache", b"again"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"X-Headroomish", b"not ours"),
]


NONE = headers.StripRules((), frozenset())


def test_strip_removes_every_duplicate_and_case_variant_keeping_order_and_case():
    kept, stripped = headers.strip(F, StripRules())
    assert kept == [(b"Host", b"api.anthropic.com"), (b"x-api-key", b"secret"),
                    (b"Content-Type", b"application/json"), (b"X-Headroomish", b"not ours")]
    assert stripped == [b"X-Headroom-Bypass", b"x-HEADROOM-cache", b"x-headroom-cache",
                        b"Proxy-Connection"]


def test_configurable_prefixes_and_names():
    rules = StripRules.parse(["x-internal-", "X-Corp-"], ["x-trace"])
    kept, stripped = headers.strip(
        [(b"X-Internal-A", b"1"), (b"x-corp-b", b"2"), (b"X-Trace", b"3"), (b"X-Headroom-A", b"4")],
        rules)
    assert kept == [(b"X-Headroom-A", b"4")]
    assert len(stripped) == 3


@pytest.mark.parametrize("bad", ["x headroom", "x-a:", "", "é-"])
def test_invalid_names_rejected(bad):
    if not bad:
        assert StripRules.parse([bad]).prefixes == ()
        return
    with pytest.raises(ValueError):
        StripRules.parse([bad])


def test_controls_read_before_stripping():
    c = headers.strip_and_read(F, NONE)[2]
    assert c.bypass is True
    assert c.cache == "again"  # the last one wins
    assert headers.strip_and_read([(b"X-Headroom-Bypass", b"0")], NONE)[2].bypass is False
    assert headers.strip_and_read([(b"Cache-Control", b"max-age=0, No-Store")], NONE)[2].no_store
    assert not headers.strip_and_read([(b"cache-control", b"max-age=0")], NONE)[2].no_store


def test_get_is_case_insensitive_first_value():
    f = [(b"A", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert headers.get(f, b"a") == b"1" and headers.get(f, b"B") == b"2"
    assert headers.get(f, b"c") is None


names = st.sampled_from([b"X-Headroom-A", b"x-headroom-b", b"Accept", b"x-api-key", b"X-HEADROOM-"])


@given(st.lists(st.tuples(names, st.binary(max_size=8))))
def test_strip_property(fields):
    kept, stripped = headers.strip(fields, StripRules())
    assert all(not n.lower().startswith(b"x-headroom-") for n, _ in kept)
    assert kept == [f for f in fields if not f[0].lower().startswith(b"x-headroom-")]
    assert len(kept) + len(stripped) == len(fields)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"Accept", b"accept", b"X-Api-Key", b"Cache-Control",
                                           b"cache-control", b"x-headroom-cache", b"A-B"]),
                          st.sampled_from([b"1", b"no-store", b"x", b""])), max_size=8))
def test_the_index_holds_every_kept_value_in_wire_order(fields):
    kept, stripped, controls, index = headers.strip_and_read(fields, headers.StripRules())
    assert index == headers.index(kept)
    assert controls.no_store == any(
        n.lower() == b"cache-control" and v == b"no-store" for n, v in kept)
    assert [n for n, _ in fields if n.lower().startswith(b"x-headroom-")] == stripped
