//! The autoscaling decision: a pure function of a pool's state, its spec and the clock.
//!
//! This is the foundation's policy, behind the entry point the pools/autoscaler issue extends:
//! * below `min_workers` (counting workers still provisioning): provision the difference;
//! * pending jobs that fit the pool's template and exceed the free slots (including slots of
//!   workers still provisioning): provision enough workers for them, up to `max_workers`;
//! * no unmet demand and more than `min_workers`: retire workers idle for at least
//!   `idle_timeout_ms`, longest idle first, never a busy one, never below `min_workers`.

use crate::ids::WorkerId;
use crate::worker::{PoolSpec, WorkerState};

/// A worker of the pool as the autoscaler sees it.
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

/// The input of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// The pool's workers that are not terminated.
    pub workers: Vec<PoolWorker>,
    /// Schedulable pending jobs that a worker of this pool could run.
    pub pending_fitting: u64,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScalingDecision {
    /// Workers to start.
    pub provision: u32,
    /// Idle workers to retire.
    pub retire: Vec<WorkerId>,
    /// Why (for logs, metrics and `hodei pools`).
    pub reason: String,
}

/// Decides one step for one pool.
pub fn decide(spec: &PoolSpec, stats: &PoolStats, now_ms: u64) -> ScalingDecision {
    let live: Vec<&PoolWorker> = stats
        .workers
        .iter()
        .filter(|w| !matches!(w.state, WorkerState::Terminated | WorkerState::Draining))
        .collect();
    let live_n = live.len() as u32;
    let slots = spec.template.slots.max(1);
    let incoming_slots: u64 = live
        .iter()
        .map(|w| match w.state {
            WorkerState::Provisioning => slots as u64,
            _ => w.free_slots as u64,
        })
        .sum();
    if live_n < spec.min_workers {
        let n = spec.min_workers - live_n;
        return ScalingDecision {
            provision: n,
            retire: vec![],
            reason: format!("{live_n} workers, below min {}", spec.min_workers),
        };
    }
    if stats.pending_fitting > incoming_slots {
        let unmet = stats.pending_fitting - incoming_slots;
        let want = unmet.div_ceil(slots as u64).min(u32::MAX as u64) as u32;
        let room = spec.max_workers.saturating_sub(live_n);
        let n = want.min(room);
        if n > 0 {
            return ScalingDecision {
                provision: n,
                retire: vec![],
                reason: format!(
                    "{} pending jobs fit this pool, {incoming_slots} free or incoming slots",
                    stats.pending_fitting
                ),
            };
        }
        return ScalingDecision {
            reason: format!(
                "at max {} workers with {unmet} jobs waiting",
                spec.max_workers
            ),
            ..Default::default()
        };
    }
    if stats.pending_fitting == 0 && live_n > spec.min_workers {
        let mut idle: Vec<(u64, &WorkerId)> = live
            .iter()
            .filter(|w| w.state == WorkerState::Idle)
            .filter_map(|w| w.idle_since_ms.map(|t| (t, &w.id)))
            .filter(|(t, _)| now_ms.saturating_sub(*t) >= spec.idle_timeout_ms)
            .collect();
        idle.sort();
        let n = (live_n - spec.min_workers) as usize;
        let retire: Vec<WorkerId> = idle.into_iter().take(n).map(|(_, id)| id.clone()).collect();
        if !retire.is_empty() {
            return ScalingDecision {
                reason: format!(
                    "{} workers idle for {}+, above min {}",
                    retire.len(),
                    crate::control::fmt_ms(spec.idle_timeout_ms),
                    spec.min_workers
                ),
                provision: 0,
                retire,
            };
        }
    }
    ScalingDecision {
        reason: "steady".into(),
        ..Default::default()
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
