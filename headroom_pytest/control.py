"""A mitmproxy addon the pytest plugin loads before Headroom: it switches cassettes between tests.

Answers `POST /__headroom_pytest__/use` (JSON `{"cassette": DIR, "mode": MODE}`: sets
`headroom_cassette` and `headroom_store_mode`, which reopens the cassette), `POST .../flush`
(waits until recordings are written) and `GET .../misses` (the replay misses and refusals
answered since the last call, with their explanations and whether each was a model call, and
how many requests Headroom saw meanwhile), from loopback clients only. Nothing
else is touched: every other request goes on to Headroom.
"""

from __future__ import annotations

import ipaddress
import json

from mitmproxy import ctx, exceptions, http

from headroom_core import routing
from headroom_pytest import PREFIX


def _answer(status: int, doc: dict) -> http.Response:
    return http.Response.make(status, json.dumps(doc).encode(),
                              {"content-type": "application/json"})


class Control:
    def __init__(self) -> None:
        self.misses: list[dict] = []
        self.requests = 0  # other requests since the last `misses`

    def request(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path
        if not path.startswith(PREFIX):
            self.requests += 1
            return
        peer = flow.client_conn.peername
        if not peer or not ipaddress.ip_address(peer[0]).is_loopback:
            flow.response = _answer(403, {"error": "loopback only"})
            return
        try:
            flow.response = self._command(path[len(PREFIX):], flow.request.content or b"")
        except Exception as e:  # the test that asked gets the reason
            flow.response = _answer(500, {"error": f"{type(e).__name__}: {e}"})

    def _command(self, name: str, body: bytes) -> http.Response:
        headroom = ctx.master.addons.get("headroom")
        if headroom is None or headroom.runtime is None:
            return _answer(503, {"error": getattr(headroom, "failed", None) or
                                 "the headroom addon is not running"})
        if name == "use":
            doc = json.loads(body)
            try:
                ctx.options.update(headroom_cassette=doc["cassette"],
                                   headroom_store_mode=doc["mode"])
            except exceptions.OptionsError as e:
                return _answer(400, {"error": str(e)})
            rt = headroom.runtime
            store = rt.state.store
            return _answer(200, {"mode": rt.store_mode,
                                 "read_only": getattr(store, "read_only", None),
                                 "problems": list(getattr(store, "problems", []))})
        if name == "flush":
            headroom.runtime.flush()
            return _answer(200, {})
        if name == "misses":
            out, self.misses = self.misses, []
            seen, self.requests = self.requests, 0
            return _answer(200, {"misses": out, "requests": seen})
        return _answer(404, {"error": f"unknown command {name!r}"})

    def response(self, flow: http.HTTPFlow) -> None:
        r = flow.response
        if r is None or r.headers.get("x-headroom-error") != "1" or \
                r.headers.get("x-headroom-cache") not in ("miss", "refused"):
            return
        try:
            message = json.loads(r.content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.get_text(strict=False)[:2000]
        req = flow.request
        route = routing.classify(req.method, req.host, req.path, reverse=True)
        self.misses.append({"method": req.method, "path": req.path, "message": message,
                            "model_call": bool(route and route.inspect)})


addons = [Control()]
