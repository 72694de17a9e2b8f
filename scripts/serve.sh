#!/usr/bin/env bash
# Quickstart, command 1: install what is missing, build, and start the server on the embedded
# defaults (127.0.0.1:3000, local store under ~/.firkin, the base template). Extra arguments go
# to `firkin serve` (e.g. --listen 0.0.0.0:3000).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
cargo build --release --locked --bin firkin --bin firkin-agent
exec target/release/firkin serve "$@"
