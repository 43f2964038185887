"""Tool outputs for the compressor tests and scripts/bench_compress.py: seeded generators, and the
real outputs under real/ (`real_samples()`, see real/README.md; `.gz` files are read transparently).

Each generator is deterministic (seeded) and returns the text plus what a test checks: which lines
must survive verbatim, which files matched, which items carry errors, ... (facts.py has the
independent fact rules used for every sample.)
"""

from __future__ import annotations

import difflib
import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

WORDS = (
    "alpha beta gamma delta parse render fetch cache token stream buffer client server route "
    "handler config session retry timeout schema record index query update delete create user "
    "account payment invoice order item widget layout module plugin worker queue event"
).split()  # noqa: SIM905


@dataclass
class Sample:
    text: str
    must_keep: list[str] = field(default_factory=list)  # lines that must appear verbatim
    files: list[str] = field(default_factory=list)  # search: every file that matched
    extra: dict = field(default_factory=dict)


def _ident(rng: random.Random, n: int = 2) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# pytest


def pytest_log(passes: int = 800, failures: int = 3, seed: int = 1, verbose: bool = True) -> Sample:
    rng = random.Random(seed)
    total = passes + failures
    modules = [f"tests/test_{_ident(rng, 1)}_{i}.py" for i in range(24)]
    fail_at = sorted(rng.sample(range(total), failures))
    tests = []
    for i in range(total):
        mod = modules[i * len(modules) // total]
        tests.append((mod, f"test_{_ident(rng)}_{i}", i in fail_at))
    out = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.12.3, pytest-8.2.0, pluggy-1.5.0 -- /home/dev/proj/.venv/bin/python",
        "cachedir: .pytest_cache",
        "hypothesis profile 'default' -> database=DirectoryBasedExampleDatabase('.hypothesis/examples')",
        "rootdir: /home/dev/proj",
        "configfile: pyproject.toml",
        "plugins: hypothesis-6.100.1, anyio-4.3.0",
        f"collecting ... collected {total} items",
        "",
    ]
    must = []
    if verbose:
        for k, (mod, name, failed) in enumerate(tests):
            pct = (k + 1) * 100 // total
            status = "FAILED" if failed else "PASSED"
            line = f"{mod}::{name} {status}".ljust(72) + f" [{pct:3d}%]"
            out.append(line)
            if failed:
                must.append(line)
    else:
        for mod in modules:
            marks = "".join("F" if f else "." for m, _, f in tests if m == mod)
            out.append(f"{mod} {marks}".ljust(72) + " [ 50%]")
    out.append("")
    out.append("=================================== FAILURES ===================================")
    failed_tests = [t for t in tests if t[2]]
    summary = []
    for j, (mod, name, _) in enumerate(failed_tests):
        out.append(f"{'_' * 20} {name} {'_' * 20}")
        must.append(out[-1])
        out.append("")
        if j == 0:
            block = [
                f"    def {name}():",
                "        payload = load_fixture('case.json')",
                "        result = parse(payload)",
                ">       assert result == {'id': 17, 'kind': 'user'}",
                "E       AssertionError: assert {'id': 18, 'kind': 'user'} == {'id': 17, 'kind': 'user'}",
                "E         Differing items:",
                "E         {'id': 18} != {'id': 17}",
                "",
                f"{mod}:88: AssertionError",
            ]
            summary.append(f"FAILED {mod}::{name} - AssertionError: assert {{'id': 18, 'kind': 'user'}} == {{'id': 17, 'kind': 'user'}}")
        elif j == 1:
            block = [
                f"    def {name}():",
                ">       client.connect(timeout=0.1)",
                "",
                f"{mod}:41: ",
                "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ ",
                "src/net/client.py:120: in connect",
                "    sock = socket.create_connection((self.host, self.port), timeout)",
                "E   TimeoutError: timed out",
                "----------------------------- Captured stderr call -----------------------------",
                "Traceback (most recent call last):",
                '  File "/home/dev/proj/src/net/client.py", line 118, in connect',
                "    self._handshake()",
                '  File "/home/dev/proj/src/net/client.py", line 201, in _handshake',
                "    raise ConnectionResetError(104, 'Connection reset by peer')",
                "ConnectionResetError: [Errno 104] Connection reset by peer",
            ]
            summary.append(f"FAILED {mod}::{name} - TimeoutError: timed out")
        else:
            block = [
                f"    def {name}(db):",
                ">       db.migrate(3)",
                "E       sqlite3.OperationalError: no such table: users",
                "",
                f"{mod}:12: OperationalError",
            ]
            summary.append(f"FAILED {mod}::{name} - sqlite3.OperationalError: no such table: users")
        out.extend(block)
        must.extend(ln for ln in block if ln.startswith(("E ", "Traceback", '  File "', "ConnectionResetError", "tests/")) or ln.startswith(">"))
        out.append("")
    out.append("=============================== warnings summary ===============================")
    out.append(f"{modules[0]}::test_warns")
    out.append("  /home/dev/proj/src/api.py:12: DeprecationWarning: datetime.datetime.utcnow() is deprecated")
    out.append("    now = datetime.utcnow()")
    must.append(out[-2])
    out.append("")
    out.append("-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html")
    out.append("=========================== short test summary info ============================")
    out.extend(summary)
    must.extend(summary)
    final = f"================== {failures} failed, {passes} passed, 1 warning in 12.34s =================="
    out.append(final)
    must.append(final)
    return Sample("\n".join(out) + "\n", must, extra={"failed": [t[1] for t in failed_tests]})


# ---------------------------------------------------------------------------------------------
# cargo


def cargo_build(crates: int = 220, warnings: int = 6, seed: int = 2) -> Sample:
    rng = random.Random(seed)
    out = ["    Updating crates.io index"]
    for i in range(crates):
        out.append(f"  Downloaded {_ident(rng, 1)}-{_ident(rng, 1)}{i} v{rng.randint(0, 3)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}")
    out.append(f"  Downloaded {crates} crates ({rng.randint(10, 90)}.{rng.randint(0, 9)} MB) in 4.12s")
    for i in range(crates):
        out.append(f"   Compiling {_ident(rng, 1)}-{_ident(rng, 1)}{i} v{rng.randint(0, 3)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}")
    out.append("   Compiling app v0.1.0 (/home/dev/app)")
    must = []
    for w in range(warnings):
        var = _ident(rng, 1)
        block = [
            f"warning: unused variable: `{var}`",
            f"  --> src/handlers/mod{w}.rs:{10 + w}:9",
            "   |",
            f"{10 + w} |     let {var} = compute();",
            f"   |         {'^' * len(var)} help: if this is intentional, prefix it with an underscore: `_{var}`",
            "   |",
            "   = note: `#[warn(unused_variables)]` on by default",
            "",
        ]
        out.extend(block)
        must.extend(block[:2])
    err = [
        "error[E0308]: mismatched types",
        "  --> src/main.rs:42:18",
        "   |",
        "42 |     let port: u16 = config.get(\"port\");",
        "   |               ---   ^^^^^^^^^^^^^^^^^^^ expected `u16`, found `Option<&str>`",
        "   |               |",
        "   |               expected due to this",
        "   |",
        "   = note: expected type `u16`",
        "              found enum `Option<&str>`",
        "",
    ]
    out.extend(err)
    must.extend(ln for ln in err if ln.strip())
    tail = [
        "For more information about this error, try `rustc --explain E0308`.",
        f"warning: `app` (bin \"app\") generated {warnings} warnings",
        f"error: could not compile `app` (bin \"app\") due to 1 previous error; {warnings} warnings emitted",
    ]
    out.extend(tail)
    must.extend(tail)
    return Sample("\n".join(out) + "\n", must)


# ---------------------------------------------------------------------------------------------
# npm


def npm_install(progress: int = 400, seed: int = 3) -> Sample:
    rng = random.Random(seed)
    out = []
    must = []
    for i in range(progress):
        out.append(f"npm http fetch GET 200 https://registry.npmjs.org/{_ident(rng, 1)}-{_ident(rng, 1)} {rng.randint(3, 900)}ms (cache miss)")
        if i % 50 == 7:
            w = f"npm WARN deprecated {_ident(rng, 1)}@{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}: This package is no longer supported."
            out.append(w)
            must.append(w)
    for _ in range(progress):
        out.append(f"reify:{_ident(rng, 1)}: timing reifyNode:node_modules/{_ident(rng, 1)} Completed in {rng.randint(1, 400)}ms")
    out.extend(["[##################] \\ reify:fsevents: sill reify mark deleted"] * 150)
    for pct in range(0, 101):
        out.append(f"Downloading binaries... {pct}% ({pct * 37}/{3700} KB)")
    summary = [
        "",
        f"added {progress + 812} packages, and audited {progress + 813} packages in 47s",
        "",
        "163 packages are looking for funding",
        "  run `npm fund` for details",
        "",
        "found 0 vulnerabilities",
    ]
    out.extend(summary)
    must.extend(ln for ln in summary if ln.startswith(("added", "found")))
    return Sample("\n".join(out) + "\n", must, extra={"identical_run": 150, "similar_run": 101})


# ---------------------------------------------------------------------------------------------
# Generic service log with a Java stack trace


def service_log(lines: int = 3000, seed: int = 4) -> Sample:
    rng = random.Random(seed)
    out = []
    must = []
    err_at = {lines // 3, lines // 2, lines * 4 // 5}
    for i in range(lines):
        ts = f"2024-05-01T12:{(i // 60) % 60:02d}:{i % 60:02d}.{rng.randint(0, 999):03d}Z"
        if i in err_at:
            block = [
                f"{ts} ERROR [worker-{i % 8}] c.a.payments.Processor - payment {rng.randint(1000, 9999)} failed",
                "java.lang.IllegalStateException: ledger closed",
                "\tat com.acme.payments.Ledger.append(Ledger.java:88)",
                "\tat com.acme.payments.Processor.process(Processor.java:131)",
                "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
            ]
            out.extend(block)
            must.extend(block)
        elif i % 97 == 5:
            ln = f"{ts} WARN  [worker-{i % 8}] c.a.http.Client - retrying request {i} after 503"
            out.append(ln)
            must.append(ln)
        else:
            out.append(f"{ts} INFO  [worker-{i % 8}] c.a.{_ident(rng, 1)}.Service - processed batch {i} in {rng.randint(1, 999)}ms")
    return Sample("\n".join(out) + "\n", must)


# ---------------------------------------------------------------------------------------------
# ripgrep


def ripgrep(files: int = 60, per_file: int = 20, seed: int = 5, heading: bool = False,
            context: int = 0) -> Sample:
    rng = random.Random(seed)
    paths = [f"src/{_ident(rng, 1)}/{_ident(rng, 1)}_{i}.py" for i in range(files)]
    out: list[str] = []
    for p in paths:
        line_nos = sorted(rng.sample(range(1, 2000), per_file))
        if heading:
            if out:
                out.append("")
            out.append(p)
        prev_end = -10
        for ln in line_nos:
            if context and out and ln - context > prev_end + 1 and prev_end > 0:
                out.append("--")
            for c in range(ln - context, ln):
                if c > prev_end and c > 0:
                    out.append(f"{c}-    # {_ident(rng, 3)}" if heading else f"{p}-{c}-    # {_ident(rng, 3)}")
            text = f"    result = compute_{_ident(rng)}(request, timeout={rng.randint(1, 60)})  # TODO: handle retry"
            out.append(f"{ln}:{text}" if heading else f"{p}:{ln}:{text}")
            for c in range(ln + 1, ln + 1 + context):
                out.append(f"{c}-    return {_ident(rng)}" if heading else f"{p}-{c}-    return {_ident(rng)}")
            prev_end = ln + context
    return Sample("\n".join(out) + "\n", files=paths)


# ---------------------------------------------------------------------------------------------
# git diff


def git_diff(files: int = 12, target_lines: int = 3000, seed: int = 6, context: int = 3) -> Sample:
    """A `git diff` over `files` files; extra["old"]/["new"] map each path to its lines."""
    rng = random.Random(seed)
    out: list[str] = []
    olds: dict[str, list[str]] = {}
    news: dict[str, list[str]] = {}
    per_file = max(50, target_lines // files)
    for f in range(files):
        path = f"src/{_ident(rng, 1)}/{_ident(rng, 1)}_{f}.py"
        size = per_file * 3
        old = [f"    value_{k} = {_ident(rng)}(x, {rng.randint(0, 99)})" if k % 7 else f"def {_ident(rng)}_{k}(x):"
               for k in range(size)]
        new = list(old)
        # sparse edits: modifications, insertions and deletions spread through the file
        edits = sorted(rng.sample(range(5, size - 5), max(4, size // 12)), reverse=True)
        for e in edits:
            r = rng.random()
            if r < 0.5:
                new[e] = new[e].replace("(x,", "(y,") + "  # changed"
            elif r < 0.8:
                new.insert(e, f"    inserted_{e} = {_ident(rng)}(x)")
            else:
                del new[e]
        mode = "modify"
        if f == files - 1:
            old, mode = [], "new"
        elif f == files - 2:
            new, mode = [], "delete"
        olds[path], news[path] = old, new
        out.append(f"diff --git a/{path} b/{path}")
        if mode == "new":
            out.append("new file mode 100644")
            out.append(f"index 0000000..{rng.getrandbits(28):07x}")
        elif mode == "delete":
            out.append("deleted file mode 100644")
            out.append(f"index {rng.getrandbits(28):07x}..0000000")
        else:
            out.append(f"index {rng.getrandbits(28):07x}..{rng.getrandbits(28):07x} 100644")
        a = "/dev/null" if mode == "new" else f"a/{path}"
        b = "/dev/null" if mode == "delete" else f"b/{path}"
        body = list(difflib.unified_diff(old, new, a, b, n=context, lineterm=""))
        out.extend(body)
    return Sample("\n".join(out) + "\n", extra={"old": olds, "new": news})


# ---------------------------------------------------------------------------------------------
# GitHub API JSON


def _user(rng: random.Random, uid: int) -> dict:
    login = f"{_ident(rng, 1)}{uid}"
    return {
        "login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid:06d}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "url": f"https://api.github.com/users/{login}", "html_url": f"https://github.com/{login}",
        "type": "User", "site_admin": False,
    }


def github_runs(n: int = 500, errors: int = 3, seed: int = 7, wrapped: bool = False) -> Sample:
    """Actions workflow runs; `errors` of them failed (conclusion "failure" + an error object)."""
    rng = random.Random(seed)
    err_at = sorted(rng.sample(range(1, n - 1), errors))
    runs = []
    for i in range(n):
        run_id = 9_000_000_000 + i * 137
        failed = i in err_at
        run = {
            "id": run_id,
            "name": rng.choice(["CI", "Lint", "Release", "Docs"]),
            "node_id": f"WFR_kwLOA{run_id:x}",
            "head_branch": rng.choice(["main", "dev", f"feature/{_ident(rng)}"]),
            "head_sha": f"{rng.getrandbits(160):040x}",
            "path": ".github/workflows/ci.yml",
            "run_number": 1000 + i,
            "event": rng.choice(["push", "pull_request"]),
            "status": "completed",
            "conclusion": "failure" if failed else "success",
            "workflow_id": 161335,
            "url": f"https://api.github.com/repos/octo/app/actions/runs/{run_id}",
            "html_url": f"https://github.com/octo/app/actions/runs/{run_id}",
            "created_at": f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "updated_at": f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:{(i + 3) % 60:02d}:00Z",
            "run_attempt": 1,
            "duration_ms": rng.randint(60_000, 240_000),
            "actor": _user(rng, 1000 + i % 40),
            "repository": {"id": 1296269, "name": "app", "full_name": "octo/app", "private": False},
            "error": {"message": f"Process completed with exit code {rng.randint(1, 2)}.", "step": "test"} if failed else None,
        }
        runs.append(run)
    doc = {"total_count": n, "workflow_runs": runs} if wrapped else runs
    return Sample(json.dumps(doc, indent=2), extra={"items": runs, "errors": err_at, "doc": doc})


def flat_records(n: int = 60, seed: int = 8) -> Sample:
    """Uniform flat objects (a lossless table fits)."""
    rng = random.Random(seed)
    items = [
        {"id": i, "name": _ident(rng), "status": "active", "score": rng.randint(0, 100),
         "ratio": round(rng.random(), 3), "enabled": rng.random() < 0.8, "owner": None,
         "tags": [rng.choice(WORDS)]}
        for i in range(n)
    ]
    return Sample(json.dumps(items, indent=2), extra={"items": items})


# ---------------------------------------------------------------------------------------------


def corpus() -> dict[str, list[tuple[str, Sample]]]:
    """The bench corpus: per kind, samples of increasing size."""
    return {
        "json": [
            ("100 runs", github_runs(100, 2, seed=11)),
            ("500 runs", github_runs(500, 3)),
            ("100 flat", flat_records(100)),
            ("2000 runs wrapped", github_runs(2000, 5, seed=12, wrapped=True)),
            ("pytest-json 300/25", pytest_json_report()),
            ("bandit 240/8", bandit_report()),
        ],
        "log": [
            ("pytest 800", pytest_log()),
            ("cargo", cargo_build()),
            ("npm", npm_install()),
            ("service 3k", service_log(3000)),
            ("service 1MB", service_log(9000, seed=9)),
            *((f"{name}", sample) for name, sample in tool_logs().items()),
        ],
        "search": [
            ("rg 60x20", ripgrep()),
            ("rg heading", ripgrep(heading=True, seed=13)),
            ("rg -C2", ripgrep(30, 15, seed=14, context=2)),
            ("rg 300x30", ripgrep(300, 30, seed=15)),
        ],
        "diff": [
            ("12 files", git_diff()),
            ("40 files", git_diff(40, 10000, seed=16)),
        ],
        "listing": generated_listings(),
    }


# ---------------------------------------------------------------------------------------------
# Other build/test tools: (text, lines that must survive)


def tool_logs(filler: int = 120, seed: int = 9) -> dict[str, Sample]:
    rng = random.Random(seed)

    def fill(fmt: str) -> list[str]:
        return [fmt.format(i=i, w=_ident(rng), n=rng.randint(1, 900)) for i in range(filler)]

    jest_keep = [
        "FAIL src/cart/total.test.ts",
        "  ● cart › total › applies the discount",
        "    expect(received).toBe(expected) // Object.is equality",
        "Tests:       1 failed, 120 passed, 121 total",
        "Test Suites: 1 failed, 29 passed, 30 total",
    ]
    jest = (
        fill("PASS src/{w}/{w}_{i}.test.ts ({n} ms)")
        + [jest_keep[0], "", jest_keep[1], "", jest_keep[2], "", "    Expected: 90", "    Received: 100", "",
           "      41 |     const t = total(cart, 'SAVE10');", "    > 42 |     expect(t).toBe(90);",
           "         |               ^", "", "      at Object.<anonymous> (src/cart/total.test.ts:42:15)", ""]
        + [jest_keep[4], jest_keep[3], "Snapshots:   0 total", "Time:        8.123 s", "Ran all test suites."]
    )
    go_keep = [
        "--- FAIL: TestParseHeader (0.00s)",
        "    parser_test.go:57: got 3 headers, want 4",
        "FAIL\tgithub.com/acme/proxy/parser\t0.012s",
        "FAIL",
    ]
    go = (
        [line for i in range(filler) for line in (f"=== RUN   Test{_ident(rng).title()}{i}", f"--- PASS: Test{_ident(rng).title()}{i} (0.00s)")]
        + ["=== RUN   TestParseHeader", go_keep[0], go_keep[1], go_keep[2]]
        + [f"ok  \tgithub.com/acme/proxy/{_ident(rng, 1)}\t0.{rng.randint(10, 99)}s" for _ in range(5)]
        + [go_keep[3]]
    )
    tsc_keep = [
        "src/api/client.ts(88,13): error TS2339: Property 'retries' does not exist on type 'Options'.",
        "src/ui/view.tsx(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
        "Found 2 errors in 2 files.",
    ]
    tsc = fill("[{i}:00:00] File change detected in src/{w}.ts. Starting incremental compilation...") + tsc_keep
    mvn_keep = [
        "[ERROR] Tests run: 14, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.52 s <<< FAILURE! - in com.acme.CartTest",
        "[ERROR] com.acme.CartTest.discount  Time elapsed: 0.01 s  <<< FAILURE!",
        "[INFO] BUILD FAILURE",
    ]
    mvn = fill("[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/{w}/{i}/{w}-{i}.pom ({n} B at 1.2 MB/s)") + [
        "[INFO] -------------------------------------------------------",
        "[INFO]  T E S T S",
        mvn_keep[0], mvn_keep[1], "[INFO] ------------------------------------------------------------------------",
        mvn_keep[2], "[INFO] ------------------------------------------------------------------------",
    ]
    make_keep = [
        "src/net.c:41:9: error: implicit declaration of function 'connect_to' [-Wimplicit-function-declaration]",
        "   41 |         connect_to(host, port);",
        "make[1]: *** [Makefile:23: src/net.o] Error 1",
        "make: *** [Makefile:12: all] Error 2",
    ]
    make = fill("gcc -O2 -Wall -c src/{w}_{i}.c -o build/{w}_{i}.o") + [
        "src/net.c: In function 'open_session':", make_keep[0], make_keep[1], "      |         ^~~~~~~~~~",
        make_keep[2], make_keep[3],
    ]
    unit_keep = [
        "FAIL: test_roundtrip (tests.test_codec.CodecTest.test_roundtrip)",
        "AssertionError: b'\\x00' != b'\\x01'",
        "FAILED (failures=1)",
    ]
    unittest = fill("test_{w}_{i} (tests.test_{w}.Case.test_{w}_{i}) ... ok") + [
        "", "======================================================================", unit_keep[0],
        "----------------------------------------------------------------------", "Traceback (most recent call last):",
        '  File "/src/tests/test_codec.py", line 19, in test_roundtrip', "    self.assertEqual(decode(encode(b)), b)",
        unit_keep[1], "", "----------------------------------------------------------------------",
        f"Ran {filler + 1} tests in 0.211s", "", unit_keep[2],
    ]
    docker_keep = [
        "#9 ERROR: process \"/bin/sh -c pip install -r requirements.txt\" did not complete successfully: exit code: 1",
        "ERROR: failed to solve: process \"/bin/sh -c pip install -r requirements.txt\" did not complete successfully: exit code: 1",
    ]
    docker = fill("#8 {n}.{i} Collecting {w}=={i}.0") + [
        "#9 [5/6] RUN pip install -r requirements.txt", "#9 12.3 ERROR: No matching distribution found for nosuchpkg==9.9",
        docker_keep[0], "------", docker_keep[1],
    ]
    out = {}
    for name, lines, keep in (
        ("jest", jest, jest_keep), ("go", go, go_keep), ("tsc", tsc, tsc_keep), ("maven", mvn, mvn_keep),
        ("make", make, make_keep), ("unittest", unittest, unit_keep), ("docker", docker, docker_keep),
    ):
        out[name] = Sample("\n".join(lines) + "\n", keep)
    return out


# ---------------------------------------------------------------------------------------------
# Real outputs (see real/README.md) and generators for what real ones cannot give at size

REAL_DIR = Path(__file__).parent / "real"
REAL_KINDS = {  # file -> the kind its facts are checked as
    "pytest_json_report_22_failed.json": "json",
    "bandit_pytest_8_medium.json": "json",
    "bandit_pygments.json": "json",
    "ruff_requests_select_all.json": "json",
    "npm_ls_all_problems.json": "json",
    "pytest_v_22_failed.txt": "log",
    "ruff_requests_text.txt": "log",
    "grep_rn_def_requests_urllib3.txt": "search",
    "git_log_p_12.txt": "diff",
    "git_diff_range.txt": "diff",
    "find_node_modules.txt.gz": "listing",
    "find_type_d_node_modules.txt": "listing",
    "find_site_packages.txt": "listing",
    "ls_laR_eslint.txt": "listing",
    "ls_la_site_packages.txt": "listing",
    "tree_webpack.txt": "listing",
    "npm_ls_all.txt": "text",  # a dependency tree: no compressor takes it, it goes upstream as is
}


def read_real(name: str) -> str:
    path = REAL_DIR / name
    data = path.read_bytes()
    return (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8")


def real_samples() -> dict[str, list[tuple[str, Sample]]]:
    out: dict[str, list[tuple[str, Sample]]] = {}
    for name, kind in REAL_KINDS.items():
        out.setdefault(kind, []).append((name, Sample(read_real(name))))
    return out


_EXTS = ("js", "js", "js", "ts", "d.ts", "json", "map", "md", "py", "cjs", "mjs", "css")


def find_listing(entries: int = 20000, seed: int = 17, dirs_only: bool = False) -> Sample:
    """A `find node_modules` (or `-type d`) over a generated package tree of about `entries` lines."""
    rng = random.Random(seed)
    out = ["node_modules"]
    dirs = ["node_modules"]
    while len(out) < entries:
        pkg = f"node_modules/{_ident(rng, 1)}-{_ident(rng, 1)}{len(dirs)}"
        stack = [pkg]
        out.append(pkg)
        dirs.append(pkg)
        for _ in range(rng.randint(1, 8)):
            d = f"{rng.choice(stack)}/{rng.choice(['lib', 'dist', 'src', 'types', 'esm', 'cjs', _ident(rng, 1)])}"
            if d in dirs:
                continue
            stack.append(d)
            out.append(d)
            dirs.append(d)
        if not dirs_only:
            for d in stack:
                for k in range(rng.choice([0, 1, 2, 3, 5, 8, 20, 60])):
                    out.append(f"{d}/{_ident(rng, 1)}_{k}.{rng.choice(_EXTS)}")
                if rng.random() < 0.5:
                    out.append(f"{d}/LICENSE")
    return Sample("\n".join(out) + "\n", extra={"dirs": dirs})


def ls_laR_listing(entries: int = 6000, seed: int = 18) -> Sample:
    """`ls -laR` of a generated tree (headers, totals, . and .., dirs, files, a symlink)."""
    rng = random.Random(seed)
    todo = ["."]
    out: list[str] = []
    dirs = []
    while todo and len(out) < entries:
        cur = todo.pop(0)
        dirs.append(cur)
        subs = [f"{_ident(rng, 1)}{len(dirs)}_{k}" for k in range(rng.choice([0, 1, 2, 3, 4]))]
        files = [f"{_ident(rng, 1)}_{k}.{rng.choice(_EXTS)}" for k in range(rng.choice([1, 3, 6, 15, 40]))]
        if out:
            out.append("")
        out += [f"{cur}:", f"total {rng.randint(8, 900)}",
                "drwxr-xr-x  4 dev dev  4096 Mar  3 10:12 .", "drwxr-xr-x 12 dev dev  4096 Mar  3 10:12 .."]
        entries_here = [(s, True) for s in subs] + [(f, False) for f in files]
        for name, is_dir in sorted(entries_here):
            if is_dir:
                out.append(f"drwxr-xr-x  2 dev dev  4096 Mar  3 10:12 {name}")
                todo.append(f"{cur}/{name}")
            else:
                out.append(f"-rw-r--r--  1 dev dev {rng.randint(10, 99999):5d} Feb 28  2024 {name}")
        if rng.random() < 0.1:
            out.append("lrwxrwxrwx  1 dev dev    12 Mar  3 10:12 current -> releases/v2")
    return Sample("\n".join(out) + "\n", extra={"dirs": dirs})


def pytest_json_report(tests: int = 300, failures: int = 25, seed: int = 19) -> Sample:
    """A pytest-json-report document with `failures` failed tests and one collection error."""
    rng = random.Random(seed)
    fail_at = set(rng.sample(range(tests), failures))
    mods = [f"tests/test_{_ident(rng, 1)}_{i}.py" for i in range(max(3, tests // 25))]
    collectors = [{"nodeid": "", "outcome": "passed", "result": [{"nodeid": m, "type": "Module"} for m in mods]}]
    collectors += [{"nodeid": m, "outcome": "failed" if i == 1 else "passed",
                    "result": [] if i == 1 else [{"nodeid": f"{m}::test_{k}", "type": "Function", "lineno": k}
                                                 for k in range(tests // len(mods))],
                    **({"longrepr": f"ImportError while importing test module '{m}'"} if i == 1 else {})}
                   for i, m in enumerate(mods)]
    items = []
    for i in range(tests):
        mod = mods[i % len(mods)]
        failed = i in fail_at
        call = {"duration": round(rng.random() / 50, 5), "outcome": "failed" if failed else "passed"}
        if failed:
            msg = f"AssertionError: assert {rng.randint(0, 99)} == {rng.randint(100, 199)}"
            call |= {"crash": {"path": f"/home/dev/proj/{mod}", "lineno": 10 + i, "message": msg},
                     "traceback": [{"path": mod, "lineno": 10 + i, "message": "AssertionError"}],
                     "longrepr": f"def test_{i}():\n>       assert value == expected\nE       {msg}\n\n{mod}:{10 + i}: AssertionError"}
        items.append({"nodeid": f"{mod}::test_{_ident(rng)}_{i}", "lineno": 10 + i, "outcome": call["outcome"],
                      "keywords": [f"test_{i}", mod.rsplit("/", 1)[1], "proj"],
                      "setup": {"duration": 0.0001, "outcome": "passed"}, "call": call,
                      "teardown": {"duration": 0.0001, "outcome": "passed"}})
    doc = {"created": 1717000000.5, "duration": 3.2, "exitcode": 1, "root": "/home/dev/proj",
           "environment": {"Python": "3.12.3", "Platform": "Linux-6.8-x86_64"},
           "summary": {"failed": failures, "passed": tests - failures, "total": tests, "collected": tests},
           "collectors": collectors, "tests": items, "warnings": []}
    return Sample(json.dumps(doc, indent=2), extra={"failed": sorted(fail_at), "doc": doc})


def bandit_report(findings: int = 240, medium_high: int = 8, seed: int = 20) -> Sample:
    """`bandit -f json`: mostly LOW findings, `medium_high` MEDIUM/HIGH ones, a metrics map."""
    rng = random.Random(seed)
    hot = set(rng.sample(range(findings), medium_high))
    files = [f"src/{_ident(rng, 1)}/{_ident(rng, 1)}_{i}.py" for i in range(40)]
    results = []
    for i in range(findings):
        sev = rng.choice(["MEDIUM", "HIGH"]) if i in hot else "LOW"
        tid = rng.choice(["B608", "B602", "B307"]) if i in hot else rng.choice(["B101", "B110", "B311"])
        f = rng.choice(files)
        results.append({"code": f"{i} x = compute()\n", "col_offset": 4, "end_col_offset": 20,
                        "filename": f, "issue_confidence": "HIGH", "issue_cwe": {"id": 703, "link": "https://cwe.mitre.org/data/definitions/703.html"},
                        "issue_severity": sev, "issue_text": f"Finding {tid} at {i}", "line_number": i,
                        "line_range": [i], "more_info": f"https://bandit.readthedocs.io/en/1.7.9/plugins/{tid.lower()}.html",
                        "test_id": tid, "test_name": f"check_{tid.lower()}"})
    metrics = {f: {"CONFIDENCE.HIGH": 1, "SEVERITY.LOW": 1, "loc": rng.randint(10, 900), "nosec": 0} for f in files}
    doc = {"errors": [], "generated_at": "2024-06-01T00:00:00Z", "metrics": {"_totals": {"loc": 9000}, **metrics},
           "results": results}
    return Sample(json.dumps(doc, indent=2), extra={"hot": sorted(hot)})


def generated_listings() -> list[tuple[str, Sample]]:
    return [("find 20k", find_listing()), ("find -type d", find_listing(3000, seed=21, dirs_only=True)),
            ("ls -laR 6k", ls_laR_listing())]
