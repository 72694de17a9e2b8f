//! Localhost port forwarding, as E2B's envd does: a server inside the sandbox that listens only
//! on loopback (`127.0.0.1:P` or `[::1]:P`, the default of many dev servers) is made reachable
//! on the sandbox's external address at the same port, so the host proxy (which connects to
//! `<sandbox ip>:P`) reaches it. A scanner thread reads `/proc/net/tcp{,6}` once a second,
//! starts a forwarder for every such port and stops it when the server goes away or the
//! sandbox's address changes (a restored sandbox gets a new one).
//!
//! Like the envd listener (`crate::listener`), forwarders use blocking sockets on their own
//! threads and never touch tokio's epoll, so a checkpoint can be taken at any time.
//!
//! Only inside a sandbox, where the agent is PID 1 of its own network namespace, or when asked
//! explicitly: an agent run on a host for testing would otherwise publish every loopback-only
//! service of the host (databases, admin ports) on the host's external address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often listening sockets are rescanned.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How long a forwarder's accept waits before checking whether it should stop.
const ACCEPT_POLL_MS: i32 = 250;
/// TCP state `LISTEN` in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// One listening socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub addr: IpAddr,
    pub port: u16,
}

/// The listening sockets in a `/proc/net/tcp` or `/proc/net/tcp6` table.
pub fn parse_listening(table: &str) -> Vec<Listening> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&LISTEN) {
                return None;
            }
            let (addr, port) = cols.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(Listening { addr: parse_addr(addr)?, port })
        })
        .collect()
}

/// A `/proc/net/tcp{,6}` address: 8 or 32 hex digits, each 32-bit word of the network-order
/// address printed as a host-order (little-endian) number.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_le_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The ports to forward and where to: every port with a loopback listener and no listener
/// reachable from outside (wildcard or `external`), ignoring the forwarders' own sockets.
/// IPv4 loopback is preferred when a server listens on both.
pub fn wanted(listening: &[Listening], external: Ipv4Addr, own: &BTreeSet<u16>) -> BTreeMap<u16, SocketAddr> {
    let reachable: BTreeSet<u16> = listening
        .iter()
        .filter(|l| l.addr.is_unspecified() || (l.addr == IpAddr::V4(external) && !own.contains(&l.port)))
        .map(|l| l.port)
        .collect();
    let mut out = BTreeMap::new();
    for l in listening.iter().filter(|l| l.addr.is_loopback() && !reachable.contains(&l.port)) {
        let target = match l.addr {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, l.port)),
            IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, l.port)),
        };
        let slot = out.entry(l.port).or_insert(target);
        if target.is_ipv4() {
            *slot = target;
        }
    }
    out
}

/// The sandbox's external IPv4 address (the first non-loopback one).
fn external_ipv4() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
        .find(|ip| !ip.is_loopback())
}

/// A running forwarder: `bound:port` → `target`.
struct Forwarder {
    bound: Ipv4Addr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
}

/// Whether to forward: as PID 1 (inside a sandbox), or when `forced`.
fn enabled(pid: u32, forced: bool) -> bool {
    pid == 1 || forced
}

/// Starts the scanner thread if [`enabled`]; `forced` is the agent's `--forward-localhost`.
pub fn start(forced: bool) {
    if !enabled(std::process::id(), forced) {
        tracing::info!("not PID 1: localhost port forwarding is off (--forward-localhost turns it on)");
        return;
    }
    let spawned = std::thread::Builder::new().name("portforward".into()).spawn(|| {
        let mut running: HashMap<u16, Forwarder> = HashMap::new();
        loop {
            scan_once(&mut running);
            std::thread::sleep(SCAN_EVERY);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "localhost port forwarding not started");
    }
}

fn scan_once(running: &mut HashMap<u16, Forwarder>) {
    let Some(external) = external_ipv4() else { return };
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening.extend(parse_listening(&text));
        }
    }
    let own: BTreeSet<u16> = running.keys().copied().collect();
    let want = wanted(&listening, external, &own);
    running.retain(|port, f| {
        let keep = f.bound == external && want.get(port) == Some(&f.target);
        if !keep {
            f.stop.store(true, Ordering::SeqCst);
            tracing::info!(port, "localhost port forwarding stopped");
        }
        keep
    });
    for (port, target) in want {
        if running.contains_key(&port) {
            continue;
        }
        match forward(SocketAddr::from((external, port)), target) {
            Ok(stop) => {
                tracing::info!(port, %target, %external, "forwarding a localhost-only port");
                running.insert(port, Forwarder { bound: external, target, stop });
            }
            Err(e) => tracing::debug!(port, error = %e, "cannot forward yet"),
        }
    }
}

/// Listens on `at` and relays every connection to `target` until the returned flag is set.
fn forward(at: SocketAddr, target: SocketAddr) -> io::Result<Arc<AtomicBool>> {
    let listener = TcpListener::bind(at)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new().name(format!("fwd-{}", at.port())).spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            if !readable(&listener, ACCEPT_POLL_MS) {
                continue;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    if let Err(e) = relay(client, target) {
                        tracing::debug!(%target, error = %e, "forwarded connection failed");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    })?;
    Ok(stop)
}

/// Waits up to `timeout_ms` for a connection to accept.
fn readable(listener: &TcpListener, timeout_ms: i32) -> bool {
    let mut fds = [libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: `fds` is a valid array of one pollfd for the duration of the call, and its fd is
    // the listener's, open for as long as `listener` is borrowed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}

/// Connects to `target` and copies both ways on two threads until both sides are done.
fn relay(client: TcpStream, target: SocketAddr) -> io::Result<()> {
    let upstream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::Builder::new().name("fwd-in".into()).spawn(move || pump(client, upstream))?;
    std::thread::Builder::new().name("fwd-out".into()).spawn(move || pump(u2, c2))?;
    Ok(())
}

/// Copies `from` → `to` until EOF or an error, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_only_as_pid_1_or_when_asked() {
        assert!(enabled(1, false), "inside a sandbox, as before");
        assert!(!enabled(4242, false), "an agent on a host must not publish the host's loopback");
        assert!(enabled(4242, true));
    }

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
  17: C606E60A:C33F C506E60A:AB6E 01 00000000:00000000 00:00000000 00000000     0        0       18 3
   2: 00000000:C33F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0        3 2
  14: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0       15 2
  15: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0       16 2
  16: C606E60A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0       17 2
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 00000000000000000000000000000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000
";

    fn ext() -> Ipv4Addr {
        Ipv4Addr::new(10, 230, 6, 198)
    }

    #[test]
    fn parses_listening_sockets_of_both_tables() {
        let v4 = parse_listening(TCP);
        assert_eq!(v4.len(), 4, "the established connection is not listening");
        assert_eq!(v4[0], Listening { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: 49983 });
        assert_eq!(v4[1], Listening { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8123 });
        assert_eq!(v4[3].addr, IpAddr::V4(ext()));
        let v6 = parse_listening(TCP6);
        assert_eq!(v6[0], Listening { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 3000 });
        assert!(v6[1].addr.is_unspecified());
    }

    #[test]
    fn forwards_only_ports_unreachable_from_outside() {
        let mut all = parse_listening(TCP);
        all.extend(parse_listening(TCP6));
        let want = wanted(&all, ext(), &BTreeSet::new());
        // 8123: loopback only → forwarded to 127.0.0.1. 80: also on the external address, and
        // 3001 also on [::], so reachable. 3000: [::1] only → forwarded to [::1].
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            vec![
                (3000, SocketAddr::from((Ipv6Addr::LOCALHOST, 3000))),
                (8123, SocketAddr::from((Ipv4Addr::LOCALHOST, 8123))),
            ]
        );
        // Our own forwarder on the external address does not count as the server's.
        let own = BTreeSet::from([80]);
        assert_eq!(wanted(&all, ext(), &own).get(&80), Some(&SocketAddr::from((Ipv4Addr::LOCALHOST, 80))));
    }

    #[test]
    fn relays_a_connection_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        let front = TcpListener::bind("127.0.0.2:0").unwrap();
        let at = front.local_addr().unwrap();
        drop(front);
        let stop = forward(at, target).unwrap();
        let mut c = TcpStream::connect(at).unwrap();
        c.write_all(b"hello").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "HELLO");
        stop.store(true, Ordering::SeqCst);
    }
}
