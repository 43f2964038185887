"""End to end: sticky beta headers and session ids through the real proxy with the SDK clients."""

import anthropic
import httpx2
import openai


def test_anthropic_turn_two_keeps_turn_one_betas(reverse_proxy, upstream):
    client = anthropic.Anthropic(api_key="sk-ant-api03-e2e", base_url=reverse_proxy.url,
                                 max_retries=0, http_client=httpx2.Client())
    sess = {"X-Claude-Code-Session-Id": "0f4c2a1e-e2e-beta"}
    msgs = [{"role": "user", "content": "hi"}]
    client.messages.create(model="claude-x", max_tokens=8, messages=msgs,
                           extra_headers={**sess, "anthropic-beta": "a,b"})
    client.messages.create(model="claude-x", max_tokens=8, messages=msgs,
                           extra_headers={**sess, "anthropic-beta": "a"})
    # a different session is not affected
    client.messages.create(model="claude-x", max_tokens=8, messages=msgs,
                           extra_headers={"X-Claude-Code-Session-Id": "other", "anthropic-beta": "a"})
    first, second, other = upstream.requests_to("/v1/messages")
    assert first.headers_named("anthropic-beta") == ["a,b"]
    assert second.headers_named("anthropic-beta") == ["a,b"]
    assert other.headers_named("anthropic-beta") == ["a"]
    evs = reverse_proxy.events(wait_for=3, settle=0.1)
    sticky = [e for e in evs if e["decisions"].get("beta", {}).get("added") == ["b"]]
    assert sticky and sticky[-1]["session_source"] == "header:x-claude-code-session-id"


def test_openai_sdk_codex_style_session_header(regular_proxy, upstream):
    client = openai.OpenAI(api_key="sk-proj-e2e", base_url="https://api.openai.com/v1",
                           max_retries=0,
                           http_client=httpx2.Client(proxy=regular_proxy.url,
                                                     verify=regular_proxy.verify))
    h = {"session_id": "codex-e2e-1"}
    client.responses.create(model="gpt-5", input="hi", extra_headers={**h, "OpenAI-Beta": "p,q"})
    client.responses.create(model="gpt-5", input="hi", extra_headers={**h, "OpenAI-Beta": "q"})
    first, second = upstream.requests_to("/v1/responses")
    assert first.headers_named("openai-beta") == ["p,q"]
    assert second.headers_named("openai-beta") == ["q,p"]
    ev = regular_proxy.events(wait_for=2, settle=0.1)[-1]
    assert ev["session_source"] == "header:session-id" and ev["session_confidence"] == "high"


def test_one_connection_switching_keys_and_sessions_never_shares_their_betas(
        reverse_proxy, upstream):
    """One keep-alive connection (the header block of each request compared with the one
    before on that connection): a request with another API key, or another session, is its own
    tenant or session, however much else of the block repeats."""
    http = httpx2.Client()
    sess = {"X-Claude-Code-Session-Id": "0f4c2a1e-e2e-one-conn"}

    def send(key, betas, headers=sess, text="hi"):
        client = anthropic.Anthropic(api_key=key, base_url=reverse_proxy.url, max_retries=0,
                                     http_client=http)
        client.messages.create(model="claude-x", max_tokens=8,
                               messages=[{"role": "user", "content": text}],
                               extra_headers={**headers, "anthropic-beta": betas})

    send("sk-ant-api03-one", "a,b")
    send("sk-ant-api03-one", "a", text="a longer prompt")  # a repeat but for content-length
    send("sk-ant-api03-two", "a")  # another tenant, same session header
    send("sk-ant-api03-one", "a", headers={"X-Claude-Code-Session-Id": "another"})
    send("sk-ant-api03-one", "a")
    got = [r.headers_named("anthropic-beta") for r in upstream.requests_to("/v1/messages")]
    assert got == [["a,b"], ["a,b"], ["a"], ["a"], ["a,b"]]
    evs = reverse_proxy.events(wait_for=5, settle=0.1)[-5:]
    ids = [e["session_id"] for e in evs]
    assert ids[0] == ids[1] == ids[4] and len({ids[0], ids[2], ids[3]}) == 3
    http.close()
