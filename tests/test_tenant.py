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


@pytest.mark.parametrize("fields,kind", [
    ([(b"x-api-key", b"sk-ant-api03-x")], "api_key"),
    ([(b"authorization", b"Bearer sk-proj-x")], "api_key"),
    ([(b"api-key", b"azure")], "api_key"),
    ([(b"authorization", b"Bearer sk-ant-oat01-x")], "oauth"),
    ([(b"authorization", b"Bearer eyJa.b.c")], "oauth"),
    ([], "none"),
    ([(b"cookie", b"a=b")], "none"),  # a gateway's own credential only
    # subscription traffic stays untouched whatever rides along: a gateway's placeholder key,
    # an OAuth token in the key header, a ChatGPT account named beside an API-style key
    ([(b"x-api-key", b"gw"), (b"authorization", b"Bearer sk-ant-oat1")], "oauth"),
    ([(b"X-Api-Key", b"fake"), (b"Authorization", b"bearer sk-ant-oat01-x")], "oauth"),
    ([(b"api-key", b"placeholder"), (b"authorization", b"Bearer eyJh.e.s")], "oauth"),
    ([(b"x-api-key", b"sk-ant-oat01-in-the-key-header")], "oauth"),
    ([(b"authorization", b"Bearer sk-proj-x"), (b"chatgpt-account-id", b"acct")], "oauth"),
    ([(b"x-api-key", b"k"), (b"openai-organization", b"org")], "api_key"),
])
def test_kind_is_oauth_when_any_credential_is_a_subscription(fields, kind):
    assert tenant.identify(fields, SALT)[1] == kind
    assert tenant.credential_kind(fields) == kind
    assert tenant.Tenants(SALT, None).identify(
        {n.lower(): [v] for n, v in fields})[1] == kind
