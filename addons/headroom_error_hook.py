"""Let an addon answer in mitmproxy's `error` hook when the upstream failed before responding.

mitmproxy 12 always sends its own HTML 502 page when the upstream cannot be reached (connect or
TLS failure, reset, timeout before any response); SDK clients cannot parse that. This gives the
`error` hook the semantics mitmproxy's PR #7999 proposes: a response an addon sets there is sent
instead of the error page (only before any response byte reached the client: no response yet, or
a buffered one cut short; streams cut midway stay cut). It patches one method, and only the exact
version it was written against: on any other mitmproxy it does nothing and says so, and
mitmproxy's own page is sent as before.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time

from mitmproxy import flow
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.layers.http._events import ResponseProtocolError
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook, HttpResponseHeadersHook

log = logging.getLogger("headroom.error_hook")

# sha256 of `inspect.getsource(HttpStream.handle_protocol_error)` in mitmproxy 12.3.1.
KNOWN_SOURCE = "59fc3b2eeeabf63a64d4cce98b4fe4cab5193ebefbd9c32ae186e65c7d25bfe2"


def installed() -> bool:
    return getattr(HttpStream.handle_protocol_error, "_headroom_error_hook", False)


def install() -> bool:
    """Patch once; True when the `error` hook can answer."""
    if installed():
        return True
    original = HttpStream.handle_protocol_error
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    if digest != KNOWN_SOURCE:
        log.warning("headroom: this mitmproxy version is not the one the upstream-error answers "
                    "were written for; unreachable upstreams get mitmproxy's own 502 page")
        return False

    def handle_protocol_error(self, event):
        answerable = (
            isinstance(event, ResponseProtocolError)
            and self.client_state == self.state_done
            # nothing reached the client yet: no response, or one still being read whole
            and (self.server_state == self.state_wait_for_response_headers
                 or (self.server_state == self.state_consume_response_body
                     and not (self.flow.response and self.flow.response.stream)))
        )
        if not answerable:
            yield from original(self, event)
            return
        before = self.flow.response
        self.flow.error = flow.Error(event.message)
        yield HttpErrorHook(self.flow)
        if self.flow.response is None or self.flow.response is before:
            # Nobody answered: mitmproxy's own path, without a second error hook.
            self.server_state = self.state_errored
            yield from original(self, event)
            return
        if (yield from self.check_killed(False)):
            return
        # An addon answered: send it as mitmproxy sends a response set in the request hook.
        self.flow.response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        yield from self.send_response()

    handle_protocol_error._headroom_error_hook = True  # type: ignore[attr-defined]
    HttpStream.handle_protocol_error = handle_protocol_error
    return True
