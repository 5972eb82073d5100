//! One actor per unfinished job: it owns the job's timers.
//!
//! Supervised by: the job supervisor (transient: a job actor that stops because its job
//! finished is not restarted; one that crashed is).
//! Supervises: nothing.
//! State: rebuilt in `pre_start` from the job's record in the control plane (the live attempt
//! and when it started), so a restarted job actor re-arms the same deadline.
//!
//! The agent enforces a job's timeout itself; this actor is the node's backstop. At the
//! deadline it asks the worker to stop the attempt; if no result arrives within the stop grace
//! plus [`UNCONFIRMED_SLACK_MS`], it records the attempt as timed out without the agent's word.

use std::time::Duration;

use hodei_runtime::job::StopCause;
use hodei_runtime::{AttemptNo, ExitReport, JobId, WorkerId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::context::{NodeContext, Timer};
use crate::control_plane::ControlPlaneMsg;
use crate::supervisor::{ChildSpec, Restart, child};
use crate::wire::{AttemptRef, StopOrder};
use crate::worker::WorkerMsg;

/// Extra time after the stop grace before a timeout is recorded without the agent's report.
pub const UNCONFIRMED_SLACK_MS: u64 = 5_000;

/// Messages.
pub enum JobMsg {
    /// An attempt was assigned.
    Assigned {
        /// Which attempt.
        attempt: AttemptRef,
        /// Where.
        worker: WorkerId,
    },
    /// It started (the timeout runs from here).
    Started {
        /// Which attempt.
        attempt: AttemptNo,
        /// When (node clock).
        at_ms: u64,
    },
    /// The attempt ended; the job is pending again.
    Requeued,
    /// The job is finished: stop.
    Finished,
    /// The timeout of an attempt expired (timer).
    TimeoutExpired(AttemptNo),
    /// The stop after a timeout was not confirmed in time (timer).
    StopUnconfirmed(AttemptNo),
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for JobMsg {}

/// State.
pub struct JobState {
    ctx: NodeContext,
    id: JobId,
    timeout_ms: Option<u64>,
    live: Option<(AttemptRef, WorkerId)>,
    timer: Option<Timer<JobMsg>>,
}

/// The actor.
pub struct Job;

/// What a job actor starts from: taken from the job's record by the control plane when it
/// asks for the actor, so the common start needs no round trip; a restart after a crash reads
/// the record again.
#[derive(Debug, Clone)]
pub struct JobInit {
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// The live attempt, its worker and when it started.
    pub live: Option<(AttemptRef, WorkerId, Option<u64>)>,
}

impl JobInit {
    /// From a job's record (None when the job is finished).
    pub fn from_record(r: &hodei_runtime::JobRecord) -> Option<Self> {
        if r.state.is_terminal() {
            return None;
        }
        Some(Self {
            timeout_ms: r.spec.timeout_ms,
            live: r.live_attempt().map(|a| {
                (
                    AttemptRef {
                        job: r.id,
                        attempt: a.number,
                        epoch: a.epoch,
                    },
                    a.worker.clone(),
                    a.started_at_ms,
                )
            }),
        })
    }
}

/// The child spec the job supervisor runs for job `id`.
pub fn job_child(ctx: NodeContext, id: JobId, init: JobInit) -> ChildSpec {
    let init = std::sync::Arc::new(std::sync::Mutex::new(Some(init)));
    child(format!("job-{id}"), Restart::Transient, move |sup| {
        let ctx = ctx.clone();
        // The first start uses `init`; restarts rebuild from the control plane.
        let init = init.lock().ok().and_then(|mut g| g.take());
        async move {
            let (r, _) = Actor::spawn_linked(None, Job, (ctx, id, init), sup).await?;
            Ok(r.get_cell())
        }
    })
}

#[ractor::async_trait]
impl Actor for Job {
    type Msg = JobMsg;
    type State = JobState;
    type Arguments = (NodeContext, JobId, Option<JobInit>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, id, init): (NodeContext, JobId, Option<JobInit>),
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_job(id, myself.clone());
        let init = match init {
            Some(i) => Some(i),
            None => {
                let control = ctx.dir.control().ok_or("control plane is not running")?;
                ractor::call_t!(
                    control,
                    |reply| ControlPlaneMsg::GetJobRecord { id, reply },
                    10_000
                )?
                .as_ref()
                .and_then(JobInit::from_record)
            }
        };
        let mut st = JobState {
            ctx,
            id,
            timeout_ms: None,
            live: None,
            timer: None,
        };
        let Some(init) = init else {
            myself.stop(None);
            return Ok(st);
        };
        st.timeout_ms = init.timeout_ms;
        if let Some((attempt, worker, started)) = init.live {
            st.live = Some((attempt, worker));
            if let Some(started) = started {
                st.arm_timeout(&myself, attempt.attempt, started);
            }
        }
        Ok(st)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.cancel_timer();
        st.ctx.dir.clear_job(&st.id, &myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Assigned { attempt, worker } => {
                st.cancel_timer();
                st.live = Some((attempt, worker));
            }
            JobMsg::Started { attempt, at_ms } => {
                if st.live.as_ref().is_some_and(|(a, _)| a.attempt == attempt) {
                    st.arm_timeout(&myself, attempt, at_ms);
                }
            }
            JobMsg::Requeued => {
                st.cancel_timer();
                st.live = None;
            }
            JobMsg::Finished => {
                st.cancel_timer();
                myself.stop(None);
            }
            JobMsg::TimeoutExpired(attempt) => {
                let Some((a, worker)) = st.live.clone().filter(|(a, _)| a.attempt == attempt)
                else {
                    return Ok(());
                };
                let grace_ms = st.ctx.config.agents.stop_grace_ms;
                if let Some(w) = st.ctx.dir.worker(&worker) {
                    let _ = w.cast(WorkerMsg::Stop(StopOrder {
                        attempt: a,
                        cause: StopCause::Timeout,
                        grace_ms,
                    }));
                }
                st.timer = Some(myself.send_after(
                    Duration::from_millis(grace_ms + UNCONFIRMED_SLACK_MS),
                    move || JobMsg::StopUnconfirmed(attempt),
                ));
            }
            JobMsg::StopUnconfirmed(attempt) => {
                let Some((a, worker)) = st.live.clone().filter(|(a, _)| a.attempt == attempt)
                else {
                    return Ok(());
                };
                warn!(job = %st.id, %worker, "timed-out attempt was not confirmed stopped by its agent");
                let mut report = ExitReport::exited(0);
                report.exit_code = None;
                report.stopped_by = Some(StopCause::Timeout);
                if let Some(c) = st.ctx.dir.control() {
                    let _ = c.cast(ControlPlaneMsg::AttemptFinished(a, report));
                }
            }
            JobMsg::InjectFault => {
                return Err(format!("injected fault in job actor {}", st.id).into());
            }
        }
        Ok(())
    }
}

impl JobState {
    fn cancel_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }

    fn arm_timeout(&mut self, myself: &ActorRef<JobMsg>, attempt: AttemptNo, started_at_ms: u64) {
        self.cancel_timer();
        let Some(timeout) = self.timeout_ms else {
            return;
        };
        let deadline = started_at_ms + timeout;
        let wait = deadline.saturating_sub(self.ctx.now_ms());
        self.timer = Some(myself.send_after(Duration::from_millis(wait), move || {
            JobMsg::TimeoutExpired(attempt)
        }));
    }
}
