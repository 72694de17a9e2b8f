#!/usr/bin/env bash
# Quickstart, command 2: the whole test suite. Installs what it needs (setup.sh), checks format
# and lints, runs the Rust tests, then starts a real server on a free loopback port and runs the
# SDK-compatibility suite (real `e2b` SDK, real gVisor sandboxes) against it, then a short bench.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${FIRKIN_VENV:-$REPO/.venv}"

bash scripts/setup.sh

echo "== cargo fmt / clippy"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked --workspace

echo "== build release binaries"
cargo build --release --locked --bin firkin --bin firkin-agent

# A fresh state dir per run; the cache (rootfs) is shared.
RUN_DIR="$(mktemp -d /var/tmp/firkin-test.XXXXXX)"
export FIRKIN_STATE_DIR="$RUN_DIR/state"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
API_KEY="test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
LOG="$RUN_DIR/server.log"
SERVER_PID=""

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$LOG" ]; then
    echo "== server log (tail)"; tail -n 60 "$LOG" || true
  fi
  left="$(runsc --root="$FIRKIN_STATE_DIR/run/runsc" list -quiet 2>/dev/null | grep -c . || true)"
  echo "== leftover runsc sandboxes after server stop: ${left:-0}"
  rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT

start_server() {
  target/release/firkin serve --listen "127.0.0.1:$PORT" --api-key "$API_KEY" >>"$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null -H "X-API-KEY: $API_KEY" "http://127.0.0.1:$PORT/v2/sandboxes" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited early"; return 1; }
    sleep 0.2
  done
  echo "server did not answer"; return 1
}

echo "== start server on 127.0.0.1:$PORT"
start_server

export E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$API_KEY"
unset E2B_DEBUG E2B_DOMAIN || true

echo "== SDK compatibility suite (e2b $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout=180 tests/sdk

echo "== server metrics after the suite"
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -E '^firkin_(lifecycle_seconds_count|capacity_used|admission)' || true

echo "== durability: a paused sandbox survives a server restart"
read -r PAUSED_ID PAUSED_PID < <("$VENV/bin/python" tests/sdk/restart_check.py prepare)
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true
start_server
"$VENV/bin/python" tests/sdk/restart_check.py verify "$PAUSED_ID" "$PAUSED_PID"

echo "== bench (short run; use 'firkin bench create -n 100' for the full table)"
# Its own state dir and address range, so it never touches the server's sandboxes.
FIRKIN_STATE_DIR="$RUN_DIR/bench-state" target/release/firkin bench create \
  -n "${FIRKIN_BENCH_RUNS:-10}" --subnet-base 10.212.0.0 --out "$RUN_DIR/bench.json"
