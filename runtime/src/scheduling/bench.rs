//! Seeded synthetic clusters for `hodei bench scheduler`: speed (decisions per second on one
//! core) and quality (placements with sampling vs exhaustive scoring).
//!
//! The caller prints the figures (JSON); nothing here reads a clock except [`run`], which times
//! the one call to [`Pipeline::schedule`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::constraints::{
    JobAffinityKind, JobAffinityTerm, NodeAffinity, SchedulingConstraints, Taint, TaintEffect,
    Toleration, TolerationOperator, WeightedTerm,
};
use super::view::{ClusterView, QueuedJob, RunningJob, WorkerInfo};
use super::{
    DEFAULT_PROFILE, Pipeline, ProfileConfig, SchedulerConfig, ScoreWeights,
    WorkerSelectionStrategy,
};
use crate::ids::{AttemptNo, Epoch, JobId, PoolId, TenantId, WorkerId};
use crate::job::Priority;
use crate::resources::Resources;
use crate::worker::WorkerState;

/// SplitMix64: a tiny, well-known seeded generator (deterministic across platforms).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What one speed run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchFigures {
    /// Workers in the view.
    pub workers: usize,
    /// Pending jobs in the view.
    pub jobs: usize,
    /// Jobs placed.
    pub placed: usize,
    /// Jobs nominated through preemption.
    pub preempted: usize,
    /// Jobs found unplaceable (or expired).
    pub unplaced: usize,
    /// Jobs held by quotas.
    pub held: usize,
    /// placed + preempted + unplaced + held.
    pub decided: usize,
    /// Wall time of the one `schedule` call.
    pub elapsed_ms: f64,
    /// decided ÷ elapsed.
    pub placements_per_s: f64,
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A seeded cluster: `workers` workers (zones z0–z5 in regions r0/r1, arch amd64/arm64, 2–64
/// cpus, 4–256 GiB, 4–32 slots, 10% gpu workers tainted `dedicated=gpu:NoSchedule`, 5% spot
/// workers tainted `spot:PreferNoSchedule`, 2% draining), some running Batch/Low jobs, and
/// `jobs` pending jobs of mixed priorities and shapes (node selectors, required and preferred
/// affinity, tolerations, anti-affinity and spread) — more than fits.
pub fn scenario(workers: usize, jobs: usize, seed: u64) -> ClusterView {
    let mut rng = SplitMix64::new(seed);
    let now_ms = 1_000_000_000;
    let mut ws = Vec::with_capacity(workers);
    let mut running = Vec::new();
    let mut next_job = jobs as u64 + 1;
    for i in 0..workers {
        let zone = rng.below(6);
        let cpus = *rng.pick(&[2u64, 4, 8, 16, 32, 64]);
        let mem_gib = (cpus * *rng.pick(&[2u64, 4])).clamp(4, 256);
        let slots = 4 + rng.below(29) as u32;
        let gpu = rng.chance(10);
        let spot = rng.chance(5);
        let arch = if rng.chance(30) { "arm64" } else { "amd64" };
        let mut l = labels(&[
            ("zone", &format!("z{zone}")),
            ("region", &format!("r{}", zone / 3)),
            ("arch", arch),
        ]);
        l.insert("cores".into(), cpus.to_string());
        let mut taints = Vec::new();
        if gpu {
            taints.push(Taint {
                key: "dedicated".into(),
                value: "gpu".into(),
                effect: TaintEffect::NoSchedule,
                added_at_ms: 0,
            });
        }
        if spot {
            taints.push(Taint {
                key: "spot".into(),
                value: String::new(),
                effect: TaintEffect::PreferNoSchedule,
                added_at_ms: 0,
            });
        }
        let id = WorkerId::new(format!("w{i:05}")).expect("valid worker id");
        let capacity = Resources {
            cpu_millis: cpus * 1000,
            memory_bytes: mem_gib * GIB,
            ephemeral_storage_bytes: 100 * GIB,
            gpus: if gpu { 4 } else { 0 },
        };
        let mut allocated = Resources::ZERO;
        let mut used_slots = 0;
        if rng.chance(10) {
            for _ in 0..1 + rng.below(2) {
                let r = Resources {
                    cpu_millis: 500,
                    memory_bytes: 512 * MIB,
                    ..Resources::ZERO
                };
                allocated = allocated.saturating_add(&r);
                used_slots += 1;
                running.push(RunningJob {
                    id: JobId(next_job),
                    worker: id.clone(),
                    priority: if rng.chance(50) {
                        Priority::Batch
                    } else {
                        Priority::Low
                    },
                    tenant: TenantId::new(format!("t{}", rng.below(5))).expect("valid tenant"),
                    resources: r,
                    labels: BTreeMap::new(),
                    started_at_ms: now_ms - 60_000,
                    time_limit_ms: Some(3_600_000),
                    tolerations: Vec::new(),
                });
                next_job += 1;
            }
        }
        ws.push(WorkerInfo {
            id,
            pool: PoolId::new(format!("p{zone}")).expect("valid pool id"),
            state: if rng.chance(2) {
                WorkerState::Draining
            } else if used_slots > 0 {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            },
            capacity,
            allocated,
            slots,
            used_slots,
            labels: l,
            taints,
        });
    }

    let plain = Arc::new(SchedulingConstraints::default());
    let arm = Arc::new(SchedulingConstraints {
        node_selector: labels(&[("arch", "arm64")]),
        ..Default::default()
    });
    let zoned: Vec<Arc<SchedulingConstraints>> = (0..6)
        .map(|z| {
            Arc::new(SchedulingConstraints {
                node_selector: labels(&[("zone", &format!("z{z}"))]),
                ..Default::default()
            })
        })
        .collect();
    let required = Arc::new(SchedulingConstraints {
        node_affinity: NodeAffinity {
            required: vec![
                "zone in (z0,z1,z2) && cores gt 4"
                    .parse()
                    .expect("valid term"),
            ],
            preferred: vec![],
        },
        ..Default::default()
    });
    let preferred = Arc::new(SchedulingConstraints {
        node_affinity: NodeAffinity {
            required: vec![],
            preferred: vec![WeightedTerm {
                weight: 50,
                term: "arch in (amd64)".parse().expect("valid term"),
            }],
        },
        ..Default::default()
    });
    let spot_ok = Arc::new(SchedulingConstraints {
        tolerations: vec![Toleration {
            key: "spot".into(),
            operator: TolerationOperator::Exists,
            ..Default::default()
        }],
        ..Default::default()
    });
    let gpu = Arc::new(SchedulingConstraints {
        tolerations: vec![
            "dedicated=gpu:NoSchedule"
                .parse()
                .expect("valid toleration"),
        ],
        ..Default::default()
    });
    let anti = Arc::new(SchedulingConstraints {
        job_affinity: vec![JobAffinityTerm {
            kind: JobAffinityKind::AntiAffinity,
            selector: labels(&[("app", "db")]),
            topology_key: super::constraints::TOPOLOGY_WORKER.into(),
        }],
        ..Default::default()
    });
    let spread = Arc::new(SchedulingConstraints {
        job_affinity: vec![JobAffinityTerm {
            kind: JobAffinityKind::Spread { max_skew: 2 },
            selector: labels(&[("app", "web")]),
            topology_key: "zone".into(),
        }],
        ..Default::default()
    });

    let tenants: Vec<TenantId> = (0..5)
        .map(|t| TenantId::new(format!("t{t}")).expect("valid tenant"))
        .collect();
    let mut pending = Vec::with_capacity(jobs);
    for j in 0..jobs {
        let priority = match rng.below(100) {
            0..5 => Priority::Critical,
            5..20 => Priority::High,
            20..70 => Priority::Medium,
            70..85 => Priority::Low,
            _ => Priority::Batch,
        };
        let cpu_millis = *rng.pick(&[250u64, 500, 1000, 1000, 2000, 2000, 4000, 8000, 16_000]);
        let memory_bytes = *rng.pick(&[
            256 * MIB,
            512 * MIB,
            GIB,
            2 * GIB,
            4 * GIB,
            8 * GIB,
            16 * GIB,
        ]);
        let mut resources = Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes: GIB,
            gpus: 0,
        };
        let mut job_labels = BTreeMap::new();
        let constraints = match rng.below(100) {
            0..60 => plain.clone(),
            60..68 => arm.clone(),
            68..73 => rng.pick(&zoned).clone(),
            73..78 => required.clone(),
            78..86 => preferred.clone(),
            86..91 => spot_ok.clone(),
            91..94 => {
                resources.gpus = 1;
                gpu.clone()
            }
            94..97 => {
                job_labels.insert("app".to_string(), "db".to_string());
                anti.clone()
            }
            _ => {
                job_labels.insert("app".to_string(), "web".to_string());
                spread.clone()
            }
        };
        pending.push(QueuedJob {
            id: JobId(j as u64 + 1),
            seq: j as u64 + 1,
            priority,
            tenant: rng.pick(&tenants).clone(),
            resources,
            labels: job_labels,
            constraints,
            enqueued_at_ms: now_ms - rng.below(300_000),
            time_limit_ms: if rng.chance(70) {
                Some(60_000 * (1 + rng.below(120)))
            } else {
                None
            },
            next_attempt: AttemptNo(1),
            schedule_failures: 0,
            deadline_at_ms: None,
        });
    }
    ClusterView {
        now_ms,
        epoch: Epoch(1),
        cycle: seed,
        workers: ws,
        pending,
        running,
        explain: false,
    }
}

/// The benchmark's configuration: the default profile with every built-in filter and every
/// scorer switched on, sampling as configured (`percentage` 0 = adaptive, 100 = exhaustive).
pub fn bench_config(percentage: u32) -> SchedulerConfig {
    let profile = ProfileConfig {
        worker_selection: WorkerSelectionStrategy::Custom(ScoreWeights {
            least_loaded: 3,
            balanced: 1,
            most_allocated: 1,
            round_robin: 1,
            node_affinity: 2,
            taint_toleration: 1,
            spread: 2,
        }),
        percentage_of_workers_to_score: percentage,
        ..ProfileConfig::default()
    };
    SchedulerConfig {
        profiles: BTreeMap::from([(DEFAULT_PROFILE.to_string(), profile)]),
        quotas: BTreeMap::new(),
    }
}

fn figures(view: &ClusterView, pipeline: &Pipeline) -> BenchFigures {
    let t = Instant::now();
    let out = pipeline.schedule(view);
    let elapsed = t.elapsed().as_secs_f64();
    let decided = out.placements.len()
        + out.preemptions.len()
        + out.unplaced.len()
        + out.expired.len()
        + out.held.len();
    BenchFigures {
        workers: view.workers.len(),
        jobs: view.pending.len(),
        placed: out.placements.len(),
        preempted: out.preemptions.len(),
        unplaced: out.unplaced.len() + out.expired.len(),
        held: out.held.len(),
        decided,
        elapsed_ms: elapsed * 1000.0,
        placements_per_s: decided as f64 / elapsed.max(1e-9),
    }
}

/// Speed: one cycle over [`scenario`] with the production sampling, all filters and scores on.
pub fn run(workers: usize, jobs: usize, seed: u64) -> BenchFigures {
    run_with(workers, jobs, seed, bench_config(0))
}

/// [`run`] with another configuration (e.g. `bench_config(100)` for exhaustive scoring).
pub fn run_with(workers: usize, jobs: usize, seed: u64, config: SchedulerConfig) -> BenchFigures {
    let view = scenario(workers, jobs, seed);
    figures(&view, &Pipeline::new(config))
}

/// Quality: jobs placed (including preemptions) by the production path and by exhaustive
/// scoring of every feasible worker, on the same scenario. `delta_pct = (QE − Q) / QE × 100`.
pub fn quality(workers: usize, jobs: usize, seed: u64) -> (usize, usize) {
    let view = scenario(workers, jobs, seed);
    let placed = |pct| {
        let out = Pipeline::new(bench_config(pct)).schedule(&view);
        out.placements.len() + out.preemptions.len()
    };
    (placed(0), placed(100))
}
