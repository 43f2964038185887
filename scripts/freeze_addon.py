"""A mitmproxy addon that only freezes the startup heap, as Headroom does (headroom_runtime.heap).

`scripts/bench_proxy.py` runs plain mitmdump with it as a reference: Headroom's `gc.freeze()`
speeds up mitmproxy's own work too, and the ratio against this target shows what Headroom costs
beyond that.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from headroom_runtime import heap  # noqa: E402


class FreezeHeap:
    def running(self) -> None:
        heap.freeze_startup()

    def done(self) -> None:
        heap.thaw()


addons = [FreezeHeap()]
