//! The `process.Process` service: starting processes (pipes or pty), attaching to them,
//! listing, input, signals and pty resizes.

pub mod exit;
pub mod fdio;
pub mod messages;
pub mod pty;
pub mod registry;
pub mod sink;
pub mod spawn;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use self::fdio::{FdReader, FdWriter};
use self::messages::{
    OutputKind, SelectorRequest, SendInputRequest, SendSignalRequest, StartRequest, StreamInputRequest,
    UpdateRequest,
};
use self::registry::{InputError, ProcessEntry, ProcessTable, Subscription};
use crate::connect::{Code, ConnectError, StreamWriter};
use crate::context::{CallContext, RequestUserError};
use crate::json::EnumValue;
use crate::reaper::Reaper;

/// Errors of the process service, each naming the operation and process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process with {0} not found")]
    NotFound(String),
    #[error("a process selector (pid or tag) is required")]
    NoSelector,
    #[error("cwd '{0}' does not exist")]
    CwdMissing(String),
    #[error("error starting process '{cmd}': {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error starting process '{cmd}': {source}: user '{user}' is at its process limit ({limit})")]
    ProcessLimit {
        cmd: String,
        user: String,
        limit: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up i/o of process {pid}: {source}")]
    Io {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    User(#[from] RequestUserError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("invalid signal {0:?}")]
    BadSignal(EnumValue),
    #[error("sending {signal} to process {pid}: {source}")]
    Signal {
        pid: u32,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("input message has neither stdin nor pty data")]
    EmptyInput,
    #[error("update of process {0} carries no pty size")]
    NoPtySize(u32),
}

impl ProcessError {
    fn code(&self) -> Code {
        match self {
            ProcessError::NotFound(_) => Code::NotFound,
            ProcessError::NoSelector
            | ProcessError::CwdMissing(_)
            | ProcessError::BadSignal(_)
            | ProcessError::EmptyInput
            | ProcessError::NoPtySize(_) => Code::InvalidArgument,
            ProcessError::User(_) => Code::Unauthenticated,
            ProcessError::Input(InputError::StdinClosed(_) | InputError::NoPty(_)) => {
                Code::FailedPrecondition
            }
            ProcessError::ProcessLimit { .. } => Code::ResourceExhausted,
            ProcessError::Spawn { source, .. } | ProcessError::Io { source, .. } if exhausted(source) => {
                Code::ResourceExhausted
            }
            ProcessError::Spawn { .. }
            | ProcessError::Io { .. }
            | ProcessError::Input(InputError::Write { .. })
            | ProcessError::Signal { .. } => Code::Internal,
        }
    }

    /// The error of a failed spawn of `cmd` as `user`. A fork refused with EAGAIN is the user's
    /// process limit (the spawn is charged to that user, see `spawn::spawn`), said so by name.
    fn spawn(cmd: &str, user: &str, source: std::io::Error) -> Self {
        let cmd = cmd.to_owned();
        if source.raw_os_error() == Some(libc::EAGAIN) {
            return ProcessError::ProcessLimit { cmd, user: user.to_owned(), limit: process_limit(), source };
        }
        ProcessError::Spawn { cmd, source }
    }
}

/// Whether `e` says a resource ran out rather than that the request was wrong: as envd does, a
/// start failing so answers `resource_exhausted` (retryable) instead of a generic error.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::ENOSPC))
}

/// The agent's RLIMIT_NPROC, which every process it starts inherits, as text.
fn process_limit() -> String {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which is valid for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) };
    match (rc, limit.rlim_cur) {
        (0, libc::RLIM_INFINITY) => "unlimited".into(),
        (0, n) => format!("{n} processes and threads"),
        _ => "RLIMIT_NPROC".into(),
    }
}

impl From<ProcessError> for ConnectError {
    fn from(e: ProcessError) -> Self {
        ConnectError::new(e.code(), e.to_string())
    }
}

/// Maps a proto `Signal` value (name like `SIGNAL_SIGKILL` or its number) to a signal.
pub fn parse_signal(value: &EnumValue) -> Option<Signal> {
    match value {
        EnumValue::Number(n) => i32::try_from(*n).ok().and_then(|n| Signal::try_from(n).ok()),
        EnumValue::Name(name) => {
            let bare = name.strip_prefix("SIGNAL_").unwrap_or(name);
            Signal::from_str(bare).ok()
        }
    }
}

fn describe(selector: &messages::Selector) -> String {
    match (&selector.pid, &selector.tag) {
        (Some(pid), _) => format!("pid {pid}"),
        (None, Some(tag)) => format!("tag '{tag}'"),
        (None, None) => "no selector".into(),
    }
}

/// The process service state.
pub struct ProcessService {
    table: Arc<ProcessTable>,
    reaper: Arc<Reaper>,
}

impl ProcessService {
    pub fn new(reaper: Arc<Reaper>) -> Self {
        Self { table: Arc::new(ProcessTable::default()), reaper }
    }

    /// Exit code of the template's start command, if it has ended.
    pub fn start_exit(&self) -> Option<i32> {
        self.table.start_exit()
    }

    /// Pid of the template's start command while it runs.
    pub fn start_pid(&self) -> Option<u32> {
        let selector = messages::Selector { pid: None, tag: Some(firkin_wire::agent::START_TAG.into()) };
        self.table.find_live(&selector).map(|e| e.pid)
    }

    fn live(&self, selector: &messages::Selector) -> Result<Arc<ProcessEntry>, ProcessError> {
        if selector.pid.is_none() && selector.tag.is_none() {
            return Err(ProcessError::NoSelector);
        }
        self.table.find_live(selector).ok_or_else(|| ProcessError::NotFound(describe(selector)))
    }

    /// `Start`: spawns the process and attaches the caller's stream to it.
    pub fn start(
        &self,
        ctx: &CallContext,
        req: StartRequest,
    ) -> Result<(Arc<ProcessEntry>, Subscription), ProcessError> {
        let user = ctx.user()?;
        let cwd: PathBuf = match req.process.cwd.as_deref() {
            Some(raw) if !raw.is_empty() => crate::paths::resolve(raw, &user.home),
            _ => ctx.config.workdir_for(&user),
        };
        if !spawn::is_dir(&cwd) {
            let shown = req.process.cwd.clone().unwrap_or_else(|| cwd.display().to_string());
            return Err(ProcessError::CwdMissing(shown));
        }
        let env = spawn::compose_env(&user, &ctx.config.env_vars, &req.process.envs);
        let stdio = match req.pty.map(|p| p.size.map(|s| (s.cols, s.rows)).unwrap_or((80, 24))) {
            Some((cols, rows)) => spawn::ChildStdio::Pty { cols, rows },
            None => spawn::ChildStdio::Pipes { stdin: req.stdin.unwrap_or(true) },
        };
        let spec = spawn::SpawnSpec {
            cmd: &req.process.cmd,
            arg0: None,
            args: &req.process.args,
            env,
            cwd,
            user: &user,
            stdio,
        };
        let spawned = spawn::spawn(&self.reaper, &spec)
            .map_err(|source| ProcessError::spawn(&req.process.cmd, &user.name, source))?;
        let pid = spawned.pid;
        let io_err = |source| ProcessError::Io { pid, source };

        let mut readers = Vec::new();
        let mut pty_writer = None;
        if let Some(master) = spawned.pty_master {
            let writer_fd = master.try_clone().map_err(io_err)?;
            readers.push((OutputKind::Pty, FdReader::new(master).map_err(io_err)?));
            pty_writer = Some(FdWriter::new(writer_fd).map_err(io_err)?);
        }
        if let Some(fd) = spawned.stdout {
            readers.push((OutputKind::Stdout, FdReader::new(fd).map_err(io_err)?));
        }
        if let Some(fd) = spawned.stderr {
            readers.push((OutputKind::Stderr, FdReader::new(fd).map_err(io_err)?));
        }
        let stdin = spawned.stdin.map(FdWriter::new).transpose().map_err(io_err)?;

        let entry = Arc::new(ProcessEntry::new(pid, req.tag, req.process, stdin, pty_writer));
        let subscription = entry.subscribe();
        self.table.insert(entry.clone());
        tokio::spawn(registry::pump(self.table.clone(), entry.clone(), readers, spawned.exit));
        if let Some(deadline) = ctx.timeout() {
            let entry = entry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                if entry.end().is_none() {
                    tracing::info!(pid = entry.pid, "deadline reached, killing process");
                    let _ = entry.signal(Signal::SIGKILL);
                }
            });
        }
        tracing::debug!(pid, "process started");
        Ok((entry, subscription))
    }

    /// `Connect`: attaches to a running (or recently exited) process.
    pub fn connect(&self, req: SelectorRequest) -> Result<(Arc<ProcessEntry>, Subscription), ProcessError> {
        let entry = self
            .table
            .find_any(&req.process)
            .ok_or_else(|| ProcessError::NotFound(describe(&req.process)))?;
        let subscription = entry.subscribe();
        Ok((entry, subscription))
    }

    /// `List`.
    pub fn list(&self) -> Value {
        json!({ "processes": self.table.list() })
    }

    /// `SendInput`.
    pub async fn send_input(&self, req: SendInputRequest) -> Result<Value, ProcessError> {
        let entry = self.live(&req.process)?;
        let input = req.input.unwrap_or_default();
        match (input.stdin, input.pty) {
            (_, Some(data)) => entry.write_pty(&data).await?,
            (Some(data), None) => entry.write_stdin(&data).await?,
            (None, None) => return Err(ProcessError::EmptyInput),
        }
        Ok(json!({}))
    }

    /// `SendSignal`.
    pub fn send_signal(&self, req: SendSignalRequest) -> Result<Value, ProcessError> {
        let entry = self.live(&req.process)?;
        let signal = parse_signal(&req.signal).ok_or(ProcessError::BadSignal(req.signal))?;
        entry.signal(signal).map_err(|source| ProcessError::Signal { pid: entry.pid, signal, source })?;
        Ok(json!({}))
    }

    /// `CloseStdin`.
    pub async fn close_stdin(&self, req: SelectorRequest) -> Result<Value, ProcessError> {
        self.live(&req.process)?.close_stdin().await?;
        Ok(json!({}))
    }

    /// `Update` (pty resize).
    pub fn update(&self, req: UpdateRequest) -> Result<Value, ProcessError> {
        let entry = self.live(&req.process)?;
        if let Some(pty) = req.pty {
            let size = pty.size.ok_or(ProcessError::NoPtySize(entry.pid))?;
            entry.resize(size.cols, size.rows)?;
        }
        Ok(json!({}))
    }

    /// Handles one `StreamInput` message; the first must be `start`, naming the process.
    pub async fn stream_input_message(
        &self,
        target: &mut Option<Arc<ProcessEntry>>,
        msg: StreamInputRequest,
    ) -> Result<(), ProcessError> {
        if let Some(start) = msg.start {
            *target = Some(self.live(&start.process)?);
        }
        if let Some(data) = msg.data {
            let entry = target.as_ref().ok_or(ProcessError::NoSelector)?;
            let input = data.input.unwrap_or_default();
            if let Some(bytes) = input.pty {
                entry.write_pty(&bytes).await?;
            } else if let Some(bytes) = input.stdin {
                entry.write_stdin(&bytes).await?;
            }
        }
        Ok(())
    }
}

/// The deadline of a process stream: the request's `Connect-Timeout-Ms`. When it passes before
/// the process ends, the stream ends with `deadline_exceeded` (as envd's does) instead of the
/// process's `end` event; for `Start` the process is killed at the same moment.
pub struct StreamDeadline {
    pub at: tokio::time::Instant,
    pub what: &'static str,
}

impl StreamDeadline {
    /// The deadline `timeout` from now, if the request set one.
    pub fn after(timeout: Option<Duration>, what: &'static str) -> Option<Self> {
        timeout.map(|t| Self { at: tokio::time::Instant::now() + t, what })
    }

    fn error(&self, pid: u32) -> ConnectError {
        ConnectError::new(
            Code::DeadlineExceeded,
            format!(
                "the request's deadline (Connect-Timeout-Ms) passed before process {pid} ended; {}",
                self.what
            ),
        )
    }

    fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }
}

/// Resolves at `deadline`, never without one.
async fn reach(deadline: Option<&StreamDeadline>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.at).await,
        None => std::future::pending().await,
    }
}

/// Writes a process event stream: `start`, then output and keepalives, then `end` and the
/// end-of-stream frame (or a `deadline_exceeded` end-of-stream once `deadline` passes).
/// Returns early if the client goes away (the process keeps running).
pub async fn stream_events(
    writer: StreamWriter,
    entry: Arc<ProcessEntry>,
    subscription: Subscription,
    keepalive: Duration,
    deadline: Option<StreamDeadline>,
) {
    if !writer.send(&messages::start_event(entry.pid)).await {
        return;
    }
    let mut rx = match subscription {
        Subscription::Ended(end) => {
            if writer.send(&messages::end_event(&end)).await {
                writer.finish(Ok(())).await;
            }
            return;
        }
        Subscription::Live(rx) => rx,
    };
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(o) => {
                    if !writer.send(&messages::data_event(o.kind, &o.data)).await {
                        return;
                    }
                }
                None => return finish_events(writer, &entry, deadline.as_ref()).await,
            },
            _ = tokio::time::sleep(keepalive) => {
                if !writer.send(&messages::keepalive_event()).await {
                    return;
                }
            }
            _ = reach(deadline.as_ref()) => {
                if let Some(d) = &deadline {
                    writer.finish(Err(d.error(entry.pid))).await;
                }
                return;
            }
            _ = writer.closed() => return,
        }
    }
}

/// Ends a stream whose process's output has closed: its `end` event, unless the deadline has
/// passed meanwhile (the deadline's kill is what closed it).
async fn finish_events(writer: StreamWriter, entry: &ProcessEntry, deadline: Option<&StreamDeadline>) {
    let result = match (deadline.filter(|d| d.passed()), entry.end()) {
        (Some(d), _) => Err(d.error(entry.pid)),
        (None, Some(end)) => {
            if !writer.send(&messages::end_event(&end)).await {
                return;
            }
            Ok(())
        }
        (None, None) => Err(ConnectError::new(
            Code::Internal,
            format!("output of process {} ended without an exit status", entry.pid),
        )),
    };
    writer.finish(result).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal(&EnumValue::Name("SIGNAL_SIGKILL".into())), Some(Signal::SIGKILL));
        assert_eq!(parse_signal(&EnumValue::Name("SIGNAL_SIGTERM".into())), Some(Signal::SIGTERM));
        assert_eq!(parse_signal(&EnumValue::Number(9)), Some(Signal::SIGKILL));
        assert_eq!(parse_signal(&EnumValue::Number(0)), None);
        assert_eq!(parse_signal(&EnumValue::Name("SIGNAL_UNSPECIFIED".into())), None);
    }
}
