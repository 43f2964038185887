"""Headroom's own endpoints: who may ask, which original a request may see, what health says."""

import json

import pytest

from headroom_core import tenant
from headroom_core.local import LocalEndpoints, is_loopback
from headroom_core.originals import handle_for

SALT = b"x" * 16
TEXT = "".join(f"row {i}\n" for i in range(1, 11))


class Originals:
    def __init__(self):
        self.kept = {}

    def put(self, owner, text, *, salt):
        h = handle_for(salt, owner, text)
        self.kept[h] = (owner, text)
        return h

    def get(self, handle, *, tenant=None):
        owner, text = self.kept.get(handle, (None, None))
        return text if text is not None and tenant in (None, owner) else None

    def close(self):
        pass


def endpoints(**kw):
    args = dict(clients=("127.0.0.0/8", "::1/128"), local_hosts=frozenset({"127.0.0.1:8080"}),
                namespace=None, salt=SALT, originals=Originals(),
                health=lambda: {"status": "ok", "store": "off"})
    args.update(kw)
    return LocalEndpoints(**args)


ALICE = [(b"x-api-key", b"gateway"), (b"authorization", b"Bearer alice")]
BOB = [(b"x-api-key", b"gateway"), (b"authorization", b"Bearer bob")]


def kept_by_alice(ep):
    owner = tenant.tenant_id(ALICE, SALT)
    return ep.originals.put(owner, TEXT, salt=SALT)


def ask(ep, handle, query="", fields=(), client="127.0.0.1", method="GET"):
    return ep.answer("ccr", method, f"/ccr/{handle}", query, list(fields), client)


def test_kind_in_reverse_mode_by_path_alone_and_in_regular_mode_only_on_the_listener():
    ep = endpoints()
    assert ep.kind("GET", "anything", 443, "/ccr/abc", to_listener=True) == "ccr"
    assert ep.kind("GET", "anything", 443, "/headroom/health", to_listener=True) == "health"
    assert ep.kind("GET", "api.openai.com", 443, "/ccr/abc", to_listener=False) is None
    assert ep.kind("GET", "127.0.0.1", 8080, "/ccr/abc", to_listener=False) == "ccr"
    assert ep.kind("GET", "headroom.local", 80, "/ccr/abc", to_listener=False) == "ccr"  # old markers
    assert ep.kind("GET", "127.0.0.1", 8080, "/v1/messages", to_listener=False) is None


def test_the_agents_own_shell_without_credential_gets_the_original_and_slices():
    ep = endpoints()
    h = kept_by_alice(ep)
    status, fields, body = ask(ep, h)
    assert status == 200 and body.decode() == TEXT
    assert (b"content-type", b"text/plain; charset=utf-8") in fields
    assert ask(ep, h, "lines=2-3")[2] == b"row 2\nrow 3\n"
    assert ask(ep, h, "grep=row 1$")[2] == b"1:row 1\n"
    assert ask(ep, h, "head=1")[2] == b"row 1\n" and ask(ep, h, "tail=1")[2] == b"row 10\n"
    assert ask(ep, h, client="::1")[0] == 200
    assert ask(ep, h, client="::ffff:127.0.0.1")[0] == 200


def test_an_original_is_served_to_its_tenant_and_never_to_another():
    ep = endpoints()
    h = kept_by_alice(ep)
    assert ask(ep, h, fields=ALICE)[0] == 200
    status, _, body = ask(ep, h, fields=BOB)
    assert status == 404 and TEXT.encode() not in body
    assert ask(ep, h, fields=[(b"x-api-key", b"gateway")])[0] == 404  # the placeholder alone


def test_clients_outside_the_allowed_networks_get_403():
    ep = endpoints()
    h = kept_by_alice(ep)
    for client in ("10.0.0.5", "192.168.1.2", None, "", "not-an-ip", "2001:db8::1"):
        status, _, body = ask(ep, h, client=client)
        assert status == 403 and TEXT.encode() not in body
    assert ep.answer("health", "GET", "/headroom/health", "", [], "10.0.0.5")[0] == 403


def test_opened_networks_need_the_owners_credential_from_afar():
    ep = endpoints(clients=("127.0.0.0/8", "10.0.0.0/8"))
    h = kept_by_alice(ep)
    assert ask(ep, h, client="10.1.2.3")[0] == 401  # no credential, not loopback
    # (told before its query is even looked at: a pattern costs work)
    assert ask(ep, h, "grep=(", client="10.1.2.3")[0] == 401
    assert ask(ep, h, client="10.1.2.3", fields=ALICE)[0] == 200
    assert ask(ep, h, client="10.1.2.3", fields=BOB)[0] == 404


@pytest.mark.parametrize("handle,query,status", [
    ("not-hex", "", 400),
    ("ABCDEF" + "0" * 26, "", 400),  # handles are lowercase
    ("0" * 31, "", 400),
    ("0" * 32, "", 404),
    (None, "lines=9-3", 400),
    (None, "grep=(", 400),
    (None, "grep=(a|a)%2B$", 200),  # cheap on this text: nothing to backtrack over
    (None, "context=99999999&grep=x", 400),
    (None, "bogus=1", 400),
])
def test_bad_requests(handle, query, status):
    ep = endpoints()
    h = kept_by_alice(ep) if handle is None else handle
    got, fields, body = ask(ep, h, query)
    assert got == status
    if status == 400:
        assert body.startswith(b"headroom: ") and TEXT.encode() not in body


def test_methods_other_than_get_are_refused():
    ep = endpoints()
    h = kept_by_alice(ep)
    status, fields, _ = ask(ep, h, method="POST")
    assert status == 405 and (b"allow", b"GET, HEAD") in fields


def test_health_is_json():
    status, fields, body = endpoints().answer("health", "GET", "/headroom/health", "", [],
                                              "127.0.0.1")
    assert status == 200 and json.loads(body) == {"status": "ok", "store": "off"}


def test_no_originals_store_says_so():
    status, _, body = ask(endpoints(originals=None), "0" * 32)
    assert status == 404 and b"compression is off" in body


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.5.5.5")
    assert not is_loopback("10.0.0.1") and not is_loopback(None) and not is_loopback("x")


BROWSER = [(b"sec-fetch-site", b"same-origin"), (b"sec-fetch-mode", b"cors"),
           (b"sec-fetch-dest", b"empty"), (b"user-agent", b"Mozilla/5.0")]
KEY = "k3y-of-this-listener"


def unchecked(ep, kind, path, query="", fields=(), client="127.0.0.1"):
    """A request where the host name the client used is unknown (reverse mode)."""
    return ep.answer(kind, "GET", path, query, list(fields), client, False)


@pytest.mark.parametrize("kind,path", [("ccr", "/ccr/"), ("health", "/headroom/health"),
                                       ("dashboard", "/headroom/api/sessions")])
def test_where_the_host_name_is_unknown_a_browser_needs_the_key(kind, path):
    # A page on another site that rebinds its name to 127.0.0.1 is a loopback browser too.
    ep = endpoints(browser_key=KEY, pages=lambda p, q: (200, [], b"{}"))
    if kind == "ccr":
        path += kept_by_alice(ep)
    for fields in (BROWSER, [(b"Origin", b"http://attacker.example:8080")],
                   [(b"Sec-Fetch-Mode", b"navigate"), (b"Cookie", b"headroom_key=wrong")],
                   [*BROWSER, (b"cookie", b"other=1; headroom_key=" + KEY.encode() + b"x")]):
        status, _, body = unchecked(ep, kind, path, fields=fields)
        assert status == 403 and b"key" in body and TEXT.encode() not in body
    cookie = (b"cookie", b"other=1; headroom_key=" + KEY.encode())
    assert unchecked(ep, kind, path, fields=[*BROWSER, cookie])[0] == 200
    assert unchecked(ep, kind, path)[0] == 200  # curl, a script, Prometheus: no browser
    assert ep.answer(kind, "GET", path, "", BROWSER, "127.0.0.1", True)[0] == 200  # checked name
    assert endpoints().answer(kind, "GET", path, "", BROWSER, "127.0.0.1", False)[0] in (200, 404)


def test_the_logged_address_sets_the_key_as_a_cookie_and_drops_it_from_the_address():
    ep = endpoints(browser_key=KEY, pages=lambda p, q: (200, [], q.encode()))
    status, fields, _ = unchecked(ep, "dashboard", "/headroom/session/s1",
                                  f"refresh=0&key={KEY}", BROWSER)
    assert status == 303
    headers = dict(fields)
    assert headers[b"location"] == b"/headroom/session/s1?refresh=0"
    assert headers[b"set-cookie"] == (b"headroom_key=" + KEY.encode()
                                      + b"; Path=/; HttpOnly; SameSite=Strict")
    assert unchecked(ep, "dashboard", "/headroom/", "key=nope", BROWSER)[0] == 403
    assert unchecked(ep, "dashboard", "/headroom/", f"key={KEY}")[0] == 303  # any client


def test_the_key_cookie_is_no_ones_credential():
    # A browser holding the key asks for an original as the agent's shell does: any tenant's.
    ep = endpoints(browser_key=KEY)
    h = kept_by_alice(ep)
    # (nor are the browser's other cookies: another local app's, cookies ignore the port)
    fields = [*BROWSER, (b"Cookie", b"dev_session=abc; headroom_key=" + KEY.encode())]
    status, _, body = ep.answer("ccr", "GET", f"/ccr/{h}", "", fields, "127.0.0.1", False)
    assert status == 200 and body.decode() == TEXT
