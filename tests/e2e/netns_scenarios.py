"""Loopback-only listening and local-endpoint access, probed from a non-loopback address.

Run inside a fresh network namespace made by the test (`unshare -n python -m
tests.e2e.netns_scenarios`): loopback is brought up and NONLOOP (an address that is not loopback)
is added to `lo`, so a client can connect from and to a non-loopback address of "this machine"
without any traffic leaving the namespace. Starts the proxies through the real launcher
(`./headroom`), probes them, prints one JSON document on the last line of stdout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "tool_outputs"))

from tests.e2e.adversary import http_bytes, raw_request, status_of  # noqa: E402
from tests.e2e.fake_upstream import FakeUpstream  # noqa: E402
from tests.e2e.proxy import free_port  # noqa: E402

NONLOOP = "10.254.0.1"
MARKER = re.compile(r"http://[^\s'\"\]\)]+/ccr/([0-9a-f]{32})")


def setup_namespace() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{NONLOOP}/32", "dev", "lo"], check=True)


class Launched:
    def __init__(self, name: str, args: list[str], work: Path, env: dict | None = None,
                 port: int | None = None, confdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work / "log"
        a = [str(ROOT / "headroom")]
        for x in args:
            a.append(x.replace("{port}", str(self.port)).replace("{work}", str(self.work)))
        a += ["--set", f"headroom_dir={self.work / 'h'}", "--set", f"confdir={confdir or self.work / 'conf'}",
              "--set", "headroom_flush_interval=0.02"]
        self.args = a
        self.proc = subprocess.Popen(a, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, cwd=str(ROOT),
                                     env={**os.environ, **(env or {})})

    def wait(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def probe(port: int, data: bytes, source: str, host: str | None = None,
          timeout: float = 3.0) -> dict:
    t = time.monotonic()
    try:
        resp = raw_request(port, data, source=source, host=host or source, timeout=timeout)
    except OSError as e:
        return {"status": None, "error": type(e).__name__, "seconds": time.monotonic() - t}
    body = resp.partition(b"\r\n\r\n")[2]
    return {"status": status_of(resp), "body": body.decode("utf-8", "replace"),
            "seconds": round(time.monotonic() - t, 2)}


def connect_timeout_case(work: Path) -> dict:
    """An upstream whose accept queue is full: SYNs are dropped and the proxy's connect times out
    (tcp_syn_retries=1 in this namespace: about 3 s)."""
    import anthropic
    import httpx2

    from tests.e2e.proxy import Mitmdump

    subprocess.run(["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"], check=True)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    held = []
    for _ in range(4):  # fill the accept queue; nobody ever accepts
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(s)
    time.sleep(0.2)
    out: dict = {}
    with Mitmdump(mode=f"reverse:http://127.0.0.1:{port}", workdir=work / "timeout") as p:
        c = anthropic.Anthropic(api_key="sk-ant-api03-x", base_url=p.url, max_retries=0,
                                http_client=httpx2.Client(timeout=30))
        t = time.monotonic()
        try:
            c.messages.create(model="m-timeout", max_tokens=5,
                              messages=[{"role": "user", "content": "x"}])
            out["status"] = 200
        except anthropic.APIStatusError as e:
            out["status"] = e.status_code
            out["message"] = e.message
        except Exception as e:  # noqa: BLE001
            out["status"] = None
            out["message"] = repr(e)
        out["seconds"] = round(time.monotonic() - t, 2)
        ev = p.events(wait_for=1, timeout=5)
        out["kind"] = ev[-1]["decisions"].get("upstream_error") if ev else None
    for s in held:
        s.close()
    ls.close()
    return out


def main() -> None:
    setup_namespace()
    work = Path(tempfile.mkdtemp(prefix="headroom-netns-"))
    from tool_output_corpus import pytest_log

    log_text = pytest_log(passes=400, failures=2).text
    up = FakeUpstream()
    env = {"HEADROOM_TEST_UPSTREAM": f"127.0.0.1:{up.port}"}
    redirect = str(ROOT / "tests" / "e2e" / "redirect.py")
    out: dict = {}
    reverse_port = free_port()
    procs = {
        # the launcher's own defaults: loopback only
        # (one process, two listeners: the launcher adds --listen-host 127.0.0.1 for both)
        "regular": Launched("regular", ["--mode", "regular@{port}", "--mode",
                                        f"reverse:http://127.0.0.1:9@{reverse_port}"], work),
        # opened on purpose
        "open": Launched("open", ["--mode", "regular@{port}", "--listen-host", "0.0.0.0",
                                  "-s", redirect, "--set", "headroom_compress=on"], work, env),
        "open-reverse": Launched("open-reverse", [
            "--mode", f"reverse:http://127.0.0.1:{up.port}@{{port}}", "--listen-host",
            "0.0.0.0", "--set", "headroom_compress=on"], work),
    }
    # more local clients allowed, through mitmproxy's config.yaml and through --set
    allowed = work / "allowed"
    (allowed / "conf").mkdir(parents=True)
    (allowed / "conf" / "config.yaml").write_text(
        "headroom_local_clients:\n  - 127.0.0.0/8\n  - 10.254.0.0/16\n")
    procs["allowed"] = Launched("allowed", [
        "--mode", f"reverse:http://127.0.0.1:{up.port}@{{port}}", "--listen-host", "0.0.0.0",
        "--set", "headroom_compress=on"], work, confdir=allowed / "conf")
    procs["allowed-set"] = Launched("allowed-set", [
        "--mode", f"reverse:http://127.0.0.1:{up.port}@{{port}}", "--listen-host", "0.0.0.0",
        "--set", "headroom_local_clients=10.254.0.0/16"], work)
    try:
        started = {k: p.wait() for k, p in procs.items()}
        out["started"] = started
        for k, port in (("regular", procs["regular"].port), ("reverse", reverse_port),
                        ("open", procs["open"].port)):
            out[k] = {"loopback": can_connect("127.0.0.1", port),
                      "nonloopback": can_connect(NONLOOP, port)}

        # an original made by tenant A through the open regular proxy
        msgs = [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                                   "input": {"command": "pytest"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                              "content": log_text}]}]
        body = json.dumps({"model": "m", "max_tokens": 5, "messages": msgs}).encode()
        op = procs["open"].port
        r = raw_request(op, http_bytes("POST", "http://api.anthropic.com/v1/messages", body=body,
                                       headers={"x-api-key": "sk-ant-api03-tenant-a",
                                                "content-type": "application/json"},
                                       host="api.anthropic.com"), timeout=10)
        out["tenant_a_status"] = status_of(r)
        sent = up.requests_to("/v1/messages")[-1].body.decode()
        m = MARKER.search(sent)
        handle = m.group(1) if m else None
        out["handle"] = handle
        out["original_ok"] = handle is not None
        h127 = f"127.0.0.1:{op}"
        health = "/headroom/health"
        ccr = f"/ccr/{handle}"
        out["open_probes"] = {
            "loopback_health": probe(op, http_bytes("GET", health, host=h127), "127.0.0.1"),
            "loopback_ccr": probe(op, http_bytes("GET", ccr, host=h127), "127.0.0.1"),
            "remote_health_abs": probe(op, http_bytes("GET", f"http://{h127}{health}", host=h127),
                                       NONLOOP),
            "remote_health_origin": probe(op, http_bytes("GET", health, host=h127), NONLOOP),
            "remote_ccr_abs": probe(op, http_bytes("GET", f"http://{h127}{ccr}", host=h127),
                                    NONLOOP),
            "remote_ccr_origin": probe(op, http_bytes("GET", ccr, host=h127), NONLOOP),
            "remote_ccr_localhost": probe(op, http_bytes(
                "GET", f"http://localhost:{op}{ccr}", host=f"localhost:{op}"), NONLOOP),
            # through the proxy to another loopback address of the proxy itself
            "remote_health_bounce": probe(op, http_bytes(
                "GET", f"http://127.0.0.2:{op}{health}", host=h127), NONLOOP),
            "remote_ccr_bounce": probe(op, http_bytes(
                "GET", f"http://127.0.0.2:{op}{ccr}", host=h127), NONLOOP),
        }
        rp = procs["open-reverse"].port
        out["open_reverse_probes"] = {
            "remote_health": probe(rp, http_bytes("GET", health), NONLOOP),
            "remote_ccr": probe(rp, http_bytes("GET", f"/ccr/{'0' * 32}"), NONLOOP),
            "loopback_health": probe(rp, http_bytes("GET", health), "127.0.0.1"),
        }
        ap = procs["allowed"].port
        if not started["allowed"]:
            raise RuntimeError("allowed: " + procs["allowed"].log()[-2000:])
        a_body = json.dumps({"model": "m", "max_tokens": 5, "messages": msgs}).encode()
        raw_request(ap, http_bytes("POST", "/v1/messages", body=a_body, headers={
            "x-api-key": "sk-ant-api03-tenant-a", "content-type": "application/json"}),
            timeout=10)
        sent = up.requests_to("/v1/messages")[-1].body.decode()
        m = MARKER.search(sent)
        ah = m.group(1) if m else "0" * 32
        out["allowed_probes"] = {
            "remote_health": probe(ap, http_bytes("GET", health), NONLOOP),
            "remote_health_set": probe(procs["allowed-set"].port, http_bytes("GET", health),
                                       NONLOOP),
            "remote_ccr_owner": probe(ap, http_bytes("GET", f"/ccr/{ah}", headers={
                "x-api-key": "sk-ant-api03-tenant-a"}), NONLOOP),
            "remote_ccr_nocred": probe(ap, http_bytes("GET", f"/ccr/{ah}"), NONLOOP),
            "remote_ccr_other": probe(ap, http_bytes("GET", f"/ccr/{ah}", headers={
                "x-api-key": "sk-ant-api03-tenant-b"}), NONLOOP),
        }
        # last, as it may tie the proxy up: the proxy's own non-loopback address as the target
        out["open_probes"]["remote_health_own_address"] = probe(
            op, http_bytes("GET", health, host=f"{NONLOOP}:{op}"), NONLOOP, timeout=2.0)
        out["logs"] = {k: p.log()[-3000:] for k, p in procs.items() if not started[k]}
        for p in procs.values():
            p.stop()
        out["connect_timeout"] = connect_timeout_case(work)
    finally:
        for p in procs.values():
            p.stop()
        up.close()
    for group in ("open_probes", "open_reverse_probes", "allowed_probes"):
        for v in out.get(group, {}).values():
            if "body" in v:
                v["body_is_original"] = v["body"] == log_text
                v["body"] = v["body"][:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
