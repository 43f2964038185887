"""`scripts/count_instructions.py`: reading callgrind's dumps, the table, and (opt-in, needs
valgrind) a real run."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import count_instructions as ci  # noqa: E402


def test_summary_is_read_from_a_dump(tmp_path):
    dump = tmp_path / "callgrind.out.1.1"
    dump.write_text("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 1\n"
                    "cmd:  python mitmdump\npart: 1\n\npositions: line\nevents: Ir\n"
                    "summary: 4321987\n\nfl=(1) x.c\nfn=(1) f\n1 5\n\ntotals: 4321987\n")
    assert ci.summary_of(dump) == 4321987


def test_a_file_without_a_summary_is_an_error(tmp_path):
    other = tmp_path / "not-a-dump"
    other.write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no summary"):
        ci.summary_of(other)


def test_table_rows_compare_with_plain():
    counts = {"plain": ci.per_request(4_000_000_000, 400),
              "off": ci.per_request(4_300_000_000, 400)}
    assert counts == {"plain": 10_000_000.0, "off": 10_750_000.0}
    assert ci.rows(counts) == [
        ["mitmdump", "10,000", "-"],
        ["Headroom, headroom_compress=off", "10,750", "+750 k (+7.5 %)"],
    ]
    # without plain in the run there is nothing to compare with
    assert ci.rows({"off": 10_750_000.0})[0][2] == "-"
    with pytest.raises(ValueError):
        ci.per_request(1, 0)


def test_targets_are_checked():
    assert ci.parse_args(["--targets", "off, defaults"]).targets == ["off", "defaults"]
    for bad in (["--targets", "plain,fast"], ["--targets", ","], ["--requests", "0"]):
        with pytest.raises(SystemExit):
            ci.parse_args(bad)


def test_each_target_is_the_proxy_it_names(tmp_path):
    mode = "reverse:http://127.0.0.1:1"
    args = {k: " ".join(ci.make_proxy(k, mode, workdir=tmp_path / k).args()) for k in ci.TARGETS}
    assert "headroom.py" not in args["plain"] and "null_addon.py" not in args["plain"]
    assert "null_addon.py" in args["hooks"] and "headroom.py" not in args["hooks"]
    assert "headroom.py" in args["off"] and "headroom_compress=off" in args["off"]
    assert "headroom.py" in args["defaults"] and "headroom_compress" not in args["defaults"]
    with pytest.raises(ValueError, match="unknown target"):
        ci.make_proxy("fast", mode, workdir=tmp_path)


@pytest.mark.slow
def test_counts_a_real_run():
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "count_instructions.py"),
                          "--requests", "24", "--warmup", "8", "--targets", "plain,off"],
                         capture_output=True, text=True, timeout=1200, check=True,
                         cwd=ROOT).stdout
    counted = {}
    for line in out.splitlines():
        m = re.match(r"(\S.*?)\s{2,}([\d,]+)\s", line)
        if m:
            counted[m.group(1)] = float(m.group(2).replace(",", ""))
    plain, off = counted["mitmdump"], counted["Headroom, headroom_compress=off"]
    assert plain > 100  # thousands of instructions per request: something was counted
    assert off > plain  # Headroom's hooks run on top of mitmproxy's own work
