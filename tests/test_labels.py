"""Session labels: client, working directory or first prompt; never a credential."""

import orjson
import pytest

from headroom_core.labels import (
    TRIES,
    SessionLabels,
    client_of,
    cwd_of,
    describe,
    first_prompt,
    for_log,
    redact,
    short_path,
)

CC_HEADERS = [(b"User-Agent", b"claude-cli/2.1.119 (external, cli)"), (b"x-app", b"cli"),
              (b"x-api-key", b"sk-ant-api03-secret")]


def cc_body(cwd="/home/alice/src/headroom", prompt="fix the failing test"):
    return orjson.dumps({
        "model": "claude-sonnet-4-5", "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=1;"},
            {"type": "text", "text": f"You are Claude Code.\n<env>\nWorking directory: {cwd}\n"
                                     "Is directory a git repo: Yes\n</env>"}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": prompt}]}]})


@pytest.mark.parametrize("headers, name", [
    (CC_HEADERS, "claude-code"),
    ([(b"x-app", b"cli")], "claude-code"),
    ([(b"user-agent", b"codex_cli_rs/0.50.0 (Ubuntu 24.4.0; x86_64)")], "codex"),
    ([(b"originator", b"codex_exec"), (b"user-agent", b"x")], "codex exec"),
    ([(b"user-agent", b"Anthropic/Python 0.72.0")], "anthropic-python"),
    ([(b"user-agent", b"OpenAI/Python 2.8.1")], "openai-python"),
    ([(b"user-agent", b"curl/8.5.0")], "curl"),
    ([(b"user-agent", b"claude-cli/2.1.139"), (b"x-claude-code-agent-id", b"a1")],
     "claude-code agent"),
    ([], None),
])
def test_client_names(headers, name):
    assert client_of(headers) == name


def test_claude_code_working_directory_home_shortened():
    assert cwd_of(cc_body()) == "~/src/headroom"
    assert cwd_of(cc_body("/root/proj")) == "~/proj"
    assert cwd_of(cc_body("/srv/build/app")) == "/srv/build/app"
    assert cwd_of(cc_body("C:\\Users\\bob\\code\\app")) == "~\\code\\app"


def test_codex_cwd_from_environment_context():
    body = orjson.dumps({"model": "gpt-5-codex", "input": [{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "<environment_context>\n  "
                     "<cwd>/Users/carol/work/site</cwd>\n  <approval_policy>never"
                     "</approval_policy>\n</environment_context>"}]}]})
    assert cwd_of(body) == "~/work/site"


def test_long_paths_keep_their_end():
    p = short_path("/srv/" + "a" * 80 + "/project")
    assert p.startswith("…") and p.endswith("/project") and len(p) <= 48


@pytest.mark.parametrize("text", [
    "use sk-ant-api03-AbCdEf0123456789 for this", "Authorization: Bearer abc.def.ghi",
    "token=ghp_abcdefghijklmnopqrstuvwxyz0123", "AKIAIOSFODNN7EXAMPLE is the key",
    "password: hunter2 please", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "blob QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789",
])
def test_redact_cuts_credentials(text):
    out = redact(text)
    for secret in ("sk-ant-api03-AbCdEf0123456789", "abc.def.ghi", "ghp_abc", "AKIAIOSF",
                   "hunter2", "eyJhbGci", "QUJDREVGR0hJ"):
        assert secret not in out
    assert "…" in out


def test_first_prompt_in_every_shape():
    assert first_prompt(orjson.loads(cc_body(prompt="Refactor the   parser\nplease"))) == \
        "“Refactor the parser please”"
    assert first_prompt({"messages": [{"role": "system", "content": "s"},
                                      {"role": "user", "content": "hello there"}]}) == \
        "“hello there”"
    assert first_prompt({"input": "write a haiku"}) == "“write a haiku”"
    assert first_prompt({"input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "list files"}]}]}) == "“list files”"
    long = first_prompt({"input": "x" * 200})
    assert len(long) <= 42 and long.endswith("…”")
    assert first_prompt({"input": []}) is None and first_prompt([]) is None


def test_describe_prefers_the_working_directory():
    assert describe(CC_HEADERS, cc_body()) == ("claude-code · ~/src/headroom", True)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert describe([(b"user-agent", b"OpenAI/Python 2")], body) == ("openai-python · “hi”",
                                                                      False)
    assert describe([], b"not json") == (None, False)
    assert describe([], None) == (None, False)


def test_labels_never_contain_the_credential_headers():
    label, _ = describe(CC_HEADERS + [(b"authorization", b"Bearer sk-ant-oat01-zzz")], cc_body())
    assert "sk-ant" not in label and "Bearer" not in label


def test_session_labels_settle_once_the_directory_is_known():
    labels = SessionLabels()
    quota = orjson.dumps({"model": "claude-haiku-4-5", "messages": [
        {"role": "user", "content": "quota"}]})
    assert labels.label("s1", CC_HEADERS, quota) == "claude-code · “quota”"
    assert labels.label("s1", CC_HEADERS, cc_body()) == "claude-code · ~/src/headroom"
    # settled: later bodies are not even read
    assert labels.label("s1", CC_HEADERS, b"garbage") == "claude-code · ~/src/headroom"
    assert labels.get("s1") == "claude-code · ~/src/headroom"
    assert labels.label(None, CC_HEADERS, cc_body()) is None


def test_session_labels_keep_the_first_snippet_and_stop_searching():
    labels = SessionLabels()
    ua = [(b"user-agent", b"OpenAI/Python 2")]
    first = orjson.dumps({"input": "first question"})
    assert labels.label("s", ua, first) == "openai-python · “first question”"
    for i in range(TRIES + 3):
        assert labels.label("s", ua, orjson.dumps({"input": f"q{i}"})) == \
            "openai-python · “first question”"
    assert labels._labels["s"][2] == TRIES  # stopped trying


def test_session_labels_are_bounded():
    labels = SessionLabels(max_sessions=3)
    for i in range(5):
        labels.label(f"s{i}", CC_HEADERS, cc_body())
    assert labels.get("s0") is None and labels.get("s4") is not None
    labels.clear()
    assert labels.get("s4") is None


@pytest.mark.parametrize("label,logged", [
    ("claude-code · “fix the flaky test”", "claude-code"),
    ("“fix it”", None),
    ("claude-code · ~/src/app", "claude-code · ~/src/app"),
    (None, None),
])
def test_the_event_log_gets_the_label_without_the_prompt(label, logged):
    assert for_log(label) == logged
