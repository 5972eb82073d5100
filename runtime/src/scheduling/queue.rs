//! Queue strategies: the order in which one profile's pending jobs are decided.
//!
//! * FIFO and FCFS: submission `seq` (FCFS adds head-of-line blocking, in the pipeline).
//! * Priority (and Backfill): effective rank, then `seq`. The effective rank is the priority's
//!   rank improved by one level per `aging_interval_ms` waited, so a Batch job is treated as
//!   Critical after 4 intervals and from then on only jobs submitted before it (smaller `seq`) are
//!   ahead of it: it starts within 4 × aging_interval plus the time those earlier jobs take.
//! * Fair: dominant-resource fairness between tenants — the next job comes from the tenant with
//!   the lowest dominant share ÷ weight (share = max over cpu, memory, gpu of its allocation ÷
//!   cluster capacity), re-evaluated after every placement; priority then FIFO within a tenant.

use std::collections::BTreeMap;

use super::pipeline::CycleState;
use super::view::{ClusterView, QueuedJob};
use super::{ProfileConfig, QueueStrategy};
use crate::ids::TenantId;
use crate::job::Priority;

/// The rank a job is ordered by: `priority.rank()` (0 = Critical … 4 = Batch) minus one per
/// `aging_interval_ms` waited since `enqueued_at_ms`, never below 0. `aging_interval_ms == 0`
/// disables aging.
pub fn effective_rank(
    priority: Priority,
    enqueued_at_ms: u64,
    now_ms: u64,
    aging_interval_ms: u64,
) -> u8 {
    let rank = priority.rank();
    if aging_interval_ms == 0 {
        return rank;
    }
    let levels = now_ms.saturating_sub(enqueued_at_ms) / aging_interval_ms;
    rank.saturating_sub(levels.min(u8::MAX as u64) as u8)
}

fn priority_key(job: &QueuedJob, now_ms: u64, aging_ms: u64) -> (u8, u64, u64) {
    (
        effective_rank(job.priority, job.enqueued_at_ms, now_ms, aging_ms),
        job.seq,
        job.id.0,
    )
}

pub(crate) struct TenantQueue<'v> {
    tenant: &'v TenantId,
    weight: f64,
    jobs: Vec<usize>,
    pos: usize,
}

/// One profile's queue for one cycle; yields indices into `view.pending`.
pub(crate) enum ProfileQueue<'v> {
    Ordered { jobs: Vec<usize>, pos: usize },
    Fair { tenants: Vec<TenantQueue<'v>> },
}

impl<'v> ProfileQueue<'v> {
    pub(crate) fn build(
        profile: &ProfileConfig,
        mut jobs: Vec<usize>,
        view: &'v ClusterView,
    ) -> Self {
        let p = &view.pending;
        let now = view.now_ms;
        let aging = profile.aging_interval_ms;
        match profile.queue {
            QueueStrategy::Fifo | QueueStrategy::Fcfs => {
                jobs.sort_by_key(|&i| (p[i].seq, p[i].id.0));
                ProfileQueue::Ordered { jobs, pos: 0 }
            }
            QueueStrategy::Priority | QueueStrategy::Backfill => {
                jobs.sort_by_cached_key(|&i| priority_key(&p[i], now, aging));
                ProfileQueue::Ordered { jobs, pos: 0 }
            }
            QueueStrategy::Fair => {
                let mut by_tenant: BTreeMap<&'v TenantId, Vec<usize>> = BTreeMap::new();
                for i in jobs {
                    by_tenant.entry(&p[i].tenant).or_default().push(i);
                }
                let tenants = by_tenant
                    .into_iter()
                    .map(|(tenant, mut jobs)| {
                        jobs.sort_by_cached_key(|&i| priority_key(&p[i], now, aging));
                        TenantQueue {
                            tenant,
                            weight: profile
                                .tenant_weights
                                .get(tenant)
                                .copied()
                                .unwrap_or(1)
                                .max(1) as f64,
                            jobs,
                            pos: 0,
                        }
                    })
                    .collect();
                ProfileQueue::Fair { tenants }
            }
        }
    }

    pub(crate) fn next(&mut self, state: &CycleState<'v>) -> Option<usize> {
        match self {
            ProfileQueue::Ordered { jobs, pos } => {
                let j = jobs.get(*pos).copied();
                *pos += 1;
                j
            }
            ProfileQueue::Fair { tenants } => {
                let mut best: Option<(f64, usize)> = None;
                for (k, t) in tenants.iter().enumerate() {
                    if t.pos >= t.jobs.len() {
                        continue;
                    }
                    let share = state.dominant_share(t.tenant) / t.weight;
                    // Tenants are in id order: strict `<` keeps the lower id on ties.
                    if best.is_none_or(|(b, _)| share < b) {
                        best = Some((share, k));
                    }
                }
                let (_, k) = best?;
                let t = &mut tenants[k];
                t.pos += 1;
                Some(t.jobs[t.pos - 1])
            }
        }
    }
}
