//! Tests of the pipeline through its one entry point, `Pipeline::schedule`, against in-memory
//! views (no workers, no actors).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::constraints::TOPOLOGY_WORKER;
use super::*;
use crate::ids::PoolId;
use crate::job::Priority;
use crate::resources::Resources;
use crate::worker::WorkerState;

const GIB: u64 = 1 << 30;
const NOW: u64 = 10_000_000;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn worker(id: &str, cores: u64, slots: u32) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId::new(id).unwrap(),
        pool: PoolId::new("p").unwrap(),
        state: WorkerState::Idle,
        capacity: Resources {
            cpu_millis: cores * 1000,
            memory_bytes: 64 * GIB,
            ephemeral_storage_bytes: 100 * GIB,
            gpus: 0,
        },
        allocated: Resources::ZERO,
        slots,
        used_slots: 0,
        labels: BTreeMap::new(),
        taints: Vec::new(),
    }
}

fn with_labels(mut w: WorkerInfo, kv: &[(&str, &str)]) -> WorkerInfo {
    w.labels = labels(kv);
    w
}

fn with_taint(mut w: WorkerInfo, t: &str) -> WorkerInfo {
    w.taints.push(t.parse().unwrap());
    w
}

fn job(id: u64, cpu_millis: u64, priority: Priority) -> QueuedJob {
    QueuedJob {
        id: JobId(id),
        seq: id,
        priority,
        tenant: TenantId::default(),
        resources: Resources {
            cpu_millis,
            memory_bytes: GIB,
            ..Resources::ZERO
        },
        labels: BTreeMap::new(),
        constraints: Arc::new(SchedulingConstraints::default()),
        enqueued_at_ms: NOW,
        time_limit_ms: None,
        next_attempt: AttemptNo(1),
        schedule_failures: 0,
        deadline_at_ms: None,
    }
}

fn constrained(mut j: QueuedJob, c: SchedulingConstraints) -> QueuedJob {
    j.constraints = Arc::new(c);
    j
}

fn running(id: u64, w: &mut WorkerInfo, cpu_millis: u64, priority: Priority) -> RunningJob {
    let r = Resources {
        cpu_millis,
        memory_bytes: GIB,
        ..Resources::ZERO
    };
    w.allocated = w.allocated.saturating_add(&r);
    w.used_slots += 1;
    w.state = WorkerState::Busy;
    RunningJob {
        id: JobId(id),
        worker: w.id.clone(),
        priority,
        tenant: TenantId::default(),
        resources: r,
        labels: BTreeMap::new(),
        started_at_ms: NOW - 1000,
        time_limit_ms: None,
        tolerations: Vec::new(),
    }
}

fn view(workers: Vec<WorkerInfo>, pending: Vec<QueuedJob>) -> ClusterView {
    ClusterView {
        now_ms: NOW,
        epoch: Epoch(3),
        cycle: 0,
        workers,
        pending,
        running: Vec::new(),
        explain: true,
    }
}

fn default_pipeline() -> Pipeline {
    Pipeline::new(SchedulerConfig::default())
}

fn pipeline_with(profile: ProfileConfig) -> Pipeline {
    Pipeline::new(SchedulerConfig {
        profiles: BTreeMap::from([(DEFAULT_PROFILE.to_string(), profile)]),
        quotas: BTreeMap::new(),
    })
}

fn placed_on(out: &Outcome, id: u64) -> Option<&str> {
    out.placements
        .iter()
        .find(|p| p.job == JobId(id))
        .map(|p| p.worker.as_str())
}

fn summary_of(out: &Outcome, id: u64) -> &str {
    &out.unplaced
        .iter()
        .find(|u| u.job == JobId(id))
        .unwrap_or_else(|| panic!("job {id} not unplaced: {out:#?}"))
        .summary
}

// ----------------------------------------------------------------------------------- filters

#[test]
fn resources_filter_names_the_first_short_dimension() {
    let mut small = worker("small", 2, 4);
    small.capacity.gpus = 0;
    let out = default_pipeline().schedule(&view(
        vec![small.clone(), worker("big", 16, 4)],
        vec![job(1, 8000, Priority::Medium)],
    ));
    assert_eq!(placed_on(&out, 1), Some("big"));

    let mut gpu_job = job(2, 100, Priority::Medium);
    gpu_job.resources.gpus = 1;
    let mut mem_job = job(3, 100, Priority::Medium);
    mem_job.resources.memory_bytes = 1024 * GIB;
    let mut disk_job = job(4, 100, Priority::Medium);
    disk_job.resources.ephemeral_storage_bytes = 1024 * GIB;
    let out = default_pipeline().schedule(&view(
        vec![small],
        vec![job(1, 8000, Priority::Medium), gpu_job, mem_job, disk_job],
    ));
    assert_eq!(summary_of(&out, 1), "0/1 workers fit: 1 insufficient cpu");
    assert_eq!(summary_of(&out, 2), "0/1 workers fit: 1 insufficient gpu");
    assert_eq!(
        summary_of(&out, 3),
        "0/1 workers fit: 1 insufficient memory"
    );
    assert_eq!(
        summary_of(&out, 4),
        "0/1 workers fit: 1 insufficient ephemeral-storage"
    );
}

#[test]
fn slots_bound_concurrency_and_say_no_free_slot() {
    let out = default_pipeline().schedule(&view(
        vec![worker("a", 64, 2)],
        (1..=3).map(|i| job(i, 100, Priority::Medium)).collect(),
    ));
    assert_eq!(out.placements.len(), 2);
    assert_eq!(summary_of(&out, 3), "0/1 workers fit: 1 no free slot");
}

#[test]
fn node_selector_requires_every_label() {
    let c = SchedulingConstraints {
        node_selector: labels(&[("zone", "a"), ("arch", "arm64")]),
        ..Default::default()
    };
    let out = default_pipeline().schedule(&view(
        vec![
            with_labels(worker("w1", 8, 4), &[("zone", "a")]),
            with_labels(worker("w2", 8, 4), &[("zone", "a"), ("arch", "arm64")]),
        ],
        vec![constrained(job(1, 100, Priority::Medium), c.clone())],
    ));
    assert_eq!(placed_on(&out, 1), Some("w2"));
    let out = default_pipeline().schedule(&view(
        vec![with_labels(worker("w1", 8, 4), &[("zone", "a")])],
        vec![constrained(job(1, 100, Priority::Medium), c)],
    ));
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 node selector mismatch"
    );
}

#[test]
fn required_node_affinity_filters_and_preferred_scores() {
    let c = SchedulingConstraints {
        node_affinity: NodeAffinity {
            required: vec![
                "cores gt 4".parse().unwrap(),
                "zone in (edge)".parse().unwrap(),
            ],
            preferred: vec![WeightedTerm {
                weight: 100,
                term: "arch in (arm64)".parse().unwrap(),
            }],
        },
        ..Default::default()
    };
    let workers = vec![
        with_labels(worker("a", 8, 4), &[("cores", "2")]),
        with_labels(worker("b", 8, 4), &[("cores", "8"), ("arch", "amd64")]),
        with_labels(worker("c", 8, 4), &[("zone", "edge"), ("arch", "arm64")]),
    ];
    let out = default_pipeline().schedule(&view(
        workers.clone(),
        vec![constrained(job(1, 100, Priority::Medium), c.clone())],
    ));
    assert_eq!(placed_on(&out, 1), Some("c"), "preferred arm64 wins");
    let e = &out.explanations[0];
    assert_eq!(e.filter_counts.get("node affinity mismatch"), Some(&1));
    assert_eq!(e.feasible, 2);
    let out = default_pipeline().schedule(&view(
        vec![workers[0].clone()],
        vec![constrained(job(1, 100, Priority::Medium), c)],
    ));
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 node affinity mismatch"
    );
}

#[test]
fn untolerated_no_schedule_and_no_execute_taints_filter() {
    let workers = vec![
        with_taint(worker("gpu", 8, 4), "dedicated=gpu:NoSchedule"),
        with_taint(worker("spot", 8, 4), "spot:NoExecute"),
    ];
    let out =
        default_pipeline().schedule(&view(workers.clone(), vec![job(1, 100, Priority::Medium)]));
    assert_eq!(
        summary_of(&out, 1),
        "0/2 workers fit: 1 untolerated taint dedicated=gpu, 1 untolerated taint spot"
    );
    let c = SchedulingConstraints {
        tolerations: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
        ..Default::default()
    };
    let out = default_pipeline().schedule(&view(
        workers,
        vec![constrained(job(1, 100, Priority::Medium), c)],
    ));
    assert_eq!(placed_on(&out, 1), Some("gpu"));
}

#[test]
fn a_no_execute_toleration_whose_seconds_ran_out_no_longer_lets_a_job_in() {
    // Tainted 5 s ago; the job tolerates it for 2 s only: placing it would evict it at once.
    let mut taint: Taint = "maintenance:NoExecute".parse().unwrap();
    taint.added_at_ms = NOW - 5_000;
    let mut w = worker("w", 8, 4);
    w.taints.push(taint.clone());
    let brief = SchedulingConstraints {
        tolerations: vec!["maintenance:NoExecute:2".parse().unwrap()],
        ..Default::default()
    };
    let out = default_pipeline().schedule(&view(
        vec![w.clone()],
        vec![constrained(job(1, 100, Priority::Medium), brief)],
    ));
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 untolerated taint maintenance"
    );
    // Tolerated for 10 s: 5 s are left, so it may still go there.
    let patient = SchedulingConstraints {
        tolerations: vec!["maintenance:NoExecute:10".parse().unwrap()],
        ..Default::default()
    };
    let out = default_pipeline().schedule(&view(
        vec![w],
        vec![constrained(job(1, 100, Priority::Medium), patient)],
    ));
    assert_eq!(placed_on(&out, 1), Some("w"));
}

#[test]
fn prefer_no_schedule_only_lowers_the_score() {
    let out = default_pipeline().schedule(&view(
        vec![
            with_taint(worker("a", 8, 4), "spot:PreferNoSchedule"),
            worker("b", 8, 4),
        ],
        vec![job(1, 100, Priority::Medium)],
    ));
    assert_eq!(placed_on(&out, 1), Some("b"));
    let out = default_pipeline().schedule(&view(
        vec![with_taint(worker("a", 8, 4), "spot:PreferNoSchedule")],
        vec![job(1, 100, Priority::Medium)],
    ));
    assert_eq!(placed_on(&out, 1), Some("a"), "a soft taint never filters");
}

#[test]
fn draining_workers_do_not_accept_work() {
    let mut w = worker("a", 8, 4);
    w.state = WorkerState::Draining;
    let out = default_pipeline().schedule(&view(vec![w], vec![job(1, 100, Priority::Medium)]));
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 worker not accepting work"
    );
}

fn term(kind: JobAffinityKind, app: &str, key: &str) -> JobAffinityTerm {
    JobAffinityTerm {
        kind,
        selector: labels(&[("app", app)]),
        topology_key: key.into(),
    }
}

fn app_job(id: u64, app: &str, t: JobAffinityTerm) -> QueuedJob {
    let mut j = constrained(
        job(id, 100, Priority::Medium),
        SchedulingConstraints {
            job_affinity: vec![t],
            ..Default::default()
        },
    );
    j.labels = labels(&[("app", app)]);
    j
}

#[test]
fn job_affinity_lands_in_the_zone_of_a_matching_running_job() {
    let mut a1 = with_labels(worker("a1", 8, 4), &[("zone", "a")]);
    let a2 = with_labels(worker("a2", 64, 4), &[("zone", "a")]);
    let b1 = with_labels(worker("b1", 64, 8), &[("zone", "b")]);
    let mut r = running(100, &mut a1, 100, Priority::Medium);
    r.labels = labels(&[("app", "cache")]);
    let mut v = view(
        vec![a1, a2, b1],
        vec![app_job(
            1,
            "web",
            term(JobAffinityKind::Affinity, "cache", "zone"),
        )],
    );
    v.running = vec![r];
    let out = default_pipeline().schedule(&v);
    assert!(matches!(placed_on(&out, 1), Some("a1" | "a2")), "{out:?}");
    assert_eq!(
        out.explanations[0]
            .filter_counts
            .get("job affinity mismatch"),
        Some(&1)
    );
}

#[test]
fn the_first_job_of_a_self_affine_group_may_go_anywhere_and_the_rest_follow_it() {
    let workers = vec![
        with_labels(worker("a", 64, 8), &[("zone", "a")]),
        with_labels(worker("b", 64, 8), &[("zone", "b")]),
    ];
    let jobs = (1..=4)
        .map(|i| app_job(i, "grp", term(JobAffinityKind::Affinity, "grp", "zone")))
        .collect();
    let out = default_pipeline().schedule(&view(workers, jobs));
    let first = placed_on(&out, 1).unwrap();
    for i in 2..=4 {
        assert_eq!(placed_on(&out, i), Some(first));
    }
}

#[test]
fn anti_affinity_on_the_worker_key_keeps_replicas_apart() {
    let workers = vec![worker("a", 64, 8), worker("b", 64, 8)];
    let jobs = (1..=3)
        .map(|i| {
            app_job(
                i,
                "db",
                term(JobAffinityKind::AntiAffinity, "db", TOPOLOGY_WORKER),
            )
        })
        .collect();
    let out = default_pipeline().schedule(&view(workers, jobs));
    assert_ne!(placed_on(&out, 1), placed_on(&out, 2));
    assert_eq!(
        summary_of(&out, 3),
        "0/2 workers fit: 2 job anti-affinity conflict"
    );
}

#[test]
fn spread_keeps_the_skew_within_max_skew() {
    // Zone a has three big workers, zone b one small one: least-loaded alone would pile into a.
    let workers = vec![
        with_labels(worker("a1", 64, 8), &[("zone", "a")]),
        with_labels(worker("a2", 64, 8), &[("zone", "a")]),
        with_labels(worker("a3", 64, 8), &[("zone", "a")]),
        with_labels(worker("b1", 64, 8), &[("zone", "b")]),
    ];
    let jobs: Vec<QueuedJob> = (1..=6)
        .map(|i| {
            app_job(
                i,
                "web",
                term(JobAffinityKind::Spread { max_skew: 1 }, "web", "zone"),
            )
        })
        .collect();
    let out = default_pipeline().schedule(&view(workers, jobs));
    let in_a = out
        .placements
        .iter()
        .filter(|p| p.worker.as_str().starts_with('a'))
        .count();
    let in_b = out.placements.len() - in_a;
    assert_eq!(out.placements.len(), 6);
    assert_eq!((in_a, in_b), (3, 3));
}

// ------------------------------------------------------------------------------------ scores

fn loaded(id: &str, cores: u64, used_cores: u64) -> WorkerInfo {
    let mut w = worker(id, cores, 8);
    w.allocated.cpu_millis = used_cores * 1000;
    w.allocated.memory_bytes = used_cores * 4 * GIB;
    w.used_slots = used_cores.min(7) as u32;
    w
}

#[test]
fn least_loaded_prefers_the_emptier_worker_and_bin_packing_the_fuller() {
    let workers = vec![loaded("busy", 16, 12), loaded("idle", 16, 0)];
    let out =
        default_pipeline().schedule(&view(workers.clone(), vec![job(1, 1000, Priority::Medium)]));
    assert_eq!(placed_on(&out, 1), Some("idle"));
    let packing = pipeline_with(ProfileConfig {
        worker_selection: WorkerSelectionStrategy::BinPacking,
        ..Default::default()
    });
    let out = packing.schedule(&view(workers, vec![job(1, 1000, Priority::Medium)]));
    assert_eq!(placed_on(&out, 1), Some("busy"));
}

#[test]
fn resource_balance_evens_out_cpu_and_memory() {
    // cpu-heavy worker: 75% cpu, 0% memory; balanced one: 25%/25%.
    let mut cpu_heavy = worker("cpu-heavy", 16, 8);
    cpu_heavy.allocated.cpu_millis = 12_000;
    let mut even = worker("even", 16, 8);
    even.allocated.cpu_millis = 4000;
    even.allocated.memory_bytes = 16 * GIB;
    let p = pipeline_with(ProfileConfig {
        worker_selection: WorkerSelectionStrategy::ResourceBalance,
        ..Default::default()
    });
    let mut j = job(1, 1000, Priority::Medium);
    j.resources.memory_bytes = 4 * GIB;
    let out = p.schedule(&view(vec![cpu_heavy, even], vec![j]));
    assert_eq!(placed_on(&out, 1), Some("even"));
}

#[test]
fn round_robin_rotates_deterministically() {
    let p = pipeline_with(ProfileConfig {
        worker_selection: WorkerSelectionStrategy::RoundRobin,
        ..Default::default()
    });
    let workers: Vec<WorkerInfo> = (0..4).map(|i| worker(&format!("w{i}"), 64, 64)).collect();
    let out = p.schedule(&view(
        workers.clone(),
        (1..=8).map(|i| job(i, 10, Priority::Medium)).collect(),
    ));
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for pl in &out.placements {
        *per.entry(pl.worker.as_str()).or_default() += 1;
    }
    assert_eq!(
        per.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2],
        "{per:?}"
    );
    let mut v2 = view(workers, vec![job(1, 10, Priority::Medium)]);
    let first = placed_on(&p.schedule(&v2), 1).unwrap().to_string();
    v2.cycle = 1;
    assert_ne!(
        placed_on(&p.schedule(&v2), 1).unwrap(),
        first,
        "the cycle counter rotates"
    );
}

#[test]
fn spread_score_prefers_the_domain_with_fewer_matching_jobs() {
    let mut a = with_labels(worker("a", 64, 8), &[("zone", "a")]);
    let b = with_labels(worker("b", 64, 8), &[("zone", "b")]);
    let mut r = running(100, &mut a, 100, Priority::Medium);
    r.labels = labels(&[("app", "web")]);
    // max_skew 5: both zones are feasible, the score decides.
    let mut v = view(
        vec![a, b],
        vec![app_job(
            1,
            "web",
            term(JobAffinityKind::Spread { max_skew: 5 }, "web", "zone"),
        )],
    );
    v.running = vec![r];
    let out = default_pipeline().schedule(&v);
    assert_eq!(placed_on(&out, 1), Some("b"));
}

#[test]
fn ties_are_broken_by_worker_id() {
    let workers = vec![worker("c", 8, 4), worker("a", 8, 4), worker("b", 8, 4)];
    let out = default_pipeline().schedule(&view(workers, vec![job(1, 100, Priority::Medium)]));
    assert_eq!(placed_on(&out, 1), Some("a"));
}

// ----------------------------------------------------------------------------------- summary

#[test]
fn the_summary_counts_first_failing_filters_largest_first() {
    let mut workers = Vec::new();
    for i in 0..5 {
        workers.push(with_labels(
            worker(&format!("small{i}"), 1, 4),
            &[("arch", "amd64")],
        ));
    }
    for i in 0..4 {
        let gpu = with_labels(worker(&format!("gpu{i}"), 64, 4), &[("arch", "amd64")]);
        workers.push(with_taint(gpu, "dedicated=gpu:NoSchedule"));
    }
    for i in 0..3 {
        workers.push(with_labels(
            worker(&format!("arm{i}"), 64, 4),
            &[("arch", "arm64")],
        ));
    }
    let c = SchedulingConstraints {
        node_selector: labels(&[("arch", "amd64")]),
        ..Default::default()
    };
    let out = default_pipeline().schedule(&view(
        workers,
        vec![constrained(job(1, 4000, Priority::Medium), c)],
    ));
    assert_eq!(
        summary_of(&out, 1),
        "0/12 workers fit: 5 insufficient cpu, 4 untolerated taint dedicated=gpu, 3 node selector mismatch"
    );
    assert_eq!(summarize(0, []), "0/0 workers fit: no worker is registered");
    assert_eq!(
        summarize(4, [("b", 2), ("a", 2)]),
        "0/4 workers fit: 2 a, 2 b",
        "equal counts sort by name"
    );
}

// ------------------------------------------------------------------------------------ queues

#[test]
fn fifo_takes_submission_order_and_priority_takes_levels_first() {
    let jobs = vec![
        job(1, 1000, Priority::Batch),
        job(2, 1000, Priority::Critical),
        job(3, 1000, Priority::Medium),
    ];
    let one_slot = vec![worker("a", 64, 1)];
    let out = default_pipeline().schedule(&view(one_slot.clone(), jobs.clone()));
    assert_eq!(out.placements[0].job, JobId(2));
    let fifo = pipeline_with(ProfileConfig {
        queue: QueueStrategy::Fifo,
        ..Default::default()
    });
    let out = fifo.schedule(&view(one_slot, jobs));
    assert_eq!(out.placements[0].job, JobId(1));
}

/// One 4-core worker with 1 core free; job 1 needs 2 cores (fits once the running job ends),
/// job 2 needs 1 core (fits now).
fn head_of_line_view() -> ClusterView {
    let mut w = worker("a", 4, 8);
    let r = running(100, &mut w, 3000, Priority::Medium);
    let mut v = view(
        vec![w],
        vec![
            job(1, 2000, Priority::Medium),
            job(2, 1000, Priority::Medium),
        ],
    );
    v.running = vec![r];
    v
}

fn fcfs() -> Pipeline {
    pipeline_with(ProfileConfig {
        queue: QueueStrategy::Fcfs,
        preemption: false,
        ..Default::default()
    })
}

#[test]
fn fifo_starts_a_later_job_when_the_head_does_not_fit_but_fcfs_keeps_it_waiting() {
    let greedy = pipeline_with(ProfileConfig {
        queue: QueueStrategy::Fifo,
        preemption: false,
        ..Default::default()
    });
    let out = greedy.schedule(&head_of_line_view());
    assert_eq!(placed_on(&out, 2), Some("a"), "fifo is first fit");

    let out = fcfs().schedule(&head_of_line_view());
    assert!(out.placements.is_empty(), "{out:#?}");
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 insufficient cpu (fcfs: waits its turn)"
    );
    assert_eq!(summary_of(&out, 2), "behind job 1 (fcfs: waits its turn)");
    assert!(out.unplaced.iter().all(|u| waits_fcfs_turn(&u.summary)));
}

#[test]
fn fcfs_starts_jobs_in_order_until_the_first_that_does_not_fit() {
    let mut v = head_of_line_view();
    v.running.clear();
    v.workers[0] = worker("a", 4, 8);
    v.pending.push(job(3, 3000, Priority::Medium));
    v.pending.push(job(4, 1000, Priority::Medium));
    let out = fcfs().schedule(&v);
    // 2 + 1 cores start; job 3 (3 cores) waits for 1 more; job 4 stays behind it.
    assert_eq!(placed_on(&out, 1), Some("a"));
    assert_eq!(placed_on(&out, 2), Some("a"));
    assert_eq!(placed_on(&out, 4), None);
    assert_eq!(summary_of(&out, 4), "behind job 3 (fcfs: waits its turn)");
}

#[test]
fn a_job_that_fits_no_worker_even_when_empty_does_not_block_a_fcfs_queue() {
    let mut v = head_of_line_view();
    v.pending[0] = job(1, 8000, Priority::Medium); // wider than the 4-core worker
    let selector = SchedulingConstraints {
        node_selector: labels(&[("gpu", "a100")]),
        ..Default::default()
    };
    v.pending
        .insert(1, constrained(job(5, 500, Priority::Medium), selector));
    v.pending[1].seq = 1;
    let out = fcfs().schedule(&v);
    assert_eq!(placed_on(&out, 2), Some("a"), "{out:#?}");
    assert!(!waits_fcfs_turn(summary_of(&out, 1)));
    assert!(
        !waits_fcfs_turn(summary_of(&out, 5)),
        "no worker matches it"
    );
}

#[test]
fn aging_improves_rank_one_level_per_interval() {
    assert_eq!(effective_rank(Priority::Batch, 0, 0, 60_000), 4);
    assert_eq!(effective_rank(Priority::Batch, 0, 59_999, 60_000), 4);
    assert_eq!(effective_rank(Priority::Batch, 0, 60_000, 60_000), 3);
    assert_eq!(effective_rank(Priority::Batch, 0, 240_000, 60_000), 0);
    assert_eq!(effective_rank(Priority::Batch, 0, 10_000_000, 60_000), 0);
    assert_eq!(
        effective_rank(Priority::Batch, 0, 10_000_000, 0),
        4,
        "0 disables aging"
    );
}

/// One worker with one slot, every job runs exactly one 1 s cycle, two High jobs arrive every
/// cycle (the queue grows forever). Returns the cycle at which the Batch job submitted at t=0
/// started, if within `cycles`.
fn simulate_batch_under_high_stream(aging_interval_ms: u64, cycles: u64) -> Option<u64> {
    let p = pipeline_with(ProfileConfig {
        aging_interval_ms,
        ..Default::default()
    });
    let mut pending = vec![{
        let mut b = job(1, 1000, Priority::Batch);
        b.enqueued_at_ms = 0;
        b
    }];
    let mut next = 2;
    for c in 0..cycles {
        let now = c * 1000;
        for _ in 0..2 {
            let mut h = job(next, 1000, Priority::High);
            h.enqueued_at_ms = now;
            pending.push(h);
            next += 1;
        }
        let mut v = view(vec![worker("a", 64, 1)], pending.clone());
        v.now_ms = now;
        v.explain = false;
        let out = p.schedule(&v);
        let placed = out.placements.first()?.job;
        if placed == JobId(1) {
            return Some(c);
        }
        pending.retain(|j| j.id != placed);
    }
    None
}

#[test]
fn a_batch_job_under_a_stream_of_high_jobs_starts_within_four_aging_intervals() {
    // Documented bound: 4 × aging_interval + the time of the jobs submitted before it that are
    // Critical by then (none here: it was first in the queue).
    let aging_ms = 10_000;
    let started = simulate_batch_under_high_stream(aging_ms, 200).expect("the Batch job starved");
    assert!(started * 1000 <= 4 * aging_ms, "started at {started} s");
    assert_eq!(
        simulate_batch_under_high_stream(0, 200),
        None,
        "without aging it would starve"
    );
}

#[test]
fn fair_share_with_weights_three_to_one_splits_a_saturated_pool_three_to_one() {
    let mut profile = ProfileConfig {
        queue: QueueStrategy::Fair,
        ..Default::default()
    };
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    profile.tenant_weights.insert(a.clone(), 3);
    let p = pipeline_with(profile);
    let mut jobs = Vec::new();
    for i in 0..100 {
        // Tenant b submitted first: FIFO alone would give it everything.
        let mut j = job(i + 1, 1000, Priority::Medium);
        j.tenant = b.clone();
        jobs.push(j);
        let mut j = job(i + 1001, 1000, Priority::Medium);
        j.tenant = a.clone();
        jobs.push(j);
    }
    let out = p.schedule(&view(vec![worker("w", 40, 40)], jobs.clone()));
    let of = |t: &TenantId| {
        out.placements
            .iter()
            .filter(|pl| jobs.iter().any(|j| j.id == pl.job && &j.tenant == t))
            .count()
    };
    assert_eq!(out.placements.len(), 40);
    assert!((29..=31).contains(&of(&a)), "a got {}", of(&a));
    assert!((9..=11).contains(&of(&b)), "b got {}", of(&b));
}

#[test]
fn quotas_hold_jobs_with_a_reason_instead_of_rejecting_them() {
    let acme = TenantId::new("acme").unwrap();
    let mut w = worker("w", 64, 16);
    let mut run = Vec::new();
    for i in 0..4 {
        let mut r = running(100 + i, &mut w, 1000, Priority::Medium);
        r.tenant = acme.clone();
        run.push(r);
    }
    let mut config = SchedulerConfig::default();
    config.quotas.insert(
        acme.clone(),
        TenantQuota {
            max_running_jobs: Some(4),
            ..Default::default()
        },
    );
    config.quotas.insert(
        TenantId::new("lab").unwrap(),
        TenantQuota {
            max_cpu_millis: Some(2000),
            ..Default::default()
        },
    );
    let mut j1 = job(1, 1000, Priority::Medium);
    j1.tenant = acme.clone();
    let mut j2 = job(2, 1500, Priority::Medium);
    j2.tenant = TenantId::new("lab").unwrap();
    let mut j3 = job(3, 1500, Priority::Medium);
    j3.tenant = TenantId::new("lab").unwrap();
    let mut v = view(vec![w], vec![j1, j2, j3]);
    v.running = run;
    let out = Pipeline::new(config).schedule(&v);
    assert_eq!(
        out.held[0],
        Held {
            job: JobId(1),
            reason: "tenant acme at quota: 4/4 running jobs".into()
        }
    );
    assert_eq!(placed_on(&out, 2), Some("w"));
    assert_eq!(
        out.held[1].reason,
        "tenant lab at quota: cpu 1500m/2 in use, job needs 1500m"
    );
    assert!(out.unplaced.is_empty());
}

fn backfill_view(third_time_limit_ms: u64) -> ClusterView {
    let mut w = worker("w", 6, 8);
    let mut r = running(100, &mut w, 3000, Priority::Medium);
    r.started_at_ms = NOW;
    r.time_limit_ms = Some(100_000);
    let mut wide = job(1, 6000, Priority::High);
    wide.time_limit_ms = Some(1_000_000);
    let mut short = job(2, 1000, Priority::Medium);
    short.time_limit_ms = Some(50_000);
    let mut long = job(3, 1000, Priority::Medium);
    long.time_limit_ms = Some(third_time_limit_ms);
    let mut v = view(vec![w], vec![wide, short, long]);
    v.running = vec![r];
    v
}

#[test]
fn backfill_starts_a_short_job_ahead_of_a_blocked_wide_one_but_not_a_long_one() {
    let p = pipeline_with(ProfileConfig {
        queue: QueueStrategy::Backfill,
        preemption: false,
        ..Default::default()
    });
    let out = p.schedule(&backfill_view(500_000));
    assert_eq!(
        out.reservations,
        vec![Reservation {
            job: JobId(1),
            worker: WorkerId::new("w").unwrap(),
            at_ms: NOW + 100_000,
        }]
    );
    assert_eq!(placed_on(&out, 2), Some("w"), "ends before the reservation");
    assert_eq!(summary_of(&out, 3), "0/1 workers fit: 1 reserved for job 1");
    // The short one does not delay the reservation: re-planning with it running keeps the time.
    let mut v = backfill_view(500_000);
    v.pending.retain(|j| j.id != JobId(2));
    let mut w = v.workers[0].clone();
    let mut r = running(2, &mut w, 1000, Priority::Medium);
    r.started_at_ms = NOW;
    r.time_limit_ms = Some(50_000);
    v.workers[0] = w;
    v.running.push(r);
    assert_eq!(p.schedule(&v).reservations[0].at_ms, NOW + 100_000);
    // Without backfill (plain priority) the long job would have started and delayed the wide one.
    let plain = pipeline_with(ProfileConfig {
        preemption: false,
        ..Default::default()
    });
    assert_eq!(
        placed_on(&plain.schedule(&backfill_view(500_000)), 3),
        Some("w")
    );
}

#[test]
fn a_long_job_refused_by_the_reservation_does_not_refuse_a_short_one_of_the_same_shape() {
    let p = pipeline_with(ProfileConfig {
        queue: QueueStrategy::Backfill,
        preemption: false,
        ..Default::default()
    });
    let mut v = backfill_view(500_000);
    v.pending.swap(1, 2); // the long job (3) now comes before the short one (2)
    v.pending[1].seq = 2;
    v.pending[2].seq = 3;
    let out = p.schedule(&v);
    assert_eq!(summary_of(&out, 3), "0/1 workers fit: 1 reserved for job 1");
    assert_eq!(placed_on(&out, 2), Some("w"));
}

#[test]
fn backfill_lets_a_long_job_use_resources_the_reservation_does_not_need() {
    let p = pipeline_with(ProfileConfig {
        queue: QueueStrategy::Backfill,
        preemption: false,
        ..Default::default()
    });
    let mut v = backfill_view(500_000);
    // 5 cores free now, 8 at t+100 s; the wide job needs 6 then: 2 spare for long jobs.
    v.workers[0].capacity.cpu_millis = 8000;
    let out = p.schedule(&v);
    assert_eq!(placed_on(&out, 3), Some("w"), "{out:#?}");
}

// -------------------------------------------------------------------------------- preemption

fn preemption_view(preemptor: Priority, victim: Priority) -> ClusterView {
    let mut w = worker("w", 2, 4);
    let r = running(100, &mut w, 2000, victim);
    let mut v = view(vec![w], vec![job(1, 2000, preemptor)]);
    v.running = vec![r];
    v
}

#[test]
fn critical_preempts_batch() {
    let out = default_pipeline().schedule(&preemption_view(Priority::Critical, Priority::Batch));
    assert_eq!(
        out.preemptions,
        vec![Preemption {
            job: JobId(1),
            attempt: AttemptNo(1),
            epoch: Epoch(3),
            worker: WorkerId::new("w").unwrap(),
            victims: vec![JobId(100)],
        }]
    );
    assert!(out.placements.is_empty() && out.unplaced.is_empty());
}

#[test]
fn low_and_batch_preempt_nothing_and_equal_priority_is_never_preempted() {
    for (pre, vic) in [
        (Priority::Low, Priority::Batch),
        (Priority::Batch, Priority::Batch),
        (Priority::Critical, Priority::Critical),
        (Priority::Medium, Priority::Medium),
        (Priority::High, Priority::Critical),
    ] {
        let out = default_pipeline().schedule(&preemption_view(pre, vic));
        assert!(out.preemptions.is_empty(), "{pre:?} preempted {vic:?}");
        assert_eq!(out.unplaced.len(), 1);
    }
    let out = default_pipeline().schedule(&preemption_view(Priority::Medium, Priority::Low));
    assert_eq!(out.preemptions.len(), 1, "Medium preempts Low");
}

#[test]
fn preemption_is_off_when_the_profile_says_so() {
    let p = pipeline_with(ProfileConfig {
        preemption: false,
        ..Default::default()
    });
    assert!(
        p.schedule(&preemption_view(Priority::Critical, Priority::Batch))
            .preemptions
            .is_empty()
    );
}

#[test]
fn preemption_chooses_the_cheapest_victims() {
    // w1 would need a Low victim; w2 two Batch ones, w3 one Batch among three.
    let mut w1 = worker("w1", 2, 4);
    let mut w2 = worker("w2", 2, 4);
    let mut w3 = worker("w3", 3, 4);
    let run = vec![
        running(10, &mut w1, 2000, Priority::Low),
        running(20, &mut w2, 1000, Priority::Batch),
        running(21, &mut w2, 1000, Priority::Batch),
        running(30, &mut w3, 1000, Priority::Batch),
        running(31, &mut w3, 1000, Priority::Batch),
        running(32, &mut w3, 1000, Priority::Batch),
    ];
    let mut v = view(vec![w1, w2, w3], vec![job(1, 1000, Priority::Critical)]);
    v.running = run;
    let out = default_pipeline().schedule(&v);
    assert_eq!(out.preemptions.len(), 1);
    let p = &out.preemptions[0];
    assert_eq!(
        p.worker.as_str(),
        "w2",
        "one Batch victim, lowest worker id among equals"
    );
    assert_eq!(p.victims.len(), 1);
    assert!(p.victims[0] == JobId(20) || p.victims[0] == JobId(21));
    // The nominated job is accounted: a second Critical one takes the next cheapest victim
    // and never reuses a victim.
    v.pending.push(job(2, 1000, Priority::Critical));
    let out = default_pipeline().schedule(&v);
    let all: Vec<JobId> = out
        .preemptions
        .iter()
        .flat_map(|p| p.victims.clone())
        .collect();
    assert_eq!(out.preemptions.len(), 2);
    assert_eq!(all.len(), 2);
    assert_ne!(all[0], all[1]);
}

#[test]
fn preemption_requires_the_non_resource_filters_to_pass() {
    let mut w = with_labels(worker("w", 2, 4), &[("zone", "a")]);
    let r = running(100, &mut w, 2000, Priority::Batch);
    let c = SchedulingConstraints {
        node_selector: labels(&[("zone", "b")]),
        ..Default::default()
    };
    let mut v = view(
        vec![w],
        vec![constrained(job(1, 2000, Priority::Critical), c)],
    );
    v.running = vec![r];
    let out = default_pipeline().schedule(&v);
    assert!(out.preemptions.is_empty());
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 node selector mismatch"
    );
}

// ------------------------------------------------------------------------------ NoExecute

#[test]
fn no_execute_evicts_untolerated_jobs_now_and_tolerated_ones_after_their_seconds() {
    let mut w = worker("w", 8, 8);
    w.taints.push(Taint {
        key: "maintenance".into(),
        value: String::new(),
        effect: TaintEffect::NoExecute,
        added_at_ms: NOW - 10_000,
    });
    let plain = running(1, &mut w, 100, Priority::Medium);
    let mut patient = running(2, &mut w, 100, Priority::Medium);
    patient.tolerations = vec!["maintenance:NoExecute:60".parse().unwrap()];
    let mut forever = running(3, &mut w, 100, Priority::Medium);
    forever.tolerations = vec!["maintenance:Exists".parse().unwrap()];
    let mut v = view(vec![w], vec![]);
    v.running = vec![plain, patient, forever];
    let ev = evictions(&v);
    assert_eq!(ev.evictions.len(), 1);
    assert_eq!(ev.evictions[0].job, JobId(1));
    assert_eq!(ev.evictions[0].at_ms, NOW - 10_000);
    assert_eq!(ev.next_at_ms, Some(NOW + 50_000));
    v.now_ms = NOW + 50_000;
    let ev = evictions(&v);
    assert_eq!(
        ev.evictions.iter().map(|e| e.job.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(ev.next_at_ms, None);
    assert_eq!(default_pipeline().schedule(&v).evictions, ev.evictions);
}

// ----------------------------------------------------------------------- plugins & profiles

struct PreferWorker(&'static str);
impl SchedulingPlugin for PreferWorker {
    fn name(&self) -> &str {
        "prefer_worker"
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        _: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        Some(if w.info.id.as_str() == self.0 {
            1.0
        } else {
            0.0
        })
    }
}

struct NoOddJobsOn(&'static str);
impl SchedulingPlugin for NoOddJobsOn {
    fn name(&self) -> &str {
        "no_odd_jobs"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        if w.info.id.as_str() == self.0 && job.id.0 % 2 == 1 {
            Err(Reason::Borrowed("odd jobs not welcome"))
        } else {
            Ok(())
        }
    }
    fn cacheable(&self) -> bool {
        false // depends on the job id
    }
}

#[test]
fn a_custom_score_plugin_changes_a_placement() {
    let workers = vec![worker("a", 8, 4), worker("b", 8, 4)];
    let mut profile = ProfileConfig::default();
    profile.plugin_weights.insert("prefer_worker".into(), 100);
    let mut p = pipeline_with(profile);
    assert_eq!(
        placed_on(
            &p.schedule(&view(workers.clone(), vec![job(2, 100, Priority::Medium)])),
            2
        ),
        Some("a")
    );
    p.register_plugin(DEFAULT_PROFILE, Box::new(PreferWorker("b")))
        .unwrap();
    let out = p.schedule(&view(workers, vec![job(2, 100, Priority::Medium)]));
    assert_eq!(placed_on(&out, 2), Some("b"));
    assert!(
        out.explanations[0].top_scores[0]
            .breakdown
            .contains_key("prefer_worker")
    );
}

#[test]
fn a_custom_filter_excludes_a_worker_with_its_reason() {
    let mut p = default_pipeline();
    p.register_plugin(DEFAULT_PROFILE, Box::new(NoOddJobsOn("a")))
        .unwrap();
    let out = p.schedule(&view(
        vec![worker("a", 8, 4)],
        vec![job(1, 100, Priority::Medium), job(2, 100, Priority::Medium)],
    ));
    assert_eq!(
        summary_of(&out, 1),
        "0/1 workers fit: 1 odd jobs not welcome"
    );
    assert_eq!(placed_on(&out, 2), Some("a"));
    assert_eq!(
        p.register_plugin("nope", Box::new(NoOddJobsOn("a")))
            .unwrap_err(),
        SchedulingError::UnknownProfile("nope".into())
    );
    assert!(matches!(
        p.register_plugin(DEFAULT_PROFILE, Box::new(NoOddJobsOn("a"))),
        Err(SchedulingError::DuplicatePlugin { .. })
    ));
}

#[test]
fn disabled_built_in_filters_do_not_run() {
    let p = pipeline_with(ProfileConfig {
        disabled_plugins: vec!["taint_toleration".into()],
        ..Default::default()
    });
    let out = p.schedule(&view(
        vec![with_taint(worker("gpu", 8, 4), "dedicated=gpu:NoSchedule")],
        vec![job(1, 100, Priority::Medium)],
    ));
    assert_eq!(placed_on(&out, 1), Some("gpu"));
}

#[test]
fn a_job_naming_an_unknown_profile_is_unplaced_with_that_reason() {
    let j = constrained(
        job(1, 100, Priority::Medium),
        SchedulingConstraints {
            profile: Some("gpu-batch".into()),
            ..Default::default()
        },
    );
    let out = default_pipeline().schedule(&view(vec![worker("a", 8, 4)], vec![j]));
    assert_eq!(summary_of(&out, 1), "unknown scheduler profile gpu-batch");
}

#[test]
fn jobs_use_their_named_profile() {
    let mut config = SchedulerConfig::default();
    config.profiles.insert(
        "packing".into(),
        ProfileConfig {
            worker_selection: WorkerSelectionStrategy::BinPacking,
            ..Default::default()
        },
    );
    let p = Pipeline::new(config);
    assert_eq!(p.profile_names(), vec!["default", "packing"]);
    let j = constrained(
        job(1, 1000, Priority::Medium),
        SchedulingConstraints {
            profile: Some("packing".into()),
            ..Default::default()
        },
    );
    let out = p.schedule(&view(
        vec![loaded("busy", 16, 12), loaded("idle", 16, 0)],
        vec![j],
    ));
    assert_eq!(placed_on(&out, 1), Some("busy"));
}

#[test]
fn a_job_past_its_scheduling_deadline_expires_with_the_last_summary() {
    let mut j = job(1, 100_000, Priority::Medium);
    j.deadline_at_ms = Some(NOW);
    let mut k = job(2, 100_000, Priority::Medium);
    k.deadline_at_ms = Some(NOW + 1);
    let out = default_pipeline().schedule(&view(vec![worker("a", 8, 4)], vec![j, k]));
    assert_eq!(
        out.expired,
        vec![Expired {
            job: JobId(1),
            reason: "scheduling deadline exceeded: 0/1 workers fit: 1 insufficient cpu".into()
        }]
    );
    assert_eq!(summary_of(&out, 2), "0/1 workers fit: 1 insufficient cpu");
}

#[test]
fn soft_constraints_are_relaxed_after_enough_failures() {
    // Spread max_skew 1 with zone b full: strict spread refuses a second job in zone a.
    let mut a = with_labels(worker("a", 64, 8), &[("zone", "a")]);
    let mut b = with_labels(worker("b", 64, 1), &[("zone", "b")]);
    let mut r = running(100, &mut a, 100, Priority::Medium);
    r.labels = labels(&[("app", "web")]);
    let filler = running(101, &mut b, 100, Priority::Critical);
    let mut j = app_job(
        1,
        "web",
        term(JobAffinityKind::Spread { max_skew: 1 }, "web", "zone"),
    );
    let mut v = view(vec![a, b], vec![j.clone()]);
    v.running = vec![r, filler];
    let p = pipeline_with(ProfileConfig {
        relax_soft_after_failures: Some(3),
        ..Default::default()
    });
    let out = p.schedule(&v);
    assert_eq!(
        summary_of(&out, 1),
        "0/2 workers fit: 1 no free slot, 1 topology spread skew exceeded"
    );
    j.schedule_failures = 3;
    v.pending = vec![j];
    assert_eq!(placed_on(&p.schedule(&v), 1), Some("a"));

    // Preferred affinity is a score: once relaxed it no longer steers the choice.
    let pref = SchedulingConstraints {
        node_affinity: NodeAffinity {
            required: vec![],
            preferred: vec![WeightedTerm {
                weight: 100,
                term: "arch in (arm64)".parse().unwrap(),
            }],
        },
        ..Default::default()
    };
    let workers = vec![
        with_labels(worker("a", 8, 4), &[("arch", "amd64")]),
        with_labels(loaded("b", 8, 6), &[("arch", "arm64")]),
    ];
    let mut j = constrained(job(1, 100, Priority::Medium), pref);
    let mut profile = ProfileConfig {
        relax_soft_after_failures: Some(3),
        ..Default::default()
    };
    profile.plugin_weights.insert("node_affinity".into(), 10);
    let p = pipeline_with(profile);
    assert_eq!(
        placed_on(&p.schedule(&view(workers.clone(), vec![j.clone()])), 1),
        Some("b")
    );
    j.schedule_failures = 3;
    assert_eq!(
        placed_on(&p.schedule(&view(workers, vec![j])), 1),
        Some("a")
    );
}

#[test]
fn unschedulable_backoff_doubles_from_one_second_to_a_minute() {
    let got: Vec<u64> = (0..9).map(unschedulable_backoff_ms).collect();
    assert_eq!(
        got,
        vec![0, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
    );
    assert_eq!(unschedulable_backoff_ms(u32::MAX), 60_000);
}

#[test]
fn explanations_are_optional_serialisable_and_keep_the_top_three() {
    let workers: Vec<WorkerInfo> = (0..5).map(|i| loaded(&format!("w{i}"), 16, i)).collect();
    let mut v = view(
        workers,
        vec![
            job(1, 100, Priority::Medium),
            job(2, 1_000_000, Priority::Medium),
        ],
    );
    let out = default_pipeline().schedule(&v);
    assert_eq!(out.explanations.len(), 2);
    let e = &out.explanations[0];
    assert_eq!((e.feasible, e.total, e.top_scores.len()), (5, 5, 3));
    assert_eq!(e.chosen.as_ref().map(|w| w.as_str()), Some("w0"));
    assert!(e.top_scores[0].total >= e.top_scores[1].total);
    let json = serde_json::to_string(&out.explanations).unwrap();
    let back: Vec<Explanation> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out.explanations);
    assert_eq!(
        out.explanations[1].filter_counts.get("insufficient cpu"),
        Some(&5)
    );
    v.explain = false;
    let out = default_pipeline().schedule(&v);
    assert!(out.explanations.is_empty());
    assert_eq!(summary_of(&out, 2), "0/5 workers fit: 5 insufficient cpu");
}

// ----------------------------------------------------------------------------- sampling

/// Workers w000.. of 8 cores, all half busy except one far from the scan start.
fn half_busy_but_one(n: usize, idle: usize) -> Vec<WorkerInfo> {
    (0..n)
        .map(|i| {
            let mut w = worker(&format!("w{i:04}"), 8, 8);
            if i != idle {
                w.allocated.cpu_millis = 4000;
                w.used_slots = 1;
            }
            w
        })
        .collect()
}

#[test]
fn a_cluster_of_at_most_min_feasible_workers_is_scored_exhaustively() {
    // Default profile: min_feasible_workers_to_score = 100 covers 100 workers whatever the
    // percentage, so the best-scored worker wins from any scan start.
    let mut v = view(
        half_busy_but_one(100, 93),
        vec![job(1, 1000, Priority::Medium)],
    );
    for cycle in 0..5 {
        v.cycle = cycle;
        let out = default_pipeline().schedule(&v);
        let e = &out.explanations[0];
        assert_eq!((e.scanned, e.feasible, e.total), (100, 100, 100));
        assert_eq!(placed_on(&out, 1), Some("w0093"));
    }
}

#[test]
fn percentage_100_scores_every_worker_and_the_default_samples_large_clusters() {
    let v = view(
        half_busy_but_one(1000, 993),
        vec![job(1, 1000, Priority::Medium)],
    );
    let out = pipeline_with(ProfileConfig {
        percentage_of_workers_to_score: 100,
        ..Default::default()
    })
    .schedule(&v);
    assert_eq!(out.explanations[0].feasible, 1000);
    assert_eq!(placed_on(&out, 1), Some("w0993"));
    // Adaptive: 50 % - 1 % per 125 workers = 42 % of 1,000.
    let out = default_pipeline().schedule(&v);
    assert_eq!(out.explanations[0].feasible, 420);
    // 1 %, at least 100: the scan stops at 100 feasible workers.
    let out = pipeline_with(ProfileConfig {
        percentage_of_workers_to_score: 1,
        ..Default::default()
    })
    .schedule(&v);
    assert_eq!(out.explanations[0].feasible, 100);
}

// ------------------------------------------------------------------------------------ config

#[test]
fn fifo_and_fcfs_are_distinct_queue_names() {
    let parse = |q: &str| {
        toml::from_str::<SchedulerConfig>(&format!("[profiles.default]\nqueue = \"{q}\"\n"))
            .unwrap()
            .profiles["default"]
            .queue
    };
    assert_eq!(parse("fifo"), QueueStrategy::Fifo);
    assert_eq!(parse("fcfs"), QueueStrategy::Fcfs);
}

#[test]
fn profiles_deserialize_from_toml_and_reject_unknown_fields() {
    let text = r#"
        [profiles.default]
        queue = "backfill"
        aging_interval_ms = 30000
        preemption = false
        percentage_of_workers_to_score = 100

        [profiles.gpu]
        queue = "fair"
        worker_selection = { custom = { most_allocated = 5, spread = 1 } }
        tenant_weights = { acme = 3 }
        relax_soft_after_failures = 5
        disabled_plugins = ["round_robin"]

        [quotas.acme]
        max_running_jobs = 4
        max_cpu_millis = 8000
    "#;
    let c: SchedulerConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.profiles["default"].queue, QueueStrategy::Backfill);
    assert_eq!(
        c.profiles["gpu"].worker_selection.weights().most_allocated,
        5
    );
    assert_eq!(
        c.quotas[&TenantId::new("acme").unwrap()].max_running_jobs,
        Some(4)
    );
    let e = toml::from_str::<SchedulerConfig>("[profiles.x]\nqueue = \"fifo\"\nspeed = 3\n")
        .unwrap_err();
    assert!(e.to_string().contains("speed"), "{e}");
    let back: SchedulerConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn validation_names_field_value_and_reason() {
    let mut c = SchedulerConfig::default();
    c.profiles
        .get_mut("default")
        .unwrap()
        .percentage_of_workers_to_score = 150;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("scheduler.profiles.default.percentage_of_workers_to_score")
            && e.contains("150"),
        "{e}"
    );
    let mut c = SchedulerConfig::default();
    c.profiles.get_mut("default").unwrap().disabled_plugins = vec!["magic".into()];
    assert!(c.validate().unwrap_err().to_string().contains("magic"));
    let mut c = SchedulerConfig::default();
    c.profiles
        .insert("bad name".into(), ProfileConfig::default());
    assert!(c.validate().unwrap_err().to_string().contains("bad name"));
}

#[test]
fn constraints_decode_from_partial_data() {
    let c: SchedulingConstraints =
        serde_json::from_str(r#"{"node_selector":{"zone":"a"}}"#).unwrap();
    assert_eq!(c.node_selector["zone"], "a");
    assert_eq!(c.profile, None);
    let full = SchedulingConstraints {
        profile: Some("gpu".into()),
        tolerations: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
        job_affinity: vec![term(JobAffinityKind::Spread { max_skew: 2 }, "web", "zone")],
        ..Default::default()
    };
    let json = serde_json::to_string(&full).unwrap();
    assert_eq!(
        serde_json::from_str::<SchedulingConstraints>(&json).unwrap(),
        full
    );
}

#[test]
fn constraints_and_explanations_survive_the_store_codec() {
    let c = SchedulingConstraints {
        profile: Some("gpu".into()),
        node_selector: labels(&[("zone", "a")]),
        node_affinity: NodeAffinity {
            required: vec!["cores gt 4 && !spot".parse().unwrap()],
            preferred: vec![WeightedTerm {
                weight: 5,
                term: "arch in (arm64)".parse().unwrap(),
            }],
        },
        tolerations: vec!["spot:NoExecute:30".parse().unwrap()],
        job_affinity: vec![term(JobAffinityKind::Spread { max_skew: 1 }, "web", "zone")],
        scheduling_deadline_ms: Some(60_000),
    };
    let bytes = crate::codec::encode(&c).unwrap();
    assert_eq!(
        crate::codec::decode_store::<SchedulingConstraints>(&bytes).unwrap(),
        c
    );
    let out = default_pipeline().schedule(&view(
        vec![worker("a", 8, 4)],
        vec![job(1, 100, Priority::Medium)],
    ));
    let bytes = crate::codec::encode(&out).unwrap();
    assert_eq!(crate::codec::decode_store::<Outcome>(&bytes).unwrap(), out);
}

#[test]
fn past_the_static_set_limit_filters_run_per_worker_with_the_same_reasons() {
    let jobs: Vec<QueuedJob> = (0..1100)
        .map(|i| {
            let c = SchedulingConstraints {
                node_selector: labels(&[(&format!("k{i}"), "v")]),
                ..Default::default()
            };
            constrained(job(i + 1, 100, Priority::Low), c)
        })
        .collect();
    let mut workers = vec![worker("a", 8, 4), worker("b", 8, 4)];
    workers[1].labels = labels(&[("k1099", "v")]);
    let out = default_pipeline().schedule(&view(workers, jobs));
    assert_eq!(out.unplaced.len(), 1099);
    assert!(
        out.unplaced
            .iter()
            .all(|u| u.summary.contains("node selector mismatch"))
    );
    assert_eq!(placed_on(&out, 1100), Some("b"), "decided past the limit");
}

#[test]
fn past_the_job_affinity_term_limit_a_job_waits_for_the_next_cycle() {
    let jobs: Vec<QueuedJob> = (0..1030)
        .map(|i| {
            app_job(
                i + 1,
                "x",
                term(JobAffinityKind::AntiAffinity, &format!("app{i}"), "zone"),
            )
        })
        .collect();
    let mut big = with_labels(worker("a", 200, 2000), &[("zone", "a")]);
    big.capacity.memory_bytes = 2048 * GIB;
    let mut v = view(vec![big], jobs);
    v.explain = false;
    let out = default_pipeline().schedule(&v);
    assert_eq!(out.placements.len(), 1024);
    assert_eq!(out.unplaced.len(), 6);
    assert!(
        out.unplaced[0]
            .summary
            .contains("distinct job-affinity terms"),
        "{:?}",
        out.unplaced[0]
    );
}

// ------------------------------------------------------------------------------------- bench

#[test]
fn the_small_bench_places_a_sane_number_of_jobs() {
    let f = bench::run(500, 5000, 7);
    assert_eq!(f.decided, 5000);
    assert!(f.placed > 1000, "{f:?}");
    assert!(f.unplaced > 0, "the scenario oversubscribes: {f:?}");
    // The 2% quality target is measured at full size (1,000 workers, 10,000 jobs, release
    // build: `scheduler_bench_full_size`); this small debug-build run allows for its noise.
    let (q, qe) = bench::quality(200, 2000, 7);
    assert!(q > 0 && qe > 0);
    let delta_pct = (qe as f64 - q as f64) / qe as f64 * 100.0;
    assert!(delta_pct <= 5.0, "q={q} qe={qe}");
}

#[test]
fn the_bench_scenario_is_deterministic() {
    let v = bench::scenario(100, 1000, 3);
    let p = Pipeline::new(bench::bench_config(0));
    assert_eq!(p.schedule(&v), p.schedule(&v));
    assert_eq!(
        bench::SplitMix64::new(1).next_u64(),
        bench::SplitMix64::new(1).next_u64()
    );
}

// ------------------------------------------------------------------------------- properties

#[derive(Debug, Clone)]
struct Gen {
    workers: Vec<(u64, u32, u8)>,
    running: Vec<(usize, u64, usize)>,
    pending: Vec<(u64, usize, u8, u8)>,
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    (
        proptest::collection::vec((1u64..16, 1u32..6, 0u8..3), 1..8),
        proptest::collection::vec((0usize..8, 100u64..4000, 0usize..5), 0..20),
        proptest::collection::vec((100u64..6000, 0usize..5, 0u8..3, 0u8..6), 0..40),
    )
        .prop_map(|(workers, running, pending)| Gen {
            workers,
            running,
            pending,
        })
}

/// Builds a consistent view: running jobs only where they fit.
fn build(g: &Gen) -> ClusterView {
    let mut workers: Vec<WorkerInfo> = g
        .workers
        .iter()
        .enumerate()
        .map(|(i, (cores, slots, zone))| {
            let z = format!("z{zone}");
            with_labels(worker(&format!("w{i}"), *cores, *slots), &[("zone", &z)])
        })
        .collect();
    let mut run = Vec::new();
    for (k, (wi, cpu, p)) in g.running.iter().enumerate() {
        let w = &mut workers[wi % g.workers.len()];
        let free = w.free();
        if *cpu <= free.cpu_millis && GIB <= free.memory_bytes && w.free_slots() > 0 {
            run.push(running(1000 + k as u64, w, *cpu, Priority::ALL[*p]));
        }
    }
    let pending = g
        .pending
        .iter()
        .enumerate()
        .map(|(k, (cpu, p, zone, kind))| {
            let mut j = job(k as u64 + 1, *cpu, Priority::ALL[*p]);
            let z = format!("z{zone}");
            j.constraints = Arc::new(match kind {
                0 => SchedulingConstraints::default(),
                1 => SchedulingConstraints {
                    node_selector: labels(&[("zone", &z)]),
                    ..Default::default()
                },
                2 => {
                    j.labels = labels(&[("app", "db")]);
                    SchedulingConstraints {
                        job_affinity: vec![term(
                            JobAffinityKind::AntiAffinity,
                            "db",
                            TOPOLOGY_WORKER,
                        )],
                        ..Default::default()
                    }
                }
                3 => SchedulingConstraints {
                    node_affinity: NodeAffinity {
                        required: vec![],
                        preferred: vec![WeightedTerm {
                            weight: 10,
                            term: format!("zone in ({z})").parse().unwrap(),
                        }],
                    },
                    ..Default::default()
                },
                4 => {
                    j.labels = labels(&[("app", "web")]);
                    SchedulingConstraints {
                        job_affinity: vec![term(
                            JobAffinityKind::Spread { max_skew: 1 },
                            "web",
                            "zone",
                        )],
                        ..Default::default()
                    }
                }
                _ => {
                    j.labels = labels(&[("app", "grp")]);
                    SchedulingConstraints {
                        job_affinity: vec![term(JobAffinityKind::Affinity, "grp", "zone")],
                        ..Default::default()
                    }
                }
            });
            if cpu % 3 != 0 {
                j.time_limit_ms = Some(cpu * 100);
            }
            j
        })
        .collect();
    let mut v = view(workers, pending);
    v.running = run;
    v.explain = false;
    v
}

/// Applies an outcome: placements and nominated jobs run, victims leave.
fn apply(v: &ClusterView, out: &Outcome) -> ClusterView {
    let mut next = v.clone();
    let victims: Vec<JobId> = out
        .preemptions
        .iter()
        .flat_map(|p| p.victims.clone())
        .collect();
    for id in &victims {
        let r = next
            .running
            .iter()
            .position(|r| r.id == *id)
            .expect("victim runs");
        let r = next.running.remove(r);
        let w = next.workers.iter_mut().find(|w| w.id == r.worker).unwrap();
        w.allocated = w.allocated.saturating_sub(&r.resources);
        w.used_slots -= 1;
    }
    let starts = out
        .placements
        .iter()
        .map(|p| (p.job, p.worker.clone()))
        .chain(out.preemptions.iter().map(|p| (p.job, p.worker.clone())));
    for (id, wid) in starts {
        let j = next.pending.iter().position(|j| j.id == id).unwrap();
        let j = next.pending.remove(j);
        let w = next.workers.iter_mut().find(|w| w.id == wid).unwrap();
        w.allocated = w.allocated.saturating_add(&j.resources);
        w.used_slots += 1;
        next.running.push(RunningJob {
            id: j.id,
            worker: wid,
            priority: j.priority,
            tenant: j.tenant,
            resources: j.resources,
            labels: j.labels,
            started_at_ms: v.now_ms,
            time_limit_ms: j.time_limit_ms,
            tolerations: j.constraints.tolerations.clone(),
        });
    }
    next
}

fn assert_no_overcommit(v: &ClusterView) -> Result<(), TestCaseError> {
    for w in &v.workers {
        prop_assert!(w.allocated.fits_in(&w.capacity), "{} over-committed", w.id);
        prop_assert!(w.used_slots <= w.slots, "{} over its slots", w.id);
        let sum = v
            .running
            .iter()
            .filter(|r| r.worker == w.id)
            .fold(Resources::ZERO, |a, r| a.saturating_add(&r.resources));
        prop_assert_eq!(sum, w.allocated);
    }
    Ok(())
}

/// Applies an outcome to `v` in place, reporting each change to `ix` as a caller keeping a
/// [`ClusterIndex`] would.
fn apply_in_place(v: &mut ClusterView, out: &Outcome, ix: &mut ClusterIndex) {
    let victims = out.preemptions.iter().flat_map(|p| p.victims.clone());
    for id in victims.collect::<Vec<_>>() {
        let r = v
            .running
            .iter()
            .position(|r| r.id == id)
            .expect("victim runs");
        let r = v.running.swap_remove(r);
        ix.job_ended(r.id);
        let w = v.workers.iter().position(|w| w.id == r.worker).unwrap();
        v.workers[w].allocated = v.workers[w].allocated.saturating_sub(&r.resources);
        v.workers[w].used_slots -= 1;
        ix.worker_updated(w);
    }
    let starts = out
        .placements
        .iter()
        .map(|p| (p.job, p.worker.clone()))
        .chain(out.preemptions.iter().map(|p| (p.job, p.worker.clone())));
    for (id, wid) in starts.collect::<Vec<_>>() {
        let j = v.pending.iter().position(|j| j.id == id).unwrap();
        let j = v.pending.remove(j);
        let w = v.workers.iter().position(|w| w.id == wid).unwrap();
        v.workers[w].allocated = v.workers[w].allocated.saturating_add(&j.resources);
        v.workers[w].used_slots += 1;
        v.workers[w].state = WorkerState::Busy;
        ix.worker_updated(w);
        let r = RunningJob {
            id: j.id,
            worker: wid,
            priority: j.priority,
            tenant: j.tenant,
            resources: j.resources,
            labels: j.labels,
            started_at_ms: v.now_ms,
            time_limit_ms: j.time_limit_ms,
            tolerations: j.constraints.tolerations.clone(),
        };
        ix.job_started(&r);
        v.running.push(r);
    }
}

proptest! {
    #[test]
    fn a_plan_never_overcommits_and_never_preempts_equal_or_higher_priority(
        g in gen_strategy(),
        queue in 0usize..5,
        pct in prop_oneof![Just(0u32), Just(100)],
    ) {
        let v = build(&g);
        let queue = [QueueStrategy::Fifo, QueueStrategy::Priority, QueueStrategy::Fair, QueueStrategy::Backfill, QueueStrategy::Fcfs][queue];
        let out = pipeline_with(ProfileConfig {
            queue,
            percentage_of_workers_to_score: pct,
            min_feasible_workers_to_score: 2,
            ..Default::default()
        })
        .schedule(&v);
        let decided = out.placements.len() + out.preemptions.len() + out.unplaced.len();
        prop_assert_eq!(decided, v.pending.len());
        let mut seen = std::collections::BTreeSet::new();
        for p in &out.preemptions {
            let me = v.pending.iter().find(|j| j.id == p.job).unwrap().priority;
            for victim in &p.victims {
                prop_assert!(seen.insert(*victim), "victim reused");
                let r = v.running.iter().find(|r| r.id == *victim).unwrap();
                prop_assert!(r.priority.rank() > me.rank(), "{:?} evicted {:?}", me, r.priority);
                prop_assert_eq!(&r.worker, &p.worker);
            }
        }
        assert_no_overcommit(&apply(&v, &out))?;
    }

    #[test]
    fn fcfs_never_starts_a_job_submitted_after_a_head_that_waits(g in gen_strategy()) {
        let v = build(&g);
        let out = fcfs().schedule(&v);
        let seq = |id: JobId| v.pending.iter().find(|j| j.id == id).unwrap().seq;
        let heads: Vec<&Unplaced> = out
            .unplaced
            .iter()
            .filter(|u| waits_fcfs_turn(&u.summary) && !u.summary.starts_with("behind job"))
            .collect();
        prop_assert!(heads.len() <= 1, "one profile, one head: {:?}", heads);
        if let Some(h) = heads.first() {
            for p in &out.placements {
                prop_assert!(seq(p.job) < seq(h.job), "job {} started behind head {}", p.job, h.job);
            }
            for u in &out.unplaced {
                if u.summary.starts_with("behind job") {
                    prop_assert!(seq(u.job) > seq(h.job));
                }
            }
        }
        prop_assert_eq!(out.placements.len() + out.unplaced.len(), v.pending.len());
    }

    #[test]
    fn the_same_view_always_gives_the_same_outcome(g in gen_strategy(), cycle in 0u64..5) {
        let mut v = build(&g);
        v.cycle = cycle;
        v.explain = cycle % 2 == 0;
        let p = default_pipeline();
        prop_assert_eq!(p.schedule(&v), p.schedule(&v));
        let mut quiet = v.clone();
        quiet.explain = !v.explain;
        let (a, b) = (p.schedule(&v), p.schedule(&quiet));
        prop_assert_eq!(&a.placements, &b.placements, "explaining does not change decisions");
        prop_assert_eq!(&a.preemptions, &b.preemptions);
        prop_assert_eq!(&a.unplaced, &b.unplaced);
        let mut shuffled = v.clone();
        shuffled.workers.reverse();
        shuffled.pending.reverse();
        shuffled.running.reverse();
        prop_assert_eq!(p.schedule(&v), p.schedule(&shuffled), "input order does not matter");
    }

    #[test]
    fn a_kept_index_gives_the_same_outcomes_as_deriving_the_view_every_cycle(
        g in gen_strategy(),
        queue in 0usize..4,
        pct in prop_oneof![Just(0u32), Just(100)],
        events in proptest::collection::vec((0u8..5, 0usize..64), 1..6),
    ) {
        let queue = [QueueStrategy::Fifo, QueueStrategy::Priority, QueueStrategy::Fair, QueueStrategy::Backfill][queue];
        let p = pipeline_with(ProfileConfig {
            queue,
            percentage_of_workers_to_score: pct,
            min_feasible_workers_to_score: 2,
            ..Default::default()
        });
        let mut v = build(&g);
        let mut ix = ClusterIndex::new();
        for (cycle, (event, k)) in events.into_iter().enumerate() {
            v.cycle = cycle as u64;
            let kept = p.schedule_with(&v, &mut ix);
            prop_assert_eq!(&p.schedule(&v), &kept, "cycle {}", cycle);
            apply_in_place(&mut v, &kept, &mut ix);
            v.now_ms += 1_000;
            let n = v.workers.len();
            match event {
                // A running job ends.
                0 | 1 if !v.running.is_empty() => {
                    let r = v.running.swap_remove(k % v.running.len());
                    ix.job_ended(r.id);
                    let w = v.workers.iter().position(|w| w.id == r.worker).unwrap();
                    v.workers[w].allocated = v.workers[w].allocated.saturating_sub(&r.resources);
                    v.workers[w].used_slots -= 1;
                    ix.worker_updated(w);
                }
                // A worker is tainted, or drains: the static filters change.
                2 => {
                    v.workers[k % n].taints.push("dedicated=gpu:NoSchedule".parse().unwrap());
                    ix.worker_updated(k % n);
                }
                3 => {
                    v.workers[k % n].state = WorkerState::Draining;
                    ix.worker_updated(k % n);
                }
                // A worker joins.
                4 => {
                    v.workers.push(with_labels(worker(&format!("x{k}"), 8, 4), &[("zone", "z1")]));
                    ix.workers_changed();
                }
                _ => {}
            }
        }
    }

    #[test]
    fn stepping_over_full_blocks_of_workers_finds_the_same_workers_as_visiting_each(
        used in proptest::collection::vec((0u64..=8, 0u32..=4), 64..400),
        jobs in proptest::collection::vec((1u64..=8, 0usize..5), 1..60),
        pct in prop_oneof![Just(0u32), Just(1), Just(10), Just(100)],
        min_feasible in 1u32..20,
        cycle in 0u64..1000,
    ) {
        // Busy workers in long runs, so whole blocks of 64 fit nothing.
        let workers = used
            .iter()
            .enumerate()
            .map(|(i, (cores, slots))| {
                let mut w = worker(&format!("w{i:04}"), 8, 4);
                let full = (i / 150) % 2 == 0;
                w.allocated.cpu_millis = if full { 8000 } else { cores * 1000 };
                w.used_slots = if full { 4 } else { *slots };
                w
            })
            .collect();
        let pending = jobs
            .iter()
            .enumerate()
            .map(|(k, (cores, p))| job(k as u64 + 1, cores * 1000, Priority::ALL[*p]))
            .collect();
        let mut v = view(workers, pending);
        v.cycle = cycle;
        let p = pipeline_with(ProfileConfig {
            percentage_of_workers_to_score: pct,
            min_feasible_workers_to_score: min_feasible,
            preemption: false,
            ..Default::default()
        });
        v.explain = true; // visits every worker
        let visiting = p.schedule(&v);
        v.explain = false; // steps over blocks
        let stepping = p.schedule(&v);
        prop_assert_eq!(&visiting.placements, &stepping.placements);
        prop_assert_eq!(&visiting.unplaced, &stepping.unplaced);
    }

    #[test]
    fn sampling_never_places_on_an_infeasible_worker_and_is_deterministic(
        g in gen_strategy(),
        pct in 1u32..=100,
        min_feasible in 1u32..4,
        cycle in 0u64..10,
    ) {
        let mut v = build(&g);
        v.cycle = cycle;
        v.explain = cycle % 2 == 0;
        let p = pipeline_with(ProfileConfig {
            percentage_of_workers_to_score: pct,
            min_feasible_workers_to_score: min_feasible,
            ..Default::default()
        });
        let out = p.schedule(&v);
        prop_assert_eq!(&out, &p.schedule(&v));
        for pl in &out.placements {
            let job = v.pending.iter().find(|j| j.id == pl.job).unwrap();
            let w = v.workers.iter().find(|w| w.id == pl.worker).unwrap();
            prop_assert!(
                constraints::selector_matches(&job.constraints.node_selector, &w.labels),
                "job {} placed on {} outside its node selector", pl.job, pl.worker
            );
        }
        assert_no_overcommit(&apply(&v, &out))?;
    }

    #[test]
    fn replanning_the_applied_plan_places_nothing_conflicting(g in gen_strategy()) {
        let p = pipeline_with(ProfileConfig {
            preemption: false,
            percentage_of_workers_to_score: 100,
            ..Default::default()
        });
        let v = build(&g);
        let first = p.schedule(&v);
        let applied = apply(&v, &first);
        let second = p.schedule(&applied);
        let after = apply(&applied, &second);
        assert_no_overcommit(&after)?;
        // Capacity only shrank: what fitted nowhere still fits nowhere (Affinity and Spread
        // terms aside: more running jobs can satisfy them).
        let grows = |id: JobId| {
            v.pending
                .iter()
                .find(|j| j.id == id)
                .is_some_and(|j| j.constraints.job_affinity.iter().any(|t| t.kind != JobAffinityKind::AntiAffinity))
        };
        for u in first.unplaced.iter().filter(|u| !grows(u.job)) {
            prop_assert!(second.placements.iter().all(|pl| pl.job != u.job), "job {} placed on replan", u.job);
        }
        prop_assert!(second.placements.iter().all(|pl| applied.running.iter().all(|r| r.id != pl.job)));
    }
}

/// The full-size figures (run in release): `cargo test -p hodei-runtime --release
/// scheduler_bench -- --ignored --nocapture`. `hodei bench scheduler` prints the same.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn scheduler_bench_full_size() {
    let seed = std::env::var("HODEI_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let pct = std::env::var("HODEI_BENCH_PCT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let f = bench::run_with(10_000, 100_000, seed, bench::bench_config(pct));
    println!("speed {}", serde_json::to_string(&f).unwrap());
    if std::env::var("HODEI_BENCH_SPEED_ONLY").is_ok() {
        return;
    }
    for seed in [seed, seed + 1, seed + 2, seed + 3, seed + 4] {
        let (q, qe) = bench::quality(1000, 10_000, seed);
        let delta_pct = (qe as f64 - q as f64) / qe as f64 * 100.0;
        println!(
            "quality {{\"seed\":{seed},\"placed\":{q},\"placed_exhaustive\":{qe},\"delta_pct\":{delta_pct:.3}}}"
        );
    }
}
