//! Which process the memory watchdog kills: the one Linux's OOM killer would pick in a VM of
//! the sandbox's size (`oom_badness`: resident memory plus `oom_score_adj` thousandths of the
//! memory limit, `-1000` never), never the agent (PID 1), and the template's start command (the
//! sandbox's main workload, e.g. the code-interpreter server) only when it is clearly the hog.

use super::procfs::ProcessMemory;

/// The agent's own pid inside the sandbox; never a victim.
pub const AGENT_PID: i32 = 1;

/// `oom_score_adj` that exempts a process, as in Linux.
const OOM_SCORE_ADJ_MIN: i32 = -1000;

/// How much the start command's score is lowered, in thousandths of the memory limit (as if
/// its `oom_score_adj` were 250 lower): it is chosen over another process only when it holds a
/// quarter of the sandbox's memory more, so a user's command that tips the sandbox over dies
/// instead of the service the template exists for, while a start command that is itself
/// the hog is still killed.
pub const START_BIAS_PER_MILLE: i64 = 250;

/// Orders `procs` largest resident set first, so that the caller can read `oom_score_adj` for
/// the few that can matter (see `super::ADJ_READ_FOR`).
pub fn sort_largest_first(procs: &mut [ProcessMemory]) {
    procs.sort_by(|a, b| b.rss.cmp(&a.rss).then(b.pid.cmp(&a.pid)));
}

/// The score of `p` (higher dies first), or `None` when it must not be killed. Like Linux, a
/// killable process scores at least 1.
pub fn badness(p: &ProcessMemory, limit: u64, is_start: bool) -> Option<i64> {
    if p.pid == AGENT_PID || p.pid <= 0 || p.oom_score_adj <= OOM_SCORE_ADJ_MIN || p.rss == 0 {
        return None;
    }
    let per_mille = i64::try_from(limit / 1000).unwrap_or(i64::MAX);
    let mut adj = i64::from(p.oom_score_adj);
    if is_start {
        adj -= START_BIAS_PER_MILLE;
    }
    let rss = i64::try_from(p.rss).unwrap_or(i64::MAX);
    Some(rss.saturating_add(adj.saturating_mul(per_mille)).max(1))
}

/// The process to kill among `procs` for a sandbox with `limit` bytes of memory, whose start
/// command is `start_pid` (if still running). Ties go to the larger resident set, then to a
/// process that is not the start command, then to the newest (highest pid).
pub fn choose(procs: &[ProcessMemory], limit: u64, start_pid: Option<i32>) -> Option<ProcessMemory> {
    procs
        .iter()
        .filter_map(|p| {
            let is_start = start_pid == Some(p.pid);
            badness(p, limit, is_start).map(|score| (score, p.rss, !is_start, p.pid, *p))
        })
        .max_by_key(|&(score, rss, not_start, pid, _)| (score, rss, not_start, pid))
        .map(|(.., p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const LIMIT: u64 = 512 * MIB;

    fn p(pid: i32, rss_mib: u64, adj: i32) -> ProcessMemory {
        ProcessMemory { pid, rss: rss_mib * MIB, oom_score_adj: adj }
    }

    #[test]
    fn the_largest_dies_never_the_agent() {
        let procs = [p(1, 900, 0), p(17, 5, 0), p(40, 300, 0), p(41, 120, 0)];
        assert_eq!(choose(&procs, LIMIT, None).map(|v| v.pid), Some(40));
        assert_eq!(choose(&[p(1, 900, 0)], LIMIT, None), None, "the agent alone: nobody");
        assert_eq!(choose(&[], LIMIT, None), None);
    }

    #[test]
    fn oom_score_adj_counts_in_thousandths_of_the_limit() {
        // 100 MiB with +500 (256 MiB more) beats 300 MiB; -1000 is never chosen.
        let procs = [p(10, 300, 0), p(11, 100, 500), p(12, 400, -1000)];
        assert_eq!(choose(&procs, LIMIT, None).map(|v| v.pid), Some(11));
        assert_eq!(badness(&p(12, 400, -1000), LIMIT, false), None);
        assert_eq!(badness(&p(13, 1, -999), LIMIT, false), Some(1), "killable scores at least 1");
        assert_eq!(badness(&p(14, 0, 0), LIMIT, false), None, "zombies hold nothing");
    }

    #[test]
    fn the_start_command_only_when_clearly_the_hog() {
        let limit = 1024 * MIB;
        // The code-interpreter server (start command, 60 MiB) and its kernel running the hog.
        let procs = [p(20, 60, 0), p(25, 700, 0), p(30, 3, 0)];
        assert_eq!(choose(&procs, limit, Some(20)).map(|v| v.pid), Some(25));
        // A 300 MiB service and a 200 MiB command that tipped the sandbox over: the command.
        let procs = [p(20, 300, 0), p(25, 200, 0)];
        assert_eq!(choose(&procs, limit, Some(20)).map(|v| v.pid), Some(25));
        // The service itself grew to 700 MiB: it is the hog.
        let procs = [p(20, 700, 0), p(25, 200, 0)];
        assert_eq!(choose(&procs, limit, Some(20)).map(|v| v.pid), Some(20));
        // Alone, it is still killable.
        assert_eq!(choose(&[p(20, 50, 0)], limit, Some(20)).map(|v| v.pid), Some(20));
    }

    #[test]
    fn sorts_largest_first() {
        let mut procs = [p(1, 20, 0), p(2, 500, 0), p(3, 20, 0), p(4, 1, 0)];
        sort_largest_first(&mut procs);
        assert_eq!(procs.map(|v| v.pid), [2, 3, 1, 4]);
    }

    #[test]
    fn ties_go_to_the_newest_non_start_process() {
        let procs = [p(50, 100, 0), p(60, 100, 0), p(55, 100, 0)];
        assert_eq!(choose(&procs, LIMIT, None).map(|v| v.pid), Some(60));
        // Both at the floor score of 1: the larger resident set first.
        let procs = [p(70, 10, -900), p(71, 20, -900)];
        assert_eq!(choose(&procs, LIMIT, None).map(|v| v.pid), Some(71));
    }
}
