"""Keep a changed WebSocket text message whole: cut its frames between characters, not inside one.

When an addon changes a message, mitmproxy 12 sends it in ~4000-byte frames (or in the original
frames' sizes when the length is unchanged) and decodes each frame with `errors="replace"`: a
multi-byte UTF-8 character on a cut reaches the peer as two U+FFFD. A rewritten Codex
`response.create` would then carry a user's non-ASCII text changed. This moves each cut back to the
start of its character (at most three bytes). It patches one method, and only the exact version
it was written against; on any other mitmproxy it does nothing, and Headroom then leaves a
non-ASCII message unchanged rather than have it mangled (`installed()`).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Iterator

from mitmproxy.proxy.layers.websocket import Fragmentizer

log = logging.getLogger("headroom.ws_fragments")

# sha256 of `inspect.getsource(Fragmentizer.__call__)` in mitmproxy 12.3.1.
KNOWN_SOURCE = "b4c8fd9dcb743f66db8c5b9f27045c3a9b301c7ea1d3ee32542a97f510eadccc"


def installed() -> bool:
    return getattr(Fragmentizer.__call__, "_headroom_ws_fragments", False)


def char_cuts(content: bytes, cuts: list[int]) -> list[int]:
    """`cuts` (increasing offsets into UTF-8 `content`) each moved back to the start of the
    character it falls in; cuts that collapse onto another one, 0 or the end are dropped."""
    out: list[int] = []
    for cut in cuts:
        k = cut
        while 0 < k < len(content) and content[k] & 0xC0 == 0x80 and cut - k < 3:
            k -= 1  # (a continuation byte 10xxxxxx: the character started before it)
        if 0 < k < len(content) and (not out or k > out[-1]):
            out.append(k)
    return out


def install() -> bool:
    """Patch once; True when changed text messages are framed between characters."""
    if installed():
        return True
    original = Fragmentizer.__call__
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    if digest != KNOWN_SOURCE:
        log.warning("headroom: this mitmproxy version is not the one WebSocket framing was checked "
                    "for; WebSocket messages with non-ASCII text are not rewritten")
        return False

    def __call__(self, content: bytes) -> Iterator:
        if not self.is_text:
            yield from original(self, content)
            return
        if len(content) == sum(self.fragment_lengths):  # mitmproxy keeps the frames' sizes
            cuts, at = [], 0
            for length in self.fragment_lengths[:-1]:
                at += length
                cuts.append(at)
        else:
            cuts = list(range(self.FRAGMENT_SIZE, len(content), self.FRAGMENT_SIZE))
        start = 0
        for cut in char_cuts(content, cuts):
            yield self.msg(content[start:cut], False)
            start = cut
        yield self.msg(content[start:], True)

    __call__._headroom_ws_fragments = True  # type: ignore[attr-defined]
    Fragmentizer.__call__ = __call__
    return True
