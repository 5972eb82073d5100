//! Finding and signalling the processes of one attempt through `/proc`.
//!
//! An attempt's tree is: its root while unreaped, the members of the root's
//! process group while the root is unreaped (the group id is pinned then),
//! every process carrying `HODEI_JOB_RUN_TOKEN=<token>` in its initial
//! environment, every process seen in an earlier scan (identified by pid and
//! start time, so re-parented descendants stay known after the root died),
//! every orphan re-parented to the agent (or a descendant of one) that holds
//! one of the attempt's output pipes open, and all descendants of those
//! (ppid links).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::RUN_TOKEN_ENV;
use super::reaper;

/// Maximum number of `SIGKILL` scan rounds of [`Tracker::kill_all`].
const KILL_ROUNDS: u32 = 30;
/// Longest pause between two `SIGKILL` rounds.
const KILL_PAUSE_MAX: Duration = Duration::from_millis(100);

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) pid: i32,
    pub(super) ppid: i32,
    pub(super) pgrp: i32,
    pub(super) session: i32,
    pub(super) state: u8,
    pub(super) start_time: u64,
}

impl ProcStat {
    /// Zombies (and dying tasks) are dead for our purposes: their parent reaps them.
    pub(super) fn is_alive(&self) -> bool {
        !matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses `/proc/<pid>/stat`; `None` if the process is gone.
pub(super) fn read_stat(pid: i32) -> Option<ProcStat> {
    let raw = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    Some(ProcStat {
        pid,
        state: *fields.first()?.as_bytes().first()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Pids of all processes currently listed in `/proc`.
pub(super) fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether the initial environment of `pid` contains exactly the entry `needle`
/// (`NAME=value`).
pub(super) fn environ_has(pid: i32, needle: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|&b| b == 0).any(|entry| entry == needle))
        .unwrap_or(false)
}

/// The `NAME=value` environment entry carrying `token`.
pub(super) fn token_entry(token: &str) -> Vec<u8> {
    format!("{RUN_TOKEN_ENV}={token}").into_bytes()
}

/// Children of this process (all its threads), or `None` if that cannot be
/// read reliably.
fn own_children() -> Option<Vec<i32>> {
    // Orphans re-parented to a subreaper go to its thread-group leader (the kernel's
    // `find_alive_thread` starts there), so the leader's list holds every leftover; roots
    // spawned from other threads may be missing from it, which only makes the check stricter.
    let list =
        fs::read_to_string(format!("/proc/self/task/{}/children", std::process::id())).ok()?;
    list.split_ascii_whitespace()
        .map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` has an open fd whose link text is one of `links`.
fn holds_any(pid: i32, links: &[OsString]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| links.iter().any(|l| l == target.as_os_str()))
}

/// Tracks and signals the process tree of one attempt.
pub(super) struct Tracker {
    root: i32,
    needle: Vec<u8>,
    /// `pipe:[<inode>]` of the attempt's output pipes.
    pipe_links: Vec<OsString>,
    /// Processes identified in earlier scans: pid -> start time.
    known: HashMap<i32, u64>,
    self_pid: i32,
}

impl Tracker {
    /// A tracker for the tree of `root` whose processes carry `token` and
    /// write to the pipes with inodes `pipe_inodes`.
    pub(super) fn new(root: u32, token: &str, pipe_inodes: &[u64]) -> Self {
        Self {
            root: root as i32,
            needle: token_entry(token),
            pipe_links: pipe_inodes
                .iter()
                .map(|ino| format!("pipe:[{ino}]").into())
                .collect(),
            known: HashMap::new(),
            self_pid: std::process::id() as i32,
        }
    }

    /// Cheap check after the root exited by itself: `true` when nothing of
    /// the attempt can be alive, i.e. the root's process group is empty and
    /// this process has no children other than unreaped job roots (any
    /// surviving descendant that left the group would have an ancestor chain
    /// ending in such an unexpected child of ours, since we are a subreaper).
    pub(super) fn quick_clean(&self) -> bool {
        if killpg(Pid::from_raw(self.root), None) != Err(Errno::ESRCH) {
            return false;
        }
        // Read our children under the table lock: a concurrent spawn holds it until its child
        // is registered, so a sibling attempt's brand-new root is never mistaken for a leftover.
        reaper::with_table(|t| own_children().is_some_and(|c| c.iter().all(|p| t.is_root(*p))))
    }

    /// Scans `/proc` and returns the live (non-zombie) processes of the tree.
    fn scan(&mut self, root_pinned: bool) -> Vec<i32> {
        let stats: Vec<ProcStat> = all_pids()
            .into_iter()
            .filter(|&pid| pid != self.self_pid && pid > 1)
            .filter_map(read_stat)
            .collect();
        let mut members: HashSet<i32> = HashSet::new();
        for st in &stats {
            let member = (root_pinned && (st.pid == self.root || st.pgrp == self.root))
                || self.known.get(&st.pid) == Some(&st.start_time)
                || (st.is_alive() && environ_has(st.pid, &self.needle));
            if member {
                members.insert(st.pid);
            }
        }
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for st in &stats {
            children.entry(st.ppid).or_default().push(st.pid);
        }
        // Orphans re-parented to us (children that are not live job roots)
        // and their descendants: members if they hold our output pipes.
        if !self.pipe_links.is_empty() {
            let ours = children.get(&self.self_pid).cloned().unwrap_or_default();
            let mut stack: Vec<i32> =
                reaper::with_table(|t| ours.into_iter().filter(|p| !t.is_root(*p)).collect());
            while let Some(pid) = stack.pop() {
                if !members.contains(&pid) && holds_any(pid, &self.pipe_links) {
                    members.insert(pid);
                }
                stack.extend(children.get(&pid).into_iter().flatten());
            }
        }
        // Close over ppid links: descendants of members are members.
        let mut queue: Vec<i32> = members.iter().copied().collect();
        while let Some(pid) = queue.pop() {
            for &child in children.get(&pid).into_iter().flatten() {
                if child != self.self_pid && members.insert(child) {
                    queue.push(child);
                }
            }
        }
        let mut alive = Vec::new();
        for st in &stats {
            if members.contains(&st.pid) {
                self.known.insert(st.pid, st.start_time);
                if st.is_alive() {
                    alive.push(st.pid);
                }
            }
        }
        alive
    }

    /// Sends `signals` (in order) to the root's process group while it is
    /// pinned and to every live process of the tree. Returns how many live
    /// processes the scan found.
    pub(super) fn signal(&mut self, signals: &[Signal]) -> usize {
        let root_pinned = reaper::with_table(|t| t.is_root(self.root));
        let alive = self.scan(root_pinned);
        let root = self.root;
        // Under the table lock nothing we could reap disappears meanwhile.
        reaper::with_table(|table| {
            for &sig in signals {
                if table.is_root(root) {
                    let _ = killpg(Pid::from_raw(root), sig);
                }
                for &pid in &alive {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        });
        alive.len()
    }

    /// `SIGKILL`s the tree and rescans until nothing of it is alive (bounded
    /// number of rounds). Returns whether the tree is gone.
    pub(super) async fn kill_all(&mut self) -> bool {
        let mut pause = Duration::from_millis(1);
        for _ in 0..KILL_ROUNDS {
            if self.signal(&[Signal::SIGKILL]) == 0 {
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(KILL_PAUSE_MAX);
        }
        let left = self.scan(reaper::with_table(|t| t.is_root(self.root)));
        if left.is_empty() {
            return true;
        }
        tracing::warn!(root = self.root, ?left, "processes of job survived sigkill");
        false
    }
}
