"""The real `claude -p` under the pytest plugin (headroom_pytest): recorded once against the local
fake, then replayed in CI mode with no upstream at all. Opt-in like every real-client test."""

from __future__ import annotations

import textwrap

import pytest

from tests.e2e.proxy import free_port
from tests.e2e.test_pytest_plugin import run
from tests.realclients.fake_agents import ANSWER

pytestmark = pytest.mark.realclients

INNER = '''
import os, subprocess

def test_claude(headroom):
    env = {{"PATH": os.environ["PATH"], "HOME": {home!r}, "USER": "headroom-test",
           "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "ANTHROPIC_API_KEY": os.environ["ANTHROPIC_API_KEY"],
           "ANTHROPIC_BASE_URL": os.environ["ANTHROPIC_BASE_URL"]}}
    r = subprocess.run([{claude!r}, "-p", "say hi"], env=env, cwd={work!r},
                       capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    print("CLAUDE SAID:", r.stdout.strip())
'''


def said(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("CLAUDE SAID:")]


def test_claude_code_records_once_and_replays_offline(claude_bin, agent_upstream, sandbox,
                                                      tmp_path):
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_claude.py").write_text(textwrap.dedent(INNER.format(
        home=str(sandbox.home), claude=str(claude_bin), work=str(sandbox.work))))
    # the date and the working directory are in Claude Code's system prompt: both runs share them
    code, out = run(root, agent_upstream.url, "-s")
    assert code == 0, out
    assert said(out) and ANSWER in said(out)[0], out
    files = sorted((root / "cassettes").rglob("*.json"))
    assert files and agent_upstream.llm_requests()
    recorded = {f: f.read_bytes() for f in files}
    agent_upstream.clear()
    code, out2 = run(root, f"http://127.0.0.1:{free_port()}", "-s", ci=True)
    assert code == 0, out2
    assert said(out2) == said(out)
    assert agent_upstream.received == []
    assert {f: f.read_bytes() for f in files} == recorded
    blob = b"".join(recorded.values())
    assert b"sk-ant-api03-plugin" not in blob and b"user_id" not in blob
