import json
import threading

from headroom_runtime.eventlog import EventLog


def test_lines_written_in_order_and_parseable(tmp_path):
    p = tmp_path / "sub" / "events.jsonl"
    ev = EventLog(p)
    for i in range(500):
        ev.record({"i": i, "nested": {"x": [1, 2]}, "path": tmp_path})
    assert ev.flush()
    lines = p.read_text().splitlines()
    assert [json.loads(x)["i"] for x in lines] == list(range(500))
    assert json.loads(lines[0])["path"] == str(tmp_path)  # unknown types become strings
    ev.close()


def test_concurrent_writers_never_interleave(tmp_path):
    p = tmp_path / "e.jsonl"
    ev = EventLog(p)

    def work(t):
        for i in range(200):
            ev.record({"t": t, "i": i, "pad": "x" * 300})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ev.close()
    recs = [json.loads(x) for x in p.read_text().splitlines()]
    assert len(recs) == 1600
    for t in range(8):
        assert [r["i"] for r in recs if r["t"] == t] == list(range(200))


def test_disabled_log_records_nothing(tmp_path):
    ev = EventLog(None)
    ev.record({"a": 1})
    assert ev.flush()
    ev.close()
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_does_not_raise(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    ev = EventLog(d)  # a directory: open() fails in the writer thread
    ev.record({"a": 1})
    ev.flush()
    assert ev.dropped == 1
    ev.close()
