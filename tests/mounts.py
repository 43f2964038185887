"""Real read-only and full filesystems for tests (root: mounts; otherwise chmod or a skip)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` (a folder with content) made read-only for everyone, root included when we can
    mount; for a non-root user, chmod does the same job."""
    if _mount("--bind", str(path), str(path)):
        try:
            if not _mount("-o", "remount,bind,ro", str(path)):
                pytest.skip("cannot remount read-only here")
            yield path
        finally:
            _umount(path)
        return
    if os.geteuid() == 0:
        pytest.skip("running as root without mount: cannot make a folder read-only")
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield path
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "256k"):
    """A fresh tmpfs of `size` at `path`: writes fail with ENOSPC once it is full."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)):
        pytest.skip("cannot mount a small tmpfs here (needs root): no full-disk test")
    try:
        yield path
    finally:
        _umount(path)


def fill(path: Path) -> None:
    """Fill the filesystem under `path` to the last byte."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
