//! The scheduler: a thin shell around the pure placement function
//! ([`hodei_runtime::placement::place`]).
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: nothing durable — it reads a fresh view from the control plane for every cycle, so a
//! restarted scheduler simply runs its next cycle.
//!
//! A cycle: the control plane sends a view (schedulable pending jobs in queue order, workers
//! with free slots) whenever something changed and the previous view has been answered; the
//! scheduler places and answers with the plan, which the control plane re-checks against its
//! current state before committing it. Changes made while a view is out are coalesced into the
//! next one. A timer asks for a view when the earliest retry backoff ends.

use std::time::Duration;

use hodei_runtime::placement::place;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::context::{NodeContext, Timer};
use crate::control_plane::ControlPlaneMsg;

/// Messages.
pub enum SchedulerMsg {
    /// Ask the control plane for a view (timer).
    Kick,
    /// Plan this view.
    Plan(hodei_runtime::control::SchedulingView),
    /// Fault injection: fail (tests the restart path).
    InjectFault,
}
impl ractor::Message for SchedulerMsg {}

/// State.
pub struct SchedulerState {
    ctx: NodeContext,
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
        // A (re)started scheduler asks for a view at once, forgetting one its predecessor lost.
        if let Some(c) = ctx.dir.control() {
            let _ = c.cast(ControlPlaneMsg::ScheduleRequested { reset: true });
        }
        Ok(SchedulerState { ctx, wake: None })
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
                if let Some(c) = st.ctx.dir.control() {
                    c.cast(ControlPlaneMsg::ScheduleRequested { reset: false })?;
                }
            }
            SchedulerMsg::Plan(view) => {
                st.ctx.metrics.scheduling_cycles.inc();
                let plan = place(&view);
                if let Some(at) = view.next_wake_ms {
                    st.wake_at(&myself, at, view.now_ms);
                }
                // Always answer, even with an empty plan: the answer frees the next view.
                if let Some(c) = st.ctx.dir.control() {
                    c.cast(ControlPlaneMsg::ApplyPlan(plan))?;
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
