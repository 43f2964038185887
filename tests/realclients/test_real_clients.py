"""The real Claude Code and Codex CLIs (from npm) through a real Headroom mitmdump, offline.

Opt-in: `./headroom test -m realclients` (or `scripts/real_clients.sh`, which installs the CLIs
first). Each test runs a client as a user would, in a throwaway HOME, against a local fake model
upstream (`fake_agents.py`), and checks what reached the upstream, what the client printed and
what Headroom logged.

Byte fidelity is proven against an independent record of what the client put on the wire:
* reverse mode: `WireTap`, a plain TCP forwarder in front of Headroom, records the client's bytes
  (no mitmproxy in front, nothing of Headroom involved);
* regular mode: the bytes are TLS, so a second, plain mitmdump in front (upstream mode, with the
  capture script) records the raw body hash and header fields it received from the client.
Both are compared with the fake upstream's exact record (SHA-256 of the body, header fields in
order and case) and with the event log's sizes.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.proxy import Mitmdump
from tests.realclients.conftest import describe_body, describe_headers, report
from tests.realclients.fake_agents import (
    ANSWER,
    CODEX_TOOL_TRIGGER,
    AgentWebSocketFake,
    tool_result_answer,
)
from tests.realclients.tap import CAPTURE_ADDON, WireTap

pytestmark = pytest.mark.realclients

API_KEY = "sk-ant-api03-headroom-realclients-fake"
OPENAI_KEY = "sk-proj-headroom-realclients-fake"
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/cert.pem")
SESSION_SOURCES = {"header:x-claude-code-session-id", "body:metadata.user_id"}
CODEX_SOURCES = {"header:thread-id", "header:session-id", "header:session_id",
                 "body:prompt_cache_key"}


# -- helpers ---------------------------------------------------------------------------------------


def is_llm(method: str, path: str) -> bool:
    return method == "POST" and path.split("?")[0].endswith(
        ("/messages", "/responses", "/chat/completions"))


def header(fields, name: str) -> str | None:
    return next((v for n, v in fields if n.lower() == name.lower()), None)


def without(fields, *names: str) -> list[tuple[str, str]]:
    drop = {n.lower() for n in names}
    return [(n, v) for n, v in fields if n.lower() not in drop]


def claude_env(sandbox, **extra: str) -> dict[str, str]:
    return sandbox.env(ANTHROPIC_API_KEY=API_KEY, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
                       **extra)


def claude_events(proxy: Mitmdump, n: int) -> list[dict]:
    evs = [e for e in proxy.events(wait_for=n, timeout=15) if e.get("provider") == "anthropic"]
    assert len(evs) == n, f"expected {n} anthropic event lines, got {evs}\n{proxy.log()[-3000:]}"
    return evs


def assert_claude_request(rec_fields, body: bytes) -> str:
    """Claude Code's request shape; returns its session id (header)."""
    names = [n.lower() for n, _ in rec_fields]
    assert header(rec_fields, "user-agent").startswith("claude-cli/")
    assert header(rec_fields, "x-app") == "cli"
    assert header(rec_fields, "anthropic-version") == "2023-06-01"
    assert "claude-code-20250219" in header(rec_fields, "anthropic-beta").split(",")
    assert header(rec_fields, "x-api-key") == API_KEY
    assert "content-encoding" not in names  # Claude Code sends plain JSON bodies
    doc = json.loads(body)
    assert doc["stream"] is True and isinstance(doc["messages"], list)
    sid = header(rec_fields, "x-claude-code-session-id")
    user_id = doc.get("metadata", {}).get("user_id")
    if sid is not None and isinstance(user_id, str) and user_id.startswith("{"):
        # both places carry the same id in this version
        assert json.loads(user_id)["session_id"] == sid
    return sid


def assert_claude_session(evs: list[dict], sid_header: str | None) -> str:
    sources = {e["session_source"] for e in evs}
    assert len(sources) == 1 and sources <= SESSION_SOURCES, sources
    source = sources.pop()
    # the header wins when it is there; metadata.user_id is the fallback
    assert source == ("header:x-claude-code-session-id" if sid_header else "body:metadata.user_id")
    assert {e["session_confidence"] for e in evs} == {"high"}
    assert len({e["session_id"] for e in evs}) == 1  # one `claude -p` run is one session
    return source


def assert_wire_identical(client, upstream, *, host_rewritten: bool) -> None:
    """Client-side records (tap or front capture) vs the fake's records, request by request."""
    assert [(c.method, c.path) for c in client] == [(u.method, u.path) for u in upstream]
    for c, u in zip(client, upstream):
        assert c.sha256 == u.sha256, f"{c.path}: body changed on the way"
        drop = ("host",) if host_rewritten else ()
        assert without(c.fields, *drop) == without(u.fields, *drop), \
            f"{c.path}: header fields changed (order, case or values)"


def find_literal(body: bytes, text: str) -> tuple[int, int]:
    """The span of the JSON string literal whose value is `text` (exactly one) in `body`."""
    lit = json.dumps(text, ensure_ascii=False).encode()
    assert body.count(lit) == 1, "the original tool output should occur once in the request"
    start = body.index(lit)
    return start, start + len(lit)


def assert_single_literal_rewrite(client_body: bytes, upstream_body: bytes, original: str) -> str:
    """Upstream bytes = client bytes with exactly one string literal replaced; returns the new
    value. Everything around the rewritten tool output is byte-identical (cache-safe)."""
    start, end = find_literal(client_body, original)
    prefix, suffix = client_body[:start], client_body[end:]
    assert upstream_body.startswith(prefix) and upstream_body.endswith(suffix)
    new = json.loads(upstream_body[len(prefix):len(upstream_body) - len(suffix)])
    assert isinstance(new, str) and new != original
    return new


def ccr_handle(text: str) -> str:
    m = re.search(r"/ccr/([0-9a-f]{32})", text)
    assert m, f"no /ccr/ retrieval marker in {text!r}"
    return m.group(1)


def ca_bundle(tmp_path: Path, proxy: Mitmdump) -> str:
    """System roots + the proxy's CA, for clients that replace their trust store (Codex)."""
    roots = next((Path(p) for p in SYSTEM_BUNDLES if Path(p).exists()), None)
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text((roots.read_text() if roots else "") + Path(proxy.ca_cert).read_text())
    return str(bundle)


def summarize(reqs) -> list[dict]:
    return [{"method": r.method, "path": r.path, "headers": describe_headers(r.fields),
             "body": describe_body(r.body) if r.body else None} for r in reqs]


def codex_exec(codex_bin, *args: str) -> list:
    return [codex_bin, "exec", "--skip-git-repo-check", "--sandbox", "read-only",
            "--color", "never", *args]


def write_codex_provider(sandbox, base_url: str) -> None:
    (sandbox.codex_home / "config.toml").write_text(f"""\
model = "gpt-5-codex"
model_provider = "headroom"

[model_providers.headroom]
name = "OpenAI via Headroom"
base_url = "{base_url}"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
""")


def assert_codex_headers(fields) -> str:
    """Codex's identity headers; returns its thread id."""
    thread = header(fields, "thread-id")
    assert thread and header(fields, "session-id") == thread
    assert header(fields, "originator") == "codex_exec"
    assert header(fields, "user-agent").startswith("codex_exec/")
    meta = json.loads(header(fields, "x-codex-turn-metadata"))
    assert meta["thread_id"] == thread
    return thread


def codex_session_source(evs: list[dict], fields) -> str:
    sources = {e["session_source"] for e in evs}
    assert len(sources) == 1 and sources <= CODEX_SOURCES, sources
    assert {e["session_confidence"] for e in evs} == {"high"}
    assert len({e["session_id"] for e in evs}) == 1
    source = sources.pop()
    if header(fields, "thread-id"):
        assert source == "header:thread-id"
    return source


# -- Claude Code -----------------------------------------------------------------------------------


def test_claude_code_reverse_mode(claude_bin, agent_upstream, sandbox, tmp_path):
    with Mitmdump(mode=f"reverse:{agent_upstream.url}", workdir=tmp_path / "hr") as p, \
            WireTap(p.port) as tap:
        run = sandbox.run([claude_bin, "-p", "say hi"],
                          claude_env(sandbox, ANTHROPIC_BASE_URL=tap.url))
        assert run.returncode == 0, run.explain()
        assert ANSWER in run.stdout, run.explain()

        ups = agent_upstream.llm_requests()
        assert ups and {u.path for u in ups} == {"/v1/messages?beta=true"}
        sid = None
        for u in ups:
            sid = assert_claude_request(u.fields, u.body)
        assert sid, "this Claude Code version sends X-Claude-Code-Session-Id"

        # byte fidelity: what the client put on the wire is what the upstream got
        client = [r for r in tap.requests() if is_llm(r.method, r.path)]
        assert_wire_identical(client, ups, host_rewritten=True)

        evs = claude_events(p, len(ups))
        source = assert_claude_session(evs, sid)
        for e, u in zip(evs, ups):
            assert e["path"] == "/v1/messages" and e["status"] == 200 and e["stream"] is True
            assert e["stream_state"] == "complete" and e["stripped_headers"] == 0
            assert e["req_bytes"] == e["req_bytes_upstream"] == len(u.body)
            assert e["decisions"]["rewrite"]["changed"] is False

        others = [r for r in tap.requests() if not is_llm(r.method, r.path)]
        report("claude_reverse", {"session_source": source, "llm": summarize(client),
                                  "other_requests": [(r.method, r.path) for r in others],
                                  "seconds": round(run.seconds, 2)})


def test_claude_code_regular_mode(claude_bin, agent_upstream, sandbox, tmp_path):
    """HTTPS_PROXY + NODE_EXTRA_CA_CERTS, base URL untouched: Claude Code talks to
    "api.anthropic.com" (first-party behaviour) and Headroom intercepts it."""
    with Mitmdump(mode="regular", redirect_to=agent_upstream.tls_port,
                  workdir=tmp_path / "hr") as p:
        run = sandbox.run([claude_bin, "-p", "say hi"],
                          claude_env(sandbox, HTTPS_PROXY=p.url, NODE_EXTRA_CA_CERTS=p.ca_cert))
        assert run.returncode == 0, run.explain()
        assert ANSWER in run.stdout, run.explain()

        ups = agent_upstream.llm_requests()
        assert ups and {u.path for u in ups} == {"/v1/messages?beta=true"}
        assert {u.scheme for u in ups} == {"https"}
        assert {header(u.fields, "host") for u in ups} == {"api.anthropic.com"}
        sid = None
        for u in ups:
            sid = assert_claude_request(u.fields, u.body)
        evs = claude_events(p, len(ups))
        source = assert_claude_session(evs, sid)
        for e, u in zip(evs, ups):
            assert e["host"] == "api.anthropic.com" and e["status"] == 200
            assert e["req_bytes"] == e["req_bytes_upstream"] == len(u.body)
        # first-party start-up calls go through untouched and are not LLM flows
        others = [r for r in agent_upstream.received if not is_llm(r.method, r.path)]
        assert all(not r.path.startswith("/v1/messages") for r in others)
        report("claude_regular", {"session_source": source, "llm": summarize(ups),
                                  "other_requests": [(r.method, r.path) for r in others],
                                  "seconds": round(run.seconds, 2)})


def test_claude_code_regular_mode_bytes_match_what_the_client_sent(
        claude_bin, agent_upstream, sandbox, tmp_path, monkeypatch):
    """Client -> plain mitmdump (records) -> Headroom (regular) -> fake: the record of what the
    client sent equals what the upstream received, body hash and header fields."""
    capture = tmp_path / "capture.jsonl"
    with Mitmdump(mode="regular", redirect_to=agent_upstream.tls_port,
                  workdir=tmp_path / "hr") as p:
        monkeypatch.setenv("HEADROOM_TEST_CAPTURE", str(capture))
        with Mitmdump(mode=f"upstream:{p.url}", headroom=False, workdir=tmp_path / "front",
                      extra_args=["-s", str(CAPTURE_ADDON)]) as front:
            run = sandbox.run([claude_bin, "-p", "say hi"],
                              claude_env(sandbox, HTTPS_PROXY=front.url,
                                         NODE_EXTRA_CA_CERTS=front.ca_cert))
        assert run.returncode == 0 and ANSWER in run.stdout, run.explain()

        class Rec:
            def __init__(self, d):
                self.method, self.path, self.sha256 = d["method"], d["path"], d["sha256"]
                self.fields = [tuple(f) for f in d["fields"]]

        client = [Rec(json.loads(line)) for line in capture.read_text().splitlines()]
        client_llm = [c for c in client if is_llm(c.method, c.path)]
        ups = agent_upstream.llm_requests()
        assert client_llm and len(client_llm) == len(ups)
        assert_wire_identical(client_llm, ups, host_rewritten=False)
        # the non-LLM start-up calls too (they run in parallel: compare in a stable order)
        def key(r):
            return (r.method, r.path, r.sha256, [tuple(f) for f in r.fields])

        assert_wire_identical(
            sorted((c for c in client if not is_llm(c.method, c.path)), key=key),
            sorted((u for u in agent_upstream.received if not is_llm(u.method, u.path)), key=key),
            host_rewritten=False)
        evs = claude_events(p, len(ups))
        assert [e["req_bytes_upstream"] for e in evs] == [len(u.body) for u in ups]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_claude_code_content_encoded_stream(claude_bin, agent_upstream, sandbox, tmp_path, coding):
    """Claude Code sends `Accept-Encoding: gzip, deflate, br, zstd`; an upstream that
    content-encodes the SSE answer reaches it through Headroom's stream tee intact (the client
    decodes it), and Headroom still reads usage from the side copy."""
    with Mitmdump(mode=f"reverse:{agent_upstream.url}", workdir=tmp_path / "hr") as p:
        env = claude_env(sandbox, ANTHROPIC_BASE_URL=p.url,
                         ANTHROPIC_CUSTOM_HEADERS=f"x-test-scenario: {coding}")
        run = sandbox.run([claude_bin, "-p", "say hi"], env)
        assert run.returncode == 0, run.explain()
        assert ANSWER in run.stdout, run.explain()
        ups = agent_upstream.llm_requests()
        assert ups and coding in header(ups[0].fields, "accept-encoding")
        (ev,) = claude_events(p, len(ups))
        assert ev["stream_state"] == "complete" and ev["status"] == 200
        assert ev["usage"]["output_tokens"] == 9 and ev["usage"]["cache_read_tokens"] == 100


def test_claude_code_tool_round_trip_is_compressed(claude_bin, agent_upstream, sandbox, tmp_path):
    """The fake answers with a Bash tool_use; Claude Code runs it and sends the ~24 KB output
    back; Headroom compresses it upstream (API-key traffic, headroom_compress=auto) and Claude
    Code still finishes. ANTHROPIC_CUSTOM_HEADERS steers the fake and carries an internal
    x-headroom-* header that must be stripped."""
    with Mitmdump(mode=f"reverse:{agent_upstream.url}", workdir=tmp_path / "hr") as p, \
            WireTap(p.port) as tap:
        env = claude_env(sandbox, ANTHROPIC_BASE_URL=tap.url,
                         ANTHROPIC_CUSTOM_HEADERS="x-test-scenario: bash-tool\n"
                                                  "X-Headroom-Note: realclients")
        run = sandbox.run([claude_bin, "-p", "run the command you are given",
                           "--allowedTools", "Bash"], env)
        assert run.returncode == 0, run.explain()

        client = [r for r in tap.requests() if is_llm(r.method, r.path)]
        ups = agent_upstream.llm_requests()
        assert len(client) == len(ups) == 2, summarize(client)
        for c in client:
            assert header(c.fields, "x-test-scenario") == "bash-tool"
            assert header(c.fields, "x-headroom-note") == "realclients"
        for u in ups:
            assert header(u.fields, "x-headroom-note") is None  # stripped
            assert header(u.fields, "x-test-scenario") == "bash-tool"

        # turn 1 untouched
        assert client[0].sha256 == ups[0].sha256
        # turn 2: the tool output Claude Code sent, replaced by a compressed one, nothing else
        result = json.loads(client[1].body)["messages"][-1]["content"][0]
        assert result["type"] == "tool_result"
        original = result["content"]
        if isinstance(original, list):
            original = "".join(part.get("text", "") for part in original)
        assert original.count("PASSED") == 600, original[:500]
        compressed = assert_single_literal_rewrite(client[1].body, ups[1].body, original)
        assert len(compressed) < len(original) // 10
        assert "tests/test_mod.py::test_case_1 PASSED" in compressed
        assert "tests/test_mod.py::test_case_600 PASSED" in compressed
        # the fake said how much it saw; Claude Code printed it
        assert tool_result_answer(len(compressed)) in run.stdout, run.explain()
        assert without(client[1].fields, "host", "content-length", "x-headroom-note") == \
            without(ups[1].fields, "host", "content-length")

        evs = claude_events(p, 2)
        assert [e["stripped_headers"] for e in evs] == [1, 1]
        assert evs[0]["decisions"]["rewrite"]["changed"] is False
        rw = evs[1]["decisions"]["rewrite"]
        assert rw["changed"] is True and rw["actions"] == {"compressed": 1}
        (block,) = rw["blocks"]
        assert (block["tool"], block["kind"], block["live"]) == ("Bash", "log", True)
        assert evs[1]["req_bytes"] == len(client[1].body)
        assert evs[1]["req_bytes_upstream"] == len(ups[1].body) < len(client[1].body)

        # the original is retrievable through the reverse listener
        with urllib.request.urlopen(f"{p.url}/ccr/{ccr_handle(compressed)}", timeout=10) as r:
            assert r.status == 200 and r.read().decode() == original
        report("claude_tool_round_trip", {
            "session_source": assert_claude_session(evs, header(ups[0].fields,
                                                                "x-claude-code-session-id")),
            "tool_result_chars": {"client": len(original), "upstream": len(compressed)},
            "rewrite": rw, "seconds": round(run.seconds, 2)})


# -- Codex -----------------------------------------------------------------------------------------


def test_codex_exec_custom_provider_http_sse(codex_bin, agent_upstream, sandbox, tmp_path):
    """A custom provider (`wire_api = "responses"`, `env_key`) whose base_url is Headroom's
    reverse listener: HTTP POST /v1/responses with an SSE answer."""
    with Mitmdump(mode=f"reverse:{agent_upstream.url}", workdir=tmp_path / "hr") as p, \
            WireTap(p.port) as tap:
        write_codex_provider(sandbox, tap.url + "/v1")
        run = sandbox.run(codex_exec(codex_bin, "say hi"), sandbox.env(OPENAI_API_KEY=OPENAI_KEY))
        assert run.returncode == 0, run.explain()
        assert ANSWER in run.stdout, run.explain()

        ups = agent_upstream.llm_requests()
        assert ups and {u.path for u in ups} == {"/v1/responses"}
        for u in ups:
            assert header(u.fields, "authorization") == f"Bearer {OPENAI_KEY}"  # env_key
            assert header(u.fields, "accept") == "text/event-stream"
            assert header(u.fields, "content-encoding") is None
            doc = json.loads(u.body)
            assert doc["stream"] is True and doc["model"] == "gpt-5-codex"
            thread = assert_codex_headers(u.fields)
            assert doc["prompt_cache_key"] == thread

        client = [r for r in tap.requests() if is_llm(r.method, r.path)]
        assert_wire_identical(client, ups, host_rewritten=True)

        evs = [e for e in p.events(wait_for=len(ups), timeout=15) if e["provider"] == "openai"]
        assert len(evs) == len(ups)
        source = codex_session_source(evs, ups[0].fields)
        for e, u in zip(evs, ups):
            assert (e["endpoint"], e["transport"], e["stream"]) == ("responses", "http", True)
            assert e["status"] == 200 and e["stream_state"] == "complete"
            assert e["req_bytes"] == e["req_bytes_upstream"] == len(u.body)
        report("codex_custom_provider", {"session_source": source, "llm": summarize(client),
                                         "seconds": round(run.seconds, 2)})


def test_codex_exec_tool_round_trip_is_compressed(codex_bin, agent_upstream, sandbox, tmp_path):
    with Mitmdump(mode=f"reverse:{agent_upstream.url}", workdir=tmp_path / "hr") as p, \
            WireTap(p.port) as tap:
        write_codex_provider(sandbox, tap.url + "/v1")
        run = sandbox.run(codex_exec(codex_bin, f"{CODEX_TOOL_TRIGGER}: run the command"),
                          sandbox.env(OPENAI_API_KEY=OPENAI_KEY))
        assert run.returncode == 0, run.explain()

        client = [r for r in tap.requests() if is_llm(r.method, r.path)]
        ups = agent_upstream.llm_requests()
        assert len(client) == len(ups) == 2, summarize(client)
        assert client[0].sha256 == ups[0].sha256
        out = next(i for i in json.loads(client[1].body)["input"]
                   if i.get("type") == "function_call_output")
        original = out["output"]
        assert "tests/test_mod.py::test_case_1 PASSED" in original, original[:500]
        compressed = assert_single_literal_rewrite(client[1].body, ups[1].body, original)
        assert len(compressed) < len(original) // 3
        assert tool_result_answer(len(compressed)) in run.stdout, run.explain()

        evs = [e for e in p.events(wait_for=2, timeout=15) if e["provider"] == "openai"]
        rw = evs[1]["decisions"]["rewrite"]
        assert rw["actions"] == {"compressed": 1}
        (block,) = rw["blocks"]
        assert (block["tool"], block["kind"]) == ("exec_command", "log")
        assert evs[1]["req_bytes_upstream"] == len(ups[1].body) < evs[1]["req_bytes"]
        report("codex_tool_round_trip", {
            "session_source": codex_session_source(evs, ups[0].fields),
            "tool_output_chars": {"client": len(original), "upstream": len(compressed)},
            "rewrite": rw, "seconds": round(run.seconds, 2)})


@pytest.fixture
def ws_upstream():
    up = AgentWebSocketFake()
    yield up
    up.close()


def test_codex_builtin_provider_websocket_reverse(codex_bin, ws_upstream, sandbox, tmp_path):
    """The built-in OpenAI provider talks Responses over a WebSocket. `openai_base_url` points it
    at Headroom's reverse listener (no HTTPS needed); the exec_command output is compressed in
    the `response.create` message, and every other message passes byte for byte."""
    with Mitmdump(mode=f"reverse:{ws_upstream.url}", workdir=tmp_path / "hr") as p, \
            WireTap(p.port) as tap:
        (sandbox.codex_home / "config.toml").write_text(f'openai_base_url = "{tap.url}/v1"\n')
        # `codex exec` with the built-in provider authenticates from CODEX_API_KEY (or a
        # `codex login --with-api-key`); OPENAI_API_KEY alone sends no credential at all.
        run = sandbox.run(codex_exec(codex_bin, "-m", "gpt-5-codex",
                                     f"{CODEX_TOOL_TRIGGER}: run the command"),
                          sandbox.env(CODEX_API_KEY=OPENAI_KEY))
        assert run.returncode == 0, run.explain()

        (hs,) = ws_upstream.handshakes
        assert header(hs, "upgrade").lower() == "websocket"
        assert header(hs, "openai-beta").startswith("responses_websockets=")
        assert header(hs, "authorization") == f"Bearer {OPENAI_KEY}"
        assert_codex_headers(hs)
        (client_hs,) = [r for r in tap.requests() if r.path == "/v1/responses"]
        assert client_hs.method == "GET"

        sent = tap.websocket_messages()
        got = ws_upstream.messages
        docs = [json.loads(m) for m in got]
        assert [d["type"] for d in docs] == ["response.create"] * len(docs)
        assert docs[0].get("generate") is False  # the pre-warm
        assert len(sent) == len(got) >= 3
        rewritten = [i for i, (s, g) in enumerate(zip(sent, got)) if s != g]
        assert len(rewritten) == 1, "only the message carrying the tool output may change"
        i = rewritten[0]
        out = next(x for x in json.loads(sent[i])["input"]
                   if x.get("type") == "function_call_output")
        compressed = assert_single_literal_rewrite(sent[i].encode(), got[i].encode(), out["output"])
        assert tool_result_answer(len(compressed)) in run.stdout, run.explain()

        evs = [e for e in p.events(wait_for=len(got), timeout=15) if e["provider"] == "openai"]
        assert len(evs) == len(got)
        assert {e["transport"] for e in evs} == {"websocket"}
        assert evs[0]["decisions"].get("warmup") is True
        source = codex_session_source(evs, hs)
        assert evs[i]["decisions"]["rewrite"]["actions"] == {"compressed": 1}
        assert evs[i]["decisions"]["rewrite"]["blocks"][0]["tool"] == "exec_command"
        for j, e in enumerate(evs):
            assert e["req_bytes"] == len(sent[j].encode())
            assert e["req_bytes_upstream"] == len(got[j].encode())
        report("codex_builtin_websocket_reverse", {
            "session_source": source, "handshake": describe_headers(hs),
            "messages": [describe_body(m.encode()) for m in got],
            "seconds": round(run.seconds, 2)})


def test_codex_builtin_provider_websocket_regular_mode(codex_bin, sandbox, tmp_path):
    """HTTPS_PROXY + CODEX_CA_CERTIFICATE (system roots + mitmproxy CA): Codex opens
    wss://api.openai.com/v1/responses through Headroom, unchanged client configuration."""
    up = AgentWebSocketFake(tls=True)
    try:
        with Mitmdump(mode="regular", redirect_to=up.port, workdir=tmp_path / "hr") as p:
            env = sandbox.env(CODEX_API_KEY=OPENAI_KEY, HTTPS_PROXY=p.url,
                              CODEX_CA_CERTIFICATE=ca_bundle(tmp_path, p))
            run = sandbox.run(codex_exec(codex_bin, "-m", "gpt-5-codex", "say hi"), env)
            assert run.returncode == 0, run.explain()
            assert ANSWER in run.stdout, run.explain()
            assert "Falling back from WebSockets" not in run.stderr, run.explain()
            # (Codex's start-up GET of chatgpt.com/backend-api/plugins/... also lands on this
            # fake, which refuses it: not a WebSocket upgrade)
            upgrades = [h for h in up.handshakes if (header(h, "upgrade") or "").lower() ==
                        "websocket"]
            assert upgrades, f"Codex did not open the WebSocket through the proxy: {up.handshakes}"
            hs = upgrades[0]
            assert {header(h, "host") for h in upgrades} == {"api.openai.com"}
            assert header(hs, "authorization") == f"Bearer {OPENAI_KEY}"
            evs = [e for e in p.events(wait_for=len(up.messages), timeout=15)
                   if e["provider"] == "openai" and e["transport"] == "websocket"]
            assert len(evs) == len(up.messages) >= 2
            assert {e["host"] for e in evs} == {"api.openai.com"}
            source = codex_session_source(evs, hs)
            report("codex_builtin_websocket_regular", {
                "session_source": source, "handshake": describe_headers(hs),
                "seconds": round(run.seconds, 2)})
    finally:
        up.close()


def test_codex_regular_mode_refused_websocket_falls_back_to_sse(
        codex_bin, agent_upstream, sandbox, tmp_path):
    """headroom_websocket=refuse answers the upgrade with 426; Codex falls back to HTTP + SSE
    at once, through Headroom."""
    with Mitmdump(mode="regular", redirect_to=agent_upstream.tls_port, workdir=tmp_path / "hr",
                  options={"headroom_websocket": "refuse"}) as p:
        env = sandbox.env(CODEX_API_KEY=OPENAI_KEY, HTTPS_PROXY=p.url,
                          CODEX_CA_CERTIFICATE=ca_bundle(tmp_path, p))
        run = sandbox.run(codex_exec(codex_bin, "-m", "gpt-5-codex", "say hi"), env)
        assert run.returncode == 0, run.explain()
        assert ANSWER in run.stdout, run.explain()
        ups = agent_upstream.llm_requests()
        assert ups and {(u.method, u.path) for u in ups} == {("POST", "/v1/responses")}
        assert header(ups[0].fields, "host") == "api.openai.com"
        assert header(ups[0].fields, "authorization") == f"Bearer {OPENAI_KEY}"
        thread = assert_codex_headers(ups[0].fields)
        assert json.loads(ups[0].body)["prompt_cache_key"] == thread
        evs = [e for e in p.events(wait_for=1 + len(ups), timeout=15) if e["provider"] == "openai"]
        refused = [e for e in evs if e["transport"] == "websocket"]
        assert refused and {e["status"] for e in refused} == {426}
        assert {e["local"] for e in refused} == {True}
        http = [e for e in evs if e["transport"] == "http"]
        assert len(http) == len(ups)
        assert [e["req_bytes_upstream"] for e in http] == [len(u.body) for u in ups]
        report("codex_refused_websocket_fallback", {
            "session_source": codex_session_source(http, ups[0].fields),
            "websocket_attempts": len(refused), "llm": summarize(ups),
            "other_requests": [(r.method, r.path) for r in agent_upstream.received
                               if not is_llm(r.method, r.path)],
            "seconds": round(run.seconds, 2)})

