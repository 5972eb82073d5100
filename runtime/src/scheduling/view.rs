//! The immutable snapshot one scheduling cycle reads: workers, pending and running jobs, the clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::constraints::{SchedulingConstraints, Taint, Toleration};
use crate::ids::{AttemptNo, Epoch, JobId, PoolId, TenantId, WorkerId};
use crate::job::Priority;
use crate::resources::Resources;
use crate::worker::WorkerState;

/// Everything the pipeline needs for one cycle. Built by the caller; never mutated by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The clock (ms since the Unix epoch) the whole cycle uses.
    pub now_ms: u64,
    /// The fencing epoch stamped on placements.
    pub epoch: Epoch,
    /// A counter the caller increments every cycle (rotates round-robin and the scan start).
    pub cycle: u64,
    /// All registered workers (any state; the `worker_state` filter sorts them out).
    pub workers: Vec<WorkerInfo>,
    /// Jobs waiting for a worker (any order; the profile's queue strategy orders them).
    pub pending: Vec<QueuedJob>,
    /// Jobs running (or assigned) on workers.
    pub running: Vec<RunningJob>,
    /// Produce an [`super::Explanation`] per decided job (costs time; off for benchmarks).
    pub explain: bool,
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Id.
    pub id: WorkerId,
    /// Pool.
    pub pool: PoolId,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Total resources.
    pub capacity: Resources,
    /// Resources held by running jobs.
    pub allocated: Resources,
    /// Concurrent attempts it accepts.
    pub slots: u32,
    /// Slots in use.
    pub used_slots: u32,
    /// Labels (`zone`, `region`, `arch`, ...).
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
}

impl WorkerInfo {
    /// Capacity minus allocation.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }

    /// Slots not in use.
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.used_slots)
    }
}

/// A job waiting to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Id.
    pub id: JobId,
    /// Submission order (FIFO key).
    pub seq: u64,
    /// Priority.
    pub priority: Priority,
    /// Tenant (quotas and fair share).
    pub tenant: TenantId,
    /// Request.
    pub resources: Resources,
    /// The job's own labels (what other jobs' affinity terms select on).
    pub labels: BTreeMap<String, String>,
    /// Where it may run (shared: many jobs often carry the same constraints).
    pub constraints: Arc<SchedulingConstraints>,
    /// When it (last) entered the queue; aging counts from here.
    pub enqueued_at_ms: u64,
    /// The job's timeout: backfill uses `start + time_limit` as its expected end. `None` = runs
    /// forever as far as backfill is concerned.
    pub time_limit_ms: Option<u64>,
    /// The attempt number the placement will carry.
    pub next_attempt: AttemptNo,
    /// Cycles in a row this job was found unplaceable (relaxes soft constraints).
    pub schedule_failures: u32,
    /// Absolute scheduling deadline (`enqueued_at_ms + constraints.scheduling_deadline_ms`).
    pub deadline_at_ms: Option<u64>,
}

/// A job holding resources on a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    /// Id.
    pub id: JobId,
    /// Worker.
    pub worker: WorkerId,
    /// Priority (preemption never evicts an equal or higher one).
    pub priority: Priority,
    /// Tenant.
    pub tenant: TenantId,
    /// What it holds.
    pub resources: Resources,
    /// Its labels (for other jobs' affinity terms).
    pub labels: BTreeMap<String, String>,
    /// When it started.
    pub started_at_ms: u64,
    /// Its timeout (`None` = no expected end).
    pub time_limit_ms: Option<u64>,
    /// Its tolerations (NoExecute evictions).
    pub tolerations: Vec<Toleration>,
}

impl RunningJob {
    /// Expected end (`started + time limit`, never before `now`); `u64::MAX` = never.
    pub fn expected_end_ms(&self, now_ms: u64) -> u64 {
        match self.time_limit_ms {
            Some(t) => self.started_at_ms.saturating_add(t).max(now_ms),
            None => u64::MAX,
        }
    }
}
