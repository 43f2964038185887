"""headroom_core must stay sans-IO: no module imports mitmproxy, directly or indirectly."""

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
