"""Fixtures for driving the real agent CLIs (Claude Code, Codex) from npm through Headroom.

The CLIs are not part of the repository: `scripts/real_clients.sh` installs them with npm into
`$HEADROOM_REALCLIENTS_DIR` (default `~/.cache/headroom-realclients`) and runs these tests. Without
them every test here skips and says how to install them.

Every client run is sandboxed: a fresh HOME (so `~/.claude`, `~/.claude.json`, `~/.codex` are
temporary), CODEX_HOME inside it, XDG dirs inside it, and an environment built from scratch (only
PATH and what the test sets) so a developer's own API keys, proxies or base URLs never leak in.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realclients.fake_agents import AgentFake

CLIENTS_DIR = Path(os.environ.get("HEADROOM_REALCLIENTS_DIR")
                   or Path.home() / ".cache" / "headroom-realclients")
INSTALL_HINT = ("run scripts/real_clients.sh (installs @anthropic-ai/claude-code and @openai/codex "
                f"with npm into {CLIENTS_DIR}, outside the repo, then runs these tests)")
# Headers worth reporting (values of credentials are never recorded).
SECRET = {"x-api-key", "authorization", "cookie"}
SKIP_REPORT = {"content-length", "host", "connection", "sec-websocket-key"}


def client_bin(name: str) -> Path | None:
    exe = CLIENTS_DIR / "node_modules" / ".bin" / name
    return exe if exe.exists() else None


def client_version(exe: Path) -> str:
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60,
                             env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"},
                             stdin=subprocess.DEVNULL)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    exe = client_bin("claude")
    if exe is None:
        pytest.skip(f"Claude Code (`claude`) is not installed: {INSTALL_HINT}")
    return exe


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    exe = client_bin("codex")
    if exe is None:
        pytest.skip(f"Codex (`codex`) is not installed: {INSTALL_HINT}")
    return exe


@pytest.fixture(scope="session")
def agent_upstream():
    up = AgentFake()
    yield up
    up.close()


@pytest.fixture(autouse=True)
def _fresh_agent_upstream(request):
    if "agent_upstream" in request.fixturenames:
        request.getfixturevalue("agent_upstream").clear()


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
                f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}")


class Sandbox:
    """A throwaway HOME for one client run, and a way to run the client in it."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.codex_home = self.home / ".codex"
        self.work = self.home / "work"
        for d in (self.home, self.codex_home, self.work):
            d.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "USER": "headroom-test",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "CODEX_HOME": str(self.codex_home),
        }
        env.update(extra)
        return env

    def run(self, argv: list[str | Path], env: dict[str, str], timeout: float = 180) -> Run:
        """Run a client to completion; on timeout kill its whole process group and fail."""
        argv = [str(a) for a in argv]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env, cwd=str(self.work), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            run = Run(argv, proc.returncode, out, err, time.monotonic() - t0)
            pytest.fail(f"client did not finish within {timeout}s\n{run.explain()}")
        return Run(argv, proc.returncode, out, err, time.monotonic() - t0)


def _real_home_state(tmp_path: Path) -> dict:
    """What a client run in `tmp_path` would leave in the real HOME if the sandbox leaked:
    ~/.claude.json and ~/.codex (existence, mtime), and a ~/.claude/projects entry named after
    the run's working directory (Claude Code keeps one per cwd)."""
    out: dict = {}
    for name in (".claude.json", ".codex"):
        p = Path.home() / name
        out[name] = (p.exists(), p.stat().st_mtime_ns if p.exists() else 0)
    projects = Path.home() / ".claude" / "projects"
    mangled = re.sub(r"[^A-Za-z0-9]", "-", str(tmp_path))
    out["projects"] = sorted(p.name for p in projects.glob("*") if mangled in p.name) \
        if projects.is_dir() else []
    return out


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    """A throwaway HOME; afterwards the real HOME must show no trace of the run."""
    before = _real_home_state(tmp_path)
    yield Sandbox(tmp_path)
    assert _real_home_state(tmp_path) == before, "a client run touched the real HOME"


# -- what the clients sent, for the report -------------------------------------------------------


def describe_headers(fields) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, v in fields:
        if n.lower() in SKIP_REPORT:
            continue
        out[n] = "<redacted>" if n.lower() in SECRET else (v if len(v) < 400 else v[:400] + "…")
    return out


def describe_body(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except ValueError:
        return {"bytes": len(body), "json": False}
    if not isinstance(doc, dict):
        return {"bytes": len(body)}
    d = {"bytes": len(body), "keys": list(doc), "model": doc.get("model"),
         "stream": doc.get("stream")}
    for k in ("metadata", "prompt_cache_key", "type", "generate", "previous_response_id"):
        if k in doc:
            d[k] = doc[k]
    for k in ("messages", "input", "tools"):
        if isinstance(doc.get(k), list):
            d[f"n_{k}"] = len(doc[k])
    return d


def report(name: str, data: dict) -> None:
    """Append one record to $HEADROOM_REALCLIENTS_REPORT (JSON lines), when set."""
    path = os.environ.get("HEADROOM_REALCLIENTS_REPORT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": name, **data}, ensure_ascii=False, default=str) + "\n")


@pytest.fixture(scope="session", autouse=True)
def _report_versions():
    for name in ("claude", "codex"):
        exe = client_bin(name)
        if exe is not None:
            report("versions", {"client": name, "version": client_version(exe), "path": str(exe)})
