//! The control-plane state machine: every change is a [`Command`] applied by
//! [`ControlState::apply`], deterministically, in journal order.
//!
//! `apply` validates a command completely before it changes anything: it either returns the
//! [`Event`]s the command caused (and the caller journals the command) or a [`Rejection`] (and
//! nothing changed, nothing is journaled). Replaying the journal over a snapshot therefore
//! rebuilds exactly the state the node had. Time enters only through the `at_ms` of each command.
//!
//! The job and worker state machines are documented in [`crate::job`] and [`crate::worker`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{AttemptNo, Epoch, JobId, NodeId, PoolId, TenantId, WorkerId};
use crate::job::{
    Attempt, AttemptOutcome, ExitReport, JobRecord, JobSpec, JobState, Priority, StopCause,
};
use crate::resources::Resources;
use crate::scheduling::{ClusterView, QueuedJob, RunningJob, Taint, TaintEffect, WorkerInfo};
use crate::worker::{WorkerRecord, WorkerRegistration, WorkerState};

/// A control-plane change, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The node (re)started: the epoch advances; attempts and workers of the previous run are
    /// lost (they died with it).
    NodeStarted {
        /// The node's configured name.
        node: NodeId,
        /// When.
        at_ms: u64,
    },
    /// The node is shutting down gracefully: live attempts go back to Pending, uncharged.
    NodeStopping {
        /// When.
        at_ms: u64,
    },
    /// A job was submitted.
    SubmitJob {
        /// Its id (must be `next_job_id`).
        id: JobId,
        /// The validated spec (boxed: it is by far the largest command).
        spec: Box<JobSpec>,
        /// When.
        at_ms: u64,
    },
    /// A user asked to cancel a job.
    CancelJob {
        /// Which.
        id: JobId,
        /// Why (shown as the terminal reason).
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// The scheduler placed a job on a worker.
    AssignJob {
        /// Which job.
        id: JobId,
        /// Attempt number (must be the next one).
        attempt: AttemptNo,
        /// The assigning epoch (must be current).
        epoch: Epoch,
        /// Where.
        worker: WorkerId,
        /// When.
        at_ms: u64,
    },
    /// The agent started the attempt's process.
    AttemptStarted {
        /// Which job.
        id: JobId,
        /// Which attempt.
        attempt: AttemptNo,
        /// Its epoch.
        epoch: Epoch,
        /// When.
        at_ms: u64,
    },
    /// The attempt's process tree ended.
    AttemptFinished {
        /// Which job.
        id: JobId,
        /// Which attempt.
        attempt: AttemptNo,
        /// Its epoch.
        epoch: Epoch,
        /// What the agent reported.
        report: ExitReport,
        /// When.
        at_ms: u64,
    },
    /// The attempt was given up on without a report (e.g. its agent never confirmed a stop).
    AttemptLost {
        /// Which job.
        id: JobId,
        /// Which attempt.
        attempt: AttemptNo,
        /// Its epoch.
        epoch: Epoch,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// The scheduler evicts a live attempt (preemption by a higher-priority job, or a
    /// `NoExecute` taint it does not tolerate): the agent is told to stop it, and when it has
    /// stopped the job goes back to Pending without the attempt being charged.
    EvictAttempt {
        /// Which job.
        id: JobId,
        /// Which attempt.
        attempt: AttemptNo,
        /// Its epoch.
        epoch: Epoch,
        /// Why ("preempted by job 7 (critical)", "untolerated taint k=v:NoExecute").
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// A pending job could not be placed before its scheduling deadline: it fails.
    ExpireJob {
        /// Which job.
        id: JobId,
        /// Why (names the deadline and the last placement summary).
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// A provider was asked for a new worker.
    WorkerProvisioning {
        /// The new worker's id (see [`ControlState::next_worker_id`]).
        id: WorkerId,
        /// Its pool.
        pool: PoolId,
        /// When.
        at_ms: u64,
    },
    /// An agent registered.
    WorkerRegistered {
        /// What it declared.
        registration: WorkerRegistration,
        /// When.
        at_ms: u64,
    },
    /// Taints are put on or taken off a worker (`NoExecute` ones may evict running jobs).
    TaintWorker {
        /// Which.
        id: WorkerId,
        /// Taints to add (one with the same key and effect is replaced).
        add: Vec<Taint>,
        /// Taints to remove, by key (and effect, when given).
        remove: Vec<(String, Option<TaintEffect>)>,
        /// When.
        at_ms: u64,
    },
    /// A worker stops taking new work.
    WorkerDraining {
        /// Which.
        id: WorkerId,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// A worker is gone; its live attempts are lost.
    WorkerTerminated {
        /// Which.
        id: WorkerId,
        /// Why (e.g. "agent disconnected", "scaled down").
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// Acknowledged journal entries were found missing at start-up and the operator accepted
    /// the loss (`--accept-data-loss`): the journal continues after `recovered_index`, and job
    /// ids, the epoch and worker ids continue above what was handed out before the loss, so no
    /// id a client or a container may hold is given out again.
    DataLossAccepted {
        /// The highest index acknowledged before (0 when unknown).
        acked_index: u64,
        /// Where the surviving journal ended.
        recovered_index: u64,
        /// Job ids below this may have been handed out.
        next_job_id: u64,
        /// The epoch reached before the loss.
        epoch: u64,
        /// Worker sequence numbers up to this may have been handed out (in any pool).
        worker_seq_min: u64,
        /// The pools whose worker sequences are raised to `worker_seq_min`.
        pools: Vec<PoolId>,
        /// What was found.
        what: String,
        /// When.
        at_ms: u64,
    },
    /// Retention: forget finished jobs and terminated workers.
    Purge {
        /// Finished before this time.
        before_ms: u64,
        /// Keep at most this many finished jobs (oldest go first).
        keep_finished_max: u64,
        /// Keep at most this many terminated workers.
        keep_terminated_workers_max: u64,
    },
}

impl Command {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::NodeStarted { .. } => "node_started",
            Command::NodeStopping { .. } => "node_stopping",
            Command::SubmitJob { .. } => "submit_job",
            Command::CancelJob { .. } => "cancel_job",
            Command::AssignJob { .. } => "assign_job",
            Command::AttemptStarted { .. } => "attempt_started",
            Command::AttemptFinished { .. } => "attempt_finished",
            Command::AttemptLost { .. } => "attempt_lost",
            Command::EvictAttempt { .. } => "evict_attempt",
            Command::ExpireJob { .. } => "expire_job",
            Command::WorkerProvisioning { .. } => "worker_provisioning",
            Command::WorkerRegistered { .. } => "worker_registered",
            Command::TaintWorker { .. } => "taint_worker",
            Command::WorkerDraining { .. } => "worker_draining",
            Command::WorkerTerminated { .. } => "worker_terminated",
            Command::Purge { .. } => "purge",
            Command::DataLossAccepted { .. } => "data_loss_accepted",
        }
    }
}

/// What applying a command caused; the actor shell turns these into messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A job became schedulable (new, or requeued after its backoff).
    JobQueued {
        /// Which.
        id: JobId,
        /// Not before this time.
        not_before_ms: u64,
    },
    /// A job was placed: the worker must be told to run it.
    JobAssigned {
        /// Which.
        id: JobId,
        /// Attempt number.
        attempt: AttemptNo,
        /// Epoch.
        epoch: Epoch,
        /// Where.
        worker: WorkerId,
    },
    /// The agent started it.
    JobStarted {
        /// Which.
        id: JobId,
        /// Attempt.
        attempt: AttemptNo,
        /// When.
        at_ms: u64,
    },
    /// An attempt ended and the job went back to Pending (retry, loss, preemption).
    JobRequeued {
        /// Which.
        id: JobId,
        /// Retry not before.
        not_before_ms: u64,
        /// Why.
        reason: String,
    },
    /// The job reached a terminal state.
    JobFinished {
        /// Which.
        id: JobId,
        /// Which terminal state.
        state: JobState,
    },
    /// A live attempt must be stopped on its worker.
    StopAttempt {
        /// Which job.
        id: JobId,
        /// Attempt.
        attempt: AttemptNo,
        /// Epoch.
        epoch: Epoch,
        /// Where it runs.
        worker: WorkerId,
        /// Why.
        cause: StopCause,
    },
    /// A worker's state changed.
    WorkerChanged {
        /// Which.
        id: WorkerId,
        /// New state.
        state: WorkerState,
    },
    /// A worker has a free slot again (wake the scheduler).
    CapacityFreed {
        /// Which.
        worker: WorkerId,
    },
    /// A draining worker has no live attempts left: it can be shut down.
    WorkerDrained {
        /// Which.
        id: WorkerId,
    },
    /// Jobs were forgotten by retention.
    JobsPurged {
        /// Which.
        ids: Vec<JobId>,
    },
}

/// Why a command was not applied. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No such job.
    UnknownJob(JobId),
    /// No such worker.
    UnknownWorker(WorkerId),
    /// The command names an attempt or epoch that is not the live one: a stale report, ignored.
    Stale(String),
    /// The command does not apply in the current state (message says why).
    InvalidState(String),
    /// Nothing to do (e.g. cancelling a job already being cancelled).
    NoOp,
    /// An idempotency key that already names a job.
    Duplicate(JobId),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::UnknownJob(id) => write!(f, "no job with id {id}"),
            Rejection::UnknownWorker(id) => write!(f, "no worker with id {id}"),
            Rejection::Stale(s) => write!(f, "stale: {s}"),
            Rejection::InvalidState(s) => f.write_str(s),
            Rejection::NoOp => f.write_str("nothing to do"),
            Rejection::Duplicate(id) => write!(f, "idempotency key already used by job {id}"),
        }
    }
}

/// The whole control-plane state. Primary data is serialized into snapshots; the indices are
/// rebuilt after loading ([`ControlState::rebuild_indices`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlState {
    /// Fencing epoch (incremented by [`Command::NodeStarted`]).
    pub epoch: Epoch,
    /// Configured name of the node that runs this state.
    pub node: Option<NodeId>,
    /// Next job id to allocate.
    pub next_job_id: u64,
    /// Next submission sequence number.
    pub next_seq: u64,
    /// Per-pool counter for worker ids.
    pub worker_seq: BTreeMap<PoolId, u64>,
    /// All jobs not yet purged.
    pub jobs: BTreeMap<JobId, JobRecord>,
    /// All workers not yet purged.
    pub workers: BTreeMap<WorkerId, WorkerRecord>,
    /// Pending queue: (priority rank, seq) order.
    #[serde(skip)]
    pending: BTreeSet<(u8, u64, JobId)>,
    /// Pending jobs waiting out a retry backoff, by the end of the backoff (entries whose time
    /// has passed are harmless; they leave when the job leaves Pending).
    #[serde(skip)]
    backoff: BTreeSet<(u64, JobId)>,
    /// Finished jobs by finish time (retention order).
    #[serde(skip)]
    finished: BTreeSet<(u64, JobId)>,
    /// (tenant, idempotency key) → job.
    #[serde(skip)]
    idempotency: BTreeMap<(TenantId, String), JobId>,
    /// Jobs per state.
    #[serde(skip)]
    state_counts: BTreeMap<JobState, u64>,
}

/// Where an unplaceable pending job stands between scheduling attempts (kept by the caller,
/// not journaled: it is derived from scheduling cycles and rebuilt by the next ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unschedulable {
    /// Cycles in a row the job was found unplaceable.
    pub failures: u32,
    /// Not offered to the scheduler again before this time (unless capacity changes).
    pub retry_at_ms: u64,
}

/// What the control plane hands the scheduler for one cycle.
#[derive(Debug, Clone, Default)]
pub struct SchedulingView {
    /// The pipeline's input.
    pub cluster: ClusterView,
    /// Pending jobs in total (including those in backoff and outside the window).
    pub pending_total: usize,
    /// Earliest end of a retry or unschedulable backoff still in the future.
    pub next_wake_ms: Option<u64>,
}

type Applied = Result<Vec<Event>, Rejection>;

/// Pending jobs a scheduling view offers per free slot (see [`ControlState::scheduling_view`]).
pub const CANDIDATES_PER_FREE_SLOT: usize = 16;
/// Pending jobs a view offers when no slot is free (candidates for preemption).
pub const PREEMPTION_CANDIDATES: usize = 16;

impl ControlState {
    /// Rebuilds the derived indices from the primary data (after decoding a snapshot).
    pub fn rebuild_indices(&mut self) {
        self.pending.clear();
        self.backoff.clear();
        self.finished.clear();
        self.idempotency.clear();
        self.state_counts.clear();
        for (id, j) in &self.jobs {
            *self.state_counts.entry(j.state).or_default() += 1;
            if j.state == JobState::Pending {
                self.pending.insert((j.spec.priority.rank(), j.seq, *id));
                if j.not_before_ms > 0 {
                    self.backoff.insert((j.not_before_ms, *id));
                }
            }
            if j.state.is_terminal() {
                self.finished.insert((j.finished_at_ms.unwrap_or(0), *id));
            }
            if let Some(k) = &j.spec.idempotency_key {
                self.idempotency
                    .insert((j.spec.tenant.clone(), k.clone()), *id);
            }
        }
    }

    /// The job, if known.
    pub fn job(&self, id: JobId) -> Option<&JobRecord> {
        self.jobs.get(&id)
    }

    /// The worker, if known.
    pub fn worker(&self, id: &WorkerId) -> Option<&WorkerRecord> {
        self.workers.get(id)
    }

    /// The job already submitted with this idempotency key, if any.
    pub fn idempotent_job(&self, tenant: &TenantId, key: &str) -> Option<JobId> {
        self.idempotency
            .get(&(tenant.clone(), key.to_string()))
            .copied()
    }

    /// Number of jobs in each state.
    pub fn state_counts(&self) -> &BTreeMap<JobState, u64> {
        &self.state_counts
    }

    /// Pending jobs per (priority, tenant), for the queue-depth gauges.
    pub fn pending_counts(&self) -> BTreeMap<(Priority, TenantId), u64> {
        let mut out = BTreeMap::new();
        for (_, _, id) in &self.pending {
            if let Some(j) = self.jobs.get(id) {
                *out.entry((j.spec.priority, j.spec.tenant.clone()))
                    .or_default() += 1;
            }
        }
        out
    }

    /// Jobs not yet terminal.
    pub fn active_jobs(&self) -> u64 {
        self.state_counts
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| *n)
            .sum()
    }

    /// Pending jobs (including those in backoff).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Pending jobs in queue order.
    pub fn pending_in_order(&self) -> impl Iterator<Item = &JobRecord> {
        self.pending
            .iter()
            .filter_map(|(_, _, id)| self.jobs.get(id))
    }

    /// The id the next worker of `pool` will get: `<pool>-<n>`.
    pub fn next_worker_id(&self, pool: &PoolId) -> WorkerId {
        let n = self.worker_seq.get(pool).copied().unwrap_or(0) + 1;
        WorkerId::new(format!("{pool}-{n}"))
            .unwrap_or_else(|_| WorkerId::new(format!("w-{n}")).expect("valid fallback id"))
    }

    /// The input of one scheduling cycle: every registered worker, the running jobs, and a
    /// window of the schedulable pending jobs.
    ///
    /// The window holds at most `max_jobs` jobs and `CANDIDATES_PER_FREE_SLOT` per free slot
    /// (`PREEMPTION_CANDIDATES` when no slot is free), taken in (priority, submission) order
    /// with at most a quarter of the window (and at least 16) per tenant, so one tenant's
    /// backlog cannot hide the others' from a fair-share profile. Jobs in a retry backoff, or
    /// in an unschedulable backoff (`unschedulable`), are left out.
    pub fn scheduling_view(
        &self,
        now_ms: u64,
        cycle: u64,
        max_jobs: usize,
        unschedulable: &std::collections::HashMap<JobId, Unschedulable>,
    ) -> SchedulingView {
        let mut workers = Vec::with_capacity(self.workers.len());
        let mut running = Vec::new();
        let mut free_slots: usize = 0;
        for w in self.workers.values() {
            if !w.state.is_registered() {
                continue;
            }
            if w.state.accepts_work() {
                free_slots += w.free_slots() as usize;
            }
            workers.push(WorkerInfo {
                id: w.id.clone(),
                pool: w.pool.clone(),
                state: w.state,
                capacity: w.capacity,
                allocated: w.allocated,
                slots: w.slots,
                used_slots: w.running.len() as u32,
                labels: w.labels.clone(),
                taints: w.taints.clone(),
            });
            for (id, _) in &w.running {
                let Some(j) = self.jobs.get(id) else { continue };
                let Some(a) = j.live_attempt() else { continue };
                running.push(RunningJob {
                    id: *id,
                    worker: w.id.clone(),
                    priority: j.spec.priority,
                    tenant: j.spec.tenant.clone(),
                    resources: j.spec.resources,
                    labels: j.spec.labels.clone(),
                    started_at_ms: a.started_at_ms.unwrap_or(a.assigned_at_ms),
                    time_limit_ms: j.spec.timeout_ms,
                    tolerations: j.spec.scheduling.tolerations.clone(),
                });
            }
        }
        let window = if free_slots > 0 {
            max_jobs.min(free_slots.saturating_mul(CANDIDATES_PER_FREE_SLOT))
        } else {
            max_jobs.min(PREEMPTION_CANDIDATES)
        };
        // At most a quarter of the window per tenant in a first pass; what the cap skipped fills
        // the rest of the window afterwards (so a lone tenant still gets the whole window).
        let per_tenant_max = (window / 4).max(1);
        let mut per_tenant: BTreeMap<&TenantId, usize> = BTreeMap::new();
        let mut pending = Vec::with_capacity(window.min(self.pending.len()));
        let mut capped: Vec<(JobId, Unschedulable)> = Vec::new();
        let mut next_wake_ms: Option<u64> = None;
        if window > 0 {
            // Bounded scan: skipped jobs (backoff, tenant share) cost at most 8 windows.
            for (_, _, id) in self.pending.iter().take(window.saturating_mul(8)) {
                let Some(j) = self.jobs.get(id) else { continue };
                if j.not_before_ms > now_ms {
                    continue;
                }
                let note = unschedulable.get(id).copied().unwrap_or_default();
                if note.retry_at_ms > now_ms {
                    next_wake_ms =
                        Some(next_wake_ms.map_or(note.retry_at_ms, |t| t.min(note.retry_at_ms)));
                    continue;
                }
                let n = per_tenant.entry(&j.spec.tenant).or_default();
                if *n >= per_tenant_max {
                    if capped.len() < window {
                        capped.push((*id, note));
                    }
                    continue;
                }
                *n += 1;
                pending.push(self.queued_job(j, note));
                if pending.len() >= window {
                    break;
                }
            }
            for (id, note) in capped {
                if pending.len() >= window {
                    break;
                }
                if let Some(j) = self.jobs.get(&id) {
                    pending.push(self.queued_job(j, note));
                }
            }
        }
        let backoff_wake = self
            .backoff
            .range((now_ms + 1, JobId(0))..)
            .next()
            .map(|(t, _)| *t);
        let next_wake_ms = match (next_wake_ms, backoff_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        SchedulingView {
            cluster: ClusterView {
                now_ms,
                epoch: self.epoch,
                cycle,
                workers,
                pending,
                running,
                explain: true,
            },
            pending_total: self.pending.len(),
            next_wake_ms,
        }
    }

    /// Schedulable pending jobs (not in a retry backoff), in queue order, at most `max`: the
    /// autoscaler's demand.
    pub fn pending_queued(&self, now_ms: u64, max: usize) -> Vec<QueuedJob> {
        self.pending
            .iter()
            .filter_map(|(_, _, id)| self.jobs.get(id))
            .filter(|j| j.not_before_ms <= now_ms)
            .take(max)
            .map(|j| self.queued_job(j, Unschedulable::default()))
            .collect()
    }

    /// A pending job as the scheduling pipeline sees it.
    fn queued_job(&self, j: &JobRecord, note: Unschedulable) -> QueuedJob {
        let enqueued_at_ms = j.queued_since_ms();
        QueuedJob {
            id: j.id,
            seq: j.seq,
            priority: j.spec.priority,
            tenant: j.spec.tenant.clone(),
            resources: j.spec.resources,
            labels: j.spec.labels.clone(),
            constraints: std::sync::Arc::new(j.spec.scheduling.clone()),
            enqueued_at_ms,
            time_limit_ms: j.spec.timeout_ms,
            next_attempt: AttemptNo(j.attempts.len() as u32 + 1),
            schedule_failures: note.failures,
            deadline_at_ms: j
                .spec
                .scheduling
                .scheduling_deadline_ms
                .map(|d| enqueued_at_ms.saturating_add(d)),
        }
    }

    /// Pending jobs whose scheduling deadline has passed, with that deadline.
    pub fn expired_pending(&self, now_ms: u64) -> Vec<(JobId, u64)> {
        self.pending
            .iter()
            .filter_map(|(_, _, id)| {
                let j = self.jobs.get(id)?;
                let d = j.spec.scheduling.scheduling_deadline_ms?;
                let at = j.queued_since_ms().saturating_add(d);
                (at <= now_ms).then_some((*id, at))
            })
            .collect()
    }

    /// Applies one command. On `Err` nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::NodeStarted { node, at_ms } => Ok(self.on_node_started(node, *at_ms)),
            Command::NodeStopping { at_ms } => Ok(self.on_node_stopping(*at_ms)),
            Command::DataLossAccepted {
                next_job_id,
                epoch,
                worker_seq_min,
                pools,
                ..
            } => {
                self.next_job_id = self.next_job_id.max(*next_job_id);
                self.epoch = self.epoch.max(Epoch(*epoch));
                for pool in pools {
                    let seq = self.worker_seq.entry(pool.clone()).or_default();
                    *seq = (*seq).max(*worker_seq_min);
                }
                for seq in self.worker_seq.values_mut() {
                    *seq = (*seq).max(*worker_seq_min);
                }
                Ok(Vec::new())
            }
            Command::SubmitJob { id, spec, at_ms } => self.on_submit(*id, spec, *at_ms),
            Command::CancelJob { id, reason, at_ms } => self.on_cancel(*id, reason, *at_ms),
            Command::AssignJob {
                id,
                attempt,
                epoch,
                worker,
                at_ms,
            } => self.on_assign(*id, *attempt, *epoch, worker, *at_ms),
            Command::AttemptStarted {
                id,
                attempt,
                epoch,
                at_ms,
            } => self.on_started(*id, *attempt, *epoch, *at_ms),
            Command::AttemptFinished {
                id,
                attempt,
                epoch,
                report,
                at_ms,
            } => {
                self.check_live(*id, *attempt, *epoch)?;
                Ok(self.finish_attempt(*id, AttemptOutcome::Exited(report.clone()), *at_ms))
            }
            Command::AttemptLost {
                id,
                attempt,
                epoch,
                reason,
                at_ms,
            } => {
                self.check_live(*id, *attempt, *epoch)?;
                Ok(self.finish_attempt(
                    *id,
                    AttemptOutcome::Lost {
                        reason: reason.clone(),
                    },
                    *at_ms,
                ))
            }
            Command::EvictAttempt {
                id,
                attempt,
                epoch,
                reason,
                ..
            } => self.on_evict(*id, *attempt, *epoch, reason),
            Command::ExpireJob { id, reason, at_ms } => self.on_expire(*id, reason, *at_ms),
            Command::TaintWorker {
                id,
                add,
                remove,
                at_ms,
            } => self.on_taint_worker(id, add, remove, *at_ms),
            Command::WorkerProvisioning { id, pool, at_ms } => {
                self.on_worker_provisioning(id, pool, *at_ms)
            }
            Command::WorkerRegistered {
                registration,
                at_ms,
            } => self.on_worker_registered(registration, *at_ms),
            Command::WorkerDraining { id, reason, at_ms } => {
                self.on_worker_draining(id, reason, *at_ms)
            }
            Command::WorkerTerminated { id, reason, at_ms } => {
                self.on_worker_terminated(id, reason, *at_ms)
            }
            Command::Purge {
                before_ms,
                keep_finished_max,
                keep_terminated_workers_max,
            } => self.on_purge(*before_ms, *keep_finished_max, *keep_terminated_workers_max),
        }
    }

    fn count_state(&mut self, s: JobState, delta: i64) {
        let n = self.state_counts.entry(s).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.state_counts.remove(&s);
        }
    }

    fn set_job_state(&mut self, id: JobId, to: JobState) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let from = j.state;
        if from == to {
            return;
        }
        j.state = to;
        let key = (j.spec.priority.rank(), j.seq, id);
        let finished_at = j.finished_at_ms.unwrap_or(0);
        let not_before = j.not_before_ms;
        self.count_state(from, -1);
        self.count_state(to, 1);
        if from == JobState::Pending {
            self.pending.remove(&key);
            self.backoff.remove(&(not_before, id));
        }
        if to == JobState::Pending {
            self.pending.insert(key);
            if not_before > 0 {
                self.backoff.insert((not_before, id));
            }
        }
        if to.is_terminal() {
            self.finished.insert((finished_at, id));
        }
    }

    fn on_node_started(&mut self, node: &NodeId, at_ms: u64) -> Vec<Event> {
        self.epoch = Epoch(self.epoch.0 + 1);
        self.node = Some(node.clone());
        // Job ids start at 1.
        self.next_job_id = self.next_job_id.max(1);
        let mut events = Vec::new();
        let live: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Terminated)
            .map(|w| w.id.clone())
            .collect();
        for w in live {
            events.extend(self.terminate_worker(&w, "worker lost: node restarted", at_ms));
        }
        // Jobs queued before the restart are schedulable again.
        for (_, _, id) in &self.pending {
            if let Some(j) = self.jobs.get(id) {
                events.push(Event::JobQueued {
                    id: *id,
                    not_before_ms: j.not_before_ms,
                });
            }
        }
        events
    }

    fn on_node_stopping(&mut self, at_ms: u64) -> Vec<Event> {
        let live: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Scheduled | JobState::Running))
            .map(|j| j.id)
            .collect();
        let mut events = Vec::new();
        for id in live {
            events.extend(self.finish_attempt(
                id,
                AttemptOutcome::Requeued {
                    reason: "node shut down".into(),
                },
                at_ms,
            ));
        }
        events
    }

    fn on_submit(&mut self, id: JobId, spec: &JobSpec, at_ms: u64) -> Applied {
        if id.0 != self.next_job_id {
            return Err(Rejection::InvalidState(format!(
                "job id {id} is not the next id {}",
                self.next_job_id
            )));
        }
        spec.validate()
            .map_err(|e| Rejection::InvalidState(e.to_string()))?;
        if let Some(k) = &spec.idempotency_key {
            if let Some(existing) = self.idempotent_job(&spec.tenant, k) {
                return Err(Rejection::Duplicate(existing));
            }
            self.idempotency
                .insert((spec.tenant.clone(), k.clone()), id);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.next_job_id += 1;
        self.jobs.insert(
            id,
            JobRecord {
                id,
                spec: spec.clone(),
                state: JobState::Pending,
                seq,
                submitted_at_ms: at_ms,
                attempts: Vec::new(),
                charged_attempts: 0,
                not_before_ms: 0,
                reason: None,
                exit_code: None,
                signal: None,
                finished_at_ms: None,
                cancel_requested: None,
                evict_requested: None,
                preemptions: 0,
            },
        );
        self.count_state(JobState::Pending, 1);
        self.pending.insert((spec.priority.rank(), seq, id));
        Ok(vec![Event::JobQueued {
            id,
            not_before_ms: 0,
        }])
    }

    fn on_cancel(&mut self, id: JobId, reason: &str, at_ms: u64) -> Applied {
        let j = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        match j.state {
            s if s.is_terminal() => Err(Rejection::InvalidState(format!(
                "job {id} already finished ({s})"
            ))),
            JobState::Pending => {
                let j = self.jobs.get_mut(&id).expect("checked above");
                j.finished_at_ms = Some(at_ms);
                j.reason = Some(reason.to_string());
                self.set_job_state(id, JobState::Cancelled);
                Ok(vec![Event::JobFinished {
                    id,
                    state: JobState::Cancelled,
                }])
            }
            _ => {
                if j.cancel_requested.is_some() {
                    return Err(Rejection::NoOp);
                }
                let a = j.attempts.last().expect("a live job has an attempt");
                let ev = Event::StopAttempt {
                    id,
                    attempt: a.number,
                    epoch: a.epoch,
                    worker: a.worker.clone(),
                    cause: StopCause::Cancel,
                };
                self.jobs.get_mut(&id).expect("checked").cancel_requested =
                    Some(reason.to_string());
                Ok(vec![ev])
            }
        }
    }

    fn on_evict(&mut self, id: JobId, attempt: AttemptNo, epoch: Epoch, reason: &str) -> Applied {
        self.check_live(id, attempt, epoch)?;
        let j = self.jobs.get(&id).expect("checked");
        if j.cancel_requested.is_some() || j.evict_requested.is_some() {
            return Err(Rejection::NoOp);
        }
        let a = j.attempts.last().expect("a live job has an attempt");
        let ev = Event::StopAttempt {
            id,
            attempt,
            epoch,
            worker: a.worker.clone(),
            cause: StopCause::Preempted,
        };
        self.jobs.get_mut(&id).expect("checked").evict_requested = Some(reason.to_string());
        Ok(vec![ev])
    }

    fn on_expire(&mut self, id: JobId, reason: &str, at_ms: u64) -> Applied {
        let j = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        if j.state != JobState::Pending {
            return Err(Rejection::InvalidState(format!(
                "job {id} is {}, not pending",
                j.state
            )));
        }
        let j = self.jobs.get_mut(&id).expect("checked above");
        j.finished_at_ms = Some(at_ms);
        j.reason = Some(reason.to_string());
        self.set_job_state(id, JobState::Failed);
        Ok(vec![Event::JobFinished {
            id,
            state: JobState::Failed,
        }])
    }

    fn on_assign(
        &mut self,
        id: JobId,
        attempt: AttemptNo,
        epoch: Epoch,
        worker: &WorkerId,
        at_ms: u64,
    ) -> Applied {
        if epoch != self.epoch {
            return Err(Rejection::Stale(format!(
                "assignment for epoch {epoch}, current epoch is {}",
                self.epoch
            )));
        }
        let j = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        if j.state != JobState::Pending {
            return Err(Rejection::InvalidState(format!(
                "job {id} is {}, not pending",
                j.state
            )));
        }
        if j.not_before_ms > at_ms {
            return Err(Rejection::InvalidState(format!(
                "job {id} is in retry backoff until {}",
                j.not_before_ms
            )));
        }
        let expected = AttemptNo(j.attempts.len() as u32 + 1);
        if attempt != expected {
            return Err(Rejection::Stale(format!(
                "attempt {attempt} of job {id}, expected {expected}"
            )));
        }
        let req = j.spec.resources;
        let w = self
            .workers
            .get(worker)
            .ok_or_else(|| Rejection::UnknownWorker(worker.clone()))?;
        if !w.can_take(&req) {
            return Err(Rejection::InvalidState(format!(
                "worker {worker} cannot take job {id} ({}, {} free slots, free {})",
                w.state,
                w.free_slots(),
                w.free()
            )));
        }
        let w = self.workers.get_mut(worker).expect("checked");
        w.running.insert((id, attempt));
        w.allocated = w.allocated.saturating_add(&req);
        w.idle_since_ms = None;
        let mut events = Vec::new();
        if w.state == WorkerState::Idle {
            w.state = WorkerState::Busy;
            events.push(Event::WorkerChanged {
                id: worker.clone(),
                state: WorkerState::Busy,
            });
        }
        let j = self.jobs.get_mut(&id).expect("checked");
        j.attempts.push(Attempt {
            number: attempt,
            epoch,
            worker: worker.clone(),
            assigned_at_ms: at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            outcome: None,
        });
        j.reason = None;
        self.set_job_state(id, JobState::Scheduled);
        events.push(Event::JobAssigned {
            id,
            attempt,
            epoch,
            worker: worker.clone(),
        });
        Ok(events)
    }

    fn check_live(&self, id: JobId, attempt: AttemptNo, epoch: Epoch) -> Result<(), Rejection> {
        let j = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        match j.live_attempt() {
            Some(a) if a.number == attempt && a.epoch == epoch => Ok(()),
            Some(a) => Err(Rejection::Stale(format!(
                "report for attempt {attempt} (epoch {epoch}) of job {id}; the live attempt is {} (epoch {})",
                a.number, a.epoch
            ))),
            None => Err(Rejection::Stale(format!(
                "report for attempt {attempt} (epoch {epoch}) of job {id}, which has no live attempt ({})",
                j.state
            ))),
        }
    }

    fn on_started(&mut self, id: JobId, attempt: AttemptNo, epoch: Epoch, at_ms: u64) -> Applied {
        self.check_live(id, attempt, epoch)?;
        let j = self.jobs.get_mut(&id).expect("checked");
        if j.state != JobState::Scheduled {
            return Err(Rejection::NoOp);
        }
        if let Some(a) = j.attempts.last_mut() {
            a.started_at_ms = Some(at_ms);
        }
        self.set_job_state(id, JobState::Running);
        Ok(vec![Event::JobStarted { id, attempt, at_ms }])
    }

    /// Ends the live attempt of `id` with `outcome` and moves the job on: terminal, or back to
    /// Pending per its retry policy. The caller has checked that an attempt is live.
    fn finish_attempt(&mut self, id: JobId, outcome: AttemptOutcome, at_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(j) = self.jobs.get_mut(&id) else {
            return events;
        };
        let Some(a) = j.attempts.last_mut() else {
            return events;
        };
        a.finished_at_ms = Some(at_ms);
        let attempt_no = a.number;
        let worker_id = a.worker.clone();
        let req = j.spec.resources;

        // An attempt the scheduler evicted ends as preempted (uncharged) unless it managed to
        // succeed first or the user cancelled the job meanwhile.
        let evicted = j.evict_requested.take();
        let outcome = match (evicted, outcome) {
            (Some(reason), AttemptOutcome::Exited(r)) if !r.is_success() => {
                AttemptOutcome::Preempted { reason }
            }
            (Some(reason), AttemptOutcome::Lost { .. }) => AttemptOutcome::Preempted { reason },
            (_, o) => o,
        };
        a.outcome = Some(outcome.clone());
        // Decide the job's next state.
        let (next, reason) = match &outcome {
            _ if j.cancel_requested.is_some() => (
                JobState::Cancelled,
                j.cancel_requested.clone().unwrap_or_default(),
            ),
            AttemptOutcome::Exited(r) if r.stopped_by == Some(StopCause::Cancel) => {
                (JobState::Cancelled, "cancelled".to_string())
            }
            AttemptOutcome::Exited(r) if r.is_success() => {
                (JobState::Succeeded, "exit code 0".to_string())
            }
            AttemptOutcome::Exited(r) if r.stopped_by == Some(StopCause::Shutdown) => (
                JobState::Pending,
                format!("attempt {attempt_no} stopped: agent shut down"),
            ),
            AttemptOutcome::Preempted { reason } => {
                j.preemptions += 1;
                (
                    JobState::Pending,
                    format!("attempt {attempt_no} preempted: {reason}"),
                )
            }
            AttemptOutcome::Requeued { reason } => (
                JobState::Pending,
                format!("attempt {attempt_no} requeued: {reason}"),
            ),
            failure => {
                j.charged_attempts += 1;
                let what = match failure {
                    AttemptOutcome::Exited(r) if r.stopped_by == Some(StopCause::Timeout) => {
                        format!(
                            "exceeded its timeout of {}",
                            fmt_ms(j.spec.timeout_ms.unwrap_or(0))
                        )
                    }
                    AttemptOutcome::Exited(r) => r.describe(),
                    AttemptOutcome::Lost { reason } => reason.clone(),
                    _ => "ended".into(),
                };
                let timed_out = matches!(failure, AttemptOutcome::Exited(r) if r.stopped_by == Some(StopCause::Timeout));
                if j.charged_attempts <= j.spec.retry.max_retries {
                    let backoff = j.spec.retry.backoff_ms(j.charged_attempts);
                    j.not_before_ms = at_ms.saturating_add(backoff);
                    (
                        JobState::Pending,
                        format!(
                            "attempt {attempt_no} {what}; retry {}/{} in {}",
                            j.charged_attempts,
                            j.spec.retry.max_retries,
                            fmt_ms(backoff)
                        ),
                    )
                } else if timed_out {
                    (JobState::TimedOut, format!("attempt {attempt_no} {what}"))
                } else {
                    let prefix = if j.spec.retry.max_retries > 0 {
                        format!("attempt {attempt_no} (last) ")
                    } else {
                        String::new()
                    };
                    (JobState::Failed, format!("{prefix}{what}"))
                }
            }
        };
        if let AttemptOutcome::Exited(r) = &outcome {
            j.exit_code = r.exit_code;
            j.signal = r.signal;
        }
        j.reason = Some(reason.clone());
        if next.is_terminal() {
            j.finished_at_ms = Some(at_ms);
        }
        let not_before_ms = j.not_before_ms;
        self.set_job_state(id, next);
        if next.is_terminal() {
            events.push(Event::JobFinished { id, state: next });
        } else {
            events.push(Event::JobRequeued {
                id,
                not_before_ms,
                reason,
            });
        }

        // Free the worker's slot.
        if let Some(w) = self.workers.get_mut(&worker_id)
            && w.running.remove(&(id, attempt_no))
        {
            w.allocated = w.allocated.saturating_sub(&req);
            w.jobs_completed += 1;
            if w.running.is_empty() && w.state == WorkerState::Busy {
                w.state = WorkerState::Idle;
                w.idle_since_ms = Some(at_ms);
                events.push(Event::WorkerChanged {
                    id: worker_id.clone(),
                    state: WorkerState::Idle,
                });
            } else if w.running.is_empty() && w.state == WorkerState::Draining {
                w.idle_since_ms = Some(at_ms);
                events.push(Event::WorkerDrained {
                    id: worker_id.clone(),
                });
            }
            if w.state.accepts_work() {
                events.push(Event::CapacityFreed { worker: worker_id });
            }
        }
        events
    }

    fn on_worker_provisioning(&mut self, id: &WorkerId, pool: &PoolId, at_ms: u64) -> Applied {
        if self.workers.contains_key(id) {
            return Err(Rejection::InvalidState(format!(
                "worker {id} already exists"
            )));
        }
        let n = self.worker_seq.entry(pool.clone()).or_insert(0);
        *n += 1;
        self.workers.insert(
            id.clone(),
            WorkerRecord {
                id: id.clone(),
                pool: pool.clone(),
                state: WorkerState::Provisioning,
                capacity: Resources::ZERO,
                allocated: Resources::ZERO,
                slots: 0,
                labels: BTreeMap::new(),
                taints: Vec::new(),
                running: BTreeSet::new(),
                agent_node: None,
                hostname: None,
                pid: None,
                provisioned_at_ms: at_ms,
                registered_at_ms: None,
                idle_since_ms: None,
                terminated_at_ms: None,
                reason: None,
                jobs_completed: 0,
            },
        );
        Ok(vec![Event::WorkerChanged {
            id: id.clone(),
            state: WorkerState::Provisioning,
        }])
    }

    fn on_worker_registered(&mut self, r: &WorkerRegistration, at_ms: u64) -> Applied {
        if r.slots == 0 {
            return Err(Rejection::InvalidState(format!(
                "worker {} registered with 0 slots",
                r.id
            )));
        }
        match self.workers.get(&r.id).map(|w| w.state) {
            Some(WorkerState::Provisioning) | None => {}
            Some(WorkerState::Terminated) => {
                return Err(Rejection::InvalidState(format!(
                    "worker {} was terminated ({}); an agent must register under a new id",
                    r.id,
                    self.workers[&r.id].reason.clone().unwrap_or_default()
                )));
            }
            Some(s) => {
                return Err(Rejection::InvalidState(format!(
                    "worker {} is already registered ({s})",
                    r.id
                )));
            }
        }
        let w = self
            .workers
            .entry(r.id.clone())
            .or_insert_with(|| WorkerRecord {
                id: r.id.clone(),
                pool: r.pool.clone(),
                state: WorkerState::Provisioning,
                capacity: Resources::ZERO,
                allocated: Resources::ZERO,
                slots: 0,
                labels: BTreeMap::new(),
                taints: Vec::new(),
                running: BTreeSet::new(),
                agent_node: None,
                hostname: None,
                pid: None,
                provisioned_at_ms: at_ms,
                registered_at_ms: None,
                idle_since_ms: None,
                terminated_at_ms: None,
                reason: None,
                jobs_completed: 0,
            });
        w.pool = r.pool.clone();
        w.state = WorkerState::Idle;
        w.capacity = r.capacity;
        w.slots = r.slots;
        w.labels = r.labels.clone();
        // Every worker carries its pool as a label (`--selector hodei.io/pool=gpu`).
        w.labels.insert(
            crate::scaling::POOL_LABEL.to_string(),
            r.pool.as_str().to_string(),
        );
        w.taints = r
            .taints
            .iter()
            .map(|t| Taint {
                added_at_ms: at_ms,
                ..t.clone()
            })
            .collect();
        w.agent_node = Some(r.agent_node.clone());
        w.hostname = Some(r.hostname.clone());
        w.pid = Some(r.pid);
        w.registered_at_ms = Some(at_ms);
        w.idle_since_ms = Some(at_ms);
        Ok(vec![
            Event::WorkerChanged {
                id: r.id.clone(),
                state: WorkerState::Idle,
            },
            Event::CapacityFreed {
                worker: r.id.clone(),
            },
        ])
    }

    fn on_taint_worker(
        &mut self,
        id: &WorkerId,
        add: &[Taint],
        remove: &[(String, Option<TaintEffect>)],
        at_ms: u64,
    ) -> Applied {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| Rejection::UnknownWorker(id.clone()))?;
        if w.state == WorkerState::Terminated {
            return Err(Rejection::InvalidState(format!(
                "worker {id} is terminated"
            )));
        }
        let before = w.taints.clone();
        w.taints.retain(|t| {
            !remove
                .iter()
                .any(|(k, e)| *k == t.key && e.is_none_or(|e| e == t.effect))
        });
        for t in add {
            let mut t = t.clone();
            t.added_at_ms = at_ms;
            match w
                .taints
                .iter_mut()
                .find(|o| o.key == t.key && o.effect == t.effect)
            {
                // Same taint again: keep its original time (toleration seconds count from it).
                Some(o) if o.value == t.value => {}
                Some(o) => *o = t,
                None => w.taints.push(t),
            }
        }
        if w.taints == before {
            return Err(Rejection::NoOp);
        }
        // Fewer taints may let jobs in: wake the scheduler either way (NoExecute evicts).
        Ok(vec![Event::CapacityFreed { worker: id.clone() }])
    }

    fn on_worker_draining(&mut self, id: &WorkerId, reason: &str, _at_ms: u64) -> Applied {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| Rejection::UnknownWorker(id.clone()))?;
        if !w.state.accepts_work() {
            return Err(Rejection::InvalidState(format!(
                "worker {id} is {}, cannot drain",
                w.state
            )));
        }
        w.state = WorkerState::Draining;
        w.reason = Some(reason.to_string());
        let mut events = vec![Event::WorkerChanged {
            id: id.clone(),
            state: WorkerState::Draining,
        }];
        if w.running.is_empty() {
            events.push(Event::WorkerDrained { id: id.clone() });
        }
        Ok(events)
    }

    fn on_worker_terminated(&mut self, id: &WorkerId, reason: &str, at_ms: u64) -> Applied {
        let w = self
            .workers
            .get(id)
            .ok_or_else(|| Rejection::UnknownWorker(id.clone()))?;
        if w.state == WorkerState::Terminated {
            return Err(Rejection::NoOp);
        }
        Ok(self.terminate_worker(id, reason, at_ms))
    }

    fn terminate_worker(&mut self, id: &WorkerId, reason: &str, at_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let running: Vec<(JobId, AttemptNo)> = self
            .workers
            .get(id)
            .map(|w| w.running.iter().copied().collect())
            .unwrap_or_default();
        for (job, _) in running {
            let lost_reason = if reason.starts_with("worker lost") {
                reason.to_string()
            } else {
                format!("worker lost: {reason}")
            };
            events.extend(
                self.finish_attempt(
                    job,
                    AttemptOutcome::Lost {
                        reason: lost_reason,
                    },
                    at_ms,
                )
                .into_iter()
                .filter(|e| {
                    !matches!(e, Event::CapacityFreed { .. } | Event::WorkerChanged { .. })
                }),
            );
        }
        if let Some(w) = self.workers.get_mut(id) {
            w.state = WorkerState::Terminated;
            w.running.clear();
            w.allocated = Resources::ZERO;
            w.terminated_at_ms = Some(at_ms);
            w.idle_since_ms = None;
            w.reason = Some(reason.to_string());
        }
        events.push(Event::WorkerChanged {
            id: id.clone(),
            state: WorkerState::Terminated,
        });
        events
    }

    fn on_purge(&mut self, before_ms: u64, keep_max: u64, keep_workers_max: u64) -> Applied {
        let mut victims: Vec<(u64, JobId)> = self
            .finished
            .iter()
            .take_while(|(t, _)| *t < before_ms)
            .copied()
            .collect();
        let remaining = self.finished.len() as u64 - victims.len() as u64;
        if remaining > keep_max {
            let extra = (remaining - keep_max) as usize;
            victims.extend(
                self.finished
                    .iter()
                    .skip(victims.len())
                    .take(extra)
                    .copied(),
            );
        }
        let mut gone_workers: Vec<(u64, WorkerId)> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Terminated)
            .map(|w| (w.terminated_at_ms.unwrap_or(0), w.id.clone()))
            .collect();
        gone_workers.sort();
        let old_workers = gone_workers.iter().filter(|(t, _)| *t < before_ms).count();
        let over = gone_workers.len().saturating_sub(keep_workers_max as usize);
        let drop_workers = old_workers.max(over);
        if victims.is_empty() && drop_workers == 0 {
            return Err(Rejection::NoOp);
        }
        let mut ids = Vec::with_capacity(victims.len());
        for key in victims {
            self.finished.remove(&key);
            if let Some(j) = self.jobs.remove(&key.1) {
                self.count_state(j.state, -1);
                if let Some(k) = &j.spec.idempotency_key {
                    self.idempotency.remove(&(j.spec.tenant.clone(), k.clone()));
                }
                ids.push(key.1);
            }
        }
        for (_, w) in gone_workers.into_iter().take(drop_workers) {
            self.workers.remove(&w);
        }
        Ok(vec![Event::JobsPurged { ids }])
    }
}

/// `1500` → `1.5s`, `60000` → `1m`, `250` → `250ms`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests;
