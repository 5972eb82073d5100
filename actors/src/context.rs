//! What every actor of a node shares: configuration, the directory of live actor refs, the clock,
//! metrics, the log store and the durable store.
//!
//! The [`Directory`] replaces ractor's process-global name registry for a node's own actors, so
//! several nodes' actor trees can live in one test process. An actor registers itself at the
//! start of `pre_start` and unregisters in `post_stop` (only if the entry is still its own, so a
//! restarted successor's registration survives).

use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use hodei_config::Config;
use hodei_runtime::store::Store;
use hodei_runtime::{JobId, PoolId, WorkerId};
use ractor::ActorRef;
use tokio::time::Instant;

use crate::autoscaler::AutoscalerMsg;
use crate::control_plane::ControlPlaneMsg;
use crate::job::JobMsg;
use crate::logs::LogStore;
use crate::metrics::Metrics;
use crate::pool::PoolMsg;
use crate::provider::ProviderMsg;
use crate::scheduler::SchedulerMsg;
use crate::supervisor::SupervisorMsg;
use crate::wire::GatewayMsg;
use crate::worker::WorkerMsg;

/// A timer armed with `send_after` (abort it to cancel).
pub type Timer<M> = tokio::task::JoinHandle<Result<(), ractor::MessagingErr<M>>>;

/// The node's clock: wall-clock milliseconds anchored at start, advancing with tokio's clock
/// (monotonic in production; virtual under `start_paused` tests).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    start: Instant,
}

impl Clock {
    /// Anchors at the current wall-clock time.
    pub fn system() -> Self {
        Self {
            base_ms: hodei_runtime::now_ms(),
            start: Instant::now(),
        }
    }

    /// Anchors at a given time (tests).
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            start: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

macro_rules! slot {
    ($get:ident, $set:ident, $clear:ident, $field:ident, $ty:ty) => {
        /// The current actor, if running.
        pub fn $get(&self) -> Option<ActorRef<$ty>> {
            self.inner.$field.read().expect("directory lock").clone()
        }
        /// Registers the current actor.
        pub fn $set(&self, r: ActorRef<$ty>) {
            *self.inner.$field.write().expect("directory lock") = Some(r);
        }
        /// Unregisters, if `r` is still the registered one.
        pub fn $clear(&self, r: &ActorRef<$ty>) {
            let mut g = self.inner.$field.write().expect("directory lock");
            if g.as_ref().is_some_and(|x| x.get_id() == r.get_id()) {
                *g = None;
            }
        }
    };
}

macro_rules! map {
    ($get:ident, $set:ident, $clear:ident, $field:ident, $k:ty, $ty:ty) => {
        /// The actor for this key, if running.
        pub fn $get(&self, k: &$k) -> Option<ActorRef<$ty>> {
            self.inner.$field.get(k).map(|r| r.clone())
        }
        /// Registers an actor.
        pub fn $set(&self, k: $k, r: ActorRef<$ty>) {
            self.inner.$field.insert(k, r);
        }
        /// Unregisters, if `r` is still the registered one.
        pub fn $clear(&self, k: &$k, r: &ActorRef<$ty>) {
            self.inner
                .$field
                .remove_if(k, |_, x| x.get_id() == r.get_id());
        }
    };
}

#[derive(Default)]
struct Inner {
    control: RwLock<Option<ActorRef<ControlPlaneMsg>>>,
    scheduler: RwLock<Option<ActorRef<SchedulerMsg>>>,
    autoscaler: RwLock<Option<ActorRef<AutoscalerMsg>>>,
    job_supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
    worker_supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
    provider: RwLock<Option<ActorRef<ProviderMsg>>>,
    gateway: RwLock<Option<ActorRef<GatewayMsg>>>,
    jobs: DashMap<JobId, ActorRef<JobMsg>>,
    workers: DashMap<WorkerId, ActorRef<WorkerMsg>>,
    pools: DashMap<PoolId, ActorRef<PoolMsg>>,
    providers: DashMap<String, ActorRef<ProviderMsg>>,
    peers: DashMap<String, WorkerId>,
}

/// Live actor refs of one node.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("jobs", &self.inner.jobs.len())
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl Directory {
    slot!(
        control,
        set_control,
        clear_control,
        control,
        ControlPlaneMsg
    );
    slot!(
        scheduler,
        set_scheduler,
        clear_scheduler,
        scheduler,
        SchedulerMsg
    );
    slot!(
        autoscaler,
        set_autoscaler,
        clear_autoscaler,
        autoscaler,
        AutoscalerMsg
    );
    slot!(
        job_supervisor,
        set_job_supervisor,
        clear_job_supervisor,
        job_supervisor,
        SupervisorMsg
    );
    slot!(
        worker_supervisor,
        set_worker_supervisor,
        clear_worker_supervisor,
        worker_supervisor,
        SupervisorMsg
    );
    slot!(
        provider,
        set_provider,
        clear_provider,
        provider,
        ProviderMsg
    );
    slot!(gateway, set_gateway, clear_gateway, gateway, GatewayMsg);
    map!(job, set_job, clear_job, jobs, JobId, JobMsg);
    map!(
        worker,
        set_worker,
        clear_worker,
        workers,
        WorkerId,
        WorkerMsg
    );
    map!(pool, set_pool, clear_pool, pools, PoolId, PoolMsg);
    map!(
        named_provider,
        set_named_provider,
        clear_named_provider,
        providers,
        String,
        ProviderMsg
    );

    /// Every named provider (destroy orders go to all; each ignores workers it does not run).
    pub fn all_providers(&self) -> Vec<ActorRef<ProviderMsg>> {
        self.inner
            .providers
            .iter()
            .map(|e| e.value().clone())
            .collect()
    }

    /// Remembers which worker an agent's cluster node name belongs to.
    pub fn set_peer(&self, agent_node: String, worker: WorkerId) {
        self.inner.peers.insert(agent_node, worker);
    }

    /// The worker whose agent runs as cluster node `agent_node`.
    pub fn peer_worker(&self, agent_node: &str) -> Option<WorkerId> {
        self.inner.peers.get(agent_node).map(|w| w.clone())
    }

    /// Forgets an agent's node name.
    pub fn clear_peer(&self, agent_node: &str) {
        self.inner.peers.remove(agent_node);
    }

    /// Number of live job actors.
    pub fn job_actors(&self) -> usize {
        self.inner.jobs.len()
    }

    /// Wakes the autoscaler (coalesced by the autoscaler).
    pub fn kick_autoscaler(&self) {
        if let Some(a) = self.autoscaler() {
            let _ = a.cast(AutoscalerMsg::Kick);
        }
    }
}

/// Everything a node's actors share.
#[derive(Clone)]
pub struct NodeContext {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Live actor refs.
    pub dir: Directory,
    /// The clock.
    pub clock: Clock,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Job output.
    pub logs: Arc<LogStore>,
    /// Journal and snapshots.
    pub store: Arc<Store>,
    /// This process's cluster node name (`node-<pid>-<random>`).
    pub cluster_name: String,
    /// The cluster id of this data directory.
    pub cluster_id: String,
    /// How the journal is written.
    pub journal_mode: crate::journal::JournalMode,
    /// Custom scheduling plugins (added to the pipeline each time the scheduler starts).
    pub plugins: SchedulerPlugins,
    /// The state recovered when the node started (taken by the control plane's first start;
    /// a later start recovers from the store again).
    pub recovered: Arc<std::sync::Mutex<Option<hodei_runtime::store::Recovered>>>,
}

/// Builds one custom scheduling plugin (called again whenever the scheduler restarts).
pub type PluginFactory =
    Arc<dyn Fn() -> Box<dyn hodei_runtime::scheduling::SchedulingPlugin> + Send + Sync>;

/// Custom scheduling plugins to add to named profiles: how a Rust user extends the pipeline
/// with their own filters and scores.
#[derive(Clone, Default)]
pub struct SchedulerPlugins {
    entries: Vec<(String, PluginFactory)>,
}

impl SchedulerPlugins {
    /// Adds `factory`'s plugin to `profile`.
    pub fn with(mut self, profile: impl Into<String>, factory: PluginFactory) -> Self {
        self.entries.push((profile.into(), factory));
        self
    }

    /// (profile, factory) pairs in the order given.
    pub fn entries(&self) -> &[(String, PluginFactory)] {
        &self.entries
    }
}

impl std::fmt::Debug for SchedulerPlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(p, _)| p))
            .finish()
    }
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.config.node.name)
            .field("cluster_name", &self.cluster_name)
            .finish()
    }
}

impl NodeContext {
    /// Milliseconds since the Unix epoch, from the node's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}
