//! The scheduler: a thin shell around the pure scheduling pipeline
//! ([`hodei_runtime::scheduling::Pipeline`]).
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: the pipeline built from the configuration and the custom plugins, and a wake timer —
//! nothing durable. It reads a fresh view from the control plane for every cycle, so a
//! restarted scheduler rebuilds its pipeline and simply runs its next cycle.
//!
//! A cycle: the control plane sends a view (workers, running jobs, a window of schedulable
//! pending jobs) whenever something changed and the previous view has been answered; the
//! scheduler runs queue → filters → scores → preemption and answers with the outcome, which the
//! control plane re-checks against its current state before committing it. Changes made while
//! a view is out are coalesced into the next one. A timer asks for a view when the earliest
//! retry or unschedulable backoff ends, or when a `NoExecute` toleration runs out.

use std::time::{Duration, Instant};

use hodei_runtime::scheduling::{Outcome, Pipeline};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::context::{NodeContext, Timer};
use crate::control_plane::ControlPlaneMsg;

/// Messages.
pub enum SchedulerMsg {
    /// Ask the control plane for a view (timer).
    Kick,
    /// Plan this view.
    Plan(Box<hodei_runtime::control::SchedulingView>),
    /// Fault injection: fail (tests the restart path).
    InjectFault,
}
impl ractor::Message for SchedulerMsg {}

/// State.
pub struct SchedulerState {
    ctx: NodeContext,
    pipeline: Pipeline,
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
        let mut pipeline = Pipeline::new(ctx.config.scheduler.pipeline.clone());
        for (profile, factory) in ctx.plugins.entries() {
            if let Err(e) = pipeline.register_plugin(profile, factory()) {
                warn!(%profile, error = %e, "custom scheduling plugin not added");
            }
        }
        ctx.dir.set_scheduler(myself.clone());
        // A (re)started scheduler asks for a view at once, forgetting one its predecessor lost.
        if let Some(c) = ctx.dir.control() {
            let _ = c.cast(ControlPlaneMsg::ScheduleRequested { reset: true });
        }
        Ok(SchedulerState {
            ctx,
            pipeline,
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
                if let Some(c) = st.ctx.dir.control() {
                    c.cast(ControlPlaneMsg::ScheduleRequested { reset: false })?;
                }
            }
            SchedulerMsg::Plan(view) => st.on_plan(&myself, *view)?,
            SchedulerMsg::InjectFault => return Err("injected fault in scheduler".into()),
        }
        Ok(())
    }
}

impl SchedulerState {
    fn on_plan(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        view: hodei_runtime::control::SchedulingView,
    ) -> Result<(), ActorProcessingErr> {
        let m = &self.ctx.metrics;
        m.scheduling_cycles.inc();
        let t0 = Instant::now();
        let outcome: Outcome = self.pipeline.schedule(&view.cluster);
        m.scheduling_latency_seconds
            .observe(t0.elapsed().as_secs_f64());
        let now_ms = view.cluster.now_ms;
        let wake = [view.next_wake_ms, outcome.next_eviction_at_ms]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = wake {
            self.wake_at(myself, at, now_ms);
        }
        // Always answer, even with an empty outcome: the answer frees the next view.
        if let Some(c) = self.ctx.dir.control() {
            c.cast(ControlPlaneMsg::ApplyPlan(Box::new(outcome)))?;
        }
        Ok(())
    }

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
