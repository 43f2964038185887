"""Retrieval of kept originals (`/ccr/<handle>`) end to end, as an agent's shell does it: the marker
URL taken from what the upstream received, fetched with curl in a subprocess that has no proxy
variables (and, in regular mode, with them). Slices are checked against the Unix tools they are
named after (sed -n, grep -n -C, head, tail) run on the original."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.adversary import MARKER, clean_env, curl
from tests.e2e.counting_upstream import CountingUpstream
from tests.e2e.proxy import Mitmdump

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
from tool_output_corpus import pytest_log  # noqa: E402

LOG = pytest_log(passes=700, failures=2).text
LONG_LINE = "a" * 6000 + "!"  # for a catastrophic pattern
LOG_LONG = LOG + LONG_LINE + "\n"
KEY = {"x-api-key": "sk-ant-api03-retrieval", "content-type": "application/json"}


def tool_request(output: str) -> bytes:
    msgs = [{"role": "user", "content": "make the tests pass"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_r",
                                               "name": "Bash", "input": {"command": "pytest"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_r",
                                          "content": output}]}]
    return json.dumps({"model": "claude-x", "max_tokens": 8, "messages": msgs}).encode()


def marker_of(up: CountingUpstream) -> str:
    sent = json.loads(up.requests[-1]["body"])["messages"][2]["content"][0]["content"]
    m = MARKER.search(sent)
    assert m, f"not compressed: {sent[-300:]}"
    return m.group(0)


@pytest.fixture(scope="module")
def reverse(tmp_path_factory):
    """The launcher's default shape: reverse mode, API-key traffic (headroom_compress=auto)."""
    with CountingUpstream() as up:
        with Mitmdump(mode=f"reverse:{up.url}", workdir=tmp_path_factory.mktemp("ccr")) as p:
            urls = []
            for out in (LOG, LOG_LONG):
                r = httpx.post(p.url + "/v1/messages", content=tool_request(out), headers=KEY)
                assert r.status_code == 200
                urls.append(marker_of(up))
            yield p, up, urls[0], urls[1]


@pytest.fixture(scope="module")
def oracle_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "original.txt"
    path.write_text(LOG)
    return path


def _tool(*cmd: str) -> bytes:
    return subprocess.run(cmd, capture_output=True, check=False, timeout=10).stdout


def test_marker_points_at_the_proxy_listener(reverse):
    p, _, url, _ = reverse
    assert url.startswith(f"http://127.0.0.1:{p.port}/ccr/")


def test_whole_original_byte_exact(reverse):
    _, up, url, _ = reverse
    before = up.snapshot()
    status, body = curl(url)
    assert status == 200 and body == LOG.encode()
    assert up.snapshot() == before


@pytest.mark.parametrize("query,oracle", [
    ("lines=10-20", ["sed", "-n", "10,20p"]),
    ("grep=FAILED&context=2", ["grep", "-n", "-C", "2", "FAILED"]),
    ("grep=FAILED", ["grep", "-n", "-C", "0", "FAILED"]),  # no context: -C 0 (with --)
    ("grep=test_%5Bdu%5D.*PASSED&context=1", ["grep", "-n", "-E", "-C", "1", "test_[du].*PASSED"]),
    ("head=5", ["head", "-n", "5"]),
    ("tail=5", ["tail", "-n", "5"]),
    ("lines=753", ["sed", "-n", "753p"]),
    ("lines=750-9999", ["sed", "-n", "750,9999p"]),
])
def test_slices_exactly_as_the_unix_tools(reverse, oracle_file, query, oracle):
    _, up, url, _ = reverse
    before = up.snapshot()
    status, body = curl(f"{url}?{query}")
    assert status == 200, body
    assert body == _tool(*oracle, str(oracle_file))
    assert up.snapshot() == before


def test_grep_format_spelled_out(reverse):
    """1-based numbers, `N:` for a match, `N-` for context, `--` between groups."""
    _, _, url, _ = reverse
    lines = LOG.split("\n")
    hits = [i for i, line in enumerate(lines) if "FAILED" in line]
    status, body = curl(f"{url}?grep=FAILED&context=2")
    out = body.decode().splitlines()
    first = hits[0]
    assert out[:5] == [f"{first - 1}-{lines[first - 2]}", f"{first}-{lines[first - 1]}",
                       f"{first + 1}:{lines[first]}", f"{first + 2}-{lines[first + 1]}",
                       f"{first + 3}-{lines[first + 2]}"]
    assert "--" in out and out.count("--") == sum(
        1 for a, b in zip(hits, hits[1:]) if b - a > 5)


@pytest.mark.parametrize("suffix,status", [
    ("/ccr/NOT-HEX", 400),
    ("/ccr/" + "A" * 32, 404),  # paths are case-folded: a valid, unknown handle
    ("/ccr/" + "g" * 32, 400),
    ("/ccr/" + "0" * 31, 400),
    ("/ccr/" + "0" * 32, 404),
    ("?lines=9-3", 400),
    ("?lines=0-3", 400),
    ("?grep=(", 400),
    ("?grep=", 400),
    ("?grep=a&context=100000000", 400),
    ("?grep=a&context=-1", 400),
    ("?context=2", 400),
    ("?foo=1", 400),
    ("?head=5&tail=5", 400),
    ("?head=5&head=6", 400),
    ("?head=five", 400),
])
def test_bad_requests_answered_locally(reverse, suffix, status):
    p, up, url, _ = reverse
    target = p.url + suffix if suffix.startswith("/") else url + suffix
    before = up.snapshot()
    got, body = curl(target)
    assert got == status, body
    assert up.snapshot() == before, "a /ccr/ request reached the upstream"


@pytest.mark.parametrize("query", ["head=%C2%B2", "tail=%E2%91%A0", "lines=%C2%B9-%C2%B2",
                                   "grep=a&context=%C2%B3"])
def test_unicode_digit_counts_are_a_400_not_forwarded(reverse, query):
    _, up, url, _ = reverse
    before = up.snapshot()
    got, body = curl(f"{url}?{query}")
    time.sleep(0.02)
    assert up.snapshot() == before, "a /ccr/ request reached the upstream"
    assert got == 400, body


def test_deeply_nested_pattern_is_a_400_not_forwarded(reverse):
    _, up, url, _ = reverse
    before = up.snapshot()
    got, body = curl(f"{url}?grep=" + "%28" * 500 + "%29" * 500)
    time.sleep(0.02)
    assert up.snapshot() == before, "a /ccr/ request reached the upstream"
    assert got == 400, body


@pytest.mark.parametrize("pattern", ["(a|a)%2B$", "(a%2B)%2B$", "(a*)*$"])
def test_catastrophic_pattern_is_a_quick_400_and_the_proxy_keeps_serving(reverse, pattern):
    p, up, _, url_long = reverse
    t = time.monotonic()
    got, body = curl(f"{url_long}?grep={pattern}")
    took = time.monotonic() - t
    assert got == 400 and b"took longer" in body, body
    assert took < 3.0  # the regex stops at 0.25 s; unbounded, these patterns run for minutes
    t = time.monotonic()
    assert httpx.get(p.url + "/headroom/health", timeout=2).status_code == 200
    r = httpx.post(p.url + "/v1/messages", headers=KEY, timeout=2, content=json.dumps(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "next"}]}))
    assert r.status_code == 200 and time.monotonic() - t < 1.0


def test_long_original_whole_and_tail(reverse):
    _, _, _, url_long = reverse
    assert curl(url_long)[1] == LOG_LONG.encode()
    assert curl(f"{url_long}?tail=1")[1] == (LONG_LINE + "\n").encode()


# -- regular mode: the same curl, with and without the proxy variables -------------------------


@pytest.fixture(scope="module")
def regular(tmp_path_factory):
    with CountingUpstream(tls=True) as up:
        with Mitmdump(mode="regular", redirect_to=up.port,
                      workdir=tmp_path_factory.mktemp("ccr-regular")) as p:
            with httpx.Client(proxy=p.url, verify=p.verify) as c:
                r = c.post("https://api.anthropic.com/v1/messages", content=tool_request(LOG),
                           headers=KEY)
                assert r.status_code == 200
            yield p, up, marker_of(up)


@pytest.mark.parametrize("var", [None, "http_proxy", "HTTP_PROXY", "all_proxy"])
def test_regular_mode_curl_with_and_without_proxy_variables(regular, var):
    p, up, url = regular
    assert url.startswith(f"http://127.0.0.1:{p.port}/ccr/")
    env = clean_env(**({var: p.url} if var else {}))
    before = up.snapshot()
    status, body = curl(url, env=env)
    assert status == 200 and body == LOG.encode()
    status, body = curl(url + "?head=2", env=env)
    assert status == 200 and body.decode() == "".join(LOG.splitlines(True)[:2])
    assert up.snapshot() == before


def test_regular_mode_ccr_path_on_an_api_host_is_not_local(regular):
    """`/ccr/...` on api.anthropic.com belongs to that host, not to Headroom."""
    p, up, url = regular
    handle = url.rsplit("/", 1)[1]
    before = up.snapshot()[2]
    with httpx.Client(proxy=p.url, verify=p.verify) as c:
        r = c.get(f"https://api.anthropic.com/ccr/{handle}")
    assert LOG[:100] not in r.text
    assert up.snapshot()[2] == before + 1
