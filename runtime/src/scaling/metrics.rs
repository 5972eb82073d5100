//! Pure helpers for the autoscaler's metrics: idle worker time and cost accrued.

use super::decide::WorkerView;
use crate::worker::WorkerState;

/// Idle worker-milliseconds accrued between `from_ms` and `to_ms` by the workers idle at `to_ms`
/// (each counted from the later of `from_ms` and its `idle_since_ms`). Divide by 1000 for
/// worker-seconds.
pub fn idle_worker_ms(workers: &[WorkerView], from_ms: u64, to_ms: u64) -> u64 {
    workers
        .iter()
        .filter(|w| w.state == WorkerState::Idle && w.running_jobs == 0)
        .filter_map(|w| w.idle_since_ms)
        .map(|since| to_ms.saturating_sub(since.max(from_ms)))
        .sum()
}

/// Cost of `workers` workers at `cost_per_second` each over `dt_ms`.
pub fn cost_accrued(workers: u32, cost_per_second: f64, dt_ms: u64) -> f64 {
    workers as f64 * cost_per_second * dt_ms as f64 / 1000.0
}

/// Workers that cost money: every non-terminated one (provisioning and draining included).
pub fn billable_workers(workers: &[WorkerView]) -> u32 {
    workers
        .iter()
        .filter(|w| w.state != WorkerState::Terminated)
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkerId;

    fn w(state: WorkerState, idle_since_ms: Option<u64>) -> WorkerView {
        WorkerView {
            id: WorkerId::new("w").unwrap(),
            state,
            free_slots: 1,
            running_jobs: 0,
            idle_since_ms,
            jobs_completed: 0,
            provisioned_at_ms: None,
            registered_at_ms: None,
        }
    }

    #[test]
    fn idle_time_counts_from_the_later_of_the_window_start_and_idle_since() {
        let ws = [
            w(WorkerState::Idle, Some(0)),
            w(WorkerState::Idle, Some(8_000)),
            w(WorkerState::Busy, Some(0)),
        ];
        assert_eq!(idle_worker_ms(&ws, 5_000, 10_000), 5_000 + 2_000);
    }

    #[test]
    fn cost_is_workers_times_rate_times_seconds() {
        assert!((cost_accrued(3, 0.5, 2_000) - 3.0).abs() < 1e-9);
        let ws = [
            w(WorkerState::Provisioning, None),
            w(WorkerState::Terminated, None),
        ];
        assert_eq!(billable_workers(&ws), 1);
    }
}
