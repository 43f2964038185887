"""What passes between the adapter, the runtime and the engine for one flow.

Inputs (`RequestIn`), the engine's answers (`RequestPlan`, `ResponsePlan`, `LocalResponse`) and
what it remembers between request and response (`FlowState`). Plans are not changed once made:
resolving a deferred local answer makes a new plan. (The per-request ones are plain slotted
classes, not frozen dataclasses: a frozen dataclass's `__init__` sets each field through
`object.__setattr__`, three times the cost, on every request.) `FlowState.decisions` is
written for the event log only; what steers the flow has fields of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import routing, session, tenant
from .headers import Controls, Fields

if TYPE_CHECKING:
    from .stream import StreamTee

Chunks = list[tuple[float, bytes]]  # (seconds from the first byte, bytes) of a stream


@dataclass(slots=True)
class RequestIn:
    flow_id: str
    method: str
    scheme: str
    host: str
    port: int
    path: str
    fields: Fields  # as the client sent them (internal headers included)
    body: bytes | None  # raw as received; None when mitmproxy streamed it
    reverse: bool
    websocket_upgrade: bool = False
    client: str | None = None  # the client's IP address (local endpoints answer some only)
    # Addressed to this proxy itself (regular mode: the target is the address and port the client
    # reached the proxy at), whatever name its listener was given.
    to_self: bool = False


@dataclass(frozen=True, slots=True)
class LocalResponse:
    status: int
    fields: Fields
    body: bytes


class Pending:
    """A complete response on its way to the store, served to identical requests meanwhile.
    A stream's chunks are joined only if a hit needs the body before the write lands."""

    __slots__ = ("status", "headers", "chunks", "_body")

    def __init__(self, status: int, headers: Fields, body: bytes | None,
                 chunks: Chunks | None) -> None:
        self.status, self.headers, self.chunks, self._body = status, headers, chunks, body

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(c for _, c in self.chunks or ())
        return self._body


@dataclass(slots=True)
class FlowState:
    """What the engine remembers about one flow it took up, between request and response."""

    flow_id: str
    route: routing.Route
    host: str
    path: str
    controls: Controls
    started: float
    stripped: int = 0
    req_bytes: int = 0
    req_bytes_upstream: int = 0
    model: str | None = None
    stream: bool | None = None
    forwarded_at: float | None = None
    tenant: str = tenant.ANONYMOUS
    session: session.SessionId = session.NONE
    # control (what happens to the flow); `decisions` only reports it
    bypass: bool = False  # x-headroom-bypass: every feature off for this flow
    compress: bool = False  # live-zone rewriting applies (WebSocket messages too)
    local: bool = False  # answered by Headroom (store hit, replay answer, refusal): no upstream
    paced: bool = False  # a stored stream replayed through the pacer (streams like upstream)
    beta_key: str | None = None
    beta_added: list[str] = field(default_factory=list)
    store_key: str | None = None
    store_decision: str | None = None  # "hit", "miss", "record", "replay-miss", ... (see Recorder)
    store_write: bool = False  # the response is to be stored when complete
    stored: bool | None = None  # whether it was kept (None: not decided yet)
    canonical: dict | None = None
    pending: Pending | None = None  # the response, held until its store write lands
    tee: StreamTee | None = None
    decisions: dict[str, Any] = field(default_factory=dict)  # for the event log only
    # the session's readable name (labels.SessionLabels), and the request's header fields and
    # decoded body it is worked out from, off the event loop (dropped once labelled)
    session_label: str | None = None
    label_input: tuple[Fields, bytes | None] | None = None


@dataclass(slots=True)
class RequestPlan:
    """What to do with a request: header fields and raw body for upstream, or a local answer."""

    fields: Fields | None = None  # None: headers unchanged
    body: bytes | None = None  # None: raw body unchanged
    response: LocalResponse | None = None  # answer locally, nothing goes upstream
    state: FlowState | None = None  # None: not a flow Headroom follows (nothing more to do)
    replay_chunks: Chunks | None = None  # paced replay of a stored stream
    deferred: Callable[[], LocalResponse] | None = None  # slow part of a local answer (thread)

    def resolve(self, response: LocalResponse) -> RequestPlan:
        """This plan with its deferred answer computed."""
        return dataclasses.replace(self, response=response, deferred=None)


@dataclass(slots=True)
class ResponsePlan:
    """What to do when response headers arrive."""

    stream: Callable[[bytes], bytes] | None = None  # stream to the client through this callable
    add_fields: Fields = ()  # response header fields for the client
