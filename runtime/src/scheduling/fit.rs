//! "Could this job ever run on a worker like this one?" — the scheduler's own built-in filters
//! run against a single (possibly would-be) worker, outside a scheduling cycle.
//!
//! The autoscaler asks this of a pool's template worker (see `crate::scaling::would_be_worker`)
//! so that pool eligibility and placement share one matching logic. Job affinity and spread are
//! not checked: they depend on running jobs, and a fresh worker opens a fresh topology domain.

use super::ProfileConfig;
use super::pipeline::CycleState;
use super::plugins::{self, SchedulingContext};
use super::view::{ClusterView, QueuedJob, WorkerInfo};

/// The built-in filters `would_fit` runs, in pipeline order (every filter but `job_affinity`).
pub const WOULD_FIT_FILTERS: [&str; 6] = [
    "worker_state",
    "node_selector",
    "node_affinity",
    "taint_toleration",
    "slots",
    "resources",
];

/// Runs the built-in filters of `profile` (state, node selector, node affinity, taints, slots,
/// resources — not job affinity, and not the profile's disabled plugins) for `job` on `worker`
/// as it is now. `Err` lists every failing filter's reason, in pipeline order
/// (`["untolerated taint dedicated=gpu", "insufficient gpu"]`).
pub fn would_fit(
    job: &QueuedJob,
    worker: &WorkerInfo,
    profile: &ProfileConfig,
    now_ms: u64,
) -> Result<(), Vec<String>> {
    let view = ClusterView {
        now_ms,
        workers: vec![worker.clone()],
        ..ClusterView::default()
    };
    let state = CycleState::new(&view, super::ClusterIndex::one_cycle(), 1);
    let ctx = SchedulingContext {
        view: &view,
        profile_name: job
            .constraints
            .profile
            .as_deref()
            .unwrap_or(super::DEFAULT_PROFILE),
        profile,
        relaxed: false,
        state: &state,
    };
    let candidate = state.candidate(0);
    let reasons: Vec<String> = WOULD_FIT_FILTERS
        .iter()
        .filter(|name| !profile.disabled_plugins.iter().any(|d| d == *name))
        .filter_map(|name| plugins::builtin(name))
        .filter_map(|p| p.filter(&ctx, job, &candidate).err())
        .map(|r| r.into_owned())
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::ids::{AttemptNo, JobId, PoolId, TenantId, WorkerId};
    use crate::job::Priority;
    use crate::resources::Resources;
    use crate::scheduling::SchedulingConstraints;
    use crate::worker::WorkerState;

    fn worker() -> WorkerInfo {
        WorkerInfo {
            id: WorkerId::new("w").unwrap(),
            pool: PoolId::new("p").unwrap(),
            state: WorkerState::Idle,
            capacity: Resources {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                ..Resources::ZERO
            },
            allocated: Resources::ZERO,
            slots: 1,
            used_slots: 0,
            labels: BTreeMap::from([("arch".to_string(), "arm64".to_string())]),
            taints: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
        }
    }

    fn job(c: SchedulingConstraints, gpus: u32) -> QueuedJob {
        QueuedJob {
            id: JobId(7),
            seq: 7,
            priority: Priority::Medium,
            tenant: TenantId::default(),
            resources: Resources {
                cpu_millis: 1000,
                gpus,
                ..Resources::ZERO
            },
            labels: BTreeMap::new(),
            constraints: Arc::new(c),
            enqueued_at_ms: 0,
            time_limit_ms: None,
            next_attempt: AttemptNo(1),
            schedule_failures: 0,
            deadline_at_ms: None,
        }
    }

    #[test]
    fn every_failing_filter_is_named_in_pipeline_order() {
        let c = SchedulingConstraints {
            node_selector: BTreeMap::from([("arch".to_string(), "amd64".to_string())]),
            ..Default::default()
        };
        let err = would_fit(&job(c, 1), &worker(), &ProfileConfig::default(), 0).unwrap_err();
        assert_eq!(
            err,
            vec![
                "node selector mismatch",
                "untolerated taint dedicated=gpu",
                "insufficient gpu"
            ]
        );
    }

    #[test]
    fn a_tolerating_job_that_fits_passes() {
        let c = SchedulingConstraints {
            tolerations: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            would_fit(&job(c, 0), &worker(), &ProfileConfig::default(), 0),
            Ok(())
        );
    }

    #[test]
    fn disabled_filters_are_not_run() {
        let profile = ProfileConfig {
            disabled_plugins: vec!["taint_toleration".into()],
            ..Default::default()
        };
        assert_eq!(
            would_fit(
                &job(SchedulingConstraints::default(), 0),
                &worker(),
                &profile,
                0
            ),
            Ok(())
        );
    }
}
