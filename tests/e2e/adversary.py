"""Helpers for the fail-closed e2e tests: raw HTTP over sockets (so paths reach the proxy exactly
as written), curl without proxy variables, real read-only / full filesystems, and a mitmdump that
is expected to refuse to start."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.e2e.proxy import ROOT, mitmdump_bin

MARKER = re.compile(r"http://[^\s'\"\]\)]+/ccr/[0-9a-f]{32}")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "NO_PROXY")


def raw_request(port: int, data: bytes, *, timeout: float = 3.0, host: str = "127.0.0.1",
                source: str | None = None) -> bytes:
    """Send `data` as is and read until the proxy closes the connection (or `timeout`).
    Requests should say `connection: close`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, socket.timeout):
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if _complete(out, head_only=data.startswith(b"HEAD ")):
                break
        return out
    finally:
        s.close()


def _complete(resp: bytes, *, head_only: bool) -> bool:
    """Whether `resp` holds one whole HTTP/1.1 response (not waiting for the close)."""
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head_only or re.match(rb"HTTP/1\.[01] (1\d\d|204|304)", head):
        return True
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:.*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return False


def http_bytes(method: str, target: str, *, headers: dict | list | None = None,
               body: bytes = b"", host: str = "x") -> bytes:
    fields = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in fields}
    if "host" not in names:
        fields.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        fields.append(("content-length", str(len(body))))
    if "connection" not in names:
        fields.append(("connection", "close"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    return head.encode("latin-1") + b"\r\n" + body


def status_of(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else None


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def curl(url: str, *, env: dict | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of `curl URL`, run with no proxy variables unless `env` sets some."""
    cmd = ["curl", "-s", "-S", "--max-time", str(timeout), "-g", "-o", "-", "-w",
           "\n%{http_code}"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], capture_output=True, env=env or clean_env(),
                         timeout=timeout + 5)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code or b"0"), body


# -- filesystems --------------------------------------------------------------------------------


def mount_problem() -> str | None:
    """Why real mounts cannot be used here, or None."""
    if os.geteuid() != 0:
        return "not root: cannot mount a read-only or a tiny filesystem"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def readonly_view(src: Path, dst: Path):
    """`dst` shows `src` on a read-only bind mount (unmounted on exit)."""
    dst.mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(src), str(dst))
    try:
        _run("mount", "-o", "remount,bind,ro", str(dst))
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True, timeout=30)


@contextlib.contextmanager
def tiny_tmpfs(dst: Path, size: str = "1m"):
    dst.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(dst))
    try:
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Fill the filesystem under `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    # what a small write still finds room for
    for size in (512, 64, 1):
        try:
            with open(filler, "ab") as f:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
        except OSError:
            pass
    return filler


# -- a mitmdump that must refuse to start -------------------------------------------------------


class StartupRun:
    """Start mitmdump (or the launcher) with `args`, hammer its port with model requests until it
    exits, and keep the output. `answers` counts responses received meanwhile."""

    def __init__(self, args: list[str], port: int, *, env: dict | None = None,
                 timeout: float = 30.0, traffic: bool = True) -> None:
        self.args, self.port, self.env, self.timeout = args, port, env, timeout
        self.traffic = traffic
        self.idle_connected = False
        self.rc: int | None = None
        self.output = ""
        self.answers: list[int | None] = []
        self.attempts = 0

    def run(self) -> "StartupRun":
        proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), env=self.env or dict(os.environ))
        stop = threading.Event()
        body = b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}'
        reqs = [http_bytes("POST", "/v1/messages", body=body,
                           headers={"x-api-key": "sk-ant-api03-startup",
                                    "content-type": "application/json"}),
                http_bytes("GET", "/anything")]

        idle: list[socket.socket] = []

        def knock() -> None:
            """One client that gets in as early as possible and waits (an agent mid-request)."""
            while not stop.is_set() and not idle:
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
                    idle.append(s)
                    self.idle_connected = True
                except OSError:
                    time.sleep(0.0005)

        def hammer() -> None:
            i = 0
            while not stop.is_set():
                self.attempts += 1
                try:
                    resp = raw_request(self.port, reqs[i % 2], timeout=1.0)
                    self.answers.append(status_of(resp))
                except OSError:
                    pass
                time.sleep(0.005)
                i += 1

        threads = [threading.Thread(target=f, daemon=True) for f in (knock, hammer)]
        if self.traffic:
            for t in threads:
                t.start()
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        stop.set()
        if self.traffic:
            for t in threads:
                t.join(timeout=5)
        for s in idle:
            s.close()
        self.rc = proc.returncode
        self.output = out.decode(errors="replace")
        return self


def mitmdump_args(mode: str, port: int, confdir: Path, *options: str, lazy: bool = True,
                  addon: bool = True) -> list[str]:
    a = [mitmdump_bin(), "--mode", f"{mode}@{port}", "--listen-host", "127.0.0.1",
         "--set", f"confdir={confdir}"]
    if lazy:
        a += ["--set", "connection_strategy=lazy"]
    if addon:
        a += ["-s", str(ROOT / "addons" / "headroom.py")]
    for o in options:
        a += ["--set", o]
    return a
