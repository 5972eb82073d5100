//! The scheduler: a thin shell around the pure placement function
//! ([`hodei_runtime::placement::place`]).
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: nothing durable — it reads a fresh view from the control plane for every cycle, so a
//! restarted scheduler simply runs its next cycle.
//!
//! A cycle: get the view (schedulable pending jobs in queue order, workers with free slots),
//! place, send the plan to the control plane, which re-checks every placement against its
//! current state before committing it. Kicks (a job queued, capacity freed) are coalesced into
//! one cycle; a timer wakes it when the earliest retry backoff ends.

use std::time::Duration;

use hodei_runtime::placement::place;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::context::{NodeContext, Timer};
use crate::control_plane::ControlPlaneMsg;

/// Messages.
pub enum SchedulerMsg {
    /// Something changed: run a cycle soon.
    Kick,
    /// Run a cycle now.
    Cycle,
    /// Fault injection: fail (tests the restart path).
    InjectFault,
}
impl ractor::Message for SchedulerMsg {}

/// State.
pub struct SchedulerState {
    ctx: NodeContext,
    pending: bool,
    wake: Option<(u64, Timer<SchedulerMsg>)>,
}

/// The actor.
pub struct Scheduler;

#[ractor::async_trait]
impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_scheduler(myself.clone());
        // A (re)started scheduler looks at the queue at once.
        myself.cast(SchedulerMsg::Kick)?;
        Ok(SchedulerState {
            ctx,
            pending: false,
            wake: None,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, t)) = st.wake.take() {
            t.abort();
        }
        st.ctx.dir.clear_scheduler(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Kick => {
                if !st.pending {
                    st.pending = true;
                    myself.cast(SchedulerMsg::Cycle)?;
                }
            }
            SchedulerMsg::Cycle => {
                st.pending = false;
                let Some(control) = st.ctx.dir.control() else {
                    return Ok(());
                };
                let max_jobs = st.ctx.config.scheduler.max_jobs_per_cycle;
                let view = ractor::call_t!(
                    control,
                    |reply| ControlPlaneMsg::GetSchedulingView { max_jobs, reply },
                    10_000
                )?;
                st.ctx.metrics.scheduling_cycles.inc();
                if !view.jobs.is_empty() {
                    let plan = place(&view);
                    control.cast(ControlPlaneMsg::ApplyPlan(plan))?;
                }
                if let Some(at) = view.next_wake_ms {
                    st.wake_at(&myself, at, view.now_ms);
                }
            }
            SchedulerMsg::InjectFault => return Err("injected fault in scheduler".into()),
        }
        Ok(())
    }
}

impl SchedulerState {
    fn wake_at(&mut self, myself: &ActorRef<SchedulerMsg>, at_ms: u64, now_ms: u64) {
        if let Some((t, h)) = &self.wake
            && *t <= at_ms
            && !h.is_finished()
        {
            return;
        }
        if let Some((_, h)) = self.wake.take() {
            h.abort();
        }
        let h = myself.send_after(
            Duration::from_millis(at_ms.saturating_sub(now_ms) + 1),
            || SchedulerMsg::Kick,
        );
        self.wake = Some((at_ms, h));
    }
}
