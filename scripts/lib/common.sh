# Shared by the scripts in scripts/ (sourced, never run): the environment they all need, the
# Python pins, and the venv check. Sourcing it sets REPO and cds there.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
# rustup's cargo, should a bare environment lack it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

# The SDKs the suite pins, and the test tools (one list for setup.sh's venv and check.sh's).
E2B_PINS=("e2b==2.63.0" "e2b-code-interpreter==2.11.5")
TEST_TOOL_PINS=("pytest==9.2.0" "pytest-timeout==2.4.0" "httpx==0.28.1")

# venv_has VENV PIN... [-- MODULE...]: true when VENV's python has exactly these versions
# installed and can import the modules after `--`.
venv_has() {
  local venv="$1"
  shift
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import importlib
import sys
from importlib.metadata import version
args = sys.argv[1:]
cut = args.index("--") if "--" in args else len(args)
for pin in args[:cut]:
    name, want = pin.split("==")
    assert version(name) == want, pin
for module in args[cut + 1:]:
    importlib.import_module(module)
PY
}
