"""Load addons/headroom.py as mitmproxy would, for unit tests with taddons/tflow."""

import importlib.util
from pathlib import Path

ADDON_PATH = Path(__file__).resolve().parents[1] / "addons" / "headroom.py"


def load_addon_module():
    spec = importlib.util.spec_from_file_location("headroom_addon", ADDON_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
