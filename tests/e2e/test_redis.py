"""End to end: several real mitmdump instances sharing one real redis-server (`headroom_redis`).

A session alternating between two instances forwards exactly what one instance alone forwards;
a recording made through one is served by the other; concurrent first rewrites settle on one
winner; Redis killed, paused or restarted mid-run; the password in no output.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import redis

from tests.e2e.proxy import ADDON, Mitmdump, mitmdump_bin
from tests.redis_server import eventually

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
if str(SCRIPTS) not in sys.path:
    sys.path.append(str(SCRIPTS))

import simulate_session as ss  # noqa: E402
from tool_output_corpus import github_runs, pytest_log  # noqa: E402

LOG = pytest_log(passes=700, failures=2).text
RUNS = github_runs(n=200, errors=2).text
SALT = hashlib.sha256(b"headroom-e2e-redis-salt").digest()
SECRET = "redis-e2e-Zq9-secret"
CCR = "headroom.test:8080"  # one marker host for every instance (a load balancer's address)


def proxy(upstream_url: str, redis_url: str | None, **options) -> Mitmdump:
    opts = {"headroom_ccr_host": CCR, **options}
    if redis_url is not None:
        opts["headroom_redis"] = redis_url
    return Mitmdump(mode=f"reverse:{upstream_url}", options=opts)


def seed_salt(url: str) -> None:
    redis.Redis.from_url(url).set("headroom:salt", SALT)


def claude_body(outputs: list[str], model: str = "claude-x", call: str = "toolu") -> bytes:
    msgs = [{"role": "user", "content": "make the tests pass"}]
    for i, out in enumerate(outputs):
        msgs.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"{call}_{i}", "name": "Bash",
             "input": {"command": "pytest"}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"{call}_{i}", "content": out}]})
    return json.dumps({"model": model, "max_tokens": 8, "messages": msgs}).encode()


HEADERS = [("content-type", "application/json"), ("x-api-key", "sk-ant-api03-e2e-redis"),
           ("anthropic-version", "2023-06-01"), ("X-Claude-Code-Session-Id", "redis-e2e")]


def post(client: httpx.Client, p: Mitmdump, body: bytes, headers=HEADERS, path="/v1/messages"
         ) -> httpx.Response:
    return client.post(p.url + path, content=body, headers=headers)


def assert_no_credentials(url: str, secrets: list[str]) -> int:
    """No secret in any Redis key or value (store frames' zstd-compressed requests opened)."""
    from headroom_core.store import decode_entry

    raw = redis.Redis.from_url(url)
    keys = list(raw.scan_iter(count=1000))
    for k in keys:
        values = raw.lrange(k, 0, -1) if raw.type(k) == b"list" else [raw.get(k)]
        if b":store:" in k:
            e = decode_entry(values[0])
            values.append(json.dumps([e.request, e.meta, repr(e.headers)]).encode())
        for secret in secrets:
            assert secret.encode() not in k and all(secret.encode() not in v for v in values)
    return len(keys)


def degraded_lines(p: Mitmdump) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"headroom_degraded (\{.*?\})\s*$", p.log(), re.M)]


# -- consistency ------------------------------------------------------------------------------


def _session_through(proxies: list[Mitmdump], upstream, session, turns: int) -> list[tuple]:
    """Send the session's turns, turn t through proxies[t % len]; what the upstream received."""
    upstream.clear()
    with httpx.Client(timeout=60) as client:
        for turn in range(1, turns + 1):
            fields, body = ss.build_request(session, turn)
            if turn in (4, 5, 7):  # the client drops a beta token: sticky state puts it back
                fields = [(n, v.replace(",interleaved-thinking-2025-05-14", ""))
                          if n == "anthropic-beta" else (n, v) for n, v in fields]
            p = proxies[turn % len(proxies)]
            r = client.post(p.url + "/v1/messages?beta=true", content=body, headers=fields)
            assert r.status_code == 200, (r.text, p.log()[-2000:])
    got = upstream.requests_to("/v1/messages")
    assert len(got) == turns
    return [(rec.body, rec.header("anthropic-beta")) for rec in got]


def test_a_session_alternating_between_two_instances_forwards_one_instances_bytes(
        upstream, redis_server, tmp_path):
    turns = 9
    session = ss.generate_session(turns, seed=3, scale=0.5)
    # One instance alone, on its own disk state (the default backend).
    single = proxy(upstream.url, None)
    single.headroom_dir.mkdir(parents=True)
    (single.headroom_dir / "salt").write_bytes(SALT)
    with single:
        alone = _session_through([single], upstream, session, turns)
    # Two instances on one Redis, turn by turn.
    redis_server.flush()
    seed_salt(redis_server.url)
    with proxy(upstream.url, redis_server.url) as a, proxy(upstream.url, redis_server.url) as b:
        shared = _session_through([a, b], upstream, session, turns)
        evs = a.events(wait_for=turns // 2, settle=0.2) + b.events(wait_for=turns // 2,
                                                                   settle=0.2)
    actions: dict[str, int] = {}
    for e in evs:
        for k, v in ((e.get("decisions") or {}).get("rewrite") or {}).get("actions", {}).items():
            actions[k] = actions.get(k, 0) + v
    assert actions.get("compressed", 0) >= 2 and actions.get("replayed", 0) >= 2  # it rewrote
    assert all("interleaved-thinking-2025-05-14" in beta for _, beta in shared)
    for t, (one, two) in enumerate(zip(alone, shared, strict=True), start=1):
        assert one == two, f"turn {t} differs"


def test_a_recording_made_through_one_instance_is_served_by_the_other(upstream, redis_url):
    opts = {"headroom_namespace": "ci", "headroom_compress": "off"}
    with proxy(upstream.url, redis_url, headroom_store_mode="record", **opts) as a, \
            proxy(upstream.url, redis_url, headroom_store_mode="replay", **opts) as b, \
            httpx.Client(timeout=30) as client:
        answers = []
        for stream in (False, True):
            body = json.dumps({"model": "claude-x", "max_tokens": 8, "stream": stream,
                               "messages": [{"role": "user", "content": f"q {stream}"}]}).encode()
            recorded = post(client, a, body)
            assert recorded.status_code == 200 and recorded.headers["x-headroom-cache"] == "record"
            answers.append((body, recorded.content))
        a.events(wait_for=2, settle=0.1)  # the writes have landed
        upstream.clear()
        for body, content in answers:
            served = post(client, b, body)
            assert served.headers["x-headroom-cache"] == "hit" and served.content == content
        assert upstream.requests_to("/v1/messages") == []


def test_concurrent_first_rewrites_settle_on_one_winner(upstream, redis_url):
    seed_salt(redis_url)
    # Different marker hosts: each instance alone would forward different bytes.
    with proxy(upstream.url, redis_url, headroom_ccr_host="a.test:1") as a, \
            proxy(upstream.url, redis_url, headroom_ccr_host="b.test:1") as b, \
            httpx.Client(timeout=30) as ca, httpx.Client(timeout=30) as cb:
        rounds = 4
        for n in range(rounds):
            body = claude_body([LOG if n % 2 else RUNS], call=f"toolu_race{n}")
            barrier = threading.Barrier(2)
            results = {}

            def go(name, client, p, body=body, barrier=barrier, results=results):
                barrier.wait()
                hdrs = [*HEADERS, ("x-test-instance", name)]
                results[name] = post(client, p, body, headers=hdrs).status_code

            threads = [threading.Thread(target=go, args=("a", ca, a)),
                       threading.Thread(target=go, args=("b", cb, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == {"a": 200, "b": 200}
        got = upstream.requests_to("/v1/messages")
        assert len(got) == 2 * rounds
        by_round: dict[str, list] = {}
        for rec in got:
            by_round.setdefault(rec.json()["messages"][1]["content"][0]["id"], []).append(rec)
        hosts = set()
        for recs in by_round.values():
            assert len(recs) == 2 and recs[0].body == recs[1].body  # the winner's bytes, twice
            out = recs[0].json()["messages"][2]["content"][0]["content"]
            assert len(out) < min(len(LOG), len(RUNS)) // 2
            hosts.add(re.search(r"http://([^/]+)/ccr/", out).group(1))
        assert hosts <= {"a.test:1", "b.test:1"}
        evs = a.events(wait_for=rounds, settle=0.2) + b.events(wait_for=rounds, settle=0.2)
        compressed = sum(e["decisions"]["rewrite"]["actions"].get("compressed", 0) for e in evs)
        assert compressed == rounds  # exactly one winner per block


# -- faults -----------------------------------------------------------------------------------


def test_redis_killed_mid_run_forwards_the_client_bytes_then_recovers(upstream, redis_proc):
    with proxy(upstream.url, redis_proc.url, headroom_store_mode="cache") as p, \
            httpx.Client(timeout=30) as client:
        first = claude_body([LOG])
        assert post(client, p, first).status_code == 200
        (t1,) = upstream.requests_to("/v1/messages")
        assert len(t1.body) < len(first) // 2  # rewritten while Redis is up
        redis_proc.stop()
        upstream.clear()
        sent = [claude_body([LOG, RUNS]), claude_body([LOG, RUNS, LOG[:5000]]), first]
        forwarded = []
        for _ in range(3):
            for body in sent:
                r = post(client, p, body)
                assert r.status_code == 200
                # A response waiting for its store write is served from memory; once the failed
                # write is given up, nothing of it stays behind, so the next one is forwarded.
                eventually(lambda: client.get(p.url + "/headroom/health").json()["memory"]
                           ["pending_store_entries"] == 0, timeout=10)
                assert r.headers.get("x-headroom-cache") != "hit"
                forwarded.append(body)
        got = upstream.requests_to("/v1/messages")
        assert [g.body for g in got] == forwarded  # the client's bytes, every time
        health = client.get(p.url + "/headroom/health").json()
        assert health["state"]["redis"].startswith("unavailable")
        lines = degraded_lines(p)
        parts = [d["part"] for d in lines]
        assert {"redis", "store", "ledger"} <= set(parts)
        assert len(parts) == len(set(parts))  # each said once (then at most once a minute)
        assert "ledger unavailable" not in p.log()  # not again per request by the rewriter
        redis_proc.start()  # empty: the ledger and the store start over, without a restart
        eventually(lambda: client.get(p.url + "/headroom/health").json()["state"]["redis"]
                   == "ok", timeout=10)
        upstream.clear()
        fresh = claude_body([RUNS], call="toolu_after")
        eventually(lambda: post(client, p, fresh).headers.get("x-headroom-cache") == "hit",
                   timeout=10)
        recs = upstream.requests_to("/v1/messages")
        assert recs and len(recs[-1].body) < len(fresh) // 2  # rewriting again


def test_redis_down_at_start_passes_through_until_it_answers(upstream, redis_factory):
    server = redis_factory()  # not running yet, and no local copy of the salt
    with proxy(upstream.url, server.url, headroom_store_mode="cache") as p, \
            httpx.Client(timeout=30) as client:
        body = claude_body([LOG])
        r = post(client, p, body)
        assert r.status_code == 200 and r.headers.get("x-headroom-cache") == "miss"
        (got,) = upstream.requests_to("/v1/messages")
        assert got.body == body  # no rewrite before the shared salt is there
        health = client.get(p.url + "/headroom/health").json()
        assert health["state"]["salt"] == "waiting for redis"
        server.start()
        eventually(lambda: client.get(p.url + "/headroom/health").json()["state"]["salt"]
                   == "ok", timeout=10)
        upstream.clear()
        assert post(client, p, body).status_code == 200
        (got,) = upstream.requests_to("/v1/messages")
        assert len(got.body) < len(body) // 2  # rewriting, without a restart
        assert redis.Redis.from_url(server.url).get("headroom:salt")


class ConnectionCounter:
    """A listener that counts the connections it accepts (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_replay_with_redis_down_answers_locally_and_never_connects(redis_proc):
    counter = ConnectionCounter()
    try:
        with proxy(counter.url, redis_proc.url, headroom_store_mode="replay",
                   headroom_namespace="ci") as p, httpx.Client(timeout=30) as client:
            redis_proc.stop()
            r = post(client, p, claude_body(["short"]))
            assert r.status_code == 503 and r.headers["x-headroom-cache"] == "unavailable"
            assert "response store is unavailable" in r.json()["error"]["message"]
            assert r.headers["x-should-retry"] == "true"
            redis_proc.start()
            eventually(lambda: post(client, p, claude_body(["short"])).status_code == 400,
                       timeout=10)  # back: an ordinary replay miss, with its explanation
            r = post(client, p, claude_body(["short"]))
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert "no recorded response" in r.json()["error"]["message"]
        assert counter.count == 0
    finally:
        counter.close()


def test_a_stalled_redis_does_not_stall_other_flows(upstream, redis_proc):
    with proxy(upstream.url, redis_proc.url, headroom_store_mode="cache") as p, \
            httpx.Client(timeout=30) as client, httpx.Client(timeout=30) as other:
        assert post(client, p, claude_body(["warm up"])).status_code == 200
        redis_proc.pause()  # SIGSTOP: connections accepted, nothing answered
        try:
            took = {}

            def api_call():
                t = time.perf_counter()
                post(client, p, claude_body(["during the stall"]))
                took["api"] = time.perf_counter() - t

            worker = threading.Thread(target=api_call)
            worker.start()
            time.sleep(0.05)  # the API request now waits on Redis, in a worker thread
            passthrough = []
            while worker.is_alive() or len(passthrough) < 3:
                t = time.perf_counter()
                assert other.get(p.url + "/v1/models").status_code == 200
                passthrough.append(time.perf_counter() - t)
            worker.join()
            assert took["api"] >= 0.2  # it did wait for the socket timeout
            assert max(passthrough) < 0.15, passthrough
            # with the breaker open, API requests fail fast instead of waiting again
            t = time.perf_counter()
            assert post(client, p, claude_body(["after"])).status_code == 200
            assert time.perf_counter() - t < 0.15
        finally:
            redis_proc.resume()


# -- the password -----------------------------------------------------------------------------


def test_the_password_appears_in_no_output(upstream, tmp_path, redis_factory):
    server = redis_factory(password=SECRET).start()
    bare = f"redis://127.0.0.1:{server.port}/0"
    with_pw = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    pwfile = tmp_path / "pw"
    pwfile.write_text(SECRET + "\n")
    pwfile.chmod(0o600)
    seen = []
    try:
        variants = [
            proxy(upstream.url, bare, headroom_store_mode="cache"),
            proxy(upstream.url, bare, headroom_store_mode="cache",
                  headroom_redis_password_file=str(pwfile)),
            proxy(upstream.url, with_pw, headroom_store_mode="cache"),
        ]
        variants[0].env = {"HEADROOM_REDIS_PASSWORD": SECRET}
        with httpx.Client(timeout=30) as client:
            for p in variants:
                with p:
                    body = claude_body([LOG], call=f"toolu_{p.port}")
                    assert post(client, p, body).headers["x-headroom-cache"] == "miss"
                    p.events(wait_for=1, settle=0.1)
                    assert post(client, p, body).headers["x-headroom-cache"] == "hit"
                    health = client.get(p.url + "/headroom/health")
                    assert health.json()["backend"].startswith("redis redis://")
                    seen.append(health.text)
                    assert assert_no_credentials(with_pw, [SECRET, "sk-ant", "e2e-redis"]) > 5
                    server.stop()  # degradation lines name the URL: redacted
                    post(client, p, claude_body(["x"]))
                    seen.append(client.get(p.url + "/headroom/health").text)
                    server.start()
                seen += [p.log(), p.events_path.read_text()]
            assert "carries a password" in variants[2].log()
        # mitmproxy's own option listing, with the URL set
        out = subprocess.run([mitmdump_bin(), "-s", str(ADDON), "--set",
                              f"headroom_redis={with_pw}", "--options"],
                             capture_output=True, text=True, timeout=60)
        assert "headroom_redis" in out.stdout
        seen += [out.stdout, out.stderr]
        # a bad URL at startup: one error line, redacted, and mitmdump exits
        bad = Mitmdump(mode=f"reverse:{upstream.url}",
                       options={"headroom_redis": f"redis://:{SECRET}@127.0.0.1:notaport/0"})
        out = subprocess.run(bad.args(), capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "headroom_redis: invalid value 'redis://:***@127.0.0.1:notaport/0'" in out.stdout
        seen += [out.stdout, out.stderr]
        assert all(SECRET not in s for s in seen)
        # the degradation lines name the URL, its password as *** (or none)
        assert any(re.search(r"headroom_degraded .*redis://(:\*\*\*@)?127\.0\.0\.1", s)
                   for s in seen)
    finally:
        server.close()
