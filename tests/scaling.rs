//! End-to-end tests of pools and the autoscaler with the local-process provider: a dynamic pool
//! grows from zero within its step and cooldown rules and shrinks back after the idle time
//! without losing or killing a job; a static pool keeps its warm workers; an ephemeral pool
//! retires each worker after its one job.

mod common;

use std::time::Duration;

use common::{NodeOpts, TestNode, tail, wait_for};

const POOLS: &str = r#"
[[pools]]
name = "burst"
provider = "local"
min = 0
max = 4
idle_timeout = "1s"
register_timeout = "20s"
[pools.template]
slots = 2
cpu = "2"
memory = "1Gi"
[pools.scaling]
max_step_up = 2
scale_up_cooldown_ms = 1000
scale_down_cooldown_ms = 1000

[[pools]]
name = "warm"
provider = "local"
min = 1
max = 2
idle_timeout = "1s"
register_timeout = "20s"
[pools.template]
slots = 1
cpu = "1"
memory = "1Gi"
capabilities = ["fast-disk"]
env = { TEAM = "infra" }
command = ["nice", "-n", "5"]

[[pools]]
name = "eph"
provider = "local"
min = 0
max = 2
register_timeout = "20s"
[pools.template]
slots = 1
cpu = "1"
memory = "1Gi"
[pools.scaling]
ephemeral = true
"#;

fn pool_workers<'a>(ws: &'a [serde_json::Value], pool: &str) -> Vec<&'a serde_json::Value> {
    ws.iter().filter(|w| w["pool"] == pool).collect()
}

fn live(w: &serde_json::Value) -> bool {
    w["state"] != "terminated"
}

#[test]
fn a_dynamic_pool_grows_from_zero_within_its_steps_and_cooldown_and_shrinks_back_losing_nothing() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        extra: POOLS.into(),
        ..NodeOpts::default()
    });
    n.wait_workers(2); // local + warm
    assert!(
        pool_workers(&n.workers(), "burst").is_empty(),
        "a dynamic pool starts empty"
    );
    let ids: Vec<u64> = (0..40)
        .map(|_| n.submit(&["--selector", "hodei.io/pool=burst"], &["sleep", "1"]))
        .collect();
    // Grows to max, never beyond it.
    let mut peak = 0;
    wait_for(
        Duration::from_secs(60),
        "the burst pool at its max of 4",
        || {
            let ws = n.workers();
            let up = pool_workers(&ws, "burst")
                .into_iter()
                .filter(|w| live(w))
                .count();
            peak = peak.max(up);
            assert!(up <= 4, "the pool went over its max: {up} live workers");
            (up == 4).then_some(())
        },
    );
    for id in &ids {
        let j = n.wait_state(*id, "succeeded", Duration::from_secs(120));
        assert_eq!(j["attempts"], 1, "job {id} ran once, never killed: {j}");
    }
    // Each decision starts at most 2 workers (max_step_up) and scale-ups are at least the 1 s
    // cooldown apart. Workers of one decision are journaled back to back: group them.
    let ws = n.workers();
    let mut provisioned: Vec<i64> = pool_workers(&ws, "burst")
        .iter()
        .map(|w| w["provisioned_at_ms"].as_i64().expect("provisioned_at_ms"))
        .collect();
    provisioned.sort();
    assert_eq!(
        provisioned.len(),
        4,
        "exactly max workers were ever started: {ws:?}"
    );
    let mut steps: Vec<Vec<i64>> = Vec::new();
    for t in provisioned.iter().copied() {
        match steps.last_mut() {
            Some(step) if t - step[0] < 500 => step.push(t),
            _ => steps.push(vec![t]),
        }
    }
    assert!(
        steps.iter().all(|s| s.len() <= 2),
        "at most 2 workers per decision: {steps:?}"
    );
    assert!(
        steps.windows(2).all(|w| w[1][0] - w[0][0] >= 1000),
        "scale-ups at least the 1 s cooldown apart: {steps:?}"
    );
    // Back to min (0) after the idle time, the workers drained rather than killed.
    wait_for(
        Duration::from_secs(60),
        "the burst pool back at 0 workers",
        || {
            let ws = n.workers();
            pool_workers(&ws, "burst")
                .iter()
                .all(|w| !live(w))
                .then_some(())
        },
    );
    for w in pool_workers(&n.workers(), "burst") {
        let reason = w["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("idle timeout"),
            "retired for being idle: {w}"
        );
    }
    // The static pool kept its warm worker through all of this, idle far past its idle time.
    let warm: Vec<serde_json::Value> = pool_workers(&n.workers(), "warm")
        .into_iter()
        .filter(|w| live(w))
        .cloned()
        .collect();
    assert_eq!(
        warm.len(),
        1,
        "min 1 stays warm: {warm:?}\n{}",
        tail(&n.log(), 40)
    );
    let out = n.ok(&["pools"]);
    assert!(out.contains("burst"), "{out}");
    // The pool's series: scale events by kind, provisioning latency, idle worker-seconds,
    // utilisation, workers per state.
    let text = wait_for(
        Duration::from_secs(20),
        "the pool's series on /metrics",
        || {
            let text = common::http_get(&n.metrics_addr(), "/metrics");
            text.contains("hodei_workers{pool=\"burst\",state=\"terminated\"} 4")
                .then_some(text)
        },
    );
    for series in [
        "hodei_scale_events_total{pool=\"burst\",kind=\"scale_up\"}",
        "hodei_scale_events_total{pool=\"burst\",kind=\"scale_down\"}",
        "hodei_provisioning_seconds_count{pool=\"burst\"} 4",
        "hodei_idle_worker_seconds_total{pool=\"burst\"}",
        "hodei_pool_utilisation{pool=\"burst\"}",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
}

#[test]
fn a_job_on_a_static_pool_starts_on_a_warm_worker_without_provisioning() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        extra: POOLS.into(),
        ..NodeOpts::default()
    });
    n.wait_workers(2);
    let before = pool_workers(&n.workers(), "warm")
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(before.len(), 1);
    let id = n.submit(
        &["--selector", "capability.fast-disk=true", "--shell"],
        &["echo $TEAM $(nice)"],
    );
    let j = n.wait_state(id, "succeeded", Duration::from_secs(30));
    assert_eq!(j["worker"].as_str(), Some(before[0].as_str()), "{j}");
    // The template's capability (a label), environment and command reached the job.
    let out = n.ok(&["logs", &id.to_string()]);
    assert_eq!(
        out.trim(),
        "infra 5",
        "job env from the template, agent under nice -n 5"
    );
    assert_eq!(
        pool_workers(&n.workers(), "warm").len(),
        1,
        "no worker was provisioned for it"
    );
}

#[test]
fn an_ephemeral_pool_retires_each_worker_after_its_one_job() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        extra: POOLS.into(),
        ..NodeOpts::default()
    });
    n.wait_workers(2);
    let ids: Vec<u64> = (0..3)
        .map(|_| n.submit(&["--selector", "hodei.io/pool=eph"], &["sleep", "0.2"]))
        .collect();
    let mut workers = Vec::new();
    for id in &ids {
        let j = n.wait_state(*id, "succeeded", Duration::from_secs(60));
        workers.push(j["worker"].as_str().unwrap().to_string());
    }
    workers.sort();
    workers.dedup();
    assert_eq!(
        workers.len(),
        3,
        "each job had a worker of its own: {workers:?}"
    );
    wait_for(
        Duration::from_secs(30),
        "every ephemeral worker retired",
        || {
            let ws = n.workers();
            let eph = pool_workers(&ws, "eph");
            (eph.len() == 3
                && eph
                    .iter()
                    .all(|w| w["state"] == "terminated" && w["jobs_completed"] == 1))
            .then_some(())
        },
    );
}

#[test]
fn a_provider_that_fails_every_start_is_backed_off_and_the_pool_is_served_by_the_next_one() {
    let n = TestNode::start(NodeOpts {
        workers: 1,
        slots: 1,
        extra: r#"
[providers.broken]
kind = "local"
binary = "/nonexistent/hodei"
cost_per_second = 0.001

[providers.good]
kind = "local"
cost_per_second = 0.01

[[pools]]
name = "multi"
provider = "local"
providers = ["broken", "good"]
min = 0
max = 2
register_timeout = "20s"
[pools.template]
slots = 1
cpu = "1"
memory = "1Gi"
[pools.scaling]
provider_strategy = "lowest_cost"
scale_up_cooldown_ms = 0
"#
        .into(),
        ..NodeOpts::default()
    });
    n.wait_workers(1);
    let ids: Vec<u64> = (0..2)
        .map(|_| n.submit(&["--selector", "hodei.io/pool=multi"], &["true"]))
        .collect();
    for id in &ids {
        n.wait_state(*id, "succeeded", Duration::from_secs(60));
    }
    let pools: Vec<serde_json::Value> =
        serde_json::from_str(&n.ok(&["pools", "-o", "json"])).expect("pools json");
    let multi = pools
        .iter()
        .find(|p| p["name"] == "multi")
        .expect("pool multi");
    assert!(
        multi["provisioning_failures"].as_u64().unwrap_or(0) >= 1,
        "the cheap provider was tried first and failed: {multi}"
    );
    let lines = multi["providers"].to_string();
    assert!(
        lines.contains("broken: backing off") && lines.contains("/nonexistent/hodei"),
        "the failure is visible with its reason: {lines}"
    );
    let table = n.ok(&["pools"]);
    assert!(table.contains("broken: backing off"), "{table}");
    // The good provider's worker is paid for: the pool's cost accrues.
    wait_for(
        Duration::from_secs(20),
        "the pool's cost on /metrics",
        || {
            let text = common::http_get(&n.metrics_addr(), "/metrics");
            text.contains("hodei_pool_cost_total{pool=\"multi\"}")
                .then_some(())
        },
    );
}
