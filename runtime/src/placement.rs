//! Placement: the pure function the scheduler actor calls once per cycle.
//!
//! Input: a [`SchedulingView`] (pending jobs in queue order, workers with free slots). Output: a
//! [`Plan`] of assignments plus, for each job that fits nowhere, a summary of why
//! ("0/3 workers fit: 2 insufficient cpu, 1 no free slot").
//!
//! This is the foundation's policy: jobs are taken in priority order (Critical first, FIFO within
//! a level); each goes to the feasible worker with the most free slots (least loaded), ties broken
//! by most free cpu, then by worker id, so the same view always gives the same plan. The plan is a
//! proposal: the control plane re-checks every assignment against current state before it commits
//! it. The scheduler issue replaces the body with the full filter/score pipeline behind this same
//! entry point.

use std::collections::BTreeMap;

use crate::control::{CandidateWorker, SchedulingView};
use crate::ids::{AttemptNo, Epoch, JobId, WorkerId};

/// One proposed placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The job.
    pub job: JobId,
    /// The attempt number it will run as.
    pub attempt: AttemptNo,
    /// The epoch of the view it was planned in.
    pub epoch: Epoch,
    /// The chosen worker.
    pub worker: WorkerId,
}

/// The result of one cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Placements, in queue order.
    pub placements: Vec<Placement>,
    /// Jobs that fit nowhere now, with the reason summary.
    pub unplaced: Vec<(JobId, String)>,
}

/// Plans one scheduling cycle. Pure and deterministic.
pub fn place(view: &SchedulingView) -> Plan {
    let mut workers: Vec<CandidateWorker> = view.workers.clone();
    let mut plan = Plan::default();
    let mut free_slots_total: u64 = workers.iter().map(|w| w.free_slots as u64).sum();
    for job in &view.jobs {
        if free_slots_total == 0 {
            // Every slot is taken: the rest of the queue simply waits its turn.
            break;
        }
        let mut best: Option<usize> = None;
        let mut reasons: BTreeMap<&'static str, u32> = BTreeMap::new();
        for (i, w) in workers.iter().enumerate() {
            if w.free_slots == 0 {
                *reasons.entry("no free slot").or_default() += 1;
                continue;
            }
            let short = job.resources.shortfalls(&w.free);
            if let Some(first) = short.first() {
                *reasons.entry(shortfall_reason(first)).or_default() += 1;
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) if better(w, &workers[b]) => Some(i),
                keep => keep,
            };
        }
        match best {
            Some(i) => {
                let w = &mut workers[i];
                w.free_slots -= 1;
                w.free = w.free.saturating_sub(&job.resources);
                free_slots_total -= 1;
                plan.placements.push(Placement {
                    job: job.id,
                    attempt: job.next_attempt,
                    epoch: view.epoch,
                    worker: w.id.clone(),
                });
            }
            None => plan
                .unplaced
                .push((job.id, summarize(view.workers.len(), &reasons))),
        }
    }
    plan
}

fn shortfall_reason(dim: &str) -> &'static str {
    match dim {
        "cpu" => "insufficient cpu",
        "memory" => "insufficient memory",
        "ephemeral-storage" => "insufficient ephemeral-storage",
        _ => "insufficient gpu",
    }
}

/// Least loaded first: more free slots (relative), then more free cpu, then lower id.
fn better(a: &CandidateWorker, b: &CandidateWorker) -> bool {
    let la = (a.free_slots as u64) * (b.slots.max(1) as u64);
    let lb = (b.free_slots as u64) * (a.slots.max(1) as u64);
    if la != lb {
        return la > lb;
    }
    if a.free.cpu_millis != b.free.cpu_millis {
        return a.free.cpu_millis > b.free.cpu_millis;
    }
    a.id < b.id
}

/// "0/12 workers fit: 5 insufficient cpu, 4 no free slot" (largest count first).
pub fn summarize(total: usize, reasons: &BTreeMap<&'static str, u32>) -> String {
    if total == 0 {
        return "0/0 workers fit: no worker is registered".into();
    }
    let mut r: Vec<(&&str, &u32)> = reasons.iter().collect();
    r.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = r.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("0/{total} workers fit: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PendingJob;
    use crate::ids::{PoolId, TenantId};
    use crate::job::Priority;
    use crate::resources::Resources;
    use proptest::prelude::*;

    fn worker(id: &str, cpu: u64, slots: u32, free_slots: u32) -> CandidateWorker {
        let cap = Resources {
            cpu_millis: cpu,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        CandidateWorker {
            id: WorkerId::new(id).unwrap(),
            pool: PoolId::new("p").unwrap(),
            capacity: cap,
            free: cap,
            slots,
            free_slots,
            labels: Default::default(),
        }
    }

    fn job(id: u64, cpu: u64, p: Priority) -> PendingJob {
        PendingJob {
            id: JobId(id),
            priority: p,
            seq: id,
            resources: Resources {
                cpu_millis: cpu,
                ..Resources::ZERO
            },
            tenant: TenantId::default(),
            next_attempt: AttemptNo(1),
        }
    }

    #[test]
    fn jobs_go_to_the_least_loaded_worker() {
        let view = SchedulingView {
            jobs: vec![job(1, 100, Priority::Medium), job(2, 100, Priority::Medium)],
            workers: vec![worker("a", 4000, 4, 1), worker("b", 4000, 4, 4)],
            ..Default::default()
        };
        let plan = place(&view);
        assert_eq!(plan.placements[0].worker.as_str(), "b");
        assert_eq!(plan.placements.len(), 2);
    }

    #[test]
    fn a_job_that_fits_nowhere_gets_a_reason_summary() {
        let view = SchedulingView {
            jobs: vec![job(1, 8000, Priority::High)],
            workers: vec![worker("a", 4000, 4, 4), worker("b", 2000, 1, 1)],
            ..Default::default()
        };
        let plan = place(&view);
        assert!(plan.placements.is_empty());
        assert_eq!(plan.unplaced[0].1, "0/2 workers fit: 2 insufficient cpu");
    }

    #[test]
    fn slots_bound_concurrency() {
        let view = SchedulingView {
            jobs: (1..=5).map(|i| job(i, 0, Priority::Medium)).collect(),
            workers: vec![worker("a", 4000, 2, 2)],
            ..Default::default()
        };
        let plan = place(&view);
        assert_eq!(plan.placements.len(), 2);
        assert!(
            plan.unplaced.is_empty(),
            "jobs behind a full cluster just wait"
        );
    }

    proptest! {
        #[test]
        fn a_plan_never_overcommits_a_worker(
            jobs in proptest::collection::vec((0u64..3000, 0usize..5), 0..60),
            workers in proptest::collection::vec((0u64..8000, 1u32..6), 0..6),
        ) {
            let view = SchedulingView {
                jobs: jobs.iter().enumerate().map(|(i, (cpu, p))| job(i as u64, *cpu, Priority::ALL[*p])).collect(),
                workers: workers.iter().enumerate().map(|(i, (cpu, s))| worker(&format!("w{i}"), *cpu, *s, *s)).collect(),
                ..Default::default()
            };
            let plan = place(&view);
            prop_assert!(plan.placements.len() + plan.unplaced.len() <= view.jobs.len());
            let free: u32 = view.workers.iter().map(|w| w.free_slots).sum();
            prop_assert!(plan.placements.len() + plan.unplaced.len() == view.jobs.len() || plan.placements.len() as u32 == free);
            for w in &view.workers {
                let mine: Vec<_> = plan.placements.iter().filter(|p| p.worker == w.id).collect();
                prop_assert!(mine.len() as u32 <= w.free_slots);
                let cpu: u64 = mine.iter().map(|p| view.jobs.iter().find(|j| j.id == p.job).unwrap().resources.cpu_millis).sum();
                prop_assert!(cpu <= w.free.cpu_millis);
            }
            // Deterministic.
            prop_assert_eq!(place(&view), plan);
        }
    }
}
