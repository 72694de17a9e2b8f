#!/usr/bin/env bash
# Installs everything firkin and its test suite need, idempotently:
#   - Debian packages: runsc (bookworm-backports), mmdebstrap, iproute2, iptables, curl, …
#   - the template rootfs directories, each built once into $FIRKIN_CACHE_DIR/rootfs/<name>:
#     base-v1 (the default base) and code-interpreter-v2 (plus ipykernel, numpy, pandas,
#     matplotlib, node, TypeScript, R with IRkernel and the e2b-charts extractor, for the
#     code-interpreter-v1 template)
#   - a Python venv with the pinned E2B SDKs for the SDK-compatibility tests
# Fast (well under a second) when everything is already present: each step checks first.
# Must run as root. Safe to run concurrently (the rootfs and venv steps take a lock) and safe to
# interrupt: a half-built rootfs never appears under its final name.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
CACHE_DIR="${FIRKIN_CACHE_DIR:-$HOME/.firkin/cache}"
# Bump a name (base-v2, …) whenever that rootfs's contents change, together with BASE_ROOTFS /
# INTERPRETER_ROOTFS in crates/firkin-core/src/template/mod.rs: a cache is never rebuilt in place.
ROOTFS_DIR="$CACHE_DIR/rootfs"
ROOTFS_MANIFEST=".firkin-rootfs.json" # inside the rootfs; written last, so it marks a complete build
BASE_NAME="base-v1"
BASE_PACKAGES="bash,coreutils,procps,python3,git,ca-certificates,curl,sudo,iproute2,less,findutils,grep,sed,tar,gzip"
# The code-interpreter template: the base plus real Jupyter kernels' stack and node for JavaScript.
INTERPRETER_NAME="code-interpreter-v2"
INTERPRETER_PACKAGES="$BASE_PACKAGES,python3-ipykernel,python3-jupyter-client,python3-numpy,python3-pandas,python3-matplotlib,nodejs"
# Installed afterwards without their Recommends (r-base-core's would add r-base-dev, a compiler
# toolchain and the R manuals): TypeScript for `language="typescript"`, R and its Jupyter kernel.
INTERPRETER_LEAN_PACKAGES="node-typescript r-base-core r-cran-irkernel"
# Wheels from PyPI (no sdists, hashes pinned, --no-deps), into /usr/local/lib/python3.11/
# dist-packages: E2B's own chart extractor (result.chart) and pydantic 2, which it needs and
# bookworm lacks. numpy and matplotlib stay Debian's (the extractor works with them).
INTERPRETER_WHEELS=(
  "e2b-charts==1.0.0 --hash=sha256:c5a9ae62bd33a3cba0f7efd0fe10938f2909bf948e54029bb7b67c0fd8ca782c"
  "pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc"
  "pydantic-core==2.50.5 --hash=sha256:488319076ec92908b91fc6265ce761f1d78748f69f85518564fd16bf333e1b70"
  "annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0"
  "typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8"
  "typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39"
)
DEBIAN_MIRROR="http://deb.debian.org/debian"
VENV="${FIRKIN_VENV:-$REPO/.venv}"
PY_PINS=("${E2B_PINS[@]}" "${TEST_TOOL_PINS[@]}")

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (firkin needs namespaces, cgroups and runsc)" >&2
  exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
runsc_ok() {
  command -v runsc >/dev/null 2>&1 || return 1
  # Debian's backports build is 0.0~2024MMDD; plain bookworm's 2022 build is too old.
  local v
  v="$(runsc --version 2>/dev/null | sed -n 's/^runsc version 0.0~\([0-9]\{8\}\).*/\1/p')"
  [ -n "$v" ] && [ "$v" -ge 20240101 ]
}
need_pkgs=()
# command:package. unshare/flock come from util-linux, ps/pgrep from procps, fuser from psmisc;
# mkfs.ext4/fallocate/losetup are for the loop-mounted small-store test; nft is the sandbox
# firewall; dnsmasq (dnsmasq-base) is the test suite's fake-internet DNS server.
for cmd_pkg in mmdebstrap:mmdebstrap ip:iproute2 iptables:iptables curl:curl unshare:util-linux \
  flock:util-linux ps:procps pgrep:procps fuser:psmisc timeout:coreutils \
  mkfs.ext4:e2fsprogs fallocate:util-linux losetup:mount nft:nftables dnsmasq:dnsmasq-base; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need_pkgs+=("${cmd_pkg##*:}")
done
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
if ! runsc_ok || [ "${#need_pkgs[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! runsc_ok; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -e "$src" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports (runsc)"
      cat >"$src" <<'SRC'
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
    mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  if ! runsc_ok; then
    log "installing runsc from bookworm-backports"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc >/dev/null
  fi
fi
runsc_ok || {
  echo "runsc from bookworm-backports (2024 or newer) is required; install failed" >&2
  exit 1
}

# --- Base template rootfs (built once, atomically) -----------------------------------------
mounts_under() { awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo; }
# Removes a directory tree left by an interrupted build. mmdebstrap mounts /proc, /sys and /dev
# inside its target while it runs; a run killed hard can leave them mounted, and a plain rm -rf
# would then descend into the host's /dev. Unmount first, deepest first, and never cross a mount.
remove_tree() {
  local dir="$1" m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(mounts_under "$dir" | sort -r)
  if [ -n "$(mounts_under "$dir")" ]; then
    echo "refusing to remove $dir: something is still mounted under it" >&2
    return 1
  fi
  rm -rf --one-file-system "$dir"
}

# build_rootfs NAME PACKAGES [LEAN_PACKAGES [WHEELS]]: PACKAGES (comma-separated) with their
# Recommends, then LEAN_PACKAGES (space-separated) without, then, when WHEELS is "wheels", the
# INTERPRETER_WHEELS from PyPI.
build_rootfs() {
  local ROOTFS_NAME="$1" ROOTFS_PACKAGES="$2" LEAN_PACKAGES="${3:-}" WHEELS="${4:-}"
  local ROOTFS="$ROOTFS_DIR/$ROOTFS_NAME"
  # Under the lock: nobody else is building, so any temp dir left is from an interrupted run.
  local stale
  for stale in "$ROOTFS_DIR"/."${ROOTFS_NAME}".*; do
    [ -e "$stale" ] || continue
    log "removing $stale (left by an interrupted build)"
    remove_tree "$stale"
  done
  [ -e "$ROOTFS/$ROOTFS_MANIFEST" ] && return 0 # built by a concurrent run while we waited
  if [ -e "$ROOTFS" ]; then
    # Not built by this script (no manifest): move it aside rather than trust it.
    log "moving aside incomplete $ROOTFS"
    mv -T "$ROOTFS" "$ROOTFS_DIR/.${ROOTFS_NAME}.stale-$$"
    remove_tree "$ROOTFS_DIR/.${ROOTFS_NAME}.stale-$$"
  fi
  log "building rootfs $ROOTFS (Debian bookworm, mmdebstrap)"
  local tmp started
  started=$(date +%s)
  # Beside the target (same filesystem), so the final step is one atomic rename.
  tmp="$(mktemp -d "$ROOTFS_DIR/.${ROOTFS_NAME}.tmp-XXXXXX")"
  # shellcheck disable=SC2064
  trap "remove_tree '$tmp'" EXIT
  local lean_hook=()
  if [ -n "$LEAN_PACKAGES" ]; then
    # While the chroot still has its apt lists and the host's resolv.conf.
    lean_hook=(--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $LEAN_PACKAGES >/dev/null")
  fi
  # shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell, not ours
  mmdebstrap --quiet --variant=minbase --include="$ROOTFS_PACKAGES" \
    "${lean_hook[@]}" \
    --customize-hook='chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash user' \
    --customize-hook='echo "user ALL=(ALL:ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/user"; chmod 0440 "$1/etc/sudoers.d/user"' \
    --customize-hook='mkdir -p "$1/opt/firkin"; echo firkin > "$1/etc/hostname"; printf "127.0.0.1 localhost firkin\n::1 localhost\n" > "$1/etc/hosts"; : > "$1/etc/resolv.conf"' \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
    bookworm "$tmp/root" "$DEBIAN_MIRROR"
  # Check what the sandbox contract relies on before publishing the rootfs.
  grep -q '^user:x:1000:1000::/home/user:/bin/bash$' "$tmp/root/etc/passwd" || {
    echo "rootfs check failed: user 'user' (1000:1000, /home/user, /bin/bash) missing" >&2
    exit 1
  }
  local f
  for f in bin/bash usr/bin/python3 usr/bin/git usr/bin/curl usr/bin/sudo etc/hostname etc/hosts etc/resolv.conf; do
    [ -e "$tmp/root/$f" ] || {
      echo "rootfs check failed: /$f missing" >&2
      exit 1
    }
  done
  if [ "$WHEELS" = wheels ]; then
    install_wheels "$tmp"
  fi
  case ",$ROOTFS_PACKAGES," in
  *,python3-ipykernel,*)
    for f in usr/bin/node usr/lib/python3/dist-packages/ipykernel usr/lib/python3/dist-packages/jupyter_client \
      usr/lib/python3/dist-packages/pandas usr/lib/python3/dist-packages/matplotlib \
      usr/bin/tsc usr/share/nodejs/typescript/package.json usr/bin/R usr/lib/R/site-library/IRkernel; do
      [ -e "$tmp/root/$f" ] || {
        echo "rootfs check failed: /$f missing" >&2
        exit 1
      }
    done
    # The chart extractor must import against the rootfs's own numpy/matplotlib/pydantic.
    chroot "$tmp/root" env -i PATH=/usr/bin:/bin HOME=/nonexistent MPLCONFIGDIR=/tmp/.setup-mpl \
      python3 -c 'import e2b_charts, pydantic; assert pydantic.VERSION.startswith("2.")' || {
      echo "rootfs check failed: e2b_charts does not import" >&2
      exit 1
    }
    rm -rf "$tmp/root/tmp/.setup-mpl"
    ;;
  esac
  if [ ! -d "$tmp/root/opt/firkin" ] || [ ! -d "$tmp/root/home/user" ]; then
    echo "rootfs check failed: /opt/firkin or /home/user missing" >&2
    exit 1
  fi
  local pkgs_json
  pkgs_json="$(printf '%s' "$ROOTFS_PACKAGES${LEAN_PACKAGES:+ $LEAN_PACKAGES}" | tr ' ' , | sed 's/[^,][^,]*/"&"/g')"
  if [ "$WHEELS" = wheels ]; then
    pkgs_json="$pkgs_json$(printf ',"pypi:%s"' "${INTERPRETER_WHEELS[@]%% *}")"
  fi
  cat >"$tmp/root/$ROOTFS_MANIFEST" <<JSON
{"format":1,"name":"${ROOTFS_NAME%-v*}","version":"${ROOTFS_NAME}","debianSuite":"bookworm","packages":[${pkgs_json}],"builtAt":"$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
JSON
  sync -f "$tmp/root"
  mv -T "$tmp/root" "$ROOTFS"
  sync -f "$ROOTFS_DIR"
  rmdir "$tmp"
  trap - EXIT
  log "rootfs $ROOTFS_NAME ready ($(($(date +%s) - started)) s)"
}

# install_wheels TMP: INTERPRETER_WHEELS into TMP/root, with pip from a throwaway venv in TMP
# (binary wheels for the rootfs's CPython 3.11 only, whatever the host's Python is).
install_wheels() {
  local tmp="$1" req="$1/wheels.txt"
  log "installing ${INTERPRETER_WHEELS[*]%% *} from PyPI"
  python3 -m venv "$tmp/pip"
  printf '%s\n' "${INTERPRETER_WHEELS[@]}" >"$req"
  "$tmp/pip/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
    --require-hashes --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
    --implementation cp --abi cp311 \
    --target "$tmp/root/usr/local/lib/python3.11/dist-packages" -r "$req"
  rm -rf "$tmp/pip" "$req"
}

ensure_rootfs() {
  [ -e "$ROOTFS_DIR/$1/$ROOTFS_MANIFEST" ] && return 0
  mkdir -p "$ROOTFS_DIR"
  exec 9>"$ROOTFS_DIR/.lock"
  flock 9
  build_rootfs "$@"
  exec 9>&-
}
ensure_rootfs "$BASE_NAME" "$BASE_PACKAGES"
ensure_rootfs "$INTERPRETER_NAME" "$INTERPRETER_PACKAGES" "$INTERPRETER_LEAN_PACKAGES" wheels

# gVisor mounts a memory tmpfs over an empty /tmp. firkin keeps /tmp on the sandbox's disk (as
# E2B does), so the rootfs's /tmp holds one small file (also added to rootfs built before).
TMP_MARKER="tmp/.firkin-on-disk"
for name in "$BASE_NAME" "$INTERPRETER_NAME"; do
  [ -e "$ROOTFS_DIR/$name/$TMP_MARKER" ] && continue
  printf 'firkin: /tmp is on the sandbox disk; this file keeps gVisor from mounting a tmpfs here.\n' \
    >"$ROOTFS_DIR/$name/$TMP_MARKER.tmp"
  mv -f "$ROOTFS_DIR/$name/$TMP_MARKER.tmp" "$ROOTFS_DIR/$name/$TMP_MARKER"
done

# --- Python venv for the SDK tests -----------------------------------------------------------
venv_ok() { venv_has "$VENV" "${PY_PINS[@]}"; }
if ! venv_ok; then
  mkdir -p "$VENV"
  exec 9>"$VENV/.firkin-setup.lock"
  flock 9
  if ! venv_ok; then
    log "preparing Python venv $VENV (${PY_PINS[*]})"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}"
    venv_ok || {
      echo "venv $VENV does not have ${PY_PINS[*]} after pip install" >&2
      exit 1
    }
  fi
  exec 9>&-
fi
log "ok: $(runsc --version | head -1); rootfs $ROOTFS_DIR/{$BASE_NAME,$INTERPRETER_NAME}; venv $VENV"
