//! The Docker provider: each worker is a container of a Docker engine running `hodei agent`.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing; the containers live in the engine and are found again by their labels,
//! so a restarted provider adopts the containers of live workers and removes the rest.
//! State: the engine connection (none while unreachable), the worker image, and the containers
//! of the workers it runs (rebuilt from the engine's list on every (re)connection).
//!
//! * Health: a `Tick` every `health_interval` pings the engine (connecting, building the image
//!   and reclaiming orphans when it comes back). The result goes to every pool that may use the
//!   provider, whose provider selection then avoids it while unhealthy; a `Create` meanwhile
//!   fails at once with the engine's error.
//! * Creation runs in tasks bounded by `create_concurrency`; the actor never waits on the engine
//!   for a create.
//! * A watcher follows the engine's `die` events for this cluster's containers: a container that
//!   ends (killed, OOM, agent exit) is reported as a lost worker with its exit code, OOM flag and
//!   the last line of its log. Each tick also reconciles against the engine's list, so an event
//!   missed while the stream reconnected is still noticed.
//! * Orphans: containers labelled with this cluster and provider whose worker the control plane
//!   does not know as live are removed when the provider (re)connects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{CreateContainerOptionsBuilder, EventsOptionsBuilder};
use futures::StreamExt;
use hodei_config::DockerSettings;
use hodei_runtime::{PoolId, WorkerId, WorkerState, WorkerTemplate};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::docker_engine::{
    self as engine, DockerError, LABEL_CLUSTER, LABEL_PROVIDER, LABEL_WORKER, PlanInput,
};
use super::docker_image::{ImageSpec, build_worker_image, image_exists};
use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::pool::PoolMsg;
use crate::provider::ProviderMsg;
use crate::provider::local::random_hex;

#[derive(Debug, Clone)]
struct Container {
    /// Container id; `None` while being created.
    id: Option<String>,
    pid: u32,
    /// Its pool (`None` when adopted from the engine's list).
    pool: Option<PoolId>,
}

/// The actor.
pub struct DockerProvider;

/// State.
pub struct DockerProviderState {
    ctx: NodeContext,
    name: String,
    settings: DockerSettings,
    engine: Option<Docker>,
    image: Option<String>,
    last_error: Option<String>,
    containers: BTreeMap<WorkerId, Container>,
    /// Destroyed while their create was in flight.
    destroying: BTreeSet<WorkerId>,
    permits: Arc<Semaphore>,
    watcher: Option<JoinHandle<()>>,
    /// Orphans were looked for since the last (re)connection.
    reclaimed: bool,
}

#[ractor::async_trait]
impl Actor for DockerProvider {
    type Msg = ProviderMsg;
    type State = DockerProviderState;
    /// The node and this provider's name (`[providers.NAME]`, `kind = "docker"`).
    type Arguments = (NodeContext, String);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, name): (NodeContext, String),
    ) -> Result<Self::State, ActorProcessingErr> {
        let settings = ctx
            .config
            .providers
            .get(&name)
            .and_then(|p| p.docker.clone())
            .ok_or_else(|| format!("provider {name} is not a docker provider"))?;
        ctx.dir.set_named_provider(name.clone(), myself.clone());
        let _ = myself.cast(ProviderMsg::Tick);
        Ok(DockerProviderState {
            permits: Arc::new(Semaphore::new(settings.create_concurrency as usize)),
            ctx,
            name,
            settings,
            engine: None,
            image: None,
            last_error: None,
            containers: BTreeMap::new(),
            destroying: BTreeSet::new(),
            watcher: None,
            reclaimed: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(w) = st.watcher.take() {
            w.abort();
        }
        st.ctx.dir.clear_named_provider(&st.name, &myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::Tick => {
                st.tick(&myself).await;
                myself.send_after(
                    Duration::from_millis(st.settings.health_interval_ms),
                    || ProviderMsg::Tick,
                );
            }
            ProviderMsg::Create {
                worker,
                pool,
                template,
            } => st.create(&myself, worker, pool, template),
            ProviderMsg::Started {
                worker,
                handle,
                pid,
            } => {
                if st.destroying.remove(&worker) {
                    st.containers.remove(&worker);
                    st.remove_in_background(handle);
                } else if let Some(c) = st.containers.get_mut(&worker) {
                    info!(%worker, container = %short(&handle), pid, provider = %st.name, "container started");
                    c.id = Some(handle);
                    c.pid = pid;
                }
            }
            ProviderMsg::StartFailed { worker, error } => {
                let pool = st.containers.remove(&worker).and_then(|c| c.pool);
                let destroyed = st.destroying.remove(&worker);
                if let Some(engine) = &st.engine {
                    // The create may have succeeded before the start failed.
                    let (engine, name) = (
                        engine.clone(),
                        engine::container_name(&st.ctx.cluster_id, worker.as_str()),
                    );
                    tokio::spawn(async move { engine::remove(&engine, &name).await });
                }
                if !destroyed && let Some(pool) = pool {
                    st.provision_failed(&pool, worker, error);
                }
            }
            ProviderMsg::Destroy { worker, reason } => {
                if let Some(c) = st.containers.remove(&worker) {
                    info!(%worker, provider = %st.name, %reason, "removing container");
                    match c.id {
                        Some(id) => st.remove_in_background(id),
                        None => {
                            st.destroying.insert(worker.clone());
                            // Keep the entry until the create task reports.
                            st.containers.insert(worker, c);
                        }
                    }
                }
            }
            ProviderMsg::AgentExited { worker, status } => {
                if let Some(c) = st.containers.remove(&worker) {
                    st.destroying.remove(&worker);
                    st.container_ended(worker, c, status);
                }
            }
            ProviderMsg::GetWorkers(reply) => {
                let _ = reply.send(
                    st.containers
                        .iter()
                        .map(|(w, c)| (w.clone(), c.pid))
                        .collect(),
                );
            }
            ProviderMsg::StopAll(reply) => {
                let ids: Vec<String> = std::mem::take(&mut st.containers)
                    .into_values()
                    .filter_map(|c| c.id)
                    .collect();
                if let Some(engine) = &st.engine {
                    let removals = ids.iter().map(|id| engine::remove(engine, id));
                    for r in futures::future::join_all(removals).await {
                        if let Err(e) = r {
                            warn!(provider = %st.name, error = %e, "could not remove a container at shutdown");
                        }
                    }
                }
                let _ = reply.send(());
            }
            ProviderMsg::InjectFault => {
                return Err(format!("injected fault in docker provider {}", st.name).into());
            }
        }
        Ok(())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl DockerProviderState {
    /// Health check: connect (and prepare) when not connected, else ping and reconcile.
    async fn tick(&mut self, myself: &ActorRef<ProviderMsg>) {
        let result = match self.engine.clone() {
            None => self.connect(myself).await,
            Some(engine) => match engine.ping().await {
                Ok(_) if !self.reclaimed => self.reclaim(&engine).await,
                Ok(_) => self.reconcile(&engine).await,
                Err(e) => Err(DockerError::Unreachable {
                    host: self.settings.host.clone(),
                    reason: engine::engine_message(&e),
                }),
            },
        };
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(provider = %self.name, host = %self.settings.host, "docker engine reachable again");
                }
                if self.watcher.as_ref().is_none_or(|w| w.is_finished())
                    && let Some(engine) = &self.engine
                {
                    self.watcher = Some(self.watch(engine.clone(), myself.clone()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    warn!(provider = %self.name, error = %msg, "docker provider unhealthy");
                }
                self.last_error = Some(msg);
                if matches!(e, DockerError::Unreachable { .. }) {
                    self.engine = None;
                    if let Some(w) = self.watcher.take() {
                        w.abort();
                    }
                }
            }
        }
        self.report_health();
    }

    /// Connects, makes sure the image exists, adopts live workers' containers and removes
    /// orphans.
    async fn connect(&mut self, myself: &ActorRef<ProviderMsg>) -> Result<(), DockerError> {
        let engine = engine::connect(&self.settings.host).await?;
        let image = match &self.settings.image {
            Some(i) => {
                if !image_exists(&engine, i).await? {
                    return Err(DockerError::Image(format!(
                        "image {i} not found on the engine; build it with `hodei image build --tag {i}`"
                    )));
                }
                i.clone()
            }
            None => {
                let binary = std::env::current_exe()
                    .map_err(|e| DockerError::Image(format!("this executable: {e}")))?;
                let spec = ImageSpec::for_binary(binary)?;
                info!(provider = %self.name, "preparing the worker image");
                let tag = build_worker_image(&engine, &spec).await?;
                info!(provider = %self.name, image = %tag, "worker image ready");
                tag
            }
        };
        self.image = Some(image);
        self.engine = Some(engine.clone());
        self.reclaim(&engine).await?;
        let _ = myself;
        Ok(())
    }

    /// Live workers according to the control plane.
    async fn live_workers(&self) -> Option<BTreeSet<WorkerId>> {
        let control = self.ctx.dir.control()?;
        let workers = ractor::call_t!(
            control,
            |reply| ControlPlaneMsg::GetWorkers { pool: None, reply },
            10_000
        )
        .ok()?;
        Some(
            workers
                .into_iter()
                .filter(|w| w.state != WorkerState::Terminated)
                .map(|w| w.id)
                .collect(),
        )
    }

    /// Adopts the containers of live workers; removes every other container of this cluster and
    /// provider (left by an earlier run of the node, or by a crashed provider).
    async fn reclaim(&mut self, engine: &Docker) -> Result<(), DockerError> {
        let Some(live) = self.live_workers().await else {
            self.reclaimed = false; // the control plane is restarting: next tick
            return Ok(());
        };
        self.reclaimed = true;
        let found =
            engine::list_cluster_containers(engine, &self.ctx.cluster_id, Some(&self.name)).await?;
        let mut removed = 0;
        for c in found {
            let Some(id) = c.id.clone() else { continue };
            let worker = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_WORKER))
                .and_then(|w| w.parse::<WorkerId>().ok());
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            match worker {
                Some(w) if running && live.contains(&w) => {
                    self.containers.entry(w).or_insert(Container {
                        id: Some(id),
                        pid: 0,
                        pool: None,
                    });
                }
                Some(w) if self.containers.contains_key(&w) => {}
                _ => {
                    engine::remove(engine, &id).await?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            info!(provider = %self.name, removed, "removed orphan containers of this cluster");
        }
        Ok(())
    }

    /// Every known container still running? One that is not is reported as ended.
    async fn reconcile(&mut self, engine: &Docker) -> Result<(), DockerError> {
        let found =
            engine::list_cluster_containers(engine, &self.ctx.cluster_id, Some(&self.name)).await?;
        let running: BTreeSet<String> = found
            .iter()
            .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
            .filter_map(|c| c.id.clone())
            .collect();
        let ended: Vec<WorkerId> = self
            .containers
            .iter()
            .filter(|(_, c)| c.id.as_ref().is_some_and(|id| !running.contains(id)))
            .map(|(w, _)| w.clone())
            .collect();
        for w in ended {
            if let Some(c) = self.containers.remove(&w) {
                self.container_ended(w, c, "container is no longer running".into());
            }
        }
        Ok(())
    }

    fn report_health(&self) {
        let healthy = self.engine.is_some() && self.last_error.is_none();
        for pool in self
            .ctx
            .config
            .pools
            .iter()
            .filter(|p| p.providers.contains(&self.name))
        {
            if let Some(p) = self.ctx.dir.pool(&pool.id) {
                let _ = p.cast(PoolMsg::ProviderHealth {
                    provider: self.name.clone(),
                    healthy,
                    error: self.last_error.clone(),
                });
            }
        }
    }

    fn provision_failed(&self, pool: &PoolId, worker: WorkerId, error: String) {
        warn!(%worker, provider = %self.name, %error, "could not start a worker container");
        if let Some(p) = self.ctx.dir.pool(pool) {
            let _ = p.cast(PoolMsg::ProvisionFailed {
                id: worker,
                error: format!("provider {}: {error}", self.name),
            });
        }
    }

    fn create(
        &mut self,
        myself: &ActorRef<ProviderMsg>,
        worker: WorkerId,
        pool: PoolId,
        template: WorkerTemplate,
    ) {
        let (Some(engine), Some(image)) = (self.engine.clone(), self.image.clone()) else {
            let why = self
                .last_error
                .clone()
                .unwrap_or_else(|| "docker engine not connected yet".into());
            self.provision_failed(&pool, worker, why);
            return;
        };
        let cfg = &self.ctx.config;
        let node_address = self
            .settings
            .node_address
            .clone()
            .unwrap_or_else(|| cfg.node.advertise.to_string());
        let token = format!("{}-{}", self.ctx.cluster_id, random_hex(8));
        let plan = engine::plan_container(&PlanInput {
            cluster_id: &self.ctx.cluster_id,
            node_name: cfg.node.name.as_str(),
            provider: &self.name,
            worker: worker.as_str(),
            pool: pool.as_str(),
            template: &template,
            image: template.image.as_deref().unwrap_or(&image),
            network: &self.settings.network,
            node_address: &node_address,
            cookie: &cfg.node.cookie,
            agent_token: &token,
        });
        self.containers.insert(
            worker.clone(),
            Container {
                id: None,
                pid: 0,
                pool: Some(pool),
            },
        );
        let permits = self.permits.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let msg = match start_container(&engine, &plan).await {
                Ok((handle, pid)) => ProviderMsg::Started {
                    worker,
                    handle,
                    pid,
                },
                Err(e) => ProviderMsg::StartFailed {
                    worker,
                    error: e.to_string(),
                },
            };
            let _ = me.cast(msg);
        });
    }

    fn remove_in_background(&self, id: String) {
        if let Some(engine) = self.engine.clone() {
            let name = self.name.clone();
            tokio::spawn(async move {
                if let Err(e) = engine::remove(&engine, &id).await {
                    warn!(provider = %name, container = %short(&id), error = %e, "could not remove container");
                }
            });
        }
    }

    /// A container ended by itself: keep its log tail for diagnosis, remove it, report the
    /// worker lost with the reason.
    fn container_ended(&self, worker: WorkerId, c: Container, status: String) {
        let engine = self.engine.clone();
        let control = self.ctx.dir.control();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut reason = format!("container {status}");
            if let (Some(engine), Some(id)) = (engine, c.id) {
                let log = engine::logs_tail(&engine, &id).await;
                if let Some(line) = engine::last_line(&log) {
                    reason.push_str(&format!("; last log line: {line}"));
                }
                if status.ends_with("code 0") {
                    info!(%worker, provider = %name, container = %short(&id), "worker container exited");
                } else {
                    warn!(%worker, provider = %name, container = %short(&id), %status, log = %log, "worker container ended");
                }
                let _ = engine::remove(&engine, &id).await;
            }
            if let Some(c) = control {
                let _ = c.cast(ControlPlaneMsg::WorkerGone { id: worker, reason });
            }
        });
    }

    /// Follows the engine's `die` events for this cluster's and provider's containers.
    fn watch(&self, engine: Docker, me: ActorRef<ProviderMsg>) -> JoinHandle<()> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["die".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_CLUSTER}={}", self.ctx.cluster_id),
                    format!("{LABEL_PROVIDER}={}", self.name),
                ],
            ),
        ]);
        tokio::spawn(async move {
            let opts = EventsOptionsBuilder::new().filters(&filters).build();
            let mut events = engine.events(Some(opts));
            while let Some(Ok(ev)) = events.next().await {
                let Some(actor) = ev.actor else { continue };
                let attrs = actor.attributes.unwrap_or_default();
                let Some(worker) = attrs
                    .get(LABEL_WORKER)
                    .and_then(|w| w.parse::<WorkerId>().ok())
                else {
                    continue;
                };
                let code = attrs.get("exitCode").cloned().unwrap_or_default();
                let oom = match &actor.id {
                    Some(id) => engine
                        .inspect_container(id, None)
                        .await
                        .ok()
                        .and_then(|i| i.state)
                        .and_then(|s| s.oom_killed)
                        .unwrap_or(false),
                    None => false,
                };
                let status = if oom && code == "137" {
                    "exited with code 137: out of memory (exceeded its memory limit)".to_string()
                } else {
                    format!("exited with code {code}")
                };
                let _ = me.cast(ProviderMsg::AgentExited { worker, status });
            }
        })
    }
}

/// Creates and starts a container; returns its id and host pid.
async fn start_container(
    engine: &Docker,
    plan: &engine::ContainerPlan,
) -> Result<(String, u32), DockerError> {
    let opts = CreateContainerOptionsBuilder::new()
        .name(&plan.name)
        .build();
    let created = engine
        .create_container(Some(opts), engine::create_body(plan))
        .await
        .map_err(|e| DockerError::engine(format!("create container {}", plan.name), e))?;
    engine
        .start_container(&created.id, None)
        .await
        .map_err(|e| DockerError::engine(format!("start container {}", plan.name), e))?;
    let pid = engine
        .inspect_container(&created.id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.pid)
        .unwrap_or(0);
    Ok((created.id, pid.max(0) as u32))
}
