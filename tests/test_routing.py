import pytest

from headroom_core.routing import Route, classify

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
    ("GET", "api.anthropic.com", "/v1/messages"),  # not a POST
    ("POST", "api.anthropic.com", "/v1/models"),
    ("POST", "api.openai.com", "/v1/responses/resp_123/cancel"),
    ("POST", "api.openai.com", "/v1/embeddings"),
    ("GET", "chatgpt.com", "/backend-api/codex/responses"),  # GET without upgrade
])
def test_everything_else_is_not_classified(method, host, path):
    assert classify(method, host, path, reverse=False) is None


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
    assert classify("GET", "api.anthropic.com", "/v1/messages", reverse=False, websocket_upgrade=True) is None


def test_shapes():
    assert Route("anthropic", "count_tokens").shape == "anthropic"
    assert Route("openai", "chat_completions").shape == "chat"
    assert Route("openai", "codex_responses").shape == "responses"
    assert Route("openai", "responses").name == "openai/responses"
