//! One actor per configured pool: it carries out the autoscaler's decisions for its pool and
//! enforces the registration deadline of the workers it provisions.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing (workers are started by the provider, and their actors live under the
//! worker supervisor once registered).
//! State: the pool's spec (from config), the workers still provisioning (rebuilt from the control
//! plane: their deadlines are recomputed from when they were provisioned), failure count and the
//! last decision.

use std::collections::BTreeMap;
use std::time::Duration;

use hodei_runtime::scaling::{
    PoolDecision, ProviderStatus, StopMode, cost_accrued, on_provision_failure,
    on_provision_success,
};
use hodei_runtime::{PoolSpec, WorkerId, WorkerState};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};

use crate::context::{NodeContext, Timer};
use crate::control_plane::ControlPlaneMsg;
use crate::metrics::PoolKindLabel;
use crate::provider::ProviderMsg;
use crate::wire::PoolView;

/// Messages.
pub enum PoolMsg {
    /// Carry out a scaling decision; answered once the new workers are journaled.
    Apply(Box<PoolDecision>, RpcReplyPort<()>),
    /// A decision that changes nothing but explains the pool's state (e.g. blocked at max).
    Note(String),
    /// A worker of this pool changed state.
    WorkerChanged {
        /// Which.
        id: WorkerId,
        /// New state.
        state: WorkerState,
    },
    /// A provisioning worker missed its registration deadline (timer).
    RegisterDeadline(WorkerId),
    /// The provider could not start a worker.
    ProvisionFailed {
        /// Which.
        id: WorkerId,
        /// Why.
        error: String,
    },
    /// The pool's view (counts come from the control plane).
    GetView(RpcReplyPort<PoolView>),
    /// The health of the providers the pool may use (the autoscaler's provider selection).
    GetProviders(RpcReplyPort<Vec<ProviderStatus>>),
    /// A provider's own health check (e.g. the Docker engine answers its ping or not).
    ProviderHealth {
        /// The named provider.
        provider: String,
        /// Whether it can start workers.
        healthy: bool,
        /// Why not.
        error: Option<String>,
    },
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for PoolMsg {}

/// State.
pub struct PoolState {
    ctx: NodeContext,
    spec: PoolSpec,
    provisioning: BTreeMap<WorkerId, Timer<PoolMsg>>,
    failures: u64,
    last_decision: Option<String>,
    /// Health of each provider this pool may use.
    providers: BTreeMap<String, ProviderStatus>,
    /// Its last failure, per provider.
    provider_errors: BTreeMap<String, String>,
    /// Which provider started each worker still provisioning, and when.
    origin: BTreeMap<WorkerId, (String, u64)>,
    /// Every live worker of the pool and the provider that started it (cost accounting).
    live: BTreeMap<WorkerId, String>,
    /// When cost was last accrued.
    cost_accrued_at_ms: u64,
}

/// The actor.
pub struct Pool;

#[ractor::async_trait]
impl Actor for Pool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = (NodeContext, PoolSpec);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, spec): (NodeContext, PoolSpec),
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_pool(spec.id.clone(), myself.clone());
        let control = ctx.dir.control().ok_or("control plane is not running")?;
        let workers = ractor::call_t!(
            control,
            |reply| ControlPlaneMsg::GetWorkers {
                pool: Some(spec.id.clone()),
                reply
            },
            10_000
        )?;
        let providers = spec
            .providers
            .iter()
            .map(|name| {
                let mut s = ProviderStatus::new(name.clone());
                if let Some(p) = ctx.config.providers.get(name) {
                    s.labels = p.labels.clone();
                    s.cost_per_second = p.cost_micros_per_second as f64 / 1_000_000.0;
                    s.capacity_remaining = p.max_workers;
                    s.startup_ms_ewma = p.expected_startup_ms as f64;
                }
                (name.clone(), s)
            })
            .collect();
        let mut st = PoolState {
            ctx,
            spec,
            provisioning: BTreeMap::new(),
            failures: 0,
            last_decision: None,
            providers,
            provider_errors: BTreeMap::new(),
            origin: BTreeMap::new(),
            live: BTreeMap::new(),
            cost_accrued_at_ms: 0,
        };
        let now = st.ctx.now_ms();
        st.cost_accrued_at_ms = now;
        let first = st.spec.providers.first().cloned().unwrap_or_default();
        for w in workers
            .iter()
            .filter(|w| w.state != WorkerState::Terminated)
        {
            st.live.insert(w.id.clone(), first.clone());
        }
        for w in workers
            .into_iter()
            .filter(|w| w.state == WorkerState::Provisioning)
        {
            let deadline = w.provisioned_at_ms + st.spec.register_timeout_ms;
            st.arm_deadline(&myself, w.id, deadline.saturating_sub(now));
        }
        Ok(st)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, t) in std::mem::take(&mut st.provisioning) {
            t.abort();
        }
        st.ctx.dir.clear_pool(&st.spec.id, &myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Apply(decision, reply) => {
                st.apply(&myself, *decision).await?;
                let _ = reply.send(());
            }
            PoolMsg::Note(reason) => st.last_decision = Some(reason),
            PoolMsg::WorkerChanged { id, state } => {
                if state == WorkerState::Terminated {
                    st.live.remove(&id);
                }
                if state != WorkerState::Provisioning {
                    if let Some(t) = st.provisioning.remove(&id) {
                        t.abort();
                    }
                    if let Some((name, started_ms)) = st.origin.remove(&id)
                        && state != WorkerState::Terminated
                    {
                        let now = st.ctx.now_ms();
                        if let Some(s) = st.providers.get_mut(&name) {
                            *s = on_provision_success(s, now.saturating_sub(started_ms), now);
                        }
                    }
                }
            }
            PoolMsg::ProviderHealth {
                provider,
                healthy,
                error,
            } => {
                if let Some(s) = st.providers.get_mut(&provider) {
                    if s.healthy != healthy {
                        info!(pool = %st.spec.id, %provider, healthy, error = ?error, "provider health changed");
                    }
                    s.healthy = healthy;
                }
                match error {
                    Some(e) if !healthy => {
                        st.provider_errors.insert(provider, e);
                    }
                    _ => {}
                }
            }
            PoolMsg::GetProviders(reply) => {
                st.accrue_cost();
                let _ = reply.send(st.providers.values().cloned().collect());
            }
            PoolMsg::RegisterDeadline(id) => {
                if st.provisioning.remove(&id).is_some() {
                    st.failures += 1;
                    st.provider_failed(&id, "agent did not register in time");
                    let reason = format!(
                        "agent did not register within {} (provisioning failure)",
                        hodei_runtime::control::fmt_ms(st.spec.register_timeout_ms)
                    );
                    warn!(pool = %st.spec.id, worker = %id, %reason, "provisioning failed");
                    st.fail(id, reason);
                }
            }
            PoolMsg::ProvisionFailed { id, error } => {
                if let Some(t) = st.provisioning.remove(&id) {
                    t.abort();
                }
                st.failures += 1;
                st.provider_failed(&id, &error);
                st.fail(id, error);
            }
            PoolMsg::GetView(reply) => {
                let _ = reply.send(PoolView {
                    name: st.spec.id.to_string(),
                    provider: st.spec.provider.to_string(),
                    min_workers: st.spec.min_workers,
                    max_workers: st.spec.max_workers,
                    slots: st.spec.template.slots,
                    capacity: st.spec.template.capacity,
                    workers: vec![],
                    pending_fitting: 0,
                    last_decision: st.last_decision.clone(),
                    provisioning_failures: st.failures,
                    providers: st.provider_lines(),
                });
            }
            PoolMsg::InjectFault => {
                return Err(format!("injected fault in pool {}", st.spec.id).into());
            }
        }
        Ok(())
    }
}

impl PoolState {
    fn arm_deadline(&mut self, myself: &ActorRef<PoolMsg>, id: WorkerId, wait_ms: u64) {
        let id2 = id.clone();
        let t = myself.send_after(Duration::from_millis(wait_ms), move || {
            PoolMsg::RegisterDeadline(id2)
        });
        self.provisioning.insert(id, t);
    }

    /// Charges a failed start to the provider that was asked for the worker (backoff).
    fn provider_failed(&mut self, id: &WorkerId, error: &str) {
        let Some((name, _)) = self.origin.remove(id) else {
            return;
        };
        let now = self.ctx.now_ms();
        if let Some(s) = self.providers.get_mut(&name) {
            *s = on_provision_failure(s, now);
            warn!(pool = %self.spec.id, provider = %name, failures = s.consecutive_failures,
                backoff_ms = s.backoff_until_ms.saturating_sub(now), %error, "provider failed to start a worker");
        }
        self.provider_errors.insert(name, error.to_string());
    }

    /// Adds what the pool's live workers cost since the last call to `hodei_pool_cost_total`.
    fn accrue_cost(&mut self) {
        let now = self.ctx.now_ms();
        let dt_ms = now.saturating_sub(self.cost_accrued_at_ms);
        self.cost_accrued_at_ms = now;
        let cost: f64 = self
            .live
            .values()
            .filter_map(|p| self.providers.get(p))
            .map(|p| cost_accrued(1, p.cost_per_second, dt_ms))
            .sum();
        if cost > 0.0 {
            self.ctx
                .metrics
                .pool_cost
                .get_or_create(&crate::metrics::PoolLabel {
                    pool: self.spec.id.to_string(),
                })
                .inc_by(cost);
        }
    }

    /// One line per provider for `hodei pools`.
    fn provider_lines(&self) -> Vec<String> {
        let now = self.ctx.now_ms();
        self.providers
            .values()
            .map(|s| {
                let mut line = format!("{}: ", s.name);
                if !s.healthy {
                    line.push_str("unhealthy");
                    if let Some(e) = self.provider_errors.get(&s.name) {
                        line.push_str(&format!(" ({e})"));
                    }
                    return line;
                }
                if s.backoff_until_ms > now {
                    line.push_str(&format!(
                        "backing off {} after {} failures",
                        hodei_runtime::control::fmt_ms(s.backoff_until_ms - now),
                        s.consecutive_failures
                    ));
                } else if s.consecutive_failures > 0 {
                    line.push_str(&format!("{} failures in a row", s.consecutive_failures));
                } else {
                    line.push_str("healthy");
                }
                if s.startup_ms_ewma > 0.0 {
                    line.push_str(&format!(", start-up {:.0} ms", s.startup_ms_ewma));
                }
                if s.cost_per_second > 0.0 {
                    line.push_str(&format!(", cost {}/s", s.cost_per_second));
                }
                if let Some(e) = self.provider_errors.get(&s.name)
                    && s.consecutive_failures > 0
                {
                    line.push_str(&format!(" (last: {e})"));
                }
                line
            })
            .collect()
    }

    fn fail(&self, id: WorkerId, reason: String) {
        self.ctx
            .metrics
            .provisioning_failures
            .get_or_create(&crate::metrics::PoolLabel {
                pool: self.spec.id.to_string(),
            })
            .inc();
        for p in self.ctx.dir.all_providers() {
            let _ = p.cast(ProviderMsg::Destroy {
                worker: id.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(c) = self.ctx.dir.control() {
            let _ = c.cast(ControlPlaneMsg::WorkerGone { id, reason });
        }
    }

    async fn apply(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        d: PoolDecision,
    ) -> Result<(), ActorProcessingErr> {
        let control = self
            .ctx
            .dir
            .control()
            .ok_or("control plane is not running")?;
        info!(
            pool = %self.spec.id,
            kind = ?d.kind,
            provision = d.provision,
            stops = d.stops.len(),
            destroy = d.destroy.len(),
            reason = %d.reason,
            "scaling"
        );
        self.ctx
            .metrics
            .scale_events
            .get_or_create(&PoolKindLabel {
                pool: self.spec.id.to_string(),
                kind: d.kind.as_str().into(),
            })
            .inc();
        self.last_decision = Some(d.reason.clone());
        for id in &d.destroy {
            // The pool's own registration timer may have got there first.
            let Some(timer) = self.provisioning.remove(id) else {
                continue;
            };
            timer.abort();
            self.failures += 1;
            self.provider_failed(id, "agent did not register in time");
            self.fail(
                id.clone(),
                format!(
                    "agent did not register within {} (provisioning failure)",
                    hodei_runtime::control::fmt_ms(self.spec.register_timeout_ms)
                ),
            );
        }
        for i in 0..d.provision as usize {
            let id = match ractor::call_t!(
                control,
                |reply| ControlPlaneMsg::ProvisionWorker {
                    pool: self.spec.id.clone(),
                    reply
                },
                10_000
            )? {
                Ok(id) => id,
                Err(e) => {
                    info!(pool = %self.spec.id, reason = %e, "not provisioning");
                    break;
                }
            };
            self.arm_deadline(myself, id.clone(), self.spec.register_timeout_ms);
            let name = d
                .providers
                .get(i)
                .or_else(|| self.spec.providers.first())
                .cloned()
                .unwrap_or_else(|| "local".into());
            self.origin
                .insert(id.clone(), (name.clone(), self.ctx.now_ms()));
            self.live.insert(id.clone(), name.clone());
            match self.ctx.dir.named_provider(&name) {
                Some(p) => {
                    let _ = p.cast(ProviderMsg::Create {
                        worker: id,
                        pool: self.spec.id.clone(),
                        template: self.spec.template.clone(),
                    });
                }
                None => {
                    self.provisioning.remove(&id);
                    self.failures += 1;
                    let why = format!("provider {name} is not running");
                    self.provider_failed(&id, &why);
                    self.fail(id, why);
                }
            }
        }
        // Retire (idle) and drain (busy) alike: draining takes no new work and the worker is
        // shut down once its jobs are done — a busy worker is never killed by a scale-down.
        for stop in d.stops {
            let why = match stop.mode {
                StopMode::Retire => "retired",
                StopMode::Drain => "drained",
            };
            let _ = control.cast(ControlPlaneMsg::DrainWorker {
                id: stop.worker,
                reason: format!("{why} ({}): {}", stop.cause.as_str(), d.reason),
            });
        }
        Ok(())
    }
}
