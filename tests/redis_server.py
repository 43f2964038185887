"""A real `redis-server` for tests: a free loopback port (or a unix socket) in a temp dir.

No persistence, nothing shared with a system Redis. Stop, pause (SIGSTOP: a Redis that accepts
connections but never answers) and restart on the same address, for fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARY = "redis-server"
MISSING = "redis-server not installed: apt-get install redis-server (Debian/Ubuntu) " \
          "or brew install redis (macOS)"


def eventually(predicate, timeout: float = 5.0) -> None:
    """Wait until `predicate()` is true (Redis back: the breaker's prober closes it by itself)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within %ss" % timeout
        time.sleep(0.02)


def binary() -> str | None:
    return shutil.which(BINARY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process. `url` stays valid across `restart()`."""

    def __init__(self, directory: Path, *, unix: bool = False, password: str | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.password = password
        self.port = 0 if unix else free_port()
        # A short directory of its own: a socket path must fit in 108 bytes.
        self.socket = os.path.join(tempfile.mkdtemp(prefix="hr-redis-"), "r.sock") if unix \
            else None
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.unix:
            return f"unix://{auth}{self.socket}?db=0"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        exe = binary()
        assert exe is not None, MISSING
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        if self.unix:
            args += ["--unixsocket", self.socket, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(self._args(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {log}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def _answers(self) -> bool:
        try:
            if self.unix:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.settimeout(0.5)
                    s.connect(self.socket)
                except OSError:
                    s.close()
                    raise
            else:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            return False
        with s:
            try:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, not a clean shutdown) and wait."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.socket:
            shutil.rmtree(os.path.dirname(self.socket), ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel, nothing is answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def flush(self) -> None:
        import redis

        kwargs = {"password": self.password, "socket_timeout": 5}
        c = redis.Redis(unix_socket_path=self.socket, **kwargs) if self.unix else \
            redis.Redis(host="127.0.0.1", port=self.port, **kwargs)
        try:
            c.flushall()
        finally:
            c.close()
