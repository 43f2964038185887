"""headroom_core stays sans-IO: no mitmproxy, no I/O, thread or event-loop module; the runtime no mitmproxy."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "headroom_core"


def test_no_mitmproxy_import_in_source():
    offenders = []
    for f in CORE.rglob("*.py"):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{f.name}: {n}" for n in names if n.split(".")[0] == "mitmproxy"]
    assert offenders == []


def test_core_imports_without_mitmproxy_installed():
    # Import every core module in a fresh interpreter where `import mitmproxy` fails.
    mods = sorted(
        ".".join(p.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in CORE.rglob("*.py")
    )
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'mitmproxy': raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=CORE.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# I/O, threads and event loops belong to headroom_runtime (or the adapter), never to the core.
FORBIDDEN_IN_CORE = {"asyncio", "socket", "selectors", "subprocess", "sqlite3", "diskcache",
                     "redis", "concurrent", "multiprocessing", "http", "urllib.request",
                     "shutil", "tempfile", "mitmproxy",
                     # metrics exposition (prometheus-client pulls in an HTTP server) belongs to
                     # the runtime; the core only counts (figures.py)
                     "prometheus_client", "importlib.resources"}


def _imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_core_imports_no_io_thread_or_event_loop_module():
    offenders = [f"{f.relative_to(CORE.parent)}: {m}" for f in CORE.rglob("*.py")
                 for m in _imports(f)
                 if m in FORBIDDEN_IN_CORE or m.split(".")[0] in FORBIDDEN_IN_CORE]
    assert offenders == []


def test_core_starts_no_thread_and_opens_no_file():
    offenders = []
    for f in CORE.rglob("*.py"):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("Thread", "Timer"):
                offenders.append(f"{f.name}: threading.{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "open":
                offenders.append(f"{f.name}: open()")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "os" and node.attr in ("open", "makedirs", "mkdir",
                                                                "remove", "unlink", "chmod"):
                offenders.append(f"{f.name}: os.{node.attr}")
    assert offenders == []


def test_runtime_never_imports_mitmproxy():
    runtime = CORE.parent / "headroom_runtime"
    offenders = [f"{f.name}: {m}" for f in runtime.rglob("*.py") for m in _imports(f)
                 if m.split(".")[0] == "mitmproxy"]
    assert offenders == []
