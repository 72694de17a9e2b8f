#!/usr/bin/env bash
# The fast, rootless developer loop: everything that needs neither root nor gVisor.
#   1. cargo fmt --all --check
#   2. cargo clippy --locked --workspace --all-targets -- -D warnings
#   3. cargo test --locked --workspace
#   4. the code-interpreter service's host-side tests (interpreter/tests/test_server.py, pytest)
# scripts/test.sh runs this first (as root, after setup.sh), then the real-server suites.
#
# Needs: a rustup toolchain with rustfmt and clippy (`cargo` on PATH, or in ~/.cargo/bin), and
# python3 with its venv module (Debian: python3-venv). No root, apt, namespaces or rootfs.
# `node` on PATH is optional (the JavaScript test skips without it), and so are numpy, pandas
# and matplotlib (the rich-results test skips without them; the SDK suite covers both inside
# real sandboxes).
#
# Python venv: ${FIRKIN_CHECK_VENV:-.venv-check}, never the SDK suite's .venv: that one is
# created by setup.sh as root and pinned for the SDK suite, so a non-root developer may be unable
# to write to it or may not have it at all. The check venv is created on first use with the pins
# below (pytest, jupyter-client/ipykernel at the versions the code-interpreter rootfs ships,
# and e2b-code-interpreter, which test_server.py drives the service with); later runs only
# check the installed versions (well under a second). A complete venv is used even when it is
# read-only (e.g. one that test.sh made as root); an incomplete one must be writable.
#
# Environment: FIRKIN_CHECK_VENV (the venv), CARGO_TARGET_DIR and the other cargo variables as
# usual, FIRKIN_CHECK_PYTEST_ARGS (extra pytest arguments for step 4, e.g. "-k bash"; not
# PYTEST_ARGS, which test.sh passes to the SDK suite).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
VENV="${FIRKIN_CHECK_VENV:-$REPO/.venv-check}"
# The interpreter's own tests need the Jupyter stack the code-interpreter rootfs ships.
PY_PINS=("${TEST_TOOL_PINS[@]}" "${E2B_PINS[@]}" "jupyter-client==7.4.9" "ipykernel==6.17.0")

STARTED=$(date +%s)
STEP_STARTED=$STARTED
STEP=""
step() {
  local now
  now=$(date +%s)
  [ -n "$STEP" ] && printf '== %s: ok (%ds)\n' "$STEP" "$((now - STEP_STARTED))"
  STEP="$*"
  STEP_STARTED=$now
  printf '\n== %s (+%ds)\n' "$STEP" "$((now - STARTED))"
}
finish() {
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    [ -n "$STEP" ] && printf '== %s: ok (%ds)\n' "$STEP" "$(($(date +%s) - STEP_STARTED))"
    printf '\n== check.sh passed in %ds\n' "$(($(date +%s) - STARTED))"
  else
    printf '\n== check.sh FAILED at "%s" after %ds (exit %d)\n' "$STEP" "$(($(date +%s) - STARTED))" "$rc"
  fi
}
trap finish EXIT

die() {
  echo "check.sh: $*" >&2
  exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain with rustup (https://rustup.rs)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --locked --workspace

step "interpreter host-side tests (venv $VENV)"
# test_server.py skips itself whole without httpx, jupyter_client or ipykernel.
venv_ok() { venv_has "$VENV" "${PY_PINS[@]}" -- httpx ipykernel jupyter_client; }
if ! venv_ok; then
  # Writable: an existing venv dir, or the dir it is to be created in.
  target="$VENV"
  [ -e "$target" ] || target="$(dirname "$VENV")"
  [ -w "$target" ] || die "$VENV lacks ${PY_PINS[*]} and is not writable by $(id -un); remove it, or point FIRKIN_CHECK_VENV elsewhere"
  mkdir -p "$VENV"
  exec 9>"$VENV/.firkin-check.lock"
  command -v flock >/dev/null 2>&1 && flock 9 # a concurrent check.sh may be installing
  if ! venv_ok; then
    echo "preparing $VENV (${PY_PINS[*]})"
    if [ ! -x "$VENV/bin/python" ]; then
      python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}"
    venv_ok || die "$VENV does not have ${PY_PINS[*]} after pip install"
  fi
  exec 9>&-
fi
# test_server.py skips itself whole without httpx/jupyter_client/ipykernel, which venv_ok has
# just imported; -rs names any test that still skips. No cache dir: the tree may be read-only.
# shellcheck disable=SC2086 # a list of arguments
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rfEs ${FIRKIN_CHECK_PYTEST_ARGS:-} \
  interpreter/tests/test_server.py
