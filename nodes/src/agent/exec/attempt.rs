//! The task that supervises one attempt, and its output readers.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::proctree::Tracker;
use super::{
    AttemptKey, DRAIN_TIMEOUT, ExecEvent, ExitOutcome, Inner, Launch, RUN_TOKEN_ENV, StopCause,
    Stream, reaper,
};

/// How often `SIGKILL` is repeated if the root still has not exited after it.
const REKILL_EVERY: Duration = Duration::from_secs(1);

/// A pending stop request.
#[derive(Debug, Clone, Copy)]
struct StopRequest {
    cause: StopCause,
    kill_at: Instant,
}

/// Control block of a running attempt, shared with [`super::Executor`].
#[derive(Debug, Default)]
pub(super) struct AttemptCtl {
    stop: Mutex<Option<StopRequest>>,
    wake: Notify,
}

impl AttemptCtl {
    /// Records a stop request (first cause wins, the earliest kill time wins)
    /// and wakes the supervisor.
    pub(super) fn request_stop(&self, grace: Duration, cause: StopCause) {
        let kill_at = Instant::now() + grace;
        {
            let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
            match stop.as_mut() {
                None => *stop = Some(StopRequest { cause, kill_at }),
                Some(req) => req.kill_at = req.kill_at.min(kill_at),
            }
        }
        self.wake.notify_one();
    }

    fn stop_request(&self) -> Option<StopRequest> {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the executor's bookkeeping right however the attempt task ends
/// (even if it is dropped unpolled because the runtime shut down).
pub(super) struct LiveGuard {
    inner: Arc<Inner>,
    key: AttemptKey,
    ctl: Option<Arc<AttemptCtl>>,
}

impl LiveGuard {
    pub(super) fn new(inner: Arc<Inner>, key: AttemptKey, ctl: Arc<AttemptCtl>) -> Self {
        Self {
            inner,
            key,
            ctl: Some(ctl),
        }
    }

    /// Removes the attempt from the running set (before `Exited` is sent).
    fn unregister(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            let mut attempts = self.inner.attempts();
            if attempts
                .get(&self.key)
                .is_some_and(|current| Arc::ptr_eq(current, &ctl))
            {
                attempts.remove(&self.key);
            }
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.unregister();
        self.inner.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Runs one attempt to its end and sends its `Exited`.
pub(super) async fn run(
    inner: Arc<Inner>,
    launch: Launch,
    ctl: Arc<AttemptCtl>,
    mut guard: LiveGuard,
) {
    let key = launch.key;
    let (outcome, scratch) = supervise(&inner, launch, &ctl).await;
    tracing::debug!(
        job_id = key.job_id,
        attempt = key.attempt,
        exit_code = outcome.exit_code,
        signal = outcome.signal,
        stopped_by = outcome.stopped_by.map(StopCause::as_str),
        spawn_error = outcome.spawn_error.as_deref(),
        log_bytes = outcome.log_bytes,
        duration_ms = outcome.duration_ms,
        "attempt exited"
    );
    let dirty = scratch.and_then(|dir| inner.recycle_scratch(dir));
    guard.unregister();
    let _ = inner.events.send(ExecEvent::Exited { key, outcome }).await;
    if let Some(dir) = dirty {
        inner.remove_scratch(dir).await;
    }
    drop(guard);
}

fn spawn_failed(reason: String) -> ExitOutcome {
    ExitOutcome {
        spawn_error: Some(reason),
        ..ExitOutcome::default()
    }
}

/// Creates the scratch directory (mode 0700, owned by `run_as`), replacing a
/// stale one left by an earlier agent.
pub(super) fn create_scratch(dir: &Path, owner: Option<super::RunAs>) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir_all(dir)?;
            builder.create(dir)?;
        }
        other => other?,
    }
    if let Some(owner) = owner {
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
    }
    Ok(())
}

/// Spawns, watches and cleans up the attempt. Returns its outcome and the
/// scratch directory to remove, if one was created.
async fn supervise(
    inner: &Inner,
    launch: Launch,
    ctl: &AttemptCtl,
) -> (ExitOutcome, Option<PathBuf>) {
    let cfg = &inner.cfg;
    let key = launch.key;

    if let Some(req) = ctl.stop_request() {
        // Stopped before it even started: do not start it.
        let outcome = ExitOutcome {
            stopped_by: Some(req.cause),
            ..ExitOutcome::default()
        };
        return (outcome, None);
    }

    let (cwd, scratch) = match &launch.working_dir {
        Some(dir) => {
            if !dir.is_dir() {
                let reason = format!(
                    "working directory {} does not exist or is not a directory",
                    dir.display()
                );
                return (spawn_failed(reason), None);
            }
            (dir.clone(), None)
        }
        None => match inner.acquire_scratch() {
            Ok(dir) => (dir.clone(), Some(dir)),
            Err(err) => {
                let reason = format!(
                    "cannot create a scratch directory in {}: {err}",
                    cfg.work_dir.display()
                );
                return (spawn_failed(reason), None);
            }
        },
    };

    // Resolve the program against the job's PATH here, as execvp would: std only takes the
    // cheap posix_spawn (vfork) path when the program is a path, and a fork of the agent's
    // address space costs far more than the job itself for short jobs.
    let job_path = launch
        .env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or(&cfg.default_path);
    let program = match resolve_program(&launch.argv[0], job_path, &cwd) {
        Ok(p) => p,
        Err(reason) => return (spawn_failed(reason), scratch),
    };
    let mut cmd = Command::new(&program);
    cmd.arg0(&launch.argv[0])
        .args(&launch.argv[1..])
        .env_clear()
        .envs(&launch.env)
        .env(RUN_TOKEN_ENV, &launch.run_token)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !launch.env.contains_key("PATH") {
        cmd.env("PATH", &cfg.default_path);
    }
    if let Some(run_as) = cfg.run_as {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }

    let started_at = Instant::now();
    let (mut child, exit_rx) = match reaper::spawn(&mut cmd) {
        Ok(spawned) => spawned,
        Err(err) => {
            let reason = format!(
                "cannot spawn {:?} in {}: {err}",
                launch.argv[0],
                cwd.display()
            );
            tracing::debug!(job_id = key.job_id, attempt = key.attempt, %reason, "spawn failed");
            return (spawn_failed(reason), scratch);
        }
    };
    let pid = child.id();
    let (stdout, stdout_ino) = pipe_with_inode(child.stdout.take().map(OwnedFd::from));
    let (stderr, stderr_ino) = pipe_with_inode(child.stderr.take().map(OwnedFd::from));
    // Never wait on the Child: the reaper owns all waiting.
    drop(child);
    tracing::debug!(
        job_id = key.job_id,
        attempt = key.attempt,
        pid,
        "job started"
    );

    let _ = inner.events.send(ExecEvent::Started { key, pid }).await;

    let output = Arc::new(tokio::sync::Mutex::new(OutputState::new(cfg.log_cap_bytes)));
    let (drain_tx, drain_rx) = watch::channel(None::<Instant>);
    let mut readers = Vec::with_capacity(2);
    for (fd, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
        let Some(fd) = fd else { continue };
        match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => readers.push(tokio::spawn(read_stream(ReaderCtx {
                key,
                stream,
                pipe: rx,
                events: inner.events.clone(),
                output: output.clone(),
                chunk_max: cfg.chunk_max_bytes,
                drain_deadline: drain_rx.clone(),
            }))),
            Err(err) => {
                tracing::warn!(job_id = key.job_id, attempt = key.attempt, ?stream, %err, "cannot read job output pipe");
            }
        }
    }

    let pipe_inodes: Vec<u64> = stdout_ino.into_iter().chain(stderr_ino).collect();
    let mut tracker = Tracker::new(pid, &launch.run_token, &pipe_inodes);
    let (status, stopped_by) = watch_root(key, ctl, &mut tracker, exit_rx).await;

    // The root is gone: nothing of the job may outlive it.
    if stopped_by.is_some() || !tracker.quick_clean() {
        tracker.kill_all().await;
    }

    // Wait for both pipes to reach EOF, bounded.
    let _ = drain_tx.send(Some(Instant::now() + DRAIN_TIMEOUT));
    for reader in readers {
        let _ = reader.await;
    }
    let (log_bytes, log_truncated) = {
        let output = output.lock().await;
        (output.used, output.truncated)
    };

    let (exit_code, signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
        _ => (None, None),
    };
    let outcome = ExitOutcome {
        exit_code,
        signal,
        stopped_by,
        spawn_error: None,
        log_bytes,
        log_truncated,
        duration_ms: u64::try_from(started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    (outcome, scratch)
}

/// Returns the pipe fd with its inode number (the same for both ends of a pipe).
fn pipe_with_inode(fd: Option<OwnedFd>) -> (Option<OwnedFd>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let Some(fd) = fd else {
        return (None, None);
    };
    let file = std::fs::File::from(fd);
    let ino = file.metadata().ok().map(|m| m.ino());
    (Some(OwnedFd::from(file)), ino)
}

/// Waits for the root's exit status, acting on stop requests meanwhile.
/// Returns the status and the cause of the stop if one was acted upon
/// before the root exited (a stop that comes later is a no-op).
async fn watch_root(
    key: AttemptKey,
    ctl: &AttemptCtl,
    tracker: &mut Tracker,
    mut exit_rx: tokio::sync::oneshot::Receiver<WaitStatus>,
) -> (Option<WaitStatus>, Option<StopCause>) {
    let mut stopped_by: Option<StopCause> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    loop {
        if let Some(req) = ctl.stop_request() {
            if stopped_by.is_none() {
                stopped_by = Some(req.cause);
                let found = tracker.signal(&[Signal::SIGTERM, Signal::SIGCONT]);
                tracing::debug!(
                    job_id = key.job_id,
                    attempt = key.attempt,
                    processes = found,
                    "sent sigterm to job"
                );
            }
            kill_at = Some(req.kill_at);
        }
        let kill_due = match (kill_at, killed_at) {
            (_, Some(at)) => Some(at + REKILL_EVERY),
            (Some(at), None) => Some(at),
            (None, None) => None,
        };
        tokio::select! {
            biased;
            status = &mut exit_rx => {
                if status.is_err() {
                    tracing::warn!(job_id = key.job_id, attempt = key.attempt, "lost exit status of job root");
                }
                return (status.ok(), stopped_by);
            }
            () = ctl.wake.notified() => {}
            () = sleep_until_opt(kill_due) => {
                if killed_at.is_some() {
                    tracing::warn!(job_id = key.job_id, attempt = key.attempt, "job root still alive after sigkill");
                } else {
                    tracing::debug!(job_id = key.job_id, attempt = key.attempt, "grace over, sending sigkill");
                }
                tracker.kill_all().await;
                killed_at = Some(Instant::now());
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Output accounting shared by the two readers of an attempt. Readers hold
/// its lock while sending, so the truncation marker is the last `Output`.
#[derive(Debug)]
struct OutputState {
    cap: u64,
    used: u64,
    truncated: bool,
    /// The events receiver is gone: keep draining, stop sending.
    closed: bool,
}

impl OutputState {
    fn new(cap: u64) -> Self {
        Self {
            cap,
            used: 0,
            truncated: false,
            closed: false,
        }
    }
}

struct ReaderCtx {
    key: AttemptKey,
    stream: Stream,
    pipe: pipe::Receiver,
    events: mpsc::Sender<ExecEvent>,
    output: Arc<tokio::sync::Mutex<OutputState>>,
    chunk_max: usize,
    drain_deadline: watch::Receiver<Option<Instant>>,
}

/// Resolves once the drain deadline has been set and has passed.
async fn drain_deadline_passed(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(at) = deadline {
            tokio::time::sleep_until(at).await;
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Forwards one output pipe as `Output` events until EOF (or the drain
/// deadline), honouring the log cap and discarding what is beyond it.
async fn read_stream(mut ctx: ReaderCtx) {
    let mut buf = vec![0u8; ctx.chunk_max];
    loop {
        let n = tokio::select! {
            biased;
            () = drain_deadline_passed(&mut ctx.drain_deadline) => {
                tracing::debug!(job_id = ctx.key.job_id, attempt = ctx.key.attempt, stream = ?ctx.stream, "output pipe still open at drain deadline");
                break;
            }
            read = ctx.pipe.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(job_id = ctx.key.job_id, attempt = ctx.key.attempt, stream = ?ctx.stream, %err, "cannot read job output");
                    break;
                }
            },
        };
        let mut out = ctx.output.lock().await;
        let room = out.cap.saturating_sub(out.used);
        let take = usize::try_from(room).map_or(n, |room| room.min(n));
        if take > 0 {
            out.used += take as u64;
            if !out.closed {
                let event = ExecEvent::Output {
                    key: ctx.key,
                    stream: ctx.stream,
                    data: buf[..take].to_vec(),
                };
                out.closed = ctx.events.send(event).await.is_err();
            }
        }
        if take < n && !out.truncated {
            out.truncated = true;
            let marker = format!("\n[hodei: log truncated at {} bytes]\n", out.cap);
            for piece in marker.as_bytes().chunks(ctx.chunk_max) {
                if out.closed {
                    break;
                }
                let event = ExecEvent::Output {
                    key: ctx.key,
                    stream: Stream::Stderr,
                    data: piece.to_vec(),
                };
                out.closed = ctx.events.send(event).await.is_err();
            }
        }
    }
}

/// Finds `program` the way `execvp` does: a name with a `/` is used as is (relative to the
/// job's working directory); otherwise the first executable regular file named so in `path`.
fn resolve_program(program: &str, path: &str, cwd: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        });
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            PathBuf::from(dir)
        };
        let candidate = dir.join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "cannot spawn {program:?}: not found in PATH ({path})"
    ))
}
