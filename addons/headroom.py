"""Headroom: a mitmproxy addon between coding agents and model APIs.

    mitmdump -s addons/headroom.py --mode reverse:https://api.anthropic.com --set connection_strategy=lazy

This file is the only mitmproxy adapter: options, hooks and commands. It copies a flow's bytes and
headers into `headroom_core` values, lets the runtime (`headroom_runtime`) and its engine decide,
and applies the plan in one step. Any failure leaves the flow as the client sent it (minus
internal headers); a Headroom that is not fully configured forwards nothing at all.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.proxy import mode_specs

try:
    import headroom_core  # noqa: F401
    import headroom_runtime  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (tests, tools)
    sys.path.append(str(Path(__file__).resolve().parent))

try:
    import headroom_error_hook
    import headroom_ws_fragments
    from headroom_core import error_responses as herrors
    from headroom_core import options as hoptions
    from headroom_core import routing, storemode
    from headroom_core.engine import Engine, HeaderPlan
    from headroom_core.flow import FlowState, LocalResponse, RequestIn, RequestPlan
    from headroom_core.stats import format_table
    from headroom_core.websocket import WebSocketConversation
    from headroom_runtime import heap as hheap
    from headroom_runtime import runtime as hruntime
    from headroom_runtime import state as hstate
    from headroom_runtime.pacer import Pacer
    IMPORT_ERROR: str | None = None
except Exception as _e:  # a broken install must not leave a proxy that forwards unprotected
    IMPORT_ERROR = f"headroom failed to load: {type(_e).__name__}: {_e}"

log = logging.getLogger("headroom")


class Headroom:
    def __init__(self) -> None:
        self.runtime: hruntime.Runtime | None = None
        self.states: dict[str, FlowState] = {}
        self.ws: dict[str, tuple[FlowState, WebSocketConversation]] = {}
        # What `requestheaders` stripped and read, until `request` (or `error`) takes it.
        self.header_plans: dict[str, HeaderPlan] = {}
        self.pacer = Pacer() if IMPORT_ERROR is None else None
        # This proxy's own upstream connections, as (local end, remote end): a client connection
        # with the same two ends, seen from the other side, is the proxy talking to itself (a
        # loop). Both ends count: the kernel may give one local port to connections to
        # different places at once, and a client on that port is no loop.
        self.own_outbound: set[tuple] = set()
        # Client connections found not to be such a loop (until they close).
        self.not_loops: set[str] = set()
        # Replay mode: upstream connections a flow was deliberately let through for
        # (x-headroom-cache: bypass, headroom_replay_allow), by client connection and address.
        self.permitted: set[tuple] = set()
        self.is_running = False
        self.started = time.time()
        # Why Headroom refuses to work (a bad option at startup, a failed import): every request
        # is then answered locally with this reason, never forwarded.
        self.failed: str | None = IMPORT_ERROR

    @property
    def engine(self) -> Engine | None:
        return self.runtime.engine if self.runtime is not None else None

    # -- options --------------------------------------------------------------------------------

    def load(self, loader) -> None:
        _quiet_cancelled_clients()
        if IMPORT_ERROR is not None:
            log.error("%s", IMPORT_ERROR)
            _no_listener()
            return
        for o in hoptions.OPTIONS:
            loader.add_option(o.name, o.type, o.default, o.help,
                              choices=list(o.choices) if o.choices else None)
        self._check_startup_values(loader.master.options)
        headroom_error_hook.install()  # upstream failures answered in the provider's shape
        headroom_ws_fragments.install()  # a rewritten WebSocket text message stays valid text

    def _check_startup_values(self, options) -> None:
        """Validate `--set headroom_*=...` values before mitmproxy applies them: a value it cannot
        convert (`=abc` for a number) would otherwise unload the whole addon without a word, and a
        misspelled name would be kept aside forever. Each problem is one error line (mitmdump
        then exits); Headroom refuses all traffic meanwhile."""
        problems = []
        for name in sorted(k for k in options.deferred if k.startswith(hoptions.PREFIX)):
            opt = hoptions.BY_NAME.get(name)
            try:
                if opt is None:
                    raise ValueError(hoptions.unknown_message(name))
                opt(_unconverted(opt, options.deferred[name]))
            except ValueError as e:  # ConfigError included
                problems.append(str(e))
                del options.deferred[name]  # so that mitmproxy does not unload the addon over it
        for msg in problems:
            log.error("%s", msg)
        if problems:
            self.failed = problems[0]
            _no_listener()

    def running(self) -> None:
        self.is_running = True
        if self.runtime is not None and not self.failed:
            hheap.freeze_startup()  # the startup heap out of the garbage collector's way
            host, port = _listener()
            # (the key: what a browser needs where the host name cannot be checked; local.py)
            log.info("headroom: dashboard at http://%s:%d/headroom/?key=%s (metrics: "
                     "/headroom/metrics)", host, port, self.runtime.browser_key)

    def configure(self, updated: set[str]) -> None:
        if IMPORT_ERROR is not None:
            return
        opts = ctx.options
        if ("save_stream_file" in opts and opts.save_stream_file and "store_streamed_bodies" in opts
                and not opts.store_streamed_bodies):
            # A `-w` capture then holds the SSE bodies Headroom streams (`scripts/store.py
            # import` takes them); mitmproxy keeps streamed bodies only when asked to.
            opts.store_streamed_bodies = True
            log.info("headroom: store_streamed_bodies set to true (for the -w capture)")
        if self.runtime is not None and not any(o.startswith(hoptions.PREFIX) for o in updated):
            return
        values = {o.name: getattr(ctx.options, o.name) for o in hoptions.OPTIONS}
        try:
            cfg = hoptions.from_options(values)
            hstate.check_redis(cfg)  # the password file or environment: what parsers cannot see
        except hoptions.ConfigError as e:
            if self.is_running:  # a live `set` (mitmweb, console): refused, the old value stays
                raise exceptions.OptionsError(str(e)) from None
            log.error("%s", e)  # at startup: one line, mitmdump exits; nothing is forwarded
            self.failed = str(e)
            _no_listener()
            return
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            # Answering locally (recordings, refusals, /ccr/, health, upstream errors) must not
            # depend on reaching the upstream first, nor touch it.
            ctx.options.connection_strategy = "lazy"
            log.info("headroom: connection_strategy set to lazy")
        host, port = _listener()
        base = f"http://{cfg.ccr_host or f'{host}:{port}'}/ccr/"
        local_hosts = _local_hosts(host, port, cfg.ccr_host)
        try:
            if self.runtime is None:
                self.runtime = hruntime.Runtime(cfg, retrieval_base=base,
                                                local_hosts=local_hosts, health=self._health)
            else:
                hheap.thaw()  # parts about to be dropped must be collectable
                try:
                    self.runtime.reconfigure(cfg, retrieval_base=base, local_hosts=local_hosts)
                finally:
                    if self.is_running:
                        hheap.freeze_startup()  # (collects what was dropped first)
        except hoptions.ConfigError as e:  # a file an option names (headroom_prices)
            if self.is_running:
                raise exceptions.OptionsError(str(e)) from None
            log.error("%s", e)
            self.failed = str(e)

    def _health(self) -> dict:
        rt = self.runtime
        cfg = rt.config if rt else None
        return {
            "status": "failed" if self.failed else "ok",
            "version": headroom_core.__version__,
            "error": self.failed,
            "modes": list(ctx.options.mode) if "mode" in ctx.options else [],
            "store_mode": rt.store_mode if rt else None,
            "cassette": str(cfg.cassette) if cfg and cfg.cassette else None,
            "compress": cfg.compress if cfg else None,
            "backend": rt.state.backend if rt else None,  # never a password
            "uptime_s": round(time.time() - self.started, 1),
            "state": dict(rt.degrade.status) if rt else {},
            "memory": rt.holds() if rt else {},
        }

    def done(self) -> None:
        if IMPORT_ERROR is None:
            hheap.thaw()
        if self.pacer is not None:
            self.pacer.stop()
        if self.runtime is not None:
            if self.runtime.stats.total.requests:
                log.info("headroom stats:\n%s", format_table(self.runtime.stats))
            self.runtime.close()

    # -- commands -------------------------------------------------------------------------------

    @command.command("headroom.stats")
    def stats(self) -> str:
        """Requests, tokens, cache-read share, errors and tokens saved, per session and in total,
        since this proxy started."""
        if self.runtime is None:
            return "headroom is not configured"
        table = format_table(self.runtime.stats)
        log.info("headroom stats:\n%s", table)
        return table

    @command.command("headroom.clear")
    def clear(self) -> str:
        """Reset the in-memory figures (stats table, dashboard, metrics) to zero; the event log
        is kept."""
        if self.runtime is None:
            return "headroom is not configured"
        self.runtime.clear()
        log.info("headroom: in-memory stats cleared")
        return "headroom: in-memory stats cleared"

    @command.command("headroom.original")
    def original(self, handle: str) -> str:
        """The original tool output kept under a compression marker's handle."""
        originals = self.runtime.state.originals if self.runtime is not None else None
        if originals is None:
            return "headroom: compression is off; no originals are kept"
        text = originals.get(handle.strip())
        return text if text is not None else f"headroom: no original kept under {handle!r}"

    # -- hooks ----------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Internal headers come off here, for every flow, before anything can send them on (a
        streamed request body goes upstream right after this hook). Such a body cannot be
        inspected: the request passes through untouched, and in replay mode it is refused."""
        if flow.response:
            return
        engine = self.engine
        if self.failed or engine is None:
            flow.response = _refusal(self.failed or "not configured", flow)
            return
        conn = flow.client_conn
        if self.own_outbound and conn.id not in self.not_loops:
            if _connection(conn.peername, conn.sockname) in self.own_outbound:
                flow.response = _loop_refusal()
                return
            # (asked once per connection: a connection that is no loop at its first request
            # never becomes one, as no other connection can have its two ends while it is open)
            self.not_loops.add(conn.id)
        hp = engine.strip_headers(flow.request.headers.fields, conn.id)
        if hp.stripped:
            flow.request.headers = http.Headers(hp.kept)
        self.header_plans[flow.id] = hp
        if flow.request.stream and engine.config.store_mode == "replay":
            log.warning("headroom: replay mode refuses a streamed request body (flow %s); raise "
                        "stream_large_bodies to let Headroom read it", flow.id)
            self.header_plans.pop(flow.id, None)
            flow.kill()

    def request(self, flow: http.HTTPFlow):
        """Decide inline when that is cheap; a coroutine (which mitmproxy awaits) only when a
        big body or a slow local answer needs a worker thread, so the common path costs no task."""
        hp = self.header_plans.pop(flow.id, None)
        if flow.response or flow.error or not flow.live:
            return None
        engine = self.engine
        if self.failed or engine is None:  # fail closed: nothing is forwarded
            flow.response = _refusal(self.failed or "not configured", flow)
            return None
        if hp is None:  # another addon made this request after `requestheaders`
            hp = engine.strip_headers(list(flow.request.headers.fields))
            if hp.stripped:
                flow.request.headers = http.Headers(hp.kept)
        try:
            req = _request_in(flow, hp)
            if self.runtime.offload_request(req, b"content-encoding" in hp.index):
                return self._request_in_thread(flow, engine, req, hp)
            plan = engine.handle_request(req, hp)
            if plan.deferred is not None or plan.replay_chunks:
                return self._finish_request(flow, engine, plan)
            self._applied(flow, engine, plan)
        except Exception as e:  # our bug: the flow goes on as sent (internal headers are off)
            self._request_failed(flow, engine, e)
        return None

    def _request_failed(self, flow: http.HTTPFlow, engine: Engine, e: Exception) -> None:
        log.warning("internal_error phase=request flow=%s error=%s", flow.id, type(e).__name__)
        if engine.config.store_mode == "replay":  # offline by contract: never forward
            flow.response = _refusal("internal error in replay mode", flow)

    async def _request_in_thread(self, flow: http.HTTPFlow, engine: Engine, req: RequestIn,
                                 hp: HeaderPlan) -> None:
        try:
            plan = await asyncio.to_thread(self.runtime.in_worker, engine.handle_request, req, hp)
            await self._finish_request(flow, engine, plan)
        except Exception as e:
            self._request_failed(flow, engine, e)

    async def _finish_request(self, flow: http.HTTPFlow, engine: Engine, plan: RequestPlan) -> None:
        try:
            if plan.deferred is not None:
                try:
                    answer = await asyncio.to_thread(self.runtime.in_worker, plan.deferred)
                    plan = plan.resolve(answer)
                except Exception as e:  # never forward: a deferred answer replaces the upstream
                    log.warning("internal_error phase=deferred flow=%s error=%s", flow.id,
                                type(e).__name__)
                    plan = plan.resolve(LocalResponse(
                        502, [(b"content-type", b"text/plain"), (b"x-should-retry", b"false")],
                        b"headroom: internal error while answering locally\n"))
            if plan.replay_chunks:
                await self.pacer.start()
            self._applied(flow, engine, plan)
        except Exception as e:
            self._request_failed(flow, engine, e)

    def _applied(self, flow: http.HTTPFlow, engine: Engine, plan: RequestPlan) -> None:
        self._apply(flow, plan)
        if engine.config.store_mode == "replay" and flow.response is None:
            # Only what Headroom decided to let through may connect (see server_connect).
            r = flow.request
            self.permitted.add((flow.client_conn.id, r.host.lower(), r.port))
        if plan.state is not None:
            if plan.response is None:
                engine.mark_forwarded(plan.state)
            self.states[flow.id] = plan.state

    def _apply(self, flow: http.HTTPFlow, plan: RequestPlan) -> None:
        """Apply a plan in one step: build everything first, then assign."""
        if plan.response is not None and plan.replay_chunks:
            # mitmproxy fetches the stored stream from the loopback pacer, so it reaches the
            # client through the normal streaming path with its recorded rhythm.
            r = flow.request
            r.path = self.pacer.register(plan.response.status, plan.response.fields,
                                         plan.replay_chunks)
            r.scheme, r.host, r.port = "http", "127.0.0.1", self.pacer.port
            return
        if plan.response is not None:
            flow.response = _local_response(plan.response)
            return
        new_headers = http.Headers(plan.fields) if plan.fields is not None else None
        if plan.body is not None:
            if new_headers is None:
                new_headers = flow.request.headers.copy()
            if "content-length" in new_headers:
                new_headers["content-length"] = str(len(plan.body))
            flow.request.headers = new_headers
            flow.request.raw_content = plan.body
        elif new_headers is not None:
            flow.request.headers = new_headers

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.engine is None or flow.response is None:
            return
        try:
            plan = self.engine.response_headers(
                self.states.get(flow.id), flow.response.status_code,
                list(flow.response.headers.fields),
            )
        except Exception as e:  # never let a decision about streaming break the response
            log.warning("internal_error phase=responseheaders flow=%s error=%s", flow.id,
                        type(e).__name__)
            return
        for name, value in plan.add_fields:
            flow.response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
        if plan.stream is not None:
            flow.response.stream = plan.stream

    def response(self, flow: http.HTTPFlow) -> None:
        state = self.states.pop(flow.id, None)
        if state is None or self.runtime is None or flow.response is None:
            return
        resp = flow.response
        if flow.websocket is not None:  # a 101: the conversation continues as messages
            conv = self.runtime.websocket_start(state)
            conv.ascii_only = not headroom_ws_fragments.installed()
            self.ws[flow.id] = (state, conv)
            return
        # The client gets the response as soon as this returns; the accounting (usage, store
        # write, event line) runs in Headroom's background thread.
        self.runtime.finish_later(
            state,
            status=resp.status_code,
            fields=list(resp.headers.fields),
            body=None if resp.stream else resp.raw_content,
            response_started=resp.timestamp_start,
            response_ended=resp.timestamp_end,
        )

    def server_connect(self, data) -> None:
        """Replay mode is offline by contract: an upstream connection nobody decided to make
        (a raw TCP tunnel, a request body mitmproxy began streaming, an eager connection) is
        refused before it opens."""
        rt = self.runtime
        if self.failed or rt is None:
            data.server.error = "headroom is not working: no upstream connections"
            return
        if rt.config.store_mode != "replay":
            return
        host, port = data.server.address or ("", 0)
        key = (data.client.id, str(host).lower(), port)
        if key in self.permitted or rt.engine.replay_allows_host(str(host)):
            return
        data.server.error = REPLAY_BLOCK

    def server_connected(self, data) -> None:
        key = _connection(data.server.sockname, data.server.peername)
        if key is not None:
            self.own_outbound.add(key)

    def server_disconnected(self, data) -> None:
        self.own_outbound.discard(_connection(data.server.sockname, data.server.peername))

    def client_disconnected(self, client) -> None:
        self.not_loops.discard(client.id)
        if self.engine is not None:
            self.engine.forget_connection(client.id)
        if self.permitted:
            self.permitted = {k for k in self.permitted if k[0] != client.id}

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        entry = self.ws.get(flow.id)
        if entry is None or self.runtime is None:
            return
        state, conv = entry
        msg = flow.websocket.messages[-1]
        if msg.injected or msg.dropped:
            return
        call = functools.partial(self.runtime.engine.websocket_message, state, conv,
                                 from_client=msg.from_client, is_text=msg.is_text,
                                 content=msg.content)
        # A big `response.create` may be compressed, and with Redis the ledger is read; a big
        # server message is parsed: not on the event loop. mitmproxy forwards the message once
        # this hook returns, and a connection's messages stay in order.
        if self.runtime.offload_message(state, len(msg.content), msg.from_client):
            new = await asyncio.to_thread(self.runtime.in_worker, call)
        else:
            new = call()
        if new is not None:
            msg.content = new

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        entry = self.ws.pop(flow.id, None)
        if entry is None or self.runtime is None:
            return
        state, conv = entry
        err = flow.error.msg if flow.error else None
        self.runtime.websocket_end(state, conv, err)

    def error(self, flow: http.HTTPFlow) -> None:
        self.header_plans.pop(flow.id, None)
        state = self.states.pop(flow.id, None)
        if self.runtime is None:
            return
        resp = flow.response
        message = flow.error.msg if flow.error else "error"
        if REPLAY_BLOCK in message and resp is None:
            provider = state.route.provider if state else routing.guess_provider(
                flow.request.host, flow.request.path)
            flow.response = _local_response(LocalResponse(*storemode.refused_response(
                provider, "replay mode never contacts the upstream")))
        elif (flow.error is not None and (resp is None or not resp.stream)
              and self._answers_errors(flow, state)):
            # The upstream failed before any answer reached the client (nothing, or a buffered
            # answer cut short): an error the client's SDK can parse, and retries, instead of
            # mitmproxy's HTML page. A stream cut midway stays cut.
            provider = state.route.provider if state else routing.guess_provider(
                flow.request.host, flow.request.path)
            kind = _failure_kind(flow, message)
            flow.response = _local_response(LocalResponse(*herrors.upstream_error(
                provider, message, kind)))
            if state is not None:
                state.decisions["upstream_error"] = kind
            log.warning("upstream_error flow=%s kind=%s", flow.id, kind)
            resp = None  # what the upstream sent (if anything) is not what the client got
        if state is None:
            return
        self.runtime.finish_later(
            state,
            status=resp.status_code if resp else (
                flow.response.status_code if flow.response else None),
            fields=list(resp.headers.fields) if resp else None,
            body=None,
            error=message,
            response_started=resp.timestamp_start if resp else None,
            response_ended=flow.error.timestamp if flow.error else None,
        )

    def _answers_errors(self, flow: http.HTTPFlow, state) -> bool:
        """Model-API traffic (and anything else to an API host) gets provider-shaped errors;
        other sites keep mitmproxy's page. Killed flows stay killed; a client that went away
        gets nothing."""
        msg = flow.error.msg
        if (msg == flow.error.KILLED_MESSAGE or "client disconnected" in msg.lower()
                or not headroom_error_hook.installed()):
            return False
        return state is not None or routing.is_api_host(
            flow.request.host, reverse=_is_reverse(flow), hosts=self.runtime.config.hosts)


REPLAY_BLOCK = "headroom replay mode: no upstream connections"


def _failure_kind(flow: http.HTTPFlow, message: str) -> str:
    # mitmproxy hands the flow its connection only once opened: a connect or handshake that failed
    # leaves the flow's unopened one (no timestamps), and the message tells which it was.
    conn = flow.server_conn
    connected = conn.timestamp_tcp_setup is not None
    tls = flow.request.scheme == "https" and conn.timestamp_tls_setup is None
    return herrors.upstream_failure(message, connected=connected, tls=tls)


def _connection(near, far) -> tuple | None:
    """A TCP connection's two ends, as `(host, port)` pairs seen from `near`'s side (IPv4-mapped
    IPv6 addresses as plain IPv4, as a dual-stack listener reports them), or None while either
    end is unknown."""
    if not near or not far:
        return None
    return _end(near), _end(far)


def _end(addr) -> tuple:
    host = str(addr[0]).lower()
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


def _loop_refusal() -> http.Response:
    return http.Response.make(508, b"headroom: this proxy would forward the request to itself\n",
                              {"content-type": "text/plain; charset=utf-8",
                               "x-should-retry": "false"})


class _CancelledClientFilter(logging.Filter):
    """Python 3.12.1's asyncio logs a CancelledError traceback for every client still connected
    when mitmproxy exits (its stream callback asks a cancelled task for its exception; later
    Pythons check first). Leave out exactly that record; every other one goes on as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, asyncio.CancelledError)
                    and "StreamReaderProtocol.connection_made" in str(record.msg))


def _quiet_cancelled_clients() -> None:
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _CancelledClientFilter) for f in logger.filters):
        logger.addFilter(_CancelledClientFilter())


def _no_listener() -> None:
    """Headroom cannot work: mitmproxy must not even listen (it exits over the logged error;
    a client that got in meanwhile would only meet a half-started proxy)."""
    try:
        if "server" in ctx.options:
            ctx.options.server = False
    except Exception:  # the options may not be there yet (early load)
        pass


def _unconverted(opt, value):
    """A deferred `--set` value as mitmproxy would convert it for the option's type (the strings
    are kept raw, so that Headroom's own parser names what is wrong)."""
    raw = getattr(value, "val", None)  # mitmproxy's _UnconvertedStrings
    if raw is None:
        return value
    if opt.type == Sequence[str]:  # a new GenericAlias each time: `is` never holds
        return list(raw)
    if not raw:  # `--set name` alone: true for a flag
        return ""
    if len(raw) != 1:
        raise hoptions.ConfigError(opt.name, raw, "expected one value")
    return raw[0]


_HTTP_MODES = (mode_specs.ReverseMode, mode_specs.RegularMode, mode_specs.UpstreamMode)


def _listener() -> tuple[str, int]:
    """Where this proxy answers plain HTTP from the same machine: the first reverse, regular or
    upstream listener, on loopback unless it listens on one address only."""
    modes = []
    for spec in ctx.options.mode if "mode" in ctx.options else ():
        try:
            modes.append(mode_specs.ProxyMode.parse(spec))
        except ValueError:
            continue
    http_modes = [m for m in modes if isinstance(m, _HTTP_MODES)] or modes
    if not http_modes:
        return "127.0.0.1", 8080
    m = min(http_modes, key=lambda m: not isinstance(m, mode_specs.ReverseMode))
    listen_host = ctx.options.listen_host if "listen_host" in ctx.options else ""
    listen_port = ctx.options.listen_port if "listen_port" in ctx.options else None
    host = m.listen_host(listen_host) or ""
    port = m.listen_port(listen_port) or 8080
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return host, port


def _local_hosts(host: str, port: int, ccr_host: str) -> frozenset[str]:
    names = {f"{h}:{port}" for h in (host, "127.0.0.1", "localhost", "[::1]")}
    if ccr_host:
        names.add(ccr_host)
    return frozenset(names)


def _is_reverse(flow: http.HTTPFlow) -> bool:
    return isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)


def _asks_websocket(upgrade: list[bytes] | None) -> bool:
    """Whether `Upgrade` (every line of it) offers WebSocket among its protocols: the upstream
    may take any one it offers, and mitmproxy goes by the upstream's 101."""
    return any(token.split(b"/")[0].strip().lower() == b"websocket"
               for line in upgrade or () for token in line.split(b","))


def _request_in(flow: http.HTTPFlow, hp: HeaderPlan) -> RequestIn:
    r = flow.request
    peer = flow.client_conn.peername
    upgrade = hp.index.get(b"upgrade")
    reverse = _is_reverse(flow)
    return RequestIn(
        flow_id=flow.id,
        method=r.method,
        scheme=r.scheme,
        host=r.host,
        port=r.port,
        path=r.path,
        fields=hp.kept,
        body=None if r.stream else r.raw_content,
        reverse=reverse,
        websocket_upgrade=_asks_websocket(upgrade),
        client=peer[0] if peer else None,
        to_self=not reverse and _addressed_to_self(r.host, r.port, flow.client_conn.sockname),
    )


def _addressed_to_self(host: str, port: int, sockname) -> bool:
    """Whether a regular-mode request targets the very address and port its client reached this
    proxy at (its listener on a non-loopback address, say): Headroom's own, never forwarded."""
    if not sockname or port != sockname[1]:
        return False
    try:
        a, b = ipaddress.ip_address(host.strip("[]")), ipaddress.ip_address(sockname[0])
    except ValueError:
        return False
    return (getattr(a, "ipv4_mapped", None) or a) == (getattr(b, "ipv4_mapped", None) or b)


def _refusal(reason: str, flow: http.HTTPFlow) -> http.Response:
    """The answer when Headroom cannot work: provider-shaped, never forwarded, not retried."""
    message = f"headroom is not working ({reason}); nothing was forwarded"
    if IMPORT_ERROR is not None:
        return http.Response.make(503, message.encode() + b"\n", {
            "content-type": "text/plain; charset=utf-8", "x-should-retry": "false"})
    provider = routing.guess_provider(flow.request.host, flow.request.path)
    return _local_response(LocalResponse(*herrors.provider_error(provider, 503, message)))


def _local_response(lr: LocalResponse) -> http.Response:
    """A response exactly as the core built it: the body is raw wire bytes (a stored answer may
    be gzip/br/zstd-encoded already), so it must not go through mitmproxy's `content` encoder."""
    resp = http.Response.make(lr.status, b"", http.Headers(lr.fields))
    resp.raw_content = lr.body
    if "transfer-encoding" not in resp.headers:
        resp.headers["content-length"] = str(len(lr.body))
    return resp


addons = [Headroom()]
