//! Telling an out-of-memory kill from any other SIGKILL.
//!
//! Inside a container (or any memory-limited cgroup) the kernel kills the biggest process of the
//! cgroup when it exceeds its limit — the job, not the container. The cgroup counts those kills:
//! `memory.events` (`oom_kill N`) in cgroup v2, `memory.oom_control` (`oom_kill N`) in v1. The
//! agent reads the counter when an attempt starts and when it ends; a job that died of SIGKILL,
//! not stopped by the agent, while the counter went up, was killed for memory.

use std::path::{Path, PathBuf};

/// The OOM-kill counter of this process's memory cgroup, if one can be read.
#[derive(Debug, Clone)]
pub struct OomCounter {
    file: PathBuf,
}

impl OomCounter {
    /// Finds the counter for this process (`/proc/self/cgroup`), else `None`.
    pub fn detect() -> Option<OomCounter> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        candidates(&cgroup, Path::new("/sys/fs/cgroup"))
            .into_iter()
            .find(|f| read_oom_kills(f).is_some())
            .map(|file| OomCounter { file })
    }

    /// A counter read from `file` (tests).
    pub fn at(file: PathBuf) -> OomCounter {
        OomCounter { file }
    }

    /// Kills counted so far.
    pub fn read(&self) -> Option<u64> {
        read_oom_kills(&self.file)
    }
}

/// Files that may hold the counter, most specific first: the process's own cgroup path under
/// the mount, then the mount's root (a container sees its own cgroup there).
pub fn candidates(proc_self_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            out.push(root.join(rel).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            out.push(root.join("memory").join(rel).join("memory.oom_control"));
        }
    }
    out.push(root.join("memory.events"));
    out.push(root.join("memory").join("memory.oom_control"));
    out
}

/// The `oom_kill N` line of a `memory.events` or `memory.oom_control` file.
pub fn read_oom_kills(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_oom_kills(&text)
}

/// The `oom_kill N` value of such a file's text.
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "oom_kill").then(|| it.next()?.parse().ok())?
    })
}

/// Whether an attempt that ended with `signal` or `exit_code` (not stopped by the agent) died of
/// an OOM kill, given the counter when it started and now. A shell whose child was killed exits
/// with 128 + 9 = 137, so that counts as a SIGKILL too.
pub fn killed_for_memory(
    signal: Option<i32>,
    exit_code: Option<i32>,
    stopped: bool,
    before: Option<u64>,
    now: Option<u64>,
) -> bool {
    let sigkill = signal == Some(9) || exit_code == Some(137);
    !stopped && sigkill && matches!((before, now), (Some(b), Some(n)) if n > b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cgroup_versions_are_parsed() {
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"),
            Some(5)
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn candidate_files_follow_proc_self_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = candidates("0::/docker/abc\n", root);
        assert_eq!(v2[0], root.join("docker/abc/memory.events"));
        let v1 = candidates("4:memory:/docker/abc\n0::/docker/abc\n", root);
        assert_eq!(v1[0], root.join("memory/docker/abc/memory.oom_control"));
        assert!(v1.contains(&root.join("memory/memory.oom_control")));
    }

    #[test]
    fn only_an_unrequested_sigkill_with_a_new_oom_kill_counts() {
        assert!(killed_for_memory(Some(9), None, false, Some(1), Some(2)));
        assert!(killed_for_memory(None, Some(137), false, Some(1), Some(2)));
        assert!(!killed_for_memory(None, Some(1), false, Some(1), Some(2)));
        assert!(!killed_for_memory(Some(9), None, false, Some(2), Some(2)));
        assert!(!killed_for_memory(Some(9), None, true, Some(1), Some(2)));
        assert!(!killed_for_memory(Some(15), None, false, Some(1), Some(2)));
        assert!(!killed_for_memory(Some(9), None, false, None, Some(2)));
    }

    #[test]
    fn the_counter_reads_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "oom 1\noom_kill 1\n").expect("write");
        assert_eq!(OomCounter::at(f).read(), Some(1));
    }
}
