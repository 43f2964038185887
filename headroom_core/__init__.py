"""Headroom's sans-IO core: bytes, dicts and header lists in; decisions, events and bytes out.

Nothing in this package imports mitmproxy; `addons/headroom.py` is the only adapter.
"""

__version__ = "0.1.0"
