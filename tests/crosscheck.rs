//! Cross-check of the simulator against the real actors: one small workload runs through
//! `hodei-simulations` and through a real `hodei node` with local agents, on three one-worker
//! pools that differ in cpu, memory, slots and labels. Per job, the pool it ran on and its
//! outcome (succeeded, failed with its exit code, or never placed with the scheduler's summary)
//! must agree.
//!
//! Real time is made to follow the simulator's order of events: the simulator runs first, and
//! its arrivals and ends, sorted by virtual time, are replayed against the node — a job is
//! submitted at its arrival and released (its process waits for a marker file, then exits with
//! its code) at the end the simulator computed. After each event the test waits until the node
//! has settled in the state the simulator had at that instant (the same jobs running on the same
//! pools, the same ones pending or ended); a node that settles elsewhere fails the test with the
//! difference. The placements themselves are the node's own decisions: only arrivals and run
//! times, the workload's inputs, are driven.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{NodeOpts, TestNode, tail};
use hodei_runtime::scaling::ScalingPolicy;
use hodei_runtime::{Priority, Resources};
use hodei_simulations::model::{RunConfig, TimeLimit};
use hodei_simulations::workload::JobSpec;
use hodei_simulations::{PoolConfig, Simulation};

/// One static pool of one worker.
struct Pool {
    name: &'static str,
    cpu_millis: u64,
    memory_mib: u64,
    slots: u32,
    labels: &'static [(&'static str, &'static str)],
}

const POOLS: [Pool; 3] = [
    Pool {
        name: "big",
        cpu_millis: 4000,
        memory_mib: 4096,
        slots: 4,
        labels: &[("zone", "a")],
    },
    Pool {
        name: "mid",
        cpu_millis: 2000,
        memory_mib: 2048,
        slots: 2,
        labels: &[("zone", "b"), ("disk", "ssd")],
    },
    Pool {
        name: "small",
        cpu_millis: 1000,
        memory_mib: 1024,
        slots: 1,
        labels: &[("zone", "b")],
    },
];

/// One job: arrives at `arrive_s`, runs `run_ms` once started, exits with `exit_code`.
/// `run_ms` is the table's figure plus `10 × arrive_s + 5` ms, so that no end falls on an
/// arrival (whole seconds) or on another end: the replay needs one event per instant.
struct Job {
    arrive_s: u64,
    run_ms: u64,
    cpu_millis: u64,
    memory_mib: u64,
    selector: &'static [(&'static str, &'static str)],
    exit_code: i32,
}

const fn job(arrive_s: u64, run_ms: u64, cpu_millis: u64) -> Job {
    Job {
        arrive_s,
        run_ms: run_ms + 10 * arrive_s + 5,
        cpu_millis,
        memory_mib: 0,
        selector: &[],
        exit_code: 0,
    }
}

const fn sel(mut j: Job, selector: &'static [(&'static str, &'static str)]) -> Job {
    j.selector = selector;
    j
}

const fn mem(mut j: Job, memory_mib: u64) -> Job {
    j.memory_mib = memory_mib;
    j
}

const fn exits(mut j: Job, code: i32) -> Job {
    j.exit_code = code;
    j
}

/// Arrivals one second apart; about half the jobs wait for capacity (see the simulator's
/// timeline printed by the test).
const JOBS: [Job; 20] = [
    job(0, 20_500, 1000),
    sel(job(1, 15_500, 500), &[("zone", "b")]),
    sel(job(2, 6_500, 1000), &[("disk", "ssd")]),
    mem(job(3, 12_500, 2000), 1024),
    sel(job(4, 3_500, 500), &[("hodei.io/pool", "small")]),
    // Too big for every worker: never placed.
    job(5, 1_000, 8000),
    exits(job(6, 4_500, 1000), 3),
    sel(job(7, 5_250, 500), &[("zone", "b")]),
    job(8, 3_250, 250),
    mem(job(9, 2_500, 250), 2048),
    sel(job(10, 4_500, 500), &[("zone", "a")]),
    job(11, 6_500, 500),
    sel(job(12, 3_500, 1000), &[("zone", "b"), ("disk", "ssd")]),
    job(13, 2_500, 250),
    mem(job(14, 5_500, 500), 512),
    sel(job(15, 2_500, 250), &[("zone", "b")]),
    job(16, 4_500, 1500),
    sel(job(17, 1_500, 1000), &[("hodei.io/pool", "mid")]),
    job(18, 3_500, 250),
    sel(job(19, 2_500, 500), &[("disk", "ssd")]),
];

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What happened to one job, in terms both sides can state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(String),
    /// Never placed: the scheduler's last summary ("0/3 workers fit: ...").
    Unplaced(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Succeeded => write!(f, "succeeded"),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
            Outcome::Unplaced(s) => write!(f, "unplaced: {s}"),
        }
    }
}

/// A job's state at one instant, as both sides can state it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    NotSubmitted,
    Pending,
    Placed(String),
    Ended(Outcome),
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::NotSubmitted => write!(f, "-"),
            Seen::Pending => write!(f, "pending"),
            Seen::Placed(p) => write!(f, "on {p}"),
            Seen::Ended(o) => write!(f, "{o}"),
        }
    }
}

/// The simulator's run: per job, its start, end, pool and outcome.
struct SimJob {
    arrival_ms: u64,
    start_ms: Option<u64>,
    end_ms: u64,
    pool: Option<String>,
    outcome: Outcome,
}

impl SimJob {
    fn at(&self, t_ms: u64) -> Seen {
        match self.start_ms {
            _ if t_ms < self.arrival_ms => Seen::NotSubmitted,
            Some(s) if t_ms < s => Seen::Pending,
            Some(_) if t_ms < self.end_ms => Seen::Placed(self.pool.clone().unwrap_or_default()),
            Some(_) => Seen::Ended(self.outcome.clone()),
            // Never placed: pending to the end.
            None => Seen::Pending,
        }
    }
}

fn simulate() -> Vec<SimJob> {
    let pools: Vec<PoolConfig> = POOLS
        .iter()
        .map(|p| PoolConfig {
            name: p.name.into(),
            cpu_millis: p.cpu_millis,
            memory_mib: p.memory_mib,
            gpus: 0,
            slots: p.slots,
            labels: kv(p.labels),
            initial_workers: Some(1),
            autoscale: false,
            scaling: ScalingPolicy {
                min_workers: 1,
                max_workers: 1,
                ..ScalingPolicy::default()
            },
            ..PoolConfig::default()
        })
        .collect();
    let jobs: Vec<JobSpec> = JOBS
        .iter()
        .map(|j| JobSpec {
            arrival_ms: j.arrive_s * 1000,
            run_ms: j.run_ms,
            resources: Resources {
                cpu_millis: j.cpu_millis,
                memory_bytes: j.memory_mib << 20,
                ..Resources::ZERO
            },
            tenant: "default".into(),
            priority: Priority::Medium,
            retries: 0,
            node_selector: kv(j.selector),
            exit_code: j.exit_code,
        })
        .collect();
    // The node's defaults: the default scheduler profile, no time limits (no `--timeout`).
    let cfg = RunConfig {
        name: "crosscheck".into(),
        time_limit: TimeLimit::None,
        ..RunConfig::default()
    };
    let run = Simulation::new(1, &pools, &cfg, &jobs, &[], true)
        .expect("simulation set-up")
        .run()
        .unwrap_or_else(|v| panic!("simulation: {v}"));
    run.jobs
        .iter()
        .map(|r| SimJob {
            arrival_ms: r.arrival_ms,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            pool: r.pool.clone(),
            outcome: if r.succeeded {
                Outcome::Succeeded
            } else if let Some(s) = r.reason.strip_prefix("never placed: ") {
                Outcome::Unplaced(s.to_string())
            } else {
                Outcome::Failed(r.reason.clone())
            },
        })
        .collect()
}

/// The node's config: the same three pools, local workers.
fn node_pools() -> String {
    let mut s = String::new();
    for p in &POOLS {
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect();
        write!(
            s,
            r#"
[[pools]]
name = "{name}"
provider = "local"
min = 1
max = 1
register_timeout = "20s"
[pools.template]
slots = {slots}
cpu = "{cpu}m"
memory = "{mem}Mi"
labels = {{ {labels} }}
"#,
            name = p.name,
            slots = p.slots,
            cpu = p.cpu_millis,
            mem = p.memory_mib,
            labels = labels.join(", "),
        )
        .unwrap();
    }
    s
}

/// The node's view of every submitted job, by workload index.
fn observe(n: &TestNode, ids: &[u64], pool_of: &BTreeMap<String, String>) -> Vec<Seen> {
    let by_id: BTreeMap<u64, serde_json::Value> = n
        .jobs()
        .into_iter()
        .map(|j| (j["id"].as_u64().unwrap_or_default(), j))
        .collect();
    ids.iter()
        .map(|id| {
            let Some(j) = by_id.get(id) else {
                return Seen::NotSubmitted;
            };
            let reason = j["reason"].as_str().unwrap_or_default();
            match j["state"].as_str().unwrap_or_default() {
                "pending" => Seen::Pending,
                "scheduled" | "running" => {
                    let w = j["worker"].as_str().unwrap_or_default();
                    Seen::Placed(pool_of.get(w).cloned().unwrap_or_else(|| w.to_string()))
                }
                "succeeded" => Seen::Ended(Outcome::Succeeded),
                "failed" => Seen::Ended(Outcome::Failed(reason.to_string())),
                other => Seen::Ended(Outcome::Failed(format!("{other}: {reason}"))),
            }
        })
        .collect()
}

/// A pending job's summary on the node: the scheduler's part of its reason (the autoscaler
/// may append "; no pool can run job N: ...").
fn pending_summary(n: &TestNode, id: u64) -> Option<String> {
    let j = n.job(id);
    let r = j["reason"].as_str()?;
    (j["state"] == "pending" && r.contains("workers fit"))
        .then(|| r.split("; ").next().unwrap_or(r).to_string())
}

/// The end of the node's log without the CLI's connection chatter.
fn node_log(n: &TestNode) -> String {
    let text = n.log();
    let quiet: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("client hello") && !l.contains("tcp_session_closed"))
        .collect();
    tail(&quiet.join("\n"), 80)
}

fn table(expected: &[Seen], seen: &[Seen]) -> String {
    let mut s = String::new();
    for (i, (e, r)) in expected.iter().zip(seen).enumerate() {
        let mark = if e == r { " " } else { "≠" };
        writeln!(
            s,
            "{mark} job {i:>2}: simulator {:<44} node {r}",
            e.to_string()
        )
        .unwrap();
    }
    s
}

#[test]
fn the_simulator_and_the_real_actors_place_and_end_a_small_workload_alike() {
    let sim = simulate();
    for (i, j) in sim.iter().enumerate() {
        eprintln!(
            "simulator: job {i:>2} arrives {:>6} ms, starts {:>6}, ends {:>6} on {:<5} {}",
            j.arrival_ms,
            j.start_ms.map_or("-".into(), |s| s.to_string()),
            j.end_ms,
            j.pool.as_deref().unwrap_or("-"),
            j.outcome
        );
    }
    // The workload is meant to exercise every pool, waiting for capacity, an exit code and a
    // job no worker fits; keep it that way when editing it.
    for p in &POOLS {
        assert!(
            sim.iter().any(|j| j.pool.as_deref() == Some(p.name)),
            "the simulator placed nothing on {}",
            p.name
        );
    }
    assert!(
        sim.iter()
            .any(|j| j.start_ms.is_some_and(|s| s > j.arrival_ms)),
        "no job waited for capacity in the simulator"
    );
    assert_eq!(
        sim.iter()
            .filter(|j| matches!(j.outcome, Outcome::Unplaced(_)))
            .count(),
        1
    );
    assert_eq!(
        sim.iter()
            .filter(|j| j.outcome == Outcome::Failed("exit code 3".into()))
            .count(),
        1
    );

    // The events to replay, in virtual-time order: arrivals and ends (starts are decisions).
    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Submit(usize),
        Release(usize),
    }
    let mut events: Vec<(u64, Ev)> = Vec::new();
    for (i, j) in sim.iter().enumerate() {
        events.push((j.arrival_ms, Ev::Submit(i)));
        if j.start_ms.is_some() {
            events.push((j.end_ms, Ev::Release(i)));
        }
    }
    events.sort_by_key(|(t, _)| *t);
    for w in events.windows(2) {
        assert!(
            w[0].0 != w[1].0,
            "two events at {} ms ({:?}, {:?}): the replay could not keep their order; \
             change a run time",
            w[0].0,
            w[0].1,
            w[1].1
        );
    }

    let n = TestNode::start(NodeOpts {
        workers: 0,
        extra: node_pools(),
        ..NodeOpts::default()
    });
    n.wait_workers(POOLS.len());
    let pool_of: BTreeMap<String, String> = n
        .workers()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or_default().to_string(),
                w["pool"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let marks = tempfile::Builder::new()
        .prefix("hodei-crosscheck-")
        .tempdir()
        .expect("temp dir");
    let release = |i: usize| marks.path().join(format!("release-{i}"));
    let mut ids: Vec<u64> = Vec::new();
    for &(t_ms, ev) in &events {
        match ev {
            Ev::Submit(i) => {
                assert_eq!(ids.len(), i, "arrivals come in workload order");
                ids.push(submit(&n, i, &release(i)));
            }
            Ev::Release(i) => std::fs::write(release(i), b"").expect("release marker"),
        }
        let expected: Vec<Seen> = sim.iter().take(ids.len()).map(|j| j.at(t_ms)).collect();
        settle(&n, &ids, &pool_of, &expected, t_ms);
    }

    // The end, per job: the pool of its last attempt and its outcome; the never-placed job's
    // summary is the one both see on the emptied cluster.
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for (i, j) in sim.iter().enumerate() {
        expected.push(Seen::Ended(j.outcome.clone()));
        let outcome = match &j.outcome {
            Outcome::Unplaced(want) => {
                let got = common::wait_for_opt(Duration::from_secs(20), || {
                    pending_summary(&n, ids[i]).filter(|s| s == want)
                });
                match got.or_else(|| pending_summary(&n, ids[i])) {
                    Some(s) => Seen::Ended(Outcome::Unplaced(s)),
                    None => observe(&n, &ids, &pool_of)[i].clone(),
                }
            }
            _ => observe(&n, &ids, &pool_of)[i].clone(),
        };
        seen.push(outcome);
    }
    let sim_pools: Vec<Seen> = sim
        .iter()
        .map(|j| Seen::Placed(j.pool.clone().unwrap_or_else(|| "-".into())))
        .collect();
    let real_pools: Vec<Seen> = ids
        .iter()
        .map(|id| {
            let w = n.job(*id)["worker"].as_str().unwrap_or("-").to_string();
            Seen::Placed(pool_of.get(&w).cloned().unwrap_or(w))
        })
        .collect();
    let outcomes = table(&expected, &seen);
    let placements = table(&sim_pools, &real_pools);
    eprintln!("per job, simulator against node:\n{placements}\n{outcomes}");
    assert_eq!(
        sim_pools, real_pools,
        "the simulator and the node placed jobs differently:\n{placements}"
    );
    assert_eq!(
        expected,
        seen,
        "the simulator and the node disagree on outcomes:\n{outcomes}\nnode log:\n{}",
        node_log(&n)
    );
}

/// Submits workload job `i`: it waits for its release marker, then exits with its code.
fn submit(n: &TestNode, i: usize, marker: &Path) -> u64 {
    let j = &JOBS[i];
    let mut args: Vec<String> = vec![
        "--name".into(),
        format!("x{i}"),
        "--cpu".into(),
        format!("{}m", j.cpu_millis),
        "--memory".into(),
        format!("{}Mi", j.memory_mib),
    ];
    for (k, v) in j.selector {
        args.push("--selector".into());
        args.push(format!("{k}={v}"));
    }
    let script = "while [ ! -e \"$1\" ]; do sleep 0.02; done; exit \"$2\"";
    let marker = marker.display().to_string();
    let code = j.exit_code.to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    n.submit(&args, &["sh", "-c", script, "sh", &marker, &code])
}

/// Waits until the node shows `expected` (the simulator's state at `t_ms`): the same jobs
/// pending, placed on the same pools, ended alike. A pending job must also have been through a
/// scheduling cycle (a "workers fit" summary), so "not scheduled yet" does not pass for
/// "does not fit". Fails with both views after 20 s.
fn settle(
    n: &TestNode,
    ids: &[u64],
    pool_of: &BTreeMap<String, String>,
    expected: &[Seen],
    t_ms: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen;
    loop {
        seen = observe(n, ids, pool_of);
        let examined = expected.iter().enumerate().all(|(i, e)| {
            *e != Seen::Pending || seen[i] != Seen::Pending || pending_summary(n, ids[i]).is_some()
        });
        if seen == expected && examined {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "at {t_ms} ms of the simulator's run the node did not settle in the simulator's state \
         within 20 s:\n{}\nnode log:\n{}",
        table(expected, &seen),
        node_log(n)
    );
}
