//! The autoscaling policy: pure functions of a pool's workers, its demand, its spec and policy,
//! the history and the clock, returning a decision the caller applies. No actors, no clocks.
//! See `README.md` beside this file for the steps, their order and the guarantees.
//!
//! * [`demand_by_pool`] splits pending jobs between pools with the scheduler's own filters
//!   ([`crate::scheduling::would_fit`] on [`would_be_worker`]) and names the unservable ones.
//! * [`decide_pool`] is the one entry point: one step for one pool.
//! * [`select_provider`], [`on_provision_success`], [`on_provision_failure`]: provider choice and
//!   health. [`ScalingHistory`] keeps cooldown stamps and the arrival forecast.
//! * [`decide`] is the foundation's entry point, kept as a thin wrapper over [`decide_pool`]
//!   until the autoscaler actor switches.

mod config;
mod decide;
mod demand;
mod history;
mod metrics;
mod provider;

pub use config::{
    DURATION_MS_MAX, PREDICTIVE_BUCKETS_MAX, PoolQuota, PredictiveConfig, ProviderStrategy,
    ScalingError, ScalingPolicy,
};
pub use decide::{
    DecisionKind, DecisionMetrics, PoolDecision, PoolState, StopCause, StopMode, WorkerStop,
    WorkerView, decide_pool,
};
pub use demand::{Demand, POOL_LABEL, PoolDemand, demand_by_pool, would_be_worker};
pub use history::{ArrivalHistory, ScalingHistory};
pub use metrics::{billable_workers, cost_accrued, idle_worker_ms};
pub use provider::{
    PROVIDER_BACKOFF_MS_MAX, PROVIDER_BACKOFF_MS_MIN, PROVIDER_EWMA_ALPHA, ProviderStatus,
    on_provision_failure, on_provision_success, provider_backoff_ms, select_provider,
};

use crate::ids::WorkerId;
use crate::worker::{PoolSpec, WorkerState};

/// A worker of the pool as the foundation's autoscaler sees it (compatibility; new code uses
/// [`WorkerView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWorker {
    /// Id.
    pub id: WorkerId,
    /// State.
    pub state: WorkerState,
    /// Free slots (registered workers).
    pub free_slots: u32,
    /// Idle since (Idle workers).
    pub idle_since_ms: Option<u64>,
}

/// The input of one compatibility decision (new code uses [`PoolState`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// The pool's workers that are not terminated.
    pub workers: Vec<PoolWorker>,
    /// Schedulable pending jobs that a worker of this pool could run.
    pub pending_fitting: u64,
}

/// What to do (compatibility; new code uses [`PoolDecision`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScalingDecision {
    /// Workers to start.
    pub provision: u32,
    /// Idle workers to retire.
    pub retire: Vec<WorkerId>,
    /// Why (for logs, metrics and `hodei pools`).
    pub reason: String,
}

/// The foundation's entry point: [`decide_pool`] with [`ScalingPolicy::from_spec`] (no
/// cooldowns, unbounded steps, no recycling), an empty history, `pending_fitting` as only-here
/// demand and the pool's own provider.
pub fn decide(spec: &PoolSpec, stats: &PoolStats, now_ms: u64) -> ScalingDecision {
    let state = PoolState {
        workers: stats
            .workers
            .iter()
            .map(|w| WorkerView {
                id: w.id.clone(),
                state: w.state,
                free_slots: w.free_slots,
                running_jobs: (w.state == WorkerState::Busy) as u32,
                idle_since_ms: w.idle_since_ms,
                jobs_completed: 0,
                provisioned_at_ms: None,
                registered_at_ms: None,
            })
            .collect(),
        demand: PoolDemand {
            only_here: stats.pending_fitting,
            could_run_here: stats.pending_fitting,
            ..PoolDemand::default()
        },
        providers: Vec::new(),
    };
    let policy = ScalingPolicy::from_spec(spec);
    let d = decide_pool(spec, &policy, &state, &ScalingHistory::default(), now_ms);
    ScalingDecision {
        provision: d.provision,
        retire: d.retire().cloned().collect(),
        reason: d.reason,
    }
}

#[cfg(test)]
mod tests;
