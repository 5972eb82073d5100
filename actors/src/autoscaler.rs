//! The autoscaler: a coordinating actor that runs the pure scaling decision
//! ([`hodei_runtime::scaling::decide`]) for every pool and has the pool actors carry it out.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: none that matters across a restart (it reads the pools' stats from the control plane
//! on every evaluation).
//!
//! It evaluates on an interval and when kicked (a job queued, a worker changed), coalescing
//! kicks, so a pool at zero starts provisioning as soon as work arrives.

use std::time::Duration;

use hodei_runtime::scaling::decide;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
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
                for spec in &st.ctx.config.pools {
                    if spec.provider == hodei_runtime::ProviderKind::External {
                        continue;
                    }
                    let Some(s) = stats.get(&spec.id) else {
                        continue;
                    };
                    let d = decide(spec, s, now);
                    if d.provision == 0 && d.retire.is_empty() {
                        continue;
                    }
                    let Some(pool) = st.ctx.dir.pool(&spec.id) else {
                        continue;
                    };
                    // Wait until the pool has journaled the new workers, so the next evaluation
                    // sees them and does not provision twice.
                    if let Err(e) = ractor::call_t!(pool, |r| PoolMsg::Apply(d, r), 30_000) {
                        warn!(pool = %spec.id, error = %e, "pool did not apply a scaling decision");
                    }
                }
            }
            AutoscalerMsg::InjectFault => return Err("injected fault in autoscaler".into()),
        }
        Ok(())
    }
}
