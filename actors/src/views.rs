//! Conversions from control-plane records to the views clients see.

use hodei_runtime::job::AttemptOutcome;
use hodei_runtime::{JobRecord, JobState, WorkerRecord};

use crate::wire::{AttemptView, JobView, WorkerView};

/// A job's view; `pending_reason` is the scheduler's latest "why not placed" for pending jobs.
pub fn job_view(r: &JobRecord, pending_reason: Option<&str>) -> JobView {
    let reason = match (r.state, pending_reason) {
        (JobState::Pending, Some(p)) => Some(match &r.reason {
            Some(retry) => format!("{retry}; {p}"),
            None => p.to_string(),
        }),
        _ => r.reason.clone(),
    };
    JobView {
        id: r.id,
        name: r.spec.name.clone(),
        state: r.state,
        exit_code: r.exit_code,
        signal: r.signal,
        attempts: r.attempts.len() as u32,
        reason,
        priority: r.spec.priority,
        tenant: r.spec.tenant.clone(),
        labels: r.spec.labels.clone(),
        worker: r.worker().map(|w| w.to_string()),
        submitted_at_ms: r.submitted_at_ms,
        started_at_ms: r.started_at_ms(),
        finished_at_ms: r.finished_at_ms,
        command: r.spec.command.to_string(),
        resources: r.spec.resources,
        timeout_ms: r.spec.timeout_ms,
        max_retries: r.spec.retry.max_retries,
        attempt_history: r
            .attempts
            .iter()
            .map(|a| AttemptView {
                number: a.number.0,
                epoch: a.epoch.0,
                worker: a.worker.to_string(),
                assigned_at_ms: a.assigned_at_ms,
                started_at_ms: a.started_at_ms,
                finished_at_ms: a.finished_at_ms,
                outcome: a.outcome.as_ref().map(|o| match o {
                    AttemptOutcome::Exited(e) => match e.stopped_by {
                        Some(c) => format!("stopped ({c:?}): {}", e.describe()),
                        None => e.describe(),
                    },
                    AttemptOutcome::Lost { reason } => reason.clone(),
                    AttemptOutcome::Preempted { reason } => format!("preempted: {reason}"),
                    AttemptOutcome::Requeued { reason } => format!("requeued: {reason}"),
                }),
            })
            .collect(),
    }
}

/// A worker's view.
pub fn worker_view(w: &WorkerRecord) -> WorkerView {
    WorkerView {
        id: w.id.clone(),
        pool: w.pool.to_string(),
        state: w.state,
        slots: w.slots,
        running: w.running.len() as u32,
        capacity: w.capacity,
        allocated: w.allocated,
        labels: w.labels.clone(),
        taints: w.taints.iter().map(ToString::to_string).collect(),
        hostname: w.hostname.clone(),
        pid: w.pid,
        provisioned_at_ms: w.provisioned_at_ms,
        registered_at_ms: w.registered_at_ms,
        terminated_at_ms: w.terminated_at_ms,
        jobs_completed: w.jobs_completed,
        reason: w.reason.clone(),
    }
}
