//! Crashes and recovery through real processes: `kill -9` of the node and of an agent, damaged
//! snapshots, data of another format version, and a crashed scheduler actor.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use hodei_runtime::store::{SnapshotSlot, testing};

#[test]
fn a_node_killed_with_sigkill_recovers_every_acknowledged_job() {
    let mut node = TestNode::start(NodeOpts {
        workers: 1,
        slots: 2,
        ..Default::default()
    });
    node.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let mark = marker("crash");
    let env = format!("E2E_MARK={mark}");
    // Two long jobs take both slots: one may be retried (it finishes quickly on its second
    // attempt), one may not.
    let flag = dir.path().join("second-attempt");
    let retried = node.submit(
        &["--retries", "1", "--env", &env, "--name", "retried"],
        &[
            "sh",
            "-c",
            &format!(
                "if [ -f {f} ]; then echo second; exit 0; fi; touch {f}; sleep 300",
                f = flag.display()
            ),
        ],
    );
    let doomed = node.submit(&["--env", &env, "--name", "doomed"], &["sleep", "300"]);
    node.wait_state(retried, "running", Duration::from_secs(30));
    node.wait_state(doomed, "running", Duration::from_secs(30));
    // Ten more wait in the queue.
    let queued: Vec<u64> = (0..10)
        .map(|i| node.submit(&["--name", &format!("q{i}")], &["sh", "-c", "echo queued"]))
        .collect();
    assert_eq!(
        node.jobs()
            .iter()
            .filter(|j| j["state"] == "pending")
            .count(),
        10
    );

    node.kill9();
    // The agents die with the node and take their jobs with them: nothing keeps running.
    wait_for(
        Duration::from_secs(20),
        "the crashed node's jobs to die",
        || processes_with_env(&env).is_empty().then_some(()),
    );

    node.restart();
    let jobs = node.jobs();
    assert_eq!(
        jobs.len(),
        12,
        "every acknowledged job is present after the restart"
    );
    for id in &queued {
        let j = node.wait_state(*id, "succeeded", Duration::from_secs(60));
        assert_eq!(j["attempts"], 1);
    }
    let r = node.wait_state(retried, "succeeded", Duration::from_secs(60));
    assert_eq!(r["attempts"], 2, "the running job was retried: {r}");
    assert_eq!(
        r["attempt_history"][0]["outcome"],
        "worker lost: node restarted"
    );
    assert_eq!(
        r["attempt_history"][1]["epoch"].as_u64().unwrap(),
        r["attempt_history"][0]["epoch"].as_u64().unwrap() + 1
    );
    let d = node.wait_state(doomed, "failed", Duration::from_secs(30));
    assert_eq!(d["reason"], "worker lost: node restarted");
    assert!(processes_with_env(&env).is_empty());
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    for damage in ["truncate", "corrupt"] {
        let mut node = TestNode::start(NodeOpts {
            snapshot_every: 10,
            ..Default::default()
        });
        let ids: Vec<u64> = (0..15)
            .map(|i| node.submit(&["--name", &format!("s{i}")], &["true"]))
            .collect();
        for id in &ids {
            node.wait_state(*id, "succeeded", Duration::from_secs(60));
        }
        node.stop();
        let store = node.data_dir().join("store");
        let (cur, prev) = testing::snapshot_indices(&store);
        assert!(
            cur.is_some() && prev.is_some(),
            "two snapshots were written: {cur:?} {prev:?}"
        );
        let damaged = match damage {
            "truncate" => testing::truncate_snapshot(&store, SnapshotSlot::Current),
            _ => testing::corrupt_snapshot(&store, SnapshotSlot::Current),
        };
        assert!(damaged);
        node.restart();
        let jobs = node.jobs();
        assert_eq!(jobs.len(), 15, "{damage}: every job survived");
        assert!(
            jobs.iter().all(|j| j["state"] == "succeeded"),
            "{damage}: {jobs:?}"
        );
        assert!(
            node.log().contains("snapshot is unreadable"),
            "{damage}: the fallback is logged"
        );
        // And the node works on.
        assert_eq!(exit_code(&node.run(&["submit", "--wait", "--", "true"])), 0);
    }
}

#[test]
fn data_of_an_unknown_format_version_is_refused_with_a_clear_message() {
    let mut node = TestNode::start(NodeOpts::default());
    node.submit(&[], &["true"]);
    node.stop();
    testing::set_format_version(&node.data_dir().join("store"), 999);
    let out = std::process::Command::new(hodei_bin())
        .args(["node", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    assert_ne!(exit_code(&out), 0);
    let err = stderr(&out);
    assert!(
        err.contains("format version 999") && err.contains("refusing"),
        "{err}"
    );
}

#[test]
fn an_agent_killed_mid_job_is_detected_and_its_jobs_retried_or_failed_worker_lost() {
    let node = TestNode::start(NodeOpts {
        workers: 1,
        slots: 2,
        ..Default::default()
    });
    node.wait_workers(1);
    let mark = marker("agentkill");
    let env = format!("E2E_MARK={mark}");
    let retried = node.submit(
        &["--retries", "1", "--env", &env],
        &["sh", "-c", "sleep 300"],
    );
    let once = node.submit(&["--env", &env], &["sleep", "300"]);
    node.wait_state(retried, "running", Duration::from_secs(30));
    node.wait_state(once, "running", Duration::from_secs(30));
    let w = &node.workers()[0];
    let pid = w["pid"].as_u64().unwrap() as i32;
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let f = node.wait_state(once, "failed", Duration::from_secs(10));
    let detected = t.elapsed();
    assert!(
        f["reason"].as_str().unwrap().starts_with("worker lost"),
        "{f}"
    );
    assert!(
        detected < Duration::from_secs(5),
        "detected after {detected:?} (heartbeat timeout is 2 s)"
    );
    // The retried job runs again on the replacement worker.
    let r = node.wait_state(retried, "running", Duration::from_secs(30));
    assert_eq!(r["attempts"], 2, "{r}");
    assert!(
        r["attempt_history"][0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("worker lost"),
        "{r}"
    );
    assert_ne!(r["worker"], w["id"], "it runs on a new worker");
    // What the dead agent left behind was killed; only the retry's processes remain.
    let lost_worker = w["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(10),
        "the dead agent's job processes to be killed",
        || {
            let left: Vec<u32> = processes_with_env(&env)
                .into_iter()
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/environ"))
                        .map(|e| {
                            e.split(|b| *b == 0).any(|kv| {
                                kv == format!("HODEI_JOB_WORKER={lost_worker}").as_bytes()
                            })
                        })
                        .unwrap_or(false)
                })
                .collect();
            left.is_empty().then_some(())
        },
    );
    node.ok(&["cancel", &retried.to_string()]);
    node.wait_state(retried, "cancelled", Duration::from_secs(30));
}

#[test]
fn a_crashed_scheduler_restarts_and_every_queued_job_runs_exactly_once() {
    let node = TestNode::start(NodeOpts {
        workers: 1,
        slots: 2,
        ..Default::default()
    });
    node.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    // The jobs hold their slots until the gate opens, so the rest stay queued.
    let gate = dir.path().join("gate");
    let ids: Vec<u64> = (0..50)
        .map(|_| {
            node.submit(
                &[],
                &[
                    "sh",
                    "-c",
                    &format!(
                        "while [ ! -e {gate} ]; do sleep 0.02; done; echo $HODEI_JOB_ID >> {ledger}",
                        gate = gate.display(),
                        ledger = ledger.display()
                    ),
                ],
            )
        })
        .collect();
    let pending = node
        .jobs()
        .iter()
        .filter(|j| j["state"] == "pending")
        .count();
    assert!(pending > 0, "jobs are queued when the scheduler crashes");
    node.ok(&["debug", "fault", "scheduler"]);
    std::fs::write(&gate, "").unwrap();
    for id in &ids {
        let j = node.wait_state(*id, "succeeded", Duration::from_secs(120));
        assert_eq!(j["attempts"], 1, "job {id} ran once: {j}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), 50, "every job ran exactly once: {lines:?}");
    assert_eq!(unique.len(), 50);
    assert!(
        node.log().contains("child failed") && node.log().contains("injected fault in scheduler")
    );
    assert!(
        node.log().contains("child restarted"),
        "the supervisor restarted the scheduler"
    );
}

#[test]
fn an_agent_that_loses_its_node_for_the_lease_stops_its_jobs_and_exits() {
    let node = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        ..Default::default()
    });
    node.wait_workers(1);
    let mark = marker("lease");
    let env = format!("E2E_MARK={mark}");
    let id = node.submit(
        &["--env", &env],
        &["sh", "-c", "setsid sleep 300 & sleep 300"],
    );
    node.wait_state(id, "running", Duration::from_secs(30));
    let agent = node.workers()[0]["pid"].as_u64().unwrap() as i32;
    wait_for(Duration::from_secs(10), "the job's processes", || {
        (processes_with_env(&env).len() >= 2).then_some(())
    });
    // Freeze the node: its sessions stay open but nothing answers (a hung control plane).
    let node_pid = nix::unistd::Pid::from_raw(node.pid().unwrap() as i32);
    nix::sys::signal::kill(node_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    // Lease 3 s + stop grace 1 s: the agent stops the job and exits on its own.
    wait_for(
        Duration::from_secs(20),
        "the agent to stop its job after losing its lease",
        || processes_with_env(&env).is_empty().then_some(()),
    );
    wait_for(Duration::from_secs(10), "the agent to exit", || {
        (nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), None).is_err()
            || std::fs::read_to_string(format!("/proc/{agent}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    let waited = frozen.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "not before the lease ran out: {waited:?}"
    );
    nix::sys::signal::kill(node_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let j = node.wait_state(id, "failed", Duration::from_secs(30));
    assert!(
        j["reason"].as_str().unwrap().starts_with("worker lost"),
        "{j}"
    );
}
