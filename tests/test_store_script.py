import contextlib
import importlib.util
import io as stdio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitmproxy import connection, flow, http, io

from headroom_core import cachekey, encoding, tenant
from headroom_runtime.diskstore import ResponseStore

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "store.py"

_spec = importlib.util.spec_from_file_location("headroom_store_script", SCRIPT)
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

ANTHROPIC_SSE = (b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
                 b"{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
                 b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n"
                 b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":"
                 b"{\"output_tokens\":7}}\n\n"
                 b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
CODEX_SSE = (b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n"
             b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":"
             b"{\"usage\":{\"input_tokens\":5,\"output_tokens\":2}}}\n\n")


def make_flow(url, body, *, status=200, resp=b"{}", req_headers=(), resp_headers=(),
              method="POST", ts=None):
    ts = time.time() if ts is None else ts
    req = http.Request.make(method, url, b"", [(b"content-type", b"application/json"),
                                               *req_headers])
    req.content = body  # encodes as Content-Encoding says
    req.timestamp_start = req.timestamp_end = ts
    response = http.Response.make(status, b"", list(resp_headers))
    response.content = resp
    response.timestamp_start = response.timestamp_end = ts
    f = http.HTTPFlow(connection.Client(peername=("127.0.0.1", 50000),
                                        sockname=("127.0.0.1", 8080), timestamp_start=ts),
                      connection.Server(address=(req.host, 443)))
    f.request, f.response = req, response
    return f


def anthropic_body(**over):
    b = {"model": "claude-sonnet-4-5", "max_tokens": 100,
         "metadata": {"user_id": "user_x_session_1"},
         "system": [{"type": "text", "text": "x-anthropic-billing-header: cch=1;"},
                    {"type": "text", "text": "You are Claude Code.",
                     "cache_control": {"type": "ephemeral"}}],
         "messages": [{"role": "user", "content": "hi"}]}
    b.update(over)
    return json.dumps(b).encode()


AUTH = [(b"x-api-key", b"sk-ant-api-1"), (b"anthropic-version", b"2023-06-01"),
        (b"anthropic-beta", b"b-2, a-1"), (b"x-headroom-session", b"s1")]


def sample_flows():
    old = time.time() - 30 * 86400
    flows = {
        "plain": make_flow("https://api.anthropic.com/v1/messages", anthropic_body(),
                           req_headers=[*AUTH, (b"content-encoding", b"gzip")],
                           resp=b'{"id":"msg_1","usage":{"input_tokens":3,"output_tokens":4}}',
                           resp_headers=[(b"content-type", b"application/json"),
                                         (b"request-id", b"req_1"), (b"set-cookie", b"a=b")]),
        "stream": make_flow("https://api.anthropic.com/v1/messages?beta=true",
                            anthropic_body(stream=True), req_headers=AUTH, resp=ANTHROPIC_SSE,
                            resp_headers=[(b"content-type", b"text/event-stream")]),
        "old": make_flow("https://api.anthropic.com/v1/messages", anthropic_body(max_tokens=200),
                         req_headers=AUTH, resp=b'{"id":"msg_old"}', ts=old,
                         resp_headers=[(b"content-type", b"application/json")]),
        "codex": make_flow("https://chatgpt.com/backend-api/codex/responses",
                           json.dumps({"model": "gpt-5-codex", "input": "hi", "stream": True,
                                       "prompt_cache_key": "sess"}).encode(),
                           req_headers=[(b"authorization", b"Bearer eyJa.b.c")], resp=CODEX_SSE,
                           resp_headers=[(b"content-type", b"text/event-stream"),
                                         (b"content-encoding", b"br")]),
        "truncated": make_flow("https://api.anthropic.com/v1/messages",
                               anthropic_body(stream=True, max_tokens=5), req_headers=AUTH,
                               resp=ANTHROPIC_SSE[:120],
                               resp_headers=[(b"content-type", b"text/event-stream")]),
        "error": make_flow("https://api.anthropic.com/v1/messages", anthropic_body(max_tokens=6),
                           req_headers=AUTH, status=529, resp=b'{"type":"error"}'),
        "not-llm": make_flow("https://api.anthropic.com/v1/models", b"", method="GET"),
        "failed": make_flow("https://api.openai.com/v1/chat/completions", b'{"model":"x"}'),
    }
    flows["failed"].error = flow.Error("connection closed")
    return flows


def write_flows(path, flows):
    with open(path, "wb") as f:
        w = io.FlowWriter(f)
        for fl in flows:
            w.add(fl)


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def expected_key(fl, tenant_id):
    fields = [(n, v) for n, v in fl.request.headers.fields
              if not n.lower().startswith(b"x-headroom-")]
    body = encoding.decode(fl.request.raw_content, fl.request.headers.get("content-encoding"))
    route = cli.routing.classify(fl.request.method, fl.request.host, fl.request.path,
                                 reverse=True)
    return cachekey.request_key(cachekey.canonical_request(
        provider=route.provider, endpoint=route.endpoint, method=fl.request.method,
        host=fl.request.host, path=fl.request.path, fields=fields, body=body, tenant=tenant_id))


@pytest.fixture
def imported(tmp_path):
    flows = sample_flows()
    ff = tmp_path / "in.flows"
    write_flows(ff, flows.values())
    d = tmp_path / "headroom" / "store"
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--dir", str(d), "import", str(ff), "--namespace", "ci"]) == 0
    return flows, d, out.getvalue()


def test_import_stores_complete_2xx_llm_flows_only(imported):
    flows, d, out = imported
    assert out.strip() == ("imported 4 entries; skipped 1 no complete response, "
                           "1 not an LLM request, 1 status 529, 1 truncated stream")
    with ResponseStore(d) as s:
        keys = set(s.keys())
        assert keys == {expected_key(flows[n], "ns:ci")
                        for n in ("plain", "stream", "old", "codex")}
        plain = s.get(expected_key(flows["plain"], "ns:ci"))
        assert plain.body == b'{"id":"msg_1","usage":{"input_tokens":3,"output_tokens":4}}'
        assert plain.chunks is None and plain.meta["usage"] == {"input_tokens": 3,
                                                                "output_tokens": 4}
        assert (b"request-id", b"req_1") not in plain.headers
        assert all(n.lower() != b"set-cookie" for n, _ in plain.headers)
        stream = s.get(expected_key(flows["stream"], "ns:ci"))
        assert stream.chunks == [(0.0, ANTHROPIC_SSE)]
        assert stream.meta["usage"] == {"input_tokens": 12, "output_tokens": 7}
        assert stream.meta["stream"] is True
        codex = s.get(expected_key(flows["codex"], "ns:ci"))
        assert codex.chunks == [(0.0, flows["codex"].response.raw_content)]  # still br-encoded
        assert encoding.decode(codex.body, "br") == CODEX_SSE
        assert codex.meta["usage"] == {"input_tokens": 5, "output_tokens": 2}
        assert "sk-ant-api-1" not in json.dumps(plain.request)


def test_import_without_namespace_uses_the_salt_beside_the_store(tmp_path, capsys):
    flows = sample_flows()
    ff = tmp_path / "in.flows"
    write_flows(ff, [flows["plain"]])
    d = tmp_path / "headroom" / "store"
    assert run(capsys, "--dir", d, "import", ff)[0] == 0
    salt_path = tmp_path / "headroom" / "salt"
    salt = salt_path.read_bytes()
    assert len(salt) == 16 and (os.stat(salt_path).st_mode & 0o777) == 0o600
    tid = tenant.tenant_id(flows["plain"].request.headers.fields, salt)
    with ResponseStore(d) as s:
        assert list(s.keys()) == [expected_key(flows["plain"], tid)]
    assert run(capsys, "--dir", d, "import", ff)[0] == 0
    assert salt_path.read_bytes() == salt


def test_list_show_and_diff(imported, capsys):
    flows, d, _ = imported
    code, out, _ = run(capsys, "--dir", d, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("KEY") and lines[-1].startswith("4 entries")
    plain_key = expected_key(flows["plain"], "ns:ci")
    row = next(line for line in lines if line.startswith(plain_key[:16]))
    assert "anthropic/messages" in row and "claude-sonnet-4-5" in row and " no " in row
    assert "200" in row
    codex_row = next(line for line in lines if "gpt-5-codex" in line)
    assert "openai/codex_responses" in codex_row and " yes " in codex_row
    assert lines[-2].startswith(expected_key(flows["old"], "ns:ci")[:16])  # oldest last
    assert lines[-2].rstrip().endswith("30d")

    code, out, _ = run(capsys, "show", plain_key[:10], "--dir", d)
    assert code == 0
    assert f"key:      {plain_key}" in out and "status:   200" in out
    assert "  model: claude-sonnet-4-5" in out and "  messages[]: 1" in out
    assert "content-type: application/json" in out
    assert "msg_1" not in out  # bodies only on request

    old_key = expected_key(flows["old"], "ns:ci")
    code, out, _ = run(capsys, "--dir", d, "diff", plain_key, old_key)
    assert code == 0 and out.splitlines() == ["max_tokens changed: 100 -> 200"]


def test_show_body_writes_the_exact_bytes(imported, capsysbinary):
    flows, d, _ = imported
    assert cli.main(["--dir", str(d), "show", "--body",
                     expected_key(flows["stream"], "ns:ci")]) == 0
    assert capsysbinary.readouterr().out == ANTHROPIC_SSE


def test_unknown_and_ambiguous_keys(imported, capsys):
    _, d, _ = imported
    code, _, err = run(capsys, "--dir", d, "show", "zzzz")
    assert code == 1 and "no entry matches" in err
    code, _, err = run(capsys, "--dir", d, "show", "")
    assert code == 1 and "ambiguous" in err


def test_prune(imported, capsys):
    flows, d, _ = imported
    assert run(capsys, "--dir", d, "prune")[1].strip() == "removed 0 entries"
    assert run(capsys, "--dir", d, "prune", "--older-than", "7d")[1].strip() == "removed 1 entries"
    with ResponseStore(d) as s:
        assert expected_key(flows["old"], "ns:ci") not in set(s.keys())
        assert len(list(s.keys())) == 3
    assert run(capsys, "--dir", d, "prune", "--all")[1].strip() == "removed 3 entries"


def test_export_then_import_round_trips(imported, tmp_path, capsys):
    flows, d, _ = imported
    out_file = tmp_path / "out.flows"
    code, out, _ = run(capsys, "--dir", d, "export", out_file)
    assert code == 0 and out.strip() == "exported 4 flows"
    with open(out_file, "rb") as f:
        exported = list(io.FlowReader(f).stream())
    assert all(isinstance(fl, http.HTTPFlow) and fl.response for fl in exported)
    assert {fl.request.pretty_url for fl in exported} == {
        "https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/messages?beta=true",
        "https://chatgpt.com/backend-api/codex/responses"}

    d2 = tmp_path / "again" / "store"
    code, out, _ = run(capsys, "--dir", d2, "import", out_file, "--namespace", "ci")
    assert code == 0 and out.strip() == "imported 4 entries"
    with ResponseStore(d) as a, ResponseStore(d2) as b:
        assert set(a.keys()) == set(b.keys())
        for key in a.keys():
            ea, eb = a.get(key), b.get(key)
            assert (ea.status, ea.headers, ea.body, ea.chunks, ea.request) == \
                (eb.status, eb.headers, eb.body, eb.chunks, eb.request)
            assert ea.meta["created"] == eb.meta["created"]

    # selected keys only
    code, out, _ = run(capsys, "--dir", d, "export", tmp_path / "one.flows",
                       expected_key(flows["codex"], "ns:ci")[:12])
    assert out.strip() == "exported 1 flows"


def test_extra_exclude_matches_the_addon_configuration(tmp_path, capsys):
    a = make_flow("https://api.anthropic.com/v1/messages", anthropic_body(metadata={"trace": 1}))
    b = make_flow("https://api.anthropic.com/v1/messages", anthropic_body(metadata={"trace": 2}))
    ff = tmp_path / "in.flows"
    write_flows(ff, [a, b])
    d = tmp_path / "s"
    run(capsys, "--dir", d, "import", ff, "--namespace", "ci", "--exclude", "metadata.trace")
    with ResponseStore(d) as s:
        assert len(list(s.keys())) == 1
    code, _, err = run(capsys, "--dir", d, "import", ff, "--namespace", "ci", "--exclude", "a..b")
    assert code == 2 and "--exclude" in err


def test_runs_as_a_command(imported):
    _, d, _ = imported
    out = subprocess.run([sys.executable, str(SCRIPT), "--dir", str(d), "list"],
                         capture_output=True, check=True, cwd="/")
    assert out.stdout.decode().splitlines()[-1].startswith("4 entries")
    missing = subprocess.run([sys.executable, str(SCRIPT), "--dir", str(d / "nope"), "list"],
                             capture_output=True, cwd="/")
    assert missing.returncode == 1 and b"no store at" in missing.stderr
    down = subprocess.run([sys.executable, str(SCRIPT), "--redis", "redis://127.0.0.1:1/0",
                           "list"], capture_output=True, cwd="/")
    assert down.returncode == 2 and down.stderr == (  # one line, no "degraded" log lines
        b"store.py: --redis: cannot reach redis://127.0.0.1:1/0 (ConnectionError)\n")


def test_parse_duration():
    assert cli.parse_duration("7d") == 7 * 86400
    assert cli.parse_duration("90") == 90 and cli.parse_duration("1.5h") == 5400
    with pytest.raises(Exception):
        cli.parse_duration("7 days")


# -- --redis: the store a team gateway shares --------------------------------------------------


def test_redis_store_import_list_show_diff_prune_export(redis_url, tmp_path, capsys):
    flows = sample_flows()
    ff = tmp_path / "in.flows"
    write_flows(ff, flows.values())
    code, out, _ = run(capsys, "--redis", redis_url, "import", ff, "--namespace", "ci")
    assert code == 0 and out.startswith("imported 4 entries")
    from headroom_runtime.redisconn import RedisConn
    from headroom_runtime.redisstore import RedisStore
    conn = RedisConn(redis_url)
    store = RedisStore(conn)
    want = {expected_key(flows[n], "ns:ci") for n in ("plain", "stream", "old", "codex")}
    assert set(store.keys()) == want  # where a proxy with headroom_namespace=ci looks
    stream = store.get(expected_key(flows["stream"], "ns:ci"), tenant="ns:ci")
    assert stream.chunks == [(0.0, ANTHROPIC_SSE)]

    code, out, _ = run(capsys, "--redis", redis_url, "list")
    assert code == 0 and out.splitlines()[-1].startswith("4 entries")
    plain, old = expected_key(flows["plain"], "ns:ci"), expected_key(flows["old"], "ns:ci")
    code, out, _ = run(capsys, "show", plain[:10], "--redis", redis_url)
    assert code == 0 and f"key:      {plain}" in out
    assert run(capsys, "--redis", redis_url, "diff", plain, old)[1].splitlines() == [
        "max_tokens changed: 100 -> 200"]
    code, out, _ = run(capsys, "--redis", redis_url, "export", tmp_path / "out.flows")
    assert code == 0 and out.strip() == "exported 4 flows"
    assert run(capsys, "--redis", redis_url, "prune", "--older-than", "7d")[1].strip() == \
        "removed 1 entries"
    assert set(store.keys()) == want - {old}
    # what came out of Redis goes into a disk store as the same recordings
    d = tmp_path / "disk" / "store"
    assert run(capsys, "--dir", d, "import", tmp_path / "out.flows", "--namespace", "ci")[0] == 0
    with ResponseStore(d) as s:
        assert set(s.keys()) == want
    conn.close()


def test_redis_import_without_namespace_uses_the_shared_salt(redis_url, tmp_path, capsys):
    from headroom_runtime import redissalt
    from headroom_runtime.redisconn import RedisConn
    conn = RedisConn(redis_url)
    salt = redissalt.load_salt(conn)  # what every instance sharing this Redis uses
    flows = sample_flows()
    write_flows(tmp_path / "in.flows", [flows["plain"]])
    assert run(capsys, "--redis", redis_url, "import", tmp_path / "in.flows")[0] == 0
    tid = tenant.tenant_id(flows["plain"].request.headers.fields, salt)
    from headroom_runtime.redisstore import RedisStore
    assert list(RedisStore(conn).keys()) == [expected_key(flows["plain"], tid)]
    conn.close()


def test_redis_password_from_the_environment_and_clear_failures(redis_factory, tmp_path,
                                                                capfd, monkeypatch):
    capsys = capfd  # what reaches the file descriptors
    server = redis_factory(password="s3cret-pw").start()
    bare = server.url.replace(":s3cret-pw@", "")
    assert "s3cret" not in bare
    monkeypatch.delenv("HEADROOM_REDIS_PASSWORD", raising=False)
    code, out, err = run(capsys, "--redis", bare, "list")
    assert code == 2 and "s3cret" not in out + err
    assert err == f"store.py: --redis: cannot reach {bare} (AuthenticationError)\n"  # one line
    monkeypatch.setenv("HEADROOM_REDIS_PASSWORD", "s3cret-pw")
    code, out, err = run(capsys, "--redis", bare, "list")
    assert code == 0 and out.splitlines()[-1].startswith("0 entries")
    code, _, err = run(capsys, "--redis", "redis://127.0.0.1:1/0", "list")
    assert code == 2 and "cannot reach redis://:***@127.0.0.1:1/0 (ConnectionError)" in err
    code, _, err = run(capsys, "--redis", "http://nope", "list")
    assert code == 2 and "--redis" in err
    code, _, err = run(capsys, "--redis", bare, "--cassette", tmp_path, "list")
    assert code == 2 and "give one" in err


def test_import_keeps_a_stream_whose_client_hung_up_after_its_end(tmp_path, capsys):
    # The OpenAI SDK's sync stream hangs up once it reads [DONE]: the captured flow ends in an
    # error, yet its answer is whole. One cut inside an event after the end is not.
    flows = {
        "hung-up": make_flow("https://api.anthropic.com/v1/messages",
                             anthropic_body(stream=True, max_tokens=7), req_headers=AUTH,
                             resp=ANTHROPIC_SSE,
                             resp_headers=[(b"content-type", b"text/event-stream")]),
        "cut-after-end": make_flow("https://api.anthropic.com/v1/messages",
                                   anthropic_body(stream=True, max_tokens=8), req_headers=AUTH,
                                   resp=ANTHROPIC_SSE + b"event: ping\ndata: {",
                                   resp_headers=[(b"content-type", b"text/event-stream")]),
        "cut-before-end": make_flow("https://api.anthropic.com/v1/messages",
                                    anthropic_body(stream=True, max_tokens=9), req_headers=AUTH,
                                    resp=ANTHROPIC_SSE[:120],
                                    resp_headers=[(b"content-type", b"text/event-stream")]),
        "buffered": make_flow("https://api.anthropic.com/v1/messages", anthropic_body(),
                              req_headers=AUTH, resp=b'{"id":"msg_1"}',
                              resp_headers=[(b"content-type", b"application/json")]),
    }
    for fl in flows.values():
        fl.error = flow.Error("Client disconnected.")
    ff = tmp_path / "in.flows"
    write_flows(ff, flows.values())
    d = tmp_path / "store"
    code, out, _ = run(capsys, "--dir", d, "import", ff, "--namespace", "ci")
    assert code == 0
    assert out.strip() == "imported 1 entries; skipped 1 no complete response, 2 truncated stream"
    with ResponseStore(d) as s:
        assert set(s.keys()) == {expected_key(flows["hung-up"], "ns:ci")}


def test_prune_by_age_is_refused_on_a_cassette(imported, tmp_path, capsys):
    flows, _, _ = imported
    c = tmp_path / "cassette"
    with open(tmp_path / "flows.mitm", "wb") as f:
        io.FlowWriter(f).add(flows["stream"])
    assert run(capsys, "--cassette", c, "import", tmp_path / "flows.mitm")[0] == 0
    before = sorted(p.name for p in c.iterdir())
    assert before
    code, _, err = run(capsys, "--cassette", c, "prune", "--older-than", "0s")
    assert code == 2 and "no recording time" in err
    assert sorted(p.name for p in c.iterdir()) == before


@pytest.mark.parametrize("edit", [
    lambda r: r.update(host=123), lambda r: r.update(query="a=1"), lambda r: r.update(method=None),
    lambda r: r.pop("path")])
def test_export_reports_a_hand_edited_request_it_cannot_rebuild(imported, tmp_path, capsys, edit):
    from headroom_core import cachekey
    flows, _, _ = imported
    c = tmp_path / "cassette"
    with open(tmp_path / "flows.mitm", "wb") as f:
        io.FlowWriter(f).add(flows["stream"])
        io.FlowWriter(f).add(flows["plain"])
    assert run(capsys, "--cassette", c, "import", tmp_path / "flows.mitm")[0] == 0
    victim = sorted(c.iterdir())[0]
    doc = json.loads(victim.read_text())
    edit(doc["request"])
    doc["key"] = cachekey.request_key(doc["request"])  # as the skip message tells a reviewer
    victim.write_text(json.dumps(doc, indent=2))
    code, out, err = run(capsys, "--cassette", c, "export", tmp_path / "out.mitm")
    assert code == 0 and "Traceback" not in err
    assert "exported 1 flows; skipped 1" in out and "cannot be rebuilt" in err


def test_a_cassette_with_skipped_files_fails_the_command_naming_each_once(imported, tmp_path):
    flows, _, _ = imported
    c = tmp_path / "cassette"
    with open(tmp_path / "flows.mitm", "wb") as f:
        io.FlowWriter(f).add(flows["stream"])
    script = [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts" / "store.py")]
    assert subprocess.run([*script, "--cassette", c, "import", tmp_path / "flows.mitm"]
                          ).returncode == 0
    ok = subprocess.run([*script, "--cassette", c, "list"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (c / "broken.json").write_text('{\n<<<<<<< HEAD\n')  # a merge-conflict marker left behind
    bad = subprocess.run([*script, "--cassette", c, "list"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("broken.json") == 1 and "1 cassette file(s) skipped" in bad.stderr
