"""Test-only mitmproxy script for a plain front mitmdump: record what the client sent.

One JSON line per request in $HEADROOM_TEST_CAPTURE: host, method, path, header fields in wire
order and case, the raw (still content-encoded) body's SHA-256 and length. Loaded in a mitmdump
*without* Headroom that forwards to Headroom (`--mode upstream:http://127.0.0.1:<headroom>`), so
the record is independent of the proxy under test.
"""

import hashlib
import json
import os
import threading

from mitmproxy import http

_lock = threading.Lock()


class Capture:
    def request(self, flow: http.HTTPFlow) -> None:
        path = os.environ.get("HEADROOM_TEST_CAPTURE")
        if not path:
            return
        raw = flow.request.raw_content or b""
        rec = {"host": flow.request.pretty_host, "method": flow.request.method,
               "path": flow.request.path,
               "fields": [[n.decode("latin-1"), v.decode("latin-1")]
                          for n, v in flow.request.headers.fields],
               "sha256": hashlib.sha256(raw).hexdigest(), "len": len(raw)}
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


addons = [Capture()]
