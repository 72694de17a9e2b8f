#!/usr/bin/env python3
"""A fake internet on this machine, for egress tests that must never send traffic off it.

It builds, all owned by one tag T (1-10 characters of [a-z0-9]):

- a network namespace `fkfn-T`, joined to the host by a veth pair: host side `fkfn-T` with the
  first address of the link /30 (default 198.19.250.0/30: host 198.19.250.1, namespace .2);
- one host route, `<web net> via <namespace address>` (default 198.18.0.0/24), and nothing
  else: both nets are TEST-NET benchmark space (198.18.0.0/15), never real addresses;
- web addresses .10, .11 and .12 of the web net on the namespace's loopback, each with a tiny
  HTTP server on port 80 answering `fake-web-<last octet>` (and GET /requests, GET /udp-log
  as JSON), recording every request;
- a UDP listener on the first web address, port 9999, recording each datagram's source and
  payload (for the spoofed-source test);
- dnsmasq on the namespace address, port 53 (udp and tcp), with no upstream and no hosts file:
  web.example.test -> .10, other.example.test -> .11, wild.example.test and every name under it
  -> .12, private.example.test -> 10.123.45.67 (a probe, below), NXDOMAIN for everything else;
  queries are logged;
- a guard: nft table `inet fkguard-T` (forward hook, priority -5) dropping forwarded packets
  from 10.208.0.0/12 (the test servers' sandbox subnets) to anything outside 198.18.0.0/15
  unless they go out through a sandbox's host veth (`fh*`, firkin's names), i.e. stay on this
  machine; IPv6 forwarded from a sandbox veth to anything but another is dropped too. Packets
  between sandboxes are left to firkin's own fences, so tests of those stay honest.
  Four private probe addresses (PROBES; nothing has them) pass the guard and are dropped by its
  witness chain at priority 10, after firkin's forward filter, with a counter: a count means
  firkin let such a packet through (`witnessed()`), so private-range fences are observable
  without any packet leaving the machine.

CLI (root):
    python3 tests/fakenet.py up --tag T [--link 198.19.250.4/30] [--web 198.18.1.0/24] [--env]
        prints the JSON description (also saved as /run/fkfn-T/fakenet.json), or with --env
        shell lines `FIRKIN_FAKENET=<json path>` and `FIRKIN_FAKENET_DNS=<dns address>`
    python3 tests/fakenet.py down --tag T       removes everything of tag T; idempotent, also
                                                after a crashed run
    python3 tests/fakenet.py check --tag T      curl-free self-test from the host
    python3 tests/fakenet.py selftest            full standalone check with a client namespace

Python:
    with FakeNet("t1") as net:        # or FakeNet.load(os.environ["FIRKIN_FAKENET"])
        net.dns, net.web[0], net.bodies[net.web[0]], net.dns_queries(), net.udp_datagrams()
"""

import argparse
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

TEST_NET = ipaddress.ip_network("198.18.0.0/15")
# Private addresses nothing on this machine has: packets to them are let past the guard to a
# witness chain that runs after firkin's own forward filter and records (source, probe, port),
# and are dropped right after it. A record means firkin let the packet through (its fence did
# not hold, or a policy opened the range).
PROBES = ("10.123.45.67", "172.31.45.67", "192.168.245.67", "100.127.45.67")
GUARDED_SOURCES = "10.208.0.0/12"
UDP_PORT = 9999
RUN_ROOT = "/run"


def _run(*args, check=True, ns=None, input=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _valid_tag(tag):
    if not re.fullmatch(r"[a-z0-9]{1,10}", tag):
        raise ValueError(f"tag {tag!r}: 1-10 characters of [a-z0-9]")
    return tag


class FakeNet:
    def __init__(self, tag, link="198.19.250.0/30", web="198.18.0.0/24"):
        self.tag = _valid_tag(tag)
        self.link = ipaddress.ip_network(link)
        self.web_net = ipaddress.ip_network(web)
        for n in (self.link, self.web_net):
            if not n.subnet_of(TEST_NET):
                raise ValueError(f"{n} is not inside {TEST_NET}")
        if self.link.prefixlen != 30:
            raise ValueError(f"link {self.link} must be a /30")
        if self.link.overlaps(self.web_net):
            raise ValueError("link and web nets overlap")
        self.netns = f"fkfn-{tag}"
        self.host_if = f"fkfn-{tag}"
        self.peer_tmp = f"fkfp-{tag}"
        self.host_addr = str(self.link.network_address + 1)
        self.ns_addr = str(self.link.network_address + 2)
        self.dns = self.ns_addr
        self.web = [str(self.web_net.network_address + i) for i in (10, 11, 12)]
        self.bodies = {a: f"fake-web-{a.rsplit('.', 1)[1]}" for a in self.web}
        self.names = {"web.example.test": self.web[0], "other.example.test": self.web[1],
                      "*.wild.example.test": self.web[2], "private.example.test": PROBES[0]}
        self.probes = list(PROBES)
        self.udp = (self.web[0], UDP_PORT)
        self.guard_table = f"fkguard-{tag}"
        self.dir = os.path.join(RUN_ROOT, f"fkfn-{tag}")
        self.dns_log = os.path.join(self.dir, "dnsmasq.log")
        self.requests_log = os.path.join(self.dir, "requests.jsonl")
        self.udp_log = os.path.join(self.dir, "udp.jsonl")
        self.description_path = os.path.join(self.dir, "fakenet.json")

    # --- description -------------------------------------------------------------------------

    def describe(self):
        return {
            "tag": self.tag, "netns": self.netns, "host_if": self.host_if, "link": str(self.link),
            "host_addr": self.host_addr, "ns_addr": self.ns_addr, "route": str(self.web_net),
            "dns": self.dns, "web": self.web, "bodies": self.bodies, "names": self.names,
            "udp": f"{self.udp[0]}:{self.udp[1]}", "guard_table": f"inet {self.guard_table}",
            "dir": self.dir, "dns_log": self.dns_log, "requests_log": self.requests_log,
            "udp_log": self.udp_log, "description": self.description_path, "probes": self.probes,
        }

    @classmethod
    def load(cls, path):
        """The FakeNet described by a JSON file that `up` wrote (e.g. $FIRKIN_FAKENET)."""
        with open(path) as f:
            d = json.load(f)
        return cls(d["tag"], link=d["link"], web=d["route"])

    # --- up / down -----------------------------------------------------------------------------

    def up(self):
        if os.geteuid() != 0:
            raise PermissionError("fakenet needs root")
        self.down()
        for route in _run("ip", "-4", "route", "show").stdout.splitlines():
            net = route.split()[0]
            if net != "default" and ipaddress.ip_network(net, strict=False).overlaps(self.web_net):
                raise RuntimeError(f"a host route already covers {self.web_net}: {route!r} "
                                   "(another fake internet? give this one --web and --link)")
            if net != "default" and ipaddress.ip_network(net, strict=False).overlaps(self.link):
                raise RuntimeError(f"a host route already covers {self.link}: {route!r}")
        os.makedirs(self.dir, exist_ok=True)
        for p in (self.dns_log, self.requests_log, self.udp_log):
            open(p, "w").close()
        try:
            self._guard_up()
            self._links_up()
            self._servers_up()
            self._dns_up()
        except BaseException:
            self.down()
            raise
        with open(self.description_path, "w") as f:
            json.dump(self.describe(), f, indent=1)
        return self.describe()

    def _guard_up(self):
        # Forwarded from the test subnets to anywhere but TEST-NET: dropped unless they go to
        # another sandbox's host veth (firkin names them fh<id>), i.e. stay on this machine.
        # The probe addresses pass here, are recorded by the witness (priority 10: after
        # firkin's filter at 0) and dropped, whatever their source, by the sink (11, before any
        # NAT). All chains come and go together, in one transaction. The witness only records,
        # so several fake internets' witnesses each see every probe that firkin let through.
        probes = ", ".join(PROBES)
        rules = f"""table inet {self.guard_table} {{
  chain guard {{
    type filter hook forward priority -5; policy accept;
    ip saddr {GUARDED_SOURCES} ip daddr {{ {probes} }} accept
    ip saddr {GUARDED_SOURCES} ip daddr != {TEST_NET} oifname != "fh*" counter drop
    meta nfproto ipv6 iifname "fh*" oifname != "fh*" counter drop
  }}
  set seen {{
    type ipv4_addr . ipv4_addr . inet_service; flags dynamic, timeout; timeout 10m; size 65535;
  }}
  chain witness {{
    type filter hook forward priority 10; policy accept;
    ip daddr {{ {probes} }} meta l4proto {{ tcp, udp }} add @seen {{ ip saddr . ip daddr . th dport }}
  }}
  chain sink {{
    type filter hook forward priority 11; policy accept;
    ip daddr {{ {probes} }} counter drop
  }}
}}
"""
        _run("nft", "-f", "-", input=rules)

    def _links_up(self):
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_tmp,
             "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        n = ["ip", "-n", self.netns]
        _run(*n, "link", "set", self.peer_tmp, "name", "eth0")
        _run(*n, "addr", "add", f"{self.ns_addr}/30", "dev", "eth0")
        _run(*n, "link", "set", "eth0", "up")
        _run(*n, "link", "set", "lo", "up")
        for a in self.web:
            _run(*n, "addr", "add", f"{a}/32", "dev", "lo")
        # Only this route, only TEST-NET space, only into our own namespace.
        _run("ip", "route", "add", str(self.web_net), "via", self.ns_addr, "dev", self.host_if)

    def _servers_up(self):
        log = open(os.path.join(self.dir, "servers.log"), "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, os.path.abspath(__file__), "serve",
             "--dir", self.dir, *self.web],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        with open(os.path.join(self.dir, "servers.pid"), "w") as f:
            f.write(str(proc.pid))
        ready = os.path.join(self.dir, "servers.ready")
        deadline = time.time() + 10
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() > deadline:
                with open(os.path.join(self.dir, "servers.log")) as f:
                    raise RuntimeError(f"fake web servers did not start: {f.read()[-2000:]}")
            time.sleep(0.05)

    def _dns_up(self):
        if not shutil.which("dnsmasq"):
            raise RuntimeError("dnsmasq not found: apt-get install -y dnsmasq-base")
        args = ["dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
                f"--listen-address={self.ns_addr}", "--bind-interfaces", "--port=53",
                "--user=root", "--group=root", f"--pid-file={self.dir}/dnsmasq.pid",
                "--log-queries", f"--log-facility={self.dns_log}", "--cache-size=0",
                # Most specific domain wins; /#/ (no address) makes every other name NXDOMAIN.
                "--address=/#/"]
        # Exact names as host records (their AAAA is an empty answer, as for a real IPv4-only
        # name); the wildcard as an address (AAAA: NXDOMAIN, which resolvers take in stride).
        args += [f"--host-record=web.example.test,{self.web[0]}", f"--host-record=other.example.test,{self.web[1]}",
                 f"--address=/wild.example.test/{self.web[2]}", f"--host-record=private.example.test,{PROBES[0]}"]
        _run(*args, ns=self.netns)
        deadline = time.time() + 10
        while True:
            try:
                rcode, addrs = dns_query(self.dns, "web.example.test", timeout=1)
                if addrs == [self.web[0]]:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("dnsmasq did not answer within 10 s")
            time.sleep(0.1)

    def down(self):
        """Removes everything of this tag, whatever is left of it; never fails on absence."""
        if os.path.exists(f"/var/run/netns/{self.netns}"):
            # Every process in our namespace is ours (servers, dnsmasq): end them first, or
            # they would live on in a detached namespace.
            pids = _run("ip", "netns", "pids", self.netns, check=False).stdout.split()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), sig)
                deadline = time.time() + 3
                while pids and time.time() < deadline:
                    pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
                    time.sleep(0.05)
            _run("ip", "netns", "del", self.netns, check=False)
        # The route goes with our link (never delete a route by address: another tag's could
        # match); the link goes with the namespace, and is removed here should it be left alone.
        if os.path.exists(f"/sys/class/net/{self.host_if}"):
            _run("ip", "link", "del", self.host_if, check=False)
        if _run("nft", "list", "table", "inet", self.guard_table, check=False).returncode == 0:
            _run("nft", "delete", "table", "inet", self.guard_table)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    # --- what happened ----------------------------------------------------------------------------

    def dns_queries(self):
        """[(type, name, client)] of every query dnsmasq saw, oldest first."""
        if not os.path.exists(self.dns_log):
            return []
        with open(self.dns_log, errors="replace") as f:
            return re.findall(r"query\[(\w+)\] (\S+) from (\S+)", f.read())

    def queried(self, name):
        return any(n.lower() == name.lower() for _, n, _ in self.dns_queries())

    def requests(self):
        """[{"server", "client", "method", "path", "host"}] of every HTTP request, oldest first."""
        return _read_jsonl(self.requests_log)

    def udp_datagrams(self):
        """[{"src", "sport", "data"}] of every datagram to the UDP listener, oldest first."""
        return _read_jsonl(self.udp_log)

    def guard_drops(self):
        """Packets the guard dropped so far (something tried to leave the machine)."""
        out = _run("nft", "list", "chain", "inet", self.guard_table, "guard", check=False).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))

    def witness_blocked_by(self):
        """Other guard tables that drop the probes before any witness sees them (fake internets
        made by an older fakenet.py, without the witness): while one exists, `witnessed()` sees
        nothing. Returns their names."""
        out = _run("nft", "-j", "list", "chains", "inet", check=False).stdout
        chains = {}
        for item in json.loads(out or '{"nftables": []}')["nftables"]:
            if "chain" in item:
                chains.setdefault(item["chain"]["table"], set()).add(item["chain"]["name"])
        return sorted(t for t, names in chains.items() if t.startswith("fkguard-") and "sink" not in names)

    def witnessed(self, port=None):
        """{(source, probe, port)} of tcp/udp packets to the probe addresses that got past
        firkin's forward filter in the last 10 minutes (only `port`'s, if given). Use a port of
        the test's own, so nothing else's packets count."""
        out = _run("nft", "-j", "list", "set", "inet", self.guard_table, "seen", check=False).stdout
        got = set()
        for item in json.loads(out or '{"nftables": []}')["nftables"]:
            for e in item.get("set", {}).get("elem", []):
                v = e["elem"]["val"]["concat"] if isinstance(e, dict) and "elem" in e else e["concat"]
                if port is None or v[2] == port:
                    got.add((v[0], v[1], v[2]))
        return got


def _read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --- DNS client (no dig needed; always to an explicit server, never the host's resolvers) -----


def dns_query(server, name, qtype=1, timeout=2, tcp=False, port=53):
    """Asks `server`:`port` for `name`; returns (rcode, [IPv4 answers])."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("short TCP DNS answer")
                buf += chunk
            resp = buf[2:]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(q, (server, port))
            while True:
                resp, _ = s.recvfrom(4096)
                if resp[:2] == q[:2]:
                    break
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", resp[:12])
    pos = 12

    def skip_name(p):
        while True:
            n = resp[p]
            if n == 0:
                return p + 1
            if n & 0xC0 == 0xC0:
                return p + 2
            p += 1 + n

    for _ in range(qd):
        pos = skip_name(pos) + 4
    addrs = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", resp[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(resp[pos:pos + 4]))
        pos += rdlen
    return flags & 0xF, addrs


# --- the servers inside the namespace (`serve`, run by `up` through ip netns exec) -------------


def _serve(directory, web):
    lock = threading.Lock()

    def record(path, entry):
        with lock, open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def http_server(addr):
        # Plain sockets: no reverse DNS anywhere (http.server's bind resolves its own name).
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, 80))
        srv.listen(64)
        body_default = f"fake-web-{addr.rsplit('.', 1)[1]}".encode()

        def handle(conn, peer):
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    return
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                parts = head[0].split(" ")
                if len(parts) < 2:
                    return
                method, path = parts[0], parts[1]
                host = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("host:")), "")
                record(os.path.join(directory, "requests.jsonl"),
                       {"server": addr, "client": peer[0], "method": method, "path": path, "host": host,
                        "time": time.time()})
                if path == "/udp-log":
                    body, ctype = json.dumps(_read_jsonl(os.path.join(directory, "udp.jsonl"))).encode(), "application/json"
                elif path == "/requests":
                    body, ctype = json.dumps(_read_jsonl(os.path.join(directory, "requests.jsonl"))).encode(), "application/json"
                else:
                    body, ctype = body_default, "text/plain"
                head_out = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                            "Connection: close\r\n\r\n").encode()
                with contextlib.suppress(OSError):
                    conn.sendall(head_out + (b"" if method == "HEAD" else body))

        def loop():
            while True:
                conn, peer = srv.accept()
                threading.Thread(target=handle, args=(conn, peer), daemon=True).start()

        return loop

    def udp_server(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, UDP_PORT))

        def loop():
            while True:
                data, peer = s.recvfrom(65536)
                record(os.path.join(directory, "udp.jsonl"),
                       {"src": peer[0], "sport": peer[1], "data": data.decode("latin-1"), "time": time.time()})

        return loop

    loops = [http_server(a) for a in web] + [udp_server(web[0])]
    for fn in loops:
        threading.Thread(target=fn, daemon=True).start()
    open(os.path.join(directory, "servers.ready"), "w").close()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


# --- standalone self-test --------------------------------------------------------------------


def http_get(addr, path="/", timeout=3, host=None):
    with socket.create_connection((addr, 80), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or addr}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


def check(net):
    """From the host: web servers, DNS answers, UDP recording."""
    for a in net.web:
        assert http_get(a) == net.bodies[a], a
    for name, want in [("web.example.test", [net.web[0]]), ("other.example.test", [net.web[1]]),
                       ("wild.example.test", [net.web[2]]), ("a.b.wild.example.test", [net.web[2]]),
                       ("private.example.test", [PROBES[0]])]:
        for tcp in (False, True):
            assert dns_query(net.dns, name, tcp=tcp) == (0, want), (name, tcp)
    assert dns_query(net.dns, "nothing.example.test")[0] == 3, "NXDOMAIN"
    assert dns_query(net.dns, "example.com")[0] == 3, "NXDOMAIN, never forwarded"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"host-check", net.udp)
    deadline = time.time() + 3
    while not any(d["data"] == "host-check" for d in net.udp_datagrams()):
        assert time.time() < deadline, "udp datagram not recorded"
        time.sleep(0.05)
    assert any(d["data"] == "host-check" for d in json.loads(http_get(net.web[0], "/udp-log")))
    assert net.queried("web.example.test") and net.queried("nothing.example.test")
    assert any(r["path"] == "/udp-log" for r in net.requests())
    return "ok"


def selftest(tag="st"):
    """Without firkin: a client namespace in 10.223.255.0/30 (inside the guarded 10.208.0.0/12,
    outside any test server's subnet) behind the host, NAT by a temporary nft table of our own,
    forwarding on only for the duration (then restored)."""
    # The host end is named like a firkin sandbox's (fh*): a firkin server with egress on drops
    # forwarding between any other interfaces (it turned forwarding on for its sandboxes only).
    client, hif, cif, table = f"fkfc-{tag}", f"fhfkfc{tag}", f"fkfcp-{tag}", f"fkfcnat-{tag}"
    fwd_path = "/proc/sys/net/ipv4/ip_forward"
    # Its own nets, so it runs beside a fake internet that is up (a test run's).
    with FakeNet(tag, link="198.19.250.252/30", web="198.18.254.0/24") as net:
        print("host check:", check(net))
        with open(fwd_path) as f:
            fwd_before = f.read().strip()
        try:
            _run("ip", "netns", "add", client)
            _run("ip", "link", "add", hif, "type", "veth", "peer", "name", cif, "netns", client)
            _run("ip", "addr", "add", "10.223.255.1/30", "dev", hif)
            _run("ip", "link", "set", hif, "up")
            _run("ip", "-n", client, "addr", "add", "10.223.255.2/30", "dev", cif)
            _run("ip", "-n", client, "link", "set", cif, "up")
            _run("ip", "-n", client, "link", "set", "lo", "up")
            _run("ip", "-n", client, "route", "add", "default", "via", "10.223.255.1")
            _run("nft", "-f", "-", input=f"""table ip {table} {{
  chain post {{ type nat hook postrouting priority 100; policy accept;
    ip saddr 10.223.255.0/30 ip daddr {net.web_net} masquerade
    ip saddr 10.223.255.0/30 ip daddr {net.ns_addr} masquerade
  }}
  chain backstop {{ type filter hook forward priority 20; policy accept;
    ip saddr 10.223.255.0/30 ip daddr != {TEST_NET} drop
  }}
}}
""")
            with open(fwd_path, "w") as f:
                f.write("1")
            code = (
                "import sys, json; sys.path.insert(0, %r); import fakenet as f\n"
                "print(json.dumps([f.http_get(%r), f.dns_query(%r, 'web.example.test'),"
                " f.dns_query(%r, 'web.example.test', tcp=True)]))\n"
            ) % (os.path.dirname(os.path.abspath(__file__)), net.web[0], net.dns, net.dns)
            out = json.loads(_run(sys.executable, "-c", code, ns=client).stdout)
            assert out == [net.bodies[net.web[0]], [0, [net.web[0]]], [0, [net.web[0]]]], out
            curl = _run("curl", "-sS", "--max-time", "5", f"http://{net.web[1]}/", ns=client).stdout
            assert curl == net.bodies[net.web[1]], curl
            # The guard: from the test subnet to a non-TEST-NET address the packet is dropped
            # at the host before it could leave (to 203.0.113.9 it would go via the uplink).
            before = net.guard_drops()
            _run(sys.executable, "-c", "import socket; s=socket.socket(2,2); s.sendto(b'x', ('203.0.113.9', 9))",
                 ns=client)
            time.sleep(0.2)
            assert net.guard_drops() == before + 1, ("guard did not drop", before, net.guard_drops())
            # The witness: a probe address passes the guard and is recorded and dropped after.
            if net.witness_blocked_by():
                print(f"witness: not checked, older guards drop probes first: {net.witness_blocked_by()}")
            dropped = net.guard_drops()
            _run(sys.executable, "-c", f"import socket; s=socket.socket(2,2); s.sendto(b'x', ({PROBES[1]!r}, 4099))",
                 ns=client)
            time.sleep(0.2)
            assert net.witness_blocked_by() or net.witnessed(4099) == {("10.223.255.2", PROBES[1], 4099)}
            assert net.guard_drops() == dropped
            print("client namespace: http, dns udp+tcp, curl, guard and witness: ok")
        finally:
            with open(fwd_path, "w") as f:
                f.write(fwd_before)
            _run("nft", "delete", "table", "ip", table, check=False)
            _run("ip", "link", "del", hif, check=False)
            _run("ip", "netns", "del", client, check=False)
    left = [x for x in (_run("ip", "netns", "list").stdout + _run("nft", "list", "tables").stdout).split()
            if x in (net.netns, net.guard_table, client, table)]
    assert not left, left
    assert not _run("ip", "route", "show", str(net.web_net)).stdout.strip()
    print("selftest: ok, nothing left behind")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "check"):
        s = sub.add_parser(name)
        s.add_argument("--tag", required=True)
        s.add_argument("--link", default="198.19.250.0/30")
        s.add_argument("--web", default="198.18.0.0/24")
        if name == "up":
            s.add_argument("--env", action="store_true", help="print NAME=value lines instead of JSON")
    st = sub.add_parser("selftest")
    st.add_argument("--tag", default="st")
    sv = sub.add_parser("serve")
    sv.add_argument("--dir", required=True)
    sv.add_argument("web", nargs="+")
    a = p.parse_args()
    if a.cmd == "serve":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        _serve(a.dir, a.web)
    elif a.cmd == "selftest":
        selftest(_valid_tag(a.tag))
    else:
        net = FakeNet(a.tag, link=a.link, web=a.web)
        if a.cmd == "up":
            d = net.up()
            if a.env:
                print(f"FIRKIN_FAKENET={net.description_path}\nFIRKIN_FAKENET_DNS={net.dns}")
            else:
                print(json.dumps(d, indent=1))
        elif a.cmd == "down":
            net.down()
        else:
            print(check(FakeNet.load(net.description_path)))


if __name__ == "__main__":
    main()
