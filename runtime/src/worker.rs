//! Workers (agents) and pools.
//!
//! # Worker state machine
//!
//! ```text
//!  Provisioning ──register──▶ Idle ⇄ Busy ──drain──▶ Draining ──last job ends──▶ Terminated
//!       │                       │       │                                            ▲
//!       └── failed / deadline ──┴───────┴──────── lost / terminated ─────────────────┘
//! ```
//!
//! `Idle` and `Busy` are the two faces of *Registered*: a worker is Busy while at least one of its
//! slots runs an attempt. Only Idle and Busy workers with a free slot accept work.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AttemptNo, JobId, PoolId, WorkerId};
use crate::resources::Resources;
use crate::scheduling::Taint;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Asked of a provider; the agent has not registered yet.
    Provisioning,
    /// Registered, running nothing.
    Idle,
    /// Registered, running at least one attempt.
    Busy,
    /// Finishing its running attempts; accepts no new work.
    Draining,
    /// Gone (with a reason).
    Terminated,
}

impl WorkerState {
    /// All states in display order.
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Provisioning,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Draining,
        WorkerState::Terminated,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Provisioning => "provisioning",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
            WorkerState::Terminated => "terminated",
        }
    }

    /// Registered and not draining: may receive new attempts if a slot is free.
    pub fn accepts_work(self) -> bool {
        matches!(self, WorkerState::Idle | WorkerState::Busy)
    }

    /// Neither terminated nor still provisioning.
    pub fn is_registered(self) -> bool {
        matches!(
            self,
            WorkerState::Idle | WorkerState::Busy | WorkerState::Draining
        )
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent declares when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// Its id (assigned by the provider that started it).
    pub id: WorkerId,
    /// Its pool.
    pub pool: PoolId,
    /// Capacity offered to jobs.
    pub capacity: Resources,
    /// How many attempts it runs at once.
    pub slots: u32,
    /// Labels for selection.
    pub labels: BTreeMap<String, String>,
    /// Taints (jobs that do not tolerate them stay away).
    pub taints: Vec<Taint>,
    /// The agent's cluster node name (`agent-<pid>-<random>`).
    pub agent_node: String,
    /// Host the agent runs on.
    pub hostname: String,
    /// The agent's process id on that host.
    pub pid: u32,
    /// The agent's version string.
    pub version: String,
}

/// The control plane's record of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The id.
    pub id: WorkerId,
    /// Its pool.
    pub pool: PoolId,
    /// Current state.
    pub state: WorkerState,
    /// Capacity (zero until registered).
    pub capacity: Resources,
    /// Sum of the requests of its live attempts.
    pub allocated: Resources,
    /// Concurrent attempts it runs.
    pub slots: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints, each stamped with when it was put on the worker.
    pub taints: Vec<Taint>,
    /// Live attempts.
    pub running: BTreeSet<(JobId, AttemptNo)>,
    /// Agent details once registered.
    pub agent_node: Option<String>,
    /// Host.
    pub hostname: Option<String>,
    /// Agent pid.
    pub pid: Option<u32>,
    /// When provisioning was requested.
    pub provisioned_at_ms: u64,
    /// When the agent registered.
    pub registered_at_ms: Option<u64>,
    /// When it last became idle (for scale-down).
    pub idle_since_ms: Option<u64>,
    /// When it terminated.
    pub terminated_at_ms: Option<u64>,
    /// Why it terminated.
    pub reason: Option<String>,
    /// Attempts it has run to the end.
    pub jobs_completed: u64,
}

impl WorkerRecord {
    /// Free capacity: capacity − allocated.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }

    /// Free slots.
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.running.len() as u32)
    }

    /// Can take an attempt requesting `req` right now.
    pub fn can_take(&self, req: &Resources) -> bool {
        self.state.accepts_work() && self.free_slots() > 0 && req.fits_in(&self.free())
    }
}

/// Which provider starts a pool's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Local `hodei agent` child processes (the embedded default).
    Local,
    /// Agents started outside Hodei (by hand, systemd, a CI runner…) that register themselves
    /// with `hodei agent --node ADDR --pool NAME`; never provisioned or scaled.
    External,
    /// Agents in containers of a Docker engine (`[providers.NAME] kind = "docker"`).
    Docker,
}

impl ProviderKind {
    /// Name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::External => "external",
            ProviderKind::Docker => "docker",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What each worker of a pool looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTemplate {
    /// Capacity each worker offers.
    pub capacity: Resources,
    /// Concurrent attempts per worker.
    pub slots: u32,
    /// Labels each worker carries (plus `hodei.io/pool`).
    pub labels: BTreeMap<String, String>,
    /// Taints each worker carries.
    pub taints: Vec<Taint>,
    /// Environment every job on these workers starts with (a job's own env overrides it).
    pub env: BTreeMap<String, String>,
    /// Command the agent is started under (e.g. `["nice", "-n", "10"]`); empty = directly.
    pub command: Vec<String>,
    /// Container image of the workers (container providers); `None` = the provider's image.
    #[serde(default)]
    pub image: Option<String>,
}

/// A pool of workers, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Its name.
    pub id: PoolId,
    /// Who starts its workers.
    pub provider: ProviderKind,
    /// Workers kept alive at all times (warm).
    pub min_workers: u32,
    /// Upper bound on workers.
    pub max_workers: u32,
    /// The worker template.
    pub template: WorkerTemplate,
    /// An idle worker above `min_workers` is retired after this long.
    pub idle_timeout_ms: u64,
    /// An agent that has not registered this long after being started is destroyed.
    pub register_timeout_ms: u64,
    /// The autoscaler's policy (its bounds and timeouts are the four fields above).
    pub scaling: crate::scaling::ScalingPolicy,
    /// Named providers that may start this pool's workers (`[providers.NAME]`), chosen per
    /// worker by `scaling.provider_strategy`; empty for external pools.
    pub providers: Vec<String>,
}
