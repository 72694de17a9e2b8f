//! The sandbox's OOM killer: a watchdog thread that keeps the sandbox's memory use under the
//! sandbox's size by killing its largest process, as the guest kernel of an E2B VM does.
//!
//! Why: runsc 20240729 has no OOM killer inside the sentry. A sandbox that outgrows its host
//! memory cgroup gets the whole sentry killed by the host's OOM killer: every process, the
//! agent, the files, with the SDK request hanging until the heartbeat notices. So the host
//! limit is a backstop with headroom above the sandbox's size (`firkin-core`'s `engine/oci.rs`),
//! and this module enforces the size itself: it reads the memory in use from `/proc/meminfo`
//! ([`procfs::memory_used`], plus what each process costs the host beyond it, [`charged`]) as
//! often as the distance to the threshold requires ([`next_sample_in`]); at or above
//! [`Limits::threshold`] it kills the process [`victim::choose`] picks with SIGKILL, logs a
//! `reason=oom` line (the agent's stderr is the host's `sandbox.log`), waits until the
//! victim's memory is released ([`Release`]) and samples again. The killed command's stream
//! ends as any SIGKILLed command's does (`signal: killed`, exit code -1).
//!
//! Not covered: memory committed inside one system call (`mmap` with `MAP_POPULATE`, a `read`
//! of a large file into a fresh buffer) is committed whole before the SIGKILL takes effect, so
//! one call that commits more than the host limit's headroom still ends the whole sandbox.
//!
//! The sandbox's size comes from [`MEMORY_ENV`] in the agent's environment, set by the host's
//! OCI spec when the sandbox boots; the value travels inside every checkpoint of the agent and
//! stays right because a restored sandbox always keeps the memory size its image was taken
//! with. The watchdog runs only when the agent is PID 1 of a sandbox: on a host (tests) it
//! would see, and could kill, the host's processes.
//!
//! Like every other agent thread (`crate::listener`, `crate::portforward`), it only sleeps,
//! opens, reads and closes files and sends signals: nothing in epoll, nothing held across a
//! checkpoint; after a restore it simply wakes up and samples again.

mod procfs;
mod victim;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Environment variable holding the sandbox's memory size in MiB (set by the host's OCI spec).
pub const MEMORY_ENV: &str = "FIRKIN_MEMORY_MB";

/// The fastest a sandbox is assumed to commit memory. Measured inside gVisor on these machines
/// (2 vCPUs): about 1.1 GiB/s at most, with page-touching loops, `bytearray`, `MAP_POPULATE`
/// and two processes at once alike (the host's page faults are the limit). Assumed 4 GiB/s:
/// the watchdog competes for the CPU with the processes it watches and its wake-ups come late
/// when they use it all (with 2 GiB/s, 1 of 8 runs of two 800 MiB hogs at once reached the
/// host limit, the first kill coming at 835 MiB; with 4 GiB/s none of 16, at 745 MiB at most).
const MAX_ALLOC_RATE: u64 = 4 << 30; // bytes per second
/// Least and most time between two samples. The next sample is due before a process
/// allocating at [`MAX_ALLOC_RATE`] could reach the threshold, but no sooner than
/// [`MIN_INTERVAL`] and no later than [`MAX_INTERVAL`]. Reading `/proc/meminfo` is cheap (about
/// 0.1 ms of CPU); waking up is not, about 0.5-1 ms of CPU in gVisor (a fixed 50 ms loop used
/// 2.1 % of a CPU). An idle 512 MiB sandbox is sampled every ~118 ms: 0.47 % of a CPU
/// (measured over 60 s; the port-forwarding scanner's 1 s loop uses 0.2 %).
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for a victim's memory to be released, and how often it is checked meanwhile.
const RELEASE_WAIT: Duration = Duration::from_secs(1);
const RELEASE_POLL: Duration = Duration::from_millis(10);
/// `oom_score_adj` is read for this many of the largest processes only; the others count as
/// 0. Reading it for every process doubles the files read at the worst moment, when every
/// system call competes with the hogs for the CPU (finding a victim among 232 processes takes
/// 9-53 ms reading one file each; it took up to 723 ms reading two while the host cgroup was
/// at its limit), and a process far down the list wins only with a large positive adjustment,
/// which is rare.
const ADJ_READ_FOR: usize = 8;
/// Least time between two log lines about the same trouble (unreadable meminfo, no victim).
const COMPLAIN_EVERY: Duration = Duration::from_secs(10);
/// The kill threshold sits this fraction of the sandbox's memory below it (8 MiB of 512 MiB),
/// because the sample it acts on is up to one interval old: a little early rather than late.
const MARGIN_DIVISOR: u64 = 64;

/// Host memory each process in the sandbox costs beyond what the sandbox's `/proc/meminfo`
/// shows (the sentry's task and address-space structures, the systrap stub's page tables),
/// measured as the growth of the host cgroup's non-file memory minus the growth of the
/// sandbox's own figure: 399 KiB per `sleep`, 442 per idle `python3`, 445 per `bash` with a
/// `sleep`. Counted as the sandbox's memory, as a guest kernel counts its own per-process
/// memory, so that hundreds of processes do not eat the host limit's headroom.
const PROCESS_OVERHEAD: u64 = 448 << 10;

const MIB: u64 = 1 << 20;

/// The memory size the watchdog enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The sandbox's memory in bytes.
    pub limit: u64,
    /// Memory use at which a process is killed.
    pub threshold: u64,
}

impl Limits {
    /// The limits of a sandbox with `memory_mb` MiB; `None` for 0.
    pub fn for_memory_mb(memory_mb: u32) -> Option<Limits> {
        let limit = u64::from(memory_mb) * MIB;
        (limit > 0).then(|| Limits { limit, threshold: limit - limit / MARGIN_DIVISOR })
    }

    /// Whether `used` bytes call for a kill.
    pub fn exceeded(&self, used: u64) -> bool {
        used >= self.threshold
    }
}

/// `used` bytes shown by `/proc/meminfo` plus the host memory `processes` processes cost beyond
/// it ([`PROCESS_OVERHEAD`] each).
pub fn charged(used: u64, processes: usize) -> u64 {
    used.saturating_add(u64::try_from(processes).unwrap_or(u64::MAX).saturating_mul(PROCESS_OVERHEAD))
}

/// How long until the next sample when `used` bytes are in use: the time a process allocating
/// at [`MAX_ALLOC_RATE`] needs to reach the threshold, within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
pub fn next_sample_in(limits: &Limits, used: u64) -> Duration {
    let room = limits.threshold.saturating_sub(used);
    let millis = room.saturating_mul(1000) / MAX_ALLOC_RATE;
    Duration::from_millis(millis).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Tracks the release of a victim's memory, one sample ([`RELEASE_POLL`]) at a time.
///
/// The sentry frees a killed process's memory well after the process is gone (the zombie
/// appears after 3-9 ms; use drops after 45-55 ms for 300-450 MiB victims in an idle sandbox,
/// 88-160 ms for 300-850 MiB ones in a code-interpreter sandbox). Deciding again before that
/// finds the sandbox still above its threshold and kills a second, innocent process (seen: a
/// 4 MiB `sleep` after a 1.5 GiB hog; the code-interpreter server 60 ms after its 1 GiB kernel,
/// when a small unrelated drop was taken for the release). The release has begun once use fell
/// by a quarter of what the victim could hold (its resident set, but no more than was in use:
/// gVisor counts whole mapped ranges as resident); it is over when the sandbox is under its
/// threshold, or when, having begun, use has not fallen for [`RELEASE_SETTLED`] samples (another
/// process may be growing meanwhile: then it is that one's turn), or when it has not begun
/// within [`RELEASE_NONE`] samples (the victim held less than it seemed).
#[derive(Debug, Clone, Copy)]
pub struct Release {
    at_kill: u64,
    expected: u64,
    last: u64,
    begun: bool,
    samples: u32,
    still: u32,
}

/// Least drop between two samples that counts as memory still being released.
const RELEASE_STEP: u64 = MIB;
/// Samples without a drop, once the release has begun, that end it (30 ms).
const RELEASE_SETTLED: u32 = 3;
/// Samples after which a release that has not begun is given up (300 ms, about twice the
/// slowest measured).
const RELEASE_NONE: u32 = 30;

impl Release {
    /// Starts tracking a victim with `victim_rss` bytes resident, killed at `used_at_kill`.
    pub fn new(used_at_kill: u64, victim_rss: u64) -> Self {
        let expected = victim_rss.min(used_at_kill);
        Self { at_kill: used_at_kill, expected, last: used_at_kill, begun: false, samples: 0, still: 0 }
    }

    /// Takes the next sample; `true` once the release is over.
    pub fn over(&mut self, limits: &Limits, now: u64) -> bool {
        if !limits.exceeded(now) {
            return true;
        }
        self.samples += 1;
        let falling = now + RELEASE_STEP <= self.last;
        self.last = now;
        if !self.begun {
            self.begun = self.at_kill.saturating_sub(now) >= self.expected / 4;
            return !self.begun && self.samples >= RELEASE_NONE;
        }
        self.still = if falling { 0 } else { self.still + 1 };
        self.still >= RELEASE_SETTLED
    }
}

/// Watchdog failures, each naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("memory watchdog: reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("memory watchdog: {path} has no MemTotal or MemFree line")]
    Parse { path: &'static str },
    #[error("memory watchdog: sending SIGKILL to process {pid}: {source}")]
    Kill {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("memory watchdog: starting its thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the watchdog for a sandbox of `memory_mb` MiB when the agent is the sandbox's PID 1.
/// `start_pid` names the template's start command while it runs (it is spared when it is not
/// clearly the hog, see [`victim`]).
pub fn start<F>(memory_mb: Option<u32>, start_pid: F)
where
    F: Fn() -> Option<u32> + Send + 'static,
{
    let Some(limits) = memory_mb.and_then(Limits::for_memory_mb) else {
        tracing::info!("memory watchdog off: {MEMORY_ENV} is not set");
        return;
    };
    if std::process::id() != 1 {
        tracing::info!("memory watchdog off: the agent is not PID 1 of a sandbox");
        return;
    }
    let spawned = std::thread::Builder::new().name("memwatch".into()).spawn(move || {
        let start_pid = move || start_pid().and_then(|p| i32::try_from(p).ok());
        Watchdog::new(limits).run(&start_pid);
    });
    match spawned.map_err(OomError::Thread) {
        Ok(_) => tracing::info!(
            limit_mib = limits.limit / MIB,
            threshold_mib = limits.threshold / MIB,
            "memory watchdog on"
        ),
        Err(e) => tracing::error!(error = %e, "memory watchdog not started"),
    }
}

/// The watchdog thread's state.
struct Watchdog {
    limits: Limits,
    page_size: u64,
    buf: String,
    last_complaint: Option<Instant>,
}

impl Watchdog {
    fn new(limits: Limits) -> Self {
        Self { limits, page_size: procfs::page_size(), buf: String::new(), last_complaint: None }
    }

    fn run(&mut self, start_pid: &dyn Fn() -> Option<i32>) {
        let mut wait = MIN_INTERVAL;
        loop {
            std::thread::sleep(wait);
            wait = match self.sample() {
                Ok(used) if self.limits.exceeded(used) => self.relieve(used, start_pid()),
                Ok(used) => next_sample_in(&self.limits, used),
                Err(e) => {
                    self.complain(|| tracing::warn!(error = %e, "memory watchdog cannot sample"));
                    MAX_INTERVAL
                }
            };
        }
    }

    /// Memory in use now, in bytes, as the host is charged for it: what `/proc/meminfo` shows
    /// plus [`PROCESS_OVERHEAD`] per process once that can matter (from half the threshold on;
    /// counting the processes costs 0.1-0.35 ms).
    fn sample(&mut self) -> Result<u64, OomError> {
        procfs::read_into(procfs::MEMINFO, &mut self.buf)
            .map_err(|source| OomError::Read { path: procfs::MEMINFO, source })?;
        let used = procfs::memory_used(&self.buf).ok_or(OomError::Parse { path: procfs::MEMINFO })?;
        if used < self.limits.threshold / 2 {
            return Ok(used);
        }
        Ok(charged(used, procfs::count_processes()))
    }

    /// Kills the chosen process and waits until its memory is released. Returns how long to
    /// wait before the next sample: none after a kill (another process may still be growing),
    /// [`MIN_INTERVAL`] after a failure, [`MAX_INTERVAL`] when nothing can be killed.
    fn relieve(&mut self, used: u64, start_pid: Option<i32>) -> Duration {
        let scan_started = Instant::now();
        let (victim, processes) = self.find_victim(start_pid);
        let scan_ms = scan_started.elapsed().as_millis() as u64;
        let Some(victim) = victim else {
            let limits = self.limits;
            self.complain(|| {
                tracing::warn!(
                    reason = "oom",
                    used_mib = used / MIB,
                    limit_mib = limits.limit / MIB,
                    "sandbox memory is used up and no process can be killed"
                );
            });
            return MAX_INTERVAL;
        };
        // Finding the victim takes time (tens of milliseconds with hundreds of processes while
        // others compete for the CPU): the process over the limit may have ended meanwhile,
        // and then nobody else must pay for it.
        let used = match self.sample() {
            Ok(now) if !self.limits.exceeded(now) => return MIN_INTERVAL,
            Ok(now) => now,
            Err(_) => used,
        };
        let program = procfs::program(victim.pid);
        match kill(Pid::from_raw(victim.pid), Signal::SIGKILL) {
            Ok(()) => {}
            Err(nix::Error::ESRCH) => {
                // It ended meanwhile: its memory is being released all the same.
                self.await_release(used, victim.rss);
                return Duration::ZERO;
            }
            Err(source) => {
                let e = OomError::Kill { pid: victim.pid, source };
                self.complain(|| tracing::error!(error = %e, "memory watchdog could not kill"));
                return MIN_INTERVAL;
            }
        }
        tracing::warn!(
            reason = "oom",
            pid = victim.pid,
            command = %program,
            rss_mib = victim.rss / MIB,
            oom_score_adj = victim.oom_score_adj,
            start_command = start_pid == Some(victim.pid),
            processes,
            scan_ms,
            used_mib = used / MIB,
            limit_mib = self.limits.limit / MIB,
            "out of memory: killed the sandbox's largest process"
        );
        self.await_release(used, victim.rss);
        Duration::ZERO
    }

    /// Waits (at most [`RELEASE_WAIT`]) until the victim's memory is released (see [`Release`]).
    fn await_release(&mut self, used_at_kill: u64, victim_rss: u64) {
        let deadline = Instant::now() + RELEASE_WAIT;
        let mut release = Release::new(used_at_kill, victim_rss);
        while Instant::now() < deadline {
            std::thread::sleep(RELEASE_POLL);
            match self.sample() {
                Ok(now) if release.over(&self.limits, now) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// The process to kill, and how many processes were looked at.
    fn find_victim(&self, start_pid: Option<i32>) -> (Option<procfs::ProcessMemory>, usize) {
        let mut procs = procfs::processes(self.page_size);
        victim::sort_largest_first(&mut procs);
        for p in procs.iter_mut().take(ADJ_READ_FOR) {
            p.oom_score_adj = procfs::oom_score_adj(p.pid);
        }
        (victim::choose(&procs, self.limits.limit, start_pid), procs.len())
    }

    /// Runs `log` unless something was logged less than [`COMPLAIN_EVERY`] ago.
    fn complain(&mut self, log: impl FnOnce()) {
        if self.last_complaint.is_none_or(|at| at.elapsed() >= COMPLAIN_EVERY) {
            self.last_complaint = Some(Instant::now());
            log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_a_small_margin_below_the_limit() {
        let l = Limits::for_memory_mb(512).unwrap();
        assert_eq!(l.limit, 512 * MIB);
        assert_eq!(l.threshold, 504 * MIB);
        assert!(!l.exceeded(504 * MIB - 1));
        assert!(l.exceeded(504 * MIB));
        let big = Limits::for_memory_mb(8192).unwrap();
        assert_eq!(big.threshold, 8064 * MIB);
        assert_eq!(Limits::for_memory_mb(0), None);
    }

    #[test]
    fn processes_are_charged_their_host_overhead() {
        assert_eq!(charged(100 * MIB, 0), 100 * MIB);
        assert_eq!(charged(100 * MIB, 256), 212 * MIB);
    }

    #[test]
    fn release_is_over_under_the_threshold_or_when_use_stops_falling() {
        let l = Limits::for_memory_mb(512).unwrap();
        let over = |r: &mut Release, mib: &[u64]| mib.iter().map(|m| r.over(&l, m * MIB)).collect::<Vec<_>>();
        assert!(Release::new(600 * MIB, 500 * MIB).over(&l, 300 * MIB), "under the threshold at once");
        // A 1.5 GiB hog (as gVisor counts it) killed at 720 MiB, freed in two steps with a pause
        // between them: not over at the pause; over, still above, once it stopped falling.
        let mut r = Release::new(720 * MIB, 1500 * MIB);
        assert_eq!(over(&mut r, &[720, 620, 620, 620, 520, 520, 520]), [false; 7]);
        assert!(r.over(&l, 520 * MIB));
        // A small unrelated drop is not the release of a 1 GiB victim.
        let l1 = Limits::for_memory_mb(1024).unwrap();
        let mut r = Release::new(1089 * MIB, 1088 * MIB);
        let seen: Vec<bool> = [1085, 1085, 1085, 1085, 1085].iter().map(|m| r.over(&l1, m * MIB)).collect();
        assert_eq!(seen, [false; 5]);
        assert!(r.over(&l1, 100 * MIB));
        // Another hog grows while the victim's memory is released: its turn once that is done.
        let mut r = Release::new(700 * MIB, 813 * MIB);
        assert_eq!(over(&mut r, &[710, 520, 530, 540, 550]), [false, false, false, false, true]);
        // A victim that held less than it seemed: given up after 30 samples.
        let mut r = Release::new(600 * MIB, 400 * MIB);
        assert_eq!(over(&mut r, &[590; 29]), [false; 29]);
        assert!(r.over(&l, 590 * MIB));
    }

    #[test]
    fn samples_sooner_the_closer_the_threshold() {
        let l = Limits::for_memory_mb(512).unwrap();
        // Idle (24 MiB used): 480 MiB of room at 4 GiB/s.
        assert_eq!(next_sample_in(&l, 24 * MIB), Duration::from_millis(117));
        assert_eq!(next_sample_in(&l, 300 * MIB), MIN_INTERVAL);
        assert_eq!(next_sample_in(&l, 900 * MIB), MIN_INTERVAL, "over the threshold");
        let big = Limits::for_memory_mb(8192).unwrap();
        assert_eq!(next_sample_in(&big, 100 * MIB), Duration::from_millis(1000));
        assert_eq!(next_sample_in(&big, 7000 * MIB), Duration::from_millis(259));
        assert_eq!(next_sample_in(&Limits::for_memory_mb(32768).unwrap(), 0), MAX_INTERVAL);
    }
}
