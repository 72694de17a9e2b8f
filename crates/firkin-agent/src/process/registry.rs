//! The process table: running processes (with their stdin / pty handles and output fan-out to
//! any number of attached streams) and a bounded cache of recently exited ones, so a late
//! `Connect` still receives the `end` event.
//!
//! Output never blocks the child: each attached stream has a bounded queue, and a stream that
//! falls that far behind loses chunks rather than stalling the process (a client that started
//! a background command and never reads must not freeze it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::exit::end_event_for;
use super::fdio::{FdReader, FdWriter};
use super::messages::{EndEvent, OutputKind, ProcessConfig, ProcessInfo, Selector};
use crate::reaper::{ExitOutcome, ExitReceiver};

/// Exited processes kept for late `Connect`s.
const EXITED_KEEP_COUNT: usize = 256;
const EXITED_KEEP_FOR: Duration = Duration::from_secs(600);
/// Messages queued per attached stream before chunks are dropped for it.
const SUBSCRIBER_QUEUE: usize = 1024;
/// After the child exits, keep forwarding output (from descendants still holding the pipes)
/// until it has been quiet this long, or for at most [`DRAIN_MAX`]; what they write after that
/// is read and discarded by [`super::sink`].
const DRAIN_IDLE: Duration = Duration::from_millis(200);
const DRAIN_MAX: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One chunk of output.
#[derive(Debug, Clone)]
pub struct Output {
    pub kind: OutputKind,
    pub data: Vec<u8>,
}

/// What a newly attached stream gets.
pub enum Subscription {
    /// Output from now on; the channel closes once the process has ended.
    Live(mpsc::Receiver<Output>),
    /// The process has already ended.
    Ended(EndEvent),
}

#[derive(Default)]
struct Fanout {
    subscribers: Vec<mpsc::Sender<Output>>,
    end: Option<EndEvent>,
}

/// A process started by the agent.
pub struct ProcessEntry {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: ProcessConfig,
    stdin: tokio::sync::Mutex<Option<FdWriter>>,
    pty_master: Option<FdWriter>,
    exited: AtomicBool,
    fanout: Mutex<Fanout>,
}

/// Why input could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("stdin of process {0} is not enabled or already closed")]
    StdinClosed(u32),
    #[error("process {0} has no pty")]
    NoPty(u32),
    #[error("writing input to process {pid}: {source}")]
    Write {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

impl ProcessEntry {
    pub fn new(
        pid: u32,
        tag: Option<String>,
        config: ProcessConfig,
        stdin: Option<FdWriter>,
        pty_master: Option<FdWriter>,
    ) -> Self {
        Self {
            pid,
            tag,
            config,
            stdin: tokio::sync::Mutex::new(stdin),
            pty_master,
            exited: AtomicBool::new(false),
            fanout: Mutex::new(Fanout::default()),
        }
    }

    pub fn is_pty(&self) -> bool {
        self.pty_master.is_some()
    }

    /// Attaches a stream.
    pub fn subscribe(&self) -> Subscription {
        let mut fanout = lock(&self.fanout);
        if let Some(end) = &fanout.end {
            return Subscription::Ended(end.clone());
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        fanout.subscribers.push(tx);
        Subscription::Live(rx)
    }

    /// The end event, once the process has ended.
    pub fn end(&self) -> Option<EndEvent> {
        lock(&self.fanout).end.clone()
    }

    fn publish(&self, output: Output) {
        let mut fanout = lock(&self.fanout);
        fanout.subscribers.retain(|tx| match tx.try_send(output.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(pid = self.pid, "stream is not reading; dropping output chunk");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    fn finish(&self, end: EndEvent) {
        let mut fanout = lock(&self.fanout);
        fanout.end = Some(end);
        fanout.subscribers.clear();
    }

    /// Writes to stdin (falls back to the pty for pty processes).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), InputError> {
        let guard = self.stdin.lock().await;
        match guard.as_ref() {
            Some(w) => w.write_all(data).await.map_err(|source| InputError::Write { pid: self.pid, source }),
            None if self.is_pty() => self.write_pty(data).await,
            None => Err(InputError::StdinClosed(self.pid)),
        }
    }

    /// Writes to the pty master.
    pub async fn write_pty(&self, data: &[u8]) -> Result<(), InputError> {
        let master = self.pty_master.as_ref().ok_or(InputError::NoPty(self.pid))?;
        master.write_all(data).await.map_err(|source| InputError::Write { pid: self.pid, source })
    }

    /// Closes stdin (EOF for the child). Idempotent.
    pub async fn close_stdin(&self) -> Result<(), InputError> {
        if self.is_pty() {
            return Err(InputError::StdinClosed(self.pid));
        }
        self.stdin.lock().await.take();
        Ok(())
    }

    /// Resizes the pty.
    pub fn resize(&self, cols: u32, rows: u32) -> Result<(), InputError> {
        let master = self.pty_master.as_ref().ok_or(InputError::NoPty(self.pid))?;
        super::pty::resize(master.raw_fd(), cols, rows)
            .map_err(|source| InputError::Write { pid: self.pid, source })
    }

    /// Sends `sig`. SIGKILL goes to the whole process group (every child is a group leader),
    /// so background jobs of a shell die with it.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        let result = if sig == Signal::SIGKILL {
            signal::killpg(pid, sig)
        } else if self.exited.load(Ordering::SeqCst) {
            Ok(()) // already reaped: the pid may be reused, do not signal it.
        } else {
            signal::kill(pid, sig)
        };
        match result {
            Err(nix::Error::ESRCH) => Ok(()),
            other => other,
        }
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo { config: self.config.clone(), pid: self.pid, tag: self.tag.clone() }
    }
}

#[derive(Default)]
struct Tables {
    live: HashMap<u32, Arc<ProcessEntry>>,
    exited: VecDeque<(Instant, Arc<ProcessEntry>)>,
}

/// All processes the agent knows about.
#[derive(Default)]
pub struct ProcessTable {
    tables: Mutex<Tables>,
    /// Exit code of the process tagged [`firkin_wire::agent::START_TAG`], once it has ended.
    start_exit: Mutex<Option<i32>>,
}

fn matches(entry: &ProcessEntry, selector: &Selector) -> bool {
    match (selector.pid, &selector.tag) {
        (Some(pid), _) => entry.pid == pid,
        (None, Some(tag)) => entry.tag.as_deref() == Some(tag.as_str()),
        (None, None) => false,
    }
}

impl ProcessTable {
    pub fn insert(&self, entry: Arc<ProcessEntry>) {
        lock(&self.tables).live.insert(entry.pid, entry);
    }

    /// A running process matching `selector`.
    pub fn find_live(&self, selector: &Selector) -> Option<Arc<ProcessEntry>> {
        let tables = lock(&self.tables);
        if let Some(pid) = selector.pid {
            return tables.live.get(&pid).cloned();
        }
        tables.live.values().find(|e| matches(e, selector)).cloned()
    }

    /// A running or recently exited process matching `selector` (running preferred).
    pub fn find_any(&self, selector: &Selector) -> Option<Arc<ProcessEntry>> {
        if let Some(e) = self.find_live(selector) {
            return Some(e);
        }
        let mut tables = lock(&self.tables);
        prune(&mut tables.exited);
        tables.exited.iter().rev().find(|(_, e)| matches(e, selector)).map(|(_, e)| e.clone())
    }

    /// Exit code of the template's start command, if it has ended.
    pub fn start_exit(&self) -> Option<i32> {
        *lock(&self.start_exit)
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let tables = lock(&self.tables);
        let mut infos: Vec<_> = tables.live.values().map(|e| e.info()).collect();
        infos.sort_by_key(|i| i.pid);
        infos
    }

    fn retire(&self, pid: u32) {
        let mut tables = lock(&self.tables);
        if let Some(entry) = tables.live.remove(&pid) {
            tables.exited.push_back((Instant::now(), entry));
        }
        prune(&mut tables.exited);
    }
}

fn prune(exited: &mut VecDeque<(Instant, Arc<ProcessEntry>)>) {
    while exited.len() > EXITED_KEEP_COUNT {
        exited.pop_front();
    }
    while exited.front().is_some_and(|(at, _)| at.elapsed() > EXITED_KEEP_FOR) {
        exited.pop_front();
    }
}

/// Forwards the child's output to attached streams until it has exited and its output is
/// drained, then publishes the end event and retires the entry.
pub async fn pump(
    table: Arc<ProcessTable>,
    entry: Arc<ProcessEntry>,
    readers: Vec<(OutputKind, FdReader)>,
    exit: ExitReceiver,
) {
    let (tx, mut rx) = mpsc::channel::<Output>(64);
    let mut tasks = JoinSet::new();
    for (kind, reader) in readers {
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Ok(Some(data)) = reader.read_chunk().await {
                if tx.send(Output { kind, data }).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut exit = exit;
    let mut outcome: Option<ExitOutcome> = None;
    let mut eof = false;
    while !(eof && outcome.is_some()) {
        tokio::select! {
            out = rx.recv(), if !eof => match out {
                Some(o) => entry.publish(o),
                None => eof = true,
            },
            res = &mut exit, if outcome.is_none() => {
                entry.exited.store(true, Ordering::SeqCst);
                outcome = Some(res.unwrap_or_else(|_| {
                    tracing::error!(pid = entry.pid, "reaper dropped the exit status");
                    ExitOutcome::Exited(-1)
                }));
                if !eof {
                    drain(&entry, &mut rx).await;
                    eof = true;
                }
            }
        }
    }
    tasks.abort_all();
    let end = end_event_for(outcome.unwrap_or(ExitOutcome::Exited(-1)));
    tracing::debug!(pid = entry.pid, status = %end.status, "process ended");
    if entry.tag.as_deref() == Some(firkin_wire::agent::START_TAG) {
        tracing::info!(pid = entry.pid, status = %end.status, "start command ended");
        *lock(&table.start_exit) = Some(end.exit_code);
    }
    entry.finish(end);
    table.retire(entry.pid);
}

async fn drain(entry: &ProcessEntry, rx: &mut mpsc::Receiver<Output>) {
    let deadline = tokio::time::Instant::now() + DRAIN_MAX;
    loop {
        let idle = tokio::time::Instant::now() + DRAIN_IDLE;
        match tokio::time::timeout_at(idle.min(deadline), rx.recv()).await {
            Ok(Some(o)) => entry.publish(o),
            Ok(None) | Err(_) => return,
        }
    }
}
