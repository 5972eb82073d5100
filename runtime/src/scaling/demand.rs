//! Which pool each pending job is demand for, decided with the scheduler's own filters against a
//! would-be worker of each pool.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, PoolId, WorkerId};
use crate::resources::Resources;
use crate::scheduling::{
    DEFAULT_PROFILE, ProfileConfig, QueuedJob, SchedulerConfig, SchedulingConstraints, WorkerInfo,
    would_fit,
};
use crate::worker::{PoolSpec, WorkerState};

/// The label every worker of a pool carries.
pub const POOL_LABEL: &str = "hodei.io/pool";

/// The worker a pool would start: Idle, nothing allocated, the template's capacity, slots and
/// taints, its labels plus `hodei.io/pool=<name>`.
pub fn would_be_worker(pool: &PoolSpec) -> WorkerInfo {
    let mut labels = pool.template.labels.clone();
    labels.insert(POOL_LABEL.to_string(), pool.id.to_string());
    WorkerInfo {
        // Pool and worker ids share one validation, so a pool name is a valid worker id.
        id: WorkerId::new(pool.id.as_str()).expect("a pool name is a valid worker id"),
        pool: pool.id.clone(),
        state: WorkerState::Idle,
        capacity: pool.template.capacity,
        allocated: Resources::ZERO,
        slots: pool.template.slots,
        used_slots: 0,
        labels,
        taints: pool.template.taints.clone(),
    }
}

/// The demand one pool sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolDemand {
    /// Pending jobs no other pool can serve.
    pub only_here: u64,
    /// Pending jobs this pool could serve (only_here included).
    pub could_run_here: u64,
    /// Jobs several pools could serve that are counted for this one (the first fitting pool
    /// that can provision, in the order the pools were given).
    pub shared_assigned: u64,
    /// Longest wait among the jobs this pool scales for (`only_here + shared_assigned`).
    pub oldest_wait_ms: u64,
    /// 90th-percentile wait among them (nearest rank).
    pub p90_wait_ms: u64,
    /// Average wait among them.
    pub avg_wait_ms: u64,
}

impl PoolDemand {
    /// The jobs this pool scales for.
    pub fn jobs(&self) -> u64 {
        self.only_here + self.shared_assigned
    }
}

/// Demand per pool, and the jobs no pool can serve.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Demand {
    /// Every given pool has an entry (zero demand included).
    pub per_pool: BTreeMap<PoolId, PoolDemand>,
    /// `(job, "no pool can run job 7: gpu: insufficient gpu; local: untolerated taint ...")`.
    pub unservable: Vec<(JobId, String)>,
}

/// Splits pending jobs between pools. A job fits a pool when the scheduler's built-in filters
/// ([`would_fit`], with the job's profile) pass on [`would_be_worker`] of that pool. A job that
/// fits one pool is `only_here` demand; one that fits several counts in each `could_run_here`
/// and is scaled for by the **first fitting pool in the order of `pools`** (put the preferred,
/// e.g. cheapest, pool first; sort by name for a neutral order); one that fits none is
/// `unservable` with each pool's reasons. Pools that never provision (External, or
/// `max_workers == 0`) still make a job servable — their workers register by themselves — but a
/// shared job goes to the first fitting pool that can provision, if any. Waits are
/// `now_ms - enqueued_at_ms`.
pub fn demand_by_pool(
    jobs: &[QueuedJob],
    pools: &[PoolSpec],
    scheduler: &SchedulerConfig,
    now_ms: u64,
) -> Demand {
    let templates: Vec<(&PoolSpec, WorkerInfo)> =
        pools.iter().map(|p| (p, would_be_worker(p))).collect();
    let default_profile = ProfileConfig::default();
    let mut demand = Demand {
        per_pool: pools
            .iter()
            .map(|p| (p.id.clone(), PoolDemand::default()))
            .collect(),
        unservable: Vec::new(),
    };
    let mut waits: BTreeMap<&PoolId, Vec<u64>> = BTreeMap::new();
    // Jobs sharing a shape (constraints, request) share the answer.
    let mut cache: HashMap<(&SchedulingConstraints, Resources), Result<Vec<usize>, String>> =
        HashMap::new();
    for job in jobs {
        let key = (job.constraints.as_ref(), job.resources);
        let fits = cache.entry(key).or_insert_with(|| {
            let name = job
                .constraints
                .profile
                .as_deref()
                .unwrap_or(DEFAULT_PROFILE);
            let profile = match scheduler.profiles.get(name) {
                Some(p) => p,
                None if name == DEFAULT_PROFILE => &default_profile,
                None => return Err(format!("unknown scheduler profile {name}")),
            };
            let mut fit = Vec::new();
            let mut why = Vec::new();
            for (i, (pool, w)) in templates.iter().enumerate() {
                match would_fit(job, w, profile, now_ms) {
                    Ok(()) => fit.push(i),
                    Err(r) => why.push(format!("{}: {}", pool.id, r.join(", "))),
                }
            }
            if fit.is_empty() {
                if why.is_empty() {
                    why.push("no pool can be scaled".into());
                }
                Err(why.join("; "))
            } else {
                Ok(fit)
            }
        });
        match fits {
            Err(why) => demand
                .unservable
                .push((job.id, format!("no pool can run job {}: {why}", job.id))),
            Ok(fit) => {
                for &i in fit.iter() {
                    let d = demand
                        .per_pool
                        .entry(templates[i].0.id.clone())
                        .or_default();
                    d.could_run_here += 1;
                }
                let scalable = |p: &PoolSpec| {
                    p.max_workers > 0 && p.provider != crate::worker::ProviderKind::External
                };
                let first = fit
                    .iter()
                    .map(|&i| templates[i].0)
                    .find(|p| scalable(p))
                    .unwrap_or(templates[fit[0]].0);
                let first = &first.id;
                let d = demand.per_pool.entry(first.clone()).or_default();
                if fit.len() == 1 {
                    d.only_here += 1;
                } else {
                    d.shared_assigned += 1;
                }
                waits
                    .entry(first)
                    .or_default()
                    .push(now_ms.saturating_sub(job.enqueued_at_ms));
            }
        }
    }
    for (pool, mut w) in waits {
        w.sort_unstable();
        let d = demand.per_pool.entry(pool.clone()).or_default();
        d.oldest_wait_ms = *w.last().unwrap_or(&0);
        // Nearest rank: the smallest wait with at least 90 % of the waits at or below it.
        let rank = (w.len() * 9).div_ceil(10).max(1);
        d.p90_wait_ms = w[rank - 1];
        d.avg_wait_ms = (w.iter().map(|&x| x as u128).sum::<u128>() / w.len() as u128) as u64;
    }
    demand
}
