"""The batch threads: jobs run off the caller's thread within the interval, nothing queued is
lost, and an idle proxy's threads do not wake."""

import os
import threading
import time

import pytest

from headroom_runtime.background import Background
from headroom_runtime.eventlog import EventLog


def _wakeups(thread: threading.Thread) -> int:
    """How often `thread` went to sleep and was woken (Linux: voluntary context switches)."""
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


@needs_proc
def test_an_idle_background_thread_sleeps_until_work_arrives():
    bg = Background(interval=0.01)
    try:
        time.sleep(0.05)  # settled in its wait
        before = _wakeups(bg._thread)
        time.sleep(0.5)  # 50 intervals
        assert _wakeups(bg._thread) - before <= 1
        ran = threading.Event()
        bg.submit(ran.set)
        assert ran.wait(2)  # work still wakes it, without a flush
    finally:
        bg.close()


@needs_proc
def test_an_idle_event_log_thread_sleeps_and_a_record_still_lands(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, interval=0.01)
    try:
        time.sleep(0.05)
        before = _wakeups(log._thread)
        time.sleep(0.5)
        assert _wakeups(log._thread) - before <= 1
        log.record({"n": 1})
        deadline = time.monotonic() + 2
        while not path.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.read_bytes() == b'{"n":1}\n'  # written by the thread's own timer
    finally:
        log.close()


def test_jobs_run_in_the_thread_in_order_and_jobs_they_queue_are_flushed_too():
    bg = Background(interval=60)  # only flush (or close) makes it run before a minute
    seen = []

    def job(i):
        seen.append((i, threading.current_thread().name))
        if i == 2:
            bg.submit(job, 99)  # a finish queues its store write

    try:
        for i in range(5):
            bg.submit(job, i)
        assert seen == []  # batched, not run by submit
        assert bg.flush(timeout=5)
        assert [i for i, _ in seen] == [0, 1, 2, 3, 4, 99]
        assert {name for _, name in seen} == {"headroom-background"}
        seen.clear()
        bg.submit(job, 7)  # the queue empty again: the next batch starts a new wait
        assert bg.flush(timeout=5) and [i for i, _ in seen] == [7]
    finally:
        bg.close()


def test_a_failing_job_is_logged_and_the_rest_run(caplog):
    bg = Background(interval=60)
    seen = []
    try:
        bg.submit(lambda: 1 / 0)
        bg.submit(seen.append, "after")
        assert bg.flush(timeout=5)
        assert seen == ["after"]
        assert any("ZeroDivisionError" in r.getMessage() for r in caplog.records)
    finally:
        bg.close()


def test_close_runs_what_is_queued_and_later_jobs_run_at_once():
    bg = Background(interval=60)
    seen = []
    for i in range(3):
        bg.submit(seen.append, i)
    bg.close()  # does not wait the minute
    assert seen == [0, 1, 2] and not bg._thread.is_alive()
    bg.submit(seen.append, 3)  # after close: right here, never lost
    assert seen == [0, 1, 2, 3]


def test_many_producers_lose_no_job():
    bg = Background(interval=0.001)
    count = [0]
    lock = threading.Lock()

    def job():
        with lock:
            count[0] += 1

    def produce():
        for _ in range(2000):
            bg.submit(job)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bg.flush(timeout=10)
    bg.close()
    assert count[0] == 8000
