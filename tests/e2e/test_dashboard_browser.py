"""Opt-in: the dashboard rendered by headless Chromium, as a person would see it; screenshots
are saved for a human look (`./headroom test -m browser`; `scripts/install_chromium.sh` first).
Set HEADROOM_SCREENSHOTS=DIR to keep them; otherwise they go to pytest's tmp_path."""

import os
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_dashboard import traffic  # noqa: F401  (module fixture: the same traffic)

pytestmark = pytest.mark.browser
W, H = 1280, 1600


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium on PATH: run scripts/install_chromium.sh (Debian package chromium)")


def run_chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars",
            f"--window-size={W},{H}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=str(tmp))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def out_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("HEADROOM_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.parametrize("page", ["overview", "session"])
def test_dashboard_renders_in_chromium(traffic, tmp_path, page):  # noqa: F811
    p, _ = traffic
    if page == "overview":
        url = f"{p.url}/headroom/?refresh=0"
        expect = "claude-code · ~/src/shop"
    else:
        rows = httpx.get(p.url + "/headroom/api/sessions").json()["sessions"]
        sid = next(r["id"] for r in rows if r["label"] == "claude-code · ~/src/shop")
        url = f"{p.url}/headroom/session/{sid}?refresh=0"
        expect = "compressed Bash"
    # (a reverse-mode listener cannot check the host name a browser used: the logged key)
    url += f"&key={p.browser_key()}"
    dom = run_chromium(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert expect in dom.stdout and "<svg" in dom.stdout
    shot = out_dir(tmp_path) / f"dashboard-{page}.png"
    r = run_chromium(url, tmp_path, f"--screenshot={shot}")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    assert png_size(shot) == (W, H) and shot.stat().st_size > 30_000  # not a blank page
    print(f"screenshot: {shot}")
