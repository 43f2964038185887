"""A Runtime for engine tests: opened like the addon opens it, engine methods reachable on it."""

from __future__ import annotations

import os

from headroom_core import options
from headroom_runtime.runtime import Runtime


class Rig(Runtime):
    """`rig.handle_request(...)` is the engine's; `rig.flush()`, `rig.stats`, `rig.close()` are
    the runtime's."""

    def __getattr__(self, name):
        return getattr(self.engine, name)


def rig(directory, **values) -> Rig:
    """`rig(tmp_path, store_mode="cache", events="off")`: option values as a user sets them."""
    values.setdefault("dir", str(directory))
    values = {k: str(v) if hasattr(v, "__fspath__") else v for k, v in values.items()}
    return Rig(options.make(**values))


def open_files_under(path) -> list[str]:
    """This process's open files under `path` (Linux /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found
