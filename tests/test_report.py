import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
spec = importlib.util.spec_from_file_location("headroom_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def write_events(path: Path) -> Path:
    lines = [
        orjson.dumps(
            {
                "session_id": "alpha",
                "status": 200,
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 4,
                    "cache_read_tokens": 90,
                    "cache_creation_tokens": 0,
                },
            }
        ),
        b"",
        b"{truncated json",
        orjson.dumps(
            {"session_id": "alpha", "status": 200, "usage": None, "stream_state": "truncated"}
        ),
        b"[1, 2, 3]",
        orjson.dumps(
            {
                "session_id": "beta",
                "status": 200,
                "usage": {"input_tokens": 1, "output_tokens": 1},
                "decisions": {"rewrite": {"tokens_saved": 250}},
            }
        ),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_prints_the_table_and_counts_malformed_lines(tmp_path, capsys):
    events = write_events(tmp_path / "events.jsonl")
    assert report.main([str(events)]) == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and line[0] != "-"}
    assert rows["alpha"] == ["alpha", "2", "10", "4", "90", "0", "90.0%", "1", "0"]
    assert rows["beta"][1] == "1" and rows["beta"][-1] == "250"
    assert rows["TOTAL"][1] == "3"
    assert "skipped 2 malformed lines" in err


def test_missing_file(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_plot_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    events = write_events(tmp_path / "events.jsonl")
    out_png = tmp_path / "out.png"
    assert report.main([str(events), "--plot", str(out_png)]) == 1
    out, err = capsys.readouterr()
    assert "TOTAL" in out  # the table is still printed
    assert "needs matplotlib" in err and not out_png.exists()


def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    events = write_events(tmp_path / "events.jsonl")
    out_png = tmp_path / "out.png"
    assert report.main([str(events), "--plot", str(out_png)]) == 0
    assert out_png.read_bytes().startswith(b"\x89PNG")


def test_runs_as_a_script(tmp_path):
    events = write_events(tmp_path / "events.jsonl")
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(events)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "TOTAL" in r.stdout
