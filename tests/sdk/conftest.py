"""SDK-compatibility suite: the real PyPI `e2b` SDK against a real firkin server.

The server URL and key come from the environment (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY),
exactly as a user would configure the unmodified SDK; scripts/test.sh sets them.
"""

import collections
import contextlib
import os
import uuid

import httpx
import pytest
from e2b import Sandbox

API_URL = os.environ.get("E2B_API_URL", "http://127.0.0.1:3000")
API_KEY = os.environ.get("E2B_API_KEY", "")


@pytest.fixture(scope="session", autouse=True)
def _server_configured():
    """Fail fast with a clear message instead of 49 confusing errors when no server is set up."""
    missing = [v for v in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY") if not os.environ.get(v)]
    if missing:
        pytest.exit(
            f"{', '.join(missing)} not set: run scripts/test.sh, or start scripts/serve.sh and export "
            "the lines it prints",
            returncode=2,
        )
    if os.environ.get("E2B_DEBUG", "").lower() == "true":
        pytest.exit("E2B_DEBUG=true makes the SDK skip the control plane; unset it", returncode=2)
    try:
        r = httpx.get(f"{API_URL}/v2/sandboxes", headers={"X-API-KEY": API_KEY}, timeout=10)
    except httpx.HTTPError as e:
        pytest.exit(f"no firkin server answers at {API_URL}: {e}", returncode=2)
    if r.status_code != 200:
        pytest.exit(f"{API_URL}/v2/sandboxes answered {r.status_code} with this E2B_API_KEY: {r.text}", returncode=2)


SERVER_LOG = os.environ.get("FIRKIN_SERVER_LOG")  # scripts/test.sh's server log


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (`rep_setup`, `rep_call`), so fixtures can
    tell at teardown whether their test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _server_log_tail(lines=40):
    if not SERVER_LOG or not os.path.exists(SERVER_LOG):
        return None
    with open(SERVER_LOG, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=lines))


class Sandboxes:
    """Creates sandboxes for one test and kills every one of them when the test ends."""

    def __init__(self):
        self.made = []

    def __call__(self, *args, sandbox_class=Sandbox, **kwargs):
        """`sandbox_class.create(*args, **kwargs)` (the e2b Sandbox unless told otherwise, e.g.
        the code-interpreter one), remembered for teardown."""
        return self.track(sandbox_class.create(*args, **kwargs))

    def track(self, sbx):
        """Remembers a sandbox made some other way (e.g. a fork child) for teardown."""
        self.made.append(sbx)
        return sbx

    def kill_all(self):
        for sbx in self.made:
            try:
                sbx.kill()  # False, or an error, when the test already killed it
            except Exception:
                pass
        self.made.clear()


@pytest.fixture
def sandboxes(request):
    """The sandbox factory: `sandboxes(...)` takes `Sandbox.create`'s arguments (plus
    `sandbox_class=`); every sandbox it made is killed at teardown, already-killed ones
    included. When the test failed, prints the tail of the server log ($FIRKIN_SERVER_LOG;
    pytest shows it under the failure as "Captured stdout teardown")."""
    factory = Sandboxes()
    yield factory
    if any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")):
        tail = _server_log_tail()  # before the kills below add their own lines
        if tail is not None:
            print(f"== server log (last 40 lines of {SERVER_LOG})\n{tail}", end="")
    factory.kill_all()


@pytest.fixture
def sandbox(sandboxes):
    return sandboxes(timeout=120)


@pytest.fixture
def tag():
    """A unique metadata value, so concurrent or earlier sandboxes never match a filter."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def api():
    """A plain HTTP client for what the SDK cannot produce (bad input, raw statuses)."""
    with httpx.Client(base_url=API_URL, timeout=30) as client:
        yield client


def auth_headers(key=None):
    return {"X-API-KEY": API_KEY if key is None else key}


def sandbox_headers(sbx, port=49983, token=True):
    h = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token:
        h["X-Access-Token"] = sbx._envd_access_token
    return h


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRKIN = os.path.join(REPO, "target", "release", "firkin")


@contextlib.contextmanager
def own_server(state_dir, *args, key="own-server-key", env=None, cleanup=True, egress=False):
    """A second real `firkin serve` (own state dir, port and subnet given in `args`), for tests
    that need other settings than the suite's server. Yields its URL; stops it (SIGTERM) after
    and, with `cleanup`, removes the state dir's parent (a temp dir the test made).

    Its sandboxes have no egress (FIRKIN_EGRESS=off) unless `egress=True`; then `args` must
    give `--dns` at the fake internet (tests/fakenet.py): tests never reach the real one. Without
    egress its DNS forwarder is pointed at a dead loopback port, so no query from its sandboxes
    can reach the host's resolvers either."""
    import signal
    import socket
    import subprocess
    import time

    if os.geteuid() != 0 or not os.path.exists(FIRKIN):
        pytest.skip("needs root and target/release/firkin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = dict(os.environ, FIRKIN_STATE_DIR=state_dir, NO_COLOR="1")
    if egress:
        assert "--dns" in args, "egress=True needs --dns at the fake internet in args"
    full_env["FIRKIN_EGRESS"] = "on" if egress else "off"
    full_env["FIRKIN_DNS"] = "127.0.0.1:9"  # discard: nothing answers, nothing leaves the host
    full_env.update(env or {})
    log = open(os.path.join(os.path.dirname(state_dir), f"server-{port}.log"), "w")
    server = subprocess.Popen([FIRKIN, "serve", "--listen", f"127.0.0.1:{port}", "--api-key", key,
                               "--warm-pool", "none", "--prepare-templates", "base", *args],
                              env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.time() < deadline, "server did not start"
        time.sleep(0.2)
    try:
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if cleanup and os.path.basename(os.path.dirname(state_dir)).startswith("firkin-"):
            import shutil
            shutil.rmtree(os.path.dirname(state_dir), ignore_errors=True)


def reservations(url=API_URL):
    """The server's capacity reservations by class (`active`, `warm`, `paused`) from /metrics."""
    import re

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {c: int(n) for c, n in re.findall(r'^firkin_reservations\{class="(\w+)"\} (\d+)$', text, re.M)}


def host_consistent(url, state, key):
    """The host matches what the server (state dir `state`) says runs: its network namespaces,
    runsc processes, sandbox disks, active reservations and staging dirs. Returns the listed
    sandboxes."""
    import hashlib
    import re
    import subprocess
    import time

    from e2b import SandboxQuery, SandboxState

    conn = dict(api_key=key, api_url=url, sandbox_url=url)
    listed = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING, SandboxState.PAUSED]), **conn).next_items()
    running = {s.sandbox_id for s in listed if s.state == SandboxState.RUNNING}
    prefix = "fk-" + hashlib.sha256(state.encode()).hexdigest()[:6] + "-"
    deadline = time.time() + 20
    while True:  # kills and failed operations finish their teardown in the background
        netns = {n[len(prefix):] for n in os.listdir("/var/run/netns") if n.startswith(prefix)}
        runsc = subprocess.run(["pgrep", "-a", "-f", "--", f"--root={state}/run/runsc"],
                               capture_output=True, text=True).stdout
        engine_ids = set(re.findall(r"\b([a-z0-9]{20})\b", runsc))
        disks_dir = os.path.join(state, "run", "disks")
        disks = {n.removesuffix(".img") for n in (os.listdir(disks_dir) if os.path.isdir(disks_dir) else [])
                 if not n.startswith(("blank-", "."))}
        active = reservations(url).get("active", 0)
        staging = [f"{d}/{n}" for d in ("templates", "snapshots/images", "snapshots/paused")
                   for n in (os.listdir(os.path.join(state, d)) if os.path.isdir(os.path.join(state, d)) else [])
                   if n.startswith(".")]
        ok = (netns == running and engine_ids <= running | {""} and disks <= running
              and active == len(running) and not staging)
        if ok or time.time() > deadline:
            break
        time.sleep(0.5)
    assert netns == running, (netns, running)
    assert engine_ids <= running, (engine_ids, running)
    assert disks <= running, ("sandbox disks without a running sandbox", disks, running)
    assert active == len(running), (active, running)
    assert staging == []
    return listed
