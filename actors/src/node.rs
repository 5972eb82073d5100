//! Starting a node's actor tree.
//!
//! ```text
//! root (one-for-one, budget 0: a failure here stops the node)
//! ├── control         ControlPlane — state, journal, the single writer
//! ├── jobs            Supervisor — one Job actor per unfinished job (transient)
//! ├── workers         Supervisor — one Worker actor per registered worker (transient)
//! └── services        Supervisor (budget 5 restarts / 60 s)
//!     ├── provider    LocalProvider — `hodei agent` child processes
//!     ├── pool-<name> Pool — one per configured pool
//!     ├── scheduler   Scheduler — placement cycles
//!     ├── autoscaler  Autoscaler — scaling decisions
//!     ├── gateway     Gateway — client requests (remotable, pg "hodei.gateway")
//!     └── agent-gateway AgentGateway — agent registration/heartbeats/reports (remotable)
//! ```
//!
//! Data flow: a client's `Submit` reaches the gateway, the control plane journals it and
//! acknowledges once durable, and kicks the scheduler; the scheduler's plan comes back to the
//! control plane, which journals each assignment and has the worker actor send it to the agent;
//! the agent reports start, output (to the log store) and end through the agent gateway; the
//! control plane journals the end, retries or finishes the job, and answers waiting clients once
//! that is durable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hodei_config::Config;
use hodei_runtime::store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::agent_gateway::AgentGateway;
use crate::autoscaler::Autoscaler;
use crate::context::{Clock, Directory, NodeContext, SchedulerPlugins};
use crate::control_plane::{ControlPlane, ControlPlaneMsg};
use crate::gateway::Gateway;
use crate::journal::JournalMode;
use crate::logs::LogStore;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::provider::ProviderMsg;
use crate::provider::docker::DockerProvider;
use crate::provider::local::{LocalAgents, LocalProvider};
use crate::scheduler::Scheduler;
use crate::supervisor::{Restart, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg, child};
use crate::wire::{self, GatewayMsg};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be prepared.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The store refused to open or recover.
    #[error(transparent)]
    Store(#[from] hodei_runtime::StoreError),
    /// An actor failed to start.
    #[error("starting the node: {0}")]
    Start(String),
}

/// A running node's actor tree.
pub struct NodeHandle {
    /// Shared context.
    pub ctx: NodeContext,
    /// The root supervisor.
    pub root: ActorRef<SupervisorMsg>,
    root_done: Option<JoinHandle<()>>,
    /// The local agent processes.
    pub agents: Arc<LocalAgents>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// Opens the store in `<data_dir>/store` and the log store in `<data_dir>/logs`.
pub fn open_data_dir(config: &Config) -> Result<(Arc<Store>, Arc<LogStore>), NodeError> {
    let dd = &config.node.data_dir;
    let dd_err = |reason: String| NodeError::DataDir {
        path: dd.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dd).map_err(|e| dd_err(e.to_string()))?;
    let store = Store::open_with(
        &dd.join("store"),
        config.store.cache_bytes,
        config.store.accept_data_loss,
    )
    .map_err(|e| match e {
        hodei_runtime::StoreError::Sled { source, .. }
            if source.to_string().contains("lock") || source.to_string().contains("WouldBlock") =>
        {
            dd_err("in use by another hodei process (it is locked)".into())
        }
        other => NodeError::Store(other),
    })?;
    let logs = LogStore::open(&dd.join("logs"), config.jobs.log_cap_bytes)
        .map_err(|e| dd_err(format!("logs: {e}")))?;
    std::fs::create_dir_all(&config.agents.work_dir)
        .map_err(|e| dd_err(format!("work dir: {e}")))?;
    Ok((Arc::new(store), logs))
}

fn sup_child(
    id: &'static str,
    policy: RestartPolicy,
    children: impl Fn() -> Vec<crate::supervisor::ChildSpec> + Send + Sync + 'static,
    after: impl Fn(&ActorRef<SupervisorMsg>) + Send + Sync + 'static,
) -> crate::supervisor::ChildSpec {
    let children = Arc::new(children);
    let after = Arc::new(after);
    child(id, Restart::Permanent, move |sup| {
        let (children, after) = (children.clone(), after.clone());
        async move {
            let (r, _) = Actor::spawn_linked(
                None,
                Supervisor,
                SupervisorArgs {
                    name: id.into(),
                    children: children(),
                    policy,
                },
                sup,
            )
            .await?;
            after(&r);
            Ok(r.get_cell())
        }
    })
}

/// A supervisor of per-job or per-worker actors: once (re)started it registers itself and asks
/// the control plane to (re)create the children that should exist.
fn dynamic_sup(
    id: &'static str,
    ctx: NodeContext,
    register: fn(&Directory, ActorRef<SupervisorMsg>),
    ensure: fn() -> ControlPlaneMsg,
) -> crate::supervisor::ChildSpec {
    sup_child(
        id,
        RestartPolicy {
            max_restarts: 100,
            window_ms: 60_000,
            backoff_initial_ms: 0,
            backoff_max_ms: 1_000,
        },
        Vec::new,
        move |r| {
            register(&ctx.dir, r.clone());
            if let Some(cp) = ctx.dir.control() {
                let _ = cp.cast(ensure());
            }
        },
    )
}

/// Starts a node: recovers the state and spawns the supervision tree.
pub async fn start_node(config: Config, cluster_name: String) -> Result<NodeHandle, NodeError> {
    start_node_with(config, cluster_name, JournalMode::Threaded).await
}

/// Like [`start_node`], choosing how the journal is written ([`JournalMode::Inline`] for actor
/// tests under a paused clock).
pub async fn start_node_with(
    config: Config,
    cluster_name: String,
    journal_mode: JournalMode,
) -> Result<NodeHandle, NodeError> {
    start_node_full(
        config,
        cluster_name,
        journal_mode,
        SchedulerPlugins::default(),
    )
    .await
}

/// Like [`start_node_with`], adding custom scheduling plugins to the pipeline.
pub async fn start_node_full(
    config: Config,
    cluster_name: String,
    journal_mode: JournalMode,
    plugins: SchedulerPlugins,
) -> Result<NodeHandle, NodeError> {
    wire::set_max_message_bytes(config.node.max_message_bytes);
    let (store, logs) = open_data_dir(&config)?;
    let cluster_id = store.cluster_id()?;
    // Recover before anything starts, so that a damaged store or lost acknowledged entries stop
    // the node with the store's own message (see `Store::recover`).
    let recovered = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.recover())
            .await
            .map_err(|e| NodeError::Start(format!("recovering the state: {e}")))??
    };
    let ctx = NodeContext {
        config: Arc::new(config),
        dir: Directory::default(),
        clock: Clock::system(),
        metrics: Metrics::new(),
        logs,
        store,
        cluster_name,
        cluster_id,
        journal_mode,
        plugins,
        recovered: Arc::new(std::sync::Mutex::new(Some(recovered))),
    };
    let agents = LocalAgents::new();
    let c = ctx.clone();
    let control = child("control", Restart::Permanent, move |sup| {
        let c = c.clone();
        async move {
            let (r, _) = Actor::spawn_linked(None, ControlPlane, c, sup).await?;
            Ok(r.get_cell())
        }
    });
    let jobs = dynamic_sup(
        "jobs",
        ctx.clone(),
        |dir, r| dir.set_job_supervisor(r),
        || ControlPlaneMsg::EnsureJobActors,
    );
    let workers = dynamic_sup(
        "workers",
        ctx.clone(),
        |dir, r| dir.set_worker_supervisor(r),
        || ControlPlaneMsg::EnsureWorkerActors,
    );
    let c = ctx.clone();
    let a = agents.clone();
    let services = sup_child(
        "services",
        RestartPolicy::default(),
        move || service_children(&c, &a),
        |_| {},
    );
    let (root, root_join) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "root".into(),
            children: vec![control, jobs, workers, services],
            policy: RestartPolicy {
                max_restarts: 0,
                window_ms: 60_000,
                backoff_initial_ms: 0,
                backoff_max_ms: 0,
            },
        },
    )
    .await
    .map_err(|e| NodeError::Start(e.to_string()))?;
    info!(node = %ctx.config.node.name, cluster_id = %ctx.cluster_id, data_dir = %ctx.config.node.data_dir.display(), "node started");
    Ok(NodeHandle {
        ctx,
        root,
        root_done: Some(root_join),
        agents,
    })
}

fn service_children(
    ctx: &NodeContext,
    agents: &Arc<LocalAgents>,
) -> Vec<crate::supervisor::ChildSpec> {
    let mut out = Vec::new();
    for (name, p) in &ctx.config.providers {
        if p.kind == hodei_runtime::ProviderKind::Docker {
            let (c, name) = (ctx.clone(), name.clone());
            out.push(child(
                format!("provider-{name}"),
                Restart::Permanent,
                move |sup| {
                    let (c, n) = (c.clone(), name.clone());
                    async move {
                        let (r, _) = Actor::spawn_linked(None, DockerProvider, (c, n), sup).await?;
                        Ok(r.get_cell())
                    }
                },
            ));
            continue;
        }
        if p.kind != hodei_runtime::ProviderKind::Local {
            continue;
        }
        let (c, a, name) = (ctx.clone(), agents.clone(), name.clone());
        let child_name = if name == "local" {
            "provider".to_string()
        } else {
            format!("provider-{name}")
        };
        out.push(child(child_name, Restart::Permanent, move |sup| {
            let (c, a, n) = (c.clone(), a.clone(), name.clone());
            async move {
                let (r, _) = Actor::spawn_linked(None, LocalProvider, (c, a, n), sup).await?;
                Ok(r.get_cell())
            }
        }));
    }
    for spec in ctx.config.pools.clone() {
        let c = ctx.clone();
        out.push(child(
            format!("pool-{}", spec.id),
            Restart::Permanent,
            move |sup| {
                let (c, spec) = (c.clone(), spec.clone());
                async move {
                    let (r, _) = Actor::spawn_linked(None, Pool, (c, spec), sup).await?;
                    Ok(r.get_cell())
                }
            },
        ));
    }
    macro_rules! simple {
        ($id:literal, $actor:expr) => {{
            let c = ctx.clone();
            out.push(child($id, Restart::Permanent, move |sup| {
                let c = c.clone();
                async move {
                    let (r, _) = Actor::spawn_linked(None, $actor, c, sup).await?;
                    Ok::<_, ActorProcessingErr>(r.get_cell())
                }
            }));
        }};
    }
    simple!("scheduler", Scheduler);
    simple!("autoscaler", Autoscaler);
    simple!("gateway", Gateway);
    simple!("agent-gateway", AgentGateway);
    out
}

impl NodeHandle {
    /// The client gateway (for an embedded client).
    pub fn gateway(&self) -> Option<ActorRef<GatewayMsg>> {
        self.ctx.dir.gateway()
    }

    /// Waits until the node stops by itself (a fatal failure escalated to the root).
    pub async fn wait(&mut self) {
        if let Some(j) = self.root_done.take() {
            let _ = j.await;
        }
    }

    /// An agent's cluster session closed: its worker is lost.
    pub fn agent_disconnected(&self, agent_node: &str) {
        if let Some(w) = self.ctx.dir.peer_worker(agent_node)
            && let Some(a) = self.ctx.dir.worker(&w)
        {
            let _ = a.cast(crate::worker::WorkerMsg::AgentDisconnected);
        }
    }

    /// Graceful shutdown: live attempts are requeued (uncharged), the state is snapshotted and
    /// flushed, local agents stop their jobs and exit, then the actor tree stops.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.ctx.dir.control() {
            match ractor::call_t!(c, |reply| ControlPlaneMsg::Shutdown { reply }, 30_000) {
                Ok(()) => info!("state snapshotted"),
                Err(e) => warn!(error = %e, "could not snapshot the state at shutdown"),
            }
        }
        for p in self.ctx.dir.all_providers() {
            if let Err(e) = ractor::call_t!(p, ProviderMsg::StopAll, 60_000) {
                warn!(error = %e, "a provider did not stop its workers");
            }
        }
        self.agents.terminate_all();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.ctx.config.agents.stop_grace_ms + 2_000);
        while !self.agents.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.root.stop(Some("node shutting down".into()));
        self.wait().await;
    }
}

/// Data directory helper for tests and tools: the store path.
pub fn store_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("store")
}
