//! Reads and writes on raw pipe / pty-master descriptors, without registering them with tokio's
//! reactor.
//!
//! Why not `tokio::io::unix::AsyncFd`: see `crate::listener` — on runsc 20240729 an epoll
//! registration that is deleted can survive a checkpoint and fire once more after restore with
//! its old `epoll_event.data`, which for tokio is a pointer to a freed `ScheduledIo`. Pipes come
//! and go with every command, so they are served by helper threads that wait with `poll(2)`
//! (which leaves no state in the kernel) in short slices, so that a dropped reader or a cancelled
//! write stops its thread promptly.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::sync::mpsc;

/// Size of one read, like envd's 32 KiB buffer.
pub const READ_CHUNK: usize = 32 * 1024;

/// How long a helper thread waits in one `poll(2)` before checking whether it is still wanted.
const POLL_SLICE_MS: libc::c_int = 200;

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Waits up to [`POLL_SLICE_MS`] for `events` on `fd`. `Ok(true)` when the descriptor is ready,
/// hung up or in error (the next read or write reports which).
fn wait_ready(fd: RawFd, events: libc::c_short) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `pfd` is one valid, writable pollfd and the count says so.
    let n = unsafe { libc::poll(&mut pfd, 1, POLL_SLICE_MS) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

type Chunk = io::Result<Option<Vec<u8>>>;

/// Reading end of a pipe or pty master, drained by a helper thread.
pub struct FdReader {
    rx: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
}

impl FdReader {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        let (tx, rx) = mpsc::channel(4);
        std::thread::Builder::new().name("fd-reader".into()).spawn(move || {
            if read_loop(&fd, &tx) == Ending::Abandoned {
                super::sink::hand_over(fd);
            }
        })?;
        Ok(Self { rx: tokio::sync::Mutex::new(rx) })
    }

    /// Reads the next chunk; `Ok(None)` at end of file. A pty master reports `EIO` once the
    /// last slave descriptor is closed, which is treated as end of file too.
    pub async fn read_chunk(&self) -> io::Result<Option<Vec<u8>>> {
        self.rx.lock().await.recv().await.unwrap_or(Ok(None))
    }
}

/// How a reader's thread ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// End of file or an error: the descriptor is done.
    Done,
    /// The [`FdReader`] was dropped while a writer may still hold the other end.
    Abandoned,
}

/// Runs until end of file, an error, or the [`FdReader`] is dropped. An abandoned descriptor
/// goes to [`super::sink`] rather than being closed, so late writers do not die of SIGPIPE.
fn read_loop(fd: &OwnedFd, tx: &mpsc::Sender<Chunk>) -> Ending {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if tx.is_closed() {
            return Ending::Abandoned;
        }
        match wait_ready(fd.as_raw_fd(), libc::POLLIN) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return Ending::Done;
            }
        }
        let chunk = match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(Errno::EIO) => Ok(None),
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => Err(io::Error::from(e)),
        };
        let last = !matches!(chunk, Ok(Some(_)));
        if last {
            let _ = tx.blocking_send(chunk);
            return Ending::Done;
        }
        if tx.blocking_send(chunk).is_err() {
            return Ending::Abandoned;
        }
    }
}

/// Writing end of a pipe or pty master.
pub struct FdWriter {
    fd: Arc<OwnedFd>,
}

/// Sets the flag when dropped (a cancelled `write_all` stops its helper).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl FdWriter {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Writes all of `data`: directly while the pipe has room, then from a blocking-pool thread.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match nix::unistd::write(self.fd.as_fd(), data) {
                Ok(n) => data = &data[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let (fd, rest) = (Arc::clone(&self.fd), data.to_vec());
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(Arc::clone(&cancel));
        tokio::task::spawn_blocking(move || write_blocking(&fd, &rest, &cancel))
            .await
            .map_err(io::Error::other)?
    }

    /// The raw descriptor (for `ioctl`s on a pty master).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn write_blocking(fd: &OwnedFd, mut data: &[u8], cancel: &AtomicBool) -> io::Result<()> {
    while !data.is_empty() {
        if cancel.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "write cancelled"));
        }
        if !wait_ready(fd.as_raw_fd(), libc::POLLOUT)? {
            continue;
        }
        match nix::unistd::write(fd.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
