//! Tests of `decide_pool`, `demand_by_pool` and the policy config: unit tests per branch,
//! properties, and capabilities driven by a small pool simulator on a test clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::ids::WorkerId;
use crate::ids::{AttemptNo, JobId, PoolId, TenantId};
use crate::job::Priority;
use crate::resources::Resources;
use crate::scheduling::{QueuedJob, SchedulerConfig, SchedulingConstraints};
use crate::worker::{PoolSpec, ProviderKind, WorkerState, WorkerTemplate};

const S: u64 = 1_000;
const MIN: u64 = 60 * S;
const GIB: u64 = 1 << 30;

fn spec(name: &str, slots: u32) -> PoolSpec {
    PoolSpec {
        id: PoolId::new(name).unwrap(),
        provider: ProviderKind::Local,
        min_workers: 0,
        max_workers: 10,
        template: WorkerTemplate {
            capacity: Resources {
                cpu_millis: 2_000,
                memory_bytes: 4 * GIB,
                ..Resources::ZERO
            },
            slots,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            env: BTreeMap::new(),
            command: Vec::new(),
            image: None,
        },
        idle_timeout_ms: MIN,
        register_timeout_ms: 30 * S,
        scaling: ScalingPolicy::default(),
        providers: vec!["local".into()],
    }
}

fn policy(min: u32, max: u32) -> ScalingPolicy {
    ScalingPolicy {
        min_workers: min,
        max_workers: max,
        scale_up_cooldown_ms: 0,
        scale_down_cooldown_ms: 0,
        ..ScalingPolicy::default()
    }
}

fn wv(id: &str, state: WorkerState, free_slots: u32) -> WorkerView {
    WorkerView {
        id: WorkerId::new(id).unwrap(),
        state,
        free_slots,
        running_jobs: if state == WorkerState::Busy { 1 } else { 0 },
        idle_since_ms: (state == WorkerState::Idle).then_some(0),
        jobs_completed: 0,
        provisioned_at_ms: Some(0),
        registered_at_ms: Some(0),
    }
}

fn idle(id: &str, since: u64) -> WorkerView {
    WorkerView {
        idle_since_ms: Some(since),
        ..wv(id, WorkerState::Idle, 1)
    }
}

fn busy(id: &str) -> WorkerView {
    wv(id, WorkerState::Busy, 0)
}

fn demand(jobs: u64) -> PoolDemand {
    PoolDemand {
        only_here: jobs,
        could_run_here: jobs,
        ..PoolDemand::default()
    }
}

fn state(workers: Vec<WorkerView>, jobs: u64) -> PoolState {
    PoolState {
        workers,
        demand: demand(jobs),
        providers: Vec::new(),
    }
}

fn run(p: &ScalingPolicy, st: &PoolState, now: u64) -> PoolDecision {
    decide_pool(&spec("p", 1), p, st, &ScalingHistory::default(), now)
}

fn ids<'a>(it: impl Iterator<Item = &'a WorkerId>) -> Vec<&'a str> {
    it.map(|w| w.as_str()).collect()
}

// ---- scale up ----

#[test]
fn below_min_provisions_the_difference_even_during_the_cooldown() {
    let p = ScalingPolicy {
        scale_up_cooldown_ms: MIN,
        ..policy(3, 5)
    };
    let h = ScalingHistory {
        last_scale_up_at_ms: Some(100 * S),
        ..Default::default()
    };
    let d = decide_pool(&spec("p", 1), &p, &state(vec![busy("a")], 0), &h, 110 * S);
    assert_eq!((d.kind.clone(), d.provision), (DecisionKind::ScaleUp, 2));
    assert!(d.reason.contains("below min 3"), "{}", d.reason);
}

#[test]
fn queued_jobs_provision_one_worker_per_slots_jobs_up_to_max() {
    let d = decide_pool(
        &spec("p", 2),
        &policy(0, 4),
        &state(vec![busy("a")], 40),
        &ScalingHistory::default(),
        0,
    );
    assert_eq!(d.provision, 3);
    assert!(d.reason.contains("capped at max 4 workers"), "{}", d.reason);
}

#[test]
fn provisioning_workers_count_as_incoming_slots() {
    let st = state(vec![wv("a", WorkerState::Provisioning, 0)], 2);
    let d = decide_pool(
        &spec("p", 2),
        &policy(0, 4),
        &st,
        &ScalingHistory::default(),
        0,
    );
    assert_eq!((d.provision, d.kind), (0, DecisionKind::Steady));
}

#[test]
fn the_queue_threshold_ignores_a_short_queue() {
    let p = ScalingPolicy {
        scale_up_queue_min: 3,
        ..policy(0, 4)
    };
    assert_eq!(run(&p, &state(vec![], 2), 0).provision, 0);
    assert_eq!(run(&p, &state(vec![], 3), 0).provision, 3);
}

#[test]
fn at_max_with_jobs_waiting_is_blocked_and_says_so() {
    let d = run(&policy(0, 2), &state(vec![busy("a"), busy("b")], 5), 0);
    assert_eq!(
        d.kind,
        DecisionKind::Blocked {
            why: "at max 2 workers with 5 jobs waiting".into()
        }
    );
}

#[test]
fn a_long_p90_wait_adds_a_worker_even_with_free_slots() {
    let p = ScalingPolicy {
        scale_up_p90_wait_ms: Some(30 * S),
        ..policy(0, 4)
    };
    let mut st = state(vec![idle("a", 0)], 1);
    st.demand.p90_wait_ms = 45 * S;
    let d = run(&p, &st, MIN);
    assert_eq!(d.provision, 1);
    assert!(d.reason.contains("p90 45s"), "{}", d.reason);
    st.demand.p90_wait_ms = 10 * S;
    assert_eq!(run(&p, &st, MIN).provision, 0);
}

#[test]
fn a_long_average_wait_adds_a_worker() {
    let p = ScalingPolicy {
        scale_up_avg_wait_ms: Some(30 * S),
        ..policy(0, 4)
    };
    let mut st = state(vec![idle("a", 0)], 1);
    st.demand.avg_wait_ms = 31 * S;
    assert_eq!(run(&p, &st, MIN).provision, 1);
}

#[test]
fn high_utilisation_adds_a_worker_and_scale_down_stays_below_it() {
    let p = ScalingPolicy {
        scale_up_utilisation_pct: Some(75),
        ..policy(0, 10)
    };
    let d = run(
        &p,
        &state(vec![busy("a"), busy("b"), busy("c"), idle("d", 0)], 0),
        MIN,
    );
    assert_eq!(d.provision, 1, "{}", d.reason);
    // 2 busy of 4: retiring one idle worker gives 67 %, a second would give 100 %.
    let st = state(vec![busy("a"), busy("b"), idle("c", 0), idle("d", 0)], 0);
    let d = run(&p, &st, 10 * MIN);
    assert_eq!(ids(d.retire()), ["c"]);
}

#[test]
fn the_scale_up_cooldown_holds_demand_back_and_says_how_long() {
    let p = ScalingPolicy {
        scale_up_cooldown_ms: 30 * S,
        ..policy(0, 10)
    };
    let h = ScalingHistory {
        last_scale_up_at_ms: Some(100 * S),
        ..Default::default()
    };
    let d = decide_pool(&spec("p", 1), &p, &state(vec![], 3), &h, 110 * S);
    assert_eq!(
        d.kind,
        DecisionKind::Blocked {
            why: "scale-up cooldown 20s left".into()
        }
    );
    let d = decide_pool(&spec("p", 1), &p, &state(vec![], 3), &h, 130 * S);
    assert_eq!(d.provision, 3);
}

#[test]
fn the_step_limit_caps_one_decision() {
    let p = ScalingPolicy {
        max_step_up: 2,
        ..policy(5, 10)
    };
    let d = run(&p, &state(vec![], 8), 0);
    assert_eq!(d.provision, 2);
    assert!(d.reason.contains("step limit 2"), "{}", d.reason);
}

// ---- scale down ----

#[test]
fn idle_workers_above_min_retire_longest_idle_first_within_the_step() {
    let p = ScalingPolicy {
        max_step_down: 2,
        ..policy(1, 10)
    };
    let st = state(
        vec![
            idle("a", 30 * S),
            idle("b", 0),
            idle("c", 10 * S),
            idle("d", 55 * S),
            busy("e"),
        ],
        0,
    );
    let d = run(&p, &st, 2 * MIN);
    assert_eq!(d.kind, DecisionKind::ScaleDown);
    assert_eq!(ids(d.retire()), ["b", "c"]);
    assert!(d.stops.iter().all(|s| s.cause == StopCause::IdleTimeout));
    // Never below min, never a busy worker.
    let d = run(&policy(4, 10), &st, 10 * MIN);
    assert_eq!(ids(d.retire()), ["b"]);
}

#[test]
fn idle_workers_are_kept_for_jobs_waiting_for_them() {
    let st = state(vec![idle("a", 0), idle("b", 0)], 1);
    let d = run(&policy(0, 10), &st, 10 * MIN);
    assert_eq!(ids(d.retire()), ["a"]);
}

#[test]
fn the_scale_down_cooldown_counts_from_the_last_scale_up() {
    let p = ScalingPolicy {
        scale_down_cooldown_ms: 5 * MIN,
        ..policy(0, 10)
    };
    let h = ScalingHistory {
        last_scale_up_at_ms: Some(0),
        ..Default::default()
    };
    let st = state(vec![idle("a", 0)], 0);
    let d = decide_pool(&spec("p", 1), &p, &st, &h, 2 * MIN);
    assert_eq!(d.kind, DecisionKind::Steady);
    assert_eq!(d.reason, "scale-down cooldown 3m left");
    let d = decide_pool(&spec("p", 1), &p, &st, &h, 5 * MIN);
    assert_eq!(d.kind, DecisionKind::ScaleDown);
}

// ---- lifecycle ----

#[test]
fn a_worker_that_did_not_register_in_time_is_a_provisioning_failure_and_is_replaced() {
    let mut late = wv("late", WorkerState::Provisioning, 0);
    late.provisioned_at_ms = Some(0);
    let d = run(&policy(1, 3), &state(vec![late], 0), 31 * S);
    assert_eq!(ids(d.destroy.iter()), ["late"]);
    assert_eq!(d.metrics.provisioning_failures, 1);
    assert_eq!(d.provision, 1);
    assert!(
        d.reason.contains("1 failed to register within 30s"),
        "{}",
        d.reason
    );
}

#[test]
fn an_ephemeral_worker_retires_after_its_one_job_and_a_busy_one_is_drained() {
    let p = ScalingPolicy {
        ephemeral: true,
        idle_timeout_ms: 10 * MIN,
        ..policy(0, 10)
    };
    let done = WorkerView {
        jobs_completed: 1,
        ..idle("done", 50 * S)
    };
    let fresh = idle("fresh", 50 * S);
    let d = run(
        &p,
        &state(vec![done.clone(), fresh.clone(), busy("running")], 0),
        MIN,
    );
    assert_eq!(ids(d.retire()), ["done"]);
    assert_eq!(ids(d.drain()), ["running"]);
    assert!(d.stops.iter().all(|s| s.cause == StopCause::Ephemeral));
    assert_eq!(d.kind, DecisionKind::Drain);
    // Without ephemeral mode the same worker would be reused.
    let d = run(&policy(0, 10), &state(vec![done, fresh], 0), MIN);
    assert!(d.stops.is_empty());
}

#[test]
fn an_ephemeral_pool_counts_one_job_per_worker_whatever_its_slots() {
    let p = ScalingPolicy {
        ephemeral: true,
        ..policy(0, 10)
    };
    let st = state(vec![wv("a", WorkerState::Idle, 4)], 3);
    let d = decide_pool(&spec("p", 4), &p, &st, &ScalingHistory::default(), 0);
    assert_eq!(d.provision, 2);
}

#[test]
fn max_jobs_per_worker_drains_a_busy_worker_and_replaces_it_to_keep_min() {
    let p = ScalingPolicy {
        max_jobs_per_worker: Some(100),
        ..policy(2, 4)
    };
    let worn = WorkerView {
        jobs_completed: 100,
        ..busy("worn")
    };
    let d = run(&p, &state(vec![worn, busy("ok")], 0), 0);
    assert_eq!(ids(d.drain()), ["worn"]);
    assert_eq!(d.stops[0].cause, StopCause::MaxJobs);
    assert_eq!((d.kind.clone(), d.provision), (DecisionKind::ScaleUp, 1));
    assert!(
        d.reason.contains("1 at max jobs per worker"),
        "{}",
        d.reason
    );
}

#[test]
fn max_worker_age_drains_then_replaces() {
    let p = ScalingPolicy {
        max_worker_age_ms: Some(60 * MIN),
        ..policy(1, 4)
    };
    let mut old = busy("old");
    old.registered_at_ms = Some(0);
    // Young: nothing to do.
    let d = run(&p, &state(vec![old.clone()], 0), 59 * MIN);
    assert_eq!(d.kind, DecisionKind::Steady);
    // Old and busy: drained (never killed), replaced to keep min 1.
    let d = run(&p, &state(vec![old.clone()], 0), 60 * MIN);
    assert_eq!(ids(d.drain()), ["old"]);
    assert_eq!(d.retire().count(), 0);
    assert_eq!(d.stops[0].cause, StopCause::MaxAge);
    assert_eq!(d.provision, 1);
    // Next step: the old one drains, the replacement provisions: steady.
    old.state = WorkerState::Draining;
    let mut new = wv("new", WorkerState::Provisioning, 0);
    new.provisioned_at_ms = Some(60 * MIN);
    let d = run(&p, &state(vec![old.clone(), new], 0), 60 * MIN + S);
    assert_eq!((d.kind, d.provision), (DecisionKind::Steady, 0));
    // An old idle worker is retired at once.
    old.state = WorkerState::Idle;
    old.running_jobs = 0;
    let d = run(&p, &state(vec![old], 0), 61 * MIN);
    assert_eq!(ids(d.retire()), ["old"]);
}

// ---- quota ----

#[test]
fn pool_quotas_cap_provisioning_and_say_so() {
    // Template: 2000m, 4 GiB.
    let cases = [
        (
            PoolQuota {
                max_workers: Some(3),
                ..Default::default()
            },
            2,
            "quota max_workers 3 reached",
        ),
        (
            PoolQuota {
                max_cpu_millis: Some(7_000),
                ..Default::default()
            },
            2,
            "quota max_cpu_millis 7000 reached",
        ),
        (
            PoolQuota {
                max_memory_bytes: Some(8 * GIB),
                ..Default::default()
            },
            1,
            "quota max_memory_bytes",
        ),
    ];
    for (quota, n, why) in cases {
        let p = ScalingPolicy {
            quota,
            ..policy(0, 10)
        };
        let d = run(&p, &state(vec![busy("a")], 10), 0);
        assert_eq!(d.provision, n, "{quota:?}: {}", d.reason);
        assert!(d.reason.contains(why), "{}", d.reason);
    }
    // A draining worker still holds its share: at quota, nothing is provisioned.
    let p = ScalingPolicy {
        quota: PoolQuota {
            max_workers: Some(2),
            ..Default::default()
        },
        ..policy(0, 10)
    };
    let d = run(
        &p,
        &state(vec![busy("a"), wv("b", WorkerState::Draining, 0)], 10),
        0,
    );
    assert!(
        matches!(&d.kind, DecisionKind::Blocked { why } if why.contains("quota max_workers 2")),
        "{:?}",
        d.kind
    );
}

// ---- providers ----

#[test]
fn each_new_worker_gets_a_provider_and_capacity_is_used_up_as_it_goes() {
    let p = policy(0, 10);
    let mut st = state(vec![], 3);
    st.providers = vec![
        ProviderStatus {
            cost_per_second: 0.01,
            capacity_remaining: Some(2),
            ..ProviderStatus::new("cheap")
        },
        ProviderStatus {
            cost_per_second: 0.05,
            ..ProviderStatus::new("dear")
        },
    ];
    let d = run(&p, &st, 0);
    assert_eq!(d.providers, ["cheap", "cheap", "dear"]);
}

#[test]
fn a_provider_in_backoff_is_skipped_for_the_next_one_and_none_left_blocks() {
    let p = policy(0, 10);
    let mut st = state(vec![], 1);
    let cheap = ProviderStatus {
        cost_per_second: 0.01,
        ..ProviderStatus::new("cheap")
    };
    let dear = ProviderStatus {
        cost_per_second: 0.05,
        ..ProviderStatus::new("dear")
    };
    st.providers = vec![on_provision_failure(&cheap, 0), dear.clone()];
    assert_eq!(run(&p, &st, 500).providers, ["dear"]);
    assert_eq!(run(&p, &st, 1_000).providers, ["cheap"]);
    st.providers = vec![
        on_provision_failure(&cheap, 0),
        on_provision_failure(&dear, 0),
    ];
    let d = run(&p, &st, 500);
    assert!(
        matches!(&d.kind, DecisionKind::Blocked { why } if why.starts_with("no provider: cheap: backing off")),
        "{:?}",
        d.kind
    );
}

// ---- config ----

#[test]
fn validation_names_the_field_the_value_and_the_reason() {
    let bad = [
        (policy(3, 2), "scaling.max_workers", "2"),
        (
            ScalingPolicy {
                max_step_up: 0,
                ..policy(0, 2)
            },
            "scaling.max_step_up",
            "0",
        ),
        (
            ScalingPolicy {
                scale_up_utilisation_pct: Some(120),
                ..policy(0, 2)
            },
            "scaling.scale_up_utilisation_pct",
            "120",
        ),
        (
            ScalingPolicy {
                predictive: PredictiveConfig {
                    enabled: true,
                    bucket_ms: 7 * MIN,
                    ..Default::default()
                },
                ..policy(0, 2)
            },
            "scaling.predictive.period_ms",
            "86400000",
        ),
    ];
    for (p, field, value) in bad {
        match p.validate() {
            Err(ScalingError::Invalid {
                field: f, value: v, ..
            }) => assert_eq!((f.as_str(), v.as_str()), (field, value)),
            Ok(()) => panic!("{field} accepted"),
        }
    }
    assert_eq!(ScalingPolicy::default().validate(), Ok(()));
}

#[test]
fn the_policy_reads_from_toml_with_defaults_and_refuses_unknown_fields() {
    let p: ScalingPolicy = toml::from_str(
        "min_workers = 1\nmax_workers = 8\nephemeral = true\n\
         [quota]\nmax_cpu_millis = 8000\n[predictive]\nenabled = true\nlead_ms = 600000\n",
    )
    .unwrap();
    assert_eq!((p.min_workers, p.max_workers, p.ephemeral), (1, 8, true));
    assert_eq!(p.quota.max_cpu_millis, Some(8000));
    assert_eq!(p.predictive.bucket_ms, 5 * MIN);
    assert_eq!(p.validate(), Ok(()));
    let err = toml::from_str::<ScalingPolicy>("max_wrokers = 3").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

// ---- demand ----

fn qjob(id: u64, gpus: u32, c: SchedulingConstraints, enqueued_at_ms: u64) -> QueuedJob {
    QueuedJob {
        id: JobId(id),
        seq: id,
        priority: Priority::Medium,
        tenant: TenantId::default(),
        resources: Resources {
            cpu_millis: 1_000,
            memory_bytes: GIB,
            gpus,
            ..Resources::ZERO
        },
        labels: BTreeMap::new(),
        constraints: Arc::new(c),
        enqueued_at_ms,
        time_limit_ms: None,
        next_attempt: AttemptNo(1),
        schedule_failures: 0,
        deadline_at_ms: None,
    }
}

fn pools() -> Vec<PoolSpec> {
    let mut gpu = spec("gpu", 1);
    gpu.template.capacity.gpus = 1;
    gpu.template.taints = vec!["dedicated=gpu:NoSchedule".parse().unwrap()];
    let local = spec("local", 2);
    let mut arm = spec("arm", 2);
    arm.template.labels.insert("arch".into(), "arm64".into());
    vec![arm, gpu, local]
}

#[test]
fn the_would_be_worker_carries_the_template_and_the_pool_label() {
    let w = would_be_worker(&pools()[0]);
    assert_eq!(w.state, WorkerState::Idle);
    assert_eq!(w.allocated, Resources::ZERO);
    assert_eq!(w.labels.get("arch").map(String::as_str), Some("arm64"));
    assert_eq!(w.labels.get(POOL_LABEL).map(String::as_str), Some("arm"));
}

#[test]
fn demand_splits_jobs_between_pools_and_names_the_unservable_ones() {
    let tolerate_gpu = SchedulingConstraints {
        tolerations: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
        ..Default::default()
    };
    let arm_only = SchedulingConstraints {
        node_selector: BTreeMap::from([("arch".into(), "arm64".into())]),
        ..Default::default()
    };
    let jobs = vec![
        qjob(1, 0, SchedulingConstraints::default(), 0), // arm or local: first given (arm)
        qjob(2, 0, arm_only.clone(), 10 * S),            // arm only
        qjob(3, 1, tolerate_gpu, 20 * S),                // gpu only
        qjob(7, 2, SchedulingConstraints::default(), 0), // nowhere
        qjob(8, 0, arm_only, 30 * S),                    // arm only
    ];
    let d = demand_by_pool(&jobs, &pools(), &SchedulerConfig::default(), 100 * S);
    let arm = d.per_pool[&PoolId::new("arm").unwrap()];
    assert_eq!(
        (arm.only_here, arm.shared_assigned, arm.could_run_here),
        (2, 1, 3)
    );
    assert_eq!(arm.oldest_wait_ms, 100 * S);
    assert_eq!(arm.p90_wait_ms, 100 * S);
    assert_eq!(arm.avg_wait_ms, (100 + 90 + 70) * S / 3);
    let local = d.per_pool[&PoolId::new("local").unwrap()];
    assert_eq!(
        (local.only_here, local.shared_assigned, local.could_run_here),
        (0, 0, 1)
    );
    let gpu = d.per_pool[&PoolId::new("gpu").unwrap()];
    assert_eq!((gpu.only_here, gpu.p90_wait_ms), (1, 80 * S));
    assert_eq!(
        d.unservable,
        [(
            JobId(7),
            "no pool can run job 7: arm: insufficient gpu; \
             gpu: untolerated taint dedicated=gpu, insufficient gpu; local: insufficient gpu"
                .to_string()
        )]
    );
}

#[test]
fn a_shared_job_goes_to_the_first_pool_that_can_provision() {
    let mut ps = pools();
    ps[0].provider = ProviderKind::External; // arm
    let jobs = [qjob(1, 0, SchedulingConstraints::default(), 0)];
    let d = demand_by_pool(&jobs, &ps, &SchedulerConfig::default(), 0);
    assert_eq!(d.per_pool[&PoolId::new("arm").unwrap()].shared_assigned, 0);
    assert_eq!(
        d.per_pool[&PoolId::new("local").unwrap()].shared_assigned,
        1
    );
    assert!(d.unservable.is_empty());
}

#[test]
fn a_job_of_an_unknown_profile_is_unservable() {
    let c = SchedulingConstraints {
        profile: Some("batch".into()),
        ..Default::default()
    };
    let d = demand_by_pool(
        &[qjob(1, 0, c, 0)],
        &pools(),
        &SchedulerConfig::default(),
        0,
    );
    assert_eq!(
        d.unservable[0].1,
        "no pool can run job 1: unknown scheduler profile batch"
    );
}

// ---- simulator ----

/// A pool on a test clock: workers start after `startup_ms`, jobs run `duration_ms`, the
/// caller's side of the contract is applied (retire, drain, destroy; ephemeral workers are
/// drained as soon as their job is assigned).
struct Sim {
    spec: PoolSpec,
    policy: ScalingPolicy,
    history: ScalingHistory,
    workers: Vec<(WorkerView, Vec<u64>, u64)>, // view, running job ends, jobs assigned
    pending: Vec<u64>,                         // enqueued at
    startup_ms: u64,
    duration_ms: u64,
    next_id: u64,
    now: u64,
    waits: Vec<(u64, u64)>, // (enqueued at, waited)
    backlog: Vec<usize>,    // pending jobs at each decision
    decisions: Vec<(u64, PoolDecision)>,
}

impl Sim {
    fn new(spec: PoolSpec, policy: ScalingPolicy, startup_ms: u64, duration_ms: u64) -> Sim {
        Sim {
            spec,
            policy,
            history: ScalingHistory::default(),
            workers: Vec::new(),
            pending: Vec::new(),
            startup_ms,
            duration_ms,
            next_id: 0,
            now: 0,
            waits: Vec::new(),
            backlog: Vec::new(),
            decisions: Vec::new(),
        }
    }

    fn slots(&self) -> u32 {
        self.spec.template.slots
    }

    /// Advances to `now`, adds `arrivals` jobs, assigns, decides and applies.
    fn step(&mut self, now: u64, arrivals: u64) {
        self.now = now;
        let slots = self.slots();
        for (w, ends, _) in &mut self.workers {
            if w.state == WorkerState::Provisioning
                && w.provisioned_at_ms
                    .is_some_and(|t| now >= t + self.startup_ms)
            {
                w.state = WorkerState::Idle;
                w.registered_at_ms = Some(now);
                w.idle_since_ms = Some(now);
            }
            let before = ends.len();
            ends.retain(|&e| e > now);
            w.jobs_completed += (before - ends.len()) as u64;
        }
        self.pending
            .extend(std::iter::repeat_n(now, arrivals as usize));
        // Assign pending jobs, first worker first.
        for (w, ends, assigned) in &mut self.workers {
            let usable = w.state.accepts_work() && !(self.policy.ephemeral && *assigned > 0);
            while usable && (ends.len() as u32) < slots && !self.pending.is_empty() {
                let enq = self.pending.remove(0);
                self.waits.push((enq, now - enq));
                ends.push(now + self.duration_ms);
                *assigned += 1;
                if self.policy.ephemeral {
                    w.state = WorkerState::Draining; // the caller drains on assignment
                    break;
                }
            }
        }
        for (w, ends, _) in &mut self.workers {
            w.running_jobs = ends.len() as u32;
            w.free_slots = slots - ends.len() as u32;
            if w.state.accepts_work() {
                if ends.is_empty() {
                    if w.state == WorkerState::Busy {
                        w.idle_since_ms = Some(now);
                    }
                    w.state = WorkerState::Idle;
                } else {
                    w.state = WorkerState::Busy;
                    w.idle_since_ms = None;
                }
            }
        }
        self.workers
            .retain(|(w, ends, _)| !(w.state == WorkerState::Draining && ends.is_empty()));
        self.history
            .arrivals
            .record_arrivals(&self.policy.predictive, arrivals, now);
        let waits: Vec<u64> = self.pending.iter().map(|e| now - e).collect();
        self.backlog.push(self.pending.len());
        let st = PoolState {
            workers: self.workers.iter().map(|(w, _, _)| w.clone()).collect(),
            demand: PoolDemand {
                only_here: self.pending.len() as u64,
                could_run_here: self.pending.len() as u64,
                shared_assigned: 0,
                oldest_wait_ms: waits.iter().copied().max().unwrap_or(0),
                p90_wait_ms: waits.iter().copied().max().unwrap_or(0),
                avg_wait_ms: waits.iter().sum::<u64>() / waits.len().max(1) as u64,
            },
            providers: Vec::new(),
        };
        let d = decide_pool(&self.spec, &self.policy, &st, &self.history, now);
        self.apply(&d);
        self.history.record_decision(&d, now);
        self.decisions.push((now, d));
    }

    fn apply(&mut self, d: &PoolDecision) {
        for s in &d.stops {
            let (w, ends, _) = self
                .workers
                .iter_mut()
                .find(|(w, _, _)| w.id == s.worker)
                .unwrap();
            match s.mode {
                StopMode::Retire => {
                    assert!(ends.is_empty(), "retired busy worker {}", w.id);
                    w.state = WorkerState::Terminated;
                }
                StopMode::Drain => w.state = WorkerState::Draining,
            }
        }
        self.workers.retain(|(w, ends, _)| {
            !(w.state == WorkerState::Terminated
                || d.destroy.contains(&w.id)
                || (w.state == WorkerState::Draining && ends.is_empty()))
        });
        for _ in 0..d.provision {
            self.next_id += 1;
            let mut w = wv(
                &format!("w{:05}", self.next_id),
                WorkerState::Provisioning,
                0,
            );
            w.provisioned_at_ms = Some(self.now);
            w.registered_at_ms = None;
            self.workers.push((w, Vec::new(), 0));
        }
    }

    fn live(&self) -> u32 {
        self.workers
            .iter()
            .filter(|(w, _, _)| !matches!(w.state, WorkerState::Draining | WorkerState::Terminated))
            .count() as u32
    }
}

#[test]
fn an_ephemeral_pool_runs_each_job_on_its_own_worker() {
    let p = ScalingPolicy {
        ephemeral: true,
        ..policy(0, 3)
    };
    let mut sim = Sim::new(spec("p", 2), p, 2 * S, 5 * S);
    let mut most_assigned = 0;
    for t in 0..120 {
        sim.step(t * S, if t < 10 { 1 } else { 0 });
        most_assigned = most_assigned.max(sim.workers.iter().map(|w| w.2).max().unwrap_or(0));
    }
    assert_eq!(sim.waits.len(), 10, "every job ran");
    assert_eq!(most_assigned, 1, "no worker got a second job");
    assert!(sim.workers.is_empty(), "every worker is gone after its job");
    assert!(sim.next_id >= 10);
}

/// Max wait of the jobs enqueued in [from, to).
fn max_wait(sim: &Sim, from: u64, to: u64) -> u64 {
    sim.waits
        .iter()
        .filter(|(e, _)| (from..to).contains(e))
        .map(|(_, w)| *w)
        .max()
        .unwrap_or(0)
}

fn burst_days(predictive: bool) -> Sim {
    const DAY: u64 = 24 * 60 * MIN;
    let p = ScalingPolicy {
        min_workers: 0,
        max_workers: 20,
        idle_timeout_ms: 10 * MIN,
        register_timeout_ms: 20 * MIN,
        scale_up_cooldown_ms: 0,
        scale_down_cooldown_ms: 5 * MIN,
        max_step_up: 20,
        predictive: PredictiveConfig {
            enabled: predictive,
            lead_ms: 10 * MIN,
            ..Default::default()
        },
        ..ScalingPolicy::default()
    };
    p.validate().unwrap();
    // Slow workers (5 min to start); 20 jobs of 30 min arrive at 09:00 every day.
    let mut sim = Sim::new(spec("p", 2), p, 5 * MIN, 30 * MIN);
    for minute in 0..4 * 24 * 60 {
        let t = minute * MIN;
        let arrivals = if t % DAY == 9 * 60 * MIN { 20 } else { 0 };
        sim.step(t, arrivals);
    }
    sim
}

#[test]
fn predictive_mode_pre_warms_before_a_recurring_burst() {
    const DAY: u64 = 24 * 60 * MIN;
    let nine = 9 * 60 * MIN;
    let sim = burst_days(true);
    // Day 1: nothing known, the burst waits for cold workers.
    assert!(max_wait(&sim, nine, nine + 1) >= 5 * MIN);
    // Days 2-4: the workers are warm when the burst arrives.
    for day in 1..4 {
        let at = day * DAY + nine;
        assert_eq!(max_wait(&sim, at, at + 1), 0, "day {}", day + 1);
        let warm_at = sim
            .decisions
            .iter()
            .find(|(t, d)| *t >= day * DAY && d.provision > 0)
            .map(|(t, _)| *t)
            .unwrap();
        assert!(
            warm_at <= at - 5 * MIN && warm_at >= at - 10 * MIN,
            "{warm_at}"
        );
        let (_, d) = sim.decisions.iter().find(|(t, _)| *t == warm_at).unwrap();
        assert!(d.reason.contains("pre-warming 10 workers"), "{}", d.reason);
    }
    // Between bursts the pool is empty again.
    let (_, d) = sim
        .decisions
        .iter()
        .find(|(t, _)| *t == 3 * DAY + nine - 2 * 60 * MIN)
        .unwrap();
    assert_eq!(d.metrics.live, 0);
    // Without prediction every day waits.
    let cold = burst_days(false);
    assert!(max_wait(&cold, 3 * DAY + nine, 3 * DAY + nine + 1) >= 5 * MIN);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn decisions_respect_bounds_steps_and_never_stop_a_busy_worker(
        min in 0u32..4, extra in 0u32..6, slots in 1u32..4,
        step_up in 1u32..5, step_down in 1u32..5,
        states in proptest::collection::vec((0usize..5, 0u64..200_000, 0u64..3), 0..12),
        jobs in 0u64..60, now in 0u64..400_000,
        ephemeral in any::<bool>(), max_jobs in proptest::option::of(1u64..3),
        util in proptest::option::of(50u32..100),
    ) {
        let p = ScalingPolicy {
            max_step_up: step_up,
            max_step_down: step_down,
            ephemeral,
            max_jobs_per_worker: max_jobs,
            scale_up_utilisation_pct: util,
            ..policy(min, min + extra)
        };
        let st_of = [WorkerState::Provisioning, WorkerState::Idle, WorkerState::Busy,
            WorkerState::Draining, WorkerState::Terminated];
        let workers: Vec<WorkerView> = states.iter().enumerate().map(|(i, (s, t, done))| {
            let state = st_of[*s];
            let mut w = wv(&format!("w{i}"), state, if state == WorkerState::Idle { slots } else { 0 });
            w.idle_since_ms = (state == WorkerState::Idle).then_some(*t);
            w.provisioned_at_ms = Some(*t);
            w.jobs_completed = *done;
            w
        }).collect();
        let sp = spec("p", slots);
        let d = decide_pool(&sp, &p, &state(workers.clone(), jobs), &ScalingHistory::default(), now);
        // Live after: provisioning in time + registered, minus every stop, plus provision.
        let stopped = d.stops.len() as u32;
        let live_before = d.metrics.live;
        let live_after = live_before - stopped + d.provision;
        if live_before - stopped <= p.max_workers {
            prop_assert!(live_after <= p.max_workers, "{live_after} > max: {}", d.reason);
        }
        prop_assert!(d.provision <= p.max_step_up);
        let idle_retired = d.stops.iter().filter(|s| s.cause == StopCause::IdleTimeout).count() as u32;
        prop_assert!(idle_retired <= p.max_step_down);
        if idle_retired > 0 {
            prop_assert!(live_before - stopped >= p.min_workers);
            prop_assert_eq!(d.provision, 0);
        }
        // Back to min whenever the step allows it (no quota, no providers here).
        let want_min = p.min_workers.saturating_sub(live_before - stopped).min(p.max_step_up);
        prop_assert!(d.provision >= want_min, "{} < {want_min}: {}", d.provision, d.reason);
        for s in &d.stops {
            let w = workers.iter().find(|w| w.id == s.worker).unwrap();
            prop_assert!(matches!(w.state, WorkerState::Idle | WorkerState::Busy));
            if s.mode == StopMode::Retire {
                prop_assert!(w.state == WorkerState::Idle && w.running_jobs == 0, "retired busy {}", w.id);
            }
        }
        for id in &d.destroy {
            let w = workers.iter().find(|w| &w.id == id).unwrap();
            prop_assert_eq!(w.state, WorkerState::Provisioning);
        }
        // Idempotent: the same input gives the same decision.
        prop_assert_eq!(&d, &decide_pool(&sp, &p, &state(workers, jobs), &ScalingHistory::default(), now));
    }

    #[test]
    fn a_steady_load_does_not_flap_and_cooldowns_hold(
        rate in 1u64..4, duration_s in 5u64..40, slots in 1u32..4, startup_s in 0u64..10,
        up_cd_s in 0u64..60, down_cd_s in 0u64..120, idle_s in 10u64..60,
        util in proptest::option::of(60u32..95),
    ) {
        let p = ScalingPolicy {
            min_workers: 0,
            max_workers: 200,
            idle_timeout_ms: idle_s * S,
            scale_up_cooldown_ms: up_cd_s * S,
            scale_down_cooldown_ms: down_cd_s * S,
            scale_up_utilisation_pct: util,
            max_step_up: 16,
            max_step_down: 2,
            ..ScalingPolicy::default()
        };
        let mut sim = Sim::new(spec("p", slots), p.clone(), startup_s * S, duration_s * S);
        let ticks = 2_000u64;
        for t in 0..ticks {
            sim.step(t * S, rate);
            prop_assert!(sim.live() <= p.max_workers);
        }
        let mut last_up: Option<u64> = None;
        let mut last_any: Option<u64> = None;
        let mut last_down: Option<u64> = None;
        // Settled: the start-up backlog is gone, plus time for the overshoot to retire.
        let drained = sim.backlog.iter().position(|&b| b == 0).unwrap_or(0) as u64;
        let warm_up = (drained + 2 * (idle_s + down_cd_s + duration_s + startup_s)) * S;
        prop_assert!(warm_up < (ticks - 600) * S, "not settled by {warm_up}");
        for (t, d) in &sim.decisions {
            if d.provision > 0 {
                if let Some(u) = last_up {
                    prop_assert!(t - u >= p.scale_up_cooldown_ms, "up at {u} then {t}");
                }
                if let Some(dn) = last_down {
                    prop_assert!(dn < warm_up, "flap: down at {dn} then up at {t}: {}", d.reason);
                }
                last_up = Some(*t);
                last_any = Some(*t);
            }
            if d.kind == DecisionKind::ScaleDown {
                if let Some(a) = last_any {
                    prop_assert!(t - a >= p.scale_down_cooldown_ms, "scale at {a}, down at {t}");
                }
                if *t >= warm_up {
                    last_down = Some(*t);
                }
                last_any = Some(*t);
            }
        }
        // The load is served: nobody waits for long once warm.
        let late = sim.waits.iter().filter(|(e, _)| *e >= warm_up).map(|(_, w)| *w).max().unwrap_or(0);
        prop_assert!(late <= (startup_s + up_cd_s + 2) * S, "late wait {late}");
    }
}
