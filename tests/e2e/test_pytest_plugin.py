"""The pytest plugin (headroom_pytest), driven as a user's suite drives it: an inner pytest run
whose tests call the official SDKs through the `headroom` fixture, against the local fake upstream
(recording) or nothing at all (replay)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.proxy import free_port

SUITE = '''
import os, urllib.request
import anthropic, openai, pytest

PROMPT = "What is 2+2?"

def ask(text=PROMPT):
    c = anthropic.Anthropic(max_retries=0)
    return c.messages.create(model="claude-x", max_tokens=16,
                             messages=[{"role": "user", "content": text}]).content[0].text

def test_anthropic(headroom):
    try:  # a reachability probe, as Claude Code sends: never a 2xx, never recorded, not fatal
        urllib.request.urlopen(urllib.request.Request(
            os.environ["ANTHROPIC_BASE_URL"] + "/", method="HEAD"), timeout=10)
    except Exception:
        pass
    assert ask() == "Hello from the fake upstream."
    assert headroom.anthropic_url.startswith("http://127.0.0.1:")

def test_openai_stream(headroom):
    o = openai.OpenAI(max_retries=0)
    chunks = o.chat.completions.create(model="gpt-x", stream=True,
                                       messages=[{"role": "user", "content": PROMPT}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("tok0")
    with anthropic.Anthropic(max_retries=0).messages.stream(
            model="claude-x", max_tokens=16, messages=[{"role": "user", "content": PROMPT}]) as s:
        assert "Hello 1" in "".join(s.text_stream)

def test_swallowed(headroom):
    try:
        ask(SWALLOWED)
    except anthropic.APIStatusError:
        pass  # an agent that retries or reports errors itself
'''

MODULE_SCOPED = '''
import anthropic, pytest

pytestmark = pytest.mark.headroom_cassette(scope="module")

def test_one(headroom):
    c = anthropic.Anthropic(max_retries=0)
    c.messages.create(model="claude-x", max_tokens=16, messages=[{"role": "user", "content": "a"}])

def test_two(headroom):
    c = anthropic.Anthropic(max_retries=0)
    c.messages.create(model="claude-x", max_tokens=16, messages=[{"role": "user", "content": "b"}])
'''


def write_suite(root: Path, swallowed="What is 2+2?", prompt="What is 2+2?"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_agent.py").write_text(
        SUITE.replace('PROMPT = "What is 2+2?"', f"PROMPT = {prompt!r}")
        + f"\nSWALLOWED = {swallowed!r}\n")
    (root / "test_scoped.py").write_text(MODULE_SCOPED)


def run(root: Path, upstream_url: str, *args: str, ci: bool = False, key: bool = True):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "OPENAI_", "HEADROOM_")) and k != "CI"}
    if ci:
        env["CI"] = "true"
    if key:
        env.update(ANTHROPIC_API_KEY="sk-ant-api03-plugin", OPENAI_API_KEY="sk-proj-plugin")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(root),
         f"--headroom-upstream-anthropic={upstream_url}",
         f"--headroom-upstream-openai={upstream_url}", *args],
        capture_output=True, text=True, env=env, cwd=root, timeout=300)
    return out.returncode, out.stdout + out.stderr


def cassettes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "cassettes").rglob("*.json"))}


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_record_once_then_replay_in_ci_offline(upstream, tmp_path):
    root = tmp_path / "suite"
    write_suite(root)
    exclude = "--headroom-exclude=headers.anthropic-version"
    code, out = run(root, upstream.url, exclude)
    assert code == 0, out
    files = cassettes(root)
    assert sorted({str(Path(f).parent) for f in files}) == [
        "cassettes/test_agent/test_anthropic", "cassettes/test_agent/test_openai_stream",
        "cassettes/test_agent/test_swallowed", "cassettes/test_scoped"]
    assert len([f for f in files if f.startswith("cassettes/test_scoped/")]) == 2
    assert len(upstream.received) == len(files) == 6
    assert all(json.loads(b)["request"]["headers"] == {} for b in files.values())
    # CI: replay by default, no upstream, no key in the environment
    upstream.clear()
    code, out = run(root, dead(), exclude, ci=True, key=False)
    assert code == 0, out
    assert upstream.received == [] and cassettes(root) == files
    assert "HEAD /: headroom replay: no recorded response" in out  # reported, not failed
    # outside CI the default is `once`: recorded cassettes replay, an empty one records
    for f in (root / "cassettes" / "test_agent" / "test_openai_stream").iterdir():
        f.unlink()
    code, out = run(root, upstream.url, exclude)
    assert code == 0, out
    assert [r.path for r in upstream.received] == ["/v1/chat/completions", "/v1/messages"]
    strip = re.compile(rb'"delay_ms": \d+')
    assert {n: strip.sub(b"", b) for n, b in cassettes(root).items()} == \
        {n: strip.sub(b"", b) for n, b in files.items()}
    # record mode forwards again; the same answers leave the files as they are
    files = cassettes(root)
    upstream.clear()
    code, out = run(root, upstream.url, exclude, "--headroom-record-mode=record")
    assert code == 0, out
    assert len(upstream.received) == 6 and cassettes(root) == files


NEW_TEST = '''

def test_new(headroom):
    ask("never recorded")
'''


def test_misses_fail_their_tests_with_the_difference(upstream, tmp_path):
    root = tmp_path / "suite"
    write_suite(root)
    assert run(root, upstream.url)[0] == 0
    write_suite(root, prompt="What is 3+3?", swallowed="something new")
    with open(root / "test_agent.py", "a") as f:
        f.write(NEW_TEST)
    broken = sorted((root / "cassettes" / "test_scoped").iterdir())[0]
    broken.write_text(broken.read_text().replace('"status": 200', '"status": 200,'))
    upstream.clear()
    code, out = run(root, dead(), ci=True)
    assert code == 1 and upstream.received == []
    assert "5 failed, 1 passed" in out, out
    assert "messages[0].content changed: What is 2+2? -> What is 3+3?" in out
    assert f"{root}/cassettes/test_agent/test_anthropic (mode replay, running replay)" in out
    # the swallowed error still fails its test, with the explanation
    assert "FAILED test_agent.py::test_swallowed - Failed: headroom: 1 request(s)" in out
    assert "messages[0].content changed: What is 2+2? -> something new" in out
    assert f"Cassette {root}/cassettes/test_agent/test_new holds no recordings." in out
    assert f"cassette files skipped: {broken.name}: line " in out and "invalid JSON" in out
    assert "To record: run without CI set" in out
    assert not (root / "cassettes" / "test_agent" / "test_new").exists()


INTERLEAVED = '''
import anthropic, pytest

pytestmark = pytest.mark.headroom_cassette(scope="module")

def ask(text):
    anthropic.Anthropic(max_retries=0).messages.create(
        model="claude-x", max_tokens=16, messages=[{"role": "user", "content": text}])

def test_a(headroom):
    ask("a")

@pytest.mark.headroom_cassette("cassettes/elsewhere")
def test_b(headroom):
    ask("b")

def test_c(headroom):  # the module's cassette again, now holding test_a's recording
    ask("c")
'''


def test_once_decides_once_per_cassette_for_the_whole_session(upstream, tmp_path):
    # test_c reopened the module's cassette after test_b used another one: it held test_a's
    # recording by then, so `once` replayed it and test_c failed on every recording run.
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_interleaved.py").write_text(INTERLEAVED)
    code, out = run(root, upstream.url)
    assert code == 0, out
    assert len(upstream.received) == 3
    upstream.clear()
    code, out = run(root, dead(), ci=True)  # and it all replays
    assert code == 0, out
    assert upstream.received == []


AT_IMPORT = '''
import anthropic

# made before the fixture sets the base URL (here: one where nothing listens, for offline runs)
CLIENT = anthropic.Anthropic(max_retries=0, base_url="http://127.0.0.1:9", timeout=5)

def test_module_client(headroom):
    try:
        CLIENT.messages.create(model="claude-x", max_tokens=16,
                               messages=[{"role": "user", "content": "hi"}])
    except anthropic.APIConnectionError:
        pass
'''


def test_a_test_that_sends_headroom_nothing_is_warned_about(upstream, tmp_path):
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_at_import.py").write_text(AT_IMPORT)
    code, out = run(root, upstream.url, ci=True)
    assert code == 0, out
    assert "HeadroomWarning: headroom: this test sent Headroom no request" in out
    assert "base_url=headroom.anthropic_url" in out
