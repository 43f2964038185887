"""Print the README's options table from the option table (headroom_core.options.OPTIONS).

Usage: .venv/bin/python scripts/options_table.py [--write README.md]
With --write, the table between the README's option markers is replaced in place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headroom_core.options import markdown_table  # noqa: E402

BEGIN = "<!-- options:begin (scripts/options_table.py --write README.md) -->"
END = "<!-- options:end -->"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", metavar="README", help="replace the table in this file")
    args = ap.parse_args()
    table = markdown_table()
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text()
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < a:
        print(f"{path}: option markers not found", file=sys.stderr)
        return 1
    path.write_text(text[: a + len(BEGIN)] + "\n" + table + "\n" + text[b:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
