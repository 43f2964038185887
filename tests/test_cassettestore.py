"""The cassette folder as a response store: load once, serve from memory, never churn, skip what is
broken (loudly), write nothing when read-only."""

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

from headroom_core import cachekey, cassette, options
from headroom_core.store import Entry
from headroom_runtime.cassettestore import CassetteStore, open_cassette
from headroom_runtime.cassettewriter import Helper
from headroom_runtime.degrade import Degradations
from headroom_runtime.state import resolved_mode
from tests.e2e.fake_upstream import anthropic_stream
from tests.mounts import read_only

SSE = [(b"content-type", b"text/event-stream")]


def canon(text="hi", model="claude-x"):
    return cachekey.canonical_request(
        provider="anthropic", endpoint="messages", method="POST", host="api.anthropic.com",
        path="/v1/messages", fields=[], tenant=cassette.TENANT,
        body=json.dumps({"model": model, "stream": True,
                         "messages": [{"role": "user", "content": text}]}).encode())


def entry(text="hi", n=3, dt=0.002, answer="Hello"):
    return Entry(200, SSE, b"", [(i * dt, p) for i, p in
                                 enumerate(anthropic_stream("claude-x", n, answer))], canon(text))


def record(store, text="hi", **kw):
    e = entry(text, **kw)
    key = cachekey.request_key(e.request)
    assert store.put(key, e, complete=True)
    return key, e


def snapshot(d):
    return {p.relative_to(d): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(d.rglob("*"))}


def test_recordings_are_files_a_new_store_serves(tmp_path):
    d = tmp_path / "cassette"
    key, e = record(CassetteStore(d))
    [f] = d.iterdir()
    assert f.name == f"anthropic-messages-claude-x-{key[:12]}.json"
    assert oct(f.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    again = CassetteStore(d, read_only=True)
    got = again.get(key)
    assert got.body == e.body and again.get(key, tenant="t:someone") is None
    assert again.get(key, tenant=cassette.TENANT) is got  # served from memory
    [(k, meta)] = list(again.entries())
    assert k == key and meta["model"] == "claude-x" and meta["file"] == f.name
    assert meta["tenant"] == cassette.TENANT and meta["response_stream"] is True
    assert again.problems == [] and again.miss_note() is None


def current_umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_re_recording_the_same_answer_leaves_the_file_alone(tmp_path):
    d = tmp_path / "c"
    store = CassetteStore(d)
    key, _ = record(store, dt=0.002)
    before = snapshot(d)
    assert store.put(key, entry(dt=0.5), complete=True)  # other delays, same answer
    assert CassetteStore(d).put(key, entry(dt=0.0), complete=True)
    assert snapshot(d) == before
    assert store.put(key, entry(answer="Changed"), complete=True)
    after = snapshot(d)
    assert list(after) == list(before) and after != before  # same file, new answer
    assert b"Changed" in CassetteStore(d).get(key).body


def test_read_only_store_writes_nothing_and_a_missing_folder_is_empty(tmp_path):
    d = tmp_path / "nope"
    store = CassetteStore(d, read_only=True)
    assert store.get("0" * 64) is None and not store.has_files
    assert not store.put(cachekey.request_key(canon()), entry(), complete=True)
    assert not d.exists()
    assert store.miss_note() == f"Cassette {d} holds no recordings."


def test_incomplete_and_error_answers_are_refused(tmp_path):
    store = CassetteStore(tmp_path)
    e = entry()
    key = cachekey.request_key(e.request)
    assert not store.put(key, e, complete=False)
    assert not store.put(key, Entry(500, SSE, b"x", None, e.request), complete=True)
    assert not store.put(key, Entry(200, SSE, b"x", None, None), complete=True)
    assert list(tmp_path.iterdir()) == []


def test_broken_files_are_reported_with_name_and_line_and_skipped(tmp_path, caplog):
    d = tmp_path / "c"
    store = CassetteStore(d)
    good, _ = record(store, "good")
    bad_key, _ = record(store, "bad")
    bad = store.path_of(bad_key)
    text = bad.read_text()
    bad.write_text(text.replace('"status": 200', '"status": 200,\n    "status": 200'))
    (d / "garbage.json").write_text("{\n  oops\n")
    (d / "notes.txt").write_text("not a cassette file")
    caplog.set_level(logging.WARNING)
    again = CassetteStore(d, read_only=True)
    assert again.get(good) is not None and again.get(bad_key) is None
    assert [k for k, _ in again.entries()] == [good]
    said = [r.getMessage() for r in caplog.records]
    assert any(bad.name in m and '"line":' in m and "duplicated key" in m for m in said)
    assert any("garbage.json" in m and '"line":2' in m for m in said)
    assert again.problems == [
        f"{bad.name}: line {text[:text.index('\"status\"')].count(chr(10)) + 2}: "
        "duplicated key 'status' in response",
        "garbage.json: line 2: invalid JSON: Expecting property name enclosed in double quotes"]
    note = again.miss_note()
    assert note.startswith(f"Cassette {d}: 2 file(s) skipped: ") and "garbage.json" in note


def test_two_files_with_one_recording_are_both_skipped_until_one_goes(tmp_path, caplog):
    d = tmp_path / "c"
    key, _ = record(CassetteStore(d))
    [f] = d.iterdir()
    shutil.copy(f, d / "copy.json")
    store = CassetteStore(d, read_only=True, rescan_interval=0)
    assert store.get(key) is None and len(store.problems) == 2
    assert store.problems[0].endswith("the same recording (key) as copy.json")
    (d / "copy.json").unlink()
    assert store.get(key) is not None and store.problems == []


def test_files_changed_on_disk_are_read_again(tmp_path):
    d = tmp_path / "c"
    key, e = record(CassetteStore(d))
    store = CassetteStore(d, read_only=True, rescan_interval=0)
    path = store.path_of(key)
    path.write_text(path.read_text().replace('"text":"Hello 1 ', '"text":"Howdy 1 '))
    assert b"Howdy 1" in store.get(key).body
    key2, _ = record(CassetteStore(d), "second")
    assert store.get(key2) is not None
    path.unlink()
    assert store.get(key) is None and [k for k, _ in store.entries()] == [key2]


def test_rescans_are_rate_limited(tmp_path):
    d = tmp_path / "c"
    now = [0.0]
    store = CassetteStore(d, rescan_interval=1.0, clock=lambda: now[0])
    key, _ = record(CassetteStore(d))
    assert store.get(key) is None
    now[0] = 1.0
    assert store.get(key) is not None


def test_prune_and_clear(tmp_path):
    d = tmp_path / "c"
    store = CassetteStore(d)
    record(store, "a")
    record(store, "b")
    assert store.prune() == 0 and store.prune(provider="openai") == 0
    # A file's time says nothing of when it was recorded or last used: re-recording the same
    # answer leaves an old file as it is, and a fresh checkout makes every file new.
    old = time.time() - 30 * 86400
    for f in d.iterdir():
        os.utime(f, (old, old))
    with pytest.raises(ValueError, match="no recording time"):
        store.prune(older_than=7 * 86400)
    assert len(list(d.iterdir())) == 2
    assert store.clear() == 2 and list(d.iterdir()) == []


# -- opening and modes ---------------------------------------------------------------------------


def config(tmp_path, **kw):
    return options.make(dir=str(tmp_path / "hr"), cassette=str(tmp_path / "cassette"), **kw)


@pytest.mark.parametrize("mode,files,read_only,resolved", [
    ("off", False, True, "replay"), ("replay", False, True, "replay"),
    ("record", False, False, "record"), ("cache", True, False, "cache"),
    ("once", False, False, "record"), ("once", True, True, "replay"),
])
def test_modes(tmp_path, mode, files, read_only, resolved):
    if files:
        record(CassetteStore(tmp_path / "cassette"))
    cfg = config(tmp_path, store_mode=mode)
    store = open_cassette(cfg, Degradations())
    assert store.read_only is read_only and resolved_mode(cfg, store) == resolved


def test_once_replays_a_cassette_of_broken_files_rather_than_record_over_them(tmp_path):
    (tmp_path / "cassette").mkdir()
    (tmp_path / "cassette" / "x.json").write_text("{")
    cfg = config(tmp_path, store_mode="once")
    store = open_cassette(cfg, Degradations())
    assert store.read_only and resolved_mode(cfg, store) == "replay"


def test_a_folder_that_cannot_be_written_is_reported(tmp_path, caplog):
    d = tmp_path / "cassette"
    d.mkdir()
    (d / "keep").write_text("")
    caplog.set_level(logging.WARNING)
    with read_only(d):
        degrade = Degradations()
        store = open_cassette(config(tmp_path, store_mode="record"), degrade)
        assert store.read_only and degrade.status["store"] == "read-only"
        assert not store.put(cachekey.request_key(canon()), entry(), complete=True)
    assert any("cassette not writable" in r.getMessage() for r in caplog.records)


# -- the helper process that encodes and writes ---------------------------------------------------


def test_the_helper_writes_what_inline_writing_writes(tmp_path):
    helper = Helper()
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        gz = Entry(200, [*SSE, (b"content-encoding", b"gzip")], b"",
                   [(0.0, gzip.compress(b"".join(anthropic_stream("claude-x", 3))))],
                   canon("gz"))
        for e in (entry("x"), gz):
            key = cachekey.request_key(e.request)
            assert CassetteStore(a, helper=helper).put(key, e, complete=True)
            assert CassetteStore(b).put(key, e, complete=True)
        assert snapshot_bytes(a) == snapshot_bytes(b)
        proc = helper._proc
        assert proc is not None and proc.poll() is None and helper.failed is None
        # what is served right after the write is what a reader of the file gets
        store = CassetteStore(a, helper=helper)
        key = cachekey.request_key(gz.request)
        served = store.get(key)
        assert store.put(key, gz, complete=True)  # the same answer: nothing written
        assert store.get(key) is served
        store2 = CassetteStore(tmp_path / "c", helper=helper)
        assert store2.put(key, gz, complete=True)
        fresh, reread = store2.get(key), CassetteStore(tmp_path / "c").get(key)
        assert (fresh.headers, fresh.body, fresh.chunks) == (
            reread.headers, reread.body, reread.chunks)
        assert b"content-encoding" not in dict(fresh.headers)
    finally:
        helper.close()
    assert proc.poll() is not None


def snapshot_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_a_helper_that_died_is_started_again(tmp_path):
    helper = Helper()
    try:
        store = CassetteStore(tmp_path / "c", helper=helper)
        record(store, "first")
        first = helper._proc
        first.kill()
        first.wait()
        record(store, "second")
        assert helper._proc is not first and helper.failed is None
    finally:
        helper.close()


def test_a_helper_that_breaks_mid_write_leaves_the_writing_to_the_proxy(tmp_path, caplog,
                                                                        monkeypatch):
    helper = Helper()
    # a helper that reads a little and exits without answering
    monkeypatch.setattr(helper, "_start", lambda: subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.buffer.read(8)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    caplog.set_level(logging.WARNING)
    store = CassetteStore(tmp_path / "c", helper=helper)
    key, _ = record(store, "second")  # still recorded, in this process
    assert helper.failed in ("EOFError", "BrokenPipeError")
    assert CassetteStore(tmp_path / "c").get(key) is not None
    assert [r.getMessage() for r in caplog.records
            if "cassette_helper_unavailable" in r.getMessage()] == [
        f"cassette_helper_unavailable {helper.failed}"]
    record(store, "third")
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_a_helper_that_cannot_start_leaves_the_writing_to_the_proxy(tmp_path, monkeypatch):
    helper = Helper()
    monkeypatch.setattr(helper, "_start", lambda: (_ for _ in ()).throw(OSError("no python")))
    key, _ = record(CassetteStore(tmp_path / "c", helper=helper))
    assert helper.failed == "OSError" and CassetteStore(tmp_path / "c").get(key) is not None


def test_a_failed_write_in_the_helper_is_a_failed_write(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    helper = Helper()
    try:
        store = CassetteStore(tmp_path / "file" / "c", helper=helper)
        e = entry()
        assert not store.put(cachekey.request_key(e.request), e, complete=True)
        assert helper.failed is None  # the helper is fine; the folder is not
    finally:
        helper.close()
