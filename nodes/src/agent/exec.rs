//! Job executor: runs Hodei jobs as real child processes of the agent.
//!
//! The agent (`hodei agent`) hands every attempt of a job to an [`Executor`]
//! with [`Executor::launch`]; the executor reports what happens through
//! [`ExecEvent`]s on the caller's bounded channel: one `Started`, any number
//! of `Output` chunks, and always exactly one `Exited` as the last event of
//! the attempt (also when the program could not be spawned at all).
//!
//! # Process-tree isolation
//!
//! * Every job runs in its own process group (`process_group(0)`), with a
//!   cleared environment (only the launch env, `PATH` and
//!   [`RUN_TOKEN_ENV`]), stdin on `/dev/null` and stdout/stderr on pipes.
//! * The agent process becomes a *child subreaper*, so double-forked or
//!   `setsid` descendants of a job are re-parented to it rather than to init.
//! * One process-wide **reaper thread** waits for every child of the process
//!   (`waitid(P_ALL, WEXITED | WNOWAIT)` to learn a zombie's pid without
//!   reaping it, then a lookup in the global table of job root pids, then
//!   `waitpid`). Before reaping a job root it `SIGKILL`s the root's process
//!   group while the zombie still pins that group id, so a job's lifetime
//!   bounds its processes. Unknown pids (orphans) are simply reaped.
//! * The table lock is held across `Command::spawn` and the insertion of the
//!   new pid, so the reaper can never see a root pid that is not registered
//!   yet, and it never reaps the child of an exec that failed while std is
//!   still about to `waitpid` it (std asserts that wait succeeds): the reaper
//!   only reaps while holding the same lock, i.e. never during a spawn.
//! * Stopping an attempt ([`Executor::stop`]) sends `SIGTERM` (then
//!   `SIGCONT`) to the process group and to every process of the attempt's
//!   tree, and after the grace period `SIGKILL`s whatever remains, rescanning
//!   until nothing is left (bounded). The tree is found in `/proc`:
//!   descendants of the root (ppid links, recorded while the root is alive),
//!   members of the root's process group while the root is unreaped, and any
//!   process whose `/proc/<pid>/environ` carries
//!   `HODEI_JOB_RUN_TOKEN=<run_token>` (the Jenkins ProcessTreeKiller
//!   technique), any orphan re-parented to the agent (or descendant of one)
//!   that holds the attempt's stdout/stderr pipe open, plus the descendants
//!   of all those.
//! * When the root exits by itself, the common case is kept cheap: if the
//!   process group is empty (`killpg(pgid, 0)` gives `ESRCH`) and the agent
//!   has no children other than live job roots
//!   (`/proc/self/task/*/children`), nothing was left behind and no `/proc`
//!   scan is done; otherwise the leftovers are found as above and
//!   `SIGKILL`ed before `Exited` is sent.
//!
//! # Cost
//!
//! Measured on the 2-core development machine with the `#[ignore]`d
//! `bench_true_overhead` test (`cargo test --release -- --ignored
//! --nocapture bench_true_overhead`, 1000 sequential runs): launch →
//! `Exited` of a `/bin/true` job, including the scratch directory,
//! fork/exec, the run of the process, reaping, the leftover check and the
//! pipe drain, takes 0.91–0.98 ms median (p90 ≈ 1.1–1.2 ms; debug build
//! ≈ 1.2 ms). A bare `std::process::Command::new("/bin/true").output()` takes
//! ≈ 0.7 ms on the same machine, so the executor adds ≈ 0.2–0.25 ms.
//!
//! # Caveats
//!
//! * The reaper reaps **every** child of the process. Nothing else in the
//!   agent may spawn child processes and wait for them itself (no
//!   `tokio::process`, no `std::process::Command::status/output`): the
//!   reaper would take their exit status first.
//! * The `/proc` scan cannot attribute a process that scrubbed
//!   `HODEI_JOB_RUN_TOKEN` from its initial environment (e.g. `env -i`),
//!   left the job's process group (`setsid`), closed or redirected the
//!   job's output pipes and lost its ppid link to the root before any scan
//!   saw it (i.e. it was re-parented to the agent): it is then an
//!   unattributed child of the agent and is not killed. The environment
//!   check reads the *initial* environment block, so a process that
//!   overwrote it in memory hides too. A process that cannot be found keeps
//!   running, and if it holds the output pipe through a path the scan does
//!   not see, `Exited` is sent after [`DRAIN_TIMEOUT`] anyway.
//! * Signals to individual pids found by a scan can in theory hit a reused
//!   pid if the process died and its pid was recycled between the scan and
//!   the `kill` (microseconds); signals to the root's process group and to
//!   the agent's own children are race-free (sent under the reaper lock while
//!   the pid cannot be reaped).
#![forbid(unsafe_code)]

mod attempt;
mod proctree;
mod reaper;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use attempt::AttemptCtl;

/// Default per-attempt cap on stdout+stderr bytes forwarded as output (10 MiB).
pub const DEFAULT_LOG_CAP_BYTES: u64 = 10 * 1024 * 1024;
/// Default maximum size of one [`ExecEvent::Output`] chunk (64 KiB).
pub const DEFAULT_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// Default `PATH` given to jobs whose environment does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Environment variable carrying the per-attempt run token (process-tree cookie).
pub const RUN_TOKEN_ENV: &str = "HODEI_JOB_RUN_TOKEN";
/// How long `Exited` waits for the output pipes to reach EOF after the root
/// exited and its leftovers were killed (a leaked fd can never hang an attempt).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Executor configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    /// Directory under which per-attempt scratch directories
    /// `<work_dir>/<job_id>-<attempt>` are created (created with mode 0711 if missing).
    pub work_dir: PathBuf,
    /// Per-attempt cap on stdout+stderr bytes forwarded as output; the rest is
    /// drained and discarded.
    pub log_cap_bytes: u64,
    /// Maximum number of bytes in one [`ExecEvent::Output`]; must be > 0.
    pub chunk_max_bytes: usize,
    /// Optional identity to run jobs as (requires the agent to be privileged).
    pub run_as: Option<RunAs>,
    /// `PATH` given to jobs whose environment does not set `PATH`.
    pub default_path: String,
}

impl ExecConfig {
    /// A configuration with the given work dir and the defaults for everything else.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            log_cap_bytes: DEFAULT_LOG_CAP_BYTES,
            chunk_max_bytes: DEFAULT_CHUNK_MAX_BYTES,
            run_as: None,
            default_path: DEFAULT_PATH.to_owned(),
        }
    }
}

/// A numeric identity (uid, gid) that jobs run as.
///
/// Supplementary groups are dropped when the agent runs as root (std's
/// behaviour when a uid is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunAs {
    /// User id of the job processes.
    pub uid: u32,
    /// Group id of the job processes.
    pub gid: u32,
}

impl RunAs {
    /// Resolves a user (name or numeric uid) and an optional group (name or
    /// numeric gid) via the system user database. Without a group, the
    /// user's primary group is used (which requires the user to exist in the
    /// database).
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, ExecError> {
        use nix::unistd::{Gid, Group, Uid, User};
        let lookup = |e: nix::Error| ExecError::Lookup(e.to_string());
        let (uid, primary_gid) = match user.parse::<u32>() {
            Ok(n) => (
                n,
                User::from_uid(Uid::from_raw(n))
                    .map_err(lookup)?
                    .map(|u| u.gid.as_raw()),
            ),
            Err(_) => {
                let u = User::from_name(user)
                    .map_err(lookup)?
                    .ok_or_else(|| ExecError::UnknownUser(user.to_owned()))?;
                (u.uid.as_raw(), Some(u.gid.as_raw()))
            }
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => Group::from_gid(Gid::from_raw(n))
                    .map_err(lookup)?
                    .map_or(n, |g| g.gid.as_raw()),
                Err(_) => Group::from_name(g)
                    .map_err(lookup)?
                    .ok_or_else(|| ExecError::UnknownGroup(g.to_owned()))?
                    .gid
                    .as_raw(),
            },
            None => primary_gid.ok_or_else(|| ExecError::UnknownUser(user.to_owned()))?,
        };
        Ok(Self { uid, gid })
    }
}

/// Identity of one attempt of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptKey {
    /// Job id.
    pub job_id: u64,
    /// Attempt number of that job.
    pub attempt: u32,
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} attempt {}", self.job_id, self.attempt)
    }
}

/// Everything needed to start one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The attempt; must not be running already in this executor.
    pub key: AttemptKey,
    /// Program and arguments (a shell line is passed as `["/bin/sh", "-c", line]`).
    /// A program without `/` is looked up in the job's `PATH`. Must not be empty.
    pub argv: Vec<String>,
    /// The complete job environment; the agent's own environment is never
    /// inherited. `PATH` defaults to [`ExecConfig::default_path`] and
    /// [`RUN_TOKEN_ENV`] is always set to `run_token`.
    pub env: BTreeMap<String, String>,
    /// Working directory, which must exist. `None` creates the scratch
    /// directory `<work_dir>/<job_id>-<attempt>` (mode 0700, owned by
    /// `run_as`), removed in the background after the attempt.
    pub working_dir: Option<PathBuf>,
    /// Unique, non-empty token of this attempt, exported as
    /// [`RUN_TOKEN_ENV`]; it identifies the attempt's processes in `/proc`.
    pub run_token: String,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error (also carries the log-truncation marker).
    Stderr,
}

/// Why the agent stopped an attempt (supplied by the caller of [`Executor::stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopCause {
    /// The job exceeded its time limit.
    Timeout,
    /// The job was cancelled by a user or the server.
    Cancel,
    /// The agent is shutting down.
    Shutdown,
    /// The agent lost the lease on the job.
    Lease,
}

impl StopCause {
    /// Stable lower-case name of the cause.
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Timeout => "timeout",
            StopCause::Cancel => "cancel",
            StopCause::Shutdown => "shutdown",
            StopCause::Lease => "lease",
        }
    }
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to an attempt, sent on the caller's events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The root process was spawned.
    Started {
        /// The attempt.
        key: AttemptKey,
        /// Pid of the root process (also its process group id).
        pid: u32,
    },
    /// A chunk of output: never empty, at most `chunk_max_bytes` long.
    Output {
        /// The attempt.
        key: AttemptKey,
        /// The stream the bytes were read from.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The attempt is over: always its last event, sent after all its output.
    Exited {
        /// The attempt.
        key: AttemptKey,
        /// How it ended.
        outcome: ExitOutcome,
    },
}

impl ExecEvent {
    /// The attempt this event belongs to.
    pub fn key(&self) -> AttemptKey {
        match self {
            ExecEvent::Started { key, .. }
            | ExecEvent::Output { key, .. }
            | ExecEvent::Exited { key, .. } => *key,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitOutcome {
    /// Exit code of the root process when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number that killed the root process (e.g. 9 or 15).
    pub signal: Option<i32>,
    /// Set when the agent stopped the attempt ([`Executor::stop`]), whatever
    /// the root died of.
    pub stopped_by: Option<StopCause>,
    /// Set when the job could not be started (no such program, not
    /// executable, bad working directory, ...): the reason, naming the
    /// program or directory. `exit_code` and `signal` are then `None`.
    pub spawn_error: Option<String>,
    /// Bytes of job output forwarded in `Output` events (excluding the
    /// truncation marker); at most `log_cap_bytes`.
    pub log_bytes: u64,
    /// Whether output beyond `log_cap_bytes` was discarded.
    pub log_truncated: bool,
    /// Wall time from the spawn to the end of the attempt (root exited,
    /// leftovers killed, output drained), in milliseconds.
    pub duration_ms: u64,
}

impl ExitOutcome {
    /// Whether the job ran and exited with code 0 without being stopped.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.stopped_by.is_none() && self.spawn_error.is_none()
    }
}

/// Errors of the executor API. Failures of a job itself are not errors: they
/// are reported in [`ExitOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// [`Executor::new`] was called outside a tokio runtime.
    #[error("the executor must be created inside a tokio runtime")]
    NoRuntime,
    /// The configuration is unusable.
    #[error("invalid executor config: {0}")]
    InvalidConfig(String),
    /// The work directory could not be created.
    #[error("cannot create work dir {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(nix::Error),
    /// The reaper thread could not be started.
    #[error("cannot start the reaper thread: {0}")]
    ReaperThread(String),
    /// An attempt with this key is already running in this executor.
    #[error("{0} is already running")]
    Duplicate(AttemptKey),
    /// The launch has an empty `argv`.
    #[error("empty argv")]
    EmptyArgv,
    /// The launch is malformed otherwise (e.g. empty run token).
    #[error("invalid launch: {0}")]
    InvalidLaunch(String),
    /// [`RunAs::resolve`]: no such user.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// [`RunAs::resolve`]: no such group.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// [`RunAs::resolve`]: the user database lookup failed.
    #[error("user database lookup failed: {0}")]
    Lookup(String),
}

/// Runs job attempts as child processes. Cheap to clone (shared state).
///
/// All executors of a process share one reaper thread and one table of job
/// root pids; see the module documentation.
///
/// Attempts are supervised by tasks on the runtime the executor was created
/// in. If that runtime shuts down while attempts run, their supervision ends
/// and their processes are left running: call [`Executor::stop_all`] first.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("work_dir", &self.inner.cfg.work_dir)
            .field("running", &self.running().len())
            .finish()
    }
}

/// State shared by an executor's clones and its attempt tasks.
struct Inner {
    cfg: ExecConfig,
    events: mpsc::Sender<ExecEvent>,
    rt: tokio::runtime::Handle,
    attempts: Mutex<HashMap<AttemptKey, Arc<AttemptCtl>>>,
    /// Number of attempt tasks that have not finished yet (Exited sent and
    /// scratch dir released).
    live: watch::Sender<usize>,
    /// Empty scratch directories ready for the next attempt.
    scratch: Mutex<ScratchPool>,
}

/// Scratch directories are reused: creating and removing a directory per attempt costs more
/// than a short job (two journaled metadata operations), so an attempt gets an empty directory
/// from this pool and gives it back emptied — or removed, if the job left anything in it or
/// changed its mode.
#[derive(Debug, Default)]
struct ScratchPool {
    free: Vec<PathBuf>,
    next: u64,
}

/// Most empty scratch directories kept for reuse.
pub const SCRATCH_POOL_MAX: usize = 64;

impl Inner {
    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptKey, Arc<AttemptCtl>>> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scratch(&self) -> std::sync::MutexGuard<'_, ScratchPool> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty scratch directory (mode 0700, owned by `run_as`).
    fn acquire_scratch(&self) -> std::io::Result<PathBuf> {
        let n = {
            let mut pool = self.scratch();
            if let Some(dir) = pool.free.pop() {
                return Ok(dir);
            }
            pool.next += 1;
            pool.next
        };
        let dir = self.cfg.work_dir.join(format!("s{n}"));
        attempt::create_scratch(&dir, self.cfg.run_as)?;
        Ok(dir)
    }

    /// Gives a scratch directory back: reused if the job left it empty and unchanged, removed
    /// otherwise (on a blocking thread when it has contents).
    /// Puts a pristine (empty, ours, 0700) scratch directory back in the pool; returns the
    /// directory when it must be removed instead. Synchronous and cheap, so it runs before the
    /// attempt's exit is reported: the next job on this slot always finds it in the pool.
    fn recycle_scratch(&self, dir: PathBuf) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let want_uid = self
            .cfg
            .run_as
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |r| r.uid);
        let pristine = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.mode() & 0o7777 == 0o700 && m.uid() == want_uid)
            && std::fs::read_dir(&dir).is_ok_and(|mut it| it.next().is_none());
        if pristine {
            let mut pool = self.scratch();
            if pool.free.len() < SCRATCH_POOL_MAX {
                pool.free.push(dir);
                return None;
            }
        }
        Some(dir)
    }

    /// Removes a scratch directory that could not be reused (a job left files in it).
    async fn remove_scratch(&self, dir: PathBuf) {
        if std::fs::remove_dir(&dir).is_ok() {
            return;
        }
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err((dir, err)),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err((dir, err))) = removed {
            tracing::warn!(dir = %dir.display(), %err, "cannot remove scratch dir");
        }
    }
}

impl Executor {
    /// Creates an executor sending its events on `events`.
    ///
    /// Must be called inside a tokio runtime (its handle is kept, so
    /// `launch` may then be called from any thread). Makes the process a
    /// child subreaper, starts the process-wide reaper thread if needed and
    /// creates `cfg.work_dir` if missing.
    pub fn new(cfg: ExecConfig, events: mpsc::Sender<ExecEvent>) -> Result<Self, ExecError> {
        use std::os::unix::fs::DirBuilderExt;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ExecError::NoRuntime)?;
        if cfg.chunk_max_bytes == 0 {
            return Err(ExecError::InvalidConfig(
                "chunk_max_bytes must be > 0".into(),
            ));
        }
        if cfg.work_dir.as_os_str().is_empty() {
            return Err(ExecError::InvalidConfig("work_dir is empty".into()));
        }
        if !cfg.work_dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&cfg.work_dir)
                .map_err(|source| ExecError::WorkDir {
                    path: cfg.work_dir.clone(),
                    source,
                })?;
        }
        nix::sys::prctl::set_child_subreaper(true).map_err(ExecError::Subreaper)?;
        reaper::ensure_started().map_err(ExecError::ReaperThread)?;
        tracing::debug!(work_dir = %cfg.work_dir.display(), "executor ready");
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                events,
                rt,
                attempts: Mutex::new(HashMap::new()),
                scratch: Mutex::new(ScratchPool::default()),
                live: watch::Sender::new(0),
            }),
        })
    }

    /// The configuration this executor was created with.
    pub fn config(&self) -> &ExecConfig {
        &self.inner.cfg
    }

    /// Starts an attempt in the background.
    ///
    /// Errors only for a malformed launch (empty `argv`, empty run token) or
    /// a key that is already running. A job that cannot be spawned is not an
    /// error: its attempt ends with `Exited { spawn_error: Some(..) }`.
    pub fn launch(&self, launch: Launch) -> Result<(), ExecError> {
        if launch.argv.is_empty() {
            return Err(ExecError::EmptyArgv);
        }
        if launch.run_token.is_empty() {
            return Err(ExecError::InvalidLaunch("empty run token".into()));
        }
        let key = launch.key;
        let ctl = Arc::new(AttemptCtl::default());
        {
            let mut attempts = self.inner.attempts();
            if attempts.contains_key(&key) {
                return Err(ExecError::Duplicate(key));
            }
            attempts.insert(key, ctl.clone());
        }
        self.inner.live.send_modify(|n| *n += 1);
        let guard = attempt::LiveGuard::new(self.inner.clone(), key, ctl.clone());
        self.inner
            .rt
            .spawn(attempt::run(self.inner.clone(), launch, ctl, guard));
        Ok(())
    }

    /// Asks a running attempt to stop: `SIGTERM` to its whole process tree
    /// now, `SIGKILL` to whatever remains after `grace`.
    ///
    /// Idempotent: the first cause is the one reported; a later call can only
    /// shorten the grace. An unknown or already finished key is a no-op.
    pub fn stop(&self, key: AttemptKey, grace: Duration, cause: StopCause) {
        let ctl = self.inner.attempts().get(&key).cloned();
        if let Some(ctl) = ctl {
            tracing::debug!(
                job_id = key.job_id,
                attempt = key.attempt,
                cause = cause.as_str(),
                grace_ms = grace.as_millis() as u64,
                "stopping attempt"
            );
            ctl.request_stop(grace, cause);
        }
    }

    /// Stops every running attempt (as [`Executor::stop`]) and returns once
    /// every attempt of this executor has sent `Exited` (and removed its
    /// scratch directory). Attempts launched meanwhile are stopped too.
    ///
    /// The caller must keep receiving events meanwhile.
    pub async fn stop_all(&self, grace: Duration, cause: StopCause) {
        let mut live = self.inner.live.subscribe();
        loop {
            let ctls: Vec<_> = self.inner.attempts().values().cloned().collect();
            for ctl in ctls {
                ctl.request_stop(grace, cause);
            }
            if *live.borrow_and_update() == 0 || live.changed().await.is_err() {
                // Nothing runs: the pooled scratch directories go too.
                let free = std::mem::take(&mut self.inner.scratch().free);
                for dir in free {
                    let _ = std::fs::remove_dir(dir);
                }
                return;
            }
        }
    }

    /// Keys of the attempts that have not sent `Exited` yet, sorted.
    pub fn running(&self) -> Vec<AttemptKey> {
        let mut keys: Vec<_> = self.inner.attempts().keys().copied().collect();
        keys.sort_unstable();
        keys
    }
}
