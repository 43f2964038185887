"""Inspect and maintain a Headroom response store; move recordings to and from mitmproxy flows.

    python scripts/store.py [--dir DIR | --cassette DIR | --redis URL]
        list | show KEY | diff KEY1 KEY2 | prune [--older-than 7d] [--all]
        | import FLOWFILE [--namespace NS] | export FLOWFILE [KEY ...]

KEY may be any unique prefix of a key. The store lives at `<headroom_dir>/store`; tenants of
imported flows come from `--namespace` or from the salt at `<headroom_dir>/salt`. `--cassette`
works on a cassette folder instead (`headroom_cassette`; its recordings have no other tenant),
`--redis` on the store shared in Redis (`headroom_redis`; the password from
HEADROOM_REDIS_PASSWORD, tenants from the shared salt there).
An exported flow carries the recording's canonical request and stream timing in its metadata,
so exporting and importing again gives back the same recordings, byte for byte.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitmproxy import connection, http, io  # noqa: E402

from headroom_core import cachekey, encoding, routing, structdiff, tenant  # noqa: E402
from headroom_core.store import Entry  # noqa: E402
from headroom_runtime import salt as salts  # noqa: E402
from headroom_runtime import redissalt  # noqa: E402
from headroom_runtime.cassettestore import CassetteStore  # noqa: E402
from headroom_runtime.diskstore import ResponseStore  # noqa: E402
from headroom_runtime.redisconn import CircuitOpen, RedisConn  # noqa: E402
from headroom_runtime.redisstore import RedisStore  # noqa: E402
from headroom_runtime.state import PASSWORD_ENV  # noqa: E402

DEFAULT_DIR = "~/.headroom/store"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
META = "headroom"  # flow.metadata key: {"canonical": JSON bytes, "chunks": [[seconds, length]]}


class CliError(Exception):
    pass


def parse_duration(text: str) -> float:
    """"90s", "15m", "12h", "7d", "2w" (or plain seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 7d, 12h, 30m)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}B"


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def resolve(store: ResponseStore, prefix: str) -> str:
    matches = [k for k in store.keys() if k.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if prefix in matches:
        return prefix
    raise CliError(f"no entry matches {prefix!r}" if not matches else
                   f"{prefix!r} is ambiguous ({len(matches)} entries)")


def salt_for(store_dir: str) -> bytes:
    """The tenant salt beside the store (`<headroom_dir>/salt`), created when missing."""
    return salts.load_salt(os.path.join(os.path.dirname(os.path.abspath(store_dir)), "salt"))


# --- commands --------------------------------------------------------------------------------


def cmd_list(store: ResponseStore, args: argparse.Namespace) -> int:
    now = time.time()
    rows = sorted(store.entries(), key=lambda km: -float(km[1].get("created") or 0))
    print(f"{'KEY':16}  {'ENDPOINT':26}  {'MODEL':28}  {'STREAM':6}  {'STATUS':6}  "
          f"{'SIZE':>9}  {'AGE':>5}")
    total = 0
    for key, meta in rows:
        total += int(meta.get("body_bytes") or 0)
        endpoint = f"{meta.get('provider', '?')}/{meta.get('endpoint', '?')}"
        print(f"{key[:16]}  {endpoint:26.26}  "
              f"{str(meta.get('model') or '-'):28.28}  {'yes' if meta.get('stream') else 'no':6}  "
              f"{meta.get('status', '?')!s:6}  {human_size(int(meta.get('body_bytes') or 0)):>9}  "
              f"{human_age(now - float(meta.get('created') or now)):>5}")
    print(f"{len(rows)} entries, {human_size(total)} of responses, "
          f"{human_size(store.volume())} on disk")
    return 0


def cmd_show(store: ResponseStore, args: argparse.Namespace) -> int:
    key = resolve(store, args.key)
    entry = store.get(key)
    if entry is None:
        raise CliError(f"entry {key} is unreadable")
    if args.body:
        sys.stdout.flush()
        sys.stdout.buffer.write(entry.body)
        return 0
    meta = entry.meta
    created = float(meta.get("created") or 0)
    print(f"key:      {key}")
    if meta.get("file"):
        print(f"file:     {meta['file']}")
    print(f"created:  {datetime.datetime.fromtimestamp(created).isoformat(timespec='seconds')} "
          f"({human_age(time.time() - created)} ago)")
    print(f"status:   {entry.status}")
    if entry.chunks is not None:
        print(f"response: SSE, {len(entry.chunks)} chunks, {human_size(len(entry.body))}, "
              f"{meta.get('duration_s') or 0:.3f}s")
    else:
        print(f"response: {human_size(len(entry.body))}")
    for k in ("session_id", "usage"):
        if meta.get(k) is not None:
            print(f"{k + ':':9} {orjson.dumps(meta[k]).decode()}")
    if entry.request is not None:
        print("request:")
        for k, v in structdiff.describe(entry.request).items():
            shown = v if isinstance(v, str) else cachekey.dumps(v).decode("ascii")
            print(f"  {k}: {shown}")
        print(f"  canonical size: {human_size(len(cachekey.canonical_bytes(entry.request)))}")
    print("response headers:")
    for n, v in entry.headers:
        print(f"  {n.decode('latin-1')}: {v.decode('latin-1')}")
    return 0


def cmd_diff(store: ResponseStore, args: argparse.Namespace) -> int:
    ka, kb = resolve(store, args.key1), resolve(store, args.key2)
    a, b = store.get(ka), store.get(kb)
    if a is None or b is None or a.request is None or b.request is None:
        raise CliError("both entries need a recorded request")
    lines = structdiff.diff(a.request, b.request, limit=args.limit)
    for line in lines:
        print(line)
    if not lines:
        print("no differences")
    return 0


def cmd_prune(store: ResponseStore, args: argparse.Namespace) -> int:
    if args.all:
        n = store.clear()
    else:
        try:
            n = store.prune(older_than=args.older_than, provider=args.provider)
        except ValueError as e:
            print(f"store.py prune: {e}", file=sys.stderr)
            return 2
    print(f"removed {n} entries")
    return 0


def _sse_complete(shape: str, body: bytes) -> bool:
    # A recording must end where the provider ends a stream; errors mid-stream are not answers.
    if shape == "anthropic":
        return b"message_stop" in body and b"event: error" not in body
    if shape == "chat":
        return b"data: [DONE]" in body
    return (b"response.completed" in body or b"response.incomplete" in body) \
        and b"response.failed" not in body


def _usage(body: bytes, sse: bool) -> dict | None:
    docs = []
    if sse:
        for line in body.splitlines():
            if line.startswith(b"data:"):
                docs.append(line[5:].strip())
    else:
        docs.append(body)
    usage: dict = {}
    for raw in docs:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        for holder in (doc, doc.get("message"), doc.get("response")):
            if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
                usage.update(holder["usage"])
    return usage or None


def _recorded(flow: http.HTTPFlow, raw: bytes) -> tuple[dict | None, list | None]:
    """The canonical request and stream timing an export left in the flow's metadata."""
    meta = flow.metadata.get(META)
    if not isinstance(meta, dict):
        return None, None
    canon = None
    if isinstance(meta.get("canonical"), bytes):
        try:
            canon = cachekey.parse_json(meta["canonical"])
        except ValueError:
            canon = None
    chunks = meta.get("chunks")
    if isinstance(chunks, list) and all(isinstance(c, list) and len(c) == 2 for c in chunks) \
            and sum(n for _, n in chunks) == len(raw):
        out, pos = [], 0
        for t, n in chunks:
            out.append((float(t), raw[pos:pos + n]))
            pos += n
        chunks = out
    else:
        chunks = None
    return (canon if isinstance(canon, dict) else None), chunks


def import_flow(store, flow: http.HTTPFlow, *, salt: bytes | None,
                namespace: str | None, exclude: list[str], fixed_tenant: str | None = None
                ) -> str:
    """Store one flow; returns "stored" or why it was skipped. `fixed_tenant`: the store's own
    (a cassette's) instead of one from the flow's credentials."""
    req, resp = flow.request, flow.response
    if resp is None:
        return "no complete response"
    sse = resp.headers.get("content-type", "").lower().startswith("text/event-stream")
    if flow.error is not None and not sse:
        # (a stream is judged by its events below: a client that hangs up once it has read the
        # terminal event, as the OpenAI SDK's sync stream does at [DONE], leaves it whole)
        return "no complete response"
    if not 200 <= resp.status_code < 300:
        return f"status {resp.status_code}"
    if flow.websocket is not None:
        return "websocket"
    route = routing.classify(req.method, req.host, req.path, reverse=True)
    if route is None:
        return "not an LLM request"
    if req.raw_content is None or resp.raw_content is None:
        return "body not recorded"
    fields = [(n, v) for n, v in req.headers.fields if not n.lower().startswith(b"x-headroom-")]
    who = fixed_tenant or tenant.tenant_id(fields, salt or b"", namespace)
    raw = resp.raw_content
    canon, timing = _recorded(flow, raw)
    if canon is not None and not exclude:
        canon["tenant"] = who  # as exported, bar the tenant: the same key again
    else:
        try:
            body = encoding.decode(req.raw_content, req.headers.get("content-encoding"))
        except encoding.EncodingError:
            return "undecodable request body"
        canon = cachekey.canonical_request(
            provider=route.provider, endpoint=route.endpoint, method=req.method, host=req.host,
            path=req.path, fields=fields, body=body, tenant=who, extra_exclude=exclude)
    try:
        decoded = encoding.decode(raw, resp.headers.get("content-encoding"))
    except encoding.EncodingError:
        decoded = b""
    if sse and not _sse_complete(route.shape, decoded):
        return "truncated stream"
    if sse and flow.error is not None and not decoded.endswith((b"\n\n", b"\r\n\r\n")):
        return "truncated stream"  # cut inside an event after the end
    meta = {
        "created": resp.timestamp_end or req.timestamp_start or time.time(),
        "usage": _usage(decoded, sse),
        "source": "import",
    }
    # Without timing in the flow (a `mitmdump -w` capture), a stream is one chunk at offset 0.
    chunks = (timing or [(0.0, raw)]) if sse else None
    entry = Entry(resp.status_code, list(resp.headers.fields), b"" if sse else raw, chunks,
                  canon, meta)
    return "stored" if store.put(cachekey.request_key(canon), entry, complete=True) else "refused"


def cmd_import(store, args: argparse.Namespace) -> int:
    fixed = getattr(store, "fixed_tenant", None)
    salt = None
    if not (args.namespace or fixed):
        salt = (redissalt.load_salt(store.conn) if isinstance(store, RedisStore)
                else salt_for(args.dir))
    counts: dict[str, int] = {}
    with open(args.flowfile, "rb") as f:
        for flow in io.FlowReader(f).stream():
            if not isinstance(flow, http.HTTPFlow):
                outcome = "not HTTP"
            else:
                outcome = import_flow(store, flow, salt=salt, namespace=args.namespace,
                                      exclude=args.exclude, fixed_tenant=fixed)
            counts[outcome] = counts.get(outcome, 0) + 1
    stored = counts.pop("stored", 0)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
    print(f"imported {stored} entries" + (f"; skipped {skipped}" if skipped else ""))
    return 0


def entry_flow(entry: Entry) -> http.HTTPFlow | None:
    """A mitmproxy flow carrying a stored entry; None when its request cannot be rebuilt."""
    canon = entry.request
    if not isinstance(canon, dict) or "body" not in canon:
        return None
    body = canon["body"]
    if canon.get("stream") and isinstance(body, dict):
        body = {**body, "stream": True}
    host = canon["host"]
    query = urlencode([tuple(kv) for kv in canon.get("query", [])])
    path = canon["path"] + ("?" + query if query else "")
    fields = [(b"host", host.encode("idna")), (b"content-type", b"application/json")]
    fields += [(name.encode("latin-1"), ", ".join(tokens).encode("latin-1"))
               for name, tokens in canon.get("headers", {}).items()]
    created = float(entry.meta.get("created") or time.time())
    req = http.Request.make(canon.get("method", "POST"), f"https://{host}{path}",
                            cachekey.dumps(body), fields)
    req.timestamp_start = req.timestamp_end = created
    resp = http.Response.make(entry.status, b"", entry.headers)
    resp.raw_content = entry.body  # already content-encoded as recorded: do not re-encode
    if not entry.stream:
        resp.headers["content-length"] = str(len(entry.body))
    resp.timestamp_start = created
    resp.timestamp_end = created + float(entry.meta.get("duration_s") or 0)
    client = connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0),
                               timestamp_start=created)
    server = connection.Server(address=(host, 443))
    flow = http.HTTPFlow(client, server)
    flow.request, flow.response = req, resp
    flow.metadata[META] = {"canonical": cachekey.canonical_bytes(canon)}
    if entry.chunks is not None:
        flow.metadata[META]["chunks"] = [[t, len(c)] for t, c in entry.chunks]
    return flow


def cmd_export(store, args: argparse.Namespace) -> int:
    keys = [resolve(store, k) for k in args.keys] if args.keys else list(store.keys())
    written = skipped = 0
    with open(args.flowfile, "wb") as f:
        writer = io.FlowWriter(f)
        for key in keys:
            entry = store.get(key)
            try:
                flow = entry_flow(entry) if entry is not None else None
            except (TypeError, ValueError, KeyError, AttributeError, UnicodeError) as e:
                # a hand-edited request (its key recomputed) with a field of the wrong kind
                print(f"store.py export: {key}: its request cannot be rebuilt "
                      f"({type(e).__name__}); skipped", file=sys.stderr)
                flow = None
            if flow is None:
                skipped += 1
                continue
            writer.add(flow)
            written += 1
    print(f"exported {written} flows" + (f"; skipped {skipped}" if skipped else ""))
    return 0


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS,
                        help=f"store directory (default {DEFAULT_DIR})")
    common.add_argument("--cassette", default=argparse.SUPPRESS, metavar="DIR",
                        help="work on a cassette folder (headroom_cassette) instead of a store")
    common.add_argument("--redis", default=argparse.SUPPRESS, metavar="URL",
                        help="work on the store in Redis (headroom_redis; password from "
                             f"${PASSWORD_ENV})")
    parser = argparse.ArgumentParser(prog="store.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"store directory (default {DEFAULT_DIR})")
    parser.add_argument("--cassette", default=None, metavar="DIR",
                        help="work on a cassette folder (headroom_cassette) instead of a store")
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="work on the store in Redis (headroom_redis; password from "
                             f"${PASSWORD_ENV})")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", parents=[common], help="one line per entry").set_defaults(fn=cmd_list)

    p = sub.add_parser("show", parents=[common], help="an entry's request summary and headers")
    p.add_argument("key")
    p.add_argument("--body", action="store_true", help="write the response body to stdout")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("diff", parents=[common], help="how two recorded requests differ")
    p.add_argument("key1")
    p.add_argument("key2")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_diff)

    p = sub.add_parser("prune", parents=[common],
                       help="delete old entries (without options: expired and damaged ones)")
    p.add_argument("--older-than", type=parse_duration, default=None, metavar="DURATION")
    p.add_argument("--provider", default=None)
    p.add_argument("--all", action="store_true", help="delete every entry")
    p.set_defaults(fn=cmd_prune)

    p = sub.add_parser("import", parents=[common], help="store the LLM flows of a mitmdump -w file")
    p.add_argument("flowfile")
    p.add_argument("--namespace", default=None,
                   help="tenant namespace (as headroom's namespace option); default: the salt")
    p.add_argument("--exclude", action="append", default=[], metavar="PATH",
                   help="extra JSON path left out of keys (as the addon is configured)")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("export", parents=[common], help="write entries as a mitmproxy flow file")
    p.add_argument("flowfile")
    p.add_argument("keys", nargs="*")
    p.set_defaults(fn=cmd_export)
    return parser


def open_redis(url: str) -> RedisStore:
    """The shared store in Redis, checked with a PING so a wrong address fails here, once."""
    conn = RedisConn(url, password=os.environ.get(PASSWORD_ENV) or None, probe=False,
                     connect_timeout=2.0, socket_timeout=10.0)
    try:
        conn.call("redis", "unavailable", lambda c: c.ping())
    except Exception as e:
        conn.close()
        raise CliError(f"cannot reach {conn.url} ({type(e).__name__})") from None
    return RedisStore(conn)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.dir = os.path.expanduser(args.dir)
    for path in getattr(args, "exclude", []):
        try:
            cachekey.parse_path(path)
        except ValueError as e:
            print(f"store.py: --exclude: {e}", file=sys.stderr)
            return 2
    if args.cassette and args.redis:
        print("store.py: --cassette and --redis name two different stores; give one",
              file=sys.stderr)
        return 2
    where = os.path.expanduser(args.cassette) if args.cassette else args.dir
    if args.redis:
        try:
            store = open_redis(args.redis)
        except (ValueError, CliError) as e:
            print(f"store.py: --redis: {e}", file=sys.stderr)
            return 2
    elif args.command != "import" and not os.path.isdir(where):
        print(f"store.py: no {'cassette' if args.cassette else 'store'} at {where}",
              file=sys.stderr)
        return 1
    elif args.cassette:
        store = CassetteStore(where, read_only=args.command not in ("import", "prune"))
        if store.problems:
            print(f"store.py: {len(store.problems)} cassette file(s) skipped:\n  "
                  + "\n  ".join(store.problems), file=sys.stderr)
    else:
        store = ResponseStore(args.dir, size_limit_bytes=None, eviction_policy=None)
    try:
        code = args.fn(store, args)
        # A cassette with files it had to skip fails the command (usable as a CI check); the
        # files are listed above.
        return code or (1 if getattr(store, "problems", None) else 0)
    except CircuitOpen as e:
        print(f"store.py: {e}", file=sys.stderr)
        return 1
    except CliError as e:
        print(f"store.py: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
        if isinstance(store, RedisStore):
            store.conn.close()


if __name__ == "__main__":
    sys.stdout.reconfigure(errors="backslashreplace")
    # The proxy's "degraded" and skipped-file lines are for a long-running proxy; this tool
    # says it itself (once per file).
    logging.getLogger("headroom.degrade").disabled = True
    logging.getLogger("headroom.cassette").disabled = True
    sys.exit(main())
