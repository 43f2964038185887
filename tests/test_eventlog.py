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


def test_rotates_past_max_bytes_and_keeps_a_few_files(tmp_path):
    from headroom_runtime.eventlog import rotated

    p = tmp_path / "events.jsonl"
    ev = EventLog(p, max_bytes=2000, keep=3)
    n = 0
    for _ in range(12):  # ~1 KB per batch: a rotation every third batch
        for _ in range(10):
            ev.record({"i": n, "pad": "x" * 80})
            n += 1
        assert ev.flush()
    ev.close()
    assert ev.rotations == 4
    files = [*rotated(p), *([p] if p.exists() else [])]  # reopened with the next batch
    assert [f.name for f in files[:3]] == ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1"]
    assert not (tmp_path / "events.jsonl.4").exists()
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    seen = [r["i"] for r in lines]
    assert seen == list(range(seen[0], n))  # oldest files dropped whole, nothing lost inside
    assert all(f.stat().st_size < 2000 + 1100 for f in files)
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_rotation_counts_what_the_file_had_before(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"old": 1}\n' * 200)  # 2.2 KB already
    ev = EventLog(p, max_bytes=2048)
    ev.record({"new": 1})
    assert ev.flush()
    ev.close()
    assert (tmp_path / "events.jsonl.1").read_text().count("\n") == 201
    assert ev.rotations == 1


def test_no_rotation_by_default(tmp_path):
    p = tmp_path / "events.jsonl"
    ev = EventLog(p)
    for i in range(300):
        ev.record({"i": i, "pad": "x" * 200})
    assert ev.flush()
    ev.close()
    assert ev.rotations == 0 and not (tmp_path / "events.jsonl.1").exists()


def test_a_record_with_keys_that_are_not_strings_or_values_json_lacks_is_kept(tmp_path):
    import datetime
    import orjson
    log = EventLog(tmp_path / "e.jsonl")
    when = datetime.date(2026, 12, 6)
    records = [{"flow_id": "a", "decisions": {1: "one", "x": {2.5: True}}},
               {"flow_id": "b", "at": when, "n": 3},
               {"flow_id": "c", "decisions": {"rewrite": {"actions": {"compressed": 1}}}}]
    for r in records:
        log.record(r)
    log.close()
    lines = (tmp_path / "e.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x) for x in lines] == [
        {"flow_id": "a", "decisions": {"1": "one", "x": {"2.5": True}}},
        {"flow_id": "b", "at": str(when), "n": 3},
        {"flow_id": "c", "decisions": {"rewrite": {"actions": {"compressed": 1}}}}]
    assert log.dropped == 0
