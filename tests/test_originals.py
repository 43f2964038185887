import hashlib

import pytest

from headroom_core.originals import handle_for, is_handle
from headroom_runtime.diskoriginals import Originals

TEXT = "full tool output é 😀\n" * 50


@pytest.fixture
def originals(tmp_path):
    with Originals(tmp_path / "orig") as o:
        yield o


def test_put_then_get(originals):
    h = originals.put("t:a", TEXT, salt=b"s" * 16)
    assert is_handle(h)
    assert originals.get(h) == TEXT
    assert originals.get(h, tenant="t:a") == TEXT


def test_put_is_idempotent(originals):
    assert originals.put("t:a", TEXT, salt=b"k") == originals.put("t:a", TEXT, salt=b"k")


def test_handles_differ_across_tenants_and_salts():
    hs = {handle_for(salt, tenant, TEXT) for salt in (b"one", b"two") for tenant in ("t:a", "t:b")}
    assert len(hs) == 4
    assert handle_for(b"one", "t:a", TEXT) != handle_for(b"one", "t:a", TEXT + ".")


def test_another_tenant_cannot_derive_or_use_a_handle(originals):
    salt = b"secret-salt-1234"
    h = originals.put("t:victim", TEXT, salt=salt)
    # Same text stored by the attacker: a different handle, which says nothing about the victim's.
    mine = originals.put("t:attacker", TEXT, salt=salt)
    assert mine != h
    # Without the salt, the unkeyed hash of the text is no use either.
    assert hashlib.blake2b(TEXT.encode(), digest_size=16).hexdigest() != h
    assert originals.get(h, tenant="t:attacker") is None


@pytest.mark.parametrize("handle", ["", "../../etc/passwd", "A" * 32, "0" * 31, "0" * 33,
                                    "g" * 32, None, 42])
def test_malformed_or_unknown_handles(originals, handle):
    assert originals.get(handle) is None


def test_unknown_handle(originals):
    assert originals.get("0" * 32) is None


def test_survives_a_restart(tmp_path):
    with Originals(tmp_path / "o") as o:
        h = o.put("t", TEXT, salt=b"s")
    with Originals(tmp_path / "o") as o:
        assert o.get(h) == TEXT


def test_large_originals_round_trip(originals):
    big = "line of log output\n" * 60_000  # > 1 MB, stored as a file by diskcache
    h = originals.put("t", big, salt=b"s")
    assert originals.get(h) == big


def test_lone_surrogates_are_refused_by_the_handle():
    with pytest.raises(UnicodeEncodeError):
        handle_for(b"s", "t", "bad \ud800")
