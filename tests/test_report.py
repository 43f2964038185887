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


def test_html_page_and_cost_from_an_events_file_with_rotated_ones(tmp_path, capsys):
    from tests.html_check import check

    events = write_events(tmp_path / "events.jsonl")
    old = {"session_id": "gamma", "status": 200, "model": "claude-sonnet-4-5",
           "session_label": "claude-code · ~/old", "ts": "2026-01-02T03:04:05.000Z",
           "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}
    (tmp_path / "events.jsonl.1").write_bytes(orjson.dumps(old) + b"\n")
    out = tmp_path / "report.html"
    assert report.main([str(events), "--html", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert "read 2 files: events.jsonl.1, events.jsonl" in err
    assert "claude-code · ~/old" in stdout and "cost $3.00" in stdout
    page = check(out.read_text())
    assert page.meta_refresh is None and "claude-code · ~/old" in page.text
    assert "#s-gamma" in page.links and "Since 2026-01-02" in page.text


def test_price_override_for_a_report(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps({"session_id": "a", "model": "house-model", "status": 200,
                                     "usage": {"input_tokens": 2_000_000}}) + b"\n")
    assert report.main([str(events)]) == 0
    assert "cost $0 (priced requests: 0, unpriced: 1)" in capsys.readouterr().out
    prices = tmp_path / "prices.json"
    prices.write_text('{"models": {"house-model": {"input": 0.5, "output": 1}}}')
    assert report.main([str(events), "--prices", str(prices)]) == 0
    assert "cost $1.00 (priced requests: 1" in capsys.readouterr().out
    prices.write_text("[]")
    assert report.main([str(events), "--prices", str(prices)]) == 2
    assert capsys.readouterr().err.startswith("--prices: invalid value")


def test_events_file_or_api_not_both(tmp_path):
    with pytest.raises(SystemExit):
        report.main([])
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "e.jsonl"), "--api", "http://127.0.0.1:9"])


def test_api_that_does_not_answer(capsys):
    assert report.main(["--api", "http://127.0.0.1:9"]) == 2
    assert "cannot read http://127.0.0.1:9" in capsys.readouterr().err
