"""Headroom's runtime: threads, the event-loop offload rule, and state on disk.

It opens what the sans-IO engine (`headroom_core`) is handed (response store, ledger, kept
originals, event sink) and runs the work that must not block mitmproxy's event loop. It never
imports mitmproxy; `addons/headroom.py` is the only adapter.
"""
