"""Tenancy from every credential, end to end: clients that share a gateway's placeholder key but
differ in any other credential or account header never share cached answers or kept originals.

The counting upstream answers every request with its own counter ("answer #N"), so a cached
answer served to the wrong client is visible in the text, and the upstream's request count says
how many answers were really made.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.adversary import MARKER, curl
from tests.e2e.counting_upstream import CountingUpstream
from tests.e2e.proxy import Mitmdump

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
from tool_output_corpus import pytest_log  # noqa: E402

LOG = pytest_log(passes=700, failures=2).text
ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "codex": "/backend-api/codex/responses",
}
# (client A's headers, client B's headers): the same placeholder, one credential differs
VARIATIONS = {
    "authorization": ({"x-api-key": "gateway", "authorization": "Bearer user-a-key"},
                      {"x-api-key": "gateway", "authorization": "Bearer user-b-key"}),
    "api-key": ({"x-api-key": "gateway", "api-key": "azure-key-a"},
                {"x-api-key": "gateway", "api-key": "azure-key-b"}),
    "chatgpt-account-id": (
        {"authorization": "Bearer gateway", "chatgpt-account-id": "acct-a"},
        {"authorization": "Bearer gateway", "chatgpt-account-id": "acct-b"}),
    "openai-organization": (
        {"x-api-key": "gateway", "authorization": "Bearer shared", "openai-organization": "org-a"},
        {"x-api-key": "gateway", "authorization": "Bearer shared", "openai-organization": "org-b"}),
    "openai-project": (
        {"authorization": "Bearer shared", "openai-project": "proj-a"},
        {"authorization": "Bearer shared", "openai-project": "proj-b"}),
}


@pytest.fixture(scope="module")
def tenancy(tmp_path_factory):
    """Cache mode, NO namespace: the tenant comes from the credentials alone."""
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path_factory.mktemp("tenancy"),
                      options={"headroom_store_mode": "cache", "headroom_compress": "on"}) as p:
            yield p, up


def _body(endpoint: str, nonce: str, stream: bool) -> bytes:
    if endpoint in ("chat",):
        doc = {"model": "gpt-x", "messages": [{"role": "user", "content": nonce}]}
    elif endpoint == "messages":
        doc = {"model": "claude-x", "max_tokens": 16,
               "messages": [{"role": "user", "content": nonce}]}
    else:
        doc = {"model": "gpt-x", "input": nonce}
    if stream:
        doc["stream"] = True
    return json.dumps(doc).encode()


def _ask(proxy, endpoint: str, body: bytes, headers: dict) -> tuple[str | None, str]:
    with httpx.stream("POST", proxy.url + ENDPOINTS[endpoint], content=body, timeout=10,
                      headers={"content-type": "application/json", **headers}) as r:
        text = b"".join(r.iter_bytes()).decode()
        assert r.status_code == 200, text
        return r.headers.get("x-headroom-cache"), text


def _answer(text: str) -> str:
    import re

    nums = set(re.findall(r"answer #(\d+)", text))
    assert len(nums) == 1, text[:500]
    return nums.pop()


def _two_clients(proxy, up, endpoint, stream, a, b, tag) -> None:
    body = _body(endpoint, f"tenancy {tag} {uuid.uuid4().hex}", stream)
    n0 = up.snapshot()[2]
    cache_a, text_a = _ask(proxy, endpoint, body, a)
    cache_b, text_b = _ask(proxy, endpoint, body, b)
    assert cache_a == "miss"
    assert up.snapshot()[2] - n0 == 2, "client B was served client A's cached answer"
    assert cache_b == "miss" and _answer(text_b) != _answer(text_a)
    # the store is really on: A asking again is a hit, with A's own answer
    time.sleep(0.05)
    cache_a2, text_a2 = _ask(proxy, endpoint, body, a)
    assert cache_a2 == "hit" and _answer(text_a2) == _answer(text_a)
    assert up.snapshot()[2] - n0 == 2


@pytest.mark.parametrize("variation", list(VARIATIONS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_clients_differing_in_one_credential_never_share_answers(tenancy, endpoint, stream,
                                                                  variation):
    proxy, up = tenancy
    a, b = VARIATIONS[variation]
    _two_clients(proxy, up, endpoint, stream, a, b, f"{endpoint}-{stream}-{variation}")


def test_same_credentials_in_another_order_and_case_share(tenancy):
    proxy, up = tenancy
    body = _body("messages", f"order {uuid.uuid4().hex}", False)
    n0 = up.snapshot()[2]
    _ask(proxy, "messages", body, {"x-api-key": "gateway", "authorization": "Bearer user-a-key"})
    time.sleep(0.05)
    cache, _ = _ask(proxy, "messages", body, {"Authorization": "bearer user-a-key",
                                               "X-Api-Key": "gateway"})
    assert cache == "hit" and up.snapshot()[2] - n0 == 1


@pytest.mark.parametrize("header", ["cookie", "cf-aig-authorization", "x-portkey-api-key"])
def test_other_credential_headers_separate_tenants(tenancy, header):
    proxy, up = tenancy
    a = {"x-api-key": "gateway", header: "session=user-a" if header == "cookie" else "user-a"}
    b = {"x-api-key": "gateway", header: "session=user-b" if header == "cookie" else "user-b"}
    _two_clients(proxy, up, "messages", False, a, b, header)


# -- kept originals (/ccr/) -------------------------------------------------------------------

TENANT_A = {"x-api-key": "gateway", "authorization": "Bearer user-a-key"}
TENANT_B = {"x-api-key": "gateway", "authorization": "Bearer user-b-key"}


@pytest.fixture(scope="module")
def original(tenancy):
    proxy, up = tenancy
    msgs = [{"role": "user", "content": "fix it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_t",
                                               "name": "Bash", "input": {"command": "pytest"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_t",
                                          "content": LOG}]}]
    body = json.dumps({"model": "claude-x", "max_tokens": 8, "messages": msgs}).encode()
    r = httpx.post(proxy.url + "/v1/messages", content=body,
                   headers={"content-type": "application/json", **TENANT_A})
    assert r.status_code == 200
    sent = up.requests[-1]["body"].decode()
    m = MARKER.search(sent)
    assert m, "the tool output was not compressed: nothing to retrieve"
    return m.group(0)


def test_original_served_to_its_tenant(tenancy, original):
    r = httpx.get(original, headers=TENANT_A)
    assert r.status_code == 200 and r.text == LOG
    # the same credentials in another order and case are the same tenant
    r = httpx.get(original, headers={"Authorization": "bearer user-a-key", "X-API-KEY": "gateway"})
    assert r.status_code == 200 and r.text == LOG


def test_original_served_to_a_loopback_curl_without_credential(original):
    status, body = curl(original)
    assert status == 200 and body.decode() == LOG
    status, body = curl(original + "?head=3")
    assert status == 200 and body.decode() == "".join(LOG.splitlines(True)[:3])


@pytest.mark.parametrize("who", ["tenant-b", "placeholder-only", "bearer-only", "a-plus-org",
                                 "b-sliced", "b-head", "b-curl"])
def test_original_never_served_to_another_tenant(tenancy, original, who):
    proxy, up = tenancy
    before = up.snapshot()
    headers = {"tenant-b": TENANT_B, "placeholder-only": {"x-api-key": "gateway"},
               "bearer-only": {"authorization": "Bearer user-a-key"},
               "a-plus-org": {**TENANT_A, "openai-organization": "org-x"},
               "b-sliced": TENANT_B, "b-head": TENANT_B, "b-curl": TENANT_B}[who]
    if who == "b-curl":
        status, body = curl(original, headers=headers)
        text = body.decode()
    else:
        url = original + ("?grep=.&context=5" if who == "b-sliced" else "")
        r = httpx.request("HEAD" if who == "b-head" else "GET", url, headers=headers)
        status, text = r.status_code, r.text
    assert status == 404 and LOG[:200] not in text
    time.sleep(0.02)
    assert up.snapshot() == before  # answered by Headroom, never forwarded


def test_event_log_and_proxy_log_hold_no_credential_or_content(tenancy, original):
    """Tenancy is a salted hash: the credentials themselves, prompts and tool outputs never land
    in the event log or in Headroom's log lines."""
    proxy, up = tenancy
    secret_key, secret_prompt = "sk-ant-api03-SECRETKEY-zz9", "PROMPT-SECRET-7c1f"
    heads = {"x-api-key": secret_key, "authorization": "Bearer BEARER-SECRET-42",
             "chatgpt-account-id": "ACCOUNT-SECRET-9", "x-headroom-note": "NOTE-SECRET-3"}
    before = len(proxy.events())
    for endpoint in ENDPOINTS:
        for stream in (False, True):
            _ask(proxy, endpoint, _body(endpoint, f"{secret_prompt} {endpoint} {stream}", stream),
                 heads)
    httpx.post(proxy.url + "/v1/messages", content=b"{broken " + secret_prompt.encode(),
               headers=heads)
    httpx.get(original, headers=heads)
    # every line of this traffic written (they go to disk in background batches)
    assert len(proxy.events(wait_for=before + 2 * len(ENDPOINTS), settle=0.3)) >= \
        before + 2 * len(ENDPOINTS)
    events = proxy.events_path.read_text()
    log = proxy.log()
    assert events.count("\n") >= 8
    for secret in (secret_key, "SECRETKEY", "BEARER-SECRET-42", "ACCOUNT-SECRET-9",
                   "NOTE-SECRET-3", secret_prompt, "user-a-key", LOG.splitlines()[40]):
        assert secret not in events, secret
        assert secret not in log, secret


def test_same_tool_output_from_two_tenants_gets_two_originals(tenancy):
    """The ledger and the originals are per tenant: B sending A's exact tool output gets its own
    marker (never A's bytes or A's handle), and each fetches only its own."""
    proxy, up = tenancy
    out = pytest_log(passes=650, failures=1, seed=7).text
    msgs = [{"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_s",
                                               "name": "Bash", "input": {"command": "make"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_s",
                                          "content": out}]}]
    body = json.dumps({"model": "claude-x", "max_tokens": 8, "messages": msgs}).encode()
    urls = []
    for who in (TENANT_A, TENANT_B):
        httpx.post(proxy.url + "/v1/messages", content=body,
                   headers={"content-type": "application/json", **who})
        urls.append(MARKER.search(up.requests[-1]["body"].decode()).group(0))
    assert urls[0] != urls[1]
    assert httpx.get(urls[0], headers=TENANT_A).text == out
    assert httpx.get(urls[1], headers=TENANT_B).text == out
    assert httpx.get(urls[0], headers=TENANT_B).status_code == 404
    assert httpx.get(urls[1], headers=TENANT_A).status_code == 404


@pytest.mark.parametrize("endpoint", ["messages", "chat"])
def test_no_credential_and_no_namespace_means_no_store(tenancy, endpoint):
    """Requests Headroom cannot tell apart are never answered from the store."""
    proxy, up = tenancy
    body = _body(endpoint, f"anonymous {uuid.uuid4().hex}", False)
    n0 = up.snapshot()[2]
    answers = [_answer(_ask(proxy, endpoint, body, {})[1]) for _ in range(2)]
    assert up.snapshot()[2] - n0 == 2 and answers[0] != answers[1]
