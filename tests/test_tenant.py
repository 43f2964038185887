"""Tenants: one per distinct set of credentials; never a credential in the id."""

import pytest

from headroom_core import tenant

SALT = b"s" * 16


def tid(*fields, namespace=None):
    return tenant.tenant_id(list(fields), SALT, namespace)


@pytest.mark.parametrize("name", [b"authorization", b"api-key", b"chatgpt-account-id",
                                  b"openai-organization", b"openai-project"])
def test_a_gateway_placeholder_key_beside_each_users_credential_makes_two_tenants(name):
    value_a = b"Bearer user-a" if name == b"authorization" else b"user-a"
    value_b = b"Bearer user-b" if name == b"authorization" else b"user-b"
    a = tid((b"x-api-key", b"gateway"), (name, value_a))
    b = tid((b"x-api-key", b"gateway"), (name, value_b))
    alone = tid((b"x-api-key", b"gateway"))
    assert len({a, b, alone}) == 3


def test_order_case_and_bearer_spelling_do_not_matter():
    a = tid((b"X-Api-Key", b"k"), (b"Authorization", b"Bearer t"))
    b = tid((b"authorization", b"bearer  t "), (b"x-api-key", b" k"))
    assert a == b


def test_one_credential_keeps_the_tenant_of_earlier_versions():
    import hashlib
    want = "t:" + hashlib.blake2b(b"sk-1", key=SALT, digest_size=12).hexdigest()
    assert tid((b"x-api-key", b"sk-1")) == tid((b"Authorization", b"Bearer sk-1")) == want


def test_no_credential_is_anonymous_and_a_namespace_wins():
    assert tid((b"content-type", b"x")) == tenant.ANONYMOUS
    assert tid((b"x-api-key", b"")) == tenant.ANONYMOUS
    assert tid((b"x-api-key", b"k"), namespace="ci") == "ns:ci" == tid(namespace="ci")


def test_duplicate_headers_all_count():
    one = tid((b"authorization", b"Bearer a"))
    two = tid((b"authorization", b"Bearer a"), (b"authorization", b"Bearer b"))
    assert one != two


def test_ids_never_contain_the_credential_and_differ_per_salt():
    t = tid((b"x-api-key", b"sk-ant-api03-SECRET"))
    assert "SECRET" not in t and t.startswith("t:") and len(t) == 26
    assert t != tenant.tenant_id([(b"x-api-key", b"sk-ant-api03-SECRET")], b"t" * 16)


def test_kind_comes_from_the_main_credential():
    assert tenant.identify([(b"x-api-key", b"sk-ant-api03-x")], SALT)[1] == "api_key"
    assert tenant.identify([(b"authorization", b"Bearer sk-ant-oat01-x")], SALT)[1] == "oauth"
    assert tenant.identify([(b"authorization", b"Bearer eyJa.b.c")], SALT)[1] == "oauth"
    assert tenant.identify([], SALT) == (tenant.ANONYMOUS, "none")
    # a placeholder key with an OAuth bearer behind it: the key decides, as before
    assert tenant.identify([(b"x-api-key", b"gw"), (b"authorization", b"Bearer sk-ant-oat1")],
                           SALT)[1] == "api_key"
