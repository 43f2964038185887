"""`scripts/first_event.py` runs end to end: three real mitmdumps, the probe addon inside each,
every part of the first event's path timed for every target."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_part_is_timed_for_every_target():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "first_event.py"), "--streams",
                          "2", "--events", "300", "--batch", "10"], capture_output=True,
                         text=True, timeout=300, check=True, cwd=ROOT).stdout
    sections = out.split("\n\n")[1:]
    assert [s.split(":")[0] for s in sections] == [
        "mitmdump stream_large_bodies=1", "mitmdump, request read, SSE via a callable",
        "mitmdump -s headroom.py"]
    for s in sections:
        rows = s.strip().splitlines()[1:]
        assert len(rows) == 6, s  # the upstream's stamp was read: no part left out
        for row in rows:
            qs = [float(x) for x in row.split()[-9::2]]
            assert qs == sorted(qs), row  # quantiles, in order
        # (a part may be below 0: with the request body streamed, the upstream can answer
        # before mitmproxy's request hooks have run)
        assert rows[-1].startswith("  total") and float(rows[-1].split()[-9]) > 0
