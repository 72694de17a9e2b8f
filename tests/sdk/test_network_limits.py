"""Egress limits, visibility and domain-rule state, against the fake internet
(tests/fakenet.py): the per-sandbox cap on concurrent egress connections (on a server of its
own with a small cap), the bytes each sandbox sent and received in /metrics, and addresses a
domain rule opened staying open across pause/resume."""

import os
import re
import sys
import tempfile

import httpx
import pytest
from e2b import CommandExitException, Sandbox

from conftest import API_URL, own_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fakenet  # noqa: E402

FAKENET = os.environ.get("FIRKIN_FAKENET")
pytestmark = pytest.mark.skipif(
    not FAKENET or not os.path.exists(FAKENET),
    reason="no fake internet: FIRKIN_FAKENET is not set to a description from `tests/fakenet.py up`")

CAP = 5
SUBNET = "10.220.0.0"  # each server of the suite has its own /16

# Opens `n` TCP connections to host:80 and keeps them all open while it counts; prints how many
# were established and how many were refused.
HOLD = r"""
import socket, sys
host, n = sys.argv[1], int(sys.argv[2])
held, refused = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, 80))
        held.append(s)
    except OSError:
        refused += 1
print(len(held), refused)
"""


def test_concurrent_egress_connections_are_capped_per_sandbox():
    net = fakenet.FakeNet.load(FAKENET)
    top = tempfile.mkdtemp(prefix="firkin-netcap-")
    args = ("--subnet-base", SUBNET, "--dns", net.dns, "--max-egress-connections", str(CAP))
    with own_server(os.path.join(top, "state"), *args, key="netcap-key", egress=True) as url:
        conn = dict(api_key="netcap-key", api_url=url, sandbox_url=url)
        first = Sandbox.create(timeout=120, **conn)
        second = Sandbox.create(timeout=120, **conn)
        try:
            first.files.write("/tmp/hold.py", HOLD)
            out = first.commands.run(f"python3 /tmp/hold.py {net.web[0]} {CAP + 3}", timeout=60).stdout
            assert out.split() == [str(CAP), "3"], f"expected {CAP} held and 3 refused, got {out!r}"
            # The cap is per sandbox: another one still connects while the first held its share
            # (they were closed when its script ended, so check the second on its own too).
            second.files.write("/tmp/hold.py", HOLD)
            out = second.commands.run(f"python3 /tmp/hold.py {net.web[0]} {CAP}", timeout=60).stdout
            assert out.split() == [str(CAP), "0"], out
        finally:
            first.kill()
            second.kill()


def metric(text, sandbox_id, direction):
    m = re.search(rf'^firkin_sandbox_network_bytes_total{{sandbox="{sandbox_id}",direction="{direction}"}} (\d+)$',
                  text, re.M)
    return int(m.group(1)) if m else None


def test_bytes_in_and_out_per_sandbox_are_in_metrics(sandboxes):
    net = fakenet.FakeNet.load(FAKENET)
    sbx = sandboxes(timeout=120)
    before = httpx.get(f"{API_URL}/metrics", timeout=10).text
    out0, in0 = metric(before, sbx.sandbox_id, "out"), metric(before, sbx.sandbox_id, "in")
    assert out0 is not None and in0 is not None, "the running sandbox has no byte counters"
    # Send 200 kB out (datagrams to the fake internet's UDP listener) and fetch a page back.
    dst, port = net.udp
    blast = f"import socket; s = socket.socket(2, 2); [s.sendto(b'x' * 1000, ('{dst}', {port})) for _ in range(200)]"
    sbx.commands.run(f'python3 -c "{blast}"', timeout=30)
    sbx.commands.run(f"curl -sS -m 10 -o /dev/null http://{net.web[0]}/", timeout=60)
    after = httpx.get(f"{API_URL}/metrics", timeout=10).text
    assert metric(after, sbx.sandbox_id, "out") - out0 >= 200000
    assert metric(after, sbx.sandbox_id, "in") > in0
    sbx.kill()
    gone = httpx.get(f"{API_URL}/metrics", timeout=10).text
    assert metric(gone, sbx.sandbox_id, "out") is None, "a killed sandbox is no longer reported"


def test_addresses_a_domain_rule_opened_stay_open_across_pause_and_resume(sandboxes):
    # A process that resolved an allowed name before the pause may keep using the address
    # after the resume (its own DNS cache); the resumed sandbox has a new address and a new
    # set, which must hold what the old one did.
    net = fakenet.FakeNet.load(FAKENET)
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["web.example.test"]})
    fetch = f"curl -sS -m 3 http://{net.web[0]}/"
    with pytest.raises(CommandExitException):
        sbx.commands.run(fetch, timeout=30)  # by address, before any lookup: closed
    assert sbx.commands.run("getent hosts web.example.test", timeout=30).stdout.split()[0] == net.web[0]
    assert sbx.commands.run(fetch, timeout=30).stdout == net.bodies[net.web[0]]
    assert sbx.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    assert sbx.commands.run(fetch, timeout=30).stdout == net.bodies[net.web[0]]
    with pytest.raises(CommandExitException):
        sbx.commands.run(f"curl -sS -m 3 http://{net.web[1]}/", timeout=30)
