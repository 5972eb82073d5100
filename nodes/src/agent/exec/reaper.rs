//! The process-wide reaper thread and the table of job root pids.
//!
//! One thread waits for every child of the process. It learns the pid of a
//! zombie with `waitid(P_ALL, WEXITED | WNOWAIT)` (which leaves it waitable),
//! then, holding the table lock:
//! * a registered job root: `SIGKILL` its process group (the zombie still
//!   pins the group id, so this cannot hit a recycled group), reap it with
//!   `waitpid` and deliver the status to the attempt;
//! * any other pid: an orphan re-parented to us (we are a child subreaper),
//!   reaped and forgotten.
//!
//! [`spawn`] holds the same lock across `Command::spawn` and the insertion
//! of the new pid. Hence (a) the reaper never looks up a root pid before it
//! is registered, and (b) the reaper never reaps while a spawn is in
//! progress, so when an exec fails, std's own `waitpid` on that child (it
//! asserts that it succeeds) always finds it; if the reaper saw that zombie
//! first, it blocks on the lock and its later `waitpid` gets `ECHILD`, which
//! is ignored.
//!
//! Without children `waitid` fails with `ECHILD`: the thread then sleeps on
//! a condvar until a spawn bumps the generation counter, instead of spinning.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Table of job roots, keyed by pid.
pub(super) struct Table {
    roots: BTreeMap<i32, oneshot::Sender<WaitStatus>>,
    /// Bumped by every spawn; the reaper sleeps until it changes.
    generation: u64,
}

impl Table {
    /// Whether `pid` is a job root that has not been reaped yet (alive or a
    /// zombie): while this holds, neither the pid nor its process group id
    /// can be recycled.
    pub(super) fn is_root(&self, pid: i32) -> bool {
        self.roots.contains_key(&pid)
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    roots: BTreeMap::new(),
    generation: 0,
});
static WAKE: Condvar = Condvar::new();
static THREAD: OnceLock<Result<(), String>> = OnceLock::new();

fn lock() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the reaper thread once per process.
pub(super) fn ensure_started() -> Result<(), String> {
    THREAD
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("hodei-reaper".into())
                .spawn(reaper_loop)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Spawns `cmd` and registers the new process as a job root, atomically with
/// respect to the reaper. The receiver gets the root's wait status once it
/// has been reaped (after its process group was `SIGKILL`ed).
pub(super) fn spawn(cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<WaitStatus>)> {
    let (tx, rx) = oneshot::channel();
    let mut table = lock();
    let spawned = cmd.spawn();
    table.generation = table.generation.wrapping_add(1);
    if let Ok(child) = &spawned {
        // A pid fits in i32 on Linux.
        table.roots.insert(child.id() as i32, tx);
    }
    drop(table);
    WAKE.notify_one();
    spawned.map(|child| (child, rx))
}

/// Runs `f` with the table locked: the reaper cannot reap anything meanwhile,
/// so none of our children (job roots or re-parented orphans) can vanish and
/// have its pid recycled while `f` signals them.
pub(super) fn with_table<R>(f: impl FnOnce(&Table) -> R) -> R {
    f(&lock())
}

fn reaper_loop() {
    loop {
        let generation = lock().generation;
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reap(pid);
                }
            }
            Err(Errno::ECHILD) => {
                // No children: sleep until the next spawn.
                let mut table = lock();
                while table.generation == generation {
                    table = WAKE.wait(table).unwrap_or_else(PoisonError::into_inner);
                }
            }
            Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::warn!(%err, "waitid failed in reaper");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn reap(pid: Pid) {
    let mut table = lock();
    if !table.is_root(pid.as_raw()) {
        // An orphan re-parented to us, or the child of a failed exec that std
        // already reaped (ECHILD): either way nothing to deliver.
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        return;
    }
    // Make sure the registered pid is really a zombie now (and not a recycled
    // pid that got registered again after someone else reaped the one we saw).
    let zombie = matches!(
        waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Ok(status) if status.pid() == Some(pid)
    );
    if !zombie {
        return;
    }
    // A job's lifetime bounds its processes: kill what is left in its group
    // while the zombie root still pins the group id.
    let _ = killpg(pid, Signal::SIGKILL);
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(status) if status.pid() == Some(pid) => {
            let tx = table.roots.remove(&pid.as_raw());
            drop(table);
            if let Some(tx) = tx {
                // The attempt task may be gone (runtime shut down): fine.
                let _ = tx.send(status);
            }
        }
        other => {
            drop(table);
            tracing::warn!(
                pid = pid.as_raw(),
                ?other,
                "unexpected result reaping job root"
            );
            // Never spin on a zombie that cannot be reaped.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
