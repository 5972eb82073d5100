//! End-to-end tests of the scheduling pipeline through real nodes and local agents: taints and
//! tolerations, preemption, weighted fair share, strict FCFS, unschedulable reasons and deadlines,
//! `NoExecute` evictions, and the scheduler's series on `/metrics` and `hodei metrics`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{NodeOpts, TestNode, http_get, tail, wait_for};

/// The pool of each worker, by worker id.
fn pools_by_worker(n: &TestNode) -> BTreeMap<String, String> {
    n.workers()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or_default().to_string(),
                w["pool"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn worker_of(j: &serde_json::Value) -> String {
    j["worker"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_gpu_tainted_worker_only_receives_jobs_that_tolerate_its_taint() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 4,
        extra: r#"
[[pools]]
name = "gpu"
provider = "local"
min = 1
max = 1
register_timeout = "20s"
[pools.template]
slots = 4
cpu = "4"
memory = "4Gi"
gpu = 1
labels = { accelerator = "gpu" }
taints = ["dedicated=gpu:NoSchedule"]
"#
        .into(),
        ..NodeOpts::default()
    });
    n.wait_workers(2);
    let pools = pools_by_worker(&n);
    let plain: Vec<u64> = (0..8).map(|_| n.submit(&[], &["sleep", "0.2"])).collect();
    let tolerating: Vec<u64> = (0..4)
        .map(|_| {
            n.submit(
                &[
                    "--toleration",
                    "dedicated=gpu:NoSchedule",
                    "--selector",
                    "accelerator=gpu",
                ],
                &["sleep", "0.2"],
            )
        })
        .collect();
    for id in &plain {
        let j = n.wait_state(*id, "succeeded", Duration::from_secs(60));
        assert_eq!(
            pools.get(&worker_of(&j)).map(String::as_str),
            Some("local"),
            "job {id} without a toleration ran on {}",
            worker_of(&j)
        );
    }
    for id in &tolerating {
        let j = n.wait_state(*id, "succeeded", Duration::from_secs(60));
        assert_eq!(
            pools.get(&worker_of(&j)).map(String::as_str),
            Some("gpu"),
            "job {id} with the toleration and selector ran on {}",
            worker_of(&j)
        );
    }
    // The explanation of a plain job names the taint that kept it off the gpu worker.
    let out = n.ok(&["job", &plain[0].to_string()]);
    assert!(
        out.contains("untolerated taint dedicated=gpu"),
        "hodei job shows the filter counts:\n{out}"
    );
}

#[test]
fn a_critical_job_preempts_a_batch_job_on_a_full_pool_and_the_batch_job_completes_later() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        ..NodeOpts::default()
    });
    n.wait_workers(1);
    let batch = n.submit(&["--priority", "batch"], &["sleep", "2"]);
    n.wait_state(batch, "running", Duration::from_secs(30));
    let critical = n.submit(&["--priority", "critical"], &["sleep", "0.3"]);
    let c = n.wait_state(critical, "succeeded", Duration::from_secs(30));
    let b = n.wait_state(batch, "succeeded", Duration::from_secs(60));
    let history = b["attempt_history"].as_array().expect("attempt history");
    assert!(
        history.len() >= 2,
        "the batch job ran again after its preemption: {b}"
    );
    assert!(
        history[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("by job {critical}")),
        "the first attempt ended preempted by the critical job: {b}"
    );
    assert_eq!(
        b["max_retries"], 0,
        "no retry was needed: preemption is not charged"
    );
    assert!(
        c["finished_at"].as_str() <= history[1]["started_at"].as_str(),
        "the critical job finished before the batch job started again:\n{c}\n{b}"
    );
    // The scheduler's series on the Prometheus endpoint and through `hodei metrics`.
    let text = http_get(&n.metrics_addr(), "/metrics");
    for series in [
        "hodei_preemptions_total 1",
        "hodei_scheduling_latency_seconds_count",
        "hodei_queue_wait_seconds_count",
        "# TYPE hodei_queue_depth gauge",
        "hodei_worker_utilisation{",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
    let cli = n.ok(&["metrics"]);
    assert!(
        cli.contains("hodei_preemptions_total 1"),
        "hodei metrics shows preemptions:\n{cli}"
    );
}

#[test]
fn two_tenants_weighted_three_to_one_share_a_saturated_pool_three_to_one() {
    let n = TestNode::start(NodeOpts {
        workers: 2,
        slots: 8,
        extra: r#"
[scheduler.profiles.default]
queue = "fair"
preemption = false
tenant_weights = { alpha = 3, beta = 1 }
"#
        .into(),
        ..NodeOpts::default()
    });
    n.wait_workers(2);
    // Hold every slot until both tenants' queues are in, so the split is the scheduler's.
    let gate = n.dir.path().join("gate");
    let wait_gate = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
    let blockers: Vec<u64> = (0..16)
        .map(|_| {
            n.submit(
                &["--tenant", "gamma", "--cpu", "500m", "--shell"],
                &[&wait_gate],
            )
        })
        .collect();
    for b in &blockers {
        n.wait_state(*b, "running", Duration::from_secs(30));
    }
    for _ in 0..24 {
        n.submit(&["--tenant", "alpha", "--cpu", "500m"], &["sleep", "60"]);
        n.submit(&["--tenant", "beta", "--cpu", "500m"], &["sleep", "60"]);
    }
    std::fs::write(&gate, b"").expect("open the gate");
    let (alpha, beta) = wait_for(
        Duration::from_secs(60),
        "16 running jobs of alpha and beta",
        || {
            let jobs = n.jobs();
            let running = |t: &str| {
                jobs.iter()
                    .filter(|j| j["tenant"] == t && j["state"] == "running")
                    .count()
            };
            let (a, b) = (running("alpha"), running("beta"));
            (a + b == 16).then_some((a, b))
        },
    );
    let share = alpha as f64 / 16.0;
    assert!(
        (0.675..=0.825).contains(&share),
        "alpha (weight 3) holds {alpha} and beta (weight 1) {beta} of 16 slots; 3:1 is 12:4\n{}",
        tail(&n.log(), 40)
    );
}

#[test]
fn a_strict_fcfs_queue_keeps_a_small_job_behind_a_wide_one_that_waits_for_capacity() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 4,
        extra: r#"
[scheduler.profiles.default]
queue = "fcfs"
preemption = false
"#
        .into(),
        ..NodeOpts::default()
    });
    n.wait_workers(1);
    // 3 of the worker's 4 cpus held until the gate opens.
    let gate = n.dir.path().join("gate");
    let wait_gate = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
    let blocker = n.submit(&["--cpu", "3", "--shell"], &[&wait_gate]);
    n.wait_state(blocker, "running", Duration::from_secs(30));
    let wide = n.submit(&["--cpu", "2"], &["true"]);
    let small = n.submit(&["--cpu", "1"], &["true"]);
    // The small job would fit now (first fit would start it); fcfs keeps it behind the wide one.
    let reason = wait_for(
        Duration::from_secs(30),
        "the small job queued behind",
        || {
            let j = n.job(small);
            let r = j["reason"].as_str().unwrap_or_default().to_string();
            (j["state"] == "pending" && r.contains("(fcfs: waits its turn)")).then_some(r)
        },
    );
    assert_eq!(reason, format!("behind job {wide} (fcfs: waits its turn)"));
    assert_eq!(n.job(wide)["state"], "pending");
    std::fs::write(&gate, b"").expect("open the gate");
    let w = n.wait_state(wide, "succeeded", Duration::from_secs(60));
    let s = n.wait_state(small, "succeeded", Duration::from_secs(60));
    let started = |j: &serde_json::Value| j["attempt_history"][0]["started_at"].clone();
    assert!(
        started(&w).as_str() <= started(&s).as_str(),
        "the wide job started first:\n{w}\n{s}"
    );
    // Waiting its turn is not a scheduling failure.
    let text = http_get(&n.metrics_addr(), "/metrics");
    assert!(
        !text.contains("hodei_scheduling_failures_total{reason=\"insufficient cpu\"}"),
        "{text}"
    );
}

#[test]
fn a_job_with_an_impossible_selector_reports_why_and_fails_at_its_deadline() {
    let n = TestNode::start(NodeOpts::default());
    n.wait_workers(1);
    let id = n.submit(
        &["--selector", "zone=mars", "--scheduling-deadline", "3s"],
        &["true"],
    );
    let pending = wait_for(Duration::from_secs(30), "a pending reason", || {
        let j = n.job(id);
        let r = j["reason"].as_str().unwrap_or_default().to_string();
        (j["state"] == "pending" && r.contains("workers fit")).then_some(r)
    });
    assert!(
        pending.starts_with("0/1 workers fit: 1 node selector mismatch"),
        "{pending}"
    );
    // The autoscaler knows no pool could ever run it (so it does not scale for it), and says so.
    let pending = wait_for(Duration::from_secs(30), "the unservable reason", || {
        let r = n.job(id)["reason"].as_str().unwrap_or_default().to_string();
        r.contains("no pool can run").then_some(r)
    });
    assert!(
        pending.contains("local: node selector mismatch"),
        "{pending}"
    );
    let j = n.wait_state(id, "failed", Duration::from_secs(30));
    let reason = j["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("scheduling deadline exceeded")
            && reason.contains("0/1 workers fit: 1 node selector mismatch"),
        "{reason}"
    );
    assert_eq!(j["attempts"], 0);
    let text = http_get(&n.metrics_addr(), "/metrics");
    for series in [
        "hodei_scheduling_failures_total{reason=\"node selector mismatch\"}",
        "hodei_scheduling_deadline_failures_total 1",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
}

#[test]
fn a_no_execute_taint_evicts_intolerant_jobs_at_once_and_tolerating_ones_after_their_seconds() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 4,
        ..NodeOpts::default()
    });
    n.wait_workers(1);
    let worker = n.workers()[0]["id"].as_str().unwrap().to_string();
    let intolerant = n.submit(&[], &["sleep", "60"]);
    let tolerant = n.submit(
        &["--toleration", "maintenance:NoExecute:2"],
        &["sleep", "60"],
    );
    n.wait_state(intolerant, "running", Duration::from_secs(30));
    n.wait_state(tolerant, "running", Duration::from_secs(30));
    n.ok(&["taint", &worker, "maintenance:NoExecute"]);
    let j = n.wait_state(intolerant, "pending", Duration::from_secs(10));
    assert!(
        j["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("untolerated taint maintenance"),
        "{j}"
    );
    // Still running right after the intolerant one was evicted; evicted within its 2 s.
    assert_eq!(n.job(tolerant)["state"], "running");
    let t = n.wait_state(tolerant, "pending", Duration::from_secs(15));
    let h = t["attempt_history"].as_array().unwrap();
    assert!(
        h[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("NoExecute"),
        "{t}"
    );
    // The taint stays: neither job can come back while it is there.
    let j = n.job(intolerant);
    assert_eq!(j["state"], "pending", "{j}");
    n.ok(&["taint", &worker, "--remove", "maintenance"]);
    n.wait_state(intolerant, "running", Duration::from_secs(30));
    n.wait_state(tolerant, "running", Duration::from_secs(30));
}
