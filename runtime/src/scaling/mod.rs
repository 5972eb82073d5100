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
mod tests {
    use super::*;
    use crate::ids::PoolId;
    use crate::resources::Resources;
    use crate::worker::{ProviderKind, WorkerTemplate};
    use proptest::prelude::*;

    fn spec(min: u32, max: u32, slots: u32) -> PoolSpec {
        PoolSpec {
            id: PoolId::new("p").unwrap(),
            provider: ProviderKind::Local,
            min_workers: min,
            max_workers: max,
            template: WorkerTemplate {
                capacity: Resources::ZERO,
                slots,
                labels: Default::default(),
                taints: Vec::new(),
            },
            idle_timeout_ms: 60_000,
            register_timeout_ms: 30_000,
        }
    }

    fn w(id: usize, state: WorkerState, free: u32, idle: Option<u64>) -> PoolWorker {
        PoolWorker {
            id: WorkerId::new(format!("p-{id}")).unwrap(),
            state,
            free_slots: free,
            idle_since_ms: idle,
        }
    }

    #[test]
    fn below_min_provisions_the_difference() {
        let d = decide(&spec(2, 5, 1), &PoolStats::default(), 0);
        assert_eq!(d.provision, 2);
    }

    #[test]
    fn demand_provisions_up_to_max() {
        let stats = PoolStats {
            workers: vec![w(1, WorkerState::Busy, 0, None)],
            pending_fitting: 40,
        };
        let d = decide(&spec(0, 4, 2), &stats, 0);
        assert_eq!(d.provision, 3);
    }

    #[test]
    fn provisioning_workers_count_as_incoming_slots() {
        let stats = PoolStats {
            workers: vec![w(1, WorkerState::Provisioning, 0, None)],
            pending_fitting: 2,
        };
        assert_eq!(decide(&spec(0, 4, 2), &stats, 0).provision, 0);
    }

    #[test]
    fn idle_workers_above_min_retire_after_the_idle_timeout() {
        let stats = PoolStats {
            workers: vec![
                w(1, WorkerState::Idle, 1, Some(0)),
                w(2, WorkerState::Idle, 1, Some(50_000)),
                w(3, WorkerState::Busy, 0, None),
            ],
            pending_fitting: 0,
        };
        let d = decide(&spec(1, 4, 1), &stats, 70_000);
        assert_eq!(d.retire, vec![WorkerId::new("p-1").unwrap()]);
        let d = decide(&spec(1, 4, 1), &stats, 200_000);
        assert_eq!(d.retire.len(), 2);
    }

    proptest! {
        #[test]
        fn decisions_stay_within_bounds_and_never_retire_busy_workers(
            min in 0u32..4, extra in 0u32..6, slots in 1u32..4,
            states in proptest::collection::vec((0usize..4, 0u64..200_000), 0..10),
            pending in 0u64..100, now in 0u64..400_000,
        ) {
            let sp = spec(min, min + extra, slots);
            let st = [WorkerState::Provisioning, WorkerState::Idle, WorkerState::Busy, WorkerState::Draining];
            let workers: Vec<PoolWorker> = states.iter().enumerate().map(|(i, (s, t))| {
                let state = st[*s];
                w(i, state, if state == WorkerState::Idle { slots } else { 0 }, (state == WorkerState::Idle).then_some(*t))
            }).collect();
            let live = workers.iter().filter(|w| !matches!(w.state, WorkerState::Draining)).count() as u32;
            let stats = PoolStats { workers: workers.clone(), pending_fitting: pending };
            let d = decide(&sp, &stats, now);
            if live <= sp.max_workers {
                prop_assert!(live + d.provision <= sp.max_workers.max(sp.min_workers));
            }
            prop_assert!(d.provision == 0 || d.retire.is_empty());
            prop_assert!(live - d.retire.len() as u32 >= sp.min_workers.min(live));
            for r in &d.retire {
                let w = workers.iter().find(|w| &w.id == r).unwrap();
                prop_assert_eq!(w.state, WorkerState::Idle);
            }
        }
    }
}
