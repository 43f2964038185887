import anthropic
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import error_responses
from headroom_core.error_responses import error_type, provider_error

try:  # the SDKs moved to httpx2; a transport must come from the package they use
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


@pytest.mark.parametrize("status,etype", [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (409, "invalid_request_error"),
    (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
    (502, "api_error"), (504, "timeout_error"), (529, "overloaded_error"),
])
def test_anthropic_shape(status, etype):
    got_status, fields, body = provider_error("anthropic", status, "no recording", "replay_miss")
    assert got_status == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": etype,
                                                             "message": "no recording"}}


@pytest.mark.parametrize("status,etype", [
    (400, "invalid_request_error"), (401, "invalid_request_error"), (403, "permission_error"),
    (404, "invalid_request_error"), (429, "rate_limit_error"), (500, "server_error"),
    (502, "server_error"), (503, "service_unavailable_error"),
])
def test_openai_shape(status, etype):
    _, _, body = provider_error("openai", status, "no recording", "replay_miss")
    assert orjson.loads(body) == {"error": {"message": "no recording", "type": etype,
                                            "param": None, "code": "replay_miss"}}
    _, _, body = provider_error("openai", status, "m")
    assert orjson.loads(body)["error"]["code"] is None


def test_headers():
    for provider in ("anthropic", "openai"):
        _, fields, _ = provider_error(provider, 404, "x")
        assert fields == [(b"content-type", b"application/json"), (b"x-should-retry", b"false"),
                          (b"x-headroom-error", b"1")]


def test_unknown_provider_gets_the_openai_shape():
    assert error_type("somebody", 418) == "invalid_request_error"
    assert "error" in orjson.loads(provider_error("somebody", 418, "x")[2])


@settings(deadline=None)
@given(st.text(), st.integers(min_value=100, max_value=999))
def test_never_raises_and_keeps_the_message(message, status):
    for provider in ("anthropic", "openai"):
        _, _, body = provider_error(provider, status, message)
        got = orjson.loads(body)["error"]["message"]
        assert got == message or "\\ud" in got  # lone surrogates are escaped, not dropped


def _transport(status, provider, calls):
    def handler(request):
        calls.append(request)
        s, fields, body = provider_error(provider, status, "no recorded response matches",
                                         "headroom_replay_miss")
        return httpx.Response(s, headers=fields, content=body)
    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status,exc", [(404, anthropic.NotFoundError),
                                        (529, anthropic.InternalServerError),
                                        (400, anthropic.BadRequestError)])
def test_the_anthropic_sdk_reads_it_and_does_not_retry(status, exc):
    calls = []
    client = anthropic.Anthropic(api_key="k", base_url="http://headroom.test", max_retries=3,
                                 http_client=httpx.Client(transport=_transport(status, "anthropic",
                                                                                calls)))
    with pytest.raises(exc) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user",
                                                                    "content": "hi"}])
    assert len(calls) == 1
    assert info.value.status_code == status
    assert "no recorded response matches" in str(info.value)
    assert info.value.body["error"]["type"] == error_type("anthropic", status)


@pytest.mark.parametrize("status,exc", [(404, openai.NotFoundError),
                                        (503, openai.InternalServerError),
                                        (429, openai.RateLimitError)])
def test_the_openai_sdk_reads_it_and_does_not_retry(status, exc):
    calls = []
    client = openai.OpenAI(api_key="k", base_url="http://headroom.test/v1", max_retries=3,
                           http_client=httpx.Client(transport=_transport(status, "openai", calls)))
    with pytest.raises(exc) as info:
        client.responses.create(model="m", input="hi")
    assert len(calls) == 1
    assert info.value.code == "headroom_replay_miss"
    assert info.value.type == error_type("openai", status)
    assert "no recorded response matches" in info.value.message


@pytest.mark.parametrize("message,connected,tls,kind", [
    ("[Errno 111] Connect call failed ('127.0.0.1', 9)", False, True, "connect"),
    ("[Errno 111] Connect call failed ('127.0.0.1', 9)", False, False, "connect"),
    ("[Errno -2] Name or service not known", False, True, "connect"),
    ("[Errno 110] Connection timed out", False, True, "timeout"),
    ("timed out", False, False, "timeout"),
    # mitmproxy keeps a connection whose handshake failed out of the flow: not connected
    ("OpenSSL Error([('SSL routines', '', 'wrong version number')])", False, True, "tls"),
    ("connection closed", False, True, "tls"),
    ("Certificate verify failed: self-signed certificate", False, True, "tls"),
    ("connection closed", False, False, "connect"),  # plain http: nothing but TCP to fail
    ("server closed connection", True, False, "reset"),
    ("server closed connection", True, True, "tls"),
    ("", True, None, "reset"),
])
def test_upstream_failure_kinds(message, connected, tls, kind):
    assert error_responses.upstream_failure(message, connected=connected, tls=tls) == kind
