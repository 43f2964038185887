import pytest

from headroom_core.routing import Route, classify, normalize_path

REGULAR = [
    ("POST", "api.anthropic.com", "/v1/messages", Route("anthropic", "messages")),
    ("POST", "api.anthropic.com", "/v1/messages?beta=true", Route("anthropic", "messages")),
    ("POST", "api.anthropic.com", "/v1/messages/count_tokens?beta=true",
     Route("anthropic", "count_tokens")),
    ("POST", "api.openai.com", "/v1/chat/completions", Route("openai", "chat_completions")),
    ("POST", "api.openai.com", "/v1/responses", Route("openai", "responses")),
    ("POST", "chatgpt.com", "/backend-api/codex/responses", Route("openai", "codex_responses")),
    ("POST", "API.Anthropic.COM.", "/v1/messages", Route("anthropic", "messages")),
]


@pytest.mark.parametrize("method,host,path,expected", REGULAR)
def test_regular_mode_known_hosts(method, host, path, expected):
    assert classify(method, host, path, reverse=False) == expected


@pytest.mark.parametrize("method,host,path", [
    ("POST", "example.com", "/v1/messages"),  # unknown host in regular mode
    ("POST", "api.anthropic.com", "/v1/models"),
    ("POST", "api.openai.com", "/v1/responses/resp_123/cancel"),
    ("POST", "api.openai.com", "/v1/embeddings"),
])
def test_everything_else_is_not_classified(method, host, path):
    assert classify(method, host, path, reverse=False) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "patch"])
def test_other_methods_on_model_paths_are_routes_without_inspection(method):
    r = classify(method, "api.anthropic.com", "/v1/messages", reverse=False)
    assert r == Route("anthropic", "messages", inspect=False)
    r = classify(method, "chatgpt.com", "/backend-api/codex/responses", reverse=False)
    assert r.endpoint == "codex_responses" and not r.inspect and not r.websocket


@pytest.mark.parametrize("path", [
    "/v1/mess%61ges", "/v1/MESSAGES", "//v1//messages", "/v1/messages/", "/v1/messages?",
    "/v1/./messages", "/x/../v1/messages", "/v1%2Fmessages", "/v1/mess%2561ges",
    "\\v1\\messages", "/v1/messages?beta=true",
])
def test_odd_spellings_of_a_model_path_are_classified(path):
    assert classify("POST", "api.anthropic.com", path, reverse=False) == Route("anthropic", "messages")
    assert classify("POST", "gw", path, reverse=True) == Route("anthropic", "messages")


def test_normalize_path_never_raises_and_keeps_a_leading_slash():
    for p in ["", "?", "%", "%zz", "/%ff%fe", "a/b", "/../..", "//"]:
        assert normalize_path(p).startswith("/")


def test_reverse_mode_classifies_by_path_alone():
    assert classify("POST", "10.0.0.7", "/v1/messages", reverse=True) == Route("anthropic", "messages")
    assert classify("POST", "gw.internal", "/openai/v1/chat/completions", reverse=True).endpoint == "chat_completions"
    assert classify("POST", "gw.internal", "/anything", reverse=True) is None


def test_extra_hosts_in_regular_mode():
    hosts = frozenset({"api.anthropic.com", "llm-gw.corp"})
    assert classify("POST", "llm-gw.corp", "/v1/messages", reverse=False, hosts=hosts)
    assert classify("POST", "api.openai.com", "/v1/responses", reverse=False, hosts=hosts) is None


def test_websocket_upgrade_only_for_responses():
    r = classify("GET", "api.openai.com", "/v1/responses", reverse=False, websocket_upgrade=True)
    assert r == Route("openai", "responses", websocket=True) and r.shape == "responses"
    r = classify("GET", "chatgpt.com", "/backend-api/codex/responses", reverse=False, websocket_upgrade=True)
    assert r.endpoint == "codex_responses" and r.websocket
    r = classify("GET", "api.anthropic.com", "/v1/messages", reverse=False, websocket_upgrade=True)
    assert not r.websocket and not r.inspect


def test_shapes():
    assert Route("anthropic", "count_tokens").shape == "anthropic"
    assert Route("openai", "chat_completions").shape == "chat"
    assert Route("openai", "codex_responses").shape == "responses"
    assert Route("openai", "responses").name == "openai/responses"
