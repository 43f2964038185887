"""`scripts/profile_engine.py --steps`: every step it names still exists and is timed, and the
nesting it prints holds (the parts of a step never add up to more than the step)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^(  +)(\S.*?)\s+(\d+\.\d)  \((\d+\.\d\d)\)$")


def _tables(out: str) -> dict[str, list[tuple[int, str, float, float]]]:
    tables: dict[str, list] = {}
    rows: list = []
    for line in out.splitlines():
        if line.startswith("-- steps, headroom_compress="):
            rows = tables[line.split("=")[1].split(":")[0]] = []
        elif (m := ROW.match(line)) is not None:
            rows.append((len(m.group(1)) // 2 - 1, m.group(2), float(m.group(3)),
                         float(m.group(4))))
    return tables


def test_steps_are_all_timed_and_nest():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_engine.py"), "--steps",
                          "--requests", "300"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    tables = _tables(out)
    assert set(tables) == {"off", "auto"}
    for mode, rows in tables.items():
        names = [r[1] for r in rows]
        for top in ("headers (event loop): index, internal off",
                    "request (event loop): all of it", "forwarded (event loop)",
                    "response handed over (event loop)", "accounting (background): all of it"):
            assert top in names
        for depth, name, us, calls in rows:
            if depth == 0 or name.startswith(("sticky", "response usage",
                                              "event record", "dashboard", "stats",
                                              "event-log", "session name", "flow state")):
                assert calls == 1.0, (mode, name, calls)  # once per request, every request
        parent = None
        parts = 0.0
        for depth, name, us, _ in [*rows, (0, "", 0.0, 0.0)]:
            if depth == 0:
                if parent is not None:
                    assert parts <= parent * 1.02 + 0.2, (mode, parent, parts)
                parent, parts = us, 0.0
            elif not name.startswith("session id"):  # (inside its siblings)
                parts += us
        # a connection's repeated header block: the tenant is worked out once per block
        tenant = [r for r in rows if r[1].startswith("tenant")]
        assert tenant and 0 < tenant[0][3] < 0.2, (mode, tenant)
    assert "turn memo: this turn from the last" in [r[1] for r in tables["auto"]]
    assert "turn memo: this turn from the last" not in [r[1] for r in tables["off"]]
