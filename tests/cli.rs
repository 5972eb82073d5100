//! End to end through the `hodei` CLI against a real node with local agents: the CLI contract
//! (exit codes, output), timeouts and cancellation killing whole process trees, idempotency,
//! and bad input getting clear errors without changing anything.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn submit_wait_prints_the_output_and_exits_with_the_jobs_code() {
    let node = TestNode::start(NodeOpts::default());
    let out = node.run(&["submit", "--wait", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(stdout(&out), "hi\n", "stderr: {}", stderr(&out));
    assert_eq!(exit_code(&out), 3, "stderr: {}", stderr(&out));
    let ok = node.run(&["submit", "--wait", "--", "sh", "-c", "echo ok"]);
    assert_eq!(exit_code(&ok), 0);
    let killed = node.run(&["submit", "--wait", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(exit_code(&killed), 128 + 9, "killed by signal 9 → 137");
    // stderr of the job goes to stderr.
    let err = node.run(&["submit", "--wait", "--", "sh", "-c", "echo oops >&2"]);
    assert!(stderr(&err).contains("oops"), "{}", stderr(&err));
    assert_eq!(stdout(&err), "");
}

#[test]
fn a_timed_out_job_exits_124_and_leaves_no_descendant_alive() {
    let node = TestNode::start(NodeOpts::default());
    let mark = marker("timeout");
    let t = Instant::now();
    let out = node.run(&[
        "submit",
        "--wait",
        "--timeout",
        "1s",
        "--env",
        &format!("E2E_MARK={mark}"),
        "--",
        "sh",
        "-c",
        "setsid sleep 300 & sleep 300",
    ]);
    assert_eq!(exit_code(&out), 124, "stderr: {}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    let alive = processes_with_env(&format!("E2E_MARK={mark}"));
    assert!(
        alive.is_empty(),
        "processes of the timed-out job still alive: {alive:?}"
    );
    let jobs = node.jobs();
    assert_eq!(jobs[0]["state"], "timed_out");
    assert!(
        jobs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("timeout of 1s"),
        "{}",
        jobs[0]
    );
}

#[test]
fn cancelling_a_waited_job_exits_130_and_kills_its_tree() {
    let node = TestNode::start(NodeOpts::default());
    let mark = marker("cancel");
    let mut waiter = node
        .cli()
        .args([
            "submit",
            "--wait",
            "--env",
            &format!("E2E_MARK={mark}"),
            "--",
            "sh",
            "-c",
            "setsid sleep 300 & sleep 300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(waiter.stderr.take().unwrap());
    reader.read_line(&mut line).unwrap();
    // Keep draining its stderr so the waiting client never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    // "hodei: job N submitted; waiting"
    let id: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    node.wait_state(id, "running", Duration::from_secs(30));
    wait_for(
        Duration::from_secs(10),
        "the job's processes to exist",
        || (processes_with_env(&format!("E2E_MARK={mark}")).len() >= 2).then_some(()),
    );
    let out = node.ok(&["cancel", &id.to_string()]);
    assert!(out.contains(&format!("job {id}")), "{out}");
    let status = wait_for(
        Duration::from_secs(30),
        "the waiting submit to exit",
        || waiter.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(130));
    let alive = processes_with_env(&format!("E2E_MARK={mark}"));
    assert!(
        alive.is_empty(),
        "processes of the cancelled job still alive: {alive:?}"
    );
    let j = node.job(id);
    assert_eq!(j["state"], "cancelled");
    assert_eq!(j["reason"], "cancelled by user");
}

#[test]
fn the_same_idempotency_key_gives_one_job() {
    let node = TestNode::start(NodeOpts::default());
    let a = node.submit(&["--idempotency-key", "deploy-42"], &["true"]);
    let b = node.submit(&["--idempotency-key", "deploy-42"], &["true"]);
    assert_eq!(a, b);
    assert_eq!(node.jobs().len(), 1);
    // The same key with a different spec is a conflict, not a second job.
    let out = node.run(&["submit", "--idempotency-key", "deploy-42", "--", "false"]);
    assert_eq!(exit_code(&out), 125);
    assert!(stderr(&out).contains("different spec"), "{}", stderr(&out));
    assert_eq!(node.jobs().len(), 1);
}

#[test]
fn json_output_has_the_documented_fields_and_logs_are_retrievable() {
    let node = TestNode::start(NodeOpts::default());
    let id = node.submit(
        &[
            "--name",
            "greeter",
            "--priority",
            "high",
            "--label",
            "team=infra",
            "--tenant",
            "acme",
            "--retries",
            "2",
            "--cpu",
            "500m",
            "--memory",
            "64Mi",
        ],
        &["sh", "-c", "echo hello; echo world >&2"],
    );
    let j = node.wait_state(id, "succeeded", Duration::from_secs(30));
    for f in [
        "id",
        "name",
        "state",
        "exit_code",
        "attempts",
        "reason",
        "priority",
        "tenant",
        "labels",
        "worker",
        "submitted_at",
        "started_at",
        "finished_at",
    ] {
        assert!(j.get(f).is_some(), "field {f} missing in {j}");
    }
    assert_eq!(j["name"], "greeter");
    assert_eq!(j["priority"], "high");
    assert_eq!(j["tenant"], "acme");
    assert_eq!(j["labels"]["team"], "infra");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["attempts"], 1);
    assert_eq!(j["cpu"], "500m");
    let out = node.run(&["logs", &id.to_string()]);
    assert_eq!(stdout(&out), "hello\n");
    assert!(stderr(&out).contains("world"));
    let table = node.ok(&["jobs"]);
    assert!(
        table.contains("greeter") && table.contains("succeeded"),
        "{table}"
    );
    let filtered = node.ok(&["jobs", "--state", "failed", "-o", "json"]);
    assert_eq!(filtered.trim(), "[]");
    node.submit(&["--tenant", "other", "--label", "team=web"], &["true"]);
    let by_tenant: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["jobs", "--tenant", "acme", "-o", "json"])).unwrap();
    assert_eq!(by_tenant.len(), 1);
    assert_eq!(by_tenant[0]["id"], id);
    let by_label: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["jobs", "--label", "team=web", "-o", "json"])).unwrap();
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0]["tenant"], "other");
    let workers = node.ok(&["workers"]);
    assert!(workers.contains("local-1"), "{workers}");
    let pools = node.ok(&["pools"]);
    assert!(pools.contains("local"), "{pools}");
}

#[test]
fn a_failing_job_is_retried_with_backoff_then_fails_with_its_reason() {
    let node = TestNode::start(NodeOpts::default());
    let out = node.run(&[
        "submit",
        "--wait",
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        "echo try; exit 7",
    ]);
    assert_eq!(exit_code(&out), 7);
    assert_eq!(stdout(&out), "try\ntry\n", "both attempts' output");
    let j = &node.jobs()[0];
    assert_eq!(j["attempts"], 2);
    assert_eq!(j["state"], "failed");
    assert!(j["reason"].as_str().unwrap().contains("exit code 7"), "{j}");
}

#[test]
fn the_jobs_environment_is_its_spec_plus_hodei_variables_never_the_agents() {
    let node = TestNode::start(NodeOpts::default());
    let out = node.run(&["submit", "--wait", "--env", "COLOR=blue", "--", "env"]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let env = stdout(&out);
    assert!(env.contains("COLOR=blue"), "{env}");
    assert!(env.contains("HODEI_JOB_ID="), "{env}");
    assert!(env.contains("HODEI_JOB_ATTEMPT=1"), "{env}");
    assert!(env.contains("HODEI_JOB_WORKER=local-1"), "{env}");
    assert!(
        !env.contains(COOKIE),
        "the cookie leaked into the job: {env}"
    );
    assert!(!env.contains("HODEI_COOKIE"), "{env}");
    assert!(!env.contains("HODEI_AGENT_TOKEN"), "{env}");
}

#[test]
fn invalid_job_specs_are_refused_with_exit_2_and_change_nothing() {
    let node = TestNode::start(NodeOpts::default());
    let cases: &[(&[&str], &str)] = &[
        (&["submit", "--timeout", "0s", "--", "true"], "timeout"),
        (&["submit", "--cpu", "-1", "--", "true"], "negative"),
        (&["submit", "--memory", "100000Ti", "--", "true"], "64Ti"),
        (&["submit", "--cpu", "100000", "--", "true"], "cpu"),
        (
            &["submit", "--priority", "urgent", "--", "true"],
            "priority",
        ),
        (&["submit", "--"], "required"),
        (
            &["submit", "--label", "no-equals", "--", "true"],
            "KEY=VALUE",
        ),
        (
            &["submit", "--env", "HODEI_JOB_ID=1", "--", "true"],
            "reserved",
        ),
        (&["submit", "--shell", "--", " "], "empty"),
    ];
    for (args, needle) in cases {
        let out = node.run(args);
        assert_eq!(exit_code(&out), 2, "{args:?}: stderr {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            stderr(&out)
        );
    }
    assert!(node.jobs().is_empty(), "nothing was submitted");
}

#[test]
fn unknown_job_ids_and_wrong_cookies_get_clear_errors() {
    let node = TestNode::start(NodeOpts::default());
    let out = node.run(&["job", "999"]);
    assert_eq!(exit_code(&out), 1);
    assert!(
        stderr(&out).contains("no job with id 999"),
        "{}",
        stderr(&out)
    );
    let out = node.run(&["cancel", "999"]);
    assert!(
        stderr(&out).contains("no job with id 999"),
        "{}",
        stderr(&out)
    );
    let out = node.run(&["job", "abc"]);
    assert_eq!(exit_code(&out), 2);
    // A client with the wrong cookie is rejected, and the node logs it.
    let out = node
        .cli()
        .args(["jobs", "--cookie", "not-the-cookie"])
        .env_remove("HODEI_COOKIE")
        .output()
        .unwrap();
    assert_ne!(exit_code(&out), 0);
    assert!(stderr(&out).contains("wrong cookie"), "{}", stderr(&out));
    wait_for(
        Duration::from_secs(10),
        "the node to log the rejection",
        || node.log().contains("rejected a connection").then_some(()),
    );
    let out = node.run(&["submit", "--cookie", "bad-cookie-value", "--", "true"]);
    assert_eq!(exit_code(&out), 125, "{}", stderr(&out));
    // An agent with the wrong cookie never registers.
    let out = node
        .cli()
        .args([
            "agent",
            "--node",
            &node.addr,
            "--cookie",
            "wrong-cookie",
            "--worker-id",
            "intruder",
            "--pool",
            "local",
        ])
        .env_remove("HODEI_COOKIE")
        .output()
        .unwrap();
    assert_ne!(exit_code(&out), 0);
    assert!(stderr(&out).contains("wrong cookie"), "{}", stderr(&out));
    assert!(!node.ok(&["workers"]).contains("intruder"));
    // The node still serves.
    assert_eq!(exit_code(&node.run(&["submit", "--wait", "--", "true"])), 0);
}

#[test]
fn invalid_config_names_the_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\ncookie = \"long-enough-cookie\"\ndata_dir = \"/tmp/x\"\n[[pools]]\nname = \"p\"\nmin = 3\nmax = 1\n",
    )
    .unwrap();
    for cmd in [&["node", "--config"][..], &["config", "check"][..]] {
        let out = std::process::Command::new(hodei_bin())
            .args(cmd)
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(exit_code(&out), 2, "{cmd:?}");
        assert!(stderr(&out).contains("pools[0].min"), "{}", stderr(&out));
    }
    std::fs::write(
        &bad,
        "[node]\ncookie = \"long-enough-cookie\"\ndata_dir = \"/tmp/x\"\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(hodei_bin())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 2);
    assert!(
        stderr(&out).contains("node.listen") && stderr(&out).contains("nowhere"),
        "{}",
        stderr(&out)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/hodei.example.toml");
    let out = std::process::Command::new(hodei_bin())
        .args(["config", "check", example])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let out = std::process::Command::new(hodei_bin())
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 2);
}

#[test]
fn the_node_serves_prometheus_metrics() {
    let node = TestNode::start(NodeOpts::default());
    assert_eq!(exit_code(&node.run(&["submit", "--wait", "--", "true"])), 0);
    let addr = node.metrics_addr();
    let text = wait_for(Duration::from_secs(10), "the job gauges to refresh", || {
        let t = http_get(&addr, "/metrics");
        t.contains("hodei_jobs{state=\"succeeded\"} 1").then_some(t)
    });
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for series in [
        "hodei_job_submissions_total 1",
        "hodei_job_attempts_total 1",
        "hodei_jobs_finished_total{state=\"succeeded\"} 1",
        "hodei_workers{pool=\"local\",state=\"idle\"} 1",
        "hodei_journal_flush_seconds_count",
        "hodei_journal_entries_total",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}
