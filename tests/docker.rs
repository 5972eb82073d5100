//! End-to-end tests of the Docker provider against this machine's Docker engine: real `hodei
//! node` processes whose workers are containers built from the `hodei` binary under test.
//!
//! When `docker info` fails they print "skipped: no Docker engine" — unless
//! `HODEI_REQUIRE_DOCKER=1` (set by `.ci/run` whenever `docker info` works), where a skip is a
//! failure. The unreachable-engine test needs no engine and always runs. Every test removes the
//! containers of its cluster and checks that none is left.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Whether the engine is there; panics when it must be and is not.
fn docker_available() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("HODEI_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "HODEI_REQUIRE_DOCKER=1 but `docker info` fails"
        );
        eprintln!("skipped: no Docker engine");
    }
    ok
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The cluster id the node logged at start.
fn cluster_id(node: &TestNode) -> String {
    wait_for(
        Duration::from_secs(30),
        "the node's cluster id in its log",
        || {
            strip_ansi(&node.log()).lines().find_map(|l| {
                let i = l.find("cluster_id=")?;
                Some(
                    l[i + "cluster_id=".len()..]
                        .split_whitespace()
                        .next()?
                        .to_string(),
                )
            })
        },
    )
}

/// The text without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Container ids of a cluster (`all`: stopped ones too).
fn containers(cluster: &str, all: bool) -> Vec<String> {
    let filter = format!("label=hodei.io/cluster={cluster}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    docker(&args)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Removes whatever a test left of its cluster (also when it fails).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in containers(&self.0, true) {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
    }
}

fn docker_config(pool: &str, min: u32, max: u32, template: &str) -> String {
    format!(
        r#"
[providers.docker]
kind = "docker"
health_interval = "1s"

[[pools]]
name = "{pool}"
providers = ["docker"]
min = {min}
max = {max}
idle_timeout = "60s"
register_timeout = "120s"
[pools.template]
{template}
[pools.scaling]
scale_up_cooldown_ms = 0
max_step_up = 3
"#
    )
}

/// Stops the node gracefully and checks its containers are gone.
fn stop_and_check_clean(node: &mut TestNode, cluster: &str) {
    node.stop();
    let left = containers(cluster, true);
    assert!(
        left.is_empty(),
        "the node's shutdown removes its containers; left: {left:?}"
    );
}

#[test]
fn a_docker_pool_scales_from_zero_to_three_and_runs_100_jobs_with_logs_and_exit_codes() {
    if !docker_available() {
        return;
    }
    let mut node = TestNode::start(NodeOpts {
        workers: 0,
        extra: docker_config(
            "boxes",
            0,
            3,
            "slots = 4\ncpu = \"1\"\nmemory = \"256Mi\"\nlabels = { kind = \"container\" }",
        ),
        ..Default::default()
    });
    let cluster = cluster_id(&node);
    let _cleanup = Cleanup(cluster.clone());
    assert!(containers(&cluster, true).is_empty(), "a pool at zero");

    let mut ids = Vec::new();
    for i in 0..100 {
        let script = format!("echo job-{i} in $HODEI_JOB_POOL; sleep 0.3; exit {}", i % 4);
        ids.push((
            i,
            node.submit(
                &["--name", &format!("j{i}"), "--cpu", "250m", "--shell"],
                &[&script],
            ),
        ));
    }
    // The queue makes the autoscaler grow the pool to its maximum.
    wait_for(Duration::from_secs(180), "3 worker containers", || {
        (containers(&cluster, false).len() == 3).then_some(())
    });
    for (i, id) in &ids {
        let j = node.wait_state(*id, "terminal", Duration::from_secs(300));
        let code = (i % 4) as i64;
        assert_eq!(j["exit_code"].as_i64(), Some(code), "job {i}: {j}");
        assert_eq!(
            j["state"],
            if code == 0 { "succeeded" } else { "failed" },
            "job {i}: {j}"
        );
        let logs = node.ok(&["logs", &id.to_string()]);
        assert!(
            logs.contains(&format!("job-{i} in boxes")),
            "job {i}: {logs}"
        );
    }
    let ws = node.workers();
    let used: std::collections::BTreeSet<_> = ids
        .iter()
        .map(|(_, id)| node.job(*id)["worker"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(used.len() >= 2, "jobs ran in several containers: {used:?}");
    for c in containers(&cluster, false) {
        let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &c]);
        let labels: serde_json::Value = serde_json::from_str(&labels).expect("labels");
        assert_eq!(labels["hodei.io/cluster"], cluster.as_str());
        assert_eq!(labels["hodei.io/pool"], "boxes");
        assert_eq!(labels["hodei.io/node"], "e2e");
        let worker = labels["hodei.io/worker"].as_str().expect("worker label");
        assert!(
            ws.iter().any(|w| w["id"] == worker),
            "container of a known worker {worker}"
        );
        assert_eq!(
            docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &c]),
            "1000000000"
        );
        assert_eq!(
            docker(&["inspect", "-f", "{{.HostConfig.Memory}}", &c]),
            (256u64 << 20).to_string()
        );
    }
    stop_and_check_clean(&mut node, &cluster);
}

#[test]
fn a_killed_container_is_a_lost_worker_and_its_job_is_retried_elsewhere() {
    if !docker_available() {
        return;
    }
    let mut node = TestNode::start(NodeOpts {
        workers: 0,
        extra: docker_config("kill", 2, 2, "slots = 1\ncpu = \"1\"\nmemory = \"256Mi\""),
        ..Default::default()
    });
    let cluster = cluster_id(&node);
    let _cleanup = Cleanup(cluster.clone());
    node.wait_workers(2);
    // The first attempt runs long; the retry finishes at once.
    let id = node.submit(
        &["--retries", "1", "--shell"],
        &["if [ \"$HODEI_JOB_ATTEMPT\" = 1 ]; then sleep 120; fi; echo done"],
    );
    let j = node.wait_state(id, "running", Duration::from_secs(60));
    let victim = j["worker"].as_str().expect("worker").to_string();
    let filter = format!("label=hodei.io/worker={victim}");
    let cfilter = format!("label=hodei.io/cluster={cluster}");
    let c = docker(&["ps", "-q", "--filter", &filter, "--filter", &cfilter]);
    assert!(!c.is_empty(), "the container of worker {victim}");
    docker(&["kill", &c]);

    let j = node.wait_state(id, "succeeded", Duration::from_secs(120));
    assert_eq!(j["attempts"], 2, "{j}");
    let first = &j["attempt_history"][0];
    assert_eq!(first["worker"], victim.as_str());
    let outcome = first["outcome"].as_str().unwrap_or("");
    assert!(outcome.contains("worker lost"), "{j}");
    assert_ne!(
        j["attempt_history"][1]["worker"],
        victim.as_str(),
        "retried on another worker: {j}"
    );
    let w = node
        .workers()
        .into_iter()
        .find(|w| w["id"] == victim.as_str())
        .expect("the killed worker");
    assert_eq!(w["state"], "terminated", "{w}");
    let reason = w["reason"].as_str().unwrap_or("");
    eprintln!("killed worker: {reason}; attempt 1: {outcome}");
    assert!(
        reason.contains("lost") || reason.contains("container exited"),
        "the worker's reason says what happened: {w}"
    );
    stop_and_check_clean(&mut node, &cluster);
}

#[test]
fn a_job_over_its_container_memory_limit_fails_as_out_of_memory() {
    if !docker_available() {
        return;
    }
    let mut node = TestNode::start(NodeOpts {
        workers: 0,
        extra: docker_config("small", 1, 1, "slots = 2\ncpu = \"1\"\nmemory = \"96Mi\""),
        ..Default::default()
    });
    let cluster = cluster_id(&node);
    let _cleanup = Cleanup(cluster.clone());
    node.wait_workers(1);
    // dd allocates its whole 256 MiB block: the kernel kills it inside the container's limit.
    let hog = node.submit(
        &["--name", "hog"],
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    );
    let j = node.wait_state(hog, "failed", Duration::from_secs(60));
    let reason = j["reason"].as_str().unwrap_or("");
    assert!(reason.contains("out of memory"), "{j}");
    // Through a shell (exit status 137) too, and the worker survives: a later job runs there.
    let hog2 = node.submit(
        &["--shell"],
        &["dd if=/dev/zero of=/dev/null bs=256M count=1"],
    );
    let j = node.wait_state(hog2, "failed", Duration::from_secs(60));
    assert!(
        j["reason"].as_str().unwrap_or("").contains("out of memory"),
        "{j}"
    );
    // A job killed by another SIGKILL is not called out of memory.
    let killed = node.submit(&["--shell"], &["kill -9 $$"]);
    let j = node.wait_state(killed, "failed", Duration::from_secs(60));
    assert!(
        !j["reason"].as_str().unwrap_or("").contains("out of memory"),
        "{j}"
    );
    let ok = node.submit(&[], &["echo", "fine"]);
    node.wait_state(ok, "succeeded", Duration::from_secs(60));
    stop_and_check_clean(&mut node, &cluster);
}

#[test]
fn a_restarted_node_reclaims_orphan_containers() {
    if !docker_available() {
        return;
    }
    let mut node = TestNode::start(NodeOpts {
        workers: 0,
        extra: docker_config("orph", 1, 1, "slots = 1\ncpu = \"1\"\nmemory = \"128Mi\""),
        ..Default::default()
    });
    let cluster = cluster_id(&node);
    let _cleanup = Cleanup(cluster.clone());
    node.wait_workers(1);
    let first = containers(&cluster, true);
    assert_eq!(first.len(), 1, "{first:?}");
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &first[0]]);
    node.kill9();
    // While the node is down, something else left a container labelled with this cluster.
    let ghost = docker(&[
        "run",
        "-d",
        "--label",
        &format!("hodei.io/cluster={cluster}"),
        "--label",
        "hodei.io/provider=docker",
        "--label",
        "hodei.io/worker=orph-999",
        &image,
        "/bin/sleep",
        "300",
    ]);
    node.restart();
    node.wait_workers(1);
    let now = wait_for(Duration::from_secs(60), "the orphans removed", || {
        let c = containers(&cluster, true);
        (c.len() == 1).then_some(c)
    });
    assert!(!now.contains(&ghost), "the ghost container was removed");
    assert!(
        !now.contains(&first[0]),
        "the dead node's container was removed"
    );
    assert!(node.log().contains("removed orphan containers"), "logged");
    stop_and_check_clean(&mut node, &cluster);
}

#[test]
fn a_restarted_docker_provider_adopts_the_containers_of_live_workers() {
    if !docker_available() {
        return;
    }
    let mut node = TestNode::start(NodeOpts {
        workers: 0,
        extra: docker_config("adopt", 1, 1, "slots = 1\ncpu = \"1\"\nmemory = \"128Mi\""),
        ..Default::default()
    });
    let cluster = cluster_id(&node);
    let _cleanup = Cleanup(cluster.clone());
    node.wait_workers(1);
    let before = containers(&cluster, false);
    assert_eq!(before.len(), 1, "{before:?}");
    let worker = node.workers()[0]["id"].as_str().expect("id").to_string();
    node.ok(&["debug", "fault", "provider:docker"]);
    wait_for(Duration::from_secs(30), "the provider restarted", || {
        strip_ansi(&node.log())
            .contains("injected fault in docker provider")
            .then_some(())
    });
    // The restarted provider adopts the live worker's container instead of removing it: the
    // worker keeps running jobs, and scale-down / shutdown still remove its container.
    let id = node.submit(&[], &["echo", "still here"]);
    let j = node.wait_state(id, "succeeded", Duration::from_secs(60));
    assert_eq!(j["worker"], worker.as_str(), "{j}");
    assert_eq!(containers(&cluster, false), before, "the same container");
    stop_and_check_clean(&mut node, &cluster);
}

#[test]
fn an_unreachable_engine_makes_the_provider_unhealthy_and_nothing_crashes() {
    // Needs no engine: the socket does not exist.
    let mut node = TestNode::start(NodeOpts {
        workers: 1,
        extra: r#"
[providers.docker]
kind = "docker"
host = "unix:///nonexistent/docker.sock"
health_interval = "500ms"

[[pools]]
name = "ghost"
providers = ["docker"]
min = 1
max = 2
"#
        .to_string(),
        ..Default::default()
    });
    let pools = wait_for(
        Duration::from_secs(30),
        "the docker provider reported unhealthy",
        || {
            let out = node.ok(&["pools"]);
            out.contains("docker: unhealthy").then_some(out)
        },
    );
    assert!(
        pools.contains("/nonexistent/docker.sock"),
        "the error names the socket: {pools}"
    );
    // A job for the docker pool waits, saying why; the local pool still runs jobs.
    let stuck = node.submit(&["--selector", "hodei.io/pool=ghost"], &["true"]);
    let fine = node.submit(&["--selector", "hodei.io/pool=local"], &["true"]);
    node.wait_state(fine, "succeeded", Duration::from_secs(60));
    let j = node.job(stuck);
    assert_eq!(j["state"], "pending", "{j}");
    assert!(node.pid().is_some());
    let pid = node.pid().expect("pid");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the node is still running"
    );
    node.stop();
    assert!(
        !node.log().contains("panicked"),
        "no panic: {}",
        tail(&node.log(), 40)
    );
}
