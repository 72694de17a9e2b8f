"""Sandbox egress, DNS and network policy through the unmodified SDK, against the fake internet
that scripts/test.sh builds (tests/fakenet.py: web servers on TEST-NET addresses, a DNS server
the server's forwarder is pointed at with --dns). Nothing here reaches the real internet: the
only routes out lead into the fake one, and its guard table drops anything else a sandbox sends
towards the uplink.

Covered: default egress by address and by name, `allow_internet_access=False`, deny_out and
allow_out (CIDR, IP, domain, `*.domain`), live `update_network`, policy across pause/resume,
fork and snapshot, the fences (host addresses, other sandboxes, link-local, private ranges,
spoofed sources), the traffic access token of `allow_public_traffic=False`, and DNS inside
sandboxes (resolv.conf, interception of port 53 to any address)."""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from e2b import CommandExitException, Sandbox
from e2b.exceptions import SandboxException

from conftest import API_URL

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fakenet  # noqa: E402

FAKENET = os.environ.get("FIRKIN_FAKENET")
pytestmark = pytest.mark.skipif(
    not FAKENET or not os.path.exists(FAKENET),
    reason="no fake internet: FIRKIN_FAKENET is not set to a description from `tests/fakenet.py up` "
           "(scripts/test.sh exports it and starts the server with --dns at it)")

SECS = 3  # connect/transfer bound of every probe from inside a sandbox


@pytest.fixture(scope="module")
def net():
    return fakenet.FakeNet.load(FAKENET)


# --- helpers run inside a sandbox ------------------------------------------------------------


def curl(sbx, url, secs=SECS):
    """(curl's exit code, body or error, seconds taken), bounded by `secs`."""
    start = time.time()
    try:
        r = sbx.commands.run(f"curl -sS --noproxy '*' --connect-timeout {secs} --max-time {secs} '{url}'",
                             timeout=secs + 30)
        return 0, r.stdout, time.time() - start
    except CommandExitException as e:
        return e.exit_code, e.stderr, time.time() - start


def assert_reaches(sbx, net, target, addr=None):
    """`target` (address or name) answers with the body of `addr` (default: target)."""
    code, body, took = curl(sbx, f"http://{target}/")
    assert (code, body) == (0, net.bodies[addr or target]), f"{target}: curl exit {code}: {body!r}"


def assert_blocked(sbx, target, port=80):
    code, out, took = curl(sbx, f"http://{target}:{port}/")
    assert code != 0, f"{target}:{port} answered: {out!r}"
    assert not out.startswith("fake-web")
    assert took < SECS + 15, f"{target}:{port}: failing took {took:.1f} s"
    return code


PROBE = r"""
import concurrent.futures, json, socket, sys, time
secs = float(sys.argv[1])
def probe(target):
    host, port = target.rsplit(":", 1)
    start = time.time()
    try:
        with socket.create_connection((host, int(port)), timeout=secs) as s:
            s.settimeout(secs)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                data = s.recv(300).decode("latin-1")
            except OSError:
                data = ""
            return [target, "open", data, round(time.time() - start, 2)]
    except ConnectionRefusedError:
        return [target, "refused", "", round(time.time() - start, 2)]
    except socket.timeout:
        return [target, "timeout", "", round(time.time() - start, 2)]
    except OSError as e:
        return [target, "error %s" % e.errno, "", round(time.time() - start, 2)]
with concurrent.futures.ThreadPoolExecutor(32) as ex:
    print(json.dumps(list(ex.map(probe, sys.argv[2:]))))
"""


def probe(sbx, targets, secs=SECS):
    """{"host:port": (state, first bytes)} for TCP connects from inside, all at once."""
    sbx.files.write("/tmp/probe.py", PROBE)
    out = sbx.commands.run(f"python3 /tmp/probe.py {secs} {' '.join(targets)}", timeout=secs * 2 + 30).stdout
    return {t: (state, data) for t, state, data, _ in json.loads(out)}


def resolve(sbx, name, secs=8):
    """The IPv4 addresses the sandbox's own resolver (its /etc/resolv.conf) gives for `name`."""
    try:
        out = sbx.commands.run(f"timeout {secs} getent ahostsv4 {name}", timeout=secs + 30).stdout
    except CommandExitException:
        return []
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


def sandbox_ip(sbx):
    out = sbx.commands.run("ip -4 -o addr show", timeout=30).stdout
    return next(f[3].split("/")[0] for f in map(str.split, out.splitlines()) if not f[3].startswith("127."))


def gateway(sbx):
    """The sandbox's default gateway (the host end of its veth), from /proc/net/route."""
    for line in sbx.files.read("/proc/net/route").splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(int(f[2], 16).to_bytes(4, "little"))
    raise AssertionError("no default route in the sandbox")


def unique(label):
    return f"{label}-{uuid.uuid4().hex[:10]}"


# --- default egress and DNS ----------------------------------------------------------------------


def test_default_egress_by_address_and_by_name(sandboxes, net):
    sbx = sandboxes(timeout=120)
    for addr in net.web:
        assert_reaches(sbx, net, addr)
    assert_reaches(sbx, net, "web.example.test", net.web[0])
    assert_reaches(sbx, net, "other.example.test", net.web[1])
    name = f"{unique('n')}.wild.example.test"
    assert resolve(sbx, name) == [net.web[2]]
    # The answer came from the fake DNS, through the server's forwarder (--dns).
    assert net.queried(name), net.dns_queries()[-5:]
    # The fake web servers saw the requests, by name.
    assert any(r["host"] == "web.example.test" and r["server"] == net.web[0] for r in net.requests())


def test_dns_names_that_do_not_exist_fail_fast(sandbox, net):
    start = time.time()
    assert resolve(sandbox, f"{unique('nx')}.example.test") == []
    assert time.time() - start < 10
    code, _, _ = curl(sandbox, "http://nothing.example.test/")
    assert code == 6, "curl: could not resolve host"


def test_resolv_conf_works_and_keeps_working_after_pause_resume(sandboxes, net):
    sbx = sandboxes(timeout=120)
    conf = sbx.files.read("/etc/resolv.conf")
    assert "nameserver" in conf, conf
    assert resolve(sbx, "web.example.test") == [net.web[0]]
    assert sbx.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    assert resolve(sbx, "other.example.test") == [net.web[1]]
    name = f"{unique('r')}.wild.example.test"
    assert resolve(sbx, name) == [net.web[2]] and net.queried(name)
    assert_reaches(sbx, net, "web.example.test", net.web[0])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_to_any_address_is_answered_by_the_server(sandbox, net, tcp):
    """Port 53 to an address where no DNS server exists (in TEST-NET, so nothing leaves the
    machine) still gets the fake DNS's answer: the server intercepts every query."""
    nowhere = str(net.web_net.network_address + 99)
    name = f"{unique('i')}.wild.example.test"
    code = (f"import sys; sys.path.insert(0, '/tmp'); import fakenet; "
            f"print(fakenet.dns_query({nowhere!r}, {name!r}, timeout={SECS}, tcp={tcp}))")
    with open(fakenet.__file__) as f:
        sandbox.files.write("/tmp/fakenet.py", f.read())
    out = sandbox.commands.run(f"python3 -c \"{code}\"", timeout=60).stdout
    assert out.strip() == str((0, [net.web[2]])), out
    assert net.queried(name)


# --- per-sandbox policy -------------------------------------------------------------------------


def test_no_internet_access_blocks_egress_and_dns(sandboxes, net):
    sbx = sandboxes(timeout=120, allow_internet_access=False)
    for addr in net.web[:2]:
        assert_blocked(sbx, addr)
    name = f"{unique('off')}.wild.example.test"
    assert resolve(sbx, name) == []
    assert not net.queried(name), "a sandbox without internet access got its query forwarded"
    # The sandbox itself still works, and so does the proxy into it.
    assert sbx.commands.run("echo alive").stdout == "alive\n"


def test_deny_out_cidr_blocks_only_that_range(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": [f"{net.web[1]}/32"]})
    assert_reaches(sbx, net, net.web[0])
    assert_blocked(sbx, net.web[1])
    assert_reaches(sbx, net, net.web[2])
    assert_blocked(sbx, "other.example.test")


def test_deny_all_then_allow_one_address(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"], "allow_out": [net.web[0]]})
    assert_reaches(sbx, net, net.web[0])
    assert_blocked(sbx, net.web[1])
    assert_blocked(sbx, net.web[2])


def test_deny_all_then_allow_a_domain(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["web.example.test"]})
    assert_reaches(sbx, net, "web.example.test", net.web[0])
    assert_blocked(sbx, "other.example.test")
    assert_blocked(sbx, net.web[1])
    assert_blocked(sbx, "x.wild.example.test")


def test_deny_all_then_allow_a_wildcard_domain(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["*.wild.example.test"]})
    assert_reaches(sbx, net, f"{unique('w')}.wild.example.test", net.web[2])
    assert_reaches(sbx, net, "a.b.wild.example.test", net.web[2])
    assert_blocked(sbx, "web.example.test")
    assert_blocked(sbx, net.web[0])


def test_bad_policies_are_refused(sandboxes, net):
    for network in ({"allow_out": ["300.1.2.3"]}, {"deny_out": ["web.example.test"]}, {"deny_out": ["10.0.0.0/33"]},
                    {"allow_out": ["exa mple.test"]}):
        with pytest.raises(SandboxException) as e:
            sandboxes(timeout=60, network=network)
        assert "400" in str(e.value) or "invalid" in str(e.value).lower(), (network, e.value)
    sbx = sandboxes(timeout=120, network={"deny_out": [f"{net.web[1]}/32"]})
    with pytest.raises(SandboxException):
        sbx.update_network({"deny_out": ["not-an-address/8"]})
    # The refused update left the policy as it was.
    assert_reaches(sbx, net, net.web[0])
    assert_blocked(sbx, net.web[1])


def test_update_network_live(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"]})
    assert_blocked(sbx, net.web[0])
    sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [net.web[0]]})
    assert_reaches(sbx, net, net.web[0])
    assert_blocked(sbx, net.web[1])
    # Replaced, not merged: the allow is gone again.
    sbx.update_network({"deny_out": ["0.0.0.0/0"]})
    assert_blocked(sbx, net.web[0])
    # Everything omitted: everything cleared, the default (open) again.
    sbx.update_network({})
    assert_reaches(sbx, net, net.web[0])
    assert_reaches(sbx, net, net.web[1])
    # A domain allow added live works through DNS.
    sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["other.example.test"]})
    assert_reaches(sbx, net, "other.example.test", net.web[1])
    assert_blocked(sbx, "web.example.test")


def test_policy_survives_pause_and_resume(sandboxes, net):
    sbx = sandboxes(timeout=120, network={"deny_out": [f"{net.web[1]}/32"]})
    off = sandboxes(timeout=120, allow_internet_access=False)
    assert sbx.pause() and off.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    off = Sandbox.connect(off.sandbox_id)
    assert_reaches(sbx, net, net.web[0])
    assert_blocked(sbx, net.web[1])
    assert_blocked(off, net.web[0])
    # A policy updated while running is the one a resume restores.
    sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [net.web[2]]})
    assert sbx.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    assert_reaches(sbx, net, net.web[2])
    assert_blocked(sbx, net.web[0])


def test_fork_and_snapshot_children_inherit_the_policy(sandboxes, net):
    parent = sandboxes(timeout=120, network={"deny_out": [f"{net.web[1]}/32"]})
    kids = [sandboxes.track(k) for k in parent.fork(count=1) if not isinstance(k, Exception)]
    assert len(kids) == 1
    snap = parent.create_snapshot()
    try:
        from_snap = sandboxes(snap.snapshot_id, timeout=60)
        for child in (kids[0], from_snap, parent):
            assert_reaches(child, net, net.web[0])
            assert_blocked(child, net.web[1])
    finally:
        Sandbox.delete_snapshot(snap.snapshot_id)


# --- fences ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def host_http_server():
    """A TCP server on 0.0.0.0:<free port> of the host answering `host-visible` (no name lookups)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(64)
    seen = []

    def loop():
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            seen.append(peer[0])
            with conn:
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhost-visible")

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield srv.getsockname()[1], seen
    finally:
        srv.close()


def host_addresses():
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addrs = {}
    for line in out.splitlines():
        f = line.split()
        addrs[f[3].split("/")[0]] = f[1]
    return addrs


def test_host_is_not_reachable_from_a_sandbox(sandboxes, net):
    sbx = sandboxes(timeout=120)
    gw = gateway(sbx)
    # the host's own addresses: the uplink's, the fake internet's link end, other sandboxes'
    # gateways (a few), the sandbox's own gateway; never loopback (that is the sandbox's own)
    addrs = host_addresses()
    targets = {gw, net.host_addr}
    targets |= {a for a, dev in addrs.items() if not a.startswith("127.") and not dev.startswith("fh")}
    targets |= set(sorted(a for a, dev in addrs.items() if dev.startswith("fh"))[:4])
    with host_http_server() as (port, seen):
        # the server answers on the host itself
        with socket.create_connection((net.host_addr, port), timeout=2) as s:
            assert s.recv(100).endswith(b"host-visible")
        seen.clear()
        result = probe(sbx, [f"{a}:{port}" for a in sorted(targets)])
        opened = {t: r for t, r in result.items() if r[0] == "open"}
        assert not opened, f"host server reachable from the sandbox: {opened}"
        assert not seen, f"connections arrived from {seen}"
    # the firkin API and the sandbox proxy on the host's loopback are not reachable either
    port = int(API_URL.rsplit(":", 1)[1])
    result = probe(sbx, [f"{gw}:{port}", f"{net.host_addr}:{port}"])
    assert all(r[0] != "open" for r in result.values()), result


def test_sandbox_cannot_reach_another_sandbox_even_with_host_forwarding(sandboxes):
    a = sandboxes(timeout=120)
    b = sandboxes(timeout=120)
    b.commands.run("cd /tmp && python3 -m http.server 8080 --bind 0.0.0.0", background=True, timeout=0)
    b_ip, a_ip = sandbox_ip(b), sandbox_ip(a)
    deadline = time.time() + 15
    while probe(b, [f"{b_ip}:8080"])[f"{b_ip}:8080"][0] != "open":  # it runs, seen from inside
        assert time.time() < deadline, "http.server in sandbox b did not start"
        time.sleep(0.3)
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        before = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write("1")
        result = probe(a, [f"{b_ip}:8080", f"{gateway(b)}:8080"])
        assert all(r[0] != "open" for r in result.values()), result
        result = probe(b, [f"{a_ip}:22", f"{a_ip}:49983"])  # the agent's port of a
        assert all(r[0] != "open" for r in result.values()), result
    finally:
        with open(path, "w") as f:
            f.write(before)


def test_link_local_and_private_ranges_are_fenced(sandboxes, net):
    """Only that connecting fails, within the bound; nothing is routed there (the metadata
    address may be this host's own service; the guard drops anything towards the uplink)."""
    sbx = sandboxes(timeout=120)
    targets = ["169.254.169.254:80", "10.0.0.1:80", "172.16.0.1:80", "192.168.0.1:80", "100.64.0.1:80"]
    start = time.time()
    result = probe(sbx, targets)
    assert time.time() - start < SECS * 2 + 30
    assert all(r[0] != "open" for r in result.values()), result
    # The fences are the server's own rules, not just the guard or missing routes.
    state = os.environ.get("FIRKIN_STATE_DIR")
    if state:
        table = "firkin-" + hashlib.sha256(state.encode()).hexdigest()[:6]
        rules = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True, text=True)
        assert rules.returncode == 0, f"no nft table inet {table}: {rules.stderr}"
        for cidr in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
            assert cidr in rules.stdout, f"{cidr} not in the server's rules"


def witness_port(net):
    """A port of this test's own for the witness (see tests/fakenet.py PROBES), or a skip."""
    blocked = net.witness_blocked_by()
    if blocked:
        pytest.skip(f"older fake internets' guards drop the probe addresses first: {blocked}")
    return 20000 + int.from_bytes(os.urandom(2), "big") % 40000


def test_private_ranges_are_fenced_by_the_server_itself(sandboxes, net):
    """Private probe addresses from an open sandbox, by address and through DNS: none passes
    firkin's forward filter (the fake internet's witness records what does, then drops it)."""
    port = witness_port(net)
    sbx = sandboxes(timeout=120)
    probe(sbx, [f"{p}:{port}" for p in net.probes], secs=2)
    assert resolve(sbx, "private.example.test") == [net.probes[0]]
    curl(sbx, f"http://private.example.test:{port}/", secs=2)
    assert net.witnessed(port) == set()


def test_a_private_range_opens_when_allow_out_names_it(sandboxes, net):
    port = witness_port(net)
    sbx = sandboxes(timeout=120, network={"allow_out": ["10.123.45.0/24"]})
    me = sandbox_ip(sbx)
    probe(sbx, [f"{p}:{port}" for p in net.probes], secs=2)
    assert net.witnessed(port) == {(me, net.probes[0], port)}, "only the named range opens"


def test_an_allowed_domain_does_not_open_private_addresses(sandboxes, net):
    """A name in allow_out names that name, not the private range its answer falls in: a
    domain that resolves to a private address must not open that address (else any allowed
    domain whose DNS its owner controls reaches the host's private networks)."""
    port = witness_port(net)
    sbx = sandboxes(timeout=120, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["private.example.test"]})
    assert resolve(sbx, "private.example.test") == [net.probes[0]]
    curl(sbx, f"http://private.example.test:{port}/", secs=2)
    assert net.witnessed(port) == set()


# An IPv4/UDP packet with any source, built by hand. Sent from inside the sandbox through a raw
# socket when gVisor allows one; else written as an Ethernet frame onto the sandbox's end of its
# veth, from the sandbox's network namespace on the host: to the host this is exactly what a
# sandbox that can forge packets sends.
FORGE = r"""
import socket, struct, sys
mode, src, dst, port, payload = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(udp))
udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
if mode == "raw":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.sendto(ip + udp, (dst, 0))
else:  # mode = "<interface>,<destination MAC>"
    ifname, mac = mode.split(",")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.send(bytes.fromhex(mac.replace(":", "")) + s.getsockname()[4] + b"\x08\x00" + ip + udp)
"""


def arrived(net, payload, within):
    deadline = time.time() + within
    while True:
        if any(d["data"] == payload for d in net.udp_datagrams()):
            return True
        if time.time() > deadline:
            return False
        time.sleep(0.1)


def test_spoofed_source_addresses_are_dropped(sandboxes, net):
    sbx = sandboxes(timeout=120)
    own = sandbox_ip(sbx)
    # a neighbour's address (the next /30 slot's sandbox), the host's (the gateway) and one
    # from nowhere
    neighbour = socket.inet_ntoa((int.from_bytes(socket.inet_aton(own), "big") + 4).to_bytes(4, "big"))
    spoofs = [neighbour, gateway(sbx), "203.0.113.77"]
    dst, port = net.udp
    normal = unique("normal")
    sbx.commands.run(f"python3 -c \"import socket; socket.socket(2, 2).sendto(b'{normal}', ('{dst}', {port}))\"",
                     timeout=30)
    assert arrived(net, normal, 5), "a normal datagram from the sandbox did not arrive"
    sbx.files.write("/tmp/forge.py", FORGE)
    try:
        sbx.commands.run(f"python3 /tmp/forge.py raw {own} {dst} {port} {unique('probe')}", user="root", timeout=30)

        def forge(src, payload):
            sbx.commands.run(f"python3 /tmp/forge.py raw {src} {dst} {port} {payload}", user="root", timeout=30)
    except CommandExitException as e:
        if "Operation not permitted" not in e.stderr:
            raise
        # gVisor refuses raw sockets (no --net-raw), and `ip addr add` and IP_FREEBIND too:
        # nothing inside can forge. Forge on the sandbox's veth end from its namespace.
        state = os.environ.get("FIRKIN_STATE_DIR")
        if not state:
            pytest.skip("raw sockets are refused in the sandbox and FIRKIN_STATE_DIR (to find its "
                        "network namespace) is not set")
        ns = f"fk-{hashlib.sha256(state.encode()).hexdigest()[:6]}-{sbx.sandbox_id}"
        with open(f"/sys/class/net/fh{sbx.sandbox_id[:13]}/address") as f:
            mode = f"fs{sbx.sandbox_id[:13]},{f.read().strip()}"
        script = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"forge-{uuid.uuid4().hex[:8]}.py")
        with open(script, "w") as f:
            f.write(FORGE)

        def forge(src, payload):
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, script, mode, src, dst, str(port), payload],
                           check=True, capture_output=True, timeout=30)

        # The injection path works: a frame with the sandbox's own source arrives.
        control = unique("control")
        try:
            forge(own, control)
            assert arrived(net, control, 5), "an injected datagram with the sandbox's own source did not arrive"
        except BaseException:
            os.unlink(script)
            raise
    forged = {}
    for src in spoofs:
        forged[src] = unique("spoofed")
        forge(src, forged[src])
    time.sleep(1.5)
    got = [d for d in net.udp_datagrams() if d["data"] in forged.values()]
    if "script" in locals():
        os.unlink(script)
    assert not got, f"datagrams with forged sources arrived: {got}"


# --- public traffic --------------------------------------------------------------------------------


def test_traffic_access_token_guards_user_ports(sandboxes):
    sbx = sandboxes(timeout=120, network={"allow_public_traffic": False})
    token = sbx.traffic_access_token
    assert token, "the create response carries trafficAccessToken"
    sbx.files.write("/home/user/www/hello.txt", "private hello")
    sbx.commands.run("cd /home/user/www && python3 -m http.server 8400", background=True, timeout=0)
    base = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8400"}

    def get(**extra):
        return httpx.get(f"{API_URL}/hello.txt", headers={**base, **extra}, timeout=5)

    deadline = time.time() + 15
    while (r := get(**{"e2b-traffic-access-token": token})).status_code != 200:
        assert time.time() < deadline, f"{r.status_code} {r.text[:200]}"
        time.sleep(0.25)
    assert r.text == "private hello"
    assert get().status_code in (401, 403)
    assert get(**{"e2b-traffic-access-token": "wrong" + token}).status_code in (401, 403)
    # The same token, still required, after pause and resume (connect hands it out again).
    assert sbx.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    assert sbx.traffic_access_token == token
    deadline = time.time() + 15
    while (r := get(**{"e2b-traffic-access-token": token})).status_code != 200:
        assert time.time() < deadline, f"{r.status_code} {r.text[:200]}"
        time.sleep(0.25)
    assert get().status_code in (401, 403)
    # A sandbox with public traffic (the default) has no token and needs none.
    open_sbx = sandboxes(timeout=120)
    assert open_sbx.traffic_access_token is None
