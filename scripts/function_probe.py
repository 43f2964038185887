"""A mitmproxy addon that counts the distinct Python functions another addon's hooks run per flow.

`scripts/count_functions.py` loads it before Headroom (`-s scripts/function_probe.py -s
addons/headroom.py`). Inside mitmdump each distinct function a hook touches is cold again
(mitmproxy's own work between two hooks evicts it from the CPU caches; docs/decisions.md says
how much a call turned out to be worth). In each of the four per-request hooks the probe,
which runs first, installs a profile function that records the code of every Python function
called while the watched addon's hook of that name is running (mitmproxy's dispatch around it is
not counted); the watched addon's own hook counts too. Flows `probe_skip` to
`probe_skip + probe_flows` are counted; `done` writes a JSON summary to `probe_out`.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from typing import Any

from mitmproxy import ctx

HOOKS = ("requestheaders", "request", "responseheaders", "response")


class Recorder:
    """Distinct code objects called inside `watched` functions, per key (a flow)."""

    def __init__(self, watched: set) -> None:
        self.watched = watched  # code objects of the hooks to look inside
        self.per_key: dict[Any, set] = {}
        self._current: set | None = None
        self._depth = 0

    def run(self, key: Any, fn, *args):
        """`arm`, then `fn(*args)`; recording ends with it at the latest."""
        self.arm(key)
        try:
            return fn(*args)
        finally:
            sys.setprofile(None)
            self._current = None

    def arm(self, key: Any) -> None:
        """Record from now until a watched function returns (the probe's hook, then the watched
        addon's hook of the same name)."""
        self._current = self.per_key.setdefault(key, set())
        self._depth = 0
        sys.setprofile(self._profile)

    def _profile(self, frame, event, arg) -> None:
        if event == "call":
            code = frame.f_code
            if self._depth:
                self._current.add(code)
                if code in self.watched:
                    self._depth += 1
            elif code in self.watched:
                self._current.add(code)
                self._depth = 1
        elif event == "return" and self._depth and frame.f_code in self.watched:
            self._depth -= 1
            if not self._depth:
                sys.setprofile(None)
                self._current = None

    def summary(self) -> dict:
        sizes = sorted(len(s) for s in self.per_key.values())
        seen: collections.Counter = collections.Counter()
        for s in self.per_key.values():
            seen.update(f"{c.co_name} ({os.path.basename(c.co_filename)}:{c.co_firstlineno})"
                        for c in s)
        n = len(sizes)
        return {
            "flows": n,
            "median": sizes[n // 2] if n else None,
            "mean": round(sum(sizes) / n, 1) if n else None,
            "functions": {k: round(v / n, 2) for k, v in seen.most_common()} if n else {},
        }


class FunctionProbe:
    def __init__(self) -> None:
        self.recorder: Recorder | None = None
        self.flows_seen = 0
        self.counted: set[str] = set()

    def load(self, loader) -> None:
        loader.add_option("probe_addon", str, "headroom", "name of the addon whose hooks to watch")
        loader.add_option("probe_skip", int, 300, "flows to let pass before counting")
        loader.add_option("probe_flows", int, 200, "flows to count")
        loader.add_option("probe_out", str, "", "JSON summary file (written on exit)")

    def running(self) -> None:
        addon = ctx.master.addons.get(ctx.options.probe_addon)
        if addon is None:
            raise RuntimeError(f"function_probe: no addon named {ctx.options.probe_addon!r}")
        watched = {getattr(type(addon), h).__code__ for h in HOOKS if hasattr(type(addon), h)}
        self.recorder = Recorder(watched)

    def _arm(self, flow, first: bool = False) -> None:
        if self.recorder is None:
            return
        if first:
            self.flows_seen += 1
            skip = ctx.options.probe_skip
            if skip < self.flows_seen <= skip + ctx.options.probe_flows:
                self.counted.add(flow.id)
        if flow.id in self.counted:
            self.recorder.arm(flow.id)

    def requestheaders(self, flow) -> None:
        self._arm(flow, first=True)

    def request(self, flow) -> None:
        self._arm(flow)

    def responseheaders(self, flow) -> None:
        self._arm(flow)

    def response(self, flow) -> None:
        self._arm(flow)

    def done(self) -> None:
        if self.recorder is not None and ctx.options.probe_out:
            with open(ctx.options.probe_out, "w", encoding="utf-8") as f:
                json.dump(self.recorder.summary(), f, indent=1)


addons = [FunctionProbe()]
