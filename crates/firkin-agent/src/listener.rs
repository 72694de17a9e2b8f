//! The agent's TCP listener: a dedicated OS thread blocks in `accept(2)` and hands each
//! connection to the async server.
//!
//! Why not `tokio::net::TcpListener`: the agent is checkpointed and restored with its sandbox,
//! usually while idle, parked in `epoll_wait`. A readiness edge lost across save/restore would
//! leave an edge-triggered listener registration silent forever: the kernel completes handshakes
//! into the backlog and nobody accepts them. A blocking `accept` is restarted by the sentry after
//! restore and needs no readiness edge; each accepted socket is registered with the reactor
//! fresh, after the restore.

use std::io;
use std::net::SocketAddr;

use tokio::sync::mpsc;

/// Accepted connections, fed by the accept thread.
pub struct BlockingAcceptListener {
    rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl BlockingAcceptListener {
    /// Binds `addr` and starts the accept thread.
    pub fn bind(addr: SocketAddr) -> io::Result<BlockingAcceptListener> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        std::thread::Builder::new().name("accept".into()).spawn(move || loop {
            match listener.accept() {
                Ok(conn) => {
                    if tx.blocking_send(conn).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        })?;
        Ok(BlockingAcceptListener { rx, local })
    }
}

impl axum::serve::Listener for BlockingAcceptListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The accept thread is gone: nothing more will arrive.
                return std::future::pending().await;
            };
            let converted =
                stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream));
            match converted {
                Ok(io) => {
                    let _ = io.set_nodelay(true);
                    return (io, peer);
                }
                Err(e) => tracing::warn!(error = %e, %peer, "cannot register an accepted connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
