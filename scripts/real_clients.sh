#!/usr/bin/env bash
# Drive the real Claude Code and Codex CLIs through Headroom, offline (opt-in tests).
#
#   scripts/real_clients.sh                 install the CLIs if missing, run the tests
#   scripts/real_clients.sh --update        reinstall (latest, or the pinned versions below)
#   scripts/real_clients.sh [pytest args]   e.g. -k codex -x
#
# The CLIs come from npm (@anthropic-ai/claude-code, @openai/codex) and are installed into a cache
# outside the repository, $HEADROOM_REALCLIENTS_DIR (default ~/.cache/headroom-realclients); the
# tests find them there (`./headroom test -m realclients` works once they are installed).
# Pin versions with HEADROOM_CLAUDE_VERSION / HEADROOM_CODEX_VERSION (default: latest).
# Nothing reaches the internet but the npm registry during the install: the tests run the
# clients against a local fake upstream, in throwaway HOMEs (the real ~/.claude, ~/.codex are
# never read or written).
#
# A summary of what each client sent (paths, notable headers, body shape; never credentials) is
# written to $HEADROOM_REALCLIENTS_REPORT (default <cache>/report.jsonl) and printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${HEADROOM_REALCLIENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/headroom-realclients}
export HEADROOM_REALCLIENTS_DIR=$DIR
export HEADROOM_REALCLIENTS_REPORT=${HEADROOM_REALCLIENTS_REPORT:-$DIR/report.jsonl}
CLAUDE_PKG="@anthropic-ai/claude-code@${HEADROOM_CLAUDE_VERSION:-latest}"
CODEX_PKG="@openai/codex@${HEADROOM_CODEX_VERSION:-latest}"

update=0
if [ "${1:-}" = "--update" ]; then update=1; shift; fi

if ! command -v npm >/dev/null 2>&1; then
  echo "real_clients: npm (Node.js) is needed to install the clients" >&2
  exit 1
fi

# Version checks run with a throwaway HOME too.
SCRATCH_HOME=$(mktemp -d)
trap 'rm -rf "$SCRATCH_HOME"' EXIT
client() { env -i PATH="$PATH" HOME="$SCRATCH_HOME" "$DIR/node_modules/.bin/$1" "${@:2}"; }
bin_ok() { [ -x "$DIR/node_modules/.bin/$1" ] && client "$1" --version >/dev/null 2>&1; }

if [ $update -eq 1 ] || ! bin_ok claude || ! bin_ok codex; then
  echo "real_clients: installing $CLAUDE_PKG $CODEX_PKG into $DIR" >&2
  mkdir -p "$DIR"
  [ -f "$DIR/package.json" ] || echo '{"private": true}' > "$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "$CLAUDE_PKG" "$CODEX_PKG" >&2
  # Claude Code's postinstall puts the native binary in place of a stub; when npm skipped
  # install scripts, run it ourselves.
  if ! bin_ok claude && [ -f "$DIR/node_modules/@anthropic-ai/claude-code/install.cjs" ]; then
    (cd "$DIR/node_modules/@anthropic-ai/claude-code" && node install.cjs) >&2
  fi
fi
for b in claude codex; do
  if ! bin_ok "$b"; then
    echo "real_clients: $DIR/node_modules/.bin/$b does not run; see the npm output above" >&2
    exit 1
  fi
done
echo "real_clients: claude $(client claude --version 2>/dev/null), $(client codex --version 2>/dev/null)" >&2

rm -f "$HEADROOM_REALCLIENTS_REPORT"
status=0
./headroom test tests/realclients -m realclients "$@" || status=$?
if [ -s "$HEADROOM_REALCLIENTS_REPORT" ]; then
  echo "real_clients: what the clients sent -> $HEADROOM_REALCLIENTS_REPORT" >&2
  .venv/bin/python - "$HEADROOM_REALCLIENTS_REPORT" <<'PY' >&2
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    d = json.loads(line)
    name = d.pop("test")
    if name == "versions":
        print(f"  {d['client']}: {d['version']}")
        continue
    print(f"  [{name}] session_source={d.get('session_source', '-')} ({d.get('seconds')}s)")
    for r in d.get("llm", []):
        h = {k.lower(): v for k, v in r["headers"].items()}
        keep = ("x-claude-code-session-id", "session-id", "thread-id", "openai-beta",
                "anthropic-beta", "content-encoding", "user-agent")
        print(f"    {r['method']} {r['path']} {r['body']['bytes'] if r['body'] else 0} bytes "
              + " ".join(f"{k}={h[k][:60]}" for k in keep if k in h))
    if d.get("handshake"):
        h = {k.lower(): v for k, v in d["handshake"].items()}
        print(f"    WebSocket upgrade: openai-beta={h.get('openai-beta')} "
              f"thread-id={h.get('thread-id')} extensions={h.get('sec-websocket-extensions')}")
    for m, p in d.get("other_requests", []):
        print(f"    (other) {m} {p}")
    for k in ("tool_result_chars", "tool_output_chars"):
        if k in d:
            print(f"    tool output: {d[k]['client']} chars sent by the client, "
                  f"{d[k]['upstream']} upstream")
PY
fi
exit $status
