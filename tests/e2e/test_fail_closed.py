"""Adversarial end-to-end tests of Headroom's fail-closed promises, through real mitmdump processes.

Every test that says "nothing reached the upstream" points the proxy at a `CountingUpstream`,
which counts each accepted TCP connection: the assertion is `connections == 0`, not "no HTTP
request was parsed".
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import socket
import stat
import sys
import time
import zlib
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

import headroom_core
from tests.e2e.adversary import (MARKER, StartupRun, fill, http_bytes, mitmdump_args,
                                 mount_problem, raw_request, readonly_view, status_of, tiny_tmpfs)
from tests.e2e.counting_upstream import CountingUpstream
from tests.e2e.proxy import ROOT, Mitmdump, free_port
from tests.redis_server import eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
from tool_output_corpus import pytest_log  # noqa: E402

LOG = pytest_log(passes=700, failures=2).text
MSGS = [{"role": "user", "content": "What is 2+2?"}]
BODY = json.dumps({"model": "m", "max_tokens": 5, "messages": MSGS}).encode()


def tool_turn(output: str, tool: str = "Bash") -> list[dict]:
    return [{"role": "user", "content": "make the tests pass"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": tool,
                 "input": {"command": "pytest"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": output}]}]


# =============================================================================================
# 1. Options: validated at startup, one line, exit non-zero, nothing forwarded meanwhile
# =============================================================================================

BAD_OPTIONS = {
    # id: (--set values, text the one error line must contain besides the option name)
    "int-abc": (["headroom_compress_min_tokens=abc"], ["'abc'", "whole number"]),
    "bool-maybe": (["headroom_stream_sse=maybe"], ["'maybe'", "true or false"]),
    "choice-bogus": (["headroom_store_mode=bogus"], ["'bogus'", "off, cache, record, replay"]),
    "size-lots": (["headroom_max_body=lots"], ["'lots'", "64m"]),
    "misspelled": (["headroom_store_mod=cache"], ["did you mean headroom_store_mode"]),
    "ratio-2": (["headroom_compress_min_ratio=2"], ["'2'", "fraction"]),
    "replay-plus-bad": (["headroom_store_mode=replay", "headroom_namespace=ci",
                         "headroom_max_body=lots"], ["'lots'", "64m"]),
}
# List options: the bad item must be named with what an item may be.
BAD_LIST_OPTIONS = {
    "list-local-clients": (["headroom_local_clients=everyone"],
                           ["'everyone'", "address or network"]),
    "list-thresholds": (["headroom_compress_min_bytes=log=lots"], ["log=lots", "kind=size"]),
}


def _startup_case(name: str, sets: list[str], tmp: Path, *, via: str = "mitmdump",
                  lazy: bool = True, traffic: bool = True, broken: bool = False) -> StartupRun:
    up = CountingUpstream()
    port = free_port()
    opts = [f"headroom_dir={tmp / name / 'h'}", *sets]
    if via == "launcher":
        args = [str(ROOT / "headroom"), "--mode", f"reverse:{up.url}@{port}",
                "--set", f"confdir={tmp / name / 'conf'}"]
        for o in opts:
            args += ["--set", o]
    else:
        args = mitmdump_args(f"reverse:{up.url}", port, tmp / name / "conf", *opts, lazy=lazy)
    env = None
    if broken:  # a broken install: one of Headroom's dependencies fails to import
        shadow = tmp / name / "shadow"
        shadow.mkdir(parents=True)
        (shadow / "regex.py").write_text('raise ImportError("simulated broken install")\n')
        env = {**os.environ, "PYTHONPATH": str(shadow)}
    run = StartupRun(args, port, traffic=traffic, env=env).run()
    run.upstream = up  # type: ignore[attr-defined]
    run.connections = up.snapshot()[0]  # type: ignore[attr-defined]
    up.close()
    return run


COMBINED = [v[0][-1] for k, v in {**BAD_OPTIONS, **BAD_LIST_OPTIONS}.items()
            if k != "replay-plus-bad"]
TRAFFIC = ("choice-bogus", "replay-plus-bad", "eager-bad", "launcher-bad", "broken-install")


@pytest.fixture(scope="module")
def startup_runs(tmp_path_factory):
    """Bad-option startups, run side by side (independent processes). "/quiet" runs have nobody
    knocking; the others are hammered with model requests until they exit."""
    tmp = tmp_path_factory.mktemp("startup")
    cases = {
        # every bad value at once: each must get its own line
        "combined/quiet": (COMBINED, "mitmdump", True, False),
        "choice-bogus/quiet": (BAD_OPTIONS["choice-bogus"][0], "mitmdump", True, False),
        "launcher-bad/quiet": (["headroom_store_mode=bogus"], "launcher", True, False),
        "choice-bogus": (BAD_OPTIONS["choice-bogus"][0], "mitmdump", True, True),
        "replay-plus-bad": (BAD_OPTIONS["replay-plus-bad"][0], "mitmdump", True, True),
        # plain mitmdump, no connection_strategy=lazy from the launcher (mitmproxy: eager)
        "eager-bad": (["headroom_store_mode=replay", "headroom_stream_sse=maybe"], "mitmdump",
                      False, True),
        "launcher-bad": (["headroom_store_mode=bogus"], "launcher", True, True),
        # Headroom cannot even be imported
        "broken-install": ([], "mitmdump", True, True),
        "broken-install-eager": ([], "mitmdump", False, True),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futs = {k: pool.submit(_startup_case, k.replace("/", "-"), sets, tmp, via=via,
                               lazy=lazy, traffic=traffic, broken=k.startswith("broken"))
                for k, (sets, via, lazy, traffic) in cases.items()}
        return {k: f.result() for k, f in futs.items()}


def _error_lines(run: StartupRun, option: str) -> list[str]:
    return [line for line in run.output.splitlines() if option in line]


@pytest.mark.parametrize("case", TRAFFIC)
def test_bad_option_exits_nonzero_and_forwards_nothing(startup_runs, case):
    run = startup_runs[case]
    assert run.rc not in (0, None), run.output
    assert run.attempts > 0
    assert run.connections == 0, f"{run.connections} connection(s) reached the upstream"
    # whatever was answered meanwhile was answered by Headroom, never by the upstream
    assert not [s for s in run.answers if s is not None and s < 400], run.answers


@pytest.mark.parametrize("case", ["choice-bogus/quiet", "launcher-bad/quiet", "combined/quiet"])
def test_bad_option_exit_is_quiet(startup_runs, case):
    run = startup_runs[case]
    assert run.rc not in (0, None), run.output
    assert "Traceback" not in run.output and "Error" in run.output, run.output
    assert run.connections == 0


@pytest.mark.parametrize("case", [k for k in BAD_OPTIONS if k != "replay-plus-bad"])
def test_bad_option_is_one_line_naming_option_value_and_allowed(startup_runs, case):
    sets, want = BAD_OPTIONS[case]
    for run in (startup_runs["combined/quiet"], startup_runs.get(case + "/quiet"),
                startup_runs.get(case)):
        if run is None:
            continue
        lines = _error_lines(run, sets[-1].split("=", 1)[0] + ":")
        assert len(lines) == 1, run.output
        for w in want:
            assert w in lines[0], lines[0]


def test_bad_option_in_replay_mode_and_via_launcher_named(startup_runs):
    for case, option, want in [("replay-plus-bad", "headroom_max_body:", "'lots'"),
                               ("launcher-bad/quiet", "headroom_store_mode:", "'bogus'")]:
        lines = _error_lines(startup_runs[case], option)
        assert len(lines) == 1 and want in lines[0], startup_runs[case].output


def test_broken_install_is_one_line(startup_runs):
    run = startup_runs["broken-install"]
    lines = [x for x in run.output.splitlines() if "headroom failed to load" in x]
    assert len(lines) == 1 and "ImportError" in lines[0], run.output


def test_broken_install_plain_mitmdump_opens_no_upstream_connection(startup_runs):
    run = startup_runs["broken-install-eager"]
    if not run.idle_connected:
        pytest.skip("no client got in before the exit: nothing to judge")
    assert run.rc not in (0, None)
    assert run.connections == 0, f"{run.connections} connection(s) reached the upstream"


def test_bad_option_exit_has_no_traceback_while_a_client_is_connected(startup_runs):
    run = startup_runs["choice-bogus"]
    if not run.idle_connected:
        pytest.skip("no client got in before the exit: nothing to judge")
    # Fixed either way: no listener while refusing to start, or a clean exit with a client in.
    assert "Traceback" not in run.output


@pytest.mark.parametrize("case", [*BAD_LIST_OPTIONS])
def test_bad_list_item_is_named_with_what_is_allowed(startup_runs, case):
    run = startup_runs["combined/quiet"]
    sets, want = BAD_LIST_OPTIONS[case]
    lines = _error_lines(run, sets[-1].split("=", 1)[0] + ":")
    assert len(lines) == 1, run.output
    for w in want:
        assert w in lines[0], lines[0]


def test_valid_list_options_on_the_command_line_start(tmp_path):
    opts = {"headroom_local_clients": ["10.0.0.0/8"], "headroom_hosts": ["gateway.test"],
            "headroom_replay_allow": ["127.0.0.1"], "headroom_compress_min_bytes": ["log=2k"]}
    with Mitmdump(mode="reverse:http://127.0.0.1:9", workdir=tmp_path, options=opts) as p:
        assert httpx.get(p.url + "/headroom/health").status_code == 200


# =============================================================================================
# 2. Replay mode never forwards
# =============================================================================================

REPLAY = {"headroom_store_mode": "replay", "headroom_namespace": "ci"}
ODD_PATHS = ["/v1/messages", "/v1/mess%61ges", "/v1/respo%6Eses", "//v1//messages",
             "/v1/messages/", "/v1/./messages", "/V1/MESSAGES", "/v1%2Fmessages",
             "/backend-api/codex/respo%6Eses", "/v1/chat/completions", "/v1/messages?beta=true",
             "/v1/messages/count_tokens", "/v1/models", "/anything", "/%2e%2e/v1/messages",
             "/v1/messages%00", "/v1/messages;x=1", "/v1/mess%2561ges"]
METHODS = ["POST", "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]


@pytest.fixture(scope="module")
def counting():
    up = CountingUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def counting_tls():
    up = CountingUpstream(tls=True)
    yield up
    up.close()


@pytest.fixture(scope="module")
def replay_reverse(counting, tmp_path_factory):
    with Mitmdump(mode=f"reverse:{counting.url}", workdir=tmp_path_factory.mktemp("rr"),
                  options=REPLAY) as p:
        yield p


@pytest.fixture(scope="module")
def replay_regular(counting_tls, tmp_path_factory):
    with Mitmdump(mode="regular", redirect_to=counting_tls.port,
                  workdir=tmp_path_factory.mktemp("rg"), options=REPLAY) as p:
        yield p


def _no_connection(up: CountingUpstream, before: tuple[int, int, int]) -> None:
    time.sleep(0.02)
    assert up.snapshot() == before, f"the upstream saw {up.snapshot()} (before: {before})"


@pytest.mark.parametrize("path", ODD_PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_replay_reverse_every_method_and_spelling_answered_locally(replay_reverse, counting,
                                                                   method, path):
    before = counting.snapshot()
    resp = raw_request(replay_reverse.port, http_bytes(
        method, path, body=BODY if method in ("POST", "PUT", "PATCH") else b"",
        headers={"x-api-key": "sk-ant-api03-replay", "content-type": "application/json"}))
    assert status_of(resp) is not None and status_of(resp) >= 400, resp[:200]
    _no_connection(counting, before)


BAD_INPUT = {
    "invalid-json": ({"content-type": "application/json"}, b"{not json"),
    "gzip-garbage": ({"content-encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage"),
    "unknown-coding": ({"content-encoding": "x-weird"}, BODY),
    "huge": ({}, "huge"),
    "gzip-bomb": ({"content-encoding": "gzip"}, "bomb"),
    "headroom-bypass": ({"x-headroom-bypass": "1"}, BODY),
    "no-credential": ({"x-api-key": ""}, BODY),
    "placeholder": ({"x-api-key": "gateway", "authorization": "Bearer placeholder"}, BODY),
    "cache-refresh": ({"x-headroom-cache": "refresh"}, BODY),
    "no-store": ({"cache-control": "no-store, no-cache"}, BODY),
    "expect-100": ({"expect": "100-continue"}, BODY),
    "stream": ({}, json.dumps({"model": "m", "stream": True, "messages": MSGS}).encode()),
}


@functools.cache
def _big_body(kind: str) -> bytes:
    """Past the default headroom_max_body (64m): raw, or gzip that decodes past it."""
    if kind == "huge":
        return b'{"model":"m","pad":"' + b"a" * (65 << 20) + b'"}'
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(b'{"model":"m","pad":"')]
    block = b"a" * (1 << 20)
    out += [z.compress(block) for _ in range(80)]
    return b"".join(out) + z.compress(b'"}') + z.flush()


@pytest.mark.parametrize("case", list(BAD_INPUT))
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions",
                                  "/backend-api/codex/responses", "/anything"])
def test_replay_reverse_bad_input_answered_locally(replay_reverse, counting, case, path):
    headers, body = BAD_INPUT[case]
    if isinstance(body, str):
        if path != "/v1/messages":
            pytest.skip("one big body is enough")
        body = _big_body(body)
    before = counting.snapshot()
    h = {"x-api-key": "sk-ant-api03-replay", **headers}
    if not h["x-api-key"]:
        del h["x-api-key"]
    r = httpx.post(replay_reverse.url + path, content=body, headers=h, timeout=30)
    assert r.status_code >= 400
    _no_connection(counting, before)


def test_replay_reverse_chunked_body_answered_locally(replay_reverse, counting):
    before = counting.snapshot()
    r = httpx.post(replay_reverse.url + "/v1/messages", content=iter([BODY[:10], BODY[10:]]),
                   headers={"x-api-key": "k"})
    assert r.status_code == 400
    _no_connection(counting, before)


@pytest.mark.parametrize("path", ["/v1/responses", "/backend-api/codex/responses",
                                  "/v1/respo%6Eses", "/backend-api/codex/responses?x=1"])
@pytest.mark.parametrize("extra", [{}, {"x-headroom-bypass": "1"}])
def test_replay_reverse_websocket_upgrade_426(replay_reverse, counting, path, extra):
    before = counting.snapshot()
    resp = raw_request(replay_reverse.port, http_bytes("GET", path, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "authorization": "Bearer sk-proj-ws",
        **extra}))
    assert status_of(resp) == 426, resp[:200]
    _no_connection(counting, before)


def test_replay_reverse_non_http_bytes_go_nowhere(replay_reverse, counting):
    before = counting.snapshot()
    for junk in (b"SSH-2.0-OpenSSH_9.0\r\n", b"\x00\x01\x02\x03" * 8,
                 b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"):
        raw_request(replay_reverse.port, junk, timeout=0.5)
    _no_connection(counting, before)


def test_replay_cache_bypass_reaches_upstream_once(replay_reverse, counting):
    before = counting.snapshot()
    r = httpx.post(replay_reverse.url + "/v1/messages", content=BODY,
                   headers={"x-api-key": "k", "x-headroom-cache": "bypass"})
    assert r.status_code == 200 and "answer #" in r.text
    time.sleep(0.05)
    conns, _, reqs = counting.snapshot()
    assert (conns - before[0], reqs - before[2]) == (1, 1)
    sent = counting.requests[-1]
    assert not [n for n, _ in sent["headers"] if n.lower().startswith("x-headroom-")]
    assert sent["body"] == BODY


@pytest.mark.parametrize("url", [
    "https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/mess%61ges",
    "https://api.openai.com/v1/responses", "https://chatgpt.com/backend-api/codex/responses",
    "https://api.anthropic.com/v1/models", "https://gateway.test/anything",
    "http://api.anthropic.com/v1/messages", "http://gateway.test/v1/messages",
])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_replay_regular_mode_answers_locally(replay_regular, counting_tls, url, method):
    before = counting_tls.snapshot()
    with httpx.Client(proxy=replay_regular.url, verify=replay_regular.verify, timeout=5) as c:
        r = c.request(method, url, content=BODY if method == "POST" else None,
                      headers={"x-api-key": "sk-ant-api03-regular"})
    assert r.status_code >= 400
    _no_connection(counting_tls, before)


def test_replay_regular_websocket_upgrade_426(replay_regular, counting_tls):
    before = counting_tls.snapshot()
    with httpx.Client(proxy=replay_regular.url, verify=replay_regular.verify, timeout=5) as c:
        r = c.get("https://chatgpt.com/backend-api/codex/responses", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "authorization": "Bearer x"})
    assert r.status_code == 426
    _no_connection(counting_tls, before)


def test_replay_regular_untrusted_tls_goes_nowhere(replay_regular, counting_tls):
    import ssl

    before = counting_tls.snapshot()
    s = socket.create_connection(("127.0.0.1", replay_regular.port), timeout=3)
    s.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLError):
        ssl.create_default_context().wrap_socket(s, server_hostname="api.anthropic.com")
    s.close()
    _no_connection(counting_tls, before)


@pytest.mark.parametrize("host", ["api.anthropic.com", "gateway.test"])
def test_replay_regular_raw_tcp_tunnel_goes_nowhere(replay_regular, counting_tls, host):
    before = counting_tls.snapshot()
    s = socket.create_connection(("127.0.0.1", replay_regular.port), timeout=3)
    try:
        s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"SSH-2.0-OpenSSH_9.0\r\nnot tls, not http\r\n")
        time.sleep(0.3)
    finally:
        s.close()
    _no_connection(counting_tls, before)


def _config_yaml(workdir: Path, text: str) -> Path:
    (workdir / "conf").mkdir(parents=True, exist_ok=True)
    (workdir / "conf" / "config.yaml").write_text(text)
    return workdir


@pytest.fixture(scope="module")
def allow_proxy(tmp_path_factory):
    """Replay mode with headroom_replay_allow set through mitmproxy's config.yaml (the --set
    form is broken, see above)."""
    with CountingUpstream() as up:
        work = _config_yaml(tmp_path_factory.mktemp("allow"),
                            'headroom_replay_allow:\n  - "127.0.0.1/public/*"\n')
        with Mitmdump(mode=f"reverse:{up.url}", workdir=work, options=REPLAY) as p:
            yield p, up


def test_replay_allow_pattern_reaches_upstream_once(allow_proxy):
    p, up = allow_proxy
    before = up.snapshot()
    assert httpx.get(p.url + "/v1/models").status_code == 400
    assert httpx.get(p.url + "/private/file.txt").status_code == 400
    _no_connection(up, before)
    r = httpx.get(p.url + "/public/file.txt")
    assert r.status_code == 200 and "upstream answer" in r.text
    assert up.snapshot()[0] - before[0] == 1 and up.requests[-1]["path"] == "/public/file.txt"


@pytest.mark.parametrize("path", ["/public/../v1/models", "/public/%2e%2e/v1/models",
                                  "/public/..%2fv1/models"])
def test_replay_allow_cannot_be_escaped_by_dot_segments(allow_proxy, path):
    p, up = allow_proxy
    before = up.snapshot()
    raw_request(p.port, http_bytes("GET", path))
    _no_connection(up, before)


def test_replay_allow_from_command_line(tmp_path):
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path,
                      options={**REPLAY, "headroom_replay_allow": ["127.0.0.1/public/*"]}) as p:
            assert httpx.get(p.url + "/public/x").status_code == 200
            assert up.snapshot()[0] == 1


BIG = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 8000}]}).encode()


@pytest.fixture(scope="module", params=["reverse", "regular"])
def streaming_replay(request, tmp_path_factory):
    """Replay mode with mitmproxy's stream_large_bodies=1k, and its counting upstream."""
    up = CountingUpstream(tls=request.param == "regular")
    kw = ({"mode": f"reverse:{up.url}"} if request.param == "reverse"
          else {"mode": "regular", "redirect_to": up.port})
    with Mitmdump(workdir=tmp_path_factory.mktemp("stream"), options=REPLAY,
                  extra_args=["--set", "stream_large_bodies=1k"], **kw) as p:
        base = p.url if request.param == "reverse" else "https://api.anthropic.com"
        client = (httpx.Client(timeout=5) if request.param == "reverse" else
                  httpx.Client(proxy=p.url, verify=p.verify, timeout=5))
        with client:
            yield client, base, up
    up.close()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/messages", BIG),
    ("PUT", "/anything", BIG),
    ("POST", "/v1/messages", BODY),
    ("GET", "/v1/models", None),
    ("POST", "/v1/messages", "chunked"),
    ("PUT", "/anything", "chunked"),
], ids=["big", "big-other", "small", "get", "chunked-big", "chunked-big-other"])
def test_replay_with_streamed_request_bodies_forwards_nothing(streaming_replay, method, path,
                                                              body):
    client, base, up = streaming_replay
    before = up.snapshot()
    content = iter([BIG[:500], BIG[500:]]) if body == "chunked" else body
    try:
        client.request(method, base + path, content=content, headers={"x-api-key": "k"})
    except httpx.HTTPError:
        pass  # a killed flow: fine, as long as nothing went upstream
    _no_connection(up, before)


def test_internal_headers_never_go_upstream_with_streamed_chunked_bodies(tmp_path):
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path,
                      extra_args=["--set", "stream_large_bodies=1k"]) as p:
            for content in (BIG, iter([BIG[:500], BIG[500:]])):
                httpx.post(p.url + "/v1/messages", content=content, headers={
                    "x-api-key": "k", "x-headroom-note": "private", "proxy-connection": "x"})
                leaked = [n for n, _ in up.requests[-1]["headers"]
                          if n.lower().startswith("x-headroom-") or n.lower() == "proxy-connection"]
                assert leaked == []


# =============================================================================================
# 7. Upstream failures answered in the provider's shape
# =============================================================================================

FAILURES = {"refused": None, "tls-garbage": "garbage", "tls-close": "close", "reset": "reset",
            "cut": "cut"}
EXPECTED_KIND = {"refused": "connect", "tls-garbage": "tls", "tls-close": "tls",
                 "reset": "reset"}
EXPECTED_WORDS = {"connect": "could not be reached", "tls": "TLS",
                  "reset": "closed the connection before answering"}


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """One mitmdump, one reverse listener per kind of failing upstream."""
    ups = {k: CountingUpstream(b) for k, b in FAILURES.items() if b}
    targets = {}
    for k in FAILURES:
        scheme = "https" if k.startswith("tls") else "http"
        port = ups[k].port if k in ups else free_port()
        targets[k] = f"reverse:{scheme}://127.0.0.1:{port}"
    ports = {k: free_port() for k in FAILURES}
    first, *rest = FAILURES
    extra = []
    for k in rest:
        extra += ["--mode", f"{targets[k]}@{ports[k]}"]
    p = Mitmdump(mode=targets[first], workdir=tmp_path_factory.mktemp("fail"), extra_args=extra)
    p.port = ports[first]
    with p:
        yield p, {k: f"http://127.0.0.1:{ports[k]}" for k in FAILURES}
    for u in ups.values():
        u.close()


def _sdk_call(kind: str, base: str, sdk: str, stream: bool, model: str):
    if sdk == "anthropic":
        c = anthropic.Anthropic(api_key="sk-ant-api03-x", base_url=base, max_retries=0,
                                http_client=httpx2.Client(timeout=10))
        out = c.messages.create(model=model, max_tokens=5, messages=MSGS, stream=stream)
    else:
        c = openai.OpenAI(api_key="sk-proj-x", base_url=base + "/v1", max_retries=0,
                          http_client=httpx2.Client(timeout=10))
        out = c.chat.completions.create(model=model, messages=MSGS, stream=stream)
    return list(out) if stream else out


def _events_of(proxy, model, timeout=5.0):
    """The event lines of `model`'s flows (the proxy is shared by the module's tests): waits for
    the first one, then for the log to settle."""
    deadline = time.monotonic() + timeout
    while not any(x.get("model") == model for x in proxy.events()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return [x for x in proxy.events(settle=0.1) if x.get("model") == model]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
@pytest.mark.parametrize("kind", ["refused", "tls-garbage", "tls-close", "reset"])
def test_upstream_failure_is_a_provider_shaped_retryable_error(failing, kind, sdk, stream):
    proxy, bases = failing
    model = f"m-{kind}-{sdk}-{stream}"
    exc_type = anthropic.InternalServerError if sdk == "anthropic" else openai.InternalServerError
    with pytest.raises(exc_type) as e:
        _sdk_call(kind, bases[kind], sdk, stream, model)
    err = e.value
    assert err.status_code in (502, 504)
    assert err.response.headers["x-should-retry"] == "true"
    body = err.response.json()
    if sdk == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        message = body["error"]["message"]
    else:
        assert set(body) == {"error"} and body["error"]["message"]
        message = body["error"]["message"]
    assert message.startswith("headroom: the upstream")
    ev = _events_of(proxy, model)
    assert len(ev) == 1 and ev[0]["error"] and ev[0]["decisions"].get("upstream_error")


@pytest.mark.parametrize("kind", [
    "refused", "tls-garbage", "tls-close", "reset",
])
def test_upstream_failure_kind_in_event_log(failing, kind):
    proxy, bases = failing
    model = f"m-kind-{kind}"
    with pytest.raises(anthropic.InternalServerError) as e:
        _sdk_call(kind, bases[kind], "anthropic", False, model)
    ev = _events_of(proxy, model)
    assert ev[0]["decisions"]["upstream_error"] == EXPECTED_KIND[kind]
    assert EXPECTED_WORDS[EXPECTED_KIND[kind]] in e.value.message


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_stream_cut_midway_stays_cut(failing, sdk):
    proxy, bases = failing
    model = f"m-cut-{sdk}"
    got = []
    with pytest.raises((anthropic.APIConnectionError, openai.APIConnectionError,
                        httpx2.HTTPError, httpx.HTTPError)):
        if sdk == "anthropic":
            c = anthropic.Anthropic(api_key="sk-ant-api03-x", base_url=bases["cut"],
                                    max_retries=0, http_client=httpx2.Client(timeout=10))
            for ev in c.messages.create(model=model, max_tokens=5, messages=MSGS, stream=True):
                got.append(ev.type)
        else:
            c = openai.OpenAI(api_key="sk-proj-x", base_url=bases["cut"] + "/v1", max_retries=0,
                              http_client=httpx2.Client(timeout=10))
            for ev in c.chat.completions.create(model=model, messages=MSGS, stream=True):
                got.append(ev.object)
    assert got, "the events sent before the cut must reach the client"
    ev = _events_of(proxy, model)
    assert len(ev) == 1
    assert ev[0]["stream_state"] == "truncated" and ev[0]["error"]
    assert "upstream_error" not in ev[0]["decisions"]


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_buffered_answer_cut_midway_is_provider_shaped(failing, sdk):
    proxy, bases = failing
    model = f"m-cutjson-{sdk}"
    exc_type = anthropic.InternalServerError if sdk == "anthropic" else openai.InternalServerError
    with pytest.raises(exc_type) as e:
        _sdk_call("cut", bases["cut"], sdk, False, model)
    assert e.value.response.headers.get("content-type") == "application/json", \
        e.value.response.text[:200]
    assert e.value.response.headers.get("x-should-retry") == "true"
    ev = _events_of(proxy, model)
    assert ev[0]["status"] != 200 and ev[0]["decisions"].get("upstream_error")


def test_upstream_answering_non_http_is_provider_shaped(tmp_path):
    with CountingUpstream("badstatus") as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path) as p:
            with pytest.raises(anthropic.InternalServerError) as e:
                _sdk_call("badstatus", p.url, "anthropic", False, "m-badstatus")
            assert e.value.status_code == 502
            assert e.value.response.json()["error"]["type"] == "api_error"
            assert e.value.response.headers["x-should-retry"] == "true"
            assert p.events(wait_for=1, timeout=5)[-1]["decisions"]["upstream_error"] == "reset"


def test_stream_cut_raw_bytes_are_a_prefix_without_error_json(failing):
    _, bases = failing
    body = json.dumps({"model": "m-cut-raw", "stream": True, "messages": MSGS}).encode()
    port = int(bases["cut"].rsplit(":", 1)[1])
    resp = raw_request(port, http_bytes("POST", "/v1/messages", body=body,
                                        headers={"x-api-key": "sk-ant-api03-x"}))
    assert status_of(resp) == 200
    assert b"event: message_start" in resp and b"message_stop" not in resp
    assert b"headroom:" not in resp and b'"type":"error"' not in resp
    assert not resp.endswith(b"0\r\n\r\n")  # the chunked body never terminates


def test_client_giving_up_is_not_an_upstream_connect_error(tmp_path):
    with CountingUpstream("silent") as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path) as p:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(p.url + "/v1/messages", content=BODY,
                           headers={"x-api-key": "k"}, timeout=1.0)
            ev = p.events(wait_for=1, timeout=5)
            assert up.snapshot()[0] == 1
            assert ev[-1]["decisions"].get("upstream_error") != "connect"


# =============================================================================================
# 9. Health
# =============================================================================================


def test_health_reports_version_modes_store_uptime_and_state(replay_reverse):
    r = httpx.get(replay_reverse.url + "/headroom/health")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    h = r.json()
    assert h["version"] == headroom_core.__version__
    assert h["modes"] and h["modes"][0].startswith("reverse:")
    assert h["store_mode"] == "replay"
    assert isinstance(h["uptime_s"], (int, float)) and h["uptime_s"] >= 0
    assert {"dir", "salt", "store", "ledger", "originals", "events"} <= set(h["state"])
    assert h["status"] == "ok" and h["error"] is None


def test_health_in_regular_mode_and_not_forwarded(replay_regular, counting_tls):
    before = counting_tls.snapshot()
    resp = raw_request(replay_regular.port, http_bytes(
        "GET", "/headroom/health", host=f"127.0.0.1:{replay_regular.port}"))
    assert status_of(resp) == 200
    h = json.loads(resp.split(b"\r\n\r\n", 1)[1])
    assert h["modes"][0].startswith("regular") and h["store_mode"] == "replay"
    # through the proxy, as a proxied URL
    with httpx.Client(proxy=replay_regular.url) as c:
        r = c.get(f"http://127.0.0.1:{replay_regular.port}/headroom/health")
    assert r.status_code == 200 and r.json()["version"] == headroom_core.__version__
    _no_connection(counting_tls, before)


# =============================================================================================
# 5. Degrade, don't die: read-only state, read-only recordings, a full disk mid-run
# =============================================================================================

needs_mount = pytest.mark.skipif(mount_problem() is not None, reason=mount_problem() or "")
H = {"x-api-key": "sk-ant-api03-degrade", "content-type": "application/json"}


def _degraded_lines(log: str) -> list[dict]:
    return [json.loads(line.split("headroom_degraded ", 1)[1])
            for line in log.splitlines() if "headroom_degraded " in line]


@needs_mount
@pytest.mark.parametrize("store_mode", ["off", "cache", "record"])
def test_readonly_state_dir_passthrough_byte_identical(tmp_path, store_mode):
    src = tmp_path / "state"
    src.mkdir(mode=0o755)
    with CountingUpstream() as up, readonly_view(src, tmp_path / "ro") as ro:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "w", options={
                "headroom_dir": str(ro), "headroom_store_mode": store_mode,
                "headroom_compress": "on"}) as p:
            bodies = [BODY, json.dumps({"model": "m", "max_tokens": 5,
                                        "messages": tool_turn(LOG)}).encode()]
            for i in range(3):
                for b in bodies:
                    r = httpx.post(p.url + "/v1/messages", content=b, headers=H)
                    assert r.status_code == 200 and "answer #" in r.text
                    assert up.requests[-1]["body"] == b  # byte-identical
            assert up.snapshot()[2] == 6  # nothing answered from a store that cannot be written
            health = httpx.get(p.url + "/headroom/health").json()
            assert p.proc.poll() is None
            time.sleep(0.1)
            log = p.log()
    assert "Traceback" not in log
    parts = [d["part"] for d in _degraded_lines(log)]
    assert parts and len(parts) == len(set(parts)), log  # each part said once
    assert {"events", "ledger"} <= set(parts)
    if store_mode != "off":
        assert "store" in parts
    for d in _degraded_lines(log):
        assert d["effect"] and d["path"].startswith(str(ro))
    assert health["state"]["events"] != "ok" and health["state"]["ledger"] != "ok"


@needs_mount
def test_replay_from_readonly_recordings(tmp_path):
    src = tmp_path / "fixtures"
    stream_body = json.dumps({"model": "m", "max_tokens": 5, "messages": MSGS,
                              "stream": True}).encode()
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "rec", options={
                "headroom_dir": str(src), "headroom_store_mode": "record",
                "headroom_namespace": "ci"}) as p:
            recorded = [httpx.post(p.url + "/v1/messages", content=b, headers=H).content
                        for b in (BODY, stream_body)]
            time.sleep(0.3)  # store writes are batched
        assert up.snapshot()[0] >= 1
        up.reset_counts()
        with readonly_view(src, tmp_path / "ro") as ro:
            with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "rep",
                          options={"headroom_dir": str(ro), **REPLAY}) as p:
                for b, want in zip((BODY, stream_body), recorded):
                    r = httpx.post(p.url + "/v1/messages", content=b, headers=H)
                    assert r.headers.get("x-headroom-cache") == "hit" and r.content == want
                miss = httpx.post(p.url + "/v1/messages", content=BODY.replace(b"2+2", b"3+3"),
                                  headers=H)
                assert miss.status_code == 400
                assert httpx.get(p.url + "/headroom/health").json()["state"]["store"] == "read-only"
        assert up.snapshot() == (0, 0, 0)


@pytest.fixture
def full_disk(tmp_path):
    if mount_problem():
        pytest.skip(mount_problem())
    with tiny_tmpfs(tmp_path / "tiny", "4m") as d:
        yield d


def test_full_disk_mid_run_traffic_continues(full_disk, tmp_path):
    hdir = full_disk / "h"
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "w", options={
                "headroom_dir": str(hdir), "headroom_store_mode": "cache",
                "headroom_compress": "on"}) as p:
            r = httpx.post(p.url + "/v1/messages", content=BODY, headers=H)
            assert r.headers["x-headroom-cache"] == "miss"
            time.sleep(0.2)
            assert httpx.post(p.url + "/v1/messages", content=BODY,
                              headers=H).headers["x-headroom-cache"] == "hit"
            fill(full_disk)
            n = up.snapshot()[2]
            for i in range(4):
                b = json.dumps({"model": "m", "max_tokens": 5, "messages": [
                    {"role": "user", "content": f"q{i} " + "z" * 40000}]}).encode()
                s = json.dumps({"model": "m", "stream": True, "messages": [
                    {"role": "user", "content": f"s{i}"}]}).encode()
                for body in (b, b, s):  # the same request twice: nothing could be stored
                    r = httpx.post(p.url + "/v1/messages", content=body, headers=H, timeout=10)
                    assert r.status_code == 200 and "answer #" in r.text
                    # (an answer waiting for its write is served from memory until the write
                    # is tried; once it failed, nothing of it is left)
                    eventually(lambda: httpx.get(p.url + "/headroom/health").json()[
                        "memory"]["pending_store_entries"] == 0, timeout=10)
            assert up.snapshot()[2] - n == 12  # every one forwarded: store writes stopped
            r = httpx.post(p.url + "/v1/messages", headers=H, timeout=10, content=json.dumps(
                {"model": "m", "max_tokens": 5, "messages": tool_turn(LOG + "\nfull")}).encode())
            assert r.status_code == 200
            assert p.proc.poll() is None
            assert httpx.get(p.url + "/headroom/health").status_code == 200
        assert "Traceback" not in p.log()


def test_full_disk_store_degradation_said_once_and_shown_in_health(full_disk, tmp_path):
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "w", options={
                "headroom_dir": str(full_disk / "h"), "headroom_store_mode": "cache"}) as p:
            httpx.post(p.url + "/v1/messages", content=BODY, headers=H)
            fill(full_disk)
            for i in range(5):
                httpx.post(p.url + "/v1/messages", headers=H, content=json.dumps(
                    {"model": "m", "messages": [{"role": "user", "content": f"{i}" * 5000}]}))
            eventually(lambda: httpx.get(p.url + "/headroom/health").json()["state"].get(
                "store", "ok") != "ok", timeout=10)
            time.sleep(0.5)  # later failed writes would be said now, if they were
            health = httpx.get(p.url + "/headroom/health").json()
            log = p.log()
    store_warnings = [line for line in log.splitlines()
                      if "store write failed" in line or "store_write_failed" in line
                      or ('"part":"store"' in line and "headroom_degraded" in line)]
    assert len(store_warnings) <= 1, store_warnings
    assert health["state"]["store"] != "ok"


def test_full_disk_retrieval_never_forwarded(full_disk, tmp_path):
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "w", options={
                "headroom_dir": str(full_disk / "h"), "headroom_compress": "on"}) as p:
            httpx.post(p.url + "/v1/messages", headers=H, content=json.dumps(
                {"model": "m", "max_tokens": 5, "messages": tool_turn(LOG)}).encode())
            url = MARKER.search(up.requests[-1]["body"].decode()).group(0)
            assert httpx.get(url).text == LOG
            fill(full_disk)
            before = up.snapshot()
            r = httpx.get(url)
            time.sleep(0.05)
            assert up.snapshot() == before, "the /ccr/ request reached the upstream"
            assert r.status_code == 200 and r.text == LOG


# =============================================================================================
# 6. Private state: pre-existing 0755 / 0644 state is made 0700 / 0600, everything new too
# =============================================================================================


def _modes(root: Path) -> list[tuple[str, str]]:
    bad = []
    for d, dirs, files in os.walk(root):
        if stat.S_IMODE(os.stat(d).st_mode) != 0o700:
            bad.append((d, oct(stat.S_IMODE(os.stat(d).st_mode))))
        for f in files:
            m = stat.S_IMODE(os.lstat(os.path.join(d, f)).st_mode)
            if m != 0o600:
                bad.append((os.path.join(d, f), oct(m)))
    return bad


def test_private_modes_fixed_and_kept(tmp_path):
    hdir = tmp_path / "h"
    big_log = pytest_log(passes=1500, failures=3).text  # > 32 KiB: a diskcache value file
    opts = {"headroom_dir": str(hdir), "headroom_store_mode": "cache", "headroom_compress": "on"}

    def traffic(p, tag):
        for out in (LOG + tag, big_log + tag):
            httpx.post(p.url + "/v1/messages", headers=H, content=json.dumps(
                {"model": "m", "max_tokens": 5, "messages": tool_turn(out)}).encode())
        for i in range(3):
            httpx.post(p.url + "/v1/messages", headers=H, content=json.dumps(
                {"model": "m", "stream": True, "messages": [
                    {"role": "user", "content": f"{tag} {i} " + "y" * 40000}]}).encode())
        time.sleep(0.4)

    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "a", options=opts) as p:
            traffic(p, "first")
        # an older version / another umask left it world-readable
        assert (hdir / "originals" / "cache.db").exists() and (hdir / "events.jsonl").exists()
        for d, _, files in os.walk(hdir):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        old = os.umask(0)  # the least helpful umask
        try:
            with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "b", options=opts) as p:
                traffic(p, "second")
                running = _modes(hdir)  # -wal / -shm files exist while it runs
        finally:
            os.umask(old)
        assert running == [] and _modes(hdir) == []
        assert list(hdir.rglob("*.val")), "the test meant to cover diskcache value files"

        # Someone else's file in headroom_dir: that folder may be a shared one (a home, /tmp).
        # Its mode and the stranger stay as they are, said once; Headroom's own entries are fixed.
        os.chmod(hdir, 0o755)
        os.chmod(hdir / "events.jsonl", 0o644)
        (hdir / "stray-notes.txt").write_text("left by someone")
        os.chmod(hdir / "stray-notes.txt", 0o644)
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path / "c", options=opts) as p:
            traffic(p, "third")
            log = p.log()
    assert sorted(_modes(hdir)) == [(str(hdir), "0o755"),
                                    (str(hdir / "stray-notes.txt"), "0o644")]
    assert log.count("private_dir_shared") == 1 and "stray-notes.txt" in log


# =============================================================================================
# 3. Loopback by default; local endpoints for local clients only
# =============================================================================================


@pytest.fixture(scope="module")
def netns():
    """tests/e2e/netns_scenarios.py, run once in a fresh network namespace of its own (loopback
    plus a non-loopback address on `lo`: nothing leaves the namespace)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to make a network namespace")
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                           capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode()[:200]}")
    out = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.netns_scenarios"],
                         capture_output=True, cwd=str(ROOT), timeout=180)
    lines = out.stdout.decode(errors="replace").strip().splitlines()
    assert out.returncode == 0 and lines, out.stdout.decode()[-3000:] + out.stderr.decode()[-3000:]
    return json.loads(lines[-1])


def test_launcher_listens_on_loopback_only(netns):
    assert netns["started"]["regular"], netns.get("logs")
    assert netns["regular"] == {"loopback": True, "nonloopback": False}
    assert netns["reverse"] == {"loopback": True, "nonloopback": False}


def test_launcher_listen_host_opens_it(netns):
    assert netns["open"] == {"loopback": True, "nonloopback": True}


@pytest.mark.parametrize("probe", ["remote_health_abs", "remote_health_origin", "remote_ccr_abs",
                                   "remote_ccr_origin", "remote_ccr_localhost"])
def test_local_endpoints_refuse_non_loopback_clients_regular(netns, probe):
    assert netns["original_ok"], netns
    r = netns["open_probes"][probe]
    assert r["status"] == 403 and not r["body_is_original"], r


@pytest.mark.parametrize("probe", ["remote_health", "remote_ccr"])
def test_local_endpoints_refuse_non_loopback_clients_reverse(netns, probe):
    assert netns["open_reverse_probes"][probe]["status"] == 403


def test_local_endpoints_answer_loopback(netns):
    p = netns["open_probes"]
    assert p["loopback_health"]["status"] == 200
    assert p["loopback_ccr"]["status"] == 200 and p["loopback_ccr"]["body_is_original"]
    assert netns["open_reverse_probes"]["loopback_health"]["status"] == 200


@pytest.mark.parametrize("probe", ["remote_ccr_bounce", "remote_health_bounce"])
def test_local_endpoints_cannot_be_reached_by_bouncing_through_the_proxy(netns, probe):
    r = netns["open_probes"][probe]
    assert r["status"] != 200 and not r["body_is_original"], r


def test_health_at_own_non_loopback_address_answers_at_once(netns):
    r = netns["open_probes"]["remote_health_own_address"]
    assert r["status"] == 403, r


def test_local_clients_allowed_through_config_file(netns):
    p = netns["allowed_probes"]
    assert p["remote_health"]["status"] == 200
    assert p["remote_ccr_owner"]["status"] == 200 and p["remote_ccr_owner"]["body_is_original"]
    assert p["remote_ccr_nocred"]["status"] == 401  # the loopback-curl exception is loopback only
    assert p["remote_ccr_other"]["status"] == 404 and not p["remote_ccr_other"]["body_is_original"]


def test_connect_timeout_is_a_retryable_provider_error(netns):
    r = netns["connect_timeout"]
    assert r["status"] in (502, 504) and "headroom: the upstream" in r["message"], r


def test_connect_timeout_is_kind_timeout(netns):
    r = netns["connect_timeout"]
    assert r["kind"] == "timeout" and r["status"] == 504, r


def test_local_clients_allowed_through_set(netns):
    assert netns["allowed_probes"]["remote_health_set"]["status"] == 200


# =============================================================================================
# More: what Headroom does to a headroom_dir that is not (only) its own
# =============================================================================================


def test_headroom_dir_that_is_a_file_is_left_alone(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("my notes")
    os.chmod(f, 0o644)
    with Mitmdump(mode="reverse:http://127.0.0.1:9", workdir=tmp_path / "w",
                  options={"headroom_dir": str(f)}) as p:
        state = httpx.get(p.url + "/headroom/health").json()["state"]
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
    assert state["dir"] != "ok"


def test_headroom_dir_with_foreign_files_keeps_their_modes(tmp_path):
    proj = tmp_path / "checkout"
    (proj / "scripts").mkdir(parents=True)
    script = proj / "scripts" / "build.sh"
    script.write_text("#!/bin/sh\necho build\n")
    os.chmod(script, 0o755)
    with Mitmdump(mode="reverse:http://127.0.0.1:9", workdir=tmp_path / "w",
                  options={"headroom_dir": str(proj)}):
        pass
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755


# =============================================================================================
# More: upstream failures in regular mode, health methods
# =============================================================================================


@pytest.mark.parametrize("behavior", ["garbage", "reset", None])
def test_regular_mode_upstream_failure_is_provider_shaped(tmp_path, behavior):
    # garbage: not TLS at all; reset: TLS, then reset after reading the request
    up = CountingUpstream(behavior, tls=behavior == "reset") if behavior else None
    port = up.port if up else free_port()
    try:
        with Mitmdump(mode="regular", redirect_to=port, workdir=tmp_path) as p:
            c = anthropic.Anthropic(api_key="sk-ant-api03-x", max_retries=0,
                                    base_url="https://api.anthropic.com",
                                    http_client=httpx2.Client(proxy=p.url, verify=p.verify,
                                                              timeout=10))
            with pytest.raises(anthropic.InternalServerError) as e:
                c.messages.create(model="m-regular", max_tokens=5, messages=MSGS)
            assert e.value.status_code == 502
            assert e.value.response.headers["x-should-retry"] == "true"
            body = e.value.response.json()
            assert body["type"] == "error" and body["error"]["type"] == "api_error"
            ev = p.events(wait_for=1, timeout=5)
            assert ev[-1]["error"] and ev[-1]["decisions"].get("upstream_error")
    finally:
        if up:
            up.close()


def test_health_methods(replay_reverse, counting):
    before = counting.snapshot()
    assert httpx.head(replay_reverse.url + "/headroom/health").status_code == 200
    assert httpx.post(replay_reverse.url + "/headroom/health").status_code == 405
    assert httpx.get(replay_reverse.url + "/headroom/health/").status_code == 200
    assert httpx.get(replay_reverse.url + "/HEADROOM/%68ealth").status_code == 200
    _no_connection(counting, before)


def test_a_reverse_proxy_pointed_at_itself_answers_508_at_once(tmp_path):
    """The proxy's own upstream connection arrives back at its listener: refused as a loop
    (not forwarded again and again until connections or file descriptors run out). mitmproxy
    itself refuses `127.0.0.1:<its port>`; another spelling of this machine (here 127.0.0.2,
    listening on all addresses) reaches the listener and is Headroom's to catch."""
    port = free_port()
    p = Mitmdump(mode=f"reverse:http://127.0.0.2:{port}", workdir=tmp_path,
                 extra_args=["--listen-host", "0.0.0.0"])
    p.port = port
    with p:
        t0 = time.monotonic()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", timeout=30,
                       headers={"x-api-key": "sk-ant-placeholder"},
                       json={"model": "m", "max_tokens": 1, "messages": []})
        assert r.status_code == 508 and b"to itself" in r.content
        assert time.monotonic() - t0 < 10
        # and the listener still serves its own endpoints afterwards
        assert httpx.get(f"http://127.0.0.1:{port}/headroom/health", timeout=10).status_code == 200
