#!/usr/bin/env bash
# Installs everything firkin and its test suite need, idempotently:
#   - Debian packages: runsc (bookworm-backports), mmdebstrap, iproute2, curl, …
#   - the default base template rootfs, built once into $FIRKIN_CACHE_DIR/rootfs/base-v1
#   - a Python venv with the pinned E2B SDKs for the SDK-compatibility tests
# Fast when everything is already present. Must run as root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${FIRKIN_CACHE_DIR:-$HOME/.firkin/cache}"
ROOTFS_NAME="base-v1"
ROOTFS="$CACHE_DIR/rootfs/$ROOTFS_NAME"
VENV="${FIRKIN_VENV:-$REPO/.venv}"
E2B_VERSION="2.63.0"
E2B_CI_VERSION="2.11.5"
ROOTFS_PACKAGES="bash,coreutils,procps,python3,git,ca-certificates,curl,sudo,iproute2,less,findutils,grep,sed,tar,gzip"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (firkin needs namespaces, cgroups and runsc)" >&2
  exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
runsc_ok() {
  command -v runsc >/dev/null 2>&1 || return 1
  # Debian's backports build is 0.0~2024MMDD; plain bookworm's 2022 build is too old.
  local v; v="$(runsc --version 2>/dev/null | sed -n 's/^runsc version 0.0~\([0-9]\{8\}\).*/\1/p')"
  [ -n "$v" ] && [ "$v" -ge 20240101 ]
}
need_pkgs=()
for cmd_pkg in mmdebstrap:mmdebstrap ip:iproute2 curl:curl unshare:util-linux; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need_pkgs+=("${cmd_pkg##*:}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
if ! runsc_ok || [ "${#need_pkgs[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! runsc_ok; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -e "$src" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports (runsc)"
      cat > "$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
  fi
  log "apt-get update"
  apt-get update -qq
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  if ! runsc_ok; then
    log "installing runsc from bookworm-backports"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc >/dev/null
  fi
fi
runsc_ok || { echo "runsc from bookworm-backports is required; install failed" >&2; exit 1; }

# --- Base template rootfs (built once, atomically) -----------------------------------------
mkdir -p "$CACHE_DIR/rootfs"
# Remove temp dirs of interrupted earlier builds.
find "$CACHE_DIR/rootfs" -maxdepth 1 -name ".${ROOTFS_NAME}.tmp-*" -exec rm -rf {} + 2>/dev/null || true
if [ ! -e "$ROOTFS/bin/bash" ]; then
  log "building base rootfs $ROOTFS (Debian bookworm, mmdebstrap)"
  tmp="$(mktemp -d "$CACHE_DIR/rootfs/.${ROOTFS_NAME}.tmp-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase --include="$ROOTFS_PACKAGES" \
    --customize-hook='chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash user' \
    --customize-hook='echo "user ALL=(ALL:ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/user"; chmod 0440 "$1/etc/sudoers.d/user"' \
    --customize-hook='mkdir -p "$1/opt/firkin"; echo firkin > "$1/etc/hostname"; printf "127.0.0.1 localhost firkin\n::1 localhost\n" > "$1/etc/hosts"; : > "$1/etc/resolv.conf"' \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
    bookworm "$tmp/root" http://deb.debian.org/debian
  cat > "$tmp/root/.firkin-rootfs.json" <<JSON
{"format":1,"name":"base","version":"${ROOTFS_NAME}","debianSuite":"bookworm","packages":"${ROOTFS_PACKAGES}","builtAt":"$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
JSON
  sync -f "$tmp/root"
  mv -T "$tmp/root" "$ROOTFS"
  rm -rf "$tmp"
  trap - EXIT
  log "base rootfs ready"
fi

# --- Python venv for the SDK tests -----------------------------------------------------------
want="e2b==$E2B_VERSION e2b-code-interpreter==$E2B_CI_VERSION pytest pytest-timeout httpx"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" - "$E2B_VERSION" "$E2B_CI_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
assert version("e2b") == sys.argv[1]
assert version("e2b-code-interpreter") == sys.argv[2]
import pytest, pytest_timeout, httpx  # noqa: F401
PY
then
  log "preparing Python venv $VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $want
fi
log "ok: $(runsc --version | head -1); rootfs $ROOTFS; venv $VENV"
