"""Paced replay of stored streams: a loopback HTTP/1.1 server that writes recorded chunks at
their recorded offsets (`headroom_store_pace`).

mitmproxy cannot stream a response an addon makes, so a paced hit is fetched from here instead of
the upstream, and reaches the client through mitmproxy's normal streaming path. Frames come from
`storemode.paced_frames`; this only writes them. One per addon instance, started on first use.
"""

from __future__ import annotations

import asyncio
import secrets

from headroom_core import storemode
from headroom_core.headers import Fields

MAX_PENDING = 1000  # registrations are fetched at once; never-fetched ones must not pile up
MAX_PENDING_BYTES = 256 << 20


class Pacer:
    """A loopback HTTP/1.1 server that replays stored streams with their recorded timing
    (`headroom_store_pace`). Frames come from `storemode.paced_frames`; this only writes them."""

    def __init__(self) -> None:
        self.port = 0
        self._pending: dict[str, list[tuple[float, bytes]]] = {}
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def register(self, status: int, fields: Fields, chunks) -> str:
        """A path on this server that serves the stream once."""
        token = secrets.token_hex(16)
        self._pending[token] = storemode.paced_frames(status, fields, chunks)
        while len(self._pending) > 1 and (len(self._pending) > MAX_PENDING or sum(
                len(d) for frames in self._pending.values() for _, d in frames)
                > MAX_PENDING_BYTES):
            self._pending.pop(next(iter(self._pending)))
        return f"/replay/{token}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode("latin-1")
            frames = self._pending.pop(target.rsplit("/", 1)[-1], None)
            if frames is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
            else:
                loop = asyncio.get_running_loop()
                start = loop.time()
                for at, data in frames:
                    delay = start + at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError):
            pass
        finally:
            writer.close()
