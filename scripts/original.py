"""Print an original tool output that Headroom compressed, by the handle in its marker.

    .venv/bin/python scripts/original.py 3f9a…            # handle or the whole marker URL
    .venv/bin/python scripts/original.py --dir ~/.headroom 3f9a…

Reads `<headroom_dir>/originals` directly; the proxy need not run. Through a running proxy the
same text is at http://headroom.local/ccr/<handle>.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headroom_core.originals import is_handle  # noqa: E402
from headroom_runtime.diskoriginals import Originals  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("handle", help="the handle (or a .../ccr/<handle> URL) from a marker")
    ap.add_argument("--dir", default=os.path.expanduser("~/.headroom"),
                    help="headroom_dir (default ~/.headroom)")
    args = ap.parse_args(argv)
    handle = args.handle.rstrip("/]").rsplit("/", 1)[-1]
    if not is_handle(handle):
        print(f"not a handle: {args.handle!r}", file=sys.stderr)
        return 2
    path = Path(args.dir) / "originals"
    if not path.exists():
        print(f"no originals kept under {args.dir}", file=sys.stderr)
        return 1
    with Originals(path) as originals:
        text = originals.get(handle)
    if text is None:
        print(f"no original kept under {handle}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
