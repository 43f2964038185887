"""Private state: everything Headroom creates or opens under headroom_dir is 0700 / 0600."""

import os
import stat

from headroom_core import options
from headroom_core.store import Entry
from headroom_runtime import private
from headroom_runtime.runtime import Runtime


def modes(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        out[dirpath] = stat.S_IMODE(os.stat(dirpath).st_mode)
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[p] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def assert_private(root):
    bad = {p: oct(m) for p, m in modes(root).items()
           if m != (private.DIR_MODE if os.path.isdir(p) else private.FILE_MODE)}
    assert bad == {}


def test_pre_existing_state_with_wide_modes_is_fixed_and_new_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        d = tmp_path / "hr"
        Runtime(options.make(dir=str(d), store_mode="cache")).close()
        for p, m in modes(d).items():  # widen everything, as an older version or umask left it
            os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
        (d / "events.jsonl").write_text("{}\n")
        os.chmod(d / "events.jsonl", 0o644)
        rt = Runtime(options.make(dir=str(d), store_mode="cache"))
        rt.state.store.put("k" * 64, Entry(200, [], b"x" * 200_000), complete=True)  # a value file
        rt.state.originals.put("t:a", "original text " * 5000, salt=rt.state.salt)
        rt.events.record({"a": 1})
        rt.flush()
        rt.close()
        assert_private(d)
        assert any(p.endswith(".val") for p in modes(d))  # large values live in files
    finally:
        os.umask(old)


def test_ensure_dir_creates_every_missing_level_private(tmp_path):
    old = os.umask(0o000)
    try:
        private.ensure_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700


def test_a_mode_that_cannot_be_fixed_is_reported_once_not_raised(tmp_path, caplog, monkeypatch):
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o644)

    def refuse(*a, **k):
        raise PermissionError("not yours")

    monkeypatch.setattr(os, "chmod", refuse)
    assert private.chmod(f, 0o600) is False
    assert private.chmod(f, 0o600) is False
    assert sum("private_mode_unfixable" in r.getMessage() for r in caplog.records) == 1
