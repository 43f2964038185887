"""One Headroom mitmdump for a pytest session: reverse proxies for Anthropic and OpenAI, and the
control calls that point it at a test's cassette."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import PREFIX

HERE = Path(__file__).resolve().parent
CONTROL = HERE / "control.py"


def addon_path() -> Path:
    """The Headroom addon: `$HEADROOM_ADDON`, else `addons/headroom.py` of this checkout (the
    project is installed editable)."""
    path = Path(os.environ.get("HEADROOM_ADDON") or HERE.parent / "addons" / "headroom.py")
    if not path.is_file():
        raise FileNotFoundError(f"the Headroom addon is not at {path}; set HEADROOM_ADDON to "
                                "addons/headroom.py of a Headroom checkout")
    return path


def mitmdump() -> str:
    exe = Path(sys.executable).parent / "mitmdump"
    return str(exe) if exe.exists() else (shutil.which("mitmdump") or "mitmdump")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyError(RuntimeError):
    pass


class HeadroomProxy:
    """`HeadroomProxy(workdir, anthropic=URL, openai=URL, mode=..., exclude=[...]).start()`."""

    def __init__(self, workdir: Path, *, anthropic: str, openai: str, mode: str,
                 exclude: list[str] | tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.upstreams = {"anthropic": anthropic.rstrip("/"), "openai": openai.rstrip("/")}
        self.mode = mode
        self.exclude = list(exclude)
        self.ports = {name: free_port() for name in self.upstreams}
        self.log_path = self.workdir / "mitmdump.log"
        self.proc: subprocess.Popen | None = None
        self.current: tuple[str, str] | None = None  # (cassette, mode) in use
        self.decided: dict[str, str] = {}  # what `once` became for each cassette opened
        self.requests_seen = 0

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['anthropic']}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['openai']}/v1"

    def args(self) -> list[str]:
        a = [mitmdump(), "--listen-host", "127.0.0.1", "--set", "flow_detail=0",
             "--set", "termlog_verbosity=warn"]  # Headroom's warnings stay in the log
        for name, url in self.upstreams.items():
            a += ["--mode", f"reverse:{url}@{self.ports[name]}"]
        a += ["--set", f"confdir={self.workdir / 'conf'}", "--set", "connection_strategy=lazy",
              "-s", str(CONTROL), "-s", str(addon_path()),
              "--set", f"headroom_dir={self.workdir / 'headroom'}",
              # a test harness forwards what the client sent: no rewriting, no sticky betas
              "--set", "headroom_compress=off", "--set", "headroom_beta_sticky=false",
              "--set", f"headroom_store_mode={self.mode}"]
        for path in self.exclude:
            a += ["--set", f"headroom_store_exclude={path}"]
        return a

    def start(self, timeout: float = 30.0) -> HeadroomProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        waiting = dict(self.ports)
        while waiting:
            if self.proc.poll() is not None:
                raise ProxyError(f"Headroom (mitmdump) exited at startup:\n{self.log_tail()}")
            for name, port in list(waiting.items()):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        del waiting[name]
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                self.stop()
                raise ProxyError(f"Headroom did not listen within {timeout}s:\n"
                                 f"{self.log_tail()}")
            if waiting:
                time.sleep(0.05)
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def call(self, command: str, doc: dict | None = None, timeout: float = 60.0) -> dict:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.anthropic_url + PREFIX + command, data=data,
                                     method="GET" if data is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                why = json.loads(e.read()).get("error")
            except ValueError:
                why = str(e)
            raise ProxyError(f"headroom: {command} failed: {why}") from None
        except OSError as e:
            raise ProxyError(f"headroom: {command} failed ({e}):\n{self.log_tail()}") from None

    def use(self, cassette: Path, mode: str) -> dict:
        """Point the proxy at `cassette` in `mode` (the cassette is read when it opens, so a
        test sees the files as they are when it starts). `once` decides once per cassette for
        the whole session: a cassette it began recording into goes on recording what it lacks
        (`cache`) when a later test opens it again, instead of replaying its first half."""
        asked = mode
        if mode == "once" and self.decided.get(str(cassette)) == "record":
            mode = "cache"
        want = (str(cassette), mode)
        if self.current == want and self._last is not None:
            return self._last
        self._last = None
        info = self.call("use", {"cassette": str(cassette), "mode": mode})
        if asked == "once":
            self.decided.setdefault(str(cassette), "record" if mode == "cache"
                                    else info.get("mode", "replay"))
            if mode == "cache":
                info = {**info, "mode": "record"}  # (what `once` is doing for this cassette)
        self._last = info
        self.current = want
        return self._last

    _last: dict | None = None

    def flush(self) -> None:
        self.call("flush", {})

    def misses(self) -> list[dict]:
        """The misses since the last call (and, in `requests_seen`, how many requests reached
        Headroom meanwhile)."""
        got = self.call("misses")
        self.requests_seen = got.get("requests", 0)
        return got.get("misses", [])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
