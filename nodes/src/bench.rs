//! `hodei bench jobs`: throughput and latency of real jobs through an embedded node and local
//! agents. Progress goes to stderr; the last line of stdout is one JSON object.

use std::time::{Duration, Instant};

use futures::future::join_all;
use hodei_config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{Client, JobSpec};

/// Options.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsBenchArgs {
    /// Local agents (workers x slots = the 8 local slots by default).
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Jobs in the throughput run (w1).
    #[arg(long, default_value_t = 2000)]
    pub w1_jobs: usize,
    /// Jobs in the latency run (w2).
    #[arg(long, default_value_t = 200)]
    pub w2_jobs: usize,
    /// Jobs in the `sleep 0.1` run (w3).
    #[arg(long, default_value_t = 400)]
    pub w3_jobs: usize,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{what:>6} {{bar:40}} {{pos}}/{{len}} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    (v[i] * 1000.0).round() / 1000.0
}

/// Spawns and waits for `true` `n` times from `threads` threads: the physical limit.
fn raw_spawn(n: usize, threads: usize) -> f64 {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let count = n / threads + usize::from(i < n % threads);
            std::thread::spawn(move || {
                for _ in 0..count {
                    let _ = std::process::Command::new("true").status();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

async fn run_batch(
    client: &Client,
    spec: JobSpec,
    n: usize,
    b: &ProgressBar,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let subs =
        join_all((0..n).map(|i| client.submit(spec.clone().with_name(format!("bench-{i}"))))).await;
    let mut ids = Vec::with_capacity(n);
    for s in subs {
        ids.push(s?);
    }
    let waits = join_all(ids.iter().map(|id| {
        let c = client.clone();
        let b = b.clone();
        async move {
            let r = c.wait(*id, None).await;
            b.inc(1);
            r
        }
    }))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    for w in waits {
        let v = w?;
        anyhow::ensure!(
            v.state == hodei_runtime::JobState::Succeeded,
            "job {} ended {}: {:?}",
            v.id,
            v.state,
            v.reason
        );
    }
    Ok(secs)
}

/// Runs the benchmark.
pub async fn jobs(args: JobsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("hodei-bench-").tempdir()?;
    let cookie = format!("bench-{}", hodei_actors::provider::local::random_hex(12));
    let config = Config::dev(
        &dir.path().join("data"),
        "127.0.0.1:0".parse()?,
        &cookie,
        args.workers,
        args.slots,
    )?;
    let node = crate::server::start(config).await?;
    let client = node.client();
    let slots = args.workers * args.slots;
    eprintln!(
        "embedded node with {} local agents x {} slots; waiting for the agents",
        args.workers, args.slots
    );
    let t = Instant::now();
    loop {
        let ready: u32 = client
            .workers()
            .await?
            .iter()
            .filter(|w| w.state.accepts_work())
            .map(|w| w.slots)
            .sum();
        if ready >= slots {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "agents did not register within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up.
    run_batch(&client, JobSpec::argv(["true"]), 50, &ProgressBar::hidden()).await?;

    eprintln!("raw: 8 threads spawning `true`, {} in all", args.w1_jobs);
    let n = args.w1_jobs;
    let raw = tokio::task::spawn_blocking(move || raw_spawn(n, 8)).await?;

    let b = bar(args.w1_jobs as u64, "w1");
    let w1_secs = run_batch(&client, JobSpec::argv(["true"]), args.w1_jobs, &b).await?;
    b.finish_with_message(format!("{:.0} jobs/s", args.w1_jobs as f64 / w1_secs));

    let b = bar(args.w2_jobs as u64, "w2");
    let mut start_ms = Vec::new();
    let mut completion_ms = Vec::new();
    for i in 0..args.w2_jobs {
        let t0 = Instant::now();
        let id = client
            .submit(JobSpec::argv(["true"]).with_name(format!("w2-{i}")))
            .await?;
        let v = client.wait(id, None).await?;
        completion_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            v.state == hodei_runtime::JobState::Succeeded,
            "job {} ended {}",
            v.id,
            v.state
        );
        if let Some(s) = v.started_at_ms {
            start_ms.push(s.saturating_sub(v.submitted_at_ms) as f64);
        }
        b.inc(1);
    }
    b.finish_with_message(format!(
        "completion p50 {:.2} ms",
        pct(&mut completion_ms.clone(), 50.0)
    ));

    let b = bar(args.w3_jobs as u64, "w3");
    let w3_secs = run_batch(&client, JobSpec::argv(["sleep", "0.1"]), args.w3_jobs, &b).await?;
    b.finish_with_message(format!("{w3_secs:.2} s"));
    let ideal = args.w3_jobs as f64 * 0.1 / slots as f64;

    node.shutdown().await;
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    let out = json!({
        "w1": {"jobs": args.w1_jobs, "seconds": round(w1_secs, 3), "jobs_per_s": round(args.w1_jobs as f64 / w1_secs, 1), "raw_spawn_per_s": round(raw, 1)},
        "w2": {"jobs": args.w2_jobs,
               "start_ms": {"p50": pct(&mut start_ms, 50.0), "p90": pct(&mut start_ms, 90.0), "p99": pct(&mut start_ms, 99.0)},
               "completion_ms": {"p50": pct(&mut completion_ms, 50.0), "p90": pct(&mut completion_ms, 90.0), "p99": pct(&mut completion_ms, 99.0)}},
        "w3": {"jobs": args.w3_jobs, "wall_s": round(w3_secs, 3), "ideal_s": round(ideal, 3)}
    });
    eprintln!(
        "w1: {:.0} jobs/s vs raw {:.0}/s ({:.0}%); w2 completion p50/p99 in JSON; w3: {:.2} s (ideal {:.2} s)",
        args.w1_jobs as f64 / w1_secs,
        raw,
        100.0 * args.w1_jobs as f64 / w1_secs / raw,
        w3_secs,
        ideal
    );
    println!("{out}");
    Ok(())
}

/// Options of `hodei bench scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerBenchArgs {
    /// Workers in the speed run.
    #[arg(long, default_value_t = 10_000)]
    pub workers: usize,
    /// Pending jobs in the speed run.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Workers in the quality run.
    #[arg(long, default_value_t = 1_000)]
    pub quality_workers: usize,
    /// Jobs in the quality run.
    #[arg(long, default_value_t = 10_000)]
    pub quality_jobs: usize,
    /// Seed of the generated cluster and workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the pure pipeline on generated clusters (one core, this thread): the speed run decides
/// every pending job once with all filters and scores on; the quality run places the same jobs
/// with the production (sampled) scan and with exhaustive scoring.
pub fn scheduler(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    use hodei_runtime::scheduling::bench;
    eprintln!(
        "speed: {} workers, {} pending jobs (mixed labels, taints, capacities, constraints)",
        args.workers, args.jobs
    );
    let speed = bench::run(args.workers, args.jobs, args.seed);
    eprintln!(
        "speed: {} decided ({} placed, {} preempting, {} unplaceable, {} held) in {:.0} ms: {:.0}/s",
        speed.decided,
        speed.placed,
        speed.preempted,
        speed.unplaced,
        speed.held,
        speed.elapsed_ms,
        speed.placements_per_s
    );
    eprintln!(
        "quality: {} workers, {} jobs, sampled vs exhaustive scoring",
        args.quality_workers, args.quality_jobs
    );
    let (q, qe) = bench::quality(args.quality_workers, args.quality_jobs, args.seed);
    let delta = if qe == 0 {
        0.0
    } else {
        (qe as f64 - q as f64) / qe as f64 * 100.0
    };
    eprintln!("quality: {q} placed sampled, {qe} exhaustive: delta {delta:.2}%");
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    let out = json!({
        "workers": args.workers,
        "jobs": args.jobs,
        "placed": speed.placed + speed.preempted,
        "placements_per_s": round(speed.placements_per_s, 1),
        "quality": {
            "workers": args.quality_workers,
            "jobs": args.quality_jobs,
            "placed": q,
            "placed_exhaustive": qe,
            "delta_pct": round(delta, 2),
        }
    });
    println!("{out}");
    Ok(())
}

/// Options of `hodei bench scaling`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScalingBenchArgs {
    /// Cold-start samples (each on a pool scaled back to zero first).
    #[arg(long, default_value_t = 50)]
    pub cold: usize,
    /// Warm-start samples (on a static pool's warm worker).
    #[arg(long, default_value_t = 200)]
    pub warm: usize,
}

fn latency_summary(v: &mut [f64]) -> serde_json::Value {
    json!({"n": v.len(), "p50": pct(v, 50.0), "p99": pct(v, 99.0)})
}

/// A `true` job that may run only on `pool`'s workers.
fn on_pool(pool: &str, name: String) -> JobSpec {
    JobSpec::argv(["true"]).with_name(name).with_scheduling(
        hodei_runtime::scheduling::SchedulingConstraints {
            node_selector: [("hodei.io/pool".to_string(), pool.to_string())].into(),
            ..Default::default()
        },
    )
}

/// Workers of `pool` not terminated (provisioning included).
fn live_in(ws: &[hodei_actors::wire::WorkerView], pool: &str) -> usize {
    ws.iter()
        .filter(|w| w.pool == pool && w.state != hodei_runtime::WorkerState::Terminated)
        .count()
}

/// Waits until a worker of `pool` has registered and takes work.
async fn wait_until_ready(client: &Client, pool: &str, within: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    while !client
        .workers()
        .await?
        .iter()
        .any(|w| w.pool == pool && w.state.accepts_work())
    {
        anyhow::ensure!(
            t.elapsed() < within,
            "no worker of pool {pool} registered within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Start latencies of `n` jobs run one after another on the `warm` pool.
async fn warm_samples(client: &Client, n: usize) -> anyhow::Result<Vec<f64>> {
    let b = bar(n as u64, "warm");
    let mut warm = Vec::with_capacity(n);
    for i in 0..n {
        warm.extend(start_latency_ms(client, on_pool("warm", format!("warm-{i}"))).await?);
        b.inc(1);
    }
    b.finish();
    Ok(warm)
}

/// Waits until `pool` has scaled back to zero workers.
async fn wait_until_empty(client: &Client, pool: &str, within: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    while live_in(&client.workers().await?, pool) > 0 {
        anyhow::ensure!(
            t.elapsed() < within,
            "the {pool} pool did not scale back to zero within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Submits `spec`, waits for it to succeed and returns submit → start in ms (node timestamps).
async fn start_latency_ms(client: &Client, spec: JobSpec) -> anyhow::Result<Option<f64>> {
    let id = client.submit(spec).await?;
    let v = client.wait(id, None).await?;
    anyhow::ensure!(
        v.state == hodei_runtime::JobState::Succeeded,
        "job {id} ended {}",
        v.state
    );
    Ok(v.started_at_ms
        .map(|s| s.saturating_sub(v.submitted_at_ms) as f64))
}

/// Start latency of jobs on the local-process provider: on a warm static pool (submit → start,
/// durable ack included) and on a dynamic pool at zero (submit → a worker provisioned, its
/// agent registered, the job started).
pub async fn scaling(args: ScalingBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("hodei-bench-").tempdir()?;
    let cookie = format!("bench-{}", hodei_actors::provider::local::random_hex(12));
    let text = format!(
        r#"
[node]
name = "bench"
listen = "127.0.0.1:0"
cookie = "{cookie}"
data_dir = "{data}"

[[pools]]
name = "warm"
provider = "local"
min = 1
max = 1
[pools.template]
slots = 1

[[pools]]
name = "cold"
provider = "local"
min = 0
max = 1
idle_timeout = "100ms"
[pools.template]
slots = 1
[pools.scaling]
scale_up_cooldown_ms = 0
scale_down_cooldown_ms = 0
"#,
        data = dir.path().join("data").display()
    );
    let config = hodei_config::RawConfig::parse(&text, "bench")?
        .validate(hodei_config::HostResources::detect())?;
    let node = crate::server::start(config).await?;
    let client = node.client();
    wait_until_ready(&client, "warm", Duration::from_secs(30)).await?;
    let mut warm = warm_samples(&client, args.warm).await?;

    let b = bar(args.cold as u64, "cold");
    let mut cold = Vec::with_capacity(args.cold);
    for i in 0..args.cold {
        wait_until_empty(&client, "cold", Duration::from_secs(30)).await?;
        cold.extend(start_latency_ms(&client, on_pool("cold", format!("cold-{i}"))).await?);
        b.inc(1);
    }
    b.finish();
    node.shutdown().await;
    let out = json!({
        "warm_start_ms": latency_summary(&mut warm),
        "cold_start_ms": latency_summary(&mut cold),
    });
    eprintln!(
        "warm start p50 {:.1} ms, cold start p50 {:.1} ms (submit to start, node timestamps)",
        pct(&mut warm, 50.0),
        pct(&mut cold, 50.0)
    );
    println!("{out}");
    Ok(())
}

/// `hodei bench docker`.
#[derive(clap::Args, Debug, Clone)]
pub struct DockerBenchArgs {
    /// Provisioning samples (container created → agent registered; each on a pool at zero).
    #[arg(long, default_value_t = 20)]
    pub provision: usize,
    /// Job start samples on a warm container.
    #[arg(long, default_value_t = 200)]
    pub warm: usize,
    /// Docker engine address (default: DOCKER_HOST, else the local socket).
    #[arg(long)]
    pub host: Option<String>,
}

/// Latency of the Docker provider on this machine's engine: provisioning a worker container
/// (container created → its agent registered, node timestamps) on a pool scaled back to zero
/// between samples, and job start (submit → start) on a warm container. Removes its containers.
pub async fn docker(args: DockerBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("hodei-bench-").tempdir()?;
    let cookie = format!("bench-{}", hodei_actors::provider::local::random_hex(12));
    let host = args
        .host
        .clone()
        .unwrap_or_else(hodei_config::default_docker_host);
    let text = format!(
        r#"
[node]
name = "bench"
listen = "127.0.0.1:0"
cookie = "{cookie}"
data_dir = "{data}"

[providers.docker]
kind = "docker"
host = "{host}"

[[pools]]
name = "warm"
providers = ["docker"]
min = 1
max = 1
[pools.template]
slots = 1
cpu = "1"
memory = "512Mi"

[[pools]]
name = "cold"
providers = ["docker"]
min = 0
max = 1
idle_timeout = "100ms"
[pools.template]
slots = 1
cpu = "1"
memory = "512Mi"
[pools.scaling]
scale_up_cooldown_ms = 0
scale_down_cooldown_ms = 0
"#,
        data = dir.path().join("data").display()
    );
    let config = hodei_config::RawConfig::parse(&text, "bench")?
        .validate(hodei_config::HostResources::detect())?;
    let node = crate::server::start(config).await?;
    let client = node.client();
    let result = docker_samples(&client, &args).await;
    let cluster_id = node.cluster_id();
    node.shutdown().await;
    // Whatever the run left (an error midway), remove it.
    if let Ok(engine) = hodei_actors::provider::docker_engine::connect(&host).await
        && let Ok(left) = hodei_actors::provider::docker_engine::list_cluster_containers(
            &engine,
            &cluster_id,
            None,
        )
        .await
    {
        for c in left.into_iter().filter_map(|c| c.id) {
            let _ = hodei_actors::provider::docker_engine::remove(&engine, &c).await;
        }
    }
    let (mut provision, mut warm) = result?;
    let out = json!({
        "provision_ms": latency_summary(&mut provision),
        "warm_start_ms": latency_summary(&mut warm),
    });
    eprintln!(
        "docker: provision p50 {:.0} ms p99 {:.0} ms (container created -> agent registered); warm start p50 {:.1} ms p99 {:.1} ms (submit -> start)",
        pct(&mut provision, 50.0),
        pct(&mut provision, 99.0),
        pct(&mut warm, 50.0),
        pct(&mut warm, 99.0),
    );
    println!("{out}");
    Ok(())
}

async fn docker_samples(
    client: &Client,
    args: &DockerBenchArgs,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    // The first start builds the worker image (once per binary): not a sample.
    wait_until_ready(client, "warm", Duration::from_secs(300)).await?;
    let warm = warm_samples(client, args.warm).await?;

    let b = bar(args.provision as u64, "provision");
    let mut provision = Vec::with_capacity(args.provision);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..args.provision {
        wait_until_empty(client, "cold", Duration::from_secs(60)).await?;
        start_latency_ms(client, on_pool("cold", format!("cold-{i}"))).await?;
        for w in client.workers().await? {
            if w.pool == "cold"
                && let Some(r) = w.registered_at_ms
                && seen.insert(w.id.clone())
            {
                provision.push(r.saturating_sub(w.provisioned_at_ms) as f64);
            }
        }
        b.inc(1);
    }
    b.finish();
    Ok((provision, warm))
}
