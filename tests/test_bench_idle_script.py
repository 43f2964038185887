"""scripts/bench_idle.py: counts what it says, on real processes."""

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_idle  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def test_wakeups_counts_a_thread_that_sleeps_and_wakes():
    go, done, release = threading.Event(), threading.Event(), threading.Event()

    def napper():
        go.wait()
        for _ in range(20):
            time.sleep(0.005)
        done.set()
        release.wait(5)  # alive until counted

    t = threading.Thread(target=napper, daemon=True)
    t.start()
    time.sleep(0.05)

    def count():  # keyed "name (thread id)"; Python 3.12 names no OS thread
        return next(n for k, n in bench_idle.wakeups(os.getpid()).items()
                    if k.endswith(f"({t.native_id})"))

    try:
        before = count()
    finally:
        go.set()
    assert done.wait(5)
    try:
        assert count() - before >= 20
    finally:
        release.set()
    t.join()


def test_cpu_seconds_grows_with_work():
    c0 = bench_idle.bp.proc_cpu(os.getpid())
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    assert bench_idle.bp.proc_cpu(os.getpid()) - c0 >= 0.05


def test_main_measures_plain_mitmdump_and_headroom(capsys):
    assert bench_idle.main(["--seconds", "1", "--settle", "1.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["plain mitmdump", "Headroom defaults"]
    for line in out:
        assert "ms CPU per second idle" in line and "wake-ups/s" in line
