//! Shared harness of the end-to-end tests: real `hodei node` processes with local agents, on
//! loopback with OS-chosen ports, each in its own temporary data directory, driven through the
//! `hodei` CLI. Every wait is bounded and fails with a message saying what did not happen.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "e2e-test-cookie-0123456789";

pub fn hodei_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hodei")
}

/// Options of a test node.
#[derive(Clone)]
pub struct NodeOpts {
    pub workers: u32,
    pub slots: u32,
    pub snapshot_every: u64,
    pub extra: String,
}

impl Default for NodeOpts {
    fn default() -> Self {
        Self {
            workers: 1,
            slots: 4,
            snapshot_every: 10_000,
            extra: String::new(),
        }
    }
}

/// A `hodei node` child process.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: String,
    child: Option<Child>,
    pub opts: NodeOpts,
    starts: u32,
}

impl TestNode {
    pub fn start(opts: NodeOpts) -> TestNode {
        let dir = tempfile::Builder::new()
            .prefix("hodei-e2e-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("node.toml");
        let text = format!(
            r#"
[node]
name = "e2e"
listen = "127.0.0.1:0"
cookie = "{COOKIE}"
data_dir = "{data}"
metrics_listen = "127.0.0.1:0"

[store]
snapshot_every_entries = {snap}

[agents]
heartbeat_interval = "200ms"
heartbeat_timeout = "2s"
lease = "3s"
stop_grace = "1s"

[debug]
fault_injection = true

{extra}
{local}
"#,
            data = dir.path().join("data").display(),
            snap = opts.snapshot_every,
            extra = opts.extra,
            // No local pool when the test brings its own pools only.
            local = if opts.workers == 0 {
                String::new()
            } else {
                format!(
                    r#"
[[pools]]
name = "local"
provider = "local"
min = {w}
max = {w}
register_timeout = "20s"
[pools.template]
slots = {s}
cpu = "4"
memory = "4Gi"
labels = {{ suite = "e2e" }}
"#,
                    w = opts.workers,
                    s = opts.slots,
                )
            },
        );
        std::fs::write(&config, text).expect("write config");
        let mut n = TestNode {
            dir,
            config,
            addr: String::new(),
            child: None,
            opts,
            starts: 0,
        };
        n.spawn();
        n
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("node-{}.log", self.starts))
    }

    /// The node's stderr so far (all runs).
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let addr_file = self.data_dir().join("node.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.log_path()).expect("node log");
        let child = Command::new(hodei_bin())
            .args(["node", "--config"])
            .arg(&self.config)
            .env(
                "HODEI_LOG",
                "info,hodei_actors=debug,ractor=warn,ractor_cluster=warn",
            )
            .env_remove("HODEI_COOKIE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hodei node");
        self.child = Some(child);
        let addr = wait_for(
            Duration::from_secs(60),
            "the node to write node.addr",
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    panic!("node exited early ({status}):\n{}", self.log());
                }
                std::fs::read_to_string(&addr_file).ok()
            },
        );
        self.addr = addr.trim().to_string();
    }

    /// Starts the node again on the same data directory with extra `hodei node` arguments, and
    /// returns `Err((exit status, its stderr))` if it exits before it is ready (e.g. it
    /// refuses to start).
    pub fn try_restart(&mut self, args: &[&str]) -> Result<(), (String, String)> {
        self.kill9();
        self.starts += 1;
        let addr_file = self.data_dir().join("node.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.log_path()).expect("node log");
        let mut child = Command::new(hodei_bin())
            .args(["node", "--config"])
            .arg(&self.config)
            .args(args)
            .env(
                "HODEI_LOG",
                "info,hodei_actors=debug,ractor=warn,ractor_cluster=warn",
            )
            .env_remove("HODEI_COOKIE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hodei node");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err((status.to_string(), log));
            }
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                self.addr = a.trim().to_string();
                self.child = Some(child);
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the node neither started nor exited within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node with SIGKILL (no shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("node did not stop within 30 s of SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A `hodei` CLI command aimed at this node.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(hodei_bin());
        c.env("HODEI_ADDR", &self.addr)
            .env("HODEI_COOKIE", COOKIE)
            .env("HODEI_LOG", "warn,ractor=error,ractor_cluster=error")
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run hodei")
    }

    /// Runs the CLI; panics (with both streams and the node log) unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hodei {args:?} failed with {}:\nstdout: {}\nstderr: {}\nnode log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 60)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `hodei submit [args] -- cmd...` → the job id.
    pub fn submit(&self, args: &[&str], cmd: &[&str]) -> u64 {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        all.push("--");
        all.extend_from_slice(cmd);
        self.ok(&all)
            .trim()
            .parse()
            .expect("submit prints the job id")
    }

    /// One job as JSON.
    pub fn job(&self, id: u64) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["job", &id.to_string(), "-o", "json"])).expect("job json")
    }

    /// All jobs as JSON.
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["jobs", "-o", "json", "--limit", "10000"]))
            .expect("jobs json")
    }

    pub fn workers(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["workers", "-o", "json"])).expect("workers json")
    }

    /// Waits until job `id` is in `state` (or any terminal state if `state` is "terminal").
    pub fn wait_state(&self, id: u64, state: &str, within: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let r = wait_for_opt(within, || {
            last = self.job(id);
            let s = last["state"].as_str().unwrap_or("");
            let done = if state == "terminal" {
                matches!(s, "succeeded" | "failed" | "cancelled" | "timed_out")
            } else {
                s == state
            };
            done.then(|| last.clone())
        });
        r.unwrap_or_else(|| panic!("job {id} did not reach {state} within {within:?}; last seen: {last}\nnode log:\n{}", tail(&self.log(), 80)))
    }

    /// Waits until `n` registered workers are idle or busy.
    pub fn wait_workers(&self, n: usize) {
        wait_for(
            Duration::from_secs(60),
            &format!("{n} registered workers"),
            || {
                let ws = self.workers();
                let up = ws
                    .iter()
                    .filter(|w| matches!(w["state"].as_str(), Some("idle") | Some("busy")))
                    .count();
                (up >= n).then_some(())
            },
        );
    }

    pub fn metrics_addr(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("metrics.addr"))
            .expect("metrics.addr")
            .trim()
            .to_string()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- node log -----\n{}", tail(&self.log(), 200));
        }
        self.kill9();
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Polls `f` every 20 ms until it returns Some, for at most `within`.
pub fn wait_for_opt<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_for<T>(within: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_opt(within, f)
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

/// Pids of live (non-zombie) processes whose environment contains `needle` (e.g. `MARK=xyz`).
pub fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

/// A unique marker for one test's job processes.
pub fn marker(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A plain HTTP/1.1 GET (for the metrics endpoint).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
