//! NoExecute taints: which running jobs must leave their worker, and when.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::constraints::{Taint, TaintEffect};
use super::view::{ClusterView, RunningJob, WorkerInfo};
use crate::ids::{JobId, WorkerId};

/// A running job to evict because of a NoExecute taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    /// The job.
    pub job: JobId,
    /// Its worker.
    pub worker: WorkerId,
    /// The taint that evicts it.
    pub taint: Taint,
    /// When the eviction became due (the taint's time, plus the toleration seconds if any).
    pub at_ms: u64,
}

/// Evictions due now, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Evictions {
    /// Due at or before `now_ms`, in the view's running order.
    pub evictions: Vec<Eviction>,
    /// The earliest eviction still in the future.
    pub next_at_ms: Option<u64>,
}

/// When `job` must leave a worker with `taint` (NoExecute): `None` = never (tolerated without a
/// time limit). An untolerated taint evicts at once (`added_at_ms`); matching tolerations with
/// `toleration_seconds` keep the job for the smallest of them.
fn due_at(job: &RunningJob, taint: &Taint) -> Option<u64> {
    eviction_due_at(&job.tolerations, taint)
}

/// When a job with `tolerations` must leave a worker with the NoExecute `taint`: `None` =
/// never. The taint filter uses it too, so a job is not placed where it would be evicted at
/// once (no place → evict → place loop once a toleration's seconds have run out).
pub fn eviction_due_at(
    tolerations: &[super::constraints::Toleration],
    taint: &Taint,
) -> Option<u64> {
    let matching: Vec<_> = tolerations.iter().filter(|t| t.tolerates(taint)).collect();
    if matching.is_empty() {
        return Some(taint.added_at_ms);
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| taint.added_at_ms.saturating_add(s.saturating_mul(1000)))
}

/// Running jobs on workers with NoExecute taints they do not tolerate (now) or tolerate for a
/// limited time (once it is over). Pure: a function of the view and its clock.
pub fn evictions(view: &ClusterView) -> Evictions {
    let workers: HashMap<&WorkerId, &WorkerInfo> = view
        .workers
        .iter()
        .filter(|w| w.taints.iter().any(|t| t.effect == TaintEffect::NoExecute))
        .map(|w| (&w.id, w))
        .collect();
    let mut out = Evictions::default();
    if workers.is_empty() {
        return out;
    }
    for job in &view.running {
        let Some(w) = workers.get(&job.worker) else {
            continue;
        };
        let first = w
            .taints
            .iter()
            .filter(|t| t.effect == TaintEffect::NoExecute)
            .filter_map(|t| due_at(job, t).map(|at| (at, t)))
            .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
        let Some((at_ms, taint)) = first else {
            continue;
        };
        if at_ms <= view.now_ms {
            out.evictions.push(Eviction {
                job: job.id,
                worker: job.worker.clone(),
                taint: taint.clone(),
                at_ms,
            });
        } else {
            out.next_at_ms = Some(out.next_at_ms.map_or(at_ms, |n| n.min(at_ms)));
        }
    }
    out
}
