//! Non-blocking reads and writes on raw pipe / pty-master descriptors through tokio's `AsyncFd`,
//! so that readers can be dropped (cancelled) at any time without leaking blocked threads.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// Size of one read, like envd's 32 KiB buffer.
pub const READ_CHUNK: usize = 32 * 1024;

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: `fd` is an open descriptor that the AsyncFd owns until it is dropped, and
    // `OwnedFd::as_raw_fd` always returns that same descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Reading end of a pipe or pty master.
pub struct FdReader {
    fd: AsyncFd<OwnedFd>,
}

impl FdReader {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self { fd: register(fd)? })
    }

    /// Reads the next chunk; `Ok(None)` at end of file. A pty master reports `EIO` once the
    /// last slave descriptor is closed, which is treated as end of file too.
    pub async fn read_chunk(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|inner| nix::unistd::read(inner.as_raw_fd(), &mut buf).map_err(io::Error::from))
            {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(None),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Writing end of a pipe or pty master.
pub struct FdWriter {
    fd: AsyncFd<OwnedFd>,
}

impl FdWriter {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self { fd: register(fd)? })
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|inner| nix::unistd::write(inner.get_ref().as_fd(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// The raw descriptor (for `ioctl`s on a pty master).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}
