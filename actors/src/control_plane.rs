//! The control plane: the single writer of the node's state.
//!
//! Supervised by: the root supervisor, with a restart budget of zero — a control plane that
//! failed (journal write error, a bug) takes the node down so that it restarts from the store,
//! rather than carrying on with state that may have diverged from what was acknowledged.
//! Supervises: nothing (it asks the job and worker supervisors to start children).
//! State: rebuilt in `pre_start` from the newest valid snapshot plus the journal; then a
//! `NodeStarted` command advances the epoch and gives up on the attempts and workers of the
//! previous run.
//!
//! Every change is a [`Command`] applied to the [`ControlState`] and appended to the journal
//! (group-committed by the [`JournalWriter`] thread). Replies that acknowledge a change —
//! submissions, cancellations, registrations, finished jobs to waiters — and answers to queries
//! are released only once the journal is durable up to the change they depend on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use hodei_runtime::control::{Command, ControlState, Event, Rejection, Unschedulable};
use hodei_runtime::scaling::{
    PoolState as ScalingPoolState, WorkerView as ScalingWorker, demand_by_pool,
};
use hodei_runtime::scheduling::{
    Explanation, Outcome, Taint, TaintEffect, unschedulable_backoff_ms,
};
use hodei_runtime::store::{JournalEntry, Marks, Store};
use hodei_runtime::{
    ExitReport, JobId, JobRecord, JobSpec, JobState, PoolId, Priority, TenantId, WorkerId,
    WorkerRecord, WorkerRegistration, WorkerState,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use crate::context::NodeContext;
use crate::job::{JobInit, JobMsg, job_child};
use crate::journal::{JournalWriter, WriterEvent, WriterOp};
use crate::metrics::{PoolStateLabel, QueueLabel, ReasonLabel, StateLabel, WorkerResourceLabel};
use crate::pool::PoolMsg;
use crate::scheduler::SchedulerMsg;
use crate::supervisor::SupervisorMsg;
use crate::views::{job_view, worker_view};
use crate::wire::{
    AgentMsg, ApiError, ApiErrorKind, Assignment, AttemptRef, JobFilter, JobView, LIST_LIMIT_MAX,
    RegisterAccepted, StopOrder, SubmitAck, WorkerView,
};
use crate::worker::{WorkerMsg, worker_child};

/// Most clients waiting on one job; more get the current state at once (and poll again).
pub const WAITERS_PER_JOB_MAX: usize = 1024;
/// Most clients waiting on jobs in total.
pub const WAITERS_MAX: usize = 100_000;
/// How often gauges are refreshed and retention is checked.
pub const TICK_MS: u64 = 1_000;
/// How often retention purges run.
pub const PURGE_EVERY_MS: u64 = 60_000;
/// A scheduler that has not answered a view this long is sent a fresh one.
pub const SCHEDULER_ANSWER_SECS: u64 = 10;

type Reply<T> = RpcReplyPort<Result<T, ApiError>>;

/// An agent's report about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEvent {
    /// The attempt's process started.
    Started(AttemptRef),
    /// The attempt's process tree ended.
    Finished(AttemptRef, ExitReport),
}

/// Messages.
pub enum ControlPlaneMsg {
    /// Submit a job; acknowledged when durable.
    Submit {
        /// The job.
        spec: JobSpec,
        /// Answer.
        reply: Reply<SubmitAck>,
    },
    /// Cancel a job.
    Cancel {
        /// Which.
        id: JobId,
        /// Why.
        reason: String,
        /// Answer (the job as it is after the request).
        reply: Reply<JobView>,
    },
    /// A scheduling outcome to re-check and commit (the scheduler's answer to a view).
    ApplyPlan(Box<Outcome>),
    /// Put taints on or take them off a worker (answered once durable).
    TaintWorker {
        /// Which worker.
        id: WorkerId,
        /// Taints to add.
        add: Vec<Taint>,
        /// Keys (and effects) to remove.
        remove: Vec<(String, Option<TaintEffect>)>,
        /// Answer: the worker afterwards.
        reply: Reply<WorkerView>,
    },
    /// Why a job is where it is: the last scheduling explanation.
    Explain {
        /// Which job.
        id: JobId,
        /// Answer (`None`: no cycle has looked at it since the node started).
        reply: Reply<Option<Explanation>>,
    },
    /// The scheduler wants a view (a backoff ended, or it restarted: `reset` forgets the view
    /// it may have lost).
    ScheduleRequested {
        /// The scheduler restarted.
        reset: bool,
    },
    /// What agents reported about attempts, in order.
    AttemptEvents(Vec<AttemptEvent>),
    /// An attempt's process tree ended (or is given up on by its job actor).
    AttemptFinished(AttemptRef, ExitReport),
    /// A pool wants a new worker id journaled as provisioning.
    ProvisionWorker {
        /// The pool.
        pool: PoolId,
        /// The new worker's id.
        reply: Reply<WorkerId>,
    },
    /// An agent registered.
    RegisterWorker {
        /// What it declared.
        registration: WorkerRegistration,
        /// Its executor.
        agent: ActorRef<AgentMsg>,
        /// Answer.
        reply: Reply<RegisterAccepted>,
    },
    /// Stop giving a worker work (scale-down); it is shut down once drained.
    DrainWorker {
        /// Which.
        id: WorkerId,
        /// Why.
        reason: String,
    },
    /// A worker is gone (agent exited, disconnected, silent, never registered).
    WorkerGone {
        /// Which.
        id: WorkerId,
        /// Why.
        reason: String,
    },
    /// Attempts an agent reports running that are not live on it here (to stop).
    CheckAttempts {
        /// The worker.
        worker: WorkerId,
        /// What it runs.
        running: Vec<AttemptRef>,
        /// The ones to stop.
        reply: RpcReplyPort<Vec<AttemptRef>>,
    },
    /// Assignments of attempts still Scheduled on a worker (re-sent after a worker actor restart).
    PendingAssignments {
        /// The worker.
        worker: WorkerId,
        /// Them.
        reply: RpcReplyPort<Vec<Assignment>>,
    },
    /// One job.
    GetJob {
        /// Which.
        id: JobId,
        /// Answer.
        reply: Reply<JobView>,
    },
    /// Jobs.
    ListJobs {
        /// Filter.
        filter: JobFilter,
        /// Answer.
        reply: RpcReplyPort<Vec<JobView>>,
    },
    /// Wait for a job to finish; answered when it is (durably), or never if the caller gives up.
    WaitJob {
        /// Which.
        id: JobId,
        /// Answer.
        reply: Reply<JobView>,
    },
    /// Whether a job is finished (None = unknown job).
    IsFinished {
        /// Which.
        id: JobId,
        /// Answer.
        reply: RpcReplyPort<Option<bool>>,
    },
    /// The record of a job (job actors rebuild from it).
    GetJobRecord {
        /// Which.
        id: JobId,
        /// Answer.
        reply: RpcReplyPort<Option<JobRecord>>,
    },
    /// Worker records (of one pool, or all).
    GetWorkers {
        /// Pool filter.
        pool: Option<PoolId>,
        /// Answer.
        reply: RpcReplyPort<Vec<WorkerRecord>>,
    },
    /// Worker views for clients.
    ListWorkers {
        /// Answer.
        reply: RpcReplyPort<Vec<WorkerView>>,
    },
    /// The current fencing epoch.
    GetEpoch {
        /// Answer.
        reply: RpcReplyPort<u64>,
    },
    /// The autoscaler's input, per configured pool.
    GetPoolStats {
        /// Answer.
        reply: RpcReplyPort<ScalingInput>,
    },
    /// Start job actors for every unfinished job (after the job supervisor (re)started).
    EnsureJobActors,
    /// Start worker actors for every registered worker whose agent is reachable (after the
    /// worker supervisor restarted); workers whose agent cannot be found are lost.
    EnsureWorkerActors,
    /// Journal durable up to an index (from the writer thread).
    Durable(u64),
    /// The journal failed (from the writer thread).
    JournalFailed(String),
    /// Periodic: gauges and retention.
    Tick,
    /// The state encoded for a backup, answered once everything it contains is durable.
    Backup {
        /// Answer.
        reply: Reply<BackupState>,
    },
    /// Graceful shutdown: requeue live attempts, snapshot, flush.
    Shutdown {
        /// Answered when durable.
        reply: RpcReplyPort<()>,
    },
}
impl ractor::Message for ControlPlaneMsg {}

type Deferred = Box<dyn FnOnce(&mut Core, Result<(), &str>) + Send>;

/// The state as of a durable index, encoded for a backup file.
#[derive(Debug)]
pub struct BackupState {
    /// The state, as [`Store::encode_state`] encodes it.
    pub payload: Vec<u8>,
    /// The journal index it is as of.
    pub index: u64,
    /// The ids handed out up to then.
    pub marks: Marks,
    /// When it was taken.
    pub at_ms: u64,
    /// Jobs in it.
    pub jobs: u64,
    /// Workers in it.
    pub workers: u64,
}

/// Pending jobs the autoscaler's demand looks at, at most.
pub const DEMAND_JOBS_MAX: usize = 10_000;

/// What the autoscaler reads each evaluation.
#[derive(Debug, Clone, Default)]
pub struct ScalingInput {
    /// Each configured pool's workers and the pending jobs it could serve.
    pub pools: BTreeMap<PoolId, ScalingPoolState>,
    /// Jobs submitted so far (the autoscaler counts arrivals from its differences).
    pub arrivals_total: u64,
    /// Pending jobs no pool could ever run, with the reasons.
    pub unservable: Vec<(JobId, String)>,
}

/// Label sets of per-tenant and per-worker gauges exported by the last refresh.
#[derive(Default)]
struct GaugeLabels {
    queue: BTreeSet<QueueLabel>,
    workers: BTreeSet<WorkerResourceLabel>,
}

/// True when a placement summary says only that no worker has a free slot
/// ("0/3 workers fit: 3 no free slot"), or that it waits its turn in a strict FCFS queue: the job
/// is queued, not unschedulable.
fn waiting_for_a_slot(summary: &str) -> bool {
    hodei_runtime::scheduling::waits_fcfs_turn(summary)
        || summary
            .strip_prefix("0/")
            .and_then(|r| r.split_once(" workers fit: "))
            .is_some_and(|(n, rest)| rest.strip_prefix(n) == Some(" no free slot"))
}

/// The control plane's data (everything but the deferred replies).
pub struct Core {
    ctx: NodeContext,
    state: ControlState,
    writer: JournalWriter,
    last_index: u64,
    durable_index: u64,
    sync_requested: u64,
    outbox: Vec<JournalEntry>,
    since_snapshot: u64,
    waiters: HashMap<JobId, Vec<Reply<JobView>>>,
    waiters_total: usize,
    pending_reasons: HashMap<JobId, String>,
    /// Pending jobs no pool could ever run, with the reasons (from the last autoscaler read).
    unservable: HashMap<JobId, String>,
    /// Pending jobs the scheduler could not place, and when to offer them again.
    unschedulable: HashMap<JobId, Unschedulable>,
    /// Preemptors waiting for their victims to stop: the worker, and until when at most.
    nominated: HashMap<JobId, (WorkerId, u64)>,
    /// Capacity changed since the last view: unschedulable jobs are offered again at once.
    unschedulable_reset: bool,
    /// The last explanation of each job a cycle decided (kept until the job is finished).
    explanations: HashMap<JobId, Explanation>,
    /// Scheduling cycles offered (rotates round robin in the pipeline).
    sched_cycle: u64,
    /// Label sets of the gauges last exported (so vanished ones are reset or removed).
    gauge_labels: GaugeLabels,
    last_purge_ms: u64,
    stopping: bool,
    /// Something changed that may let jobs be placed: send the scheduler a view.
    sched_dirty: bool,
    /// A view is with the scheduler; the next one waits for its plan.
    sched_in_flight: Option<tokio::time::Instant>,
}

/// State.
pub struct ControlPlaneState {
    core: Core,
    deferred: VecDeque<(u64, Deferred)>,
}

/// The actor.
pub struct ControlPlane;

#[ractor::async_trait]
impl Actor for ControlPlane {
    type Msg = ControlPlaneMsg;
    type State = ControlPlaneState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_control(myself.clone());
        let store = ctx.store.clone();
        let taken = ctx.recovered.lock().expect("recovered lock").take();
        let recovered = match taken {
            Some(r) => r,
            None => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.recover()).await??
            }
        };
        for w in &recovered.warnings {
            warn!(store = %store.path().display(), "{w}");
        }
        info!(
            jobs = recovered.state.jobs.len(),
            last_index = recovered.last_index,
            snapshot = ?recovered.snapshot_index,
            replayed = recovered.replayed,
            "state recovered"
        );
        let me = myself.clone();
        let writer =
            JournalWriter::start(ctx.journal_mode, store, ctx.metrics.clone(), move |ev| {
                let _ = match ev {
                    WriterEvent::Durable { index } => me.cast(ControlPlaneMsg::Durable(index)),
                    WriterEvent::Failed { error } => me.cast(ControlPlaneMsg::JournalFailed(error)),
                };
            });
        let now = ctx.now_ms();
        let recovered_loss = recovered.loss.clone();
        let mut core = Core {
            ctx,
            state: recovered.state,
            writer,
            last_index: recovered.last_index,
            durable_index: recovered.last_index,
            sync_requested: recovered.last_index,
            outbox: Vec::new(),
            since_snapshot: recovered.replayed,
            waiters: HashMap::new(),
            waiters_total: 0,
            pending_reasons: HashMap::new(),
            unservable: HashMap::new(),
            unschedulable: HashMap::new(),
            nominated: HashMap::new(),
            unschedulable_reset: false,
            explanations: HashMap::new(),
            sched_cycle: 0,
            gauge_labels: GaugeLabels::default(),
            last_purge_ms: now,
            stopping: false,
            sched_dirty: true,
            sched_in_flight: None,
        };
        if let Some(loss) = &recovered_loss {
            warn!(
                acked_index = loss.acked_index,
                recovered_index = loss.recovered_index,
                next_job_id = loss.marks.next_job_id,
                "accepting data loss (--accept-data-loss): {}",
                loss.what
            );
            let cmd = Command::DataLossAccepted {
                acked_index: loss.acked_index,
                recovered_index: loss.recovered_index,
                next_job_id: loss.marks.next_job_id,
                epoch: loss.marks.epoch,
                worker_seq_min: loss.marks.worker_seq_max,
                pools: core.ctx.config.pools.iter().map(|p| p.id.clone()).collect(),
                what: loss.what.clone(),
                at_ms: now,
            };
            core.state
                .apply(&cmd)
                .map_err(|r| format!("accepting the data loss: {r}"))?;
            core.journal(cmd)?;
        }
        let node = core.ctx.config.node.name.clone();
        let events = core
            .state
            .apply(&Command::NodeStarted {
                node: node.clone(),
                at_ms: now,
            })
            .map_err(|r| format!("node start: {r}"))?;
        core.journal(Command::NodeStarted { node, at_ms: now })?;
        // Start from a snapshot of the recovered state so the next restart replays little.
        core.snapshot()?;
        info!(epoch = %core.state.epoch, "control plane started");
        let mut st = ControlPlaneState {
            core,
            deferred: VecDeque::new(),
        };
        st.effects(events, 0);
        myself.send_interval(Duration::from_millis(TICK_MS), || ControlPlaneMsg::Tick);
        Ok(st)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.core.ctx.dir.clear_control(&myself);
        st.core.writer.stop();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.on_message(msg)?;
        st.send_outbox()?;
        st.core.offer_view();
        Ok(())
    }
}

impl ControlPlaneState {
    fn on_message(&mut self, msg: ControlPlaneMsg) -> Result<(), ActorProcessingErr> {
        let st = self;
        match msg {
            ControlPlaneMsg::Submit { spec, reply } => st.on_submit(spec, reply)?,
            ControlPlaneMsg::Cancel { id, reason, reply } => st.on_cancel(id, reason, reply)?,
            ControlPlaneMsg::ApplyPlan(_) if st.core.stopping => st.core.sched_in_flight = None,
            ControlPlaneMsg::ApplyPlan(outcome) => {
                st.core.sched_in_flight = None;
                st.on_apply_plan(*outcome)?;
            }
            ControlPlaneMsg::ScheduleRequested { reset } => {
                if reset {
                    st.core.sched_in_flight = None;
                }
                st.core.sched_dirty = true;
            }
            ControlPlaneMsg::AttemptEvents(events) => {
                let at_ms = st.core.ctx.now_ms();
                for ev in events {
                    st.command_quiet(match ev {
                        AttemptEvent::Started(a) => Command::AttemptStarted {
                            id: a.job,
                            attempt: a.attempt,
                            epoch: a.epoch,
                            at_ms,
                        },
                        AttemptEvent::Finished(a, report) => Command::AttemptFinished {
                            id: a.job,
                            attempt: a.attempt,
                            epoch: a.epoch,
                            report,
                            at_ms,
                        },
                    })?;
                }
            }
            ControlPlaneMsg::AttemptFinished(a, report) => {
                let at_ms = st.core.ctx.now_ms();
                st.command_quiet(Command::AttemptFinished {
                    id: a.job,
                    attempt: a.attempt,
                    epoch: a.epoch,
                    report,
                    at_ms,
                })?;
            }
            ControlPlaneMsg::ProvisionWorker { reply, .. } if st.core.stopping => {
                let _ = reply.send(Err(ApiError::unavailable("the node is shutting down")));
            }
            ControlPlaneMsg::ProvisionWorker { pool, reply } => {
                let id = st.core.state.next_worker_id(&pool);
                let at_ms = st.core.ctx.now_ms();
                match st.command(Command::WorkerProvisioning {
                    id: id.clone(),
                    pool,
                    at_ms,
                }) {
                    Ok(_) => {
                        let _ = reply.send(Ok(id));
                    }
                    Err(CommandError::Rejected(r)) => {
                        let _ =
                            reply.send(Err(ApiError::new(ApiErrorKind::Conflict, r.to_string())));
                    }
                    Err(CommandError::Fatal(e)) => return Err(e.into()),
                }
            }
            ControlPlaneMsg::RegisterWorker {
                registration,
                agent,
                reply,
            } => st.on_register(registration, agent, reply)?,
            ControlPlaneMsg::DrainWorker { id, reason } => {
                let at_ms = st.core.ctx.now_ms();
                st.command_quiet(Command::WorkerDraining { id, reason, at_ms })?;
            }
            ControlPlaneMsg::WorkerGone { id, reason } => st.on_worker_gone(id, reason)?,
            ControlPlaneMsg::CheckAttempts {
                worker,
                running,
                reply,
            } => {
                let stale = running
                    .into_iter()
                    .filter(|a| {
                        let live = st.core.state.job(a.job).and_then(|j| j.live_attempt());
                        !live.is_some_and(|l| {
                            l.number == a.attempt && l.epoch == a.epoch && l.worker == worker
                        })
                    })
                    .collect();
                let _ = reply.send(stale);
            }
            ControlPlaneMsg::PendingAssignments { worker, reply } => {
                let out = st
                    .core
                    .state
                    .worker(&worker)
                    .map(|w| {
                        w.running
                            .iter()
                            .filter_map(|(job, _)| st.core.state.job(*job))
                            .filter(|j| j.state == JobState::Scheduled)
                            .filter_map(assignment_of)
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(out);
            }
            ControlPlaneMsg::GetJob { id, reply } => {
                st.after_durable(move |core, r| {
                    let _ = reply.send(
                        r.map_err(ApiError::unavailable)
                            .and_then(|_| core.view(id).ok_or_else(|| ApiError::no_job(id))),
                    );
                });
            }
            ControlPlaneMsg::ListJobs { filter, reply } => {
                st.after_durable(move |core, _| {
                    let _ = reply.send(core.list(&filter));
                });
            }
            ControlPlaneMsg::WaitJob { id, reply } => st.on_wait(id, reply),
            ControlPlaneMsg::IsFinished { id, reply } => {
                st.after_durable(move |core, _| {
                    let _ = reply.send(core.state.job(id).map(|j| j.state.is_terminal()));
                });
            }
            ControlPlaneMsg::GetJobRecord { id, reply } => {
                let _ = reply.send(st.core.state.job(id).cloned());
            }
            ControlPlaneMsg::GetWorkers { pool, reply } => {
                let _ = reply.send(
                    st.core
                        .state
                        .workers
                        .values()
                        .filter(|w| pool.as_ref().is_none_or(|p| &w.pool == p))
                        .cloned()
                        .collect(),
                );
            }
            ControlPlaneMsg::ListWorkers { reply } => {
                st.after_durable(move |core, _| {
                    let _ = reply.send(core.state.workers.values().map(worker_view).collect());
                });
            }
            ControlPlaneMsg::GetEpoch { reply } => {
                let _ = reply.send(st.core.state.epoch.0);
            }
            ControlPlaneMsg::TaintWorker {
                id,
                add,
                remove,
                reply,
            } => st.on_taint_worker(id, add, remove, reply)?,
            ControlPlaneMsg::Explain { id, reply } => {
                let r = match st.core.state.job(id) {
                    None => Err(ApiError::no_job(id)),
                    Some(_) => Ok(st.core.explanations.get(&id).cloned()),
                };
                let _ = reply.send(r);
            }
            ControlPlaneMsg::GetPoolStats { reply } => {
                let stats = st.core.pool_stats();
                st.core.unservable = stats.unservable.iter().cloned().collect();
                let _ = reply.send(stats);
            }
            ControlPlaneMsg::EnsureJobActors => {
                let ids: Vec<JobId> = st
                    .core
                    .state
                    .jobs
                    .values()
                    .filter(|j| !j.state.is_terminal())
                    .map(|j| j.id)
                    .collect();
                for id in ids {
                    st.core.ensure_job_actor(id);
                }
                st.core.sched_dirty = true;
                st.core.ctx.dir.kick_autoscaler();
            }
            ControlPlaneMsg::EnsureWorkerActors => {
                let live: Vec<WorkerId> = st
                    .core
                    .state
                    .workers
                    .values()
                    .filter(|w| w.state.is_registered())
                    .map(|w| w.id.clone())
                    .collect();
                for id in live {
                    if st.core.ctx.dir.worker(&id).is_some() {
                        continue;
                    }
                    let agent = ractor::pg::get_members(&crate::wire::agent_group(&id))
                        .into_iter()
                        .find(|c| !c.get_id().is_local());
                    match (agent, st.core.ctx.dir.worker_supervisor()) {
                        (Some(cell), Some(sup)) => {
                            let _ = sup.cast(SupervisorMsg::StartChild(
                                worker_child(st.core.ctx.clone(), id, cell.into()),
                                None,
                            ));
                        }
                        _ => st.on_worker_gone(id, "worker lost: agent unreachable".into())?,
                    }
                }
            }
            ControlPlaneMsg::Durable(index) => st.on_durable(index),
            ControlPlaneMsg::JournalFailed(error) => {
                let msg = format!("journal write failed: {error}");
                st.fail_deferred(&msg);
                return Err(msg.into());
            }
            ControlPlaneMsg::Tick => st.on_tick()?,
            ControlPlaneMsg::Backup { reply } => {
                let backup = Store::encode_state(&st.core.state).map(|payload| BackupState {
                    payload,
                    index: st.core.last_index,
                    marks: st.core.marks(),
                    at_ms: st.core.ctx.now_ms(),
                    jobs: st.core.state.jobs.len() as u64,
                    workers: st.core.state.workers.len() as u64,
                });
                st.after_durable(move |_, d| {
                    let _ = reply.send(match (d, backup) {
                        (Err(e), _) => Err(ApiError::unavailable(e)),
                        (_, Err(e)) => Err(ApiError::internal(e.to_string())),
                        (Ok(()), Ok(b)) => Ok(b),
                    });
                });
            }
            ControlPlaneMsg::Shutdown { reply } => {
                st.core.stopping = true;
                let at_ms = st.core.ctx.now_ms();
                if let Err(CommandError::Fatal(e)) = st.command(Command::NodeStopping { at_ms }) {
                    return Err(e.into());
                }
                st.core.snapshot()?;
                st.after_durable(move |_, _| {
                    let _ = reply.send(());
                });
            }
        }
        Ok(())
    }

    /// Sends the entries journaled while handling one message to the writer, asking for a
    /// flush when a reply waits for durability.
    fn send_outbox(&mut self) -> Result<(), String> {
        let need_sync = self
            .deferred
            .back()
            .is_some_and(|(i, _)| *i > self.core.sync_requested);
        if !self.core.outbox.is_empty() {
            let entries = std::mem::take(&mut self.core.outbox);
            let marks = self.core.marks();
            self.core.writer.submit(WriterOp::Append {
                entries,
                sync: need_sync,
                marks,
            })?;
        } else if need_sync {
            self.core.writer.submit(WriterOp::Sync)?;
        }
        if need_sync {
            self.core.sync_requested = self.core.last_index;
        }
        Ok(())
    }
}

fn assignment_of(j: &JobRecord) -> Option<Assignment> {
    let a = j.live_attempt()?;
    Some(Assignment {
        attempt: AttemptRef {
            job: j.id,
            attempt: a.number,
            epoch: a.epoch,
        },
        name: j.spec.name.clone(),
        tenant: j.spec.tenant.clone(),
        argv: j.spec.command.to_argv(),
        env: j.spec.env.clone(),
        working_dir: j.spec.working_dir.clone(),
        timeout_ms: j.spec.timeout_ms,
        resources: j.spec.resources,
    })
}

enum CommandError {
    Rejected(Rejection),
    Fatal(String),
}

impl Core {
    /// Appends an already-applied command to the journal (sent to the writer at the end of
    /// the message being handled, see [`ControlPlaneState::send_outbox`]).
    fn journal(&mut self, command: Command) -> Result<u64, String> {
        self.last_index += 1;
        let index = self.last_index;
        self.outbox.push(JournalEntry { index, command });
        self.since_snapshot += 1;
        if self.since_snapshot >= self.ctx.config.store.snapshot_every_entries {
            self.snapshot()?;
        }
        Ok(index)
    }

    /// What the watermark records once everything journaled so far is durable.
    fn marks(&self) -> Marks {
        Marks {
            index: self.last_index,
            next_job_id: self.state.next_job_id,
            epoch: self.state.epoch.0,
            worker_seq_max: self.state.worker_seq.values().copied().max().unwrap_or(0),
        }
    }

    fn snapshot(&mut self) -> Result<(), String> {
        if !self.outbox.is_empty() {
            let marks = self.marks();
            self.writer.submit(WriterOp::Append {
                entries: std::mem::take(&mut self.outbox),
                sync: false,
                marks,
            })?;
        }
        let state = Store::encode_state(&self.state).map_err(|e| e.to_string())?;
        self.writer.submit(WriterOp::Snapshot {
            state,
            index: self.last_index,
            at_ms: self.ctx.now_ms(),
            marks: self.marks(),
        })?;
        self.sync_requested = self.last_index;
        self.since_snapshot = 0;
        Ok(())
    }

    /// Sends the scheduler a view when something changed and it is not busy with the previous
    /// one (coalescing every change made meanwhile into the next view).
    fn offer_view(&mut self) {
        if !self.sched_dirty || self.stopping {
            return;
        }
        if let Some(since) = self.sched_in_flight {
            if since.elapsed() < Duration::from_secs(SCHEDULER_ANSWER_SECS) {
                return;
            }
            warn!("the scheduler did not answer a view in time; sending a new one");
        }
        let Some(s) = self.ctx.dir.scheduler() else {
            return;
        };
        if std::mem::take(&mut self.unschedulable_reset) {
            for n in self.unschedulable.values_mut() {
                n.retry_at_ms = 0;
            }
        }
        self.sched_cycle += 1;
        let now_ms = self.ctx.now_ms();
        self.nominated.retain(|_, (_, until)| *until > now_ms);
        let with_nominated;
        let notes = if self.nominated.is_empty() {
            &self.unschedulable
        } else {
            let mut m = self.unschedulable.clone();
            for (id, (_, until)) in &self.nominated {
                let n = m.entry(*id).or_default();
                n.retry_at_ms = n.retry_at_ms.max(*until);
            }
            with_nominated = m;
            &with_nominated
        };
        let view = self.state.scheduling_view(
            now_ms,
            self.sched_cycle,
            self.ctx.config.scheduler.max_jobs_per_cycle,
            notes,
        );
        self.sched_dirty = false;
        if s.cast(SchedulerMsg::Plan(Box::new(view))).is_ok() {
            self.sched_in_flight = Some(tokio::time::Instant::now());
        }
    }

    fn view(&self, id: JobId) -> Option<JobView> {
        self.state
            .job(id)
            .map(|j| job_view(j, self.pending_reason(id).as_deref()))
    }

    /// Why a pending job waits: the last scheduling summary, and when no pool could ever run
    /// it, the autoscaler's reasons (it is not scaled for).
    fn pending_reason(&self, id: JobId) -> Option<String> {
        match (self.pending_reasons.get(&id), self.unservable.get(&id)) {
            (Some(r), Some(u)) => Some(format!("{r}; {u}")),
            (Some(r), None) => Some(r.clone()),
            (None, Some(u)) => Some(u.clone()),
            (None, None) => None,
        }
    }

    fn list(&self, f: &JobFilter) -> Vec<JobView> {
        let limit = match f.limit {
            0 => 100,
            n => n.min(LIST_LIMIT_MAX),
        } as usize;
        self.state
            .jobs
            .values()
            .rev()
            .filter(|j| f.state.is_none_or(|s| j.state == s))
            .filter(|j| f.tenant.as_ref().is_none_or(|t| &j.spec.tenant == t))
            .filter(|j| f.label.as_ref().is_none_or(|(k, v)| j.has_label(k, v)))
            .take(limit)
            .map(|j| job_view(j, self.pending_reason(j.id).as_deref()))
            .collect()
    }

    fn ensure_job_actor(&self, id: JobId) {
        if self.ctx.dir.job(&id).is_some() {
            return;
        }
        let Some(init) = self.state.job(id).and_then(JobInit::from_record) else {
            return;
        };
        if let Some(sup) = self.ctx.dir.job_supervisor() {
            let _ = sup.cast(SupervisorMsg::StartChild(
                job_child(self.ctx.clone(), id, init),
                None,
            ));
        }
    }

    fn pool_stats(&self) -> ScalingInput {
        let now = self.ctx.now_ms();
        let pending = self.state.pending_queued(now, DEMAND_JOBS_MAX);
        let demand = demand_by_pool(
            &pending,
            &self.ctx.config.pools,
            &self.ctx.config.scheduler.pipeline,
            now,
        );
        let mut pools = BTreeMap::new();
        for spec in &self.ctx.config.pools {
            let workers: Vec<ScalingWorker> = self
                .state
                .workers
                .values()
                .filter(|w| w.pool == spec.id && w.state != WorkerState::Terminated)
                .map(ScalingWorker::from_record)
                .collect();
            pools.insert(
                spec.id.clone(),
                ScalingPoolState {
                    workers,
                    demand: demand.per_pool.get(&spec.id).cloned().unwrap_or_default(),
                    providers: Vec::new(),
                },
            );
        }
        ScalingInput {
            pools,
            arrivals_total: self.state.next_seq,
            unservable: demand.unservable,
        }
    }

    /// Records that a cycle could not place (or held back) a pending job: its reason, and an
    /// exponential backoff before it is offered again (cut short when capacity changes).
    fn mark_unschedulable(&mut self, id: JobId, reason: String, now_ms: u64) {
        if self
            .state
            .job(id)
            .is_none_or(|j| j.state != JobState::Pending)
        {
            return;
        }
        let n = self.unschedulable.entry(id).or_default();
        n.failures = n.failures.saturating_add(1);
        n.retry_at_ms = now_ms.saturating_add(unschedulable_backoff_ms(n.failures));
        self.pending_reasons.insert(id, reason);
    }

    /// True when the worker's pool runs one job per worker.
    fn is_ephemeral(&self, worker: &WorkerId) -> bool {
        let Some(w) = self.state.worker(worker) else {
            return false;
        };
        self.ctx
            .config
            .pools
            .iter()
            .any(|p| p.id == w.pool && p.scaling.ephemeral)
    }

    /// The live attempt of a job, if any.
    fn live_attempt(&self, id: JobId) -> Option<(hodei_runtime::AttemptNo, hodei_runtime::Epoch)> {
        self.state
            .job(id)
            .and_then(|j| j.live_attempt())
            .map(|a| (a.number, a.epoch))
    }

    fn refresh_gauges(&mut self) {
        let m = &self.ctx.metrics;
        let counts = self.state.state_counts();
        for s in JobState::ALL {
            m.jobs
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(counts.get(&s).copied().unwrap_or(0) as i64);
        }
        let mut per: BTreeMap<(String, WorkerState), i64> = BTreeMap::new();
        for p in &self.ctx.config.pools {
            for s in WorkerState::ALL {
                per.insert((p.id.to_string(), s), 0);
            }
        }
        for w in self.state.workers.values() {
            *per.entry((w.pool.to_string(), w.state)).or_default() += 1;
        }
        for ((pool, state), n) in per {
            m.workers
                .get_or_create(&PoolStateLabel {
                    pool,
                    state: state.as_str().into(),
                })
                .set(n);
        }
        // Queue depth: every label seen before is reset so a drained queue reads 0 (the
        // default tenant's five priorities are always exported).
        let mut seen = std::mem::take(&mut self.gauge_labels);
        for p in Priority::ALL {
            seen.queue.insert(QueueLabel {
                priority: p.as_str().into(),
                tenant: TenantId::default().to_string(),
            });
        }
        for l in &seen.queue {
            m.queue_depth.get_or_create(l).set(0);
        }
        seen.queue.clear();
        for ((priority, tenant), n) in self.state.pending_counts() {
            let l = QueueLabel {
                priority: priority.as_str().into(),
                tenant: tenant.to_string(),
            };
            m.queue_depth.get_or_create(&l).set(n as i64);
            seen.queue.insert(l);
        }
        // Utilisation of registered workers; series of workers that are gone are removed.
        let mut live = BTreeSet::new();
        for w in self.state.workers.values() {
            if !w.state.is_registered() {
                continue;
            }
            let share = |used: u64, cap: u64| {
                if cap == 0 {
                    0.0
                } else {
                    used as f64 / cap as f64
                }
            };
            for (resource, v) in [
                ("cpu", share(w.allocated.cpu_millis, w.capacity.cpu_millis)),
                (
                    "memory",
                    share(w.allocated.memory_bytes, w.capacity.memory_bytes),
                ),
                ("slots", share(w.running.len() as u64, u64::from(w.slots))),
            ] {
                let l = WorkerResourceLabel {
                    pool: w.pool.to_string(),
                    worker: w.id.to_string(),
                    resource: resource.into(),
                };
                m.worker_utilisation.get_or_create(&l).set(v);
                live.insert(l);
            }
        }
        for l in seen.workers.difference(&live) {
            m.worker_utilisation.remove(l);
        }
        seen.workers = live;
        self.gauge_labels = seen;
    }
}

impl ControlPlaneState {
    /// Applies a command; on success journals it and carries out its effects.
    fn command(&mut self, cmd: Command) -> Result<(u64, Vec<Event>), CommandError> {
        let events = self
            .core
            .state
            .apply(&cmd)
            .map_err(CommandError::Rejected)?;
        let index = self.core.journal(cmd).map_err(CommandError::Fatal)?;
        self.effects(events.clone(), index);
        Ok((index, events))
    }

    /// Like [`Self::command`], for commands whose rejection only needs a debug log (stale
    /// reports, races with other changes).
    fn command_quiet(&mut self, cmd: Command) -> Result<(), ActorProcessingErr> {
        let kind = cmd.kind();
        match self.command(cmd) {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(r)) => {
                debug!(command = kind, reason = %r, "command not applied");
                Ok(())
            }
            Err(CommandError::Fatal(e)) => Err(e.into()),
        }
    }

    /// Runs `f` once everything journaled so far is durable.
    fn after_durable(&mut self, f: impl FnOnce(&mut Core, Result<(), &str>) + Send + 'static) {
        if self.core.durable_index >= self.core.last_index {
            f(&mut self.core, Ok(()));
        } else {
            self.deferred.push_back((self.core.last_index, Box::new(f)));
        }
    }

    fn on_durable(&mut self, index: u64) {
        self.core.durable_index = self.core.durable_index.max(index);
        while self
            .deferred
            .front()
            .is_some_and(|(i, _)| *i <= self.core.durable_index)
        {
            let (_, f) = self.deferred.pop_front().expect("checked");
            f(&mut self.core, Ok(()));
        }
    }

    fn fail_deferred(&mut self, msg: &str) {
        while let Some((_, f)) = self.deferred.pop_front() {
            f(&mut self.core, Err(msg));
        }
    }

    fn on_submit(
        &mut self,
        spec: JobSpec,
        reply: Reply<SubmitAck>,
    ) -> Result<(), ActorProcessingErr> {
        if self.core.stopping {
            let _ = reply.send(Err(ApiError::unavailable("the node is shutting down")));
            return Ok(());
        }
        if let Err(e) = spec.validate() {
            let _ = reply.send(Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                e.to_string(),
            )));
            return Ok(());
        }
        if let Some(k) = &spec.idempotency_key
            && let Some(id) = self.core.state.idempotent_job(&spec.tenant, k)
        {
            let same = self.core.state.job(id).is_some_and(|j| j.spec == spec);
            let r = if same {
                Ok(SubmitAck { id, existing: true })
            } else {
                Err(ApiError::new(
                    ApiErrorKind::Conflict,
                    format!(
                        "idempotency key {k:?} was already used by job {id} with a different spec"
                    ),
                ))
            };
            self.after_durable(move |_, d| {
                let _ = reply.send(d.map_err(ApiError::unavailable).and(r));
            });
            return Ok(());
        }
        if self.core.state.active_jobs() >= self.core.ctx.config.jobs.max_active {
            let _ = reply.send(Err(ApiError::unavailable(format!(
                "the node already holds {} unfinished jobs (jobs.max_active); try again later",
                self.core.ctx.config.jobs.max_active
            ))));
            return Ok(());
        }
        let id = JobId(self.core.state.next_job_id);
        let at_ms = self.core.ctx.now_ms();
        match self.command(Command::SubmitJob {
            id,
            spec: Box::new(spec),
            at_ms,
        }) {
            Ok(_) => {
                self.core.ctx.metrics.submissions.inc();
                debug!(job = %id, "job submitted");
                self.after_durable(move |_, d| {
                    let _ = reply.send(
                        d.map(|_| SubmitAck {
                            id,
                            existing: false,
                        })
                        .map_err(ApiError::unavailable),
                    );
                });
                Ok(())
            }
            Err(CommandError::Rejected(r)) => {
                let _ = reply.send(Err(ApiError::new(
                    ApiErrorKind::InvalidRequest,
                    r.to_string(),
                )));
                Ok(())
            }
            Err(CommandError::Fatal(e)) => {
                let _ = reply.send(Err(ApiError::unavailable(e.clone())));
                Err(e.into())
            }
        }
    }

    fn on_cancel(
        &mut self,
        id: JobId,
        reason: String,
        reply: Reply<JobView>,
    ) -> Result<(), ActorProcessingErr> {
        let at_ms = self.core.ctx.now_ms();
        self.command_then_answer(
            Command::CancelJob { id, reason, at_ms },
            reply,
            move |core| core.view(id).ok_or_else(|| ApiError::no_job(id)),
        )
    }

    fn on_taint_worker(
        &mut self,
        id: WorkerId,
        add: Vec<Taint>,
        remove: Vec<(String, Option<TaintEffect>)>,
        reply: Reply<WorkerView>,
    ) -> Result<(), ActorProcessingErr> {
        let at_ms = self.core.ctx.now_ms();
        let cmd = Command::TaintWorker {
            id: id.clone(),
            add,
            remove,
            at_ms,
        };
        self.command_then_answer(cmd, reply, move |core| {
            core.state.worker(&id).map(worker_view).ok_or_else(|| {
                ApiError::new(ApiErrorKind::NotFound, format!("no worker with id {id}"))
            })
        })
    }

    /// Applies a user's command and answers once it is durable, with `answer` read from the
    /// state then. Asking for what is already so (`NoOp`) is not an error; another rejection is
    /// the caller's error (unknown job or worker: not found; otherwise a conflict).
    fn command_then_answer<T: Send + 'static>(
        &mut self,
        cmd: Command,
        reply: Reply<T>,
        answer: impl FnOnce(&Core) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<(), ActorProcessingErr> {
        let err = match self.command(cmd) {
            Ok(_) | Err(CommandError::Rejected(Rejection::NoOp)) => None,
            Err(CommandError::Rejected(Rejection::UnknownJob(id))) => Some(ApiError::no_job(id)),
            Err(CommandError::Rejected(r @ Rejection::UnknownWorker(_))) => {
                Some(ApiError::new(ApiErrorKind::NotFound, r.to_string()))
            }
            Err(CommandError::Rejected(r)) => {
                Some(ApiError::new(ApiErrorKind::Conflict, r.to_string()))
            }
            Err(CommandError::Fatal(e)) => return Err(e.into()),
        };
        self.after_durable(move |core, d| {
            let r = match (err, d) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(ApiError::unavailable(e)),
                (None, Ok(())) => answer(core),
            };
            let _ = reply.send(r);
        });
        Ok(())
    }

    /// Applies a command the scheduler's outcome asked for, counting it in `counter` when it
    /// still held; a rejected one (the state moved on meanwhile) is only logged.
    fn command_counted(
        &mut self,
        cmd: Command,
        counter: &prometheus_client::metrics::counter::Counter,
    ) -> Result<bool, ActorProcessingErr> {
        let kind = cmd.kind();
        match self.command(cmd) {
            Ok(_) => {
                counter.inc();
                Ok(true)
            }
            Err(CommandError::Rejected(r)) => {
                debug!(command = kind, reason = %r, "not applied: the state moved on");
                Ok(false)
            }
            Err(CommandError::Fatal(e)) => Err(e.into()),
        }
    }

    /// Re-checks the scheduler's outcome against the current state and commits what still holds.
    fn on_apply_plan(&mut self, outcome: Outcome) -> Result<(), ActorProcessingErr> {
        let mut rejected = 0;
        let now_ms = self.core.ctx.now_ms();
        let metrics = self.core.ctx.metrics.clone();
        for e in outcome.explanations {
            self.core.explanations.insert(e.job, e);
        }
        let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
        for u in &outcome.unplaced {
            if waiting_for_a_slot(&u.summary) {
                // The cluster is simply full: the job waits its turn (no backoff, not a
                // failure); capacity freeing up triggers the next cycle anyway.
                if self.core.pending_reasons.get(&u.job) != Some(&u.summary) {
                    self.core.pending_reasons.insert(u.job, u.summary.clone());
                }
                continue;
            }
            let reason = u
                .summary
                .split_once(": ")
                .map(|(_, r)| r.split(", ").next().unwrap_or(r))
                .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' '))
                .unwrap_or("no worker");
            *failures.entry(reason).or_default() += 1;
            self.core
                .mark_unschedulable(u.job, u.summary.clone(), now_ms);
        }
        for (reason, n) in failures {
            metrics
                .scheduling_failures
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
        for h in outcome.held {
            metrics.quota_holds.inc();
            self.core.mark_unschedulable(h.job, h.reason, now_ms);
        }
        for x in outcome.expired {
            let cmd = Command::ExpireJob {
                id: x.job,
                reason: x.reason,
                at_ms: now_ms,
            };
            self.command_counted(cmd, &metrics.scheduling_deadline_failures)?;
        }
        for ev in outcome.evictions {
            let Some((attempt, epoch)) = self.core.live_attempt(ev.job) else {
                continue;
            };
            let reason = format!(
                "evicted by untolerated taint {}:{}",
                ev.taint.key_value(),
                ev.taint.effect.as_str()
            );
            let cmd = Command::EvictAttempt {
                id: ev.job,
                attempt,
                epoch,
                reason,
                at_ms: now_ms,
            };
            self.command_counted(cmd, &metrics.taint_evictions)?;
        }
        for p in outcome.preemptions {
            let priority = self
                .core
                .state
                .job(p.job)
                .map(|j| j.spec.priority.as_str())
                .unwrap_or("?");
            let reason = format!("by job {} ({priority}) on {}", p.job, p.worker);
            for victim in &p.victims {
                let Some((attempt, epoch)) = self.core.live_attempt(*victim) else {
                    continue;
                };
                let cmd = Command::EvictAttempt {
                    id: *victim,
                    attempt,
                    epoch,
                    reason: reason.clone(),
                    at_ms: now_ms,
                };
                if self.command_counted(cmd, &metrics.preemptions)? {
                    info!(job = %victim, preemptor = %p.job, worker = %p.worker, "preempting");
                }
            }
            self.core.pending_reasons.insert(
                p.job,
                format!(
                    "waiting for {} preempted job(s) to stop on {}",
                    p.victims.len(),
                    p.worker
                ),
            );
            // Nominated: not offered again (so no second set of victims is chosen while the
            // first one stops) until that worker frees capacity — the victims' exit — or the
            // stop grace has passed.
            let grace_ms = self.core.ctx.config.agents.stop_grace_ms;
            self.core.nominated.insert(
                p.job,
                (
                    p.worker.clone(),
                    now_ms.saturating_add(grace_ms).saturating_add(1_000),
                ),
            );
        }
        for p in outcome.placements {
            let at_ms = self.core.ctx.now_ms();
            let queued_since_ms = self
                .core
                .state
                .jobs
                .get(&p.job)
                .map(|j| j.queued_since_ms());
            let worker = p.worker.clone();
            match self.command(Command::AssignJob {
                id: p.job,
                attempt: p.attempt,
                epoch: p.epoch,
                worker: p.worker,
                at_ms,
            }) {
                Ok(_) => {
                    // An ephemeral worker runs one job: it takes no other from now on, and is
                    // retired once that job is done.
                    if self.core.is_ephemeral(&worker) {
                        self.command_quiet(Command::WorkerDraining {
                            id: worker,
                            reason: format!("ephemeral: runs job {} only", p.job),
                            at_ms,
                        })?;
                    }
                    self.core.pending_reasons.remove(&p.job);
                    self.core.unschedulable.remove(&p.job);
                    self.core.nominated.remove(&p.job);
                    if let Some(since) = queued_since_ms {
                        let wait_ms = at_ms.saturating_sub(since);
                        metrics.queue_wait_seconds.observe(wait_ms as f64 / 1000.0);
                    }
                }
                Err(CommandError::Rejected(r)) => {
                    debug!(job = %p.job, reason = %r, "placement not applied");
                    rejected += 1;
                }
                Err(CommandError::Fatal(e)) => return Err(e.into()),
            }
        }
        if rejected > 0 {
            self.core.sched_dirty = true;
        }
        Ok(())
    }

    fn on_register(
        &mut self,
        registration: WorkerRegistration,
        agent: ActorRef<AgentMsg>,
        reply: Reply<RegisterAccepted>,
    ) -> Result<(), ActorProcessingErr> {
        if !self
            .core
            .ctx
            .config
            .pools
            .iter()
            .any(|p| p.id == registration.pool)
        {
            let _ = reply.send(Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                format!("unknown pool {:?}", registration.pool.as_str()),
            )));
            return Ok(());
        }
        let at_ms = self.core.ctx.now_ms();
        let id = registration.id.clone();
        let agent_node = registration.agent_node.clone();
        match self.command(Command::WorkerRegistered {
            registration,
            at_ms,
        }) {
            Ok(_) => {
                if let Some(w) = self.core.state.worker(&id) {
                    self.core
                        .ctx
                        .metrics
                        .provisioning_seconds
                        .get_or_create(&crate::metrics::PoolLabel {
                            pool: w.pool.to_string(),
                        })
                        .observe(at_ms.saturating_sub(w.provisioned_at_ms) as f64 / 1000.0);
                }
            }
            Err(CommandError::Rejected(r)) => {
                let _ = reply.send(Err(ApiError::new(ApiErrorKind::Conflict, r.to_string())));
                return Ok(());
            }
            Err(CommandError::Fatal(e)) => return Err(e.into()),
        }
        self.core.ctx.dir.set_peer(agent_node, id.clone());
        if let Some(sup) = self.core.ctx.dir.worker_supervisor() {
            let _ = sup.cast(SupervisorMsg::StartChild(
                worker_child(self.core.ctx.clone(), id.clone(), agent),
                None,
            ));
        }
        let cfg = &self.core.ctx.config;
        let accepted = RegisterAccepted {
            node: cfg.node.name.to_string(),
            epoch: self.core.state.epoch,
            heartbeat_interval_ms: cfg.agents.heartbeat_interval_ms,
            lease_ms: cfg.agents.lease_ms,
            stop_grace_ms: cfg.agents.stop_grace_ms,
            log_cap_bytes: cfg.jobs.log_cap_bytes,
        };
        info!(worker = %id, "worker registered");
        self.after_durable(move |_, d| {
            let _ = reply.send(d.map(|_| accepted).map_err(ApiError::unavailable));
        });
        Ok(())
    }

    fn on_worker_gone(&mut self, id: WorkerId, reason: String) -> Result<(), ActorProcessingErr> {
        let Some(w) = self.core.state.worker(&id) else {
            return Ok(());
        };
        if w.state == WorkerState::Terminated {
            return Ok(());
        }
        let (reason, lost) = match (w.state, &w.reason) {
            _ if self.core.stopping => ("node shut down".to_string(), false),
            (WorkerState::Draining, Some(drain)) if w.running.is_empty() => {
                (format!("retired ({drain})"), false)
            }
            (WorkerState::Provisioning, _) => (reason, false),
            _ if reason.starts_with("worker lost") => (reason, true),
            _ => (format!("worker lost: {reason}"), true),
        };
        if let Some(agent_node) = &w.agent_node {
            self.core.ctx.dir.clear_peer(agent_node);
        }
        if lost {
            self.core.ctx.metrics.workers_lost.inc();
            warn!(worker = %id, %reason, "worker gone");
        } else {
            info!(worker = %id, %reason, "worker gone");
        }
        let at_ms = self.core.ctx.now_ms();
        if let Err(CommandError::Fatal(e)) =
            self.command(Command::WorkerTerminated { id, reason, at_ms })
        {
            return Err(e.into());
        }
        Ok(())
    }

    fn on_wait(&mut self, id: JobId, reply: Reply<JobView>) {
        let Some(j) = self.core.state.job(id) else {
            let _ = reply.send(Err(ApiError::no_job(id)));
            return;
        };
        if j.state.is_terminal() {
            self.after_durable(move |core, d| {
                let _ = reply.send(
                    d.map_err(ApiError::unavailable)
                        .and_then(|_| core.view(id).ok_or_else(|| ApiError::no_job(id))),
                );
            });
            return;
        }
        let list = self.core.waiters.entry(id).or_default();
        list.retain(|r| !r.is_closed());
        if list.len() >= WAITERS_PER_JOB_MAX || self.core.waiters_total >= WAITERS_MAX {
            // Too many waiters: answer with the current state; the client polls again.
            let _ = reply.send(self.core.view(id).ok_or_else(|| ApiError::no_job(id)));
            return;
        }
        list.push(reply);
        self.core.waiters_total += 1;
    }

    fn on_tick(&mut self) -> Result<(), ActorProcessingErr> {
        self.core.refresh_gauges();
        // Entries nobody waited for become durable within a tick.
        if self.core.last_index > self.core.sync_requested {
            self.core.writer.submit(WriterOp::Sync)?;
            self.core.sync_requested = self.core.last_index;
        }
        let now = self.core.ctx.now_ms();
        if now.saturating_sub(self.core.last_purge_ms) >= PURGE_EVERY_MS {
            self.core.last_purge_ms = now;
            let cfg = &self.core.ctx.config.jobs;
            let cmd = Command::Purge {
                before_ms: now.saturating_sub(cfg.retention_ms),
                keep_finished_max: cfg.max_finished,
                keep_terminated_workers_max: 1000,
            };
            if let Err(CommandError::Fatal(e)) = self.command(cmd) {
                return Err(e.into());
            }
        }
        // Pending jobs past their scheduling deadline fail, whether or not a cycle saw them.
        for (id, deadline_ms) in self.core.state.expired_pending(now) {
            let last = self
                .core
                .pending_reasons
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "not placed yet".into());
            let reason = format!(
                "scheduling deadline exceeded ({} after it was queued): {last}",
                hodei_runtime::control::fmt_ms(
                    deadline_ms.saturating_sub(
                        self.core
                            .state
                            .job(id)
                            .map_or(deadline_ms, |j| j.queued_since_ms())
                    )
                )
            );
            match self.command(Command::ExpireJob {
                id,
                reason,
                at_ms: now,
            }) {
                Ok(_) => {
                    self.core.ctx.metrics.scheduling_deadline_failures.inc();
                }
                Err(CommandError::Rejected(_)) => {}
                Err(CommandError::Fatal(e)) => return Err(e.into()),
            }
        }
        // Drop waiters whose clients gave up.
        let mut total = 0;
        self.core.waiters.retain(|_, l| {
            l.retain(|r| !r.is_closed());
            total += l.len();
            !l.is_empty()
        });
        self.core.waiters_total = total;
        Ok(())
    }

    /// Carries out what applying a command caused. `index` is the command's journal index.
    fn effects(&mut self, events: Vec<Event>, index: u64) {
        for ev in events {
            match ev {
                Event::JobQueued { id, .. } => {
                    self.core.ensure_job_actor(id);
                    self.core.sched_dirty = true;
                    self.core.ctx.dir.kick_autoscaler();
                }
                Event::JobAssigned {
                    id,
                    attempt,
                    epoch,
                    worker,
                } => {
                    self.core.ctx.metrics.attempts.inc();
                    debug!(job = %id, %worker, attempt = %attempt, "job assigned");
                    let assignment = self.core.state.job(id).and_then(assignment_of);
                    match (self.core.ctx.dir.worker(&worker), assignment) {
                        (Some(w), Some(a)) => {
                            let _ = w.cast(WorkerMsg::Dispatch(a));
                        }
                        _ => {
                            debug!(job = %id, %worker, "no worker actor to dispatch to yet; it sends pending assignments when it starts")
                        }
                    }
                    if let Some(j) = self.core.ctx.dir.job(&id) {
                        let _ = j.cast(JobMsg::Assigned {
                            attempt: AttemptRef {
                                job: id,
                                attempt,
                                epoch,
                            },
                            worker,
                        });
                    }
                }
                Event::JobStarted { id, attempt, at_ms } => {
                    if let Some(j) = self.core.ctx.dir.job(&id) {
                        let _ = j.cast(JobMsg::Started { attempt, at_ms });
                    }
                }
                Event::JobRequeued { id, reason, .. } => {
                    let attempt = self
                        .core
                        .state
                        .job(id)
                        .map(|j| j.attempts.len() as u32)
                        .unwrap_or(0);
                    let _ = self
                        .core
                        .ctx
                        .logs
                        .note(id, attempt, &format!("[hodei: {reason}]\n"));
                    if let Some(j) = self.core.ctx.dir.job(&id) {
                        let _ = j.cast(JobMsg::Requeued);
                    }
                    self.core.sched_dirty = true;
                    self.core.ctx.dir.kick_autoscaler();
                }
                Event::JobFinished { id, state } => {
                    self.core.pending_reasons.remove(&id);
                    self.core.unschedulable.remove(&id);
                    self.core.nominated.remove(&id);
                    self.core
                        .ctx
                        .metrics
                        .jobs_finished
                        .get_or_create(&StateLabel {
                            state: state.as_str().into(),
                        })
                        .inc();
                    if let Some(j) = self.core.ctx.dir.job(&id) {
                        let _ = j.cast(JobMsg::Finished);
                    }
                    let waiters = self.core.waiters.remove(&id).unwrap_or_default();
                    self.core.waiters_total = self.core.waiters_total.saturating_sub(waiters.len());
                    let release = move |core: &mut Core, d: Result<(), &str>| {
                        core.ctx.logs.close(id);
                        let view = core.view(id);
                        for w in waiters {
                            let _ = w.send(match (&d, &view) {
                                (Ok(()), Some(v)) => Ok(v.clone()),
                                (Err(e), _) => Err(ApiError::unavailable(e.to_string())),
                                (_, None) => Err(ApiError::no_job(id)),
                            });
                        }
                    };
                    if index == 0 || self.core.durable_index >= index {
                        release(&mut self.core, Ok(()));
                    } else {
                        self.deferred.push_back((index, Box::new(release)));
                    }
                }
                Event::StopAttempt {
                    id,
                    attempt,
                    epoch,
                    worker,
                    cause,
                } => {
                    if let Some(w) = self.core.ctx.dir.worker(&worker) {
                        let _ = w.cast(WorkerMsg::Stop(StopOrder {
                            attempt: AttemptRef {
                                job: id,
                                attempt,
                                epoch,
                            },
                            cause,
                            grace_ms: self.core.ctx.config.agents.stop_grace_ms,
                        }));
                    }
                }
                Event::WorkerChanged { id, state } => {
                    if let Some(pool) = self.core.state.worker(&id).map(|w| w.pool.clone())
                        && let Some(p) = self.core.ctx.dir.pool(&pool)
                    {
                        let _ = p.cast(PoolMsg::WorkerChanged {
                            id: id.clone(),
                            state,
                        });
                    }
                    if state == WorkerState::Terminated
                        && let Some(w) = self.core.ctx.dir.worker(&id)
                    {
                        let _ = w.cast(WorkerMsg::Terminated);
                    }
                    self.core.ctx.dir.kick_autoscaler();
                }
                Event::WorkerDrained { id } => {
                    if let Some(w) = self.core.ctx.dir.worker(&id) {
                        let _ = w.cast(WorkerMsg::Drained);
                    }
                }
                Event::CapacityFreed { worker } => {
                    self.core.nominated.retain(|_, (w, _)| *w != worker);
                    self.core.sched_dirty = true;
                    self.core.unschedulable_reset = !self.core.unschedulable.is_empty();
                }
                Event::JobsPurged { ids } => {
                    for id in ids {
                        self.core.pending_reasons.remove(&id);
                        self.core.explanations.remove(&id);
                        self.core.ctx.logs.delete(id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::waiting_for_a_slot;

    #[test]
    fn only_a_full_cluster_counts_as_waiting_for_a_slot() {
        assert!(waiting_for_a_slot("0/3 workers fit: 3 no free slot"));
        assert!(!waiting_for_a_slot(
            "0/3 workers fit: 2 no free slot, 1 insufficient cpu"
        ));
        assert!(!waiting_for_a_slot("0/12 workers fit: 2 no free slot"));
        assert!(!waiting_for_a_slot(
            "0/0 workers fit: no worker is registered"
        ));
    }
}
