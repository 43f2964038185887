import subprocess
import sys
from pathlib import Path

from headroom_runtime.diskoriginals import Originals

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "original.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_prints_original_by_handle_or_url(tmp_path):
    with Originals(tmp_path / "originals") as o:
        h = o.put("t:1", "line 1\nline 2 ✓\n", salt=b"s" * 16)
    r = run("--dir", str(tmp_path), h)
    assert r.returncode == 0 and r.stdout == "line 1\nline 2 ✓\n"
    r = run("--dir", str(tmp_path), f"http://headroom.local/ccr/{h}]")
    assert r.stdout == "line 1\nline 2 ✓\n"
    assert run("--dir", str(tmp_path), "0" * 32).returncode == 1
    assert run("--dir", str(tmp_path), "nope").returncode == 2
