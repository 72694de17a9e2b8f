//! firkin's DNS forwarder: every sandbox DNS query (the firewall redirects port 53 to it,
//! whatever address the sandbox asked) is answered here, by forwarding it to the server's
//! resolvers — the host's own, loopback ones included, or `--dns`.
//!
//! It is also where domain rules hold: a name the sandbox's policy allows has its answered
//! addresses opened for that sandbox *before* the answer is relayed, so the connection that
//! follows passes. A sandbox whose egress is closed may resolve only names its rules allow.
//! Queries from addresses that are not this instance's sandboxes get no answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, RCODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::egress::Egress;

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// A TCP client idle this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries (and TCP clients) in flight at once, all sandboxes together; past it new ones are
/// dropped (their resolver retries), so a flood cannot pile up tasks on the server.
const IN_FLIGHT: usize = 512;

/// The running forwarder; dropping it stops it.
#[derive(Debug)]
pub struct DnsForwarder {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// What the forwarder needs to answer.
struct Ctx {
    egress: Arc<Egress>,
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl DnsForwarder {
    /// Binds a UDP socket and a TCP listener on one free port of every address (the firewall
    /// lets only sandboxes reach it) and starts answering. Needs a tokio runtime.
    pub fn start(egress: Arc<Egress>, upstreams: Vec<SocketAddr>) -> std::io::Result<DnsForwarder> {
        let (udp, tcp) = bind_pair()?;
        let port = udp.local_addr()?.port();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let ctx = Arc::new(Ctx { egress, upstreams, in_flight });
        let udp = Arc::new(UdpSocket::from_std(udp)?);
        let tcp = TcpListener::from_std(tcp)?;
        let tasks = vec![tokio::spawn(serve_udp(udp, Arc::clone(&ctx))), tokio::spawn(serve_tcp(tcp, ctx))];
        tracing::info!(port, "DNS forwarder listening for sandboxes");
        Ok(DnsForwarder { port, tasks })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A UDP socket and a TCP listener on the same free port.
fn bind_pair() -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        let port = udp.local_addr()?.port();
        match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for the DNS forwarder")))
}

/// The upstream resolvers: `nameserver` lines of a resolv.conf text.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn serve_udp(sock: Arc<UdpSocket>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let SocketAddr::V4(from4) = from else { continue };
        let Ok(permit) = Arc::clone(&ctx.in_flight).try_acquire_owned() else { continue };
        let query = buf[..n].to_vec();
        let (sock, ctx) = (Arc::clone(&sock), Arc::clone(&ctx));
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = answer(&ctx, *from4.ip(), &query, Transport::Udp).await {
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let SocketAddr::V4(from4) = from else { continue };
        let Ok(permit) = Arc::clone(&ctx.in_flight).try_acquire_owned() else { continue };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_tcp_client(stream, *from4.ip(), &ctx).await;
        });
    }
}

async fn serve_tcp_client(mut stream: TcpStream, from: Ipv4Addr, ctx: &Ctx) -> std::io::Result<()> {
    loop {
        let Ok(query) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else { return Ok(()) };
        let Some(reply) = answer(ctx, from, &query?, Transport::Tcp).await else { return Ok(()) };
        write_framed(&mut stream, &reply).await?;
    }
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("DNS message over 64 KiB"))?;
    stream.write_all(&[&len.to_be_bytes()[..], msg].concat()).await
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// The answer to one query from the sandbox at `from`; `None` drops it.
async fn answer(ctx: &Ctx, from: Ipv4Addr, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let policy = ctx.egress.policy_of(from)?;
    let qname = Packet::parse(query).ok()?.questions.first().map(|q| q.qname.to_string())?;
    if !ctx.egress.enabled() || !policy.may_resolve(&qname) {
        tracing::debug!(sandbox = %from, name = %qname, "DNS query refused by policy");
        return status_reply(query, RCODE::Refused);
    }
    let Some(reply) = forward(&ctx.upstreams, query, transport).await else {
        return status_reply(query, RCODE::ServerFailure);
    };
    if policy.allows_domain(&qname) {
        let (addrs, ttl) = a_records(&reply);
        let egress = Arc::clone(&ctx.egress);
        let opened = tokio::task::spawn_blocking(move || egress.open_resolved(from, &addrs, ttl)).await;
        if let Ok(Err(e)) = opened {
            // Relaying the answer anyway would only make the connection fail later.
            tracing::warn!(sandbox = %from, name = %qname, error = %e, "opening resolved addresses failed");
            return status_reply(query, RCODE::ServerFailure);
        }
    }
    Some(reply)
}

/// A reply to `query` carrying only its question and `rcode`.
fn status_reply(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(q.id());
    reply.questions = q.questions.clone();
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *reply.rcode_mut() = rcode;
    reply.build_bytes_vec().ok()
}

/// The IPv4 addresses in `reply`'s answer section, and their smallest TTL.
fn a_records(reply: &[u8]) -> (Vec<Ipv4Addr>, u32) {
    let Ok(p) = Packet::parse(reply) else { return (Vec::new(), 0) };
    let mut ttl = u32::MAX;
    let addrs = p
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => {
                ttl = ttl.min(rr.ttl);
                Some(Ipv4Addr::from(a.address))
            }
            _ => None,
        })
        .collect();
    (addrs, if ttl == u32::MAX { 0 } else { ttl })
}

/// Asks each upstream in turn; the first answer wins.
async fn forward(upstreams: &[SocketAddr], query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    for up in upstreams {
        let asked = match transport {
            Transport::Udp => tokio::time::timeout(UPSTREAM_TIMEOUT, ask_udp(*up, query)).await,
            Transport::Tcp => tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(*up, query)).await,
        };
        match asked {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "DNS upstream failed"),
            Err(_) => tracing::debug!(upstream = %up, "DNS upstream timed out"),
        }
    }
    None
}

async fn ask_udp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query (same id) counts.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

async fn ask_tcp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(up).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};

    fn query(name: &str) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn refusals_echo_the_question() {
        let r = status_reply(&query("web.example.test"), RCODE::Refused).unwrap();
        let p = Packet::parse(&r).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert_eq!(p.rcode(), RCODE::Refused);
        assert!(p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(p.questions[0].qname.to_string(), "web.example.test");
    }

    #[test]
    fn reads_a_records_and_their_smallest_ttl() {
        let mut p = Packet::new_reply(1);
        let name = Name::new_unchecked("web.example.test");
        for (addr, ttl) in [([198, 18, 0, 10], 60), ([198, 18, 0, 11], 30)] {
            let a = simple_dns::rdata::A { address: u32::from(Ipv4Addr::from(addr)) };
            p.answers.push(ResourceRecord::new(name.clone(), CLASS::IN, ttl, RData::A(a)));
        }
        let (addrs, ttl) = a_records(&p.build_bytes_vec().unwrap());
        assert_eq!(addrs, [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)]);
        assert_eq!(ttl, 30);
        assert_eq!(a_records(b"junk"), (Vec::new(), 0));
    }

    #[test]
    fn reads_nameservers_from_resolv_conf() {
        let text = "# comment\nnameserver 127.0.0.53\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n";
        let got = resolv_conf_servers(text);
        assert_eq!(got, ["127.0.0.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
