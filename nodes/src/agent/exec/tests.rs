//! Tests with real processes. They share the process-wide reaper and may run
//! in parallel: every test has its own executor, work dir and run tokens.

use super::proctree::{self, ProcStat};
use super::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(30);
const MIB: usize = 1024 * 1024;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(name: &str) -> String {
    format!(
        "{}-{}-{}",
        name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hodei-exec-{}", unique(name)));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        Self(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Log {
    events: HashMap<AttemptKey, Vec<ExecEvent>>,
    /// Events that arrived after the Exited of their attempt (must stay empty).
    after_exit: Vec<ExecEvent>,
}

impl Log {
    fn exited(&self, key: AttemptKey) -> Option<ExitOutcome> {
        self.events.get(&key)?.iter().find_map(|e| match e {
            ExecEvent::Exited { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
    }
}

/// An executor plus a task collecting its events.
struct Harness {
    exec: Executor,
    log: Arc<Mutex<Log>>,
    changed: Arc<Notify>,
    dir: TestDir,
    name: String,
}

impl Harness {
    fn new(name: &str) -> Self {
        Self::with_config(name, |_| {})
    }

    fn with_config(name: &str, tweak: impl FnOnce(&mut ExecConfig)) -> Self {
        let dir = TestDir::new(name);
        let mut cfg = ExecConfig::new(dir.0.join("work"));
        tweak(&mut cfg);
        let (tx, mut rx) = mpsc::channel(16);
        let exec = Executor::new(cfg, tx).expect("create executor");
        let log = Arc::new(Mutex::new(Log::default()));
        let changed = Arc::new(Notify::new());
        let (log2, changed2) = (log.clone(), changed.clone());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let mut log = log2.lock().unwrap();
                let key = ev.key();
                if log.exited(key).is_some() {
                    log.after_exit.push(ev);
                } else {
                    log.events.entry(key).or_default().push(ev);
                }
                drop(log);
                changed2.notify_waiters();
            }
        });
        Self {
            exec,
            log,
            changed,
            dir,
            name: name.to_owned(),
        }
    }

    fn launch_spec(&self, job_id: u64, argv: &[&str]) -> Launch {
        Launch {
            key: AttemptKey { job_id, attempt: 1 },
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            run_token: unique(&format!("tok-{}", self.name)),
        }
    }

    /// Launches `argv` as job `job_id`; returns its key and run token.
    fn launch(&self, job_id: u64, argv: &[&str]) -> (AttemptKey, String) {
        let spec = self.launch_spec(job_id, argv);
        let out = (spec.key, spec.run_token.clone());
        self.exec.launch(spec).expect("launch");
        out
    }

    fn launch_sh(&self, job_id: u64, script: &str) -> (AttemptKey, String) {
        self.launch(job_id, &["/bin/sh", "-c", script])
    }

    /// Waits (bounded) until `f` returns something.
    async fn wait_until<T>(&self, what: &str, mut f: impl FnMut(&Log) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = f(&self.log.lock().unwrap()) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.log.lock().unwrap();
                let summary: Vec<_> = log
                    .events
                    .iter()
                    .map(|(k, evs)| (k.job_id, evs.len(), log.exited(*k).is_some()))
                    .collect();
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; (job, events, exited): {summary:?}"
                );
            }
        }
    }

    /// Waits for the Exited of `key`; returns the outcome and all events of the attempt.
    async fn wait_exited(&self, key: AttemptKey) -> (ExitOutcome, Vec<ExecEvent>) {
        let outcome = self
            .wait_until(&format!("exit of {key}"), |log| log.exited(key))
            .await;
        let events = self.log.lock().unwrap().events[&key].clone();
        check_attempt_events(key, &events, self.exec.config().chunk_max_bytes);
        (outcome, events)
    }

    /// Waits until the stdout of `key` contains `needle`; returns that stdout.
    async fn wait_stdout(&self, key: AttemptKey, needle: &str) -> String {
        self.wait_until(&format!("{needle:?} on stdout of {key}"), |log| {
            let out = text(log.events.get(&key)?, Stream::Stdout);
            out.contains(needle).then_some(out)
        })
        .await
    }

    fn assert_no_late_events(&self) {
        let log = self.log.lock().unwrap();
        assert!(
            log.after_exit.is_empty(),
            "events after Exited: {:?}",
            log.after_exit
        );
    }
}

/// Checks the event-order contract of one attempt.
fn check_attempt_events(key: AttemptKey, events: &[ExecEvent], chunk_max: usize) {
    let exited = events
        .iter()
        .filter(|e| matches!(e, ExecEvent::Exited { .. }))
        .count();
    assert_eq!(exited, 1, "{key}: exactly one Exited expected: {events:?}");
    assert!(
        matches!(events.last(), Some(ExecEvent::Exited { .. })),
        "{key}: Exited must be last"
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, ExecEvent::Started { .. }))
        .count();
    assert!(started <= 1, "{key}: at most one Started");
    if started == 1 {
        assert!(
            matches!(events.first(), Some(ExecEvent::Started { .. })),
            "{key}: Started must be first"
        );
    }
    for e in events {
        if let ExecEvent::Output { data, .. } = e {
            assert!(!data.is_empty(), "{key}: empty Output event");
            assert!(
                data.len() <= chunk_max,
                "{key}: Output of {} bytes exceeds chunk_max {chunk_max}",
                data.len()
            );
        }
    }
}

fn bytes(events: &[ExecEvent], stream: Stream) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Output {
                stream: s, data, ..
            } if *s == stream => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

fn text(events: &[ExecEvent], stream: Stream) -> String {
    String::from_utf8_lossy(&bytes(events, stream)).into_owned()
}

/// Live processes carrying the run token `token`.
fn token_procs(token: &str) -> Vec<ProcStat> {
    let needle = proctree::token_entry(token);
    proctree::all_pids()
        .into_iter()
        .filter(|&pid| proctree::environ_has(pid, &needle))
        .filter_map(proctree::read_stat)
        .filter(ProcStat::is_alive)
        .collect()
}

fn is_alive(pid: i32) -> bool {
    proctree::read_stat(pid).is_some_and(|st| st.is_alive())
}

/// Polls (bounded) until a live process with `token` satisfies `pred`.
async fn wait_for_proc(token: &str, what: &str, pred: impl Fn(&ProcStat) -> bool) -> ProcStat {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = token_procs(token).into_iter().find(|st| pred(st)) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls (bounded) until `path` no longer exists.
async fn wait_removed(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still exists after {WAIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_both_streams() {
    let h = Harness::new("streams");
    let (key, _) = h.launch_sh(1, "echo hi; echo err >&2; exit 3");
    let (outcome, events) = h.wait_exited(key).await;
    assert_eq!(text(&events, Stream::Stdout), "hi\n");
    assert_eq!(text(&events, Stream::Stderr), "err\n");
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.signal, None);
    assert_eq!(outcome.stopped_by, None);
    assert_eq!(outcome.spawn_error, None);
    assert_eq!(outcome.log_bytes, 7);
    assert!(!outcome.log_truncated);
    assert!(!outcome.success());
    let ExecEvent::Started { pid, .. } = events[0] else {
        panic!("first event is not Started: {:?}", events[0]);
    };
    assert!(pid > 1);
    assert!(h.exec.running().is_empty());
    h.assert_no_late_events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_by_signal() {
    let h = Harness::new("signal");
    let (key, _) = h.launch_sh(1, "kill -9 $$");
    let (outcome, _) = h.wait_exited(key).await;
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.stopped_by, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_env_is_exactly_the_launch_env() {
    let h = Harness::with_config("env", |cfg| {
        cfg.default_path = "/usr/bin:/bin:/hodei-test-path".into();
    });
    let mut spec = h.launch_spec(1, &["/usr/bin/env"]);
    spec.env.insert("A".into(), "1".into());
    spec.env.insert("B".into(), "two words".into());
    let token = spec.run_token.clone();
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (outcome, events) = h.wait_exited(key).await;
    assert!(outcome.success(), "{outcome:?}");
    let got: BTreeSet<String> = text(&events, Stream::Stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = [
        "A=1".to_owned(),
        "B=two words".to_owned(),
        "PATH=/usr/bin:/bin:/hodei-test-path".to_owned(),
        format!("{RUN_TOKEN_ENV}={token}"),
    ]
    .into();
    assert_eq!(got, want, "the agent's environment leaked into the job");

    // An explicit PATH is kept; a forged token is overridden.
    let mut spec = h.launch_spec(2, &["/usr/bin/env"]);
    spec.env.insert("PATH".into(), "/bin:/usr/bin".into());
    spec.env.insert(RUN_TOKEN_ENV.into(), "forged".into());
    let token = spec.run_token.clone();
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (_, events) = h.wait_exited(key).await;
    let got: BTreeSet<String> = text(&events, Stream::Stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = [
        "PATH=/bin:/usr/bin".to_owned(),
        format!("{RUN_TOKEN_ENV}={token}"),
    ]
    .into();
    assert_eq!(got, want);
}

const ENV_CHILD_OK: &str = "hodei-env-isolation-child-ok";

/// Runs inside a child test process whose own environment holds
/// `HODEI_COOKIE` (setting it in this process would need `unsafe`
/// `set_var`): its jobs must not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run by env_isolation_hides_agent_cookie in a child process"]
async fn env_isolation_child() {
    let Ok(cookie) = std::env::var("HODEI_COOKIE") else {
        println!("skipped: run by env_isolation_hides_agent_cookie");
        return;
    };
    let h = Harness::new("envchild");
    let mut spec = h.launch_spec(1, &["/usr/bin/env"]);
    spec.env.insert("JOB_VAR".into(), "job".into());
    let token = spec.run_token.clone();
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (outcome, events) = h.wait_exited(key).await;
    assert!(outcome.success(), "{outcome:?}");
    let out = text(&events, Stream::Stdout);
    assert!(!out.contains(&cookie), "cookie leaked into job env: {out}");
    assert!(
        !out.contains("HODEI_COOKIE"),
        "cookie leaked into job env: {out}"
    );
    let got: BTreeSet<&str> = out.lines().collect();
    let token_line = format!("{RUN_TOKEN_ENV}={token}");
    let path_line = format!("PATH={DEFAULT_PATH}");
    let want: BTreeSet<&str> = ["JOB_VAR=job", path_line.as_str(), token_line.as_str()].into();
    assert_eq!(got, want);
    println!("{ENV_CHILD_OK}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_isolation_hides_agent_cookie() {
    let h = Harness::new("envparent");
    let exe = std::env::current_exe().expect("current exe");
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let test_name = format!("{module}::env_isolation_child");
    let cookie = unique("secret-cookie");
    let mut spec = h.launch_spec(
        1,
        &[
            exe.to_str().unwrap(),
            &test_name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    spec.env.insert("HODEI_COOKIE".into(), cookie);
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (outcome, events) = h.wait_exited(key).await;
    let out = text(&events, Stream::Stdout);
    let err = text(&events, Stream::Stderr);
    assert_eq!(
        outcome.exit_code,
        Some(0),
        "child test failed: {outcome:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains(ENV_CHILD_OK),
        "child test did not run: {out}\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_setsid_descendants() {
    let h = Harness::new("stop");
    let (key, token) = h.launch_sh(1, "setsid sleep 300 & sleep 300");
    // Wait until the daemon really left the job's session.
    let daemon = wait_for_proc(&token, "the setsid'd sleep", |st| st.session == st.pid).await;
    assert!(h.exec.running().contains(&key));
    let t0 = Instant::now();
    h.exec
        .stop(key, Duration::from_millis(500), StopCause::Timeout);
    let (outcome, _) = h.wait_exited(key).await;
    let took = t0.elapsed();
    assert_eq!(outcome.stopped_by, Some(StopCause::Timeout));
    assert_eq!(outcome.signal, Some(15), "{outcome:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        !is_alive(daemon.pid),
        "setsid'd sleep {} survived",
        daemon.pid
    );
    let left = token_procs(&token);
    assert!(
        left.is_empty(),
        "processes with the run token survived: {left:?}"
    );
    assert!(!h.exec.running().contains(&key));
    // Stopping a finished attempt is a no-op.
    h.exec.stop(key, Duration::ZERO, StopCause::Cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignored_gets_sigkill_after_grace() {
    let h = Harness::new("trap");
    let (key, token) = h.launch_sh(1, "trap '' TERM; echo ready; sleep 300");
    h.wait_stdout(key, "ready").await;
    // The sleep must exist (it inherits the ignored SIGTERM).
    wait_for_proc(&token, "the sleep", |st| st.state != b'Z').await;
    let grace = Duration::from_millis(300);
    let t0 = Instant::now();
    h.exec.stop(key, grace, StopCause::Cancel);
    let (outcome, _) = h.wait_exited(key).await;
    let took = t0.elapsed();
    assert_eq!(outcome.stopped_by, Some(StopCause::Cancel));
    assert_eq!(outcome.signal, Some(9), "{outcome:?}");
    assert!(took >= grace, "killed before the grace ended ({took:?})");
    assert!(took < grace + Duration::from_secs(5), "stop took {took:?}");
    assert!(token_procs(&token).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stop_shortens_grace_but_keeps_first_cause() {
    let h = Harness::new("restop");
    let (key, _) = h.launch_sh(1, "trap '' TERM; echo ready; sleep 300");
    h.wait_stdout(key, "ready").await;
    let t0 = Instant::now();
    h.exec.stop(key, Duration::from_secs(600), StopCause::Lease);
    h.exec.stop(key, Duration::ZERO, StopCause::Shutdown);
    let (outcome, _) = h.wait_exited(key).await;
    assert_eq!(outcome.stopped_by, Some(StopCause::Lease));
    assert_eq!(outcome.signal, Some(9));
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_kills_leftovers() {
    let h = Harness::new("leftover");
    // The daemon leaves the session, keeps our stdout pipe open, and is
    // running when the root exits.
    let script = "setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' & \
                  while [ ! -s daemon.pid ]; do sleep 0.01; done; \
                  echo background & \
                  echo daemon=$(cat daemon.pid)";
    let (key, token) = h.launch_sh(1, script);
    let (outcome, events) = h.wait_exited(key).await;
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert_eq!(outcome.stopped_by, None);
    let out = text(&events, Stream::Stdout);
    let daemon: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("daemon="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {out:?}"));
    assert!(!is_alive(daemon), "leftover daemon {daemon} still alive");
    let left = token_procs(&token);
    assert!(left.is_empty(), "leftovers: {left:?}");
    // Exited came from the kill + EOF, not from the drain deadline.
    assert!(
        outcome.duration_ms < DRAIN_TIMEOUT.as_millis() as u64,
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapee_without_token_holding_the_pipe_is_killed() {
    let h = Harness::new("escapee");
    // No token (env -i), own session, but it still holds stdout/stderr.
    let script = "env -i /usr/bin/setsid /bin/sh -c 'echo $$ > daemon.pid; exec /bin/sleep 300' & \
                  while [ ! -s daemon.pid ]; do sleep 0.01; done; \
                  echo daemon=$(cat daemon.pid)";
    let (key, token) = h.launch_sh(1, script);
    let (outcome, events) = h.wait_exited(key).await;
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    let out = text(&events, Stream::Stdout);
    let daemon: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("daemon="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {out:?}"));
    assert!(!is_alive(daemon), "escaped daemon {daemon} still alive");
    assert!(token_procs(&token).is_empty());
    assert!(
        outcome.duration_ms < DRAIN_TIMEOUT.as_millis() as u64,
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_a_leaked_pipe() {
    let h = Harness::new("drain");
    let (key, _) = h.launch_sh(
        1,
        "echo ready; while [ ! -e go ]; do sleep 0.01; done; echo bye",
    );
    h.wait_stdout(key, "ready").await;
    let pid = h
        .wait_until("Started", |log| {
            log.events.get(&key)?.iter().find_map(|e| match e {
                ExecEvent::Started { pid, .. } => Some(*pid),
                _ => None,
            })
        })
        .await;
    // Someone outside the job's tree (here: this very process) keeps the
    // write end of the job's stdout open after the job is gone.
    let leak = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/1"))
        .expect("open the job's stdout");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the job's cwd");
    std::fs::write(cwd.join("go"), "").unwrap();
    let (outcome, events) = h.wait_exited(key).await;
    drop(leak);
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert_eq!(text(&events, Stream::Stdout), "ready\nbye\n");
    assert!(
        outcome.duration_ms >= DRAIN_TIMEOUT.as_millis() as u64,
        "Exited before the pipe was closed or the drain deadline passed: {outcome:?}"
    );
    assert!(outcome.duration_ms < 10_000, "{outcome:?}");
}

/// CPU ticks (utime + stime) used so far by the reaper thread.
fn reaper_cpu_ticks() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "hodei-reaper" {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15.
            return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
    }
    panic!("no hodei-reaper thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_does_not_spin() {
    let h = Harness::new("idle");
    assert!(nix::sys::prctl::get_child_subreaper().unwrap());
    let (key, _) = h.launch(1, &["/bin/true"]);
    h.wait_exited(key).await;
    let before = reaper_cpu_ticks();
    // A measurement window, not a synchronisation: a spinning reaper would
    // burn ~50 ticks in it (other tests' reaping costs next to nothing).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = reaper_cpu_ticks() - before;
    assert!(used < 20, "reaper used {used} ticks in 500 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_cap_truncates_and_keeps_draining() {
    let chunk = 16 * 1024;
    let h = Harness::with_config("cap", |cfg| {
        cfg.log_cap_bytes = MIB as u64;
        cfg.chunk_max_bytes = chunk;
    });
    let (key, _) = h.launch_sh(1, "head -c 3145728 /dev/zero; echo after-cap >&2; exit 0");
    let (outcome, events) = h.wait_exited(key).await;
    assert_eq!(
        outcome.exit_code,
        Some(0),
        "the job must not block: {outcome:?}"
    );
    assert!(outcome.log_truncated);
    assert_eq!(outcome.log_bytes, MIB as u64);
    let out = bytes(&events, Stream::Stdout);
    assert_eq!(out.len(), MIB);
    assert!(out.iter().all(|&b| b == 0));
    let marker = format!("\n[hodei: log truncated at {MIB} bytes]\n");
    assert_eq!(text(&events, Stream::Stderr), marker);
    // The marker is the last output.
    let last_output = events
        .iter()
        .rev()
        .find_map(|e| match e {
            ExecEvent::Output { stream, data, .. } => Some((*stream, data.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_output, (Stream::Stderr, marker.into_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_chunked() {
    let h = Harness::with_config("chunks", |cfg| cfg.chunk_max_bytes = 100);
    let (key, _) = h.launch_sh(
        1,
        "head -c 10000 /dev/zero | tr '\\0' x; head -c 999 /dev/zero >&2",
    );
    let (outcome, events) = h.wait_exited(key).await;
    assert!(outcome.success(), "{outcome:?}");
    // check_attempt_events (in wait_exited) asserts every chunk is 1..=100 bytes.
    assert_eq!(text(&events, Stream::Stdout), "x".repeat(10000));
    assert_eq!(bytes(&events, Stream::Stderr).len(), 999);
    assert_eq!(outcome.log_bytes, 10999);
    let chunks = events
        .iter()
        .filter(|e| matches!(e, ExecEvent::Output { .. }))
        .count();
    assert!(chunks >= 110, "only {chunks} chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_errors_are_reported_as_exits() {
    let h = Harness::new("spawnerr");
    let (key, _) = h.launch(1, &["/nonexistent/prog", "arg"]);
    let (outcome, events) = h.wait_exited(key).await;
    let err = outcome.spawn_error.clone().expect("spawn_error");
    assert!(err.contains("/nonexistent/prog"), "{err}");
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, None);
    assert_eq!(events.len(), 1, "only Exited expected: {events:?}");

    // A file that is not executable.
    let file = h.dir.0.join("not-executable");
    std::fs::write(&file, "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (key, _) = h.launch(2, &[file.to_str().unwrap()]);
    let (outcome, _) = h.wait_exited(key).await;
    let err = outcome.spawn_error.expect("spawn_error");
    assert!(err.contains("not-executable"), "{err}");

    // A program name not found in PATH.
    let (key, _) = h.launch(3, &["hodei-no-such-program"]);
    let (outcome, _) = h.wait_exited(key).await;
    assert!(outcome.spawn_error.is_some());

    // The executor keeps working, and no scratch dir is left behind.
    let (key, _) = h.launch(4, &["/bin/true"]);
    let (outcome, _) = h.wait_exited(key).await;
    assert!(outcome.success(), "{outcome:?}");
    h.exec.stop_all(Duration::ZERO, StopCause::Shutdown).await;
    let work = h.exec.config().work_dir.clone();
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "scratch dirs left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_working_dir_is_a_spawn_error() {
    let h = Harness::new("nocwd");
    let missing = h.dir.0.join("does-not-exist");
    let mut spec = h.launch_spec(1, &["/bin/true"]);
    spec.working_dir = Some(missing.clone());
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (outcome, _) = h.wait_exited(key).await;
    let err = outcome.spawn_error.expect("spawn_error");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_working_dir_is_used_and_kept() {
    let h = Harness::new("cwd");
    let dir = h.dir.0.join("explicit");
    std::fs::create_dir(&dir).unwrap();
    let mut spec = h.launch_spec(1, &["/bin/sh", "-c", "pwd; echo data > file"]);
    spec.working_dir = Some(dir.clone());
    let key = spec.key;
    h.exec.launch(spec).unwrap();
    let (outcome, events) = h.wait_exited(key).await;
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(
        Path::new(text(&events, Stream::Stdout).trim()),
        dir.canonicalize().unwrap()
    );
    // Wait until the attempt task is completely done, then check nothing was removed.
    h.exec.stop_all(Duration::ZERO, StopCause::Shutdown).await;
    assert!(dir.join("file").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_dir_is_cwd_and_never_handed_on_dirty() {
    let h = Harness::new("scratch");
    // The file is written before `pwd` prints, so it exists when the job is stopped below.
    let (key, _) = h.launch_sh(7, "echo data > file; pwd; sleep 300");
    let out = h.wait_stdout(key, "\n").await;
    let scratch = PathBuf::from(out.trim());
    assert!(
        scratch.starts_with(h.exec.config().work_dir.canonicalize().unwrap()),
        "{scratch:?}"
    );
    let meta = std::fs::metadata(&scratch).expect("scratch dir exists during the run");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    h.exec.stop(key, Duration::ZERO, StopCause::Cancel);
    let (outcome, _) = h.wait_exited(key).await;
    assert_eq!(outcome.stopped_by, Some(StopCause::Cancel));
    // The job left a file: that directory is removed, not reused.
    wait_removed(&scratch).await;
    // A clean job's directory is reused, and the next job finds it empty.
    let (k1, _) = h.launch_sh(8, "pwd");
    let (o1, e1) = h.wait_exited(k1).await;
    assert!(o1.success());
    let (k2, _) = h.launch_sh(9, "pwd; ls -A | wc -l");
    let (o2, e2) = h.wait_exited(k2).await;
    assert!(o2.success());
    let first = text(&e1, Stream::Stdout);
    let second = text(&e2, Stream::Stdout);
    let mut lines = second.lines();
    assert_eq!(
        lines.next(),
        Some(first.trim()),
        "the same directory was reused"
    );
    assert_eq!(lines.next().map(str::trim), Some("0"), "and it was empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_and_running() {
    let h = Harness::new("api");
    assert!(matches!(
        h.exec.launch(h.launch_spec(1, &[])),
        Err(ExecError::EmptyArgv)
    ));
    let mut spec = h.launch_spec(1, &["/bin/true"]);
    spec.run_token.clear();
    assert!(matches!(
        h.exec.launch(spec),
        Err(ExecError::InvalidLaunch(_))
    ));
    let (key, _) = h.launch(1, &["sleep", "300"]);
    assert!(matches!(
        h.exec.launch(h.launch_spec(1, &["/bin/true"])),
        Err(ExecError::Duplicate(k)) if k == key
    ));
    assert_eq!(h.exec.running(), vec![key]);
    // Unknown key: no-op.
    h.exec.stop(
        AttemptKey {
            job_id: 99,
            attempt: 9,
        },
        Duration::ZERO,
        StopCause::Cancel,
    );
    h.exec.stop(key, Duration::ZERO, StopCause::Cancel);
    let (outcome, _) = h.wait_exited(key).await;
    assert_eq!(outcome.stopped_by, Some(StopCause::Cancel));
    assert!(h.exec.running().is_empty());
    let bad = Executor::new(
        ExecConfig {
            chunk_max_bytes: 0,
            ..ExecConfig::new(h.dir.0.join("w2"))
        },
        mpsc::channel(1).0,
    );
    assert!(matches!(bad, Err(ExecError::InvalidConfig(_))));
}

#[test]
fn executor_needs_a_runtime() {
    let dir = TestDir::new("nort");
    let res = Executor::new(ExecConfig::new(dir.0.join("w")), mpsc::channel(1).0);
    assert!(matches!(res, Err(ExecError::NoRuntime)));
}

#[test]
fn run_as_resolution() {
    let root = RunAs::resolve("root", None).expect("root exists");
    assert_eq!(root, RunAs { uid: 0, gid: 0 });
    assert_eq!(RunAs::resolve("0", None).unwrap(), root);
    assert_eq!(
        RunAs::resolve("root", Some("0")).unwrap(),
        RunAs { uid: 0, gid: 0 }
    );
    assert_eq!(
        RunAs::resolve("12345", Some("23456")).unwrap(),
        RunAs {
            uid: 12345,
            gid: 23456
        }
    );
    assert!(matches!(
        RunAs::resolve("hodei-no-such-user", None),
        Err(ExecError::UnknownUser(_))
    ));
    assert!(matches!(
        RunAs::resolve("root", Some("hodei-no-such-group")),
        Err(ExecError::UnknownGroup(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_other_user() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root");
        return;
    }
    let Ok(nobody) = RunAs::resolve("nobody", None) else {
        println!("skipped: no user nobody");
        return;
    };
    let h = Harness::with_config("runas", |cfg| cfg.run_as = Some(nobody));
    let (key, _) = h.launch_sh(1, "id -u; id -g; stat -c %u:%g .; id -G");
    let (outcome, events) = h.wait_exited(key).await;
    let out = text(&events, Stream::Stdout);
    assert!(
        outcome.success(),
        "{outcome:?} {out} {}",
        text(&events, Stream::Stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
    assert_eq!(lines[0], uid);
    assert_eq!(lines[1], gid);
    assert_eq!(lines[2], format!("{uid}:{gid}"));
    assert_eq!(lines[3], gid, "supplementary groups must be dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_all_complete() {
    let h = Harness::new("slots");
    let keys: Vec<_> = (0..8).map(|i| h.launch(i, &["sleep", "0.2"]).0).collect();
    assert_eq!(h.exec.running().len(), 8);
    for key in keys {
        let (outcome, _) = h.wait_exited(key).await;
        assert!(outcome.success(), "{key}: {outcome:?}");
    }
    assert!(h.exec.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_ends_every_attempt() {
    let h = Harness::new("stopall");
    let mut keys = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let (key, token) = h.launch(i, &["sleep", "300"]);
        keys.push(key);
        tokens.push(token);
    }
    let (key, token) = h.launch_sh(4, "trap '' TERM; setsid sleep 300 & echo ready; sleep 300");
    keys.push(key);
    tokens.push(token);
    h.wait_stdout(key, "ready").await;
    let t0 = Instant::now();
    tokio::time::timeout(
        WAIT,
        h.exec
            .stop_all(Duration::from_millis(200), StopCause::Shutdown),
    )
    .await
    .expect("stop_all did not return");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert!(h.exec.running().is_empty());
    // Every Exited has been sent (it may still sit in the channel, in front
    // of our collector).
    for key in &keys {
        let (outcome, _) = h.wait_exited(*key).await;
        assert_eq!(outcome.stopped_by, Some(StopCause::Shutdown), "{key}");
    }
    for token in &tokens {
        assert!(token_procs(token).is_empty(), "survivors of {token}");
    }
    // Scratch dirs are gone once stop_all returned.
    let work = h.exec.config().work_dir.clone();
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "scratch dirs left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_sequential_true() {
    let h = Harness::new("seq");
    for i in 0..500 {
        let (key, _) = h.launch(i, &["/bin/true"]);
        let (outcome, events) = h.wait_exited(key).await;
        assert!(outcome.success(), "{key}: {outcome:?}");
        assert_eq!(events.len(), 2, "{key}: {events:?}");
    }
    h.exec.stop_all(Duration::ZERO, StopCause::Shutdown).await;
    h.assert_no_late_events();
    let log = h.log.lock().unwrap();
    assert_eq!(log.events.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_concurrent_launches() {
    let h = Harness::new("conc");
    let n = 200;
    let keys: Vec<_> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                h.launch(i, &["/bin/true"]).0
            } else {
                h.launch_sh(i, "echo $$").0
            }
        })
        .collect();
    h.wait_until("all Exited", |log| {
        keys.iter().all(|k| log.exited(*k).is_some()).then_some(())
    })
    .await;
    for key in keys {
        let (outcome, events) = h.wait_exited(key).await;
        assert!(outcome.success(), "{key}: {outcome:?}");
        if key.job_id % 2 == 1 {
            let ExecEvent::Started { pid, .. } = events[0] else {
                panic!("{key}: no Started");
            };
            assert_eq!(text(&events, Stream::Stdout), format!("{pid}\n"));
        }
    }
    h.exec.stop_all(Duration::ZERO, StopCause::Shutdown).await;
    h.assert_no_late_events();
}

/// Launch → Exited latency of `/bin/true` (prints figures, asserts nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -- --ignored --nocapture bench_true_overhead"]
async fn bench_true_overhead() {
    let h = Harness::new("bench");
    let mut samples = Vec::new();
    for i in 0..1100u64 {
        let t0 = Instant::now();
        let (key, _) = h.launch(i, &["/bin/true"]);
        let (outcome, _) = h.wait_exited(key).await;
        let took = t0.elapsed();
        assert!(outcome.success());
        if i >= 100 {
            samples.push(took);
        }
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "launch->Exited of /bin/true over {} runs: min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?} mean {:?}",
        samples.len(),
        samples[0],
        pct(50),
        pct(90),
        pct(99),
        samples[samples.len() - 1],
        mean
    );
}
