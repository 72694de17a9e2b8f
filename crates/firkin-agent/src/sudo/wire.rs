//! The sudo socket's protocol between the `sudo` client and the agent. Every message is a frame:
//! a 4-byte big-endian length, then that many bytes of JSON.
//!
//! 1. client → agent: one [`Request`], sent with `sendmsg(2)` carrying the client's stdin,
//!    stdout and stderr as `SCM_RIGHTS` and the client's pid, uid and gid as `SCM_CREDENTIALS`
//!    on its first byte;
//! 2. client → agent, any number while the command runs: [`ClientMessage`] (a signal the client
//!    received, to be forwarded);
//! 3. agent → client: exactly one [`Reply`], then the agent closes the connection.
//!
//! The client's identity is never part of a message. It comes from `SCM_CREDENTIALS`, which
//! the kernel (gVisor's sentry) checks: a sender may only claim its own pid and one of its own
//! uids and gids (measured in a sandbox: user claiming uid 0, gid 0, gid 27 or pid 1 gets
//! `EPERM`). `SO_PEERCRED` is not used: runsc 2024-07-29 answers it with the asking endpoint's
//! own credentials (the agent sees itself, root, whoever connects).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::options::Invocation;

/// Version of this protocol; the client and the agent are one binary, so it only guards against
/// a client from another build talking to a restored older agent.
pub const PROTOCOL: u32 = 1;

/// Signals the client relays to the command (as sudo does), all others act on the client.
pub const FORWARDED_SIGNALS: &[Signal] =
    &[Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGUSR2];

/// Largest frame accepted (a request carries the caller's whole environment).
pub const MAX_FRAME: usize = 8 << 20;

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub protocol: u32,
    pub invocation: Invocation,
    /// The client's working directory.
    pub cwd: String,
    /// The client's environment.
    pub env: Vec<(String, String)>,
}

/// Sent by the client while the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientMessage {
    /// The client received this signal; forward it to the command.
    Signal(i32),
}

/// The agent's final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    /// The command exited with this status.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// Nothing was run (`-l`, `-v`): print `stdout`, exit with `code`.
    Done { stdout: String, code: i32 },
    /// Refused or failed before the command ran: print `sudo: <message>`, exit with 1.
    Failed(String),
}

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{op} on the sudo socket: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("sudo socket frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("sudo socket frame is not valid JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the sudo socket closed before a whole frame arrived")]
    Truncated,
    #[error("the sudo request carried {0} descriptors, not 3 (stdin, stdout, stderr)")]
    Descriptors(usize),
    #[error("the sudo request carried no credentials (SCM_CREDENTIALS)")]
    NoCredentials,
}

/// A request as received: what was asked, the caller's stdio and the caller's checked identity.
pub struct Received {
    pub request: Request,
    pub stdio: [OwnedFd; 3],
    pub caller: UnixCredentials,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> WireError {
    move |source| WireError::Io { op, source }
}

/// `value` as a frame.
fn encode(value: &impl Serialize) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).ok().filter(|n| *n as usize <= MAX_FRAME);
    let len = len.ok_or(WireError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one frame.
pub fn write_frame(mut to: impl Write, value: &impl Serialize) -> Result<(), WireError> {
    to.write_all(&encode(value)?).map_err(io_err("writing a frame"))
}

/// Reads the rest of a frame whose first bytes are `have`, never reading past its end (the
/// next frame stays in the socket); `Ok(None)` on a clean end of stream before any byte of it.
fn finish_frame<T: DeserializeOwned>(mut from: impl Read, mut have: Vec<u8>) -> Result<Option<T>, WireError> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let need = match have.get(..4) {
            None => 4,
            Some(header) => {
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > MAX_FRAME {
                    return Err(WireError::TooLarge(len));
                }
                4 + len
            }
        };
        if have.len() >= 4 && have.len() >= need {
            return Ok(Some(serde_json::from_slice(&have[4..need])?));
        }
        let want = (need - have.len()).min(buf.len());
        let n = match from.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading a frame")(e)),
        };
        if n == 0 {
            return if have.is_empty() { Ok(None) } else { Err(WireError::Truncated) };
        }
        have.extend_from_slice(&buf[..n]);
    }
}

/// Reads one frame; `Ok(None)` when the stream ended between frames.
pub fn read_frame<T: DeserializeOwned>(from: impl Read) -> Result<Option<T>, WireError> {
    finish_frame(from, Vec::new())
}

/// Sends `request` with `stdio` (stdin, stdout, stderr) and this process's credentials attached.
pub fn send_request(sock: &UnixStream, request: &Request, stdio: [RawFd; 3]) -> Result<(), WireError> {
    let frame = encode(request)?;
    let me = UnixCredentials::new();
    let attached = [ControlMessage::ScmRights(&stdio), ControlMessage::ScmCredentials(&me)];
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&frame)], &attached, MsgFlags::empty(), None) {
            Ok(n) => break n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err("sending the request")(e.into())),
        }
    };
    let mut sock = sock;
    sock.write_all(&frame[sent..]).map_err(io_err("sending the request"))
}

/// Receives a request with the three descriptors (close-on-exec in this process) and the
/// credentials sent with it. `Ok(None)` when the client hung up without sending one.
pub fn recv_request(sock: &UnixStream) -> Result<Option<Received>, WireError> {
    setsockopt(sock, sockopt::PassCred, &true).map_err(|e| io_err("enabling SO_PASSCRED")(e.into()))?;
    // Only the header: what is attached rides on the frame's first byte, and the rest is read
    // to the frame's end and no further.
    let mut buf = vec![0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; 3], libc::ucred);
    let (n, fds, creds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let (mut fds, mut creds) = (Vec::new(), None);
                let cmsgs = msg.cmsgs().map_err(|e| io_err("receiving the request")(e.into()))?;
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::ScmRights(received) => {
                            // SAFETY: SCM_RIGHTS just installed these descriptors in this
                            // process; nothing else owns them, and each is wrapped exactly once.
                            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                        }
                        ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                        _ => {}
                    }
                }
                break (msg.bytes, fds, creds);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err("receiving the request")(e.into())),
        }
    };
    buf.truncate(n);
    let Some(request) = finish_frame::<Request>(sock, buf)? else {
        return Ok(None);
    };
    // Without an explicit message the kernel may still attach "nobody" with pid 0: not a caller.
    let caller = creds.filter(|c| c.pid() > 0).ok_or(WireError::NoCredentials)?;
    let count = fds.len();
    let stdio: [OwnedFd; 3] = fds.try_into().map_err(|_| WireError::Descriptors(count))?;
    Ok(Some(Received { request, stdio, caller }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sudo::options::{Invocation, RunOptions};

    fn request(env_bytes: usize) -> Request {
        Request {
            protocol: PROTOCOL,
            invocation: Invocation::Run(RunOptions { command: vec!["id".into()], ..RunOptions::default() }),
            cwd: "/home/user".into(),
            env: vec![("BIG".into(), "x".repeat(env_bytes))],
        }
    }

    #[test]
    fn request_and_descriptors_cross_a_socket_pair() {
        for size in [0, 200 * 1024] {
            let (client, server) = UnixStream::pair().unwrap();
            let (r, w) = nix::unistd::pipe().unwrap();
            let sent = request(size);
            let writer = {
                let sent = sent.clone();
                let fds = [r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()];
                std::thread::spawn(move || send_request(&client, &sent, fds).map(|()| client))
            };
            let got = recv_request(&server).unwrap().unwrap();
            let client = writer.join().unwrap().unwrap();
            assert_eq!(got.request, sent);
            let me = UnixCredentials::new();
            assert_eq!(
                (got.caller.pid(), got.caller.uid(), got.caller.gid()),
                (me.pid(), me.uid(), me.gid())
            );
            let [stdin, stdout, _] = got.stdio;
            nix::unistd::write(&stdout, b"through").unwrap();
            let mut out = [0u8; 7];
            nix::unistd::read(stdin.as_raw_fd(), &mut out).unwrap();
            assert_eq!(&out, b"through");
            write_frame(&client, &ClientMessage::Signal(2)).unwrap();
            assert_eq!(read_frame::<ClientMessage>(&server).unwrap(), Some(ClientMessage::Signal(2)));
            write_frame(&server, &Reply::Exited(3)).unwrap();
            drop(server);
            assert_eq!(read_frame::<Reply>(&client).unwrap(), Some(Reply::Exited(3)));
            assert_eq!(read_frame::<Reply>(&client).unwrap(), None);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(read_frame::<Reply>(&b), Err(WireError::TooLarge(_))));
        (&a).write_all(&[0, 0, 0, 9, b'{']).unwrap();
        drop(a);
        assert!(matches!(read_frame::<Reply>(&b), Err(WireError::Truncated)));
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, &Reply::Exited(0)).unwrap();
        drop(a);
        assert!(matches!(recv_request(&b), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_request_without_credentials_is_refused() {
        // A plain write: sent before the receiver asked for credentials, so none are attached
        // (the kernel reports pid 0 and the overflow uid, which is no caller).
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, &request(0)).unwrap();
        assert!(matches!(recv_request(&b), Err(WireError::NoCredentials)));
    }
}
