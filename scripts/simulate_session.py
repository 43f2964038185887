"""Measure the bill, not the ratio: a synthetic Claude Code session, with and without Headroom.

    .venv/bin/python scripts/simulate_session.py                 # 24 turns, seed 1, restart at 10
    .venv/bin/python scripts/simulate_session.py --verbose       # + one row per turn
    .venv/bin/python scripts/simulate_session.py --markdown      # tables ready for the README
    .venv/bin/python scripts/simulate_session.py --turns 30 --seed 7 --restart-at 0 --json out.json

What it does:

1. Generates a deterministic (seeded) multi-turn, tool-heavy agent session shaped like Claude Code's
   traffic: `POST /v1/messages?beta=true`, `stream: true`, Claude Code's headers (`x-api-key
   sk-ant-api03-...`, `X-Claude-Code-Session-Id`, `anthropic-beta`, `x-app: cli`, ...), `system` as
   text blocks with the per-request `x-anthropic-billing-header: cc_version=...; cch=...;` block
   first, `tools` with JSON schemas, and `cache_control: {"type": "ephemeral"}` where Claude Code
   puts it: the identity and the last system block, and the newest message's last content block
   (the marker moves every turn). Each turn the assistant calls 1-3 tools and the next request
   carries their results: pytest / cargo / npm / jest / tsc / ... logs, ripgrep output, git diffs
   (generators in tests/data/tool_outputs/tool_output_corpus.py), JSON API responses from an MCP
   tool, plus small outputs (git status, Edit, TodoWrite) and Read-tool file contents (excluded
   from compression). Failing commands come back as `is_error: true` with "Exit code N" first, as
   Claude Code sends them; Bash output is cut to 30,000 characters (head + tail) as Claude Code's
   BASH_MAX_OUTPUT_LENGTH default does.
2. Sends the session through real `mitmdump` processes (tests.e2e.proxy.Mitmdump, reverse mode) in
   front of scripts/caching_upstream.py, which simulates Anthropic prompt caching on the bytes it
   receives and reports the figures in `message_start.usage` (see that file for the model and its
   simplifications). Variants, each with a fresh upstream cache and a fresh `headroom_dir`:
     plain     mitmdump without the addon
     off       mitmdump -s addons/headroom.py --set headroom_compress=off
     headroom  mitmdump -s addons/headroom.py (defaults: headroom_compress=auto compresses API-key
               traffic)
   `--restart-at N` (default 10) stops mitmdump before turn N and starts a new one on the same
   `headroom_dir` (all variants, so they stay comparable): the ledger must keep the prefix stable.
3. Prints per-variant totals and the ratio Headroom / plain, in tokens and in billed-token
   equivalents: input x1, cache write x1.25, cache read x0.1 (5-minute cache, Anthropic's
   multipliers) and output x5 (Sonnet: $3 in / $15 out per MTok), both "input side" (what
   Headroom can change) and "all" (with output, identical in every variant).
4. Detects prefix busts: a turn (>= 2) whose cache read does not reach the previous turn's last
   written prefix, with the first block whose content changed. A bust under Headroom is
   *Headroom's fault* when the plain run did not bust on that turn, or busted at a later block.
   Targets: zero Headroom-caused busts, >= 30 % fewer billed-token equivalents than plain.

Exit status: 0 when both targets are met, 1 otherwise (2: a request failed).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for p in (ROOT / "scripts", ROOT / "tests" / "data" / "tool_outputs"):
    if str(p) not in sys.path:
        sys.path.append(str(p))

import httpx  # noqa: E402
import tool_output_corpus as corpus  # noqa: E402
from caching_upstream import CachingUpstream, Record, SimResult  # noqa: E402

from headroom_core.compress import count_tokens, tokenizer_name  # noqa: E402
from tests.e2e.proxy import Mitmdump  # noqa: E402

MODEL = "claude-sonnet-4-5-20250929"
CC_VERSION = "2.1.119"
API_KEY = "sk-ant-api03-simulated-session-0000000000000000000000000000000000000000-AAAA"
BASH_MAX_OUTPUT = 30_000
PRICES = {"input": 1.0, "write": 1.25, "read": 0.10, "output": 5.0}  # x base input price
SONNET_INPUT_USD_PER_MTOK = 3.0
EPHEMERAL = {"type": "ephemeral"}

# -- synthetic prose (tool descriptions, system prompt) ------------------------------------------

_PROSE = (
    "the a an to of and in for with when use this tool file command output user agent code "
    "repository project path directory search pattern result results should must never always "
    "only before after instead prefer run running test tests change changes edit edits read write "
    "content line lines number numbers absolute relative current working shell session quote "
    "quotes space spaces parameter parameters optional required default value values return "
    "returns string list match matches matching glob regex syntax include exclude limit offset "
    "large small long short task tasks todo item items status pending completed progress plan "
    "planning explain explanation concise clear response responses message messages commit "
    "branch pull request review important note notes example examples usage security safe unsafe "
    "permission permissions allowed denied timeout background process processes kill monitor "
    "web fetch url page summary model context window token tokens memory instructions follow "
    "guidelines style format markdown brief detail details verify check confirm ensure avoid"
).split()  # noqa: SIM905


def prose(rng: random.Random, words: int) -> str:
    out: list[str] = []
    n = 0
    while n < words:
        k = rng.randint(8, 22)
        sent = [rng.choice(_PROSE) for _ in range(k)]
        sent[0] = sent[0].capitalize()
        out.append(" ".join(sent) + rng.choice([".", ".", ".", ":", "."]))
        n += k
        if rng.random() < 0.12:
            out.append("\n\n- " if rng.random() < 0.5 else "\n\n")
    return " ".join(out).replace(" \n\n", "\n\n").strip()


def _schema(props: dict[str, dict], required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}


def _s(desc: str, **kw) -> dict:
    return {"type": "string", "description": desc, **kw}


TOOL_SPECS: list[tuple[str, float, dict]] = [
    ("Task", 1.6, _schema({"description": _s("A short (3-5 word) description of the task"),
                            "prompt": _s("The task for the agent to perform"),
                            "subagent_type": _s("The type of specialized agent to use")},
                           ["description", "prompt", "subagent_type"])),
    ("Bash", 2.6, _schema({"command": _s("The command to execute"),
                            "timeout": {"type": "number", "description": "Optional timeout in ms"},
                            "description": _s("Clear, concise description of what it does"),
                            "run_in_background": {"type": "boolean",
                                                  "description": "Run in the background"}},
                           ["command"])),
    ("Glob", 0.4, _schema({"pattern": _s("The glob pattern to match files against"),
                            "path": _s("The directory to search in")}, ["pattern"])),
    ("Grep", 0.9, _schema({"pattern": _s("The regular expression pattern to search for"),
                            "path": _s("File or directory to search in"),
                            "glob": _s("Glob pattern to filter files"),
                            "output_mode": _s("Output mode", enum=["content", "files_with_matches",
                                                                   "count"]),
                            "-n": {"type": "boolean", "description": "Show line numbers"},
                            "-i": {"type": "boolean", "description": "Case insensitive search"},
                            "head_limit": {"type": "number", "description": "Limit output"}},
                           ["pattern"])),
    ("ExitPlanMode", 0.3, _schema({"plan": _s("The plan you came up with")}, ["plan"])),
    ("Read", 0.6, _schema({"file_path": _s("The absolute path to the file to read"),
                            "offset": {"type": "number", "description": "The line to start at"},
                            "limit": {"type": "number", "description": "The number of lines"}},
                           ["file_path"])),
    ("Edit", 0.5, _schema({"file_path": _s("The absolute path to the file to modify"),
                            "old_string": _s("The text to replace"),
                            "new_string": _s("The text to replace it with"),
                            "replace_all": {"type": "boolean", "default": False,
                                            "description": "Replace all occurrences"}},
                           ["file_path", "old_string", "new_string"])),
    ("MultiEdit", 0.6, _schema({"file_path": _s("The absolute path to the file to modify"),
                                 "edits": {"type": "array", "items": {"type": "object"},
                                           "description": "Edits to perform sequentially"}},
                                ["file_path", "edits"])),
    ("Write", 0.3, _schema({"file_path": _s("The absolute path to the file to write"),
                             "content": _s("The content to write to the file")},
                            ["file_path", "content"])),
    ("NotebookEdit", 0.3, _schema({"notebook_path": _s("The absolute path to the notebook"),
                                    "new_source": _s("The new source for the cell")},
                                   ["notebook_path", "new_source"])),
    ("WebFetch", 0.4, _schema({"url": _s("The URL to fetch content from", format="uri"),
                                "prompt": _s("The prompt to run on the fetched content")},
                               ["url", "prompt"])),
    ("TodoWrite", 1.8, _schema({"todos": {"type": "array", "description": "The updated todo list",
                                          "items": {"type": "object", "properties": {
                                              "content": {"type": "string", "minLength": 1},
                                              "status": {"type": "string", "enum": [
                                                  "pending", "in_progress", "completed"]},
                                              "activeForm": {"type": "string", "minLength": 1}},
                                              "required": ["content", "status", "activeForm"]}}},
                                ["todos"])),
    ("WebSearch", 0.4, _schema({"query": _s("The search query to use", minLength=2)}, ["query"])),
    ("BashOutput", 0.3, _schema({"bash_id": _s("The ID of the background shell")}, ["bash_id"])),
    ("KillShell", 0.2, _schema({"shell_id": _s("The ID of the background shell to kill")},
                                ["shell_id"])),
    ("SlashCommand", 0.3, _schema({"command": _s("The slash command to execute")}, ["command"])),
    ("mcp__github__list_workflow_runs", 0.3,
     _schema({"owner": _s("Repository owner"), "repo": _s("Repository name"),
              "status": _s("Filter by run status"),
              "per_page": {"type": "number", "description": "Results per page"}},
             ["owner", "repo"])),
]


# -- the session --------------------------------------------------------------------------------


@dataclass
class Call:
    id: str
    name: str
    input: dict
    output: str | list  # tool_result content (string, or a list of text parts for MCP tools)
    is_error: bool
    kind: str  # label for the report


@dataclass
class Step:
    """One assistant turn (text + tool calls) and the user message carrying the results."""

    text: str | None
    calls: list[Call]
    reminder: str | None = None


@dataclass
class Session:
    seed: int
    session_id: str
    user_id: str
    system_identity: str
    system_main: str
    tools: list[dict]
    context_reminder: str
    prompt: str
    steps: list[Step]
    final_text: str
    client_bust_at: int | None = None

    @property
    def turns(self) -> int:
        return len(self.steps) + 1

    def reply(self, turn: int) -> list[dict]:
        """What the model answers to request `turn` (1-based)."""
        if turn <= len(self.steps):
            return assistant_content(self.steps[turn - 1])
        return [{"type": "text", "text": self.final_text}]


def assistant_content(step: Step) -> list[dict]:
    out: list[dict] = []
    if step.text:
        out.append({"type": "text", "text": step.text})
    out.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}
               for c in step.calls)
    return out


def results_content(step: Step) -> list[dict]:
    out: list[dict] = []
    for c in step.calls:
        block: dict[str, Any] = {"tool_use_id": c.id, "type": "tool_result", "content": c.output}
        if c.is_error:
            block["is_error"] = True
        out.append(block)
    if step.reminder:
        out.append({"type": "text", "text": step.reminder})
    return out


def _toolu(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "toolu_01" + "".join(rng.choice(alphabet) for _ in range(22))


def bash_cap(text: str, limit: int = BASH_MAX_OUTPUT) -> str:
    """Claude Code's Bash output limit: keep the head and the tail, say how many lines went."""
    if limit <= 0 or len(text) <= limit:
        return text
    head, tail = text[: limit // 2], text[-(limit // 2):]
    dropped = text[limit // 2: len(text) - limit // 2].count("\n")
    return f"{head}\n\n... [{dropped} lines truncated] ...\n\n{tail}"


def _code_lines(rng: random.Random, n: int) -> list[str]:
    lines = ['"""Request handling for the payments service."""', "",
             "from __future__ import annotations", "", "import logging",
             "from dataclasses import dataclass", "", "log = logging.getLogger(__name__)", ""]
    while len(lines) < n:
        name = corpus._ident(rng)
        lines += [f"def {name}(request, timeout={rng.randint(1, 60)}):",
                  f'    """{corpus._ident(rng, 3).replace("_", " ").capitalize()}."""',
                  f"    result = compute_{corpus._ident(rng)}(request)",
                  f"    if result.status != {rng.choice([200, 201, 204])}:",
                  f"        log.warning('unexpected status %s for {name}', result.status)",
                  f"        raise {rng.choice(['ValueError', 'RuntimeError', 'KeyError'])}"
                  f"('{corpus._ident(rng)}')",
                  f"    return result.{corpus._ident(rng, 1)}", ""]
    return lines[:n]


class _Gen:
    """Tool calls with realistic outputs; sizes scale with `scale` (1.0: full size)."""

    def __init__(self, rng: random.Random, scale: float) -> None:
        self.rng = rng
        self.scale = scale
        self.n = 0

    def _sz(self, lo: int, hi: int) -> int:
        return max(3, int(self.rng.randint(lo, hi) * self.scale))

    def _seed(self) -> int:
        self.n += 1
        return self.rng.randint(1, 10**6)

    def call(self, name: str, inp: dict, output, kind: str, is_error: bool = False) -> Call:
        return Call(_toolu(self.rng), name, inp, output, is_error, kind)

    def bash(self, command: str, description: str, text: str, kind: str,
             exit_code: int = 0) -> Call:
        out = bash_cap(text.rstrip("\n"))
        if exit_code:
            out = f"Exit code {exit_code}\n{out}"
        return self.call("Bash", {"command": command, "description": description}, out, kind,
                         is_error=exit_code != 0)

    # -- kinds --
    def todo(self) -> Call:
        items = [{"content": corpus._ident(self.rng, 4).replace("_", " ").capitalize(),
                  "status": self.rng.choice(["pending", "in_progress", "completed"]),
                  "activeForm": corpus._ident(self.rng, 3).replace("_", " ").capitalize()}
                 for _ in range(self.rng.randint(3, 6))]
        return self.call("TodoWrite", {"todos": items},
                         "Todos have been modified successfully. Ensure that you continue to use "
                         "the todo list to track your progress. Please proceed with the current "
                         "tasks if applicable", "small")

    def git_status(self) -> Call:
        files = "\n".join(f"\tmodified:   src/{corpus._ident(self.rng, 1)}/"
                          f"{corpus._ident(self.rng, 1)}.py" for _ in range(self.rng.randint(1, 5)))
        return self.bash("git status", "Show working tree status",
                         "On branch feature/payments-retry\nChanges not staged for commit:\n"
                         '  (use "git add <file>..." to update what will be committed)\n'
                         f"{files}\n\nno changes added to commit", "small")

    def pytest(self, fail: bool) -> Call:
        failures = self.rng.randint(1, 3) if fail else 0
        s = corpus.pytest_log(passes=self._sz(100, 600), failures=failures, seed=self._seed())
        text = s.text
        if not fail:
            text = text.replace("0 failed, ", "")
        # Non-ASCII and escapes in what gets compressed (raw UTF-8 on the wire, like Node sends).
        text = text.replace("    now = datetime.utcnow()\n",
                            "    now = datetime.utcnow()\n  src/i18n/format.py:88: UserWarning: "
                            "naïve datetime → assuming UTC for 'Zürich' \"日本\" 🙂\n", 1)
        return self.bash("python -m pytest -v", "Run the test suite", text,
                         "pytest-fail" if fail else "pytest", exit_code=1 if fail else 0)

    def build(self) -> Call:
        r = self.rng.random()
        if r < 0.35:
            s = corpus.cargo_build(crates=self._sz(40, 200), warnings=self.rng.randint(0, 8),
                                   seed=self._seed())
            return self.bash("cargo build", "Build the crate", s.text, "cargo")
        if r < 0.65:
            s = corpus.npm_install(progress=self._sz(60, 300), seed=self._seed())
            return self.bash("npm install --loglevel http", "Install dependencies", s.text, "npm")
        s = corpus.service_log(lines=self._sz(150, 1200), seed=self._seed())
        text = s.text.replace(" after 503", " after 503 — upstream said \"Überlastet\" ⚠", 1)
        return self.bash("tail -n 3000 logs/app.log", "Show recent service logs", text, "svc-log")

    def tool_log(self) -> Call:
        name = self.rng.choice(["jest", "go", "tsc", "maven", "make", "unittest", "docker"])
        s = corpus.tool_logs(filler=self._sz(40, 250), seed=self._seed())[name]
        cmd = {"jest": "npx jest", "go": "go test ./...", "tsc": "npx tsc --noEmit",
               "maven": "mvn -q test", "make": "make", "unittest": "python -m unittest -v",
               "docker": "docker build ."}[name]
        return self.bash(cmd, f"Run {name}", s.text, f"{name}-fail", exit_code=1)

    def rg(self) -> Call:
        s = corpus.ripgrep(files=self._sz(10, 50), per_file=self.rng.randint(4, 15),
                           seed=self._seed(), heading=self.rng.random() < 0.3)
        return self.bash("rg -n 'compute_' src/", "Search for compute_ call sites", s.text, "rg")

    def diff(self) -> Call:
        s = corpus.git_diff(files=self.rng.randint(3, 12), target_lines=self._sz(200, 2000),
                            seed=self._seed())
        return self.bash("git diff", "Show the working tree diff", s.text, "git-diff")

    def gh_runs(self) -> Call:
        s = corpus.github_runs(n=self._sz(10, 50), errors=self.rng.randint(1, 3), seed=self._seed())
        return self.call("mcp__github__list_workflow_runs",
                         {"owner": "octo", "repo": "app", "per_page": 100},
                         [{"type": "text", "text": s.text}], "json-mcp")

    def api_json(self) -> Call:
        s = corpus.flat_records(n=self._sz(20, 70), seed=self._seed())
        return self.bash("curl -s localhost:8000/api/users | jq .", "Query the local API",
                         s.text, "json-curl")

    def read(self) -> Call:
        n = self._sz(60, 400)
        path = f"/home/dev/proj/src/{corpus._ident(self.rng, 1)}/{corpus._ident(self.rng, 1)}.py"
        body = "\n".join(f"{i + 1:>6}→{ln}" for i, ln in enumerate(_code_lines(self.rng, n)))
        body += ("\n\n<system-reminder>\nWhenever you read a file, you should consider whether it "
                 "would be considered malware. You CAN and SHOULD provide analysis of malware, "
                 "what it is doing. But you MUST refuse to improve or augment the code. You can "
                 "still analyze existing code, write reports, or answer questions about the code "
                 "behavior.\n</system-reminder>\n")
        return self.call("Read", {"file_path": path}, body, "read")

    def grep_files(self) -> Call:
        files = [f"src/{corpus._ident(self.rng, 1)}/{corpus._ident(self.rng, 1)}_{i}.py"
                 for i in range(self.rng.randint(3, 25))]
        return self.call("Grep", {"pattern": "retry_after", "output_mode": "files_with_matches"},
                         f"Found {len(files)} files\n" + "\n".join(files), "small")

    def edit(self) -> Call:
        path = f"/home/dev/proj/src/{corpus._ident(self.rng, 1)}/{corpus._ident(self.rng, 1)}.py"
        start = self.rng.randint(10, 300)
        snippet = "\n".join(f"{start + i:>6}→{ln}"
                            for i, ln in enumerate(_code_lines(self.rng, 12)[-10:]))
        return self.call("Edit", {"file_path": path, "old_string": "timeout=30",
                                  "new_string": "timeout=retry_after(30)"},
                         f"The file {path} has been updated. Here's the result of running "
                         f"`cat -n` on a snippet of the edited file:\n{snippet}", "small")


STEP_TEXT = [
    "Let me look at the failing tests first.", "I'll check where this is used.",
    "Now let me run the tests again.", "Let me check the build output.",
    "I'll look at the recent CI runs to see when this started failing.",
    "Let me see what changed in the working tree.", "I'll read the handler to understand the flow.",
    "Let me fix the retry logic.", "Let me verify the API response shape.",
    "Checking the service logs for the stack trace.", None,
]

REMINDER = ("<system-reminder>\nThe TodoWrite tool hasn't been used recently. If you're working on "
            "tasks that would benefit from tracking progress, consider using the TodoWrite tool to "
            "track progress. Also consider cleaning up the todo list if has become stale and no "
            "longer matches what you are working on. Only use it if it's relevant to the current "
            "work. This is just a gentle reminder - ignore if not applicable. Make sure that you "
            "NEVER mention this reminder to the user\n</system-reminder>")


def generate_session(turns: int = 24, seed: int = 1, scale: float = 1.0,
                     fixed_scale: float = 1.0, client_bust_at: int | None = None) -> Session:
    """A deterministic session of `turns` requests. `scale` sizes the tool outputs, `fixed_scale`
    the tool definitions and system prompt (1.0: about 11k + 7k tokens, like Claude Code's)."""
    if turns < 2:
        raise ValueError("a session needs at least 2 turns")
    rng = random.Random(seed)
    sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    account = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    user_id = f"user_{rng.getrandbits(256):064x}_account_{account}_session_{sid}"
    tools = []
    for name, weight, schema in TOOL_SPECS:
        words = max(12, int(weight * 620 * fixed_scale))
        tools.append({"name": name, "description": prose(rng, words), "input_schema": schema})
    identity = "You are Claude Code, Anthropic's official CLI for Claude."
    main = (prose(rng, max(60, int(6000 * fixed_scale)))
            + "\n\nHere is useful information about the environment you are running in:\n<env>\n"
              "Working directory: /home/dev/proj\nIs directory a git repo: Yes\nPlatform: linux\n"
              "OS Version: Linux 6.8.0-45-generic\nToday's date: 2025-10-14\n</env>\n"
              "You are powered by the model named Sonnet 4.5. The exact model ID is "
              f"{MODEL}.\n\ngitStatus: This is the git status at the start of the conversation.\n"
              "Current branch: feature/payments-retry\n\nMain branch (you will usually use this "
              "for PRs): main\n\nStatus:\nM src/payments/retry.py\n\nRecent commits:\n"
              + "\n".join(f"{rng.getrandbits(28):07x} {corpus._ident(rng, 3).replace('_', ' ')}"
                          for _ in range(5)))
    context = ("<system-reminder>\nAs you answer the user's questions, you can use the following "
               "context:\n# claudeMd\nCodebase and user instructions are shown below.\n\n"
               "Contents of /home/dev/proj/CLAUDE.md (project instructions, checked into the "
               f"codebase):\n\n{prose(rng, max(40, int(900 * fixed_scale)))}\n\n"
               "IMPORTANT: this context may or may not be relevant to your tasks.\n"
               "</system-reminder>\n")
    prompt = ("The payments retry tests started failing after the last merge. Find out why, fix "
              "the retry logic, make the whole test suite pass, and check CI is green.")
    g = _Gen(rng, scale)
    steps: list[Step] = []
    plan = ["start", "pytest-fail", "rg", "read", "edit"]
    singles = [(g.pytest, 2), (g.build, 2), (g.tool_log, 1), (g.rg, 2), (g.diff, 1),
               (g.gh_runs, 1), (g.api_json, 1), (g.read, 2), (g.edit, 3), (g.grep_files, 2),
               (g.git_status, 1), (g.todo, 1)]
    fns, weights = zip(*singles, strict=True)
    for i in range(turns - 1):
        kind = plan[i] if i < len(plan) else None
        if kind == "start":
            calls = [g.todo(), g.git_status()]
        elif kind == "pytest-fail":
            calls = [g.pytest(fail=True)]
        elif kind == "rg":
            calls = [g.rg(), g.grep_files()]
        elif kind == "read":
            calls = [g.read(), g.read()]
        elif kind == "edit":
            calls = [g.edit()]
        else:
            calls = []
            for _ in range(rng.choices([1, 2, 3], [7, 2, 1])[0]):
                fn = rng.choices(fns, weights)[0]
                calls.append(fn(fail=rng.random() < 0.3) if fn == g.pytest else fn())
        text = rng.choice(STEP_TEXT)
        reminder = REMINDER if i % 5 == 3 else None
        steps.append(Step(text, calls, reminder))
    final = ("All 4 retry tests pass now and the full suite is green. The bug was that "
             "`retry_after` ignored the server's Retry-After header; CI has been green since.")
    return Session(seed, sid, user_id, identity, main, tools, context, prompt, steps, final,
                   client_bust_at)


# -- requests as Claude Code sends them ---------------------------------------------------------


def cc_version_suffix(first_user_text: str) -> str:
    chars = "".join(first_user_text[i] if i < len(first_user_text) else "0" for i in (4, 7, 20))
    return hashlib.sha256(f"59cf53e54c78{chars}{CC_VERSION}".encode()).hexdigest()[:3]


def build_doc(s: Session, turn: int) -> dict:
    """The request body of `turn` (1-based) as a dict, `cch=00000` placeholder included."""
    first = [{"type": "text", "text": s.context_reminder}, {"type": "text", "text": s.prompt}]
    messages: list[dict] = [{"role": "user", "content": first}]
    for step in s.steps[: turn - 1]:
        messages.append({"role": "assistant", "content": assistant_content(step)})
        messages.append({"role": "user", "content": results_content(step)})
    messages = copy.deepcopy(messages)
    messages[-1]["content"][-1]["cache_control"] = dict(EPHEMERAL)
    main = s.system_main
    if s.client_bust_at is not None and turn >= s.client_bust_at:
        # The client's own change (e.g. a new date or git status in the system prompt).
        main = main.replace("Today's date: 2025-10-14", "Today's date: 2025-10-15")
    billing = (f"x-anthropic-billing-header: cc_version={CC_VERSION}."
               f"{cc_version_suffix(s.prompt)}; cc_entrypoint=cli; cch=00000;")
    return {
        "model": MODEL,
        "messages": messages,
        "temperature": 1,
        "system": [{"type": "text", "text": billing},
                   {"type": "text", "text": s.system_identity, "cache_control": dict(EPHEMERAL)},
                   {"type": "text", "text": main, "cache_control": dict(EPHEMERAL)}],
        "tools": s.tools,
        "metadata": {"user_id": s.user_id},
        "max_tokens": 32000,
        "stream": True,
    }


def build_request(s: Session, turn: int) -> tuple[list[tuple[str, str]], bytes]:
    """Header fields and body bytes (compact JSON, raw UTF-8, like JSON.stringify), with the
    5-hex `cch=` computed over the body and written in place of the placeholder."""
    body = json.dumps(build_doc(s, turn), ensure_ascii=False, separators=(",", ":")).encode()
    cch = hashlib.sha256(body).hexdigest()[:5]  # stands in for xxHash64(body) with Anthropic's seed
    assert body.count(b"cch=00000;") == 1
    body = body.replace(b"cch=00000;", f"cch={cch};".encode())
    fields = [
        ("accept", "application/json"),
        ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14,"
                           "fine-grained-tool-streaming-2025-05-14"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("user-agent", f"claude-cli/{CC_VERSION} (external, cli)"),
        ("x-api-key", API_KEY),
        ("x-app", "cli"),
        ("X-Claude-Code-Session-Id", s.session_id),
        ("x-stainless-arch", "x64"),
        ("x-stainless-lang", "js"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-package-version", "0.60.0"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-runtime-version", "v24.3.0"),
        ("x-stainless-timeout", "600"),
    ]
    return fields, body


# -- running a variant --------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"headroom": False, "options": {}, "title": "plain mitmdump"},
    "off": {"headroom": True, "options": {"headroom_compress": "off"},
            "title": "Headroom, compress=off"},
    "headroom": {"headroom": True, "options": {}, "title": "Headroom (defaults)"},
}


@dataclass
class Turn:
    turn: int
    record: Record
    client_usage: dict[str, int]
    client_bytes: int
    upstream_bytes: int
    live: list[str]  # kinds of the tool outputs new in this request
    event: dict | None = None  # Headroom's event-log line for this request
    restarted: bool = False
    bust: dict | None = None  # filled by analyse()

    @property
    def sim(self) -> SimResult:
        return self.record.sim


@dataclass
class Run:
    name: str
    title: str
    turns: list[Turn] = field(default_factory=list)
    seconds: float = 0.0
    events_ok: bool | None = None  # event-log usage == upstream usage on every turn
    log_tail: str = ""

    def totals(self) -> dict[str, float]:
        t = {"input": 0, "write": 0, "read": 0, "output": 0, "upstream_bytes": 0,
             "client_bytes": 0}
        for x in self.turns:
            t["input"] += x.sim.input
            t["write"] += x.sim.cache_write
            t["read"] += x.sim.cache_read
            t["output"] += x.record.output_tokens
            t["upstream_bytes"] += x.upstream_bytes
            t["client_bytes"] += x.client_bytes
        t["total_input"] = t["input"] + t["write"] + t["read"]
        t["billed_input_side"] = (t["input"] * PRICES["input"] + t["write"] * PRICES["write"]
                                  + t["read"] * PRICES["read"])
        t["billed_all"] = t["billed_input_side"] + t["output"] * PRICES["output"]
        t["usd"] = t["billed_all"] * SONNET_INPUT_USD_PER_MTOK / 1e6
        t["busts"] = sum(1 for x in self.turns if x.bust and x.bust["bust"])
        return t


class RequestFailed(RuntimeError):
    pass


def _parse_sse_usage(raw: bytes) -> tuple[dict[str, int], bool]:
    usage: dict[str, int] = {}
    stopped = False
    for chunk in raw.split(b"\n\n"):
        for line in chunk.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                ev = json.loads(line[5:])
            except ValueError:
                continue
            if ev.get("type") == "message_start":
                usage.update(ev["message"].get("usage") or {})
            elif ev.get("type") == "message_delta":
                usage.update(ev.get("usage") or {})
            elif ev.get("type") == "message_stop":
                stopped = True
    return usage, stopped


def run_variant(name: str, s: Session, *, restart_at: int | None, workroot: Path,
                billing: str = "ignore-cch", log=print) -> Run:
    spec = VARIANTS[name]
    run = Run(name, spec["title"])
    upstream = CachingUpstream(billing=billing)
    workdir = workroot / name
    t0 = time.perf_counter()

    # A seeded tenant salt: retrieval handles in compressed outputs (and so token counts) are
    # the same from run to run. Still a fresh headroom_dir per variant.
    salt = workdir / "headroom" / "salt"
    salt.parent.mkdir(parents=True, exist_ok=True)
    salt.write_bytes(hashlib.sha256(f"headroom-sim-salt-{s.seed}".encode()).digest())
    salt.chmod(0o600)

    def start() -> Mitmdump:
        return Mitmdump(mode=f"reverse:{upstream.url}", headroom=spec["headroom"],
                        options=spec["options"], workdir=workdir).start()

    proxy = start()
    client = httpx.Client(timeout=120)
    try:
        for turn in range(1, s.turns + 1):
            restarted = False
            if restart_at and turn == restart_at and turn > 1:
                client.close()
                proxy.stop()
                proxy = start()
                client = httpx.Client(timeout=120)
                restarted = True
            fields, body = build_request(s, turn)
            upstream.reply = s.reply(turn)
            n_before = len(upstream.records)
            with client.stream("POST", f"{proxy.url}/v1/messages?beta=true", headers=fields,
                               content=body) as resp:
                raw = resp.read()
                status = resp.status_code
            if status != 200 or len(upstream.records) != n_before + 1:
                raise RequestFailed(f"{name} turn {turn}: HTTP {status}, "
                                    f"{len(upstream.records) - n_before} upstream requests\n"
                                    f"{raw[:500]!r}\n{proxy.log()[-3000:]}")
            usage, stopped = _parse_sse_usage(raw)
            if not stopped:
                raise RequestFailed(f"{name} turn {turn}: stream did not finish")
            rec = upstream.records[-1]
            live = [c.kind for c in s.steps[turn - 2].calls] if turn >= 2 else ["prompt"]
            run.turns.append(Turn(turn, rec, usage, len(body), len(rec.body), live,
                                  restarted=restarted))
            log(f"  {name:8s} turn {turn:2d}/{s.turns}: {len(body):8d} B -> {len(rec.body):8d} B "
                f"upstream; read {rec.sim.cache_read:6d} write {rec.sim.cache_write:6d} "
                f"input {rec.sim.input:5d}")
    finally:
        client.close()
        proxy.stop()
        run.log_tail = proxy.log()[-2000:]
        upstream.close()
    run.seconds = time.perf_counter() - t0
    if spec["headroom"]:
        evs = [e for e in proxy.events(wait_for=s.turns, timeout=10)
               if e.get("endpoint") == "messages"]
        run.events_ok = len(evs) == len(run.turns)
        for t, ev in zip(run.turns, evs, strict=False):
            t.event = ev
            u = ev.get("usage") or {}
            want = t.record.usage()
            got = (u.get("input_tokens"), u.get("cache_read_tokens"),
                   u.get("cache_creation_tokens"), u.get("output_tokens"))
            if got != (want["input_tokens"], want["cache_read_input_tokens"],
                       want["cache_creation_input_tokens"], want["output_tokens"]):
                run.events_ok = False
    return run


# -- analysis -----------------------------------------------------------------------------------


def detect_busts(run: Run) -> None:
    """Mark every turn >= 2 whose cache read falls short of the previous turn's written prefix."""
    for prev, cur in zip(run.turns, run.turns[1:], strict=False):
        p, c = prev.sim, cur.sim
        if p.write_to < 0:
            cur.bust = {"bust": False, "expected": 0, "reason": "nothing cached before"}
            continue
        k = p.write_to
        expected = p.blocks[k].cum
        same = k < len(c.blocks) and c.blocks[k].chain == p.blocks[k].chain
        if same and c.read_at >= k:
            cur.bust = {"bust": False, "expected": expected}
            continue
        div = next((i for i in range(k + 1)
                    if i >= len(c.blocks) or c.blocks[i].content != p.blocks[i].content), None)
        cur.bust = {"bust": True, "expected": expected, "read": c.cache_read,
                    "lost": max(0, expected - c.cache_read),
                    "at": div, "label": p.blocks[div].label if div is not None else None,
                    "reason": "content changed" if div is not None else "beyond lookback"}


def attribute(plain: Run, other: Run) -> list[dict]:
    """Busts under `other` that `plain` does not have on the same turn (or has at a later block)."""
    out = []
    for a, b in zip(plain.turns, other.turns, strict=True):
        if not (b.bust and b.bust["bust"]):
            continue
        pb = a.bust or {}
        if not pb.get("bust"):
            fault = True
        elif b.bust.get("at") is None or pb.get("at") is None:
            fault = False
        else:
            fault = b.bust["at"] < pb["at"]
        if fault:
            out.append({"turn": b.turn, **b.bust, **_bytes_diff(other, b.turn)})
    return out


def _block_json(doc: dict, label: str) -> Any:
    cur: Any = doc
    for part in label.replace("]", "").replace(".", "[").split("["):
        if not part:
            continue
        cur = cur[int(part)] if part.isdigit() else cur[part]
    return cur


def _bytes_diff(run: Run, turn: int) -> dict:
    """What differed in the first changed block between the previous and this upstream body."""
    prev, cur = run.turns[turn - 2], run.turns[turn - 1]
    label = cur.bust.get("label")
    if label is None:
        return {}
    try:
        a = json.dumps(_block_json(prev.record.doc, label), ensure_ascii=False)
        b = json.dumps(_block_json(cur.record.doc, label), ensure_ascii=False)
    except (KeyError, IndexError, TypeError):
        return {"diff": "block missing in this turn"}
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    first = next((op for op in sm.get_opcodes() if op[0] != "equal"), None)
    info = {"prev_len": len(a), "cur_len": len(b)}
    if first:
        _, i1, i2, j1, j2 = first
        info["first_diff"] = {"offset": i1, "prev": a[max(0, i1 - 40):i2 + 40][:200],
                              "cur": b[max(0, j1 - 40):j2 + 40][:200]}
    return info


@dataclass
class Result:
    session: Session
    runs: dict[str, Run]
    headroom_busts: list[dict]
    reference: str
    billing: str = "ignore-cch"
    restart_at: int | None = None

    def ratio(self, key: str, name: str = "headroom") -> float:
        ref = self.runs[self.reference].totals()[key]
        return self.runs[name].totals()[key] / ref if ref else float("nan")

    @property
    def targets_met(self) -> bool:
        return not self.headroom_busts and self.ratio("billed_input_side") <= 0.70


def simulate(turns: int = 24, seed: int = 1, *, scale: float = 1.0, fixed_scale: float = 1.0,
             restart_at: int | None = 10, variants: tuple[str, ...] = ("plain", "off", "headroom"),
             billing: str = "ignore-cch", client_bust_at: int | None = None,
             workroot: Path | None = None, keep: bool = False, log=print) -> Result:
    s = generate_session(turns, seed, scale, fixed_scale, client_bust_at)
    root = Path(workroot or tempfile.mkdtemp(prefix="headroom-sim-"))
    runs: dict[str, Run] = {}
    try:
        for name in variants:
            runs[name] = run_variant(name, s, restart_at=restart_at, workroot=root,
                                     billing=billing, log=log)
            detect_busts(runs[name])
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    reference = "plain" if "plain" in runs else next(iter(runs))
    busts: list[dict] = []
    if "headroom" in runs and reference != "headroom":
        busts = attribute(runs[reference], runs["headroom"])
    return Result(s, runs, busts, reference, billing, restart_at)


# -- output -------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:,.0f}"


def _table(rows: list[list[str]], markdown: bool, align_left: int = 1) -> str:
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |",
               "|" + "|".join(":---" if i < align_left else "---:" for i in range(len(rows[0])))
               + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i < align_left else c.rjust(widths[i])
                               for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(res: Result, markdown: bool = False) -> str:
    names = list(res.runs)
    tots = {n: res.runs[n].totals() for n in names}
    ref = res.reference
    head = ["", *[res.runs[n].title for n in names]]
    if "headroom" in names and ref != "headroom":
        head.append(f"Headroom / {ref}")
    rows = [head]
    spec = [("uncached input tokens", "input"), ("cache write tokens", "write"),
            ("cache read tokens", "read"), ("total input tokens", "total_input"),
            ("output tokens", "output"),
            ("billed equivalents, input side", "billed_input_side"),
            ("billed equivalents, all (output x5)", "billed_all"),
            ("USD at Sonnet prices", "usd"), ("request bytes sent upstream", "upstream_bytes"),
            ("prefix busts (turns >= 2)", "busts")]
    for label, key in spec:
        row = [label]
        for n in names:
            v = tots[n][key]
            row.append(f"${v:,.4f}" if key == "usd" else _fmt(v))
        if len(head) > len(names) + 1:
            r = res.ratio(key) if key != "busts" else None
            row.append("" if r is None or r != r else f"{r:.3f}")
        rows.append(row)
    if "headroom" in names:
        row = ["Headroom-caused busts", *["" for _ in names]]
        row[names.index("headroom") + 1] = str(len(res.headroom_busts))
        if len(head) > len(names) + 1:
            row.append("")
        rows.append(row)
    return _table(rows, markdown)


def turn_table(res: Result, markdown: bool = False) -> str:
    names = list(res.runs)
    head = ["turn", "new tool outputs"]
    for n in names:
        head += [f"{n} read", f"{n} write", f"{n} input"]
    if "headroom" in names:
        head += ["headroom actions", "bust"]
    rows = [head]
    for i in range(res.session.turns):
        t0 = res.runs[names[0]].turns[i]
        mark = " (restart)" if t0.restarted else ""
        row = [f"{t0.turn}{mark}", ",".join(t0.live)]
        for n in names:
            t = res.runs[n].turns[i]
            row += [_fmt(t.sim.cache_read), _fmt(t.sim.cache_write), _fmt(t.sim.input)]
        if "headroom" in names:
            t = res.runs["headroom"].turns[i]
            acts = ((t.event or {}).get("decisions") or {}).get("rewrite") or {}
            row.append(" ".join(f"{k}:{v}" for k, v in sorted((acts.get("actions") or {}).items())))
            busts = [n for n in names if res.runs[n].turns[i].bust
                     and res.runs[n].turns[i].bust["bust"]]
            row.append(",".join(busts))
        rows.append(row)
    return _table(rows, markdown, align_left=2)


def action_table(res: Result, markdown: bool = False) -> str | None:
    """New (live-zone) tool outputs of the Headroom run by what Headroom did with them, from its
    event log: how many, their tokens as the client sent them and as forwarded."""
    run = res.runs.get("headroom")
    if run is None:
        return None
    calls = {c.id: c for st in res.session.steps for c in st.calls}
    agg: dict[str, list[int]] = {}
    for t in run.turns:
        rw = ((t.event or {}).get("decisions") or {}).get("rewrite") or {}
        doc = t.record.doc
        for m in rw.get("blocks") or []:
            if not m.get("live"):
                continue
            try:
                block = doc["messages"][m["index"]]["content"][m["block"]]
            except (KeyError, IndexError, TypeError):
                continue
            call = calls.get(block.get("tool_use_id"))
            if call is None:
                continue
            text = (call.output if isinstance(call.output, str)
                    else call.output[m.get("part") or 0]["text"])
            before = count_tokens(text)
            after = m.get("tokens_after") if m.get("action") == "compressed" else before
            row = agg.setdefault(m.get("action", "?"), [0, 0, 0])
            row[0] += 1
            row[1] += before
            row[2] += after if isinstance(after, int) else before
    if not agg:
        return None
    rows = [["Headroom action on new tool outputs", "outputs", "tokens sent by the client",
             "tokens forwarded"]]
    for action, (n, b_, a_) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        rows.append([action, str(n), _fmt(b_), _fmt(a_)])
    return _table(rows, markdown)


def describe(res: Result) -> str:
    s = res.session
    fixed = sum(count_tokens(json.dumps(t)) for t in s.tools)
    sysk = count_tokens(s.system_main)
    calls = [c for st in s.steps for c in st.calls]
    kinds: dict[str, int] = {}
    for c in calls:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    out_tokens = sum(count_tokens(c.output if isinstance(c.output, str)
                                  else "".join(p["text"] for p in c.output)) for c in calls)
    final = res.runs[res.reference].turns[-1].sim.total
    billing = ("billing block's cch= ignored (modelling Anthropic's own API)"
               if res.billing == "ignore-cch" else "billing block hashed raw (busts every request)")
    restart = (f"mitmdump restarted before turn {res.restart_at} in every variant"
               if res.restart_at else "no mitmdump restart")
    kind_list = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return "\n".join([
        f"session: {s.turns} requests (seed {s.seed}), {len(calls)} tool calls ({kind_list}); "
        f"tool outputs {out_tokens:,} tokens in all; {len(s.tools)} tool definitions "
        f"~{fixed:,} tokens, system ~{sysk:,} tokens; final context {final:,} tokens "
        f"({res.reference}); tokenizer {tokenizer_name()} (a proxy for Claude's)",
        f"cache model: breakpoints on system[1], system[2] and the newest block; {billing}; "
        f"20-block lookback; 1024-token minimum; {restart}",
        "billed equivalents: input x1, cache write x1.25, cache read x0.1, output x5 "
        "(Sonnet 4.5: $3 / $3.75 / $0.30 / $15 per MTok)",
    ])


def report(res: Result, *, verbose: bool = False, markdown: bool = False) -> str:
    parts = [describe(res), ""]
    parts.append(summary_table(res, markdown))
    actions = action_table(res, markdown)
    if actions:
        parts += ["", actions]
    if verbose:
        parts += ["", turn_table(res, markdown)]
    parts.append("")
    if "headroom" in res.runs:
        ok = res.runs["headroom"].events_ok
        parts.append(f"Headroom event log usage matches the upstream's on every turn: "
                     f"{'yes' if ok else 'NO'}")
    if "off" in res.runs and "plain" in res.runs:
        same = all(a.record.body == b.record.body
                   for a, b in zip(res.runs["plain"].turns, res.runs["off"].turns, strict=True))
        parts.append("compress=off forwards the same bodies as plain mitmdump: "
                     + ("yes" if same else "NO"))
    for b in res.headroom_busts:
        detail = {k: b[k] for k in ("prev_len", "cur_len", "first_diff") if k in b}
        parts.append(f"HEADROOM-CAUSED BUST at turn {b['turn']}: {b.get('reason')} at "
                     f"{b.get('label')}; lost {b.get('lost', 0):,} cached tokens; "
                     f"{json.dumps(detail, ensure_ascii=False)}")
    if "headroom" in res.runs:
        r = res.ratio("billed_input_side")
        ra = res.ratio("billed_all")
        parts.append(f"targets: Headroom-caused busts = {len(res.headroom_busts)} (target 0); "
                     f"billed equivalents Headroom/{res.reference} = {r:.4f} input side "
                     f"({1 - r:.1%} fewer), {ra:.4f} with output (target: >= 30% fewer): "
                     + ("MET" if res.targets_met else "NOT MET"))
    return "\n".join(parts)


def to_json(res: Result) -> dict:
    return {
        "session": {"turns": res.session.turns, "seed": res.session.seed},
        "runs": {n: {"title": r.title, "seconds": round(r.seconds, 2), "totals": r.totals(),
                     "turns": [{"turn": t.turn, **t.record.usage(), "live": t.live,
                                "restarted": t.restarted, "bust": t.bust,
                                "upstream_bytes": t.upstream_bytes} for t in r.turns]}
                 for n, r in res.runs.items()},
        "headroom_busts": res.headroom_busts,
        "ratio_billed_input_side": (res.ratio("billed_input_side") if "headroom" in res.runs
                                    else None),
        "ratio_billed_all": res.ratio("billed_all") if "headroom" in res.runs else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=24, help="requests in the session (default 24)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restart-at", type=int, default=10,
                    help="restart mitmdump before this turn (0: never; default 10)")
    ap.add_argument("--variants", default="plain,off,headroom",
                    help="comma-separated subset of plain,off,headroom")
    ap.add_argument("--scale", type=float, default=1.0, help="tool output size factor")
    ap.add_argument("--fixed-scale", type=float, default=1.0,
                    help="tool definitions + system prompt size factor")
    ap.add_argument("--billing", choices=("ignore-cch", "raw"), default="ignore-cch",
                    help="how the upstream treats the billing block's cch= (see caching_upstream)")
    ap.add_argument("--client-bust-at", type=int, default=None,
                    help="the client changes its system prompt from this turn on")
    ap.add_argument("--verbose", action="store_true", help="one row per turn")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the mitmdump work directories")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        res = simulate(args.turns, args.seed, scale=args.scale, fixed_scale=args.fixed_scale,
                       restart_at=args.restart_at or None, variants=variants, billing=args.billing,
                       client_bust_at=args.client_bust_at, keep=args.keep, log=log)
    except RequestFailed as e:
        print(f"request failed: {e}", file=sys.stderr)
        return 2
    print(report(res, verbose=args.verbose, markdown=args.markdown))
    if args.json:
        args.json.write_text(json.dumps(to_json(res), indent=2))
    if "headroom" not in variants:
        return 0
    return 0 if res.targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
