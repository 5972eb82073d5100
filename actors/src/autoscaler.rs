//! The autoscaler: a coordinating actor that runs the pure scaling decision
//! ([`hodei_runtime::scaling::decide_pool`]) for every pool and has the pool actors carry it out.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: each pool's `ScalingHistory` (last scale-up/down, arrivals per time-of-day bucket).
//! It is kept in memory only: after a restart cooldowns start afresh and the predictive history
//! is relearnt. The pools' workers and demand are read from the control plane every evaluation.
//!
//! It evaluates on an interval and when kicked (a job queued, a worker changed), coalescing
//! kicks, so a pool at zero starts provisioning as soon as work arrives.

use std::time::Duration;

use std::collections::BTreeMap;

use hodei_runtime::PoolId;
use hodei_runtime::scaling::{DecisionKind, ScalingHistory, decide_pool, idle_worker_ms};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::metrics::PoolLabel;
use crate::pool::PoolMsg;

/// Evaluation interval.
pub const INTERVAL_MS: u64 = 1_000;

/// Messages.
pub enum AutoscalerMsg {
    /// Something changed: evaluate soon.
    Kick,
    /// Evaluate now.
    Evaluate,
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for AutoscalerMsg {}

/// State.
pub struct AutoscalerState {
    ctx: NodeContext,
    pending: bool,
    history: BTreeMap<PoolId, ScalingHistory>,
    arrivals_seen: Option<u64>,
    last_eval_ms: Option<u64>,
}

/// The actor.
pub struct Autoscaler;

#[ractor::async_trait]
impl Actor for Autoscaler {
    type Msg = AutoscalerMsg;
    type State = AutoscalerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_autoscaler(myself.clone());
        myself.send_interval(Duration::from_millis(INTERVAL_MS), || AutoscalerMsg::Kick);
        myself.cast(AutoscalerMsg::Kick)?;
        Ok(AutoscalerState {
            ctx,
            pending: false,
            history: BTreeMap::new(),
            arrivals_seen: None,
            last_eval_ms: None,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.ctx.dir.clear_autoscaler(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AutoscalerMsg::Kick => {
                if !st.pending {
                    st.pending = true;
                    myself.cast(AutoscalerMsg::Evaluate)?;
                }
            }
            AutoscalerMsg::Evaluate => {
                st.pending = false;
                let Some(control) = st.ctx.dir.control() else {
                    return Ok(());
                };
                let stats = ractor::call_t!(
                    control,
                    |reply| ControlPlaneMsg::GetPoolStats { reply },
                    10_000
                )?;
                let now = st.ctx.now_ms();
                let arrived = st
                    .arrivals_seen
                    .map_or(0, |seen| stats.arrivals_total.saturating_sub(seen));
                st.arrivals_seen = Some(stats.arrivals_total);
                let last_eval_ms = st.last_eval_ms.replace(now);
                for spec in &st.ctx.config.pools {
                    if spec.provider == hodei_runtime::ProviderKind::External {
                        continue;
                    }
                    let Some(state) = stats.pools.get(&spec.id) else {
                        continue;
                    };
                    let history = st.history.entry(spec.id.clone()).or_default();
                    history
                        .arrivals
                        .record_arrivals(&spec.scaling.predictive, arrived, now);
                    let mut state = state.clone();
                    if let Some(pool) = st.ctx.dir.pool(&spec.id)
                        && let Ok(p) = ractor::call_t!(pool, PoolMsg::GetProviders, 10_000)
                    {
                        state.providers = p;
                    }
                    let d = decide_pool(spec, &spec.scaling, &state, history, now);
                    let label = PoolLabel {
                        pool: spec.id.to_string(),
                    };
                    let m = &st.ctx.metrics;
                    if let Some(last) = last_eval_ms {
                        let idle_ms = idle_worker_ms(&state.workers, last, now);
                        m.idle_worker_seconds
                            .get_or_create(&label)
                            .inc_by(idle_ms as f64 / 1000.0);
                    }
                    m.pool_utilisation
                        .get_or_create(&label)
                        .set(f64::from(d.metrics.utilisation_pct) / 100.0);
                    history.record_decision(&d, now);
                    if matches!(d.kind, DecisionKind::Steady) {
                        continue;
                    }
                    if d.provision == 0 && d.stops.is_empty() && d.destroy.is_empty() {
                        // Blocked: nothing to do, but say why in `hodei pools`.
                        if let Some(pool) = st.ctx.dir.pool(&spec.id) {
                            let _ = pool.cast(PoolMsg::Note(d.reason.clone()));
                        }
                        continue;
                    }
                    let Some(pool) = st.ctx.dir.pool(&spec.id) else {
                        continue;
                    };
                    // Wait until the pool has journaled the new workers, so the next evaluation
                    // sees them and does not provision twice.
                    if let Err(e) =
                        ractor::call_t!(pool, |r| PoolMsg::Apply(Box::new(d), r), 30_000)
                    {
                        warn!(pool = %spec.id, error = %e, "pool did not apply a scaling decision");
                    }
                }
            }
            AutoscalerMsg::InjectFault => return Err("injected fault in autoscaler".into()),
        }
        Ok(())
    }
}
