//! The agent's TCP listener: a dedicated OS thread blocks in `accept(2)`, and every connection
//! is served through an in-memory duplex stream pumped by two helper threads doing blocking
//! socket I/O. No socket is ever registered with tokio's reactor (epoll).
//!
//! Why: the agent is checkpointed and restored with its sandbox. runsc 20240729's epoll keeps a
//! deleted registration reachable when it was reported by the same `epoll_wait` as a registration
//! that is still alive (the temporary `notReady` list in `EpollInstance.ReadEvents` is never
//! unlinked); the checkpoint saves it and, after restore, `epollInterest.afterLoad` marks it
//! ready, so the first `epoll_wait` reports it once more with its old `epoll_event.data`. For
//! tokio that is a pointer to a `ScheduledIo` freed long ago: the restored agent blocks forever
//! on a "mutex" inside the reused memory (accepts connections, never answers) or corrupts its
//! heap. Fixed upstream in gVisor 5d857245b ("vfs: clear temporary notReady lists"). Connections
//! (one per request) and process pipes (`crate::process::fdio`) are the registrations that come
//! and go; keeping them out of epoll leaves tokio's epoll with its own waker and signal pipe
//! only, which are never deleted. Blocking `accept`/`read`/`write` are restarted by the sentry
//! after a restore.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Bytes buffered in memory per direction of a connection.
const BRIDGE_BUFFER: usize = 64 * 1024;

/// Accepted connections, fed by the accept thread.
pub struct BlockingAcceptListener {
    rx: mpsc::Receiver<(DuplexStream, SocketAddr)>,
    local: SocketAddr,
}

impl BlockingAcceptListener {
    /// Binds `addr` and starts the accept thread. Must be called inside the runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<BlockingAcceptListener> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let rt = Handle::current();
        std::thread::Builder::new().name("accept".into()).spawn(move || loop {
            match listener.accept() {
                Ok((sock, peer)) => match bridge(sock, &rt) {
                    Ok(io) => {
                        if tx.blocking_send((io, peer)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, %peer, "cannot serve an accepted connection"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        })?;
        Ok(BlockingAcceptListener { rx, local })
    }
}

/// Serves `sock` through an in-memory duplex stream: one thread copies socket → app, one copies
/// app → socket. The socket is closed once both are done: the client closed it (or failed) and
/// the app dropped its end, or the app dropped its end, which shuts the socket down.
fn bridge(sock: TcpStream, rt: &Handle) -> io::Result<DuplexStream> {
    let _ = sock.set_nodelay(true);
    let (app, ours) = tokio::io::duplex(BRIDGE_BUFFER);
    let (mut from_app, mut to_app) = tokio::io::split(ours);
    let inbound = sock.try_clone()?;
    let rt_in = rt.clone();
    std::thread::Builder::new().name("conn-in".into()).spawn(move || {
        let mut sock = inbound;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if rt_in.block_on(to_app.write_all(&buf[..n])).is_err() {
                break;
            }
        }
        let _ = rt_in.block_on(to_app.shutdown());
    })?;
    let rt_out = rt.clone();
    std::thread::Builder::new().name("conn-out".into()).spawn(move || {
        let mut sock = sock;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match rt_out.block_on(from_app.read(&mut buf)) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if sock.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        // Ends the inbound thread's read too.
        let _ = sock.shutdown(Shutdown::Both);
    })?;
    Ok(app)
}

impl axum::serve::Listener for BlockingAcceptListener {
    type Io = DuplexStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept thread is gone: nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
