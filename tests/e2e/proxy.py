"""Run a real `mitmdump` (optionally with the Headroom addon) as a subprocess on a free port."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "addons" / "headroom.py"
REDIRECT = Path(__file__).resolve().parent / "redirect.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mitmdump_bin() -> str:
    exe = Path(sys.executable).parent / "mitmdump"
    return str(exe) if exe.exists() else (shutil.which("mitmdump") or "mitmdump")


class Mitmdump:
    """`with Mitmdump(mode=..., headroom=True, options={...}) as p: p.port, p.events_path`."""

    def __init__(self, *, mode: str, headroom: bool = True, options: dict | None = None,
                 redirect_to: int | None = None, extra_args: list[str] | None = None,
                 workdir: Path | None = None, env: dict[str, str] | None = None,
                 launcher: list[str] | None = None) -> None:
        if workdir is None:  # ours: removed when this process exits (a test may read it late)
            workdir = Path(tempfile.mkdtemp(prefix="headroom-e2e-"))
            atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        self.workdir = Path(workdir)
        self.confdir = self.workdir / "conf"
        self.headroom_dir = self.workdir / "headroom"
        self.events_path = self.headroom_dir / "events.jsonl"
        self.log_path = self.workdir / "mitmdump.log"
        self.port = free_port()
        self.mode = mode
        self.headroom = headroom
        # Flush fast: tests read the event log right after a request.
        self.options = {"headroom_dir": str(self.headroom_dir), "headroom_flush_interval": "0.02",
                        **(options or {})}
        self.redirect_to = redirect_to
        self.extra_args = extra_args or []
        self.env = env or {}
        self.launcher = launcher or []  # a command that runs mitmdump (valgrind, say)
        self.proc: subprocess.Popen | None = None

    @property
    def ca_cert(self) -> str:
        return str(self.confdir / "mitmproxy-ca-cert.pem")

    @property
    def verify(self):
        """An SSL context trusting this proxy's CA (for clients in regular mode)."""
        import ssl

        return ssl.create_default_context(cafile=self.ca_cert)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        a = [mitmdump_bin(), "--mode", f"{self.mode}@{self.port}", "--listen-host", "127.0.0.1",
             "--set", f"confdir={self.confdir}", "--set", "ssl_insecure=true",
             "--set", "connection_strategy=lazy", "--set", "termlog_verbosity=info",
             "--set", "flow_detail=0"]
        if self.redirect_to:
            a += ["-s", str(REDIRECT)]
        if self.headroom:
            a += ["-s", str(ADDON)]
            for k, v in self.options.items():
                if isinstance(v, (list, tuple)):
                    for item in v:
                        a += ["--set", f"{k}={item}"]
                else:
                    a += ["--set", f"{k}={v}"]
        return a + self.extra_args

    def start(self, timeout: float = 30.0) -> "Mitmdump":
        # mitmdump's log goes through print(): unbuffered, tests can read it while it runs
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.redirect_to:
            env["HEADROOM_TEST_UPSTREAM"] = f"127.0.0.1:{self.redirect_to}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*self.launcher, *self.args()], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mitmdump did not listen on {self.port}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def browser_key(self) -> str:
        """The key of the dashboard address Headroom logged at startup (what a browser needs
        in reverse mode)."""
        import re

        deadline = time.monotonic() + 10
        while (m := re.search(r"/headroom/\?key=([\w-]+)", self.log())) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no dashboard address in the log:\n{self.log()}")
            time.sleep(0.05)
        return m.group(1)

    def events(self, wait_for: int = 0, timeout: float = 10.0, settle: float = 0.0) -> list[dict]:
        """Event-log records; waits until at least `wait_for` are on disk, and with `settle`
        until no new line has appeared for that many seconds (lines of earlier flows are
        written in background batches)."""
        import json

        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while True:
            recs = []
            if self.events_path.exists():
                # (up to the last newline: the line being appended may be read half written)
                data = self.events_path.read_bytes()
                recs = [json.loads(line) for line in
                        data[:data.rfind(b"\n") + 1].splitlines() if line.strip()]
            now = time.monotonic()
            if len(recs) != last:
                last, stable_since = len(recs), now
            settled = now - stable_since >= settle
            if (len(recs) >= wait_for and settled) or now > deadline:
                return recs
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Mitmdump":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
