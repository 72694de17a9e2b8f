"""The server's nftables table over its life, on a server of its own with egress on towards the
fake internet (tests/fakenet.py): `firkin-<owner>` exists while it runs and is gone after
SIGTERM; after kill -9 and a restart there is exactly one, and a sandbox that lived through
the crash still reaches the fake internet, by address and by name, and the policies of running
and paused sandboxes hold across it. And a server with egress
off lets nothing out, DNS included."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from e2b import CommandExitException, Sandbox

from conftest import own_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fakenet  # noqa: E402

FAKENET = os.environ.get("FIRKIN_FAKENET")
pytestmark = pytest.mark.skipif(
    not FAKENET or not os.path.exists(FAKENET),
    reason="no fake internet: FIRKIN_FAKENET is not set to a description from `tests/fakenet.py up`")

KEY = "netlife-key"
SUBNET = "10.217.0.0"


def tables(owner):
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line.split()[1:] for line in out.splitlines() if line.split()[-1].startswith(f"firkin-{owner}")]


def namespaces(owner):
    return [n for n in os.listdir("/var/run/netns") if n.startswith(f"fk-{owner}-")] \
        if os.path.isdir("/var/run/netns") else []


def server_pid(url):
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", f"firkin serve --listen 127.0.0.1:{port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def fetch(sbx, target):
    try:
        return sbx.commands.run(f"curl -sS --connect-timeout 3 --max-time 3 http://{target}/", timeout=30).stdout
    except CommandExitException as e:
        return f"curl exit {e.exit_code}: {e.stderr}"


def test_nft_table_lives_with_the_server_and_is_reconciled_after_kill_9():
    net = fakenet.FakeNet.load(FAKENET)
    top = tempfile.mkdtemp(prefix="firkin-netlife-")
    state = os.path.join(top, "state")
    owner = hashlib.sha256(state.encode()).hexdigest()[:6]
    args = ("--subnet-base", SUBNET, "--dns", net.dns)
    try:
        with own_server(state, *args, key=KEY, cleanup=False, egress=True) as url:
            assert tables(owner) == [["inet", f"firkin-{owner}"]]
            conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
            sbx = Sandbox.create(timeout=300, **conn)
            assert fetch(sbx, net.web[0]) == net.bodies[net.web[0]]
            sbx.kill()
        assert tables(owner) == [], "the table outlived SIGTERM"

        with own_server(state, *args, key=KEY, cleanup=False, egress=True) as url:
            conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
            survivor = Sandbox.create(timeout=300, **conn)
            assert fetch(survivor, "web.example.test") == net.bodies[net.web[0]]
            fenced = Sandbox.create(timeout=300, network={"deny_out": [f"{net.web[1]}/32"]}, **conn)
            by_name = Sandbox.create(timeout=300, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["web.example.test"]},
                                     **conn)
            assert fetch(by_name, "web.example.test") == net.bodies[net.web[0]]
            sleeper = Sandbox.create(timeout=300, network={"deny_out": [f"{net.web[1]}/32"]}, **conn)
            assert sleeper.pause()
            os.kill(server_pid(url), signal.SIGKILL)
            time.sleep(0.5)
        # own_server's SIGTERM hit a dead process; the table is left for the next start.
        with own_server(state, *args, key=KEY, cleanup=False, egress=True) as url:
            assert len(tables(owner)) == 1, tables(owner)
            conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
            survivor = Sandbox.connect(survivor.sandbox_id, **conn)
            assert fetch(survivor, net.web[1]) == net.bodies[net.web[1]]
            assert fetch(survivor, "other.example.test") == net.bodies[net.web[1]]
            # Policies outlive the crash: running, paused, and domain-opened addresses (reached
            # here by address, without asking DNS again).
            fenced = Sandbox.connect(fenced.sandbox_id, **conn)
            assert fetch(fenced, net.web[0]) == net.bodies[net.web[0]]
            assert fetch(fenced, net.web[1]).startswith("curl exit")
            by_name = Sandbox.connect(by_name.sandbox_id, **conn)
            assert fetch(by_name, net.web[0]) == net.bodies[net.web[0]]
            assert fetch(by_name, net.web[1]).startswith("curl exit")
            sleeper = Sandbox.connect(sleeper.sandbox_id, **conn)
            assert fetch(sleeper, net.web[0]) == net.bodies[net.web[0]]
            assert fetch(sleeper, net.web[1]).startswith("curl exit")
            fresh = Sandbox.create(timeout=300, **conn)
            assert fetch(fresh, "web.example.test") == net.bodies[net.web[0]]
            for s in Sandbox.list(**conn).next_items():
                Sandbox.kill(s.sandbox_id, **conn)
        assert tables(owner) == [], "the table outlived SIGTERM after a restart"
        deadline = time.time() + 10
        while namespaces(owner) and time.time() < deadline:
            time.sleep(0.2)
        assert namespaces(owner) == []
    finally:
        for family, name in tables(owner):
            subprocess.run(["nft", "delete", "table", family, name], check=False)
        shutil.rmtree(top, ignore_errors=True)


def test_a_server_with_egress_off_lets_nothing_out():
    """`--egress off`: no sandbox reaches the fake internet, and no name a sandbox asks for is
    forwarded to the server's resolvers (its forwarder is pointed at the fake DNS here, so that
    a forwarded query would show in its log); the fences' table is there all the same."""
    net = fakenet.FakeNet.load(FAKENET)
    top = tempfile.mkdtemp(prefix="firkin-netoff-")
    state = os.path.join(top, "state")
    owner = hashlib.sha256(state.encode()).hexdigest()[:6]
    try:
        with own_server(state, "--subnet-base", "10.213.0.0", key=KEY, env={"FIRKIN_DNS": net.dns}) as url:
            assert len(tables(owner)) == 1, tables(owner)
            conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
            sbx = Sandbox.create(timeout=120, **conn)
            try:
                for addr in net.web:
                    assert fetch(sbx, addr).startswith("curl exit"), addr
                name = f"off-{os.urandom(5).hex()}.wild.example.test"
                try:
                    out = sbx.commands.run(f"timeout 8 getent ahostsv4 {name}", timeout=30).stdout
                except CommandExitException:
                    out = ""
                assert out == "" and not net.queried(name), (out, net.dns_queries()[-3:])
            finally:
                sbx.kill()
        assert tables(owner) == []
    finally:
        for family, name in tables(owner):
            subprocess.run(["nft", "delete", "table", family, name], check=False)
        shutil.rmtree(top, ignore_errors=True)


def test_a_second_server_on_a_subnet_in_use_refuses_to_start():
    # Two servers on one --subnet-base would take each other's sandbox traffic (DNS redirects,
    # fences); the second one refuses to start and says what to do.
    from conftest import FIRKIN

    top = tempfile.mkdtemp(prefix="firkin-netdup-")
    try:
        with own_server(os.path.join(top, "first"), "--subnet-base", "10.218.0.0", key="dup-key"):
            env = dict(os.environ, FIRKIN_STATE_DIR=os.path.join(top, "second"), FIRKIN_EGRESS="off",
                       FIRKIN_DNS="127.0.0.1:9", NO_COLOR="1", RUST_BACKTRACE="0")
            second = subprocess.run([FIRKIN, "serve", "--listen", "127.0.0.1:0", "--api-key", "k",
                                     "--warm-pool", "none", "--prepare-templates", "", "--subnet-base", "10.218.0.0"],
                                    env=env, capture_output=True, text=True, timeout=60)
            assert second.returncode != 0
            assert "already serves sandboxes in 10.218.0.0/16" in second.stderr, second.stderr
            assert "--subnet-base" in second.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)
