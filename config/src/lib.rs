//! # hodei-config
//!
//! Hodei's configuration: one TOML file ([`RawConfig`], every section `deny_unknown_fields`),
//! `HODEI_*` environment overrides for the main fields, and [`RawConfig::validate`] into the typed
//! [`Config`] the node runs with. Every error names the field, the value and the reason.
//!
//! See `config/hodei.example.toml` for a documented example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hodei_runtime::resources::{parse_bytes, parse_cpu_millis};
use hodei_runtime::{NodeId, PoolId, PoolSpec, ProviderKind, Resources, WorkerTemplate};
use serde::Deserialize;
use thiserror::Error;

/// The default address of a development node.
pub const DEV_LISTEN: &str = "127.0.0.1:7420";
/// The cookie `hodei dev` uses (and clients default to). Not for production.
pub const DEV_COOKIE: &str = "hodei-dev-cookie";
/// Shortest cookie accepted.
pub const COOKIE_LEN_MIN: usize = 8;

/// A configuration problem.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or has unknown/mistyped fields.
    #[error("config file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message (with line and column).
        reason: String,
    },
    /// A field has an unacceptable value.
    #[error("invalid config: {field} = {value:?}: {reason}")]
    Invalid {
        /// Dotted path of the field (e.g. `pools[0].max`).
        field: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

fn invalid(
    field: impl Into<String>,
    value: impl ToString,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file format.

/// The TOML file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[node]`
    #[serde(default)]
    pub node: RawNode,
    /// `[store]`
    #[serde(default)]
    pub store: RawStore,
    /// `[jobs]`
    #[serde(default)]
    pub jobs: RawJobs,
    /// `[agents]`
    #[serde(default)]
    pub agents: RawAgents,
    /// `[scheduler]`
    #[serde(default)]
    pub scheduler: RawScheduler,
    /// `[quotas]`
    #[serde(default)]
    pub quotas: RawQuotas,
    /// `[providers.NAME]`: named providers pools may use (a `local` one always exists).
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// `[debug]`
    #[serde(default)]
    pub debug: RawDebug,
    /// `[[pools]]`
    #[serde(default)]
    pub pools: Vec<RawPool>,
}

/// `[node]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Configured name (`HODEI_NODE_NAME`); default `node-1`.
    pub name: Option<String>,
    /// Listen address for clients and agents (`HODEI_LISTEN`); default `127.0.0.1:7420`.
    pub listen: Option<String>,
    /// Address agents started by this node connect to; default: the listen address (with
    /// `0.0.0.0` replaced by `127.0.0.1`).
    pub advertise: Option<String>,
    /// Shared secret of the cluster (`HODEI_COOKIE`).
    pub cookie: Option<String>,
    /// File holding the cookie (alternative to `cookie`).
    pub cookie_file: Option<String>,
    /// Where the journal, snapshots and logs live (`HODEI_DATA_DIR`).
    pub data_dir: Option<String>,
    /// Prometheus `/metrics` address (`HODEI_METRICS_LISTEN`); omitted = disabled.
    pub metrics_listen: Option<String>,
    /// Largest request or reply on the wire; default `4Mi`.
    pub max_message: Option<String>,
    /// Most simultaneous client/agent connections; default 1024.
    pub max_connections: Option<u32>,
}

/// `[store]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// sled page cache; default `64Mi`.
    pub cache: Option<String>,
    /// Snapshot after this many journal entries; default 10000.
    pub snapshot_every_entries: Option<u64>,
}

/// `[jobs]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    /// How long finished jobs (and their logs) are kept; default `24h`.
    pub retention: Option<String>,
    /// Most finished jobs kept; default 100000.
    pub max_finished: Option<u64>,
    /// Most jobs not yet finished; submissions beyond are refused; default 1000000.
    pub max_active: Option<u64>,
    /// Per-attempt log cap; default `10Mi`.
    pub log_cap: Option<String>,
}

/// `[agents]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgents {
    /// How often agents heartbeat; default `1s`.
    pub heartbeat_interval: Option<String>,
    /// A worker silent this long is lost; default `5s`.
    pub heartbeat_timeout: Option<String>,
    /// An agent that cannot reach its node this long stops its jobs and exits; default `10s`.
    pub lease: Option<String>,
    /// SIGTERM → SIGKILL grace when stopping a job; default `10s`.
    pub stop_grace: Option<String>,
    /// The `hodei` binary local agents run; default: this executable.
    pub binary: Option<String>,
    /// Where agents create job scratch directories; default `<data_dir>/work`.
    pub work_dir: Option<String>,
    /// Run jobs as this user (name or uid); the agent must be able to switch to it.
    pub run_as_user: Option<String>,
    /// Run jobs as this group (name or gid).
    pub run_as_group: Option<String>,
}

/// `[scheduler]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    /// Most pending jobs examined per cycle; default 1024.
    pub max_jobs_per_cycle: Option<u32>,
    /// `[scheduler.profiles.NAME]`: named scheduler profiles (queue strategy, plugins, weights,
    /// preemption); a `default` profile exists even when not given.
    #[serde(default)]
    pub profiles: BTreeMap<String, hodei_runtime::scheduling::ProfileConfig>,
}

/// `[providers.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// `local` (agents as child processes of the node).
    pub kind: Option<String>,
    /// The agent binary this provider starts (default: `agents.binary`, else this executable).
    pub binary: Option<String>,
    /// What one of its workers costs per second (provider selection, cost metrics).
    pub cost_per_second: Option<f64>,
    /// Labels matched by pools' `scaling.provider_selector` and label affinity.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Workers it may run at once, over all pools; default unlimited.
    pub max_workers: Option<u32>,
    /// Docker: the engine's address (`unix:///var/run/docker.sock`, `tcp://host:2375`); default
    /// `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Docker: the worker image; default: one built from this node's own binary on first use
    /// (`hodei image build`).
    pub image: Option<String>,
    /// Docker: the containers' network mode (`host`, `bridge`, a network name); default `host`.
    pub network: Option<String>,
    /// Docker: the node address the agents in containers dial; default `node.advertise`.
    pub node_address: Option<String>,
    /// Docker: CPU limit of a worker whose pool template sets no `cpu` (`1`, `500m`).
    pub cpu: Option<String>,
    /// Docker: memory limit of a worker whose pool template sets no `memory` (`1Gi`).
    pub memory: Option<String>,
    /// Docker: expected start-up (provider selection before anything is measured); default `1s`.
    pub expected_startup: Option<String>,
    /// Docker: container creations in flight at once; default 4.
    pub create_concurrency: Option<u32>,
    /// Docker: how often the engine is pinged; default `5s`.
    pub health_interval: Option<String>,
}

/// `[quotas]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// `[quotas.tenants.NAME]`: per-tenant limits; jobs over them wait (held), never rejected.
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenantQuota>,
    /// `[quotas.pools.NAME]`: per-pool limits; the autoscaler never provisions past them.
    #[serde(default)]
    pub pools: BTreeMap<String, RawPoolQuota>,
}

/// `[quotas.pools.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolQuota {
    /// Workers at most.
    pub max_workers: Option<u32>,
    /// CPU of all its workers (template cpu × workers) at most (`16`, `500m`).
    pub max_cpu: Option<String>,
    /// Memory of all its workers at most (`64Gi`).
    pub max_memory: Option<String>,
}

/// `[quotas.tenants.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantQuota {
    /// Running jobs at most.
    pub max_running_jobs: Option<u32>,
    /// CPU held by running jobs at most (`4`, `500m`).
    pub max_cpu: Option<String>,
    /// Memory held by running jobs at most (`8Gi`).
    pub max_memory: Option<String>,
}

/// `[debug]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebug {
    /// Accept fault-injection requests from clients (tests only); default false.
    pub fault_injection: Option<bool>,
}

/// `[[pools]]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Pool name.
    pub name: Option<String>,
    /// `local` (the embedded default).
    pub provider: Option<String>,
    /// Workers kept warm; default 1.
    pub min: Option<u32>,
    /// Upper bound; default = max(min, 1).
    pub max: Option<u32>,
    /// Retire idle workers above `min` after this; default `60s`.
    pub idle_timeout: Option<String>,
    /// Destroy an agent that has not registered after this; default `30s`.
    pub register_timeout: Option<String>,
    /// The worker template.
    #[serde(default)]
    pub template: RawTemplate,
    /// `[pools.scaling]`: the autoscaler's policy for this pool (cooldowns, steps, wait and
    /// utilisation triggers, ephemeral workers, recycling, quota, predictive pre-warming).
    pub scaling: Option<toml::Table>,
    /// Named providers (`[providers.NAME]`) that may start this pool's workers; default
    /// `["local"]`.
    pub providers: Option<Vec<String>>,
}

/// `[pools.template]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    /// Concurrent jobs per worker; default 1.
    pub slots: Option<u32>,
    /// CPU each worker offers (`4`, `500m`); default: the host's cores.
    pub cpu: Option<String>,
    /// Memory each worker offers (`8Gi`); default: the host's memory.
    pub memory: Option<String>,
    /// Scratch storage each worker offers; default `0`.
    pub ephemeral_storage: Option<String>,
    /// GPUs each worker offers; default 0.
    pub gpu: Option<u32>,
    /// Labels each worker carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints each worker carries (`dedicated=gpu:NoSchedule`, `maintenance:NoExecute`).
    #[serde(default)]
    pub taints: Vec<String>,
    /// What the workers can do (`docker`, `cuda12`): each becomes the label
    /// `capability.NAME=true`, for `--selector capability.docker=true`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Environment every job on these workers starts with (a job's own env wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Command the agent is started under, e.g. `["nice", "-n", "10"]` (local provider).
    #[serde(default)]
    pub command: Vec<String>,
    /// Container image of the workers (Docker provider; default: the provider's `image`).
    pub image: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The validated config.

/// The node's validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Node settings.
    pub node: NodeConfig,
    /// Store settings.
    pub store: StoreConfig,
    /// Job settings.
    pub jobs: JobsConfig,
    /// Agent settings.
    pub agents: AgentsConfig,
    /// Scheduler settings.
    pub scheduler: SchedulerConfig,
    /// Whether clients may inject faults (tests only).
    pub fault_injection: bool,
    /// Pools.
    pub pools: Vec<PoolSpec>,
    /// Named providers (always holds `local`).
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// `[providers.NAME]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// What it starts workers with.
    pub kind: ProviderKind,
    /// Agent binary override.
    pub binary: Option<PathBuf>,
    /// Cost of one worker per second, in millionths.
    pub cost_micros_per_second: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Workers at most; `None` = unlimited.
    pub max_workers: Option<u32>,
    /// Start-up expected before any is measured (provider selection), in milliseconds.
    pub expected_startup_ms: u64,
    /// Docker settings (`kind = "docker"` only).
    pub docker: Option<DockerSettings>,
}

/// `[providers.NAME]` with `kind = "docker"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// Engine address (`unix://…`, `tcp://…`).
    pub host: String,
    /// Worker image; `None` = built from this node's binary when first needed.
    pub image: Option<String>,
    /// Network mode of the containers.
    pub network: String,
    /// Node address the agents dial; `None` = `node.advertise`.
    pub node_address: Option<String>,
    /// Container creations in flight at once.
    pub create_concurrency: u32,
    /// Engine ping period, in milliseconds.
    pub health_interval_ms: u64,
}

/// The default Docker engine address: `DOCKER_HOST`, else the local socket.
pub fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// `[node]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Configured name.
    pub name: NodeId,
    /// Listen address.
    pub listen: SocketAddr,
    /// Address given to local agents.
    pub advertise: SocketAddr,
    /// Cluster cookie.
    pub cookie: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest message.
    pub max_message_bytes: u64,
    /// Most connections.
    pub max_connections: u32,
}

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// sled cache.
    pub cache_bytes: u64,
    /// Snapshot cadence.
    pub snapshot_every_entries: u64,
    /// Start even when acknowledged data is found missing or damaged, recording the loss in
    /// the journal. Never read from a file: only `hodei node --accept-data-loss` sets it, for one
    /// start.
    pub accept_data_loss: bool,
}

/// `[jobs]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// Retention of finished jobs.
    pub retention_ms: u64,
    /// Most finished jobs kept.
    pub max_finished: u64,
    /// Most unfinished jobs.
    pub max_active: u64,
    /// Log cap per attempt.
    pub log_cap_bytes: u64,
}

/// `[agents]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsConfig {
    /// Heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a worker is lost.
    pub heartbeat_timeout_ms: u64,
    /// Agent lease.
    pub lease_ms: u64,
    /// Stop grace.
    pub stop_grace_ms: u64,
    /// Agent binary (None = current executable).
    pub binary: Option<PathBuf>,
    /// Work dir.
    pub work_dir: PathBuf,
    /// Run-as user.
    pub run_as_user: Option<String>,
    /// Run-as group.
    pub run_as_group: Option<String>,
}

/// `[scheduler]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Pending jobs examined per cycle.
    pub max_jobs_per_cycle: usize,
    /// Profiles and tenant quotas, validated.
    pub pipeline: hodei_runtime::scheduling::SchedulerConfig,
}

/// What the machine offers, used for pool templates that do not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Cores × 1000.
    pub cpu_millis: u64,
    /// Total memory.
    pub memory_bytes: u64,
}

impl HostResources {
    /// Reads the host's cores and memory (`/proc/meminfo`); conservative fallbacks.
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(1 << 30);
        Self {
            cpu_millis: cores * 1000,
            memory_bytes: mem,
        }
    }
}

/// Environment variables that override config fields.
pub const ENV_OVERRIDES: [(&str, &str); 6] = [
    ("HODEI_NODE_NAME", "node.name"),
    ("HODEI_LISTEN", "node.listen"),
    ("HODEI_ADVERTISE", "node.advertise"),
    ("HODEI_COOKIE", "node.cookie"),
    ("HODEI_DATA_DIR", "node.data_dir"),
    ("HODEI_METRICS_LISTEN", "node.metrics_listen"),
];

impl RawConfig {
    /// Parses TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            reason: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Applies `HODEI_*` overrides from `env` (see [`ENV_OVERRIDES`]).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let n = &mut self.node;
        if let Some(v) = env("HODEI_NODE_NAME") {
            n.name = Some(v);
        }
        if let Some(v) = env("HODEI_LISTEN") {
            n.listen = Some(v);
        }
        if let Some(v) = env("HODEI_ADVERTISE") {
            n.advertise = Some(v);
        }
        if let Some(v) = env("HODEI_COOKIE") {
            n.cookie = Some(v);
            n.cookie_file = None;
        }
        if let Some(v) = env("HODEI_DATA_DIR") {
            n.data_dir = Some(v);
        }
        if let Some(v) = env("HODEI_METRICS_LISTEN") {
            n.metrics_listen = Some(v);
        }
    }

    /// Validates into a [`Config`].
    pub fn validate(&self, host: HostResources) -> Result<Config, ConfigError> {
        let n = &self.node;
        let name = NodeId::new(n.name.clone().unwrap_or_else(|| "node-1".into())).map_err(|e| {
            invalid(
                "node.name",
                n.name.clone().unwrap_or_default(),
                e.to_string(),
            )
        })?;
        let listen_s = n.listen.clone().unwrap_or_else(|| DEV_LISTEN.into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "node.listen",
                &listen_s,
                "expected IP:PORT, e.g. 127.0.0.1:7420",
            )
        })?;
        let advertise = match &n.advertise {
            Some(a) => a.parse().map_err(|_| {
                invalid(
                    "node.advertise",
                    a,
                    "expected IP:PORT that agents can reach",
                )
            })?,
            None => {
                let mut a = listen;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                a
            }
        };
        let cookie = match (&n.cookie, &n.cookie_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "node.cookie_file",
                    n.cookie_file.clone().unwrap_or_default(),
                    "give either node.cookie or node.cookie_file, not both",
                ));
            }
            (Some(c), None) => c.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| invalid("node.cookie_file", f, format!("cannot read: {e}")))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(invalid(
                    "node.cookie",
                    "",
                    "missing: set node.cookie, node.cookie_file or HODEI_COOKIE",
                ));
            }
        };
        if cookie.len() < COOKIE_LEN_MIN
            || cookie.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "node.cookie",
                "<hidden>",
                format!("must be at least {COOKIE_LEN_MIN} characters without whitespace"),
            ));
        }
        let data_dir = PathBuf::from(n.data_dir.clone().ok_or_else(|| {
            invalid(
                "node.data_dir",
                "",
                "missing: set node.data_dir or HODEI_DATA_DIR",
            )
        })?);
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "", "must not be empty"));
        }
        let metrics_listen = match &n.metrics_listen {
            Some(m) if !m.is_empty() => Some(m.parse().map_err(|_| {
                invalid(
                    "node.metrics_listen",
                    m,
                    "expected IP:PORT, e.g. 127.0.0.1:9420",
                )
            })?),
            _ => None,
        };
        let max_message_bytes = bytes_field("node.max_message", &n.max_message, 4 << 20)?;
        if !(64 << 10..=(15 << 20)).contains(&max_message_bytes) {
            return Err(invalid(
                "node.max_message",
                n.max_message.clone().unwrap_or_default(),
                "must be between 64Ki and 15Mi (the transport caps frames at 16Mi)",
            ));
        }
        let max_connections = n.max_connections.unwrap_or(1024);
        if max_connections == 0 || max_connections > 65_536 {
            return Err(invalid(
                "node.max_connections",
                max_connections,
                "must be 1..=65536",
            ));
        }

        let s = &self.store;
        let cache_bytes = bytes_field("store.cache", &s.cache, 64 << 20)?;
        if cache_bytes < (1 << 20) {
            return Err(invalid(
                "store.cache",
                s.cache.clone().unwrap_or_default(),
                "at least 1Mi",
            ));
        }
        let snapshot_every_entries = s.snapshot_every_entries.unwrap_or(10_000);
        if snapshot_every_entries < 10 {
            return Err(invalid(
                "store.snapshot_every_entries",
                snapshot_every_entries,
                "at least 10",
            ));
        }

        let j = &self.jobs;
        let jobs = JobsConfig {
            retention_ms: duration_field("jobs.retention", &j.retention, 24 * 3600 * 1000)?,
            max_finished: j.max_finished.unwrap_or(100_000),
            max_active: j.max_active.unwrap_or(1_000_000),
            log_cap_bytes: bytes_field("jobs.log_cap", &j.log_cap, 10 << 20)?,
        };
        if jobs.max_active == 0 {
            return Err(invalid("jobs.max_active", 0, "must be at least 1"));
        }
        if jobs.log_cap_bytes < 1024 || jobs.log_cap_bytes > (1 << 30) {
            return Err(invalid(
                "jobs.log_cap",
                j.log_cap.clone().unwrap_or_default(),
                "must be between 1Ki and 1Gi",
            ));
        }

        let a = &self.agents;
        let agents = AgentsConfig {
            heartbeat_interval_ms: duration_field(
                "agents.heartbeat_interval",
                &a.heartbeat_interval,
                1000,
            )?,
            heartbeat_timeout_ms: duration_field(
                "agents.heartbeat_timeout",
                &a.heartbeat_timeout,
                5000,
            )?,
            lease_ms: duration_field("agents.lease", &a.lease, 10_000)?,
            stop_grace_ms: duration_field("agents.stop_grace", &a.stop_grace, 10_000)?,
            binary: a.binary.as_ref().map(PathBuf::from),
            work_dir: a
                .work_dir
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("work")),
            run_as_user: a.run_as_user.clone().filter(|s| !s.is_empty()),
            run_as_group: a.run_as_group.clone().filter(|s| !s.is_empty()),
        };
        if agents.heartbeat_interval_ms < 50 {
            return Err(invalid(
                "agents.heartbeat_interval",
                a.heartbeat_interval.clone().unwrap_or_default(),
                "at least 50ms",
            ));
        }
        if agents.heartbeat_timeout_ms < 2 * agents.heartbeat_interval_ms {
            return Err(invalid(
                "agents.heartbeat_timeout",
                a.heartbeat_timeout.clone().unwrap_or_default(),
                "must be at least twice agents.heartbeat_interval",
            ));
        }
        if agents.lease_ms < 2 * agents.heartbeat_interval_ms {
            return Err(invalid(
                "agents.lease",
                a.lease.clone().unwrap_or_default(),
                "must be at least twice agents.heartbeat_interval",
            ));
        }
        if let Some(b) = &agents.binary
            && !b.is_absolute()
        {
            return Err(invalid(
                "agents.binary",
                b.display(),
                "must be an absolute path",
            ));
        }

        let max_jobs_per_cycle = self.scheduler.max_jobs_per_cycle.unwrap_or(1024);
        if max_jobs_per_cycle == 0 || max_jobs_per_cycle > 100_000 {
            return Err(invalid(
                "scheduler.max_jobs_per_cycle",
                max_jobs_per_cycle,
                "must be 1..=100000",
            ));
        }

        let pipeline = self.scheduler_pipeline()?;

        let providers = self.providers_config()?;
        let mut pools = Vec::with_capacity(self.pools.len());
        for (i, p) in self.pools.iter().enumerate() {
            let mut spec = validate_pool(i, p, host)?;
            spec.providers = match (&p.providers, spec.provider) {
                (Some(list), ProviderKind::External) if !list.is_empty() => {
                    return Err(invalid(
                        format!("pools[{i}].providers"),
                        format!("{list:?}"),
                        "an external pool has no providers (its agents are started by hand)",
                    ));
                }
                (_, ProviderKind::External) => Vec::new(),
                (None, _) => vec!["local".to_string()],
                (Some(list), _) => {
                    if list.is_empty() {
                        return Err(invalid(
                            format!("pools[{i}].providers"),
                            "[]",
                            "name at least one provider",
                        ));
                    }
                    for name in list {
                        if !providers.contains_key(name) {
                            return Err(invalid(
                                format!("pools[{i}].providers"),
                                name,
                                format!(
                                    "no such provider; defined: {}",
                                    providers.keys().cloned().collect::<Vec<_>>().join(", ")
                                ),
                            ));
                        }
                    }
                    list.clone()
                }
            };
            // A pool first served by a docker provider takes that provider's default limits
            // for what its template leaves unset.
            if let Some(d) = spec.providers.first().and_then(|n| self.providers.get(n)) {
                let f = |x: &str| format!("providers.{}.{x}", spec.providers[0]);
                if p.template.cpu.is_none()
                    && let Some(c) = &d.cpu
                {
                    spec.template.capacity.cpu_millis =
                        parse_cpu_millis(c).map_err(|e| invalid(f("cpu"), c, e.to_string()))?;
                }
                if p.template.memory.is_none()
                    && let Some(m) = &d.memory
                {
                    spec.template.capacity.memory_bytes = parse_bytes("memory", m)
                        .map_err(|e| invalid(f("memory"), m, e.to_string()))?;
                }
            }
            if pools.iter().any(|q: &PoolSpec| q.id == spec.id) {
                return Err(invalid(
                    format!("pools[{i}].name"),
                    &spec.id,
                    "duplicate pool name",
                ));
            }
            pools.push(spec);
        }
        for (name, q) in &self.quotas.pools {
            let field = |f: &str| format!("quotas.pools.{name}.{f}");
            let Some(spec) = pools.iter_mut().find(|p| p.id.as_str() == name) else {
                return Err(invalid(
                    format!("quotas.pools.{name}"),
                    name,
                    "no pool has this name",
                ));
            };
            let quota = &mut spec.scaling.quota;
            quota.max_workers = q.max_workers;
            if let Some(v) = &q.max_cpu {
                quota.max_cpu_millis = Some(
                    hodei_runtime::resources::parse_cpu_millis(v)
                        .map_err(|e| invalid(field("max_cpu"), v, e.to_string()))?,
                );
            }
            if let Some(v) = &q.max_memory {
                quota.max_memory_bytes = Some(
                    parse_bytes("memory", v)
                        .map_err(|e| invalid(field("max_memory"), v, e.to_string()))?,
                );
            }
        }

        Ok(Config {
            node: NodeConfig {
                name,
                listen,
                advertise,
                cookie,
                data_dir,
                metrics_listen,
                max_message_bytes,
                max_connections,
            },
            store: StoreConfig {
                cache_bytes,
                snapshot_every_entries,
                accept_data_loss: false,
            },
            jobs,
            agents,
            scheduler: SchedulerConfig {
                max_jobs_per_cycle: max_jobs_per_cycle as usize,
                pipeline,
            },
            fault_injection: self.debug.fault_injection.unwrap_or(false),
            pools,
            providers,
        })
    }
}

fn validate_pool(i: usize, p: &RawPool, host: HostResources) -> Result<PoolSpec, ConfigError> {
    let f = |name: &str| format!("pools[{i}].{name}");
    let name = p
        .name
        .clone()
        .ok_or_else(|| invalid(f("name"), "", "missing: every pool needs a name"))?;
    let id = PoolId::new(&name).map_err(|e| invalid(f("name"), &name, e.to_string()))?;
    let provider = match p.provider.as_deref().unwrap_or("local") {
        "local" => ProviderKind::Local,
        "external" => ProviderKind::External,
        other => {
            return Err(invalid(
                f("provider"),
                other,
                "unknown provider; available: local, external",
            ));
        }
    };
    let external = provider == ProviderKind::External;
    let min_workers = p.min.unwrap_or(if external { 0 } else { 1 });
    let max_workers = p
        .max
        .unwrap_or(min_workers.max(if external { 0 } else { 1 }));
    if external && (min_workers > 0 || max_workers > 0) {
        return Err(invalid(
            f("min"),
            min_workers.max(max_workers),
            "an external pool's agents are started outside Hodei: it has no min or max",
        ));
    }
    if max_workers == 0 && !external {
        return Err(invalid(f("max"), 0, "must be at least 1"));
    }
    if min_workers > max_workers {
        return Err(invalid(
            f("min"),
            min_workers,
            format!("greater than max ({max_workers})"),
        ));
    }
    if max_workers > 10_000 {
        return Err(invalid(f("max"), max_workers, "at most 10000"));
    }
    let t = &p.template;
    let slots = t.slots.unwrap_or(1);
    if slots == 0 || slots > 1024 {
        return Err(invalid(f("template.slots"), slots, "must be 1..=1024"));
    }
    let cpu_millis = match &t.cpu {
        Some(c) => parse_cpu_millis(c).map_err(|e| invalid(f("template.cpu"), c, e.to_string()))?,
        None => host.cpu_millis,
    };
    let memory_bytes = match &t.memory {
        Some(m) => {
            parse_bytes("memory", m).map_err(|e| invalid(f("template.memory"), m, e.to_string()))?
        }
        None => host.memory_bytes,
    };
    let ephemeral_storage_bytes = match &t.ephemeral_storage {
        Some(m) => parse_bytes("ephemeral storage", m)
            .map_err(|e| invalid(f("template.ephemeral_storage"), m, e.to_string()))?,
        None => 0,
    };
    let gpus = t.gpu.unwrap_or(0);
    let capacity = Resources {
        cpu_millis,
        memory_bytes,
        ephemeral_storage_bytes,
        gpus,
    };
    capacity
        .validate()
        .map_err(|e| invalid(f("template"), capacity, e.to_string()))?;
    hodei_runtime::job::validate_labels("label", &t.labels).map_err(|e| {
        invalid(
            f("template.labels"),
            format!("{:?}", t.labels),
            e.to_string(),
        )
    })?;
    let mut taints = Vec::with_capacity(t.taints.len());
    for (i, raw) in t.taints.iter().enumerate() {
        let taint: hodei_runtime::scheduling::Taint =
            raw.parse()
                .map_err(|e: hodei_runtime::scheduling::SchedulingError| {
                    invalid(f(&format!("template.taints[{i}]")), raw, e.to_string())
                })?;
        taints.push(taint);
    }
    let mut labels = t.labels.clone();
    for c in &t.capabilities {
        labels.insert(format!("capability.{c}"), "true".into());
    }
    hodei_runtime::job::validate_labels("label", &labels).map_err(|e| {
        invalid(
            f("template.capabilities"),
            format!("{:?}", t.capabilities),
            e.to_string(),
        )
    })?;
    for k in t.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') || k.starts_with("HODEI_") {
            return Err(invalid(
                f("template.env"),
                k,
                "names must be non-empty, without '=' or NUL, and not start with HODEI_",
            ));
        }
    }
    if t.command.first().is_some_and(|c| c.trim().is_empty()) {
        return Err(invalid(
            f("template.command"),
            format!("{:?}", t.command),
            "the first element must name a program",
        ));
    }
    let idle_timeout_ms = duration_field(&f("idle_timeout"), &p.idle_timeout, 60_000)?;
    let register_timeout_ms = duration_field(&f("register_timeout"), &p.register_timeout, 30_000)?;
    if register_timeout_ms < 100 {
        return Err(invalid(
            f("register_timeout"),
            p.register_timeout.clone().unwrap_or_default(),
            "at least 100ms",
        ));
    }
    let scaling = scaling_policy(
        &f,
        p,
        min_workers,
        max_workers,
        idle_timeout_ms,
        register_timeout_ms,
    )?;
    Ok(PoolSpec {
        id,
        provider,
        min_workers,
        max_workers,
        scaling,
        providers: Vec::new(),
        template: WorkerTemplate {
            capacity,
            slots,
            labels,
            taints,
            env: t.env.clone(),
            command: t.command.clone(),
            image: match &t.image {
                Some(i) if i.is_empty() || i.contains(char::is_whitespace) => {
                    return Err(invalid(f("template.image"), i, "not an image reference"));
                }
                other => other.clone(),
            },
        },
        idle_timeout_ms,
        register_timeout_ms,
    })
}

/// `[pools.scaling]` into the pool's `ScalingPolicy`. The pool's own `min`, `max`,
/// `idle_timeout` and `register_timeout` are its bounds: the table may not set them again.
fn scaling_policy(
    f: &dyn Fn(&str) -> String,
    p: &RawPool,
    min_workers: u32,
    max_workers: u32,
    idle_timeout_ms: u64,
    register_timeout_ms: u64,
) -> Result<hodei_runtime::scaling::ScalingPolicy, ConfigError> {
    use hodei_runtime::scaling::{ScalingError, ScalingPolicy};
    let mut policy = match &p.scaling {
        None => ScalingPolicy::default(),
        Some(table) => {
            for (key, pool_key) in [
                ("min_workers", "min"),
                ("max_workers", "max"),
                ("idle_timeout_ms", "idle_timeout"),
                ("register_timeout_ms", "register_timeout"),
                ("quota", "[quotas.pools.NAME]"),
            ] {
                if let Some(v) = table.get(key) {
                    return Err(invalid(
                        f(&format!("scaling.{key}")),
                        v,
                        format!("set it on the pool itself: {pool_key}"),
                    ));
                }
            }
            ScalingPolicy::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| invalid(f("scaling"), "", e.to_string()))?
        }
    };
    policy.min_workers = min_workers;
    policy.max_workers = max_workers;
    policy.idle_timeout_ms = idle_timeout_ms;
    policy.register_timeout_ms = register_timeout_ms;
    policy.validate().map_err(|e| match e {
        ScalingError::Invalid {
            field,
            value,
            reason,
        } => invalid(f(&field), value, reason),
    })?;
    Ok(policy)
}

impl RawConfig {
    /// `[providers.NAME]`, plus the implicit `local` provider.
    fn providers_config(&self) -> Result<BTreeMap<String, ProviderConfig>, ConfigError> {
        let mut out = BTreeMap::new();
        out.insert(
            "local".to_string(),
            ProviderConfig {
                kind: ProviderKind::Local,
                binary: None,
                cost_micros_per_second: 0,
                labels: BTreeMap::new(),
                max_workers: None,
                expected_startup_ms: 0,
                docker: None,
            },
        );
        for (name, p) in &self.providers {
            let field = |f: &str| format!("providers.{name}.{f}");
            PoolId::new(name.as_str())
                .map_err(|e| invalid(format!("providers.{name}"), name, e.to_string()))?;
            let kind = match p.kind.as_deref().unwrap_or("local") {
                "local" => ProviderKind::Local,
                "docker" => ProviderKind::Docker,
                other => {
                    return Err(invalid(
                        field("kind"),
                        other,
                        "unknown provider kind; available: local, docker",
                    ));
                }
            };
            let docker = match kind {
                ProviderKind::Docker => Some(docker_settings(name, p)?),
                _ => {
                    let given = [
                        ("host", p.host.is_some()),
                        ("image", p.image.is_some()),
                        ("network", p.network.is_some()),
                        ("node_address", p.node_address.is_some()),
                        ("cpu", p.cpu.is_some()),
                        ("memory", p.memory.is_some()),
                        ("create_concurrency", p.create_concurrency.is_some()),
                        ("health_interval", p.health_interval.is_some()),
                    ];
                    if let Some((f, _)) = given.iter().find(|(_, set)| *set) {
                        return Err(invalid(field(f), "", "only for kind = \"docker\""));
                    }
                    None
                }
            };
            let expected_startup_ms = duration_field(
                &field("expected_startup"),
                &p.expected_startup,
                if kind == ProviderKind::Docker {
                    1_000
                } else {
                    0
                },
            )?;
            if kind == ProviderKind::Docker && p.binary.is_some() {
                return Err(invalid(
                    field("binary"),
                    p.binary.as_deref().unwrap_or_default(),
                    "a docker provider runs the agent inside its image; set image instead",
                ));
            }
            let binary = match &p.binary {
                Some(b) if !Path::new(b).is_absolute() => {
                    return Err(invalid(field("binary"), b, "must be an absolute path"));
                }
                Some(b) => Some(PathBuf::from(b)),
                None => None,
            };
            let cost = p.cost_per_second.unwrap_or(0.0);
            if !(0.0..=1_000_000.0).contains(&cost) {
                return Err(invalid(
                    field("cost_per_second"),
                    cost,
                    "must be between 0 and 1000000",
                ));
            }
            hodei_runtime::job::validate_labels("label", &p.labels)
                .map_err(|e| invalid(field("labels"), format!("{:?}", p.labels), e.to_string()))?;
            out.insert(
                name.clone(),
                ProviderConfig {
                    kind,
                    binary,
                    cost_micros_per_second: (cost * 1_000_000.0).round() as u64,
                    labels: p.labels.clone(),
                    max_workers: p.max_workers,
                    expected_startup_ms,
                    docker,
                },
            );
        }
        Ok(out)
    }

    /// `[scheduler.profiles]` and `[quotas]` into the pipeline's config.
    fn scheduler_pipeline(
        &self,
    ) -> Result<hodei_runtime::scheduling::SchedulerConfig, ConfigError> {
        use hodei_runtime::scheduling::{
            SchedulerConfig as Pipeline, SchedulingError, TenantQuota,
        };
        let mut cfg = Pipeline::default();
        for (name, p) in &self.scheduler.profiles {
            cfg.profiles.insert(name.clone(), p.clone());
        }
        for (tenant, q) in &self.quotas.tenants {
            let field = |f: &str| format!("quotas.tenants.{tenant}.{f}");
            let id = hodei_runtime::TenantId::new(tenant.as_str())
                .map_err(|e| invalid("quotas.tenants", tenant, e.to_string()))?;
            let max_cpu_millis = match &q.max_cpu {
                Some(v) => Some(
                    hodei_runtime::resources::parse_cpu_millis(v)
                        .map_err(|e| invalid(field("max_cpu"), v, e.to_string()))?,
                ),
                None => None,
            };
            let max_memory_bytes = match &q.max_memory {
                Some(v) => Some(
                    parse_bytes("memory", v)
                        .map_err(|e| invalid(field("max_memory"), v, e.to_string()))?,
                ),
                None => None,
            };
            cfg.quotas.insert(
                id,
                TenantQuota {
                    max_running_jobs: q.max_running_jobs,
                    max_cpu_millis,
                    max_memory_bytes,
                },
            );
        }
        cfg.validate().map_err(|e| match e {
            SchedulingError::Invalid {
                field,
                value,
                reason,
            } => invalid(field, value, reason),
            other => invalid("scheduler", "", other.to_string()),
        })?;
        Ok(cfg)
    }
}

/// `[providers.NAME]` of kind docker.
fn docker_settings(name: &str, p: &RawProvider) -> Result<DockerSettings, ConfigError> {
    let field = |f: &str| format!("providers.{name}.{f}");
    let host = p.host.clone().unwrap_or_else(default_docker_host);
    if !["unix://", "tcp://", "http://"]
        .iter()
        .any(|s| host.starts_with(s))
    {
        return Err(invalid(
            field("host"),
            &host,
            "expected unix:///path/to/docker.sock or tcp://host:port",
        ));
    }
    let network = p.network.clone().unwrap_or_else(|| "host".to_string());
    if network.is_empty() || network.contains(char::is_whitespace) {
        return Err(invalid(field("network"), &network, "not a network name"));
    }
    if let Some(a) = &p.node_address
        && a.parse::<SocketAddr>().is_err()
    {
        return Err(invalid(
            field("node_address"),
            a,
            "expected ip:port (the address containers dial)",
        ));
    }
    if let Some(i) = &p.image
        && (i.is_empty() || i.contains(char::is_whitespace))
    {
        return Err(invalid(field("image"), i, "not an image reference"));
    }
    let create_concurrency = p.create_concurrency.unwrap_or(4);
    if !(1..=64).contains(&create_concurrency) {
        return Err(invalid(
            field("create_concurrency"),
            create_concurrency,
            "must be 1..=64",
        ));
    }
    Ok(DockerSettings {
        host,
        image: p.image.clone(),
        network,
        node_address: p.node_address.clone(),
        create_concurrency,
        health_interval_ms: duration_field(&field("health_interval"), &p.health_interval, 5_000)?,
    })
}

fn duration_field(field: &str, v: &Option<String>, default_ms: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default_ms),
        Some(s) => {
            let d: Duration = humantime::parse_duration(s.trim()).map_err(|e| {
                invalid(
                    field,
                    s,
                    format!("expected a duration like 500ms, 10s, 5m, 24h ({e})"),
                )
            })?;
            let ms = d.as_millis();
            if ms == 0 {
                return Err(invalid(field, s, "must be greater than zero"));
            }
            if ms > 365 * 24 * 3600 * 1000 {
                return Err(invalid(field, s, "longer than a year"));
            }
            Ok(ms as u64)
        }
    }
}

fn bytes_field(field: &str, v: &Option<String>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_bytes("size", s).map_err(|e| invalid(field, s, e.to_string())),
    }
}

impl Config {
    /// Loads, overrides from the process environment, and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::from_file(path)?;
        raw.apply_env(|k| std::env::var(k).ok());
        raw.validate(HostResources::detect())
    }

    /// The configuration of a development node: one local pool of `workers` agents with
    /// `slots` slots each, on `listen`, with data in `data_dir`.
    pub fn dev(
        data_dir: &Path,
        listen: SocketAddr,
        cookie: &str,
        workers: u32,
        slots: u32,
    ) -> Result<Config, ConfigError> {
        let raw = RawConfig {
            node: RawNode {
                name: Some("dev".into()),
                listen: Some(listen.to_string()),
                cookie: Some(cookie.into()),
                data_dir: Some(data_dir.display().to_string()),
                ..Default::default()
            },
            pools: vec![RawPool {
                name: Some("local".into()),
                provider: Some("local".into()),
                min: Some(workers),
                max: Some(workers),
                template: RawTemplate {
                    slots: Some(slots),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        raw.validate(HostResources::detect())
    }
}

#[cfg(test)]
mod tests;
