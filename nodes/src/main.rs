//! The `hodei` command: node, agent and client in one binary. See `hodei --help`.

mod operator;
mod sim;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hodei::output::{self, Format};
use hodei::{
    Client, ClientError, JobFilter, JobId, JobSpec, JobState, LogStream, Priority, Resources,
    TenantId,
};
use hodei_config::{Config, DEV_COOKIE, DEV_LISTEN};
use hodei_runtime::resources::{parse_bytes, parse_cpu_millis};
use hodei_runtime::scheduling::{JobAffinityKind, SchedulingError};

/// Exit code when Hodei itself failed (cannot connect, spec rejected by the node).
const EXIT_HODEI_FAILED: u8 = 125;
/// Exit code for invalid arguments or config.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "hodei", version, about = "Hodei: a job-orchestration cluster runtime", long_about = None)]
struct Cli {
    /// Log filter for stderr (e.g. info, debug, hodei_actors=debug); also HODEI_LOG.
    #[arg(long, global = true, env = "HODEI_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Conn {
    /// Node address.
    #[arg(long, env = "HODEI_ADDR", default_value = DEV_LISTEN)]
    addr: String,
    /// Cluster cookie.
    #[arg(long, env = "HODEI_COOKIE", default_value = DEV_COOKIE, hide_env_values = true, hide_default_value = true)]
    cookie: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Format,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node from a config file.
    Node {
        /// The TOML config (see config/hodei.example.toml).
        #[arg(long)]
        config: PathBuf,
        /// Start even if acknowledged data is found missing or the store is damaged: continue
        /// from what can be read and record the loss in the journal (job ids are not reused).
        /// Without it such a node refuses to start and says what was lost.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// Run a development node: one local pool, dev cookie, data in ~/.hodei/dev.
    Dev {
        /// Listen address.
        #[arg(long, default_value = DEV_LISTEN)]
        listen: String,
        /// Data directory (default $HOME/.hodei/dev).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Local agents.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Slots per agent.
        #[arg(long, default_value_t = 4)]
        slots: u32,
        /// Cookie.
        #[arg(long, env = "HODEI_COOKIE", default_value = DEV_COOKIE, hide_default_value = true, hide_env_values = true)]
        cookie: String,
    },
    /// Run a sample workload on a throw-away single-node cluster and print a summary.
    Demo,
    /// Run an agent (normally started by a provider).
    Agent(AgentArgs),
    /// Submit a job: hodei submit [OPTIONS] -- CMD [ARGS...]
    Submit(Box<SubmitArgs>),
    /// List jobs.
    Jobs {
        #[command(flatten)]
        conn: Conn,
        /// Only this state (pending, scheduled, running, succeeded, failed, cancelled, timed_out).
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only jobs with this label (k=v).
        #[arg(long, value_parser = parse_kv)]
        label: Option<(String, String)>,
        /// Most jobs shown (newest first).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one job.
    Job {
        #[command(flatten)]
        conn: Conn,
        /// Job id.
        id: String,
    },
    /// Print a job's output.
    Logs {
        #[command(flatten)]
        conn: Conn,
        /// Job id.
        id: String,
        /// Keep following until the job finishes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        conn: Conn,
        /// Job id.
        id: String,
    },
    /// List workers.
    Workers {
        #[command(flatten)]
        conn: Conn,
    },
    /// List pools.
    Pools {
        #[command(flatten)]
        conn: Conn,
    },
    /// Put taints on a worker, or take them off: hodei taint WORKER dedicated=gpu:NoSchedule
    /// --remove maintenance. A NoExecute taint evicts running jobs that do not tolerate it.
    Taint {
        #[command(flatten)]
        conn: Conn,
        /// Worker id.
        worker: String,
        /// Taints to add (key=value:Effect or key:Effect).
        #[arg(value_parser = parse_taint)]
        taints: Vec<hodei_runtime::scheduling::Taint>,
        /// Remove the taints with this key (KEY, or KEY:Effect for one effect), repeatable.
        #[arg(long, value_parser = parse_taint_key)]
        remove: Vec<(String, Option<hodei_runtime::scheduling::TaintEffect>)>,
    },
    /// Show the scheduler's metrics (queue depth, latency, preemptions, failures, utilisation).
    Metrics {
        #[command(flatten)]
        conn: Conn,
        /// Every series the node exports, as Prometheus text.
        #[arg(long)]
        all: bool,
    },
    /// Operations on a node's data: backups of the state (snapshot save / restore / inspect).
    Operator {
        #[command(subcommand)]
        cmd: operator::OperatorCmd,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Benchmarks (print figures; the last line of stdout is JSON).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Docker worker images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Seeded virtual-time simulations of the scheduler and autoscaler (scenarios in TOML; the
    /// last line of stdout is JSON).
    #[command(long_about = sim::SIM_ABOUT)]
    Sim {
        #[command(subcommand)]
        cmd: sim::SimCmd,
    },
    /// Testing aids (the node must enable debug.fault_injection).
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        cmd: DebugCmd,
    },
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Make an actor fail: scheduler, autoscaler, provider, provider:NAME, job:ID, worker:ID,
    /// pool:NAME.
    Fault {
        #[command(flatten)]
        conn: Conn,
        /// The target.
        target: String,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build the worker image for the Docker provider without a registry: FROM scratch with
    /// this hodei binary, its shared libraries and a static busybox (Debian's busybox-static),
    /// through the engine's API. Prints the image's tag.
    Build {
        /// Tag (default: hodei-worker:<content hash>, what a docker provider without `image`
        /// uses).
        #[arg(long)]
        tag: Option<String>,
        /// Docker engine address (default: DOCKER_HOST, else the local socket).
        #[arg(long)]
        host: Option<String>,
        /// The hodei binary to put in the image (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config file (exit 0 if valid, 2 with the reason if not).
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Job throughput and latency against an embedded node with local agents.
    Jobs(hodei::bench::JobsBenchArgs),
    /// The pure scheduling pipeline: speed at 10,000 workers x 100,000 jobs on one core, and
    /// placement quality of sampled against exhaustive scoring.
    Scheduler(hodei::bench::SchedulerBenchArgs),
    /// Job start latency on a warm static pool and on a dynamic pool at zero (local agents).
    Scaling(hodei::bench::ScalingBenchArgs),
    /// Docker provider: container provisioning latency and job start on a warm container.
    Docker(hodei::bench::DockerBenchArgs),
}

#[derive(Args)]
struct AgentArgs {
    /// Node address.
    #[arg(long, env = "HODEI_ADDR", default_value = DEV_LISTEN)]
    node: String,
    /// Cluster cookie (prefer the HODEI_COOKIE environment variable).
    #[arg(long, env = "HODEI_COOKIE", default_value = DEV_COOKIE, hide_env_values = true, hide_default_value = true)]
    cookie: String,
    /// Worker id to register as.
    #[arg(long)]
    worker_id: String,
    /// Pool.
    #[arg(long)]
    pool: String,
    /// Concurrent jobs.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// CPU offered (e.g. 2, 500m).
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<u64>,
    /// Memory offered (e.g. 4Gi).
    #[arg(long, value_parser = parse_mem)]
    memory: Option<u64>,
    /// Scratch storage offered.
    #[arg(long, value_parser = parse_mem, default_value = "0")]
    ephemeral_storage: u64,
    /// GPUs offered.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Label (k=v), repeatable.
    #[arg(long, value_parser = parse_kv)]
    label: Vec<(String, String)>,
    /// Taint (key=value:Effect, Effect = NoSchedule, PreferNoSchedule or NoExecute), repeatable.
    #[arg(long, value_parser = parse_taint)]
    taint: Vec<hodei_runtime::scheduling::Taint>,
    /// Environment every job on this worker starts with (K=V, repeatable; a job's env wins).
    #[arg(long, value_parser = parse_kv)]
    job_env: Vec<(String, String)>,
    /// Where job scratch directories are created.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run jobs as this user.
    #[arg(long)]
    run_as_user: Option<String>,
    /// Run jobs as this group.
    #[arg(long)]
    run_as_group: Option<String>,
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    conn: Conn,
    /// Job name (default: the program's name).
    #[arg(long)]
    name: Option<String>,
    /// critical, high, medium, low or batch.
    #[arg(long, value_parser = parse_priority, default_value = "medium")]
    priority: Priority,
    /// CPU request (500m, 2).
    #[arg(long, value_parser = parse_cpu, allow_hyphen_values = true)]
    cpu: Option<u64>,
    /// Memory request (512Mi, 2Gi).
    #[arg(long, value_parser = parse_mem, allow_hyphen_values = true)]
    memory: Option<u64>,
    /// GPU request (whole devices).
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Label (k=v), repeatable.
    #[arg(long, value_parser = parse_kv)]
    label: Vec<(String, String)>,
    /// Scheduler profile (see [scheduler.profiles] in the node's config; default `default`).
    #[arg(long)]
    profile: Option<String>,
    /// Run only on workers with this label (k=v), repeatable.
    #[arg(long, value_parser = parse_kv)]
    selector: Vec<(String, String)>,
    /// Required node affinity term, ORed when repeated; requirements joined by `&&`:
    /// `zone in (a,b) && gpu exists`, `!spot`, `cores gt 4`.
    #[arg(long, value_parser = parse_term)]
    affinity: Vec<hodei_runtime::scheduling::NodeSelectorTerm>,
    /// Preferred node affinity, `WEIGHT:TERM` (weight 1-100), repeatable: `50:zone in (a)`.
    #[arg(long, value_parser = parse_weighted_term)]
    prefer: Vec<hodei_runtime::scheduling::WeightedTerm>,
    /// Tolerate a taint: `key=value:Effect`, `key:Effect`, `key:Exists`; `*` tolerates all.
    /// A `NoExecute` toleration may end in `:SECONDS` (evicted that long after the taint).
    #[arg(long, value_parser = parse_toleration)]
    toleration: Vec<hodei_runtime::scheduling::Toleration>,
    /// Land next to jobs with these labels: `TOPOLOGY:k=v[,k=v]` (TOPOLOGY: a worker label
    /// such as zone, or hodei.io/worker).
    #[arg(long, value_parser = parse_job_affinity_of(JobAffinityKind::Affinity))]
    job_affinity: Vec<hodei_runtime::scheduling::JobAffinityTerm>,
    /// Stay away from jobs with these labels: `TOPOLOGY:k=v[,k=v]`.
    #[arg(long, value_parser = parse_job_affinity_of(JobAffinityKind::AntiAffinity))]
    job_anti_affinity: Vec<hodei_runtime::scheduling::JobAffinityTerm>,
    /// Spread jobs with these labels over TOPOLOGY: `TOPOLOGY:MAX_SKEW:k=v[,k=v]`.
    #[arg(long, value_parser = parse_spread)]
    spread: Vec<hodei_runtime::scheduling::JobAffinityTerm>,
    /// Fail the job if it cannot be placed within this long (30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    scheduling_deadline: Option<Duration>,
    /// Environment variable (K=V), repeatable.
    #[arg(long, value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Per-attempt timeout (30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Retries after the first attempt.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Submitting again with the same key returns the same job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Working directory on the worker (absolute; default: a fresh scratch directory).
    #[arg(long)]
    workdir: Option<String>,
    /// Run CMD as one shell line with /bin/sh -c.
    #[arg(long)]
    shell: bool,
    /// Stream the output and exit with the job's exit code (124 timed out, 130 cancelled,
    /// 128+N killed by signal N, 125 Hodei failed).
    #[arg(long)]
    wait: bool,
    /// The command.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}
fn parse_taint(s: &str) -> Result<hodei_runtime::scheduling::Taint, String> {
    s.parse().map_err(|e: SchedulingError| e.to_string())
}
fn parse_taint_key(
    s: &str,
) -> Result<(String, Option<hodei_runtime::scheduling::TaintEffect>), String> {
    match s.split_once(':') {
        Some((k, e)) => Ok((
            k.to_string(),
            Some(e.parse().map_err(|e: SchedulingError| e.to_string())?),
        )),
        None if !s.is_empty() => Ok((s.to_string(), None)),
        None => Err("expected KEY or KEY:Effect".into()),
    }
}
fn parse_term(s: &str) -> Result<hodei_runtime::scheduling::NodeSelectorTerm, String> {
    s.parse().map_err(|e: SchedulingError| e.to_string())
}
fn parse_weighted_term(s: &str) -> Result<hodei_runtime::scheduling::WeightedTerm, String> {
    let (w, term) = s
        .split_once(':')
        .ok_or_else(|| format!("expected WEIGHT:TERM such as 50:zone in (a), got {s:?}"))?;
    let weight: u32 = w
        .trim()
        .parse()
        .ok()
        .filter(|w| (1..=100).contains(w))
        .ok_or_else(|| format!("weight {w:?} must be a whole number from 1 to 100"))?;
    Ok(hodei_runtime::scheduling::WeightedTerm {
        weight,
        term: parse_term(term)?,
    })
}
fn parse_toleration(s: &str) -> Result<hodei_runtime::scheduling::Toleration, String> {
    s.parse().map_err(|e: SchedulingError| e.to_string())
}
fn parse_selector_list(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("expected k=v[,k=v], got {s:?}"))
        })
        .collect()
}
fn parse_job_affinity_of(
    kind: JobAffinityKind,
) -> impl Fn(&str) -> Result<hodei_runtime::scheduling::JobAffinityTerm, String> + Clone {
    move |s: &str| {
        let (topology, sel) = s
            .split_once(':')
            .ok_or_else(|| format!("expected TOPOLOGY:k=v[,k=v], got {s:?}"))?;
        Ok(hodei_runtime::scheduling::JobAffinityTerm {
            kind,
            selector: parse_selector_list(sel)?,
            topology_key: topology.trim().to_string(),
        })
    }
}
fn parse_spread(s: &str) -> Result<hodei_runtime::scheduling::JobAffinityTerm, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(topology), Some(skew), Some(sel)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected TOPOLOGY:MAX_SKEW:k=v[,k=v], got {s:?}"));
    };
    let max_skew: u32 = skew
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("max skew {skew:?} must be a whole number of at least 1"))?;
    Ok(hodei_runtime::scheduling::JobAffinityTerm {
        kind: JobAffinityKind::Spread { max_skew },
        selector: parse_selector_list(sel)?,
        topology_key: topology.trim().to_string(),
    })
}
fn parse_cpu(s: &str) -> Result<u64, String> {
    parse_cpu_millis(s).map_err(|e| e.to_string())
}
fn parse_mem(s: &str) -> Result<u64, String> {
    parse_bytes("memory", s).map_err(|e| e.to_string())
}
fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
        .map_err(|e: hodei_runtime::SpecError| e.to_string())
}
fn parse_state(s: &str) -> Result<JobState, String> {
    s.parse()
        .map_err(|e: hodei_runtime::SpecError| e.to_string())
}
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 30s, 5m)"))
}
fn parse_id(s: &str) -> Result<JobId, Failure> {
    s.parse()
        .map_err(|e: hodei_runtime::SpecError| Failure::usage(e.to_string()))
}

/// An error and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(m: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: m.into(),
        }
    }
    fn other(m: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: m.to_string(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::other(e)
    }
}
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::other(format!("{e:#}"))
    }
}

fn init_logging(filter: Option<&str>, default: &str) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            });
        }
    };
    let default_log = match &cli.cmd {
        Cmd::Node { .. } | Cmd::Dev { .. } => "info,ractor=warn,ractor_cluster=error",
        _ => "warn,ractor=error,ractor_cluster=error",
    };
    init_logging(cli.log.as_deref(), default_log);
    // An agent is one event loop around its jobs (the reaper is its own thread): a
    // current-thread runtime saves the cross-thread wake-ups a work-stealing pool pays for
    // every output chunk and exit of a short job.
    let mut builder = if matches!(cli.cmd, Cmd::Agent(..)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hodei: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(run(cli.cmd));
    // Do not wait for lingering tasks (e.g. cluster sessions) on the way out.
    rt.shutdown_timeout(Duration::from_millis(200));
    match r {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("hodei: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn connect(c: &Conn) -> Result<Client, Failure> {
    Client::connect(&c.addr, &c.cookie)
        .await
        .map_err(Failure::from)
}

async fn run(cmd: Cmd) -> Result<u8, Failure> {
    match cmd {
        Cmd::Node {
            config,
            accept_data_loss,
        } => {
            let mut config = Config::load(&config).map_err(|e| Failure::usage(e.to_string()))?;
            config.store.accept_data_loss = accept_data_loss;
            let node = hodei::server::start(config).await?;
            eprintln!("hodei node listening on {}", node.addr);
            node.run_until_signal().await?;
            Ok(0)
        }
        Cmd::Dev {
            listen,
            data_dir,
            workers,
            slots,
            cookie,
        } => {
            let listen = listen.parse().map_err(|_| {
                Failure::usage(format!("invalid --listen {listen:?}: expected IP:PORT"))
            })?;
            let data_dir = match data_dir {
                Some(d) => d,
                None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                    .join(".hodei/dev"),
            };
            let config = Config::dev(&data_dir, listen, &cookie, workers, slots)
                .map_err(|e| Failure::usage(e.to_string()))?;
            let node = hodei::server::start(config).await?;
            eprintln!(
                "hodei dev node listening on {} (data in {}; {workers} local agents x {slots} slots)\n\
                 try:  hodei submit --wait -- echo hello      hodei jobs      hodei workers\n\
                 stop with Ctrl-C",
                node.addr,
                data_dir.display()
            );
            node.run_until_signal().await?;
            Ok(0)
        }
        Cmd::Demo => Ok(hodei::demo::run().await?),
        Cmd::Agent(a) => run_agent(a).await,
        Cmd::Submit(s) => submit(*s).await,
        Cmd::Jobs {
            conn,
            state,
            tenant,
            label,
            limit,
        } => {
            let tenant = tenant
                .map(|t| TenantId::new(t).map_err(|e| Failure::usage(e.to_string())))
                .transpose()?;
            let client = connect(&conn).await?;
            let jobs = client
                .list(JobFilter {
                    state,
                    tenant,
                    label,
                    limit,
                })
                .await?;
            match conn.output {
                Format::Table => print!("{}", output::jobs_table(&jobs) + "\n"),
                Format::Json => {
                    let v: Vec<_> = jobs.iter().map(output::job_json).collect();
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
            }
            Ok(0)
        }
        Cmd::Job { conn, id } => {
            let id = parse_id(&id)?;
            let client = connect(&conn).await?;
            let j = client.get(id).await?;
            let explanation = client.explain(id).await?;
            match conn.output {
                Format::Table => {
                    print!("{}", output::job_detail(&j));
                    if let Some(e) = &explanation {
                        print!("{}", output::explanation(e));
                    }
                }
                Format::Json => {
                    let mut v = serde_json::to_value(output::job_json(&j)).unwrap_or_default();
                    v["scheduling"] = serde_json::to_value(&explanation).unwrap_or_default();
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
                }
            }
            Ok(0)
        }
        Cmd::Taint {
            conn,
            worker,
            taints,
            remove,
        } => {
            let id =
                hodei_runtime::WorkerId::new(worker).map_err(|e| Failure::usage(e.to_string()))?;
            if taints.is_empty() && remove.is_empty() {
                return Err(Failure::usage(
                    "give taints to add (key=value:Effect) or --remove KEY",
                ));
            }
            let client = connect(&conn).await?;
            let w = client.taint_worker(id, taints, remove).await?;
            match conn.output {
                Format::Table => println!("{}", output::workers_table(std::slice::from_ref(&w))),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&w).unwrap_or_default())
                }
            }
            Ok(0)
        }
        Cmd::Metrics { conn, all } => {
            let client = connect(&conn).await?;
            let text = client.metrics().await?;
            print!("{}", output::metrics(&text, all));
            Ok(0)
        }
        Cmd::Logs { conn, id, follow } => {
            let id = parse_id(&id)?;
            let client = connect(&conn).await?;
            client.get(id).await?;
            print_logs(&client, id, follow).await?;
            Ok(0)
        }
        Cmd::Cancel { conn, id } => {
            let id = parse_id(&id)?;
            let client = connect(&conn).await?;
            let j = client.cancel(id).await?;
            match conn.output {
                Format::Table => println!(
                    "job {} {}{}",
                    j.id,
                    j.state,
                    if j.state.is_terminal() {
                        ""
                    } else {
                        " (stopping)"
                    }
                ),
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::job_json(&j)).unwrap_or_default()
                ),
            }
            Ok(0)
        }
        Cmd::Workers { conn } => {
            let client = connect(&conn).await?;
            let ws = client.workers().await?;
            match conn.output {
                Format::Table => println!("{}", output::workers_table(&ws)),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&ws).unwrap_or_default())
                }
            }
            Ok(0)
        }
        Cmd::Pools { conn } => {
            let client = connect(&conn).await?;
            let ps = client.pools().await?;
            match conn.output {
                Format::Table => println!("{}", output::pools_table(&ps)),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&ps).unwrap_or_default())
                }
            }
            Ok(0)
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "ok: {} ({} pools, listen {})",
                    file.display(),
                    c.pools.len(),
                    c.node.listen
                );
                Ok(0)
            }
            Err(e) => Err(Failure::usage(e.to_string())),
        },
        Cmd::Debug {
            cmd: DebugCmd::Fault { conn, target },
        } => {
            let client = connect(&conn).await?;
            client.inject_fault(&target).await?;
            println!("fault injected into {target}");
            Ok(0)
        }
        Cmd::Bench {
            cmd: BenchCmd::Jobs(a),
        } => {
            hodei::bench::jobs(a).await?;
            Ok(0)
        }
        Cmd::Bench {
            cmd: BenchCmd::Scaling(a),
        } => {
            hodei::bench::scaling(a).await?;
            Ok(0)
        }
        Cmd::Bench {
            cmd: BenchCmd::Docker(a),
        } => {
            hodei::bench::docker(a).await?;
            Ok(0)
        }
        Cmd::Image {
            cmd: ImageCmd::Build { tag, host, binary },
        } => {
            use hodei_actors::provider::{docker_engine, docker_image};
            let host = host.unwrap_or_else(hodei_config::default_docker_host);
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().map_err(Failure::other)?,
            };
            let mut spec = docker_image::ImageSpec::for_binary(binary)
                .map_err(|e| Failure::usage(e.to_string()))?;
            spec.tag = tag;
            let engine = docker_engine::connect(&host).await.map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?;
            let tag = docker_image::build_worker_image(&engine, &spec)
                .await
                .map_err(|e| Failure {
                    code: 1,
                    message: e.to_string(),
                })?;
            println!("{tag}");
            Ok(0)
        }
        Cmd::Sim { cmd } => blocking(move || sim::run(cmd)).await,
        Cmd::Operator { cmd } => operator::run(cmd).await,
        Cmd::Bench {
            cmd: BenchCmd::Scheduler(a),
        } => blocking(move || hodei::bench::scheduler(a)).await,
    }
}

/// Runs a CPU-bound command (simulation, pure benchmark) off the async runtime's threads.
async fn blocking(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Result<u8, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Failure {
        code: 1,
        message: e.to_string(),
    })??;
    Ok(0)
}

async fn run_agent(a: AgentArgs) -> Result<u8, Failure> {
    let host = hodei_config::HostResources::detect();
    let worker = a
        .worker_id
        .parse()
        .map_err(|e: hodei_runtime::SpecError| Failure::usage(e.to_string()))?;
    let pool = a
        .pool
        .parse()
        .map_err(|e: hodei_runtime::SpecError| Failure::usage(e.to_string()))?;
    let labels: BTreeMap<String, String> = a.label.into_iter().collect();
    hodei_runtime::job::validate_labels("label", &labels)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let parent_pid = std::env::var(hodei_actors::provider::local::ENV_PARENT_PID)
        .ok()
        .and_then(|p| p.parse().ok());
    let token = std::env::var(hodei_actors::provider::local::ENV_AGENT_TOKEN)
        .unwrap_or_else(|_| hodei_actors::provider::local::random_hex(8));
    let opts = hodei::agent::AgentOptions {
        node: a.node,
        cookie: a.cookie,
        worker,
        pool,
        slots: a.slots,
        capacity: Resources {
            cpu_millis: a.cpu.unwrap_or(host.cpu_millis),
            memory_bytes: a.memory.unwrap_or(host.memory_bytes),
            ephemeral_storage_bytes: a.ephemeral_storage,
            gpus: a.gpus,
        },
        labels,
        taints: a.taint,
        job_env: {
            if let Some((k, _)) = a.job_env.iter().find(|(k, _)| k.starts_with("HODEI_")) {
                return Err(Failure::usage(format!(
                    "--job-env {k}: names starting with HODEI_ are reserved"
                )));
            }
            a.job_env.into_iter().collect()
        },
        work_dir: a.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("hodei-agent-{}", std::process::id()))
        }),
        run_as: a.run_as_user.map(|u| (u, a.run_as_group)),
        token,
        parent_pid,
    };
    match hodei::agent::run(opts).await {
        Ok(hodei::agent::AgentExit::Shutdown(_)) => Ok(0),
        Ok(other) => {
            eprintln!("hodei agent: exiting: {other:?}");
            Ok(1)
        }
        Err(e @ hodei::agent::AgentError::Invalid(_)) => Err(Failure::usage(e.to_string())),
        Err(e @ hodei::agent::AgentError::Refused(_)) => Err(Failure {
            code: 3,
            message: e.to_string(),
        }),
        Err(e) => Err(Failure::other(e)),
    }
}

async fn submit(s: SubmitArgs) -> Result<u8, Failure> {
    let mut spec = if s.shell {
        JobSpec::shell(s.command.join(" "))
    } else {
        JobSpec::argv(s.command.clone())
    };
    if let Some(n) = s.name {
        spec = spec.with_name(n);
    }
    spec = spec.with_priority(s.priority).with_retries(s.retries);
    spec.resources = Resources {
        cpu_millis: s.cpu.unwrap_or(0),
        memory_bytes: s.memory.unwrap_or(0),
        gpus: s.gpus,
        ..Resources::ZERO
    };
    let mut job_affinity = s.job_affinity;
    job_affinity.extend(s.job_anti_affinity);
    job_affinity.extend(s.spread);
    spec = spec.with_scheduling(hodei_runtime::scheduling::SchedulingConstraints {
        profile: s.profile,
        node_selector: s.selector.into_iter().collect(),
        node_affinity: hodei_runtime::scheduling::NodeAffinity {
            required: s.affinity,
            preferred: s.prefer,
        },
        tolerations: s.toleration,
        job_affinity,
        scheduling_deadline_ms: s.scheduling_deadline.map(|d| d.as_millis() as u64),
    });
    for (k, v) in s.label {
        spec = spec.with_label(k, v);
    }
    for (k, v) in s.env {
        spec = spec.with_env(k, v);
    }
    if let Some(t) = s.tenant {
        spec = spec.with_tenant(TenantId::new(t).map_err(|e| Failure::usage(e.to_string()))?);
    }
    if let Some(t) = s.timeout {
        spec = spec.with_timeout_ms(t.as_millis() as u64);
    }
    if let Some(k) = s.idempotency_key {
        spec = spec.with_idempotency_key(k);
    }
    if let Some(w) = s.workdir {
        spec = spec.with_working_dir(w);
    }
    spec.validate().map_err(|e| Failure::usage(e.to_string()))?;
    let hodei_failed = |e: ClientError| Failure {
        code: EXIT_HODEI_FAILED,
        message: e.to_string(),
    };
    let client = Client::connect(&s.conn.addr, &s.conn.cookie)
        .await
        .map_err(hodei_failed)?;
    let ack = client.submit_ack(spec).await.map_err(hodei_failed)?;
    if !s.wait {
        match s.conn.output {
            Format::Table => println!("{}", ack.id),
            Format::Json => {
                let j = client.get(ack.id).await.map_err(hodei_failed)?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::job_json(&j)).unwrap_or_default()
                );
            }
        }
        return Ok(0);
    }
    eprintln!(
        "hodei: job {}{} submitted; waiting",
        ack.id,
        if ack.existing { " (existing)" } else { "" }
    );
    print_logs(&client, ack.id, true)
        .await
        .map_err(|f| Failure {
            code: EXIT_HODEI_FAILED,
            message: f.message,
        })?;
    let j = client.wait(ack.id, None).await.map_err(hodei_failed)?;
    if s.conn.output == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::job_json(&j)).unwrap_or_default()
        );
    }
    if j.state != JobState::Succeeded {
        eprintln!(
            "hodei: job {} {}: {}",
            j.id,
            j.state,
            j.reason.as_deref().unwrap_or("")
        );
    }
    Ok(j.cli_exit_code().clamp(0, 255) as u8)
}

async fn print_logs(client: &Client, id: JobId, follow: bool) -> Result<(), Failure> {
    let mut offset = 0;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let mut quiet_since = std::time::Instant::now();
    loop {
        let wait = if follow {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
        let chunk = client.read_logs(id, offset, 1 << 20, wait).await?;
        if !chunk.records.is_empty() {
            spinner.finish_and_clear();
            quiet_since = std::time::Instant::now();
        }
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for r in &chunk.records {
            let _ = match r.stream {
                LogStream::Stdout => out.write_all(&r.data),
                LogStream::Stderr | LogStream::System => err.write_all(&r.data),
            };
        }
        let _ = out.flush();
        drop((out, err));
        offset = chunk.next_offset;
        if chunk.complete || (!follow && chunk.records.is_empty()) {
            spinner.finish_and_clear();
            return Ok(());
        }
        if follow
            && quiet_since.elapsed() > Duration::from_secs(2)
            && spinner.is_hidden()
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
        {
            spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            spinner.enable_steady_tick(Duration::from_millis(120));
        }
        if !spinner.is_hidden()
            && let Ok(j) = client.get(id).await
        {
            spinner.set_message(format!(
                "job {id} {} {}",
                j.state,
                j.reason.unwrap_or_default()
            ));
        }
    }
}
