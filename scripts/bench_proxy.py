"""Benchmark plain `mitmdump` against `mitmdump -s addons/headroom.py`, side by side, on loopback.

    .venv/bin/python scripts/bench_proxy.py             # full run (a few minutes)
    .venv/bin/python scripts/bench_proxy.py --quick     # smoke run (well under a minute)
    .venv/bin/python scripts/bench_proxy.py --markdown  # also print Markdown tables for the README

Every figure is measured in the run; nothing is hard-coded. The setup:

- one fake upstream (`tests.e2e.fake_upstream.FakeUpstream`), run in a child process of this
  script so that it does not share the load generator's GIL;
- plain `mitmdump` and `mitmdump -s addons/headroom.py` (and, for the streaming part, plain
  `mitmdump --set stream_large_bodies=1`, which streams like Headroom does), each started with
  `tests.e2e.proxy.Mitmdump` in reverse mode in front of that same upstream, all at once;
- a load generator in this process: raw sockets, HTTP/1.1 keep-alive, one thread per connection,
  request bytes prebuilt, so a request costs the client one `sendall` and a few `recv`s.

Part 1, passthrough: Claude-Code-shaped `POST /v1/messages?beta=true` (`stream: false`, ~50 KB)
with Claude Code's headers, each connection playing one conversation turn by turn (`--stages`
turns, then a new session id; the history grows by one tool round trip per turn and the newest
tool outputs are small, as in a session's steady state; `--outputs mixed` makes them 1-3 KB).
(a) `--concurrency` keep-alive connections for `--requests` requests: req/s and per-request
latency (first byte sent -> last response byte received); (b) one request at a time
(`--serial-requests`): latency without queueing; (c) one at a time, a turn whose newest tool
output is a large test log that Headroom compresses (`--rewrite-requests`, each log new): the
rewrite's own cost. Direct-to-upstream is measured the same way, so the "+ms" columns are what
each proxy adds on top of the fake upstream.

Reference addons in part 1: `scripts/null_addon.py` (Headroom's four per-request hooks, empty),
`scripts/freeze_addon.py` (the startup heap frozen, as Headroom does) and, with `--budget-us N`,
`scripts/budget_addon.py` (the four hooks, one spending N µs of CPU per request): the N whose
ratio matches a target is the time an addon may spend per request to meet it.

Part 2, streaming: the fake upstream's `events:N` SSE scenario (`--stream-events`), one stream at a
time on a primed keep-alive connection, once per `--stream-batch` (events per upstream write:
1 = a small chunk per event, 110 = ~16 KiB chunks): first-event latency (request start -> first
SSE event's bytes at the client), end-to-end throughput (decoded body bytes / total time) and
proxy CPU per chunk. Behind a long stream's first event the upstream floods the machine's two
cores, which stalls the first chunk by 0-3.5 ms at random (docs/decisions.md); so the first event
is also timed on `--short-streams` short streams (SHORT_EVENTS events) per target per run, the
targets taking turns stream by stream: their medians stay within ~0.4 ms between runs.

Part 3, memory (`--memory-requests` across `--memory-sessions` conversations): the resident size
of each proxy before and after, and what Headroom holds (from /headroom/health).

Targets run in alternating order in every one of `--runs` rounds (ABC, CBA, ...), after a warm-up
of each, so background noise lands on all of them. CPU time of each process (from /proc) and the
machine's total busy time are recorded per phase, which shows whether the load generator or other
work on the machine got in the way.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests" / "data" / "tool_outputs"))

from tests.e2e.fake_upstream import FakeUpstream  # noqa: E402
from tests.e2e.proxy import Mitmdump, mitmdump_bin  # noqa: E402

from headroom_core import options as hoptions  # noqa: E402


def headroom_proxy(mode: str, options: dict | None = None, **kw) -> Mitmdump:
    """mitmdump with Headroom as users run it. The test harness (`tests.e2e.proxy.Mitmdump`)
    flushes Headroom's background work every 20 ms so that tests see event lines at once; a
    benchmark runs the interval from the options table (12 times fewer, bigger batches)."""
    flush = hoptions.BY_NAME["headroom_flush_interval"].default
    return Mitmdump(mode=mode, headroom=True,
                    options={"headroom_flush_interval": flush, **(options or {})}, **kw)


PATH = "/v1/messages?beta=true"
MODEL = "claude-sonnet-4-5-20250929"
CC_VERSION = "2.1.92"
SEQ_MARK = b"@SEQ@"  # replaced per request by 5 hex digits (the billing line's `cch=`)
RECV = 1 << 18
TIMEOUT = 120.0

QUICK = dict(requests=300, serial_requests=40, runs=2, stream_events=5000, stream_reps=1,
             warmup=40, rewrite_requests=10, memory_requests=0, short_streams=10)
FULL = dict(requests=2000, serial_requests=200, runs=5, stream_events=60000, stream_reps=2,
            warmup=200, rewrite_requests=40, memory_requests=10000, short_streams=40)
SHORT_EVENTS = 100  # text deltas of a short stream (~15 KB): the first event without a flood


# -- a Claude-Code-shaped request ---------------------------------------------------------------

_WORDS = (
    "the a to of and in is for with this that file test config when use you should not must "
    "always never tool call result user code function module import return value error warning "
    "request response header token cache build passed failed path directory command output "
    "instead before after only if each run check make sure read edit write search pattern line "
    "change diff commit branch repository project task plan step todo context prompt agent "
    "session model message content block string number boolean array object schema parameter"
).split()


class Text:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(n))

    def prose(self, chars: int) -> str:
        out, total = [], 0
        while total < chars:
            s = self.words(self.rng.randint(8, 22)).capitalize() + "."
            out.append(s)
            total += len(s) + 1
        return " ".join(out)

    def ident(self, n: int = 22) -> str:
        return "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789")
                       for _ in range(n))


def _schema(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}


def _s(desc: str, **kw) -> dict:
    return {"type": "string", "description": desc, **kw}


def claude_code_tools(t: Text) -> list[dict]:
    n = {"type": "number"}
    b = {"type": "boolean"}
    specs = [
        ("Task", {"description": _s("A short (3-5 word) description of the task"),
                  "prompt": _s("The task for the agent to perform"),
                  "subagent_type": _s("The type of specialized agent to use for this task")},
         ["description", "prompt", "subagent_type"], 2400),
        ("Bash", {"command": _s("The command to execute"),
                  "timeout": {**n, "description": "Optional timeout in milliseconds (max 600000)"},
                  "description": _s("Clear, concise description of what this command does"),
                  "run_in_background": {**b, "description": "Run this command in the background"}},
         ["command"], 3000),
        ("Glob", {"pattern": _s("The glob pattern to match files against"),
                  "path": _s("The directory to search in. Omit for the current directory.")},
         ["pattern"], 500),
        ("Grep", {"pattern": _s("The regular expression pattern to search for"),
                  "path": _s("File or directory to search in"),
                  "glob": _s("Glob pattern to filter files (e.g. \"*.js\")"),
                  "output_mode": {"type": "string",
                                  "enum": ["content", "files_with_matches", "count"],
                                  "description": "Output mode"},
                  "-B": {**n, "description": "Lines to show before each match"},
                  "-A": {**n, "description": "Lines to show after each match"},
                  "-C": {**n, "description": "Lines to show before and after each match"},
                  "-n": {**b, "description": "Show line numbers in output"},
                  "-i": {**b, "description": "Case insensitive search"},
                  "type": _s("File type to search (rg --type)"),
                  "head_limit": {**n, "description": "Limit output to first N lines/entries"},
                  "multiline": {**b, "description": "Enable multiline mode"}},
         ["pattern"], 1400),
        ("LS", {"path": _s("The absolute path to the directory to list"),
                "ignore": {"type": "array", "items": {"type": "string"},
                           "description": "List of glob patterns to ignore"}},
         ["path"], 300),
        ("ExitPlanMode", {"plan": _s("The plan you came up with, in markdown")}, ["plan"], 900),
        ("Read", {"file_path": _s("The absolute path to the file to read"),
                  "offset": {**n, "description": "The line number to start reading from"},
                  "limit": {**n, "description": "The number of lines to read"}},
         ["file_path"], 1200),
        ("Edit", {"file_path": _s("The absolute path to the file to modify"),
                  "old_string": _s("The text to replace"),
                  "new_string": _s("The text to replace it with"),
                  "replace_all": {**b, "default": False,
                                  "description": "Replace all occurrences of old_string"}},
         ["file_path", "old_string", "new_string"], 1100),
        ("MultiEdit", {"file_path": _s("The absolute path to the file to modify"),
                       "edits": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "additionalProperties": False,
                           "required": ["old_string", "new_string"],
                           "properties": {"old_string": _s("The text to replace"),
                                          "new_string": _s("The text to replace it with"),
                                          "replace_all": {**b, "default": False}}},
                           "description": "Array of edit operations to perform sequentially"}},
         ["file_path", "edits"], 1500),
        ("Write", {"file_path": _s("The absolute path to the file to write"),
                   "content": _s("The content to write to the file")},
         ["file_path", "content"], 600),
        ("NotebookEdit", {"notebook_path": _s("The absolute path to the Jupyter notebook"),
                          "cell_id": _s("The ID of the cell to edit"),
                          "new_source": _s("The new source for the cell"),
                          "cell_type": {"type": "string", "enum": ["code", "markdown"]},
                          "edit_mode": {"type": "string", "enum": ["replace", "insert", "delete"]}},
         ["notebook_path", "new_source"], 500),
        ("WebFetch", {"url": _s("The URL to fetch content from", format="uri"),
                      "prompt": _s("The prompt to run on the fetched content")},
         ["url", "prompt"], 1000),
        ("TodoWrite", {"todos": {"type": "array", "description": "The updated todo list",
                                 "items": {"type": "object", "additionalProperties": False,
                                           "required": ["content", "status", "activeForm"],
                                           "properties": {
                                               "content": {"type": "string", "minLength": 1},
                                               "status": {"type": "string", "enum": [
                                                   "pending", "in_progress", "completed"]},
                                               "activeForm": {"type": "string",
                                                              "minLength": 1}}}}},
         ["todos"], 2600),
        ("WebSearch", {"query": _s("The search query to use", minLength=2),
                       "allowed_domains": {"type": "array", "items": {"type": "string"}},
                       "blocked_domains": {"type": "array", "items": {"type": "string"}}},
         ["query"], 700),
        ("BashOutput", {"bash_id": _s("The ID of the background shell"),
                        "filter": _s("Optional regular expression to filter the output lines")},
         ["bash_id"], 400),
    ]
    return [{"name": name, "description": t.prose(chars), "input_schema": _schema(props, req)}
            for name, props, req, chars in specs]


def _tool_output(t: Text, tool: str) -> tuple[dict, str]:
    if tool == "Read":
        path = f"/home/dev/project/src/pkg/{t.words(1)}_{t.rng.randint(1, 99)}.py"
        lines = [f"{i:>6}\u2192{'    ' * t.rng.randint(0, 3)}{t.words(t.rng.randint(2, 9))}"
                 for i in range(1, t.rng.randint(40, 70))]
        return {"file_path": path}, "\n".join(lines)
    if tool == "Bash":
        lines = [f"tests/test_{t.words(1)}.py::test_{t.words(1)}_{i} "
                 f"{t.rng.choice(['PASSED', 'PASSED', 'PASSED', 'FAILED'])}"
                 for i in range(t.rng.randint(20, 40))]
        return ({"command": "python -m pytest -x -q tests/", "description": "Run the tests"},
                "\n".join(lines) + f"\n{t.rng.randint(30, 90)} passed in 3.2s")
    if tool == "Grep":
        lines = [f"src/pkg/{t.words(1)}.py:{t.rng.randint(1, 900)}:    {t.words(6)}"
                 for _ in range(t.rng.randint(15, 35))]
        return {"pattern": t.words(1), "output_mode": "content", "-n": True}, "\n".join(lines)
    lines = [f"/home/dev/project/src/pkg/{t.words(1)}/{t.words(1)}.py"
             for _ in range(t.rng.randint(15, 40))]
    return {"pattern": "**/*.py"}, "\n".join(lines)


OUTPUT_CHARS = {"small": 300, "mixed": None}  # newest tool outputs: steady state, or 1-3 KB
_output_limit: int | None = 300


def claude_code_body(session: str, turns: int, stream: bool, *, big: str | None = None) -> dict:
    """Claude Code's request for one session after `turns` tool round trips. The same session and
    turn count always give the same body; the billing line carries `SEQ_MARK`."""
    t = Text(1234)
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: "
                                 f"cc_version={CC_VERSION}.a1b; cc_entrypoint=cli; "
                                 f"cch={SEQ_MARK.decode()};"},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": t.prose(11000) + "\n\n<env>\nWorking directory: "
                                 "/home/dev/project\nIs directory a git repo: Yes\nPlatform: "
                                 "linux\nToday's date: 2025-11-20\n</env>",
         "cache_control": {"type": "ephemeral"}},
    ]
    tools = claude_code_tools(t)
    messages: list[dict] = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can "
                                 "use the following context:\n# claudeMd\n" + t.prose(1800)
                                 + "\n</system-reminder>"},
        {"type": "text", "text": "The test suite fails on tests/test_config.py, find out why "
                                 "and fix it. Keep the change small."}]}]
    for i in range(turns):
        tool = ("Grep", "Read", "Bash", "Glob", "Read")[i % 5]
        args, output = _tool_output(t, tool)
        if _output_limit is not None:
            output = output[:_output_limit]
        if big is not None and i == turns - 1:
            tool, args, output = "Bash", {"command": "python -m pytest -v"}, big
        tid = "toolu_01" + t.ident()
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": t.prose(160)},
            {"type": "tool_use", "id": tid, "name": tool, "input": args}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tid, "content": output}]})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    user_id = json.dumps({"device_id": "5f2c" * 16, "account_uuid": "",
                          "session_id": session}, separators=(",", ":"))
    return {"model": MODEL, "messages": messages, "temperature": 1, "system": system,
            "tools": tools, "metadata": {"user_id": user_id}, "max_tokens": 32000,
            "stream": stream}


def _dumps(doc: dict) -> bytes:
    # Claude Code is Node: JSON.stringify, compact, non-ASCII as UTF-8.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Template:
    pre: bytes
    post: bytes

    @property
    def size(self) -> int:
        return len(self.pre) + 5 + len(self.post)

    def body(self, seq: int) -> bytes:
        return self.pre + b"%05x" % (seq & 0xFFFFF) + self.post


def _template(doc: dict) -> Template:
    raw = _dumps(doc)
    pre, mark, post = raw.partition(SEQ_MARK)
    assert mark and SEQ_MARK not in post
    return Template(pre, post)


def _head(host: str, session: str, length: int, *, stream: bool, scenario: str | None) -> bytes:
    fields = [
        ("host", host), ("connection", "keep-alive"), ("accept", "application/json"),
        ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20,"
                           "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("anthropic-version", "2023-06-01"), ("content-type", "application/json"),
        ("user-agent", f"claude-cli/{CC_VERSION} (external, cli)"),
        ("x-api-key", "sk-ant-api03-bench-" + "x" * 80), ("x-app", "cli"),
        ("x-claude-code-session-id", session), ("x-stainless-arch", "x64"),
    ]
    if stream:
        fields.append(("x-stainless-helper-method", "stream"))
    fields += [
        ("x-stainless-lang", "js"), ("x-stainless-os", "Linux"),
        ("x-stainless-package-version", "0.60.0"), ("x-stainless-retry-count", "0"),
        ("x-stainless-runtime", "node"), ("x-stainless-runtime-version", "v22.19.0"),
        ("x-stainless-timeout", "600"), ("accept-language", "*"), ("sec-fetch-mode", "cors"),
        ("accept-encoding", "gzip, deflate"),
    ]
    if scenario:
        fields.append(("x-test-scenario", scenario))
    fields.append(("content-length", str(length)))
    return (f"POST {PATH} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
            + "\r\n").encode("latin-1")


@dataclass
class Workload:
    """Prebuilt request templates: `sessions` Claude Code sessions (one per connection), each at
    `stages` successive turn counts around the target size (the history grows)."""

    sessions: list[str]
    templates: list[list[Template]]  # [session][stage], stream: false
    stream_templates: list[Template]  # session 0, stream: true
    turns: list[int]
    tools: int
    system_blocks: int

    rewrite_templates: list[Template] = field(default_factory=list)  # new big log each

    @classmethod
    def build(cls, target_kb: float, sessions: int, stages: int = 16,
              rewrites: int = 0) -> "Workload":
        ids = [str(uuid.UUID(int=random.Random(s).getrandbits(128), version=4))
               for s in range(max(1, sessions))]
        target = target_kb * 1000
        sizes: dict[int, int] = {}

        def size(turns: int) -> int:
            if turns not in sizes:
                sizes[turns] = _template(claude_code_body(ids[0], turns, False)).size
            return sizes[turns]

        first = 0
        while size(first + stages // 2) < target and first < 500:
            first += 1
        turns = list(range(first, first + stages))
        templates = [[_template(claude_code_body(sid, n, False)) for n in turns] for sid in ids]
        stream_templates = [_template(claude_code_body(ids[0], n, True)) for n in turns]
        doc = claude_code_body(ids[0], turns[0], False)
        rewrite = []
        if rewrites:
            from tool_output_corpus import pytest_log  # tests/data/tool_outputs
            for i in range(rewrites):
                log = pytest_log(passes=500, failures=2, seed=1000 + i).text
                rewrite.append(_template(claude_code_body(f"rewrite-{i}", turns[0] + 1, False,
                                                          big=log)))
        return cls(ids, templates, stream_templates, turns, len(doc["tools"]),
                   len(doc["system"]), rewrite)

    def sizes(self) -> list[int]:
        return [tp.size for tp in self.templates[0]]

    def messages(self) -> tuple[int, int]:
        return 1 + 2 * self.turns[0], 1 + 2 * self.turns[-1]


# -- HTTP/1.1 over raw sockets --------------------------------------------------------------------

@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes
    t_first: float | None  # perf_counter when the first body piece was complete at the client
    t_end: float


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock: socket.socket) -> Resp:
    """Read one HTTP/1.1 response (Content-Length, chunked or close-delimited)."""
    buf = bytearray()
    now = time.perf_counter
    while (k := buf.find(b"\r\n\r\n")) < 0:
        d = sock.recv(RECV)
        if not d:
            raise ConnectionError("connection closed before the response head")
        buf += d
    t_recv = now()
    lines = bytes(buf[:k]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    pos = k + 4
    t_first = None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pieces: list[bytes] = []
        while True:
            e = buf.find(b"\r\n", pos)
            if e >= 0:
                size = int(bytes(buf[pos:e]).split(b";")[0], 16)
                if size == 0:
                    if buf.find(b"\r\n\r\n", e) >= 0:
                        return Resp(status, headers, b"".join(pieces), t_first, now())
                elif len(buf) >= e + 2 + size + 2:
                    pieces.append(bytes(buf[e + 2:e + 2 + size]))
                    if t_first is None:
                        t_first = t_recv
                    pos = e + 2 + size + 2
                    if pos > 1 << 20:  # keep the buffer small
                        del buf[:pos]
                        pos = 0
                    continue
            d = sock.recv(RECV)
            if not d:
                raise ConnectionError("connection closed inside a chunked body")
            t_recv = now()
            buf += d
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n == 0:
            return Resp(status, headers, b"", None, t_recv)
        if len(buf) > pos:
            t_first = t_recv
        while len(buf) - pos < n:
            d = sock.recv(RECV)
            if not d:
                raise ConnectionError("connection closed inside the body")
            t_recv = now()
            t_first = t_first or t_recv
            buf += d
        return Resp(status, headers, bytes(buf[pos:pos + n]), t_first, now())
    while d := sock.recv(RECV):
        t_recv = now()
        t_first = t_first or t_recv
        buf += d
    return Resp(status, headers, bytes(buf[pos:]), t_first, now())


def exchange(sock: socket.socket, data: bytes) -> tuple[float, Resp]:
    t0 = time.perf_counter()
    sock.sendall(data)
    return t0, read_response(sock)


def check_json(resp: Resp) -> str | None:
    if resp.status != 200:
        return f"HTTP {resp.status}: {resp.body[:120]!r}"
    if b'"msg_fake"' not in resp.body:
        return f"unexpected body: {resp.body[:120]!r}"
    return None


# -- CPU accounting -------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) used so far by process `pid`; this process if None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
        return (int(rest[11]) + int(rest[12])) / TICK
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_mb(pid: int | None) -> float:
    """Resident set size of a process in MB (VmRSS from /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / TICK
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class Cpu:
    """CPU seconds used during one phase."""

    client: float = 0.0
    upstream: float = 0.0
    proxy: float = 0.0
    machine: float = 0.0
    wall: float = 0.0

    def __iadd__(self, o: "Cpu") -> "Cpu":
        for k in ("client", "upstream", "proxy", "machine", "wall"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        return self

    @property
    def other(self) -> float:
        return max(0.0, self.machine - self.client - self.upstream - self.proxy)


class CpuMeter:
    def __init__(self, upstream_pid: int, proxy_pid: int | None) -> None:
        self.pids = (upstream_pid, proxy_pid)

    def __enter__(self) -> "CpuMeter":
        self.t0 = time.perf_counter()
        self.c0 = self._snap()
        return self

    def _snap(self) -> tuple[float, float, float, float]:
        up, px = self.pids
        return proc_cpu(None), proc_cpu(up), proc_cpu(px) if px else 0.0, machine_busy()

    def __exit__(self, *exc) -> None:
        c1 = self._snap()
        d = [b - a for a, b in zip(self.c0, c1)]
        self.cpu = Cpu(*d, wall=time.perf_counter() - self.t0)


# -- targets --------------------------------------------------------------------------------------

@dataclass
class Target:
    key: str
    label: str
    port: int
    pid: int | None = None
    proxy: Mitmdump | None = None
    # results
    rounds_rps: list[float] = field(default_factory=list)
    lat_load: list[float] = field(default_factory=list)
    lat_serial: list[float] = field(default_factory=list)
    lat_rewrite: list[float] = field(default_factory=list)
    n_load: int = 0
    n_serial: int = 0
    cpu_load: Cpu = field(default_factory=Cpu)
    cpu_serial: Cpu = field(default_factory=Cpu)
    first_event: list[float] = field(default_factory=list)
    first_short: list[float] = field(default_factory=list)  # first event of short streams
    stream_mbps: list[float] = field(default_factory=list)
    stream_bytes: int = 0
    stream_chunks: int = 0  # upstream writes measured (events / batch per stream)
    cpu_stream: Cpu = field(default_factory=Cpu)
    errors: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


class Upstream:
    """The fake upstream in a child process (this script with --serve-upstream)."""

    def __enter__(self) -> "Upstream":
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                      "--serve-upstream"],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=str(ROOT))
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake upstream did not start")
        self.port = json.loads(line)["port"]
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def serve_upstream() -> None:
    up = FakeUpstream()
    print(json.dumps({"port": up.port}), flush=True)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(0.25):
        up.clear()  # it records every request; the benchmark does not need them
    up.close()
    from tests.e2e import fake_upstream

    if fake_upstream._CERT:  # the throwaway certificate of its TLS listener
        shutil.rmtree(Path(fake_upstream._CERT[0]).parent, ignore_errors=True)


# -- phases ---------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, work: Workload, upstream: Upstream) -> None:
        self.args = args
        self.work = work
        self.up = upstream
        self.seq = itertools.count()
        self.cycles = itertools.count()  # every conversation played gets a new session id
        self.heads: dict[tuple, bytes] = {}

    def request(self, target: Target, session: int, stage: int, *, stream: bool = False,
                scenario: str | None = None, cycle: int = 0) -> bytes:
        """Turn `stage` of conversation `session`; each `cycle` is a new conversation (a new
        session id header) replaying the same turns."""
        tp = (self.work.stream_templates[stage] if stream
              else self.work.templates[session][stage])
        key = (target.key, session, stage, stream, scenario)
        if key not in self.heads:
            self.heads[key] = _head(target.host, "@SID@", tp.size, stream=stream,
                                    scenario=scenario)
        sid = f"{self.work.sessions[session]}-{cycle}".encode()
        return self.heads[key].replace(b"@SID@", sid) + tp.body(next(self.seq))

    def rewrite_request(self, target: Target, i: int) -> bytes:
        """A turn whose newest tool output is a test log never seen before (compressed)."""
        tp = self.work.rewrite_templates[i % len(self.work.rewrite_templates)]
        sid = f"rewrite-{next(self.cycles)}"
        return _head(target.host, sid, tp.size, stream=False, scenario=None) + tp.body(
            next(self.seq))

    def small_request(self, target: Target) -> bytes:
        body = _dumps({"model": MODEL, "max_tokens": 1, "stream": False,
                       "messages": [{"role": "user", "content": "ping"}]})
        return _head(target.host, self.work.sessions[0], len(body), stream=False,
                     scenario=None) + body

    def load(self, target: Target, n: int, concurrency: int, *, record: str | None,
             rewrite: bool = False) -> None:
        """`n` requests over `concurrency` keep-alive connections, one thread each."""
        stages = len(self.work.turns)
        sessions = len(self.work.sessions)
        socks = []
        try:
            for c in range(concurrency):  # open and prime, unmeasured (lazy upstream connect)
                s = connect(target.port)
                socks.append(s)
                err = check_json(exchange(s, self.small_request(target))[1])
                if err:
                    raise RuntimeError(f"{target.label}: priming request failed: {err}")
            counter = itertools.count()
            lat: list[list[float]] = [[] for _ in socks]
            errors: list[str] = []
            start = threading.Barrier(concurrency + 1)

            def worker(c: int) -> None:
                s = socks[c]
                sess = c % sessions
                turn = 0  # this connection plays its conversation turn by turn
                cycle = next(self.cycles)
                start.wait()
                while next(counter) < n:
                    if rewrite:
                        data = self.rewrite_request(target, turn)
                    else:
                        data = self.request(target, sess, turn, cycle=cycle)
                    turn += 1
                    if turn == stages:
                        turn, cycle = 0, next(self.cycles)
                    try:
                        t0, resp = exchange(s, data)
                        lat[c].append(resp.t_end - t0)
                        err = check_json(resp)
                        if resp.headers.get("connection", "").lower() == "close":
                            s.close()
                            s = socks[c] = connect(target.port)
                    except Exception as e:  # count it, reconnect, go on
                        err = f"{type(e).__name__}: {e}"
                        s.close()
                        try:
                            s = socks[c] = connect(target.port)
                        except OSError as e2:
                            errors.extend([err, f"reconnect failed: {e2}"])
                            return
                    if err:
                        errors.append(err)

            threads = [threading.Thread(target=worker, args=(c,), daemon=True)
                       for c in range(concurrency)]
            for t in threads:
                t.start()
            with CpuMeter(self.up.pid, target.pid) as m:
                start.wait()
                for t in threads:
                    t.join()
        finally:
            for s in socks:
                s.close()
        if not record:
            target.errors += errors
            return
        all_lat = [x for part in lat for x in part]
        target.errors += errors
        if record == "rewrite":
            target.lat_rewrite += all_lat
        elif record == "serial":
            target.lat_serial += all_lat
            target.n_serial += n
            target.cpu_serial += m.cpu
        else:
            target.lat_load += all_lat
            target.n_load += n
            target.rounds_rps.append(n / m.cpu.wall)
            target.cpu_load += m.cpu

    def memory(self, targets: list[Target], n: int, sessions: int) -> list[list[str]]:
        """`n` requests across `sessions` conversations (turn by turn, concurrency 4) per
        target; resident set size before and after, and what Headroom says it holds."""
        rows = []
        for t in targets:
            before = rss_mb(t.pid)
            per = max(1, n // sessions)
            jobs = itertools.count()

            def worker() -> None:
                sock = connect(t.port)
                try:
                    while (k := next(jobs)) < sessions:
                        cycle = 10_000_000 + k
                        for turn in range(min(per, len(self.work.turns))):
                            exchange(sock, self.request(t, 0, turn, cycle=cycle))
                finally:
                    sock.close()

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            holds = "-"
            if t.key == "headroom":
                try:
                    sock = connect(t.port)
                    sock.sendall(b"GET /headroom/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    health = json.loads(read_response(sock).body)
                    sock.close()
                    holds = ", ".join(f"{k} {v}" for k, v in health.get("memory", {}).items())
                except (OSError, ValueError) as e:
                    holds = f"(health unavailable: {type(e).__name__})"
            rows.append([t.label, f(before, 1), f(rss_mb(t.pid), 1),
                         f(rss_mb(t.pid) - before, 1, sign=True), holds])
        return rows

    def _stream(self, target: Target, i: int, n: int, batch: int):
        """One SSE stream of `n` text deltas on a primed keep-alive connection: (request start,
        response, CPU meter), or None after noting what was wrong with it."""
        s = connect(target.port)
        try:
            err = check_json(exchange(s, self.small_request(target))[1])
            if err:
                raise RuntimeError(f"{target.label}: priming request failed: {err}")
            data = self.request(target, 0, i % len(self.work.turns), stream=True,
                                scenario=f"events:{n},batch:{batch}")
            with CpuMeter(self.up.pid, target.pid) as m:
                t0, resp = exchange(s, data)
        finally:
            s.close()
        err = check_stream(resp, n)
        if err:
            target.errors.append(f"stream: {err}")
            return None
        return t0, resp, m

    def short_stream(self, target: Target, i: int, *, record: bool) -> None:
        """A short stream, for its first event only."""
        got = self._stream(target, i, SHORT_EVENTS, 1)
        if got is not None and record:
            target.first_short.append(got[1].t_first - got[0])

    def stream(self, target: Target, i: int, *, record: bool, batch: int = 1) -> None:
        """One long SSE stream on a primed keep-alive connection."""
        n = self.args.stream_events
        got = self._stream(target, i, n, batch)
        if got is None:
            return
        t0, resp, m = got
        if record:
            target.first_event.append(resp.t_first - t0)
            target.stream_mbps.append(len(resp.body) / (resp.t_end - t0) / 1e6)
            target.stream_bytes = len(resp.body)
            target.stream_chunks += -(-n // batch)
            target.cpu_stream += m.cpu


def check_stream(resp: Resp, n: int) -> str | None:
    if resp.status != 200:
        return f"HTTP {resp.status}: {resp.body[:120]!r}"
    if resp.t_first is None:
        return "no body"
    b = resp.body
    if not b.startswith(b"event: message_start"):
        return f"does not start with message_start: {b[:60]!r}"
    if not b.rstrip().endswith(b'{"type":"message_stop"}'):
        return f"does not end with message_stop: {b[-60:]!r}"
    deltas = b.count(b"event: content_block_delta\n")
    if deltas != n:
        return f"{deltas} text deltas, expected {n}"
    return None


def alternate(items: list, r: int) -> list:
    return items if r % 2 == 0 else items[::-1]


# -- statistics and output ------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return float("nan")
    v = sorted(values)
    x = (len(v) - 1) * q / 100
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def f(x: float, nd: int = 2, sign: bool = False) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def ratio(a: float, b: float) -> str:
    if not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in rows])


def ms(x: float) -> float:
    return x * 1000


def rps_cell(t: Target) -> str:
    if not t.rounds_rps:
        return "-"
    med = statistics.median(t.rounds_rps)
    return f"{med:.0f} ({min(t.rounds_rps):.0f}-{max(t.rounds_rps):.0f})"


def load_tables(targets: list[Target], direct: Target, md: bool) -> list[str]:
    d50, d95 = pct(direct.lat_load, 50), pct(direct.lat_load, 95)
    rows = []
    for t in targets:
        p50, p95 = pct(t.lat_load, 50), pct(t.lat_load, 95)
        proxy = t is not direct
        rows.append([t.label, rps_cell(t), f(ms(p50)), f(ms(p95)),
                     f(ms(p50 - d50), sign=True) if proxy else "-",
                     f(ms(p95 - d95), sign=True) if proxy else "-",
                     f(ms(t.cpu_load.proxy / t.n_load), 3) if proxy and t.n_load else "-"])
    a = table(["target", "req/s median (min-max)", "p50 ms", "p95 ms", "+p50 ms", "+p95 ms",
               "proxy CPU ms/req"], rows, md)
    d50, d95 = pct(direct.lat_serial, 50), pct(direct.lat_serial, 95)
    rows = []
    for t in targets:
        p50, p95 = pct(t.lat_serial, 50), pct(t.lat_serial, 95)
        proxy = t is not direct
        rows.append([t.label, f(ms(p50)), f(ms(p95)),
                     f(ms(p50 - d50), sign=True) if proxy else "-",
                     f(ms(p95 - d95), sign=True) if proxy else "-",
                     f(ms(t.cpu_serial.proxy / t.n_serial), 3) if proxy and t.n_serial else "-"])
    b = table(["target", "p50 ms", "p95 ms", "+p50 ms", "+p95 ms", "proxy CPU ms/req"], rows, md)
    return [a, b]


def stream_table(targets: list[Target], direct: Target, md: bool) -> str:
    d50, d95 = pct(direct.first_event, 50), pct(direct.first_event, 95)
    rows = []
    for t in targets:
        proxy = t is not direct
        p50, p95 = pct(t.first_event, 50), pct(t.first_event, 95)
        mb = t.stream_bytes * len(t.stream_mbps) / 1e6
        rows.append([t.label, f(ms(p50), 1), f(ms(p95), 1),
                     f(ms(p50 - d50), 1, sign=True) if proxy else "-",
                     f(ms(p95 - d95), 1, sign=True) if proxy else "-",
                     f(statistics.median(t.stream_mbps), 1) if t.stream_mbps else "-",
                     f(min(t.stream_mbps), 1) if t.stream_mbps else "-",
                     f(ms(t.cpu_stream.proxy) / mb, 1) if proxy and mb else "-",
                     f(ms(t.cpu_stream.proxy) * 1000 / t.stream_chunks, 1)
                     if proxy and t.stream_chunks else "-"])
    return table(["target", "first event p50 ms", "p95 ms", "+p50 ms", "+p95 ms",
                  "MB/s median", "MB/s min", "proxy CPU ms/MB", "proxy CPU us/chunk"], rows, md)


def short_table(targets: list[Target], direct: Target, md: bool) -> str:
    d50 = pct(direct.first_short, 50)
    rows = [[t.label, *(f(ms(pct(t.first_short, q)), 2) for q in (25, 50, 75, 95)),
             f(ms(pct(t.first_short, 50) - d50), 2, sign=True) if t is not direct else "-",
             str(len(t.first_short))] for t in targets]
    return table(["target", "p25", "p50", "p75", "p95", "+p50 vs direct", "streams"], rows, md)


def short_lines(head_pt: Target, head: Target, plain_stream: Target | None,
                read_stream: Target | None) -> list[str]:
    """Headroom's first event on short streams against the streaming references, p50 apart."""
    out = []
    for h, name in ((head_pt, "Headroom compress=off"), (head, "Headroom defaults")):
        parts = [f"{f(ms(pct(h.first_short, 50) - pct(ref.first_short, 50)), 2, sign=True)} ms "
                 f"over {label}" for ref, label in
                 ((plain_stream, "stream_large_bodies=1"), (read_stream, "the reading addon"))
                 if ref is not None and ref.first_short]
        if h.first_short and parts:
            out.append(f"{name}, short streams: first event p50 " + ", ".join(parts))
    return out


def rewrite_table(targets: list[Target], md: bool) -> str:
    base = targets[0]
    rows = []
    for t in targets:
        if not t.lat_rewrite:
            continue
        rows.append([t.label, f(ms(pct(t.lat_rewrite, 50))), f(ms(pct(t.lat_rewrite, 95))),
                     f(ms(pct(t.lat_rewrite, 50) - pct(base.lat_rewrite, 50)), sign=True)])
    return table(["target", "p50 ms", "p95 ms", "+p50 ms vs plain"], rows, md)


def cpu_table(phases: list[tuple[str, list[Target], str]], md: bool) -> str:
    rows = []
    for phase, targets, attr in phases:
        for t in targets:
            c: Cpu = getattr(t, attr)
            if not c.wall:
                continue

            def share(x: float) -> str:
                return f(100 * x / c.wall, 0)

            rows.append([phase, t.label, f(c.wall, 2), share(c.client), share(c.upstream),
                         share(c.proxy) if t.pid else "-", share(c.other),
                         share(c.machine)])
    return table(["phase", "target", "wall s", "client %", "upstream %", "proxy %", "other %",
                  "machine %"], rows, md)


def ratio_lines(plain: Target, head: Target, plain_stream: Target | None,
                do_load: bool, do_stream: bool, head_pt: Target | None = None, *,
                name: str = "Headroom (defaults: API-key traffic, live-zone scan on)",
                base: str = "plain", read_stream: Target | None = None) -> list[str]:
    out = []
    variants = [(head, name)]
    if head_pt is not None:
        variants.insert(0, (head_pt, "Headroom (headroom_compress=off: pure passthrough)"))
    for h, name in variants if do_load else ():
        out.append(
            f"{name} / {base}: req/s "
            f"{ratio(statistics.median(h.rounds_rps), statistics.median(plain.rounds_rps))}, "
            f"p50 {ratio(pct(h.lat_load, 50), pct(plain.lat_load, 50))}, "
            f"p95 {ratio(pct(h.lat_load, 95), pct(plain.lat_load, 95))}, "
            f"proxy CPU/req {ratio(h.cpu_load.proxy / h.n_load, plain.cpu_load.proxy / plain.n_load)}; "
            f"one at a time: p50 {ratio(pct(h.lat_serial, 50), pct(plain.lat_serial, 50))}, "
            f"p95 {ratio(pct(h.lat_serial, 95), pct(plain.lat_serial, 95))}")
    if do_stream and head.stream_mbps and plain.stream_mbps:
        for other, name in ((plain, "plain"), (plain_stream, "plain+stream_large_bodies"),
                            (read_stream, "mitmdump reading the request, streaming the response")):
            if other is None or not other.stream_mbps:
                continue
            out.append(
                f"Headroom / {name}, streaming: first event p50 "
                f"{ratio(pct(head.first_event, 50), pct(other.first_event, 50))}, "
                f"p95 {ratio(pct(head.first_event, 95), pct(other.first_event, 95))}, "
                f"MB/s {ratio(statistics.median(head.stream_mbps), statistics.median(other.stream_mbps))}, "
                f"proxy CPU per chunk {ratio(head.cpu_stream.proxy, other.cpu_stream.proxy)}")
    return out


def machine_info() -> list[str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    from mitmproxy import version as mver

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"Machine:   {os.cpu_count()} CPUs ({affinity} usable by this process)"
        + (f", {model}" if model else "") + f"; {platform.system()} {platform.release()} "
        f"{platform.machine()}; load average at start {load}",
        f"Software:  Python {platform.python_version()} ({sys.executable}); "
        f"mitmproxy {mver.VERSION} ({mitmdump_bin()})",
    ]


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, help="passthrough requests per target per run "
                    f"(default {FULL['requests']}; --quick {QUICK['requests']})")
    ap.add_argument("--concurrency", type=int, default=8,
                    help="keep-alive connections for the throughput phase (default 8)")
    ap.add_argument("--serial-requests", type=int, help="one-at-a-time requests per target per "
                    f"run (default {FULL['serial_requests']}; 0 skips)")
    ap.add_argument("--stream-events", type=int, help="SSE text deltas per stream (default "
                    f"{FULL['stream_events']}, ~{FULL['stream_events'] * 146 / 1e6:.1f} MB; "
                    "0 skips streaming)")
    ap.add_argument("--stream-reps", type=int, help="streams per target per run (default "
                    f"{FULL['stream_reps']})")
    ap.add_argument("--short-streams", type=int, help=f"short streams ({SHORT_EVENTS} events) per "
                    "target per run, for the first event without a flood behind it (default "
                    f"{FULL['short_streams']}; --quick {QUICK['short_streams']}; 0 skips)")
    ap.add_argument("--runs", type=int, help=f"rounds, target order alternating each round "
                    f"(default {FULL['runs']})")
    ap.add_argument("--warmup", type=int, help="passthrough requests per target before measuring "
                    f"(default {FULL['warmup']})")
    ap.add_argument("--body-kb", type=float, default=50.0,
                    help="approximate request body size in KB (default 50)")
    ap.add_argument("--no-plain-streaming", action="store_true",
                    help="skip the `mitmdump --set stream_large_bodies=1` streaming reference")
    ap.add_argument("--skip-passthrough", action="store_true", help="only run the streaming part")
    ap.add_argument("--quick", action="store_true", help="fast smoke run (small counts)")
    ap.add_argument("--budget-us", type=int, default=0, metavar="N",
                    help="also measure mitmdump with an addon spending N µs of CPU per request "
                         "(scripts/budget_addon.py): a ratio target as a time budget")
    ap.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    ap.add_argument("--stream-batch", default="1,110",
                    help="SSE events per upstream write, comma-separated runs (default 1,110: one "
                         "small chunk per event, like a live model stream, and ~16 KiB chunks)")
    ap.add_argument("--stages", type=int, default=16,
                    help="turns each conversation plays before a new session id (default 16)")
    ap.add_argument("--outputs", choices=sorted(OUTPUT_CHARS), default="small",
                    help="newest tool outputs: small (steady state, default) or mixed (1-3 KB)")
    ap.add_argument("--rewrite-requests", type=int, help="one-at-a-time requests whose newest "
                    "tool output is a new large log (default 40; --quick 10; 0 skips)")
    ap.add_argument("--memory-requests", type=int, help="requests of the memory phase (default "
                    "10000; --quick 0 skips)")
    ap.add_argument("--memory-sessions", type=int, default=1000,
                    help="conversations of the memory phase (default 1000)")
    ap.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.concurrency < 1 or args.runs < 1 or args.requests < 1:
        ap.error("--concurrency, --runs and --requests must be at least 1")
    try:
        args.stream_batches = [int(b) for b in str(args.stream_batch).split(",") if b.strip()]
    except ValueError:
        ap.error("--stream-batch takes whole numbers, e.g. 1,110")
    if not args.stream_batches or min(args.stream_batches) < 1 or args.stages < 2:
        ap.error("--stream-batch needs numbers >= 1 and --stages at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        serve_upstream()
        return 0
    started = time.time()
    from mitmproxy import version as mver

    mitm_version = mver.VERSION
    command = " ".join(shlex.quote(a) for a in getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    global _output_limit
    _output_limit = OUTPUT_CHARS[args.outputs]
    work = Workload.build(args.body_kb, args.concurrency, args.stages, args.rewrite_requests)
    do_load = not args.skip_passthrough
    do_stream = args.stream_events > 0 and args.stream_reps > 0
    do_short = do_stream and args.short_streams > 0

    print("Headroom proxy benchmark:", datetime.datetime.now().isoformat(timespec="seconds"))
    print(f"Command:   {command}")
    for line in machine_info():
        print(line)
    print(f"Note:      the load generator (this process) and the fake upstream (a child process) "
          f"share these {os.cpu_count()} cores with the proxy under test; the 'client %', "
          "'upstream %', 'proxy %' and 'other %' columns are CPU time as a % of one core during "
          "the measured phase ('other' = everything else on the machine).")

    proxies: list[Mitmdump] = []
    status = 0
    try:
        with Upstream() as up:
            mode = f"reverse:http://127.0.0.1:{up.port}"
            direct = Target("direct", "direct (no proxy)", up.port)
            plain_p = Mitmdump(mode=mode, headroom=False)
            head_p = headroom_proxy(mode)
            pt_p = headroom_proxy(mode, {"headroom_compress": "off"})
            null_p = Mitmdump(mode=mode, headroom=False, extra_args=[
                "-s", str(Path(__file__).resolve().parent / "null_addon.py")])
            frozen_p = Mitmdump(mode=mode, headroom=False, extra_args=[
                "-s", str(Path(__file__).resolve().parent / "freeze_addon.py")])
            specs = [("plain", "mitmdump", plain_p),
                     ("null", "mitmdump + 4 empty hooks", null_p),
                     *([("budget", f"mitmdump + 4 hooks, {args.budget_us} µs CPU",
                         Mitmdump(mode=mode, headroom=False, extra_args=[
                             "-s", str(Path(__file__).resolve().parent / "budget_addon.py"),
                             "--set", f"budget_us={args.budget_us}"]))]
                       if args.budget_us else []),
                     ("frozen", "mitmdump, startup heap frozen", frozen_p),
                     ("headroom_pt", "headroom, compress=off", pt_p),
                     ("headroom", "mitmdump -s headroom.py", head_p)]
            plain_stream = read_stream = None
            if do_stream and not args.no_plain_streaming:
                ps_p = Mitmdump(mode=mode, headroom=False,
                                extra_args=["--set", "stream_large_bodies=1"])
                specs.insert(1, ("plainstream", "mitmdump stream_large_bodies=1", ps_p))
                # What any addon that reads the request and streams the response gets.
                rs_p = Mitmdump(mode=mode, headroom=False, extra_args=[
                    "-s", str(Path(__file__).resolve().parent / "stream_addon.py")])
                specs.insert(2, ("readstream", "mitmdump, request read, SSE via a callable", rs_p))
            targets = {"direct": direct}
            for key, label, p in specs:
                proxies.append(p)
                p.start()
                targets[key] = Target(key, label, p.port, p.proc.pid, p)
            plain, head = targets["plain"], targets["headroom"]
            head_pt = targets["headroom_pt"]
            plain_stream = targets.get("plainstream")
            read_stream = targets.get("readstream")
            load_targets = [direct, plain, targets["null"], targets["frozen"], head_pt, head]
            if "budget" in targets:
                load_targets.insert(3, targets["budget"])
            stream_targets = [t for t in (direct, plain, plain_stream, read_stream, head)
                              if t is not None]
            # (plain mitmdump buffers: its first event is its last)
            short_targets = [t for t in (direct, plain_stream, read_stream, head_pt, head)
                             if t is not None]
            # one set of result holders per chunking of the stream
            stream_sets = {b: [Target(t.key, t.label, t.port, t.pid, t.proxy)
                               for t in stream_targets] for b in args.stream_batches}
            bench = Bench(args, work, up)

            sizes = work.sizes()
            lo_msgs, hi_msgs = work.messages()
            print(f"Upstream:  tests.e2e.fake_upstream.FakeUpstream at 127.0.0.1:{up.port} "
                  "(child process); proxies: tests.e2e.proxy.Mitmdump, "
                  f"--mode {mode}, HTTP/1.1 cleartext on loopback; Headroom with default options "
                  "(event log on)")
            print(f"Request:   POST {PATH}, Claude Code {CC_VERSION} headers, body "
                  f"{min(sizes) / 1000:.1f}-{max(sizes) / 1000:.1f} KB "
                  f"(mean {statistics.mean(sizes) / 1000:.1f} KB): {work.system_blocks} system "
                  f"blocks with cache_control, {work.tools} tools with JSON schemas, "
                  f"{lo_msgs}-{hi_msgs} messages with tool_use/tool_result (history grows over "
                  f"{len(sizes)} stages), metadata.user_id; {len(work.sessions)} sessions (one per "
                  "connection); a per-request billing line makes every body unique")

            sys.stdout.flush()
            # warm-up: every target, not recorded
            for t in load_targets + [x for x in stream_targets if x not in load_targets]:
                bench.load(t, args.warmup, min(args.concurrency, args.warmup), record=None)
                if do_stream:
                    old = args.stream_events
                    args.stream_events = min(old, 2000)
                    for b in args.stream_batches:
                        bench.stream(t, 0, record=False, batch=b)
                    args.stream_events = old
            for t in short_targets if do_short else ():
                for k in range(3):
                    bench.short_stream(t, k, record=False)

            for r in range(args.runs):
                t_round = time.perf_counter()
                if do_load:
                    for t in alternate(load_targets, r):
                        bench.load(t, args.requests, args.concurrency, record="load")
                    if args.serial_requests:
                        for t in alternate(load_targets, r + 1):
                            bench.load(t, args.serial_requests, 1, record="serial")
                    if args.rewrite_requests:
                        for t in alternate([plain, head_pt, head], r):
                            bench.load(t, args.rewrite_requests, 1, record="rewrite",
                                       rewrite=True)
                if do_stream:
                    for b, ts in stream_sets.items():
                        for rep in range(args.stream_reps):
                            for t in alternate(ts, r + rep):
                                bench.stream(t, r * args.stream_reps + rep, record=True, batch=b)
                if do_short:  # the targets take turns stream by stream
                    for k in range(args.short_streams):
                        for t in alternate(short_targets, r + k):
                            bench.short_stream(t, k, record=True)
                print(f"  run {r + 1}/{args.runs} done in {time.perf_counter() - t_round:.1f} s",
                      file=sys.stderr, flush=True)

            memory = bench.memory([plain, head], args.memory_requests,
                                  args.memory_sessions) if args.memory_requests else []
            head_p.stop()  # its event log is complete once it has stopped
            events_lines = 0
            if head_p.events_path.exists():
                with open(head_p.events_path, "rb") as fh:
                    events_lines = sum(1 for _ in fh)
            head_log = head_p.log()
    finally:
        for p in proxies:
            p.stop()
            shutil.rmtree(p.workdir, ignore_errors=True)

    # -- report -----------------------------------------------------------------------------------
    phases = []
    if do_load:
        phases.append(("1a", load_targets, "cpu_load"))
        if args.serial_requests:
            phases.append(("1b", load_targets, "cpu_serial"))
    if do_stream:
        for b, ts in stream_sets.items():
            phases.append((f"2 (batch {b})", ts, "cpu_stream"))
    measured = [getattr(t, a) for _, ts, a in phases for t in ts]
    wall = sum(c.wall for c in measured)
    background = sum(c.other for c in measured) / wall if wall else float("nan")
    for md in ([False, True] if args.markdown else [False]):
        def title(text: str) -> str:
            return f"\n**{text}**\n" if md else f"\n{text}\n"

        if md:
            print("\n---- Markdown ----\n")
            print(f"_{os.cpu_count()} CPUs shared by the load generator, the fake upstream and the "
                  f"proxy; other processes used {background:.2f} cores on average meanwhile; "
                  f"Python {platform.python_version()}, mitmproxy {mitm_version}; "
                  f"`{command}`_")
        if do_load:
            a, b = load_tables(load_targets, direct, md)
            print(title(f"1a. Passthrough (stream: false), concurrency {args.concurrency} (keep-alive "
                        f"connections), {args.requests} requests per target per run x {args.runs} "
                        "runs. Latency: first request byte sent to last response byte "
                        "received; +ms: vs direct"))
            print(a)
            if args.serial_requests:
                print(title(f"1b. Passthrough, one request at a time, {args.serial_requests} "
                            f"requests per target per run x {args.runs} runs"))
                print(b)
            if args.rewrite_requests:
                print(title(f"1c. A turn whose newest tool output is a new ~40 KB test log, one "
                            f"at a time, {args.rewrite_requests} per target per run x "
                            f"{args.runs} runs (Headroom compresses it; compress=off forwards "
                            "it): the rewrite's own cost"))
                print(rewrite_table([plain, head_pt, head], md))
        if do_stream:
            for bsize, ts in stream_sets.items():
                mb = next((t.stream_bytes for t in ts if t.stream_bytes), 0) / 1e6
                print(title(f"2. Streaming, events:{args.stream_events} SSE ({mb:.2f} MB body), "
                            f"{bsize} event(s) per upstream write, one stream at a time, "
                            f"{args.stream_reps} per target per run x {args.runs} runs. First "
                            "event: request start to first SSE event's bytes at the client; "
                            "MB/s: body bytes / total time"))
                print(stream_table(ts, ts[0], md))
        if do_short:
            print(title(f"2. First event of short streams ({SHORT_EVENTS} events), one at a "
                        f"time, {args.short_streams} per target per run x {args.runs} runs, the "
                        "targets taking turns stream by stream: request start to first SSE "
                        "event's bytes at the client, ms"))
            print(short_table(short_targets, direct, md))
        if memory:
            print(title(f"3. Memory after {args.memory_requests} requests across "
                        f"{args.memory_sessions} conversations (resident set size)"))
            print(table(["target", "RSS before MB", "RSS after MB", "growth MB",
                         "Headroom holds"], memory, md))
        print(title("CPU use during the measured phases, % of one core (client: load "
                    "generator; other: everything else on the machine)"))
        print(cpu_table(phases, md))
        print()
        for line in ratio_lines(plain, head, None, do_load, False, head_pt):
            print(f"- {line}" if md else line)
        if do_load:  # what any addon with per-request hooks costs, and Headroom beyond that
            null = next(t for t in load_targets if t.key == "null")
            for line in ratio_lines(plain, null, None, True, False, None, name="Empty hooks"):
                print(f"- {line}" if md else line)
            for line in ratio_lines(null, head_pt, None, True, False, None,
                                    name="Headroom compress=off", base="empty hooks"):
                print(f"- {line}" if md else line)
            budget = next((t for t in load_targets if t.key == "budget"), None)
            if budget is not None:  # a ratio target as a time budget (scripts/budget_addon.py)
                for line in ratio_lines(plain, budget, None, True, False, None,
                                        name=f"Hooks spending {args.budget_us} µs CPU"):
                    print(f"- {line}" if md else line)
            # Headroom freezes the startup heap (headroom_runtime.heap), which speeds up
            # mitmproxy's own work too: against mitmdump with the same freeze, what Headroom
            # itself costs.
            frozen = next(t for t in load_targets if t.key == "frozen")
            for line in ratio_lines(frozen, head, None, True, False, head_pt,
                                    base="mitmdump with the startup heap frozen"):
                print(f"- {line}" if md else line)
        for bsize, ts in stream_sets.items() if do_stream else ():
            by = {t.key: t for t in ts}
            for line in ratio_lines(by["plain"], by["headroom"], by.get("plainstream"), False,
                                    True, read_stream=by.get("readstream")):
                print(f"- {line} ({bsize} event(s) per chunk)" if md
                      else f"{line} ({bsize} event(s) per chunk)")
        if do_short:
            for line in short_lines(head_pt, head, plain_stream, read_stream):
                print(f"- {line}" if md else line)

    print("\nNotes:")
    print(f"- Other processes on the machine used {background:.2f} of its {os.cpu_count()} "
          "cores on average during the measured phases (from /proc/stat); figures are noisier "
          "the higher that is.")
    print(f"- CPU times come from /proc/<pid>/stat and /proc/stat in 1/{TICK} s ticks: coarse "
          "for short phases (--quick), fine over a full run.")
    print("- Ratios are Headroom / plain: above 1.00x means Headroom is higher (slower for "
          "latency and CPU, faster for req/s and MB/s).")
    print(f"- Each of the {args.runs} runs measures every target once, in alternating order; "
          "req/s is the median (and range) of the per-run figures, percentiles pool all requests.")
    if do_stream:
        print("- Plain mitmdump buffers a response until it is complete (its first event arrives "
              "with the last); Headroom streams text/event-stream (headroom_stream_sse), as does "
              "plain mitmdump with stream_large_bodies=1, which also streams the request body "
              "upstream as it arrives; 'request read, SSE via a callable' (scripts/stream_addon.py) "
              "reads the whole request first, as Headroom must, and streams the response through "
              "a callable, as Headroom does.")
        first = stream_sets[args.stream_batches[0]]
        per_event = (next((t.stream_bytes for t in first if t.stream_bytes), 0)
                     / args.stream_events)
        print(f"- The fake upstream writes {args.stream_batch} event(s) (~{per_event:.0f} bytes "
              "each) per chunk; with small batches per-chunk cost, not bytes, dominates proxy "
              "throughput.")
    print(f"- Headroom's event log has {events_lines} lines (one per LLM flow through it).")
    tracebacks = head_log.count("Traceback")
    if tracebacks:
        print(f"- WARNING: the Headroom mitmdump log has {tracebacks} tracebacks.")
    errors = {t.label: t.errors for t in [direct, plain, head_pt, head, plain_stream, read_stream]
              if t is not None and t.errors}
    for b, ts in stream_sets.items() if do_stream else ():  # (the long streams' own holders)
        errors.update({f"{t.label}, {b} event(s) per chunk": t.errors for t in ts if t.errors})
    for label, errs in errors.items():
        status = 1
        print(f"- ERRORS for {label}: {len(errs)}, e.g. {errs[0]}")
    print(f"- Finished in {time.time() - started:.0f} s; load average at end "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".")
    return status


if __name__ == "__main__":
    sys.exit(main())
