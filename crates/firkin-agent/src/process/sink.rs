//! Where output goes once nobody listens: the read ends (pipes, pty masters) of commands that
//! have ended and been drained while a descendant still holds the other end. This module owns
//! those descendants: one `pipe-sink` thread reads and discards what they write until they close
//! it, so their writes keep succeeding.
//!
//! Why not close them, as envd does when its command exits: every later write then dies of
//! SIGPIPE. For a fork bomb that is a death per `fork: retry` message, each freeing a slot of
//! the user's process limit for a sibling to fork into again; that churn kept a 2-vCPU sandbox
//! saturated (root commands took 10-37 s, a `pkill` pass about 10 s). With its output read, the
//! bomb settles into bash's retry sleeps (root commands 0.1-0.4 s). A background server started
//! without a redirect also keeps running when it logs, instead of dying at its first line.
//!
//! Why a budget: a runaway writer (`yes &`) must not cost the agent a CPU. Each descriptor is
//! read for at most [`BUDGET`] bytes per [`WINDOW`]; past that it is left alone until the next
//! window, so its pipe fills and the writer blocks instead of spinning.
//!
//! One thread for all of them, waiting with `poll(2)` (never tokio's epoll, see `super::fdio`):
//! the agent's threads count against root's process limit inside gVisor.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::fdio::READ_CHUNK;

/// Bytes read from one descriptor per [`WINDOW`] before it is left to fill.
const BUDGET: usize = 64 * 1024;
const WINDOW: Duration = Duration::from_secs(1);
/// How long one `poll(2)` waits, so new descriptors and budget windows are picked up.
const POLL_MS: libc::c_int = 250;

/// Reads and discards `fd` until end of file. If the sink thread cannot be started, `fd` is
/// closed (writers then get SIGPIPE, as they would from envd).
pub fn hand_over(fd: OwnedFd) {
    if let Some(tx) = sender() {
        // A send fails only if the sink thread is gone; the descriptor is then closed.
        let _ = tx.send(fd);
    }
}

fn sender() -> Option<&'static mpsc::Sender<OwnedFd>> {
    static SINK: OnceLock<Option<mpsc::Sender<OwnedFd>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        match std::thread::Builder::new().name("pipe-sink".into()).spawn(move || run(&rx)) {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("starting the pipe-sink thread: {e}; closing abandoned pipes instead");
                None
            }
        }
    })
    .as_ref()
}

/// One abandoned descriptor and what it has used of its budget.
struct Held {
    fd: OwnedFd,
    window: Instant,
    used: usize,
}

impl Held {
    fn new(fd: OwnedFd) -> Self {
        Held { fd, window: Instant::now(), used: 0 }
    }

    fn throttled(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= WINDOW {
            self.window = now;
            self.used = 0;
        }
        self.used >= BUDGET
    }
}

fn run(rx: &mpsc::Receiver<OwnedFd>) {
    let mut held: Vec<Held> = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if held.is_empty() {
            match rx.recv() {
                Ok(fd) => held.push(Held::new(fd)),
                Err(_) => return,
            }
        }
        held.extend(rx.try_iter().map(Held::new));
        let now = Instant::now();
        let mut fds: Vec<libc::pollfd> = held
            .iter_mut()
            .map(|h| libc::pollfd {
                fd: h.fd.as_raw_fd(),
                events: if h.throttled(now) { 0 } else { libc::POLLIN },
                revents: 0,
            })
            .collect();
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a valid, writable array of `count` pollfds for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), count, POLL_MS) } <= 0 {
            continue; // timeout or EINTR: look again
        }
        let mut index = 0;
        held.retain_mut(|h| {
            let revents = fds[index].revents;
            index += 1;
            revents == 0 || keep_after(h, revents, &mut buf)
        });
    }
}

/// Handles what `poll` reported for `h`; false once it is done (end of file, hang-up of a
/// throttled one, or an error).
fn keep_after(h: &mut Held, revents: libc::c_short, buf: &mut [u8]) -> bool {
    if revents & libc::POLLIN == 0 {
        return false; // POLLHUP / POLLERR / POLLNVAL with nothing to read: every writer is gone
    }
    match nix::unistd::read(h.fd.as_raw_fd(), buf) {
        Ok(0) | Err(Errno::EIO) => false, // EIO: a pty whose last slave closed
        Ok(n) => {
            h.used += n;
            true
        }
        Err(Errno::EAGAIN | Errno::EINTR) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writers_keep_writing_until_they_close() {
        let (read, write) = nix::unistd::pipe().unwrap();
        hand_over(read);
        let mut writer = std::fs::File::from(write);
        // Far more than a pipe buffer: without a reader the writes would block (or fail with
        // EPIPE had the read end been closed).
        for _ in 0..8 {
            writer.write_all(&[b'x'; 16 * 1024]).unwrap();
        }
    }

    #[test]
    fn a_throttled_descriptor_is_skipped_until_its_window_ends() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut held = Held::new(read);
        let now = Instant::now();
        assert!(!held.throttled(now));
        held.used = BUDGET;
        assert!(held.throttled(now));
        assert!(!held.throttled(now + WINDOW));
        assert_eq!(held.used, 0);
    }
}
