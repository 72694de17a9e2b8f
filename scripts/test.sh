#!/usr/bin/env bash
# Quickstart, command 2: the whole test suite. Installs what it needs (setup.sh), runs the rootless
# fast loop (check.sh: format, lints, Rust tests, the interpreter's host-side tests), then
# builds the release binaries, starts a real server on a free loopback port and runs the
# SDK-compatibility suite (real `e2b` SDK, real gVisor sandboxes) against it, a server-restart
# durability check, a kill -9 check, a short checked soak and a short bench. Exits non-zero on any failure, including sandboxes, runsc
# processes, network namespaces or nftables tables left behind after the server stopped.
#
# Egress is on in the main server, but the only internet it can reach is a fake one on this
# machine (tests/fakenet.py: a namespace with web servers on TEST-NET addresses and a DNS server
# that the server is told to use with --dns); its description is exported to the suite as
# FIRKIN_FAKENET (a JSON file) and FIRKIN_FAKENET_DNS. Every other server runs with egress off.
#
# Environment: FIRKIN_VENV (default .venv), FIRKIN_CACHE_DIR (shared rootfs cache),
# FIRKIN_BENCH_RUNS (default 10; 0 skips the bench), FIRKIN_SOAK_MINUTES (default 2; 0 skips
# the soak), FIRKIN_SUITE_TIMEOUT (whole pytest run,
# seconds, default 1500), PYTEST_ARGS (extra pytest arguments, e.g. "-k files"),
# FIRKIN_FAKENET_LINK / FIRKIN_FAKENET_WEB (the fake internet's nets, default 198.19.250.0/30 and
# 198.18.0.0/24; give others to run beside another fake internet on the same host).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
VENV="${FIRKIN_VENV:-$REPO/.venv}"
STARTED=$(date +%s)
step() { printf '\n== %s (+%ds)\n' "$*" "$(($(date +%s) - STARTED))"; }

step "setup"
bash scripts/setup.sh

step "check.sh: fmt, clippy, cargo test, interpreter host-side tests"
bash scripts/check.sh

step "build release binaries"
cargo build --release --locked --bin firkin --bin firkin-agent

# A fresh state dir per run, never under $TMPDIR; the cache (rootfs) is shared.
mkdir -p /var/tmp
RUN_DIR="$(mktemp -d /var/tmp/firkin-test.XXXXXX)"
# Test machines may have little free disk; the production floors (10/10/20 GiB) would refuse
# every create there. The floors themselves are tested by tests/sdk/test_disk_floor.py.
export FIRKIN_DISK_FLOORS="${FIRKIN_DISK_FLOORS:-restore=256,snapshot=256,warm=512}"
export FIRKIN_STATE_DIR="$RUN_DIR/state"
BENCH_STATE_DIR="$RUN_DIR/bench-state"
# Network namespaces are named fk-<owner>-<id>, owner = sha256(state dir)[..3 bytes].
netns_prefix() { printf 'fk-%s-' "$(printf '%s' "$1" | sha256sum | cut -c1-6)"; }
NETNS_PREFIXES="$(netns_prefix "$FIRKIN_STATE_DIR")
$(netns_prefix "$BENCH_STATE_DIR")"
# nftables tables are named firkin-<owner>, the same owner.
nft_table() { printf 'firkin-%s' "$(printf '%s' "$1" | sha256sum | cut -c1-6)"; }
NFT_TABLES="$(nft_table "$FIRKIN_STATE_DIR")
$(nft_table "$BENCH_STATE_DIR")"
# The fake internet of this run (namespace fkfn-<tag>, guard table fkguard-<tag>).
FAKENET_TAG="t$(printf '%s' "$RUN_DIR" | sha256sum | cut -c1-8)"
FAKENET_UP=""
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
API_KEY="test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Its own address range, so it never collides with a `firkin serve` already running on the host
# (default 10.210.0.0) or with the bench below (10.212.0.0).
SUBNET_BASE="${FIRKIN_TEST_SUBNET_BASE:-10.211.0.0}"
LOG="$RUN_DIR/server.log"
SERVER_PID=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    # Graceful shutdown kills the running sandboxes; give it a bounded time.
    for _ in $(seq 1 150); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server did not stop within 30 s of SIGTERM; killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# runsc processes and namespaces of this run only (other firkin instances may share the host).
leftover_runsc() { pgrep -f -- "--root=$RUN_DIR/" || true; }
leftover_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -F -- "$NETNS_PREFIXES" || true; }
leftover_nft() { nft list tables 2>/dev/null | awk '{print $2 " " $3}' | grep -xF -- "$(printf 'inet %s\n' $NFT_TABLES)" || true; }
# An instance with egress holds IPv4 forwarding on through a marker named by its owner.
leftover_forwarding() {
  local t
  for t in $NFT_TABLES; do [ -e "/run/firkin/forwarding/${t#firkin-}" ] && echo "/run/firkin/forwarding/${t#firkin-}"; done
  true
}
leftover_fakenet() {
  ip netns list 2>/dev/null | awk '{print "netns " $1}' | grep -xF "netns fkfn-$FAKENET_TAG"
  nft list tables 2>/dev/null | grep -F "fkguard-$FAKENET_TAG"
  ip link show "fkfn-$FAKENET_TAG" 2>/dev/null | head -n 1
  pgrep -a -f -- "fkfn-$FAKENET_TAG" | grep -v pgrep
  true
}

cleanup() {
  local rc=$? pids nss tables markers fake
  set +e
  stop_server
  if [ "$rc" -ne 0 ] && [ -f "$LOG" ]; then
    echo "== server log (last 80 lines of $LOG)"
    tail -n 80 "$LOG"
  fi
  sleep 0.5
  pids="$(leftover_runsc)"
  nss="$(leftover_netns)"
  echo "== leftovers after the server stopped: $(printf '%s' "$pids" | grep -c .) runsc processes, $(printf '%s' "$nss" | grep -c .) network namespaces"
  if [ -n "$pids" ] || [ -n "$nss" ]; then
    [ -n "$pids" ] && ps -o pid=,args= -p "$(printf '%s' "$pids" | paste -sd,)" | cut -c1-200
    # shellcheck disable=SC2086 # one line per name
    [ -n "$nss" ] && printf '  netns %s\n' $nss
    echo "FAIL: the server left sandboxes behind; removing them"
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    for ns in $nss; do ip netns delete "$ns" 2>/dev/null; done
    [ "$rc" -eq 0 ] && rc=1
  fi
  tables="$(leftover_nft)"
  markers="$(leftover_forwarding)"
  echo "== leftovers after the server stopped: $(printf '%s' "$tables" | grep -c .) firkin nftables tables, $(printf '%s' "$markers" | grep -c .) forwarding markers"
  if [ -n "$markers" ]; then
    printf '  %s\n' "$markers"
    echo "FAIL: the server left its IPv4 forwarding marker behind (forwarding stays on for it)"
    [ "$rc" -eq 0 ] && rc=1
  fi
  if [ -n "$tables" ]; then
    printf '  table %s\n' "$tables"
    echo "FAIL: the server left its nftables table behind; removing it"
    printf '%s\n' "$tables" | while read -r family name; do nft delete table "$family" "$name"; done
    [ "$rc" -eq 0 ] && rc=1
  fi
  if [ -n "$FAKENET_UP" ]; then
    python3 tests/fakenet.py down --tag "$FAKENET_TAG"
    fake="$(leftover_fakenet)"
    if [ -n "$fake" ]; then
      printf '  %s\n' "$fake"
      echo "FAIL: the fake internet was not removed completely"
      [ "$rc" -eq 0 ] && rc=1
    fi
  fi
  # Sandbox disks are loop mounts under state/run/disks while their sandboxes run; a stopped
  # server leaves none. Never follow a mount out of the run dir.
  if awk -v d="$RUN_DIR/" 'index($5, d) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
    echo "FAIL: not removing $RUN_DIR: something is still mounted under it (a sandbox disk?):"
    awk -v d="$RUN_DIR/" 'index($5, d) == 1 { print "  " $5 }' /proc/self/mountinfo
    [ "$rc" -eq 0 ] && rc=1
  else
    rm -rf --one-file-system "$RUN_DIR"
  fi
  echo "== test.sh finished in $(($(date +%s) - STARTED)) s, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() {
  NO_COLOR=1 target/release/firkin serve --listen "127.0.0.1:$PORT" --api-key "$API_KEY" \
    --subnet-base "$SUBNET_BASE" --egress on --dns "$FIRKIN_FAKENET_DNS" >>"$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null --max-time 2 -H "X-API-KEY: $API_KEY" "http://127.0.0.1:$PORT/v2/sandboxes" 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || {
      echo "server exited early"
      return 1
    }
    sleep 0.2
  done
  echo "server did not answer within 30 s"
  return 1
}

step "fake internet (tests/fakenet.py, tag $FAKENET_TAG)"
FAKENET_UP=1
python3 tests/fakenet.py up --tag "$FAKENET_TAG" --link "${FIRKIN_FAKENET_LINK:-198.19.250.0/30}" \
  --web "${FIRKIN_FAKENET_WEB:-198.18.0.0/24}" >"$RUN_DIR/fakenet.json"
FIRKIN_FAKENET="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["description"])' "$RUN_DIR/fakenet.json")"
FIRKIN_FAKENET_DNS="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["dns"])' "$RUN_DIR/fakenet.json")"
export FIRKIN_FAKENET FIRKIN_FAKENET_DNS
echo "web $(python3 -c 'import json, sys; print(*json.load(open(sys.argv[1]))["web"])' "$RUN_DIR/fakenet.json"), dns $FIRKIN_FAKENET_DNS"

step "start server on 127.0.0.1:$PORT (state $FIRKIN_STATE_DIR, log $LOG)"
start_server

export E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$API_KEY"
# The SDK suite's sandbox factory prints this log's tail under a failed test.
export FIRKIN_SERVER_LOG="$LOG"
unset E2B_DEBUG E2B_DOMAIN || true

step "SDK compatibility suite (e2b $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
# shellcheck disable=SC2086
timeout -k 30 "${FIRKIN_SUITE_TIMEOUT:-1500}" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout=180 -rfE ${PYTEST_ARGS:-} tests/sdk

step "no sandbox left behind by the suite"
# Kills return before the engine teardown finishes: allow it a few seconds, then insist.
"$VENV/bin/python" - <<'PY'
import time
import httpx
from e2b import Sandbox, SandboxQuery, SandboxState

deadline = time.time() + 20
while True:
    left = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING, SandboxState.PAUSED])).next_items()
    metrics = httpx.get(__import__("os").environ["E2B_API_URL"] + "/metrics", timeout=10).text
    # Warm-pool entries hold capacity by design; active and paused reservations must be gone.
    used = [l for l in metrics.splitlines()
            if l.startswith(('firkin_reservations{class="active"}', 'firkin_reservations{class="paused"}'))
            and not l.endswith(" 0")]
    if not left and not used:
        print("none: the sandbox list is empty and no active or paused capacity is reserved")
        break
    if time.time() > deadline:
        for s in left:
            print(f"LEAKED {s.sandbox_id} state={s.state.value} metadata={s.metadata}")
        for l in used:
            print(f"STILL RESERVED {l}")
        raise SystemExit("FAIL: the suite left sandboxes or reservations behind")
    time.sleep(0.5)
PY

step "server metrics after the suite"
curl -fsS --max-time 10 "http://127.0.0.1:$PORT/metrics" | grep -E '^firkin_(lifecycle_seconds_count|capacity_used|admission)' || true

step "durability: a paused sandbox survives a server restart"
read -r PAUSED_ID PAUSED_PID < <(timeout 120 "$VENV/bin/python" tests/sdk/restart_check.py prepare)
stop_server
start_server
timeout 120 "$VENV/bin/python" tests/sdk/restart_check.py verify "$PAUSED_ID" "$PAUSED_PID"

step "crash safety: a running sandbox survives kill -9 of the server"
read -r RUNNING_ID RUNNING_PID < <(timeout 120 "$VENV/bin/python" tests/sdk/restart_check.py prepare-running)
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
start_server
timeout 120 "$VENV/bin/python" tests/sdk/restart_check.py verify-running "$RUNNING_ID" "$RUNNING_PID"

if [ "${FIRKIN_SOAK_MINUTES:-2}" != 0 ]; then
  step "soak: create/exec/files/kill for ${FIRKIN_SOAK_MINUTES:-2} min; no failure, no growth of fds, RSS, namespaces, runsc processes"
  timeout 900 "$VENV/bin/python" tests/soak/soak.py --server-pid "$SERVER_PID" --state-dir "$FIRKIN_STATE_DIR" \
    --minutes "${FIRKIN_SOAK_MINUTES:-2}" --out "$RUN_DIR/soak.json" --check
fi

if [ "${FIRKIN_BENCH_RUNS:-10}" -gt 0 ]; then
  step "bench (short run; use 'firkin bench create -n 100' for the full table)"
  # Its own state dir and address range, so it never touches the server's sandboxes; no egress,
  # and a DNS forwarder that asks a dead loopback port (never the host's resolvers).
  FIRKIN_STATE_DIR="$BENCH_STATE_DIR" FIRKIN_EGRESS=off FIRKIN_DNS=127.0.0.1:9 timeout 600 target/release/firkin bench create \
    -n "${FIRKIN_BENCH_RUNS:-10}" --subnet-base 10.212.0.0 --out "$RUN_DIR/bench.json"
fi
