//! The per-worker state a cycle starts from, derived from a [`ClusterView`] and kept between
//! cycles by callers that can say what changed.
//!
//! [`Pipeline::schedule`](super::Pipeline::schedule) derives it from the whole view every cycle:
//! O(workers + running). A caller that keeps its view between cycles (the simulator; a scheduler
//! actor that folds events into one view) can keep a [`ClusterIndex`] beside it, report the
//! deltas — a worker updated, the worker set changed, a job started or ended — and call
//! [`Pipeline::schedule_with`](super::Pipeline::schedule_with): a cycle then costs what its
//! decisions touch. The cycle's tentative placements and evictions are applied to the index and
//! rolled back at the end (the plan is a proposal); the caller reports what it really applied.
//! The outcome is the same as `schedule` on the same view (property-tested).

use std::collections::BTreeMap;

use super::constraints::{SchedulingConstraints, Taint, TaintEffect};
use super::pipeline::{HashMap, STATIC_SETS_MAX};
use super::view::{ClusterView, RunningJob, WorkerInfo};
use crate::ids::{JobId, TenantId, WorkerId};
use crate::job::Priority;
use crate::resources::Resources;

/// A job holding resources on a worker.
#[derive(Debug, Clone)]
pub(crate) struct Occupant {
    pub(crate) job: JobId,
    pub(crate) priority: Priority,
    pub(crate) tenant: TenantId,
    pub(crate) resources: Resources,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) started_at_ms: u64,
    /// `started + time limit` (`u64::MAX` = never); read as `max(end, now)`.
    pub(crate) end_ms: u64,
    /// From the view (may be preempted); false = placed this cycle.
    pub(crate) running: bool,
}

impl Occupant {
    fn of(r: &RunningJob) -> Occupant {
        Occupant {
            job: r.id,
            priority: r.priority,
            tenant: r.tenant.clone(),
            resources: r.resources,
            labels: r.labels.clone(),
            started_at_ms: r.started_at_ms,
            end_ms: r
                .time_limit_ms
                .map_or(u64::MAX, |t| r.started_at_ms.saturating_add(t)),
            running: true,
        }
    }

    /// Expected end seen from `now_ms` (never in the past).
    pub(crate) fn end_at(&self, now_ms: u64) -> u64 {
        self.end_ms.max(now_ms)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TenantUse {
    pub(crate) jobs: u32,
    pub(crate) resources: Resources,
}

/// Workers passing a profile's static filters for one set of constraints, and the reasons of
/// the others.
#[derive(Default)]
pub(crate) struct StaticSet {
    pub(crate) eligible: Vec<u32>,
    pub(crate) reasons: Vec<(super::Reason, u32)>,
}

/// Workers per block of [`ClusterIndex::block_may_fit`].
pub(crate) const BLOCK: usize = 64;

/// Component-wise maximum of the free resources of a block's workers that have a free slot: no
/// worker of the block fits a request this does not hold.
#[derive(Debug, Clone, Copy, Default)]
struct BlockMax {
    free: Resources,
}

/// What the static filters read of a worker: when it changes, the static sets are recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StaticAttrs {
    accepts_work: bool,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
}

impl StaticAttrs {
    fn of(w: &WorkerInfo) -> StaticAttrs {
        StaticAttrs {
            accepts_work: w.state.accepts_work(),
            labels: w.labels.clone(),
            taints: w.taints.clone(),
        }
    }
}

/// The per-worker state a scheduling cycle starts from (free resources and slots, the jobs on
/// each worker, tenant usage, static-filter results), kept in step with a [`ClusterView`] by
/// the caller's deltas. See the module documentation.
///
/// Use one index with one view and one [`Pipeline`](super::Pipeline).
#[derive(Default)]
pub struct ClusterIndex {
    /// The one-cycle index of [`Pipeline::schedule`](super::Pipeline::schedule): no undo log,
    /// no worker lookup by id, no copy of what the static filters read. False for an index a
    /// caller keeps ([`ClusterIndex::new`]).
    one_cycle: bool,
    /// False: derive everything from the view at the next cycle.
    built: bool,
    /// Indices into `view.workers`, in worker id order (duplicates dropped).
    pub(crate) order: Vec<u32>,
    /// Position in `order` of each `view.workers[i]`; `u32::MAX` for a dropped duplicate.
    pos_of_view: Vec<u32>,
    pos_of_id: HashMap<WorkerId, u32>,
    /// `view.workers` indices reported updated since the last cycle.
    updated: Vec<usize>,
    statics: Vec<StaticAttrs>,
    pub(crate) free: Vec<Resources>,
    pub(crate) free_slots: Vec<u32>,
    pub(crate) capacity: Vec<Resources>,
    pub(crate) slots: Vec<u32>,
    pub(crate) prefer_no_schedule: Vec<bool>,
    /// Per block of [`BLOCK`] workers (in id order): what the best of them could take.
    blocks: Vec<BlockMax>,
    /// Workers with a NoExecute taint: the taint filter then depends on the clock, so static
    /// sets are not kept across cycles.
    no_execute: u32,
    pub(crate) occupants: Vec<Vec<Occupant>>,
    pub(crate) index_of_job: HashMap<JobId, usize>,
    /// Running jobs on workers not in the view: they count for their tenant only.
    orphans: HashMap<JobId, (TenantId, Resources)>,
    pub(crate) tenants: BTreeMap<TenantId, TenantUse>,
    pub(crate) capacity_total: Resources,
    /// Running jobs per priority rank.
    pub(crate) preemptible: [u32; 5],
    pub(crate) static_sets: Vec<StaticSet>,
    /// Per profile: constraints → index into `static_sets`.
    pub(crate) static_index: Vec<HashMap<SchedulingConstraints, usize>>,
    /// Per worker: the cycle stamp of its last save into the undo log.
    saved_at: Vec<u64>,
    pub(crate) stamp: u64,
}

impl std::fmt::Debug for ClusterIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIndex")
            .field("built", &self.built)
            .field("workers", &self.order.len())
            .field("running", &self.index_of_job.len())
            .finish()
    }
}

/// What a cycle changed in the index, to roll back.
#[derive(Default)]
pub(crate) struct Undo {
    workers: Vec<(usize, Resources, u32, Vec<Occupant>)>,
    tenants: Vec<(TenantId, Option<TenantUse>)>,
    preemptible: [u32; 5],
}

impl ClusterIndex {
    /// An empty index: the first cycle derives it from the view.
    pub fn new() -> ClusterIndex {
        ClusterIndex::default()
    }

    /// An index for one cycle only, dropped after it.
    pub(crate) fn one_cycle() -> ClusterIndex {
        ClusterIndex {
            one_cycle: true,
            ..ClusterIndex::default()
        }
    }

    fn kept(&self) -> bool {
        !self.one_cycle
    }

    /// Workers were added to, removed from or reordered in `view.workers`: everything is
    /// derived again from the view at the next cycle.
    pub fn workers_changed(&mut self) {
        self.built = false;
    }

    /// `view.workers[index]` changed in place (state, allocation, slots in use, labels, taints,
    /// capacity); its id and position did not.
    pub fn worker_updated(&mut self, index: usize) {
        if self.built {
            self.updated.push(index);
        }
    }

    /// `job` was added to `view.running`.
    pub fn job_started(&mut self, job: &RunningJob) {
        if !self.built {
            return;
        }
        let u = self.tenants.entry(job.tenant.clone()).or_default();
        u.jobs += 1;
        u.resources = u.resources.saturating_add(&job.resources);
        match self.pos_of_id.get(&job.worker) {
            Some(&i) => {
                let i = i as usize;
                self.occupants[i].push(Occupant::of(job));
                self.index_of_job.insert(job.id, i);
                self.preemptible[job.priority.rank() as usize] += 1;
            }
            None => {
                self.orphans
                    .insert(job.id, (job.tenant.clone(), job.resources));
            }
        }
    }

    /// The job was removed from `view.running`.
    pub fn job_ended(&mut self, job: JobId) {
        if !self.built {
            return;
        }
        let (tenant, resources) = if let Some(i) = self.index_of_job.remove(&job) {
            let Some(pos) = self.occupants[i].iter().position(|o| o.job == job) else {
                return;
            };
            let o = self.occupants[i].swap_remove(pos);
            self.preemptible[o.priority.rank() as usize] -= 1;
            (o.tenant, o.resources)
        } else if let Some(t) = self.orphans.remove(&job) {
            t
        } else {
            return;
        };
        if let Some(u) = self.tenants.get_mut(&tenant) {
            u.jobs = u.jobs.saturating_sub(1);
            u.resources = u.resources.saturating_sub(&resources);
        }
    }

    /// Brings the index up to date with `view` before a cycle of a pipeline with `profiles`
    /// profiles.
    pub(crate) fn sync(&mut self, view: &ClusterView, profiles: usize) {
        if !self.built || self.pos_of_view.len() != view.workers.len() {
            self.rebuild(view, profiles);
            return;
        }
        let mut statics_changed = self.no_execute > 0;
        for k in std::mem::take(&mut self.updated) {
            let Some(w) = view.workers.get(k) else {
                continue;
            };
            let i = self.pos_of_view[k];
            if i == u32::MAX {
                continue;
            }
            let i = i as usize;
            if self.statics[i].accepts_work {
                self.capacity_total = self.capacity_total.saturating_sub(&self.capacity[i]);
            }
            self.refresh_row(i, w);
            self.refresh_block(i);
            if w.state.accepts_work() {
                self.capacity_total = self.capacity_total.saturating_add(&w.capacity);
            }
            let attrs_same = {
                let s = &self.statics[i];
                s.accepts_work == w.state.accepts_work()
                    && s.labels == w.labels
                    && s.taints == w.taints
            };
            if !attrs_same {
                let had = self.statics[i].taints.iter().any(is_no_execute);
                let has = w.taints.iter().any(is_no_execute);
                self.no_execute = self.no_execute + has as u32 - had as u32;
                self.statics[i] = StaticAttrs::of(w);
                statics_changed = true;
            }
        }
        // A full set of static sets is started afresh, so a long run with many distinct
        // constraints does not fall back to per-worker filtering for good.
        if statics_changed
            || self.static_index.len() != profiles
            || self.static_sets.len() >= STATIC_SETS_MAX
        {
            self.static_sets.clear();
            self.static_index = (0..profiles).map(|_| HashMap::default()).collect();
        }
        self.stamp += 1;
    }

    fn refresh_row(&mut self, i: usize, w: &WorkerInfo) {
        self.free[i] = w.free();
        self.free_slots[i] = w.free_slots();
        self.capacity[i] = w.capacity;
        self.slots[i] = w.slots;
        self.prefer_no_schedule[i] = w
            .taints
            .iter()
            .any(|t| t.effect == TaintEffect::PreferNoSchedule);
    }

    /// Derives everything from the view: O(workers + running).
    fn rebuild(&mut self, view: &ClusterView, profiles: usize) {
        let mut order: Vec<u32> = (0..view.workers.len() as u32).collect();
        // Stable: of workers sharing an id, the first in the view is kept.
        order.sort_by(|&a, &b| {
            view.workers[a as usize]
                .id
                .cmp(&view.workers[b as usize].id)
        });
        order.dedup_by(|a, b| view.workers[*a as usize].id == view.workers[*b as usize].id);
        let n = order.len();
        let mut pos_of_view = vec![u32::MAX; view.workers.len()];
        let mut pos_of_id = HashMap::default();
        if self.kept() {
            pos_of_id.reserve(n);
        }
        for (i, &k) in order.iter().enumerate() {
            pos_of_view[k as usize] = i as u32;
            if self.kept() {
                pos_of_id.insert(view.workers[k as usize].id.clone(), i as u32);
            }
        }
        let workers = order.iter().map(|&k| &view.workers[k as usize]);
        *self = ClusterIndex {
            built: true,
            statics: if self.kept() {
                workers.clone().map(StaticAttrs::of).collect()
            } else {
                Vec::new()
            },
            one_cycle: self.one_cycle,
            free: workers.clone().map(|w| w.free()).collect(),
            free_slots: workers.clone().map(|w| w.free_slots()).collect(),
            capacity: workers.clone().map(|w| w.capacity).collect(),
            slots: workers.clone().map(|w| w.slots).collect(),
            prefer_no_schedule: workers
                .clone()
                .map(|w| {
                    w.taints
                        .iter()
                        .any(|t| t.effect == TaintEffect::PreferNoSchedule)
                })
                .collect(),
            no_execute: workers
                .clone()
                .filter(|w| w.taints.iter().any(is_no_execute))
                .count() as u32,
            capacity_total: workers
                .clone()
                .filter(|w| w.state.accepts_work())
                .fold(Resources::ZERO, |t, w| t.saturating_add(&w.capacity)),
            occupants: vec![Vec::new(); n],
            saved_at: vec![0; n],
            static_index: (0..profiles).map(|_| HashMap::default()).collect(),
            blocks: vec![BlockMax::default(); n.div_ceil(BLOCK)],
            stamp: self.stamp + 1,
            order,
            pos_of_view,
            pos_of_id,
            ..ClusterIndex::default()
        };
        for b in 0..self.blocks.len() {
            self.refresh_block(b * BLOCK);
        }
        for r in &view.running {
            if !self.tenants.contains_key(&r.tenant) {
                self.tenants.insert(r.tenant.clone(), TenantUse::default());
            }
            let u = self.tenants.get_mut(&r.tenant).expect("inserted above");
            u.jobs += 1;
            u.resources = u.resources.saturating_add(&r.resources);
            let at = self
                .order
                .binary_search_by(|&k| view.workers[k as usize].id.cmp(&r.worker));
            match at {
                Ok(i) => {
                    self.occupants[i].push(Occupant::of(r));
                    self.index_of_job.insert(r.id, i);
                    self.preemptible[r.priority.rank() as usize] += 1;
                }
                Err(_) => {
                    self.orphans.insert(r.id, (r.tenant.clone(), r.resources));
                }
            }
        }
    }

    /// Recomputes the block of worker `w` after its free resources or slots changed.
    pub(crate) fn refresh_block(&mut self, w: usize) {
        let b = w / BLOCK;
        let end = ((b + 1) * BLOCK).min(self.free.len());
        let mut m = Resources::ZERO;
        for i in b * BLOCK..end {
            if self.free_slots[i] > 0 {
                let f = &self.free[i];
                m.cpu_millis = m.cpu_millis.max(f.cpu_millis);
                m.memory_bytes = m.memory_bytes.max(f.memory_bytes);
                m.ephemeral_storage_bytes =
                    m.ephemeral_storage_bytes.max(f.ephemeral_storage_bytes);
                m.gpus = m.gpus.max(f.gpus);
            }
        }
        self.blocks[b] = BlockMax { free: m };
    }

    /// False when no worker of block `b` has a free slot and room for `request`: the scan may
    /// step over the block (its workers would all fail the slot or resource check).
    pub(crate) fn block_may_fit(&self, b: usize, request: &Resources) -> bool {
        request.fits_in(&self.blocks[b].free)
    }

    /// Workers with a NoExecute taint.
    pub(crate) fn no_execute_workers(&self) -> u32 {
        self.no_execute
    }

    /// Starts the undo log of a cycle.
    pub(crate) fn begin(&self) -> Undo {
        Undo {
            preemptible: self.preemptible,
            ..Undo::default()
        }
    }

    /// Saves worker `w` (once per cycle) before the cycle changes it.
    pub(crate) fn save_worker(&mut self, undo: &mut Undo, w: usize) {
        if self.kept() && self.saved_at[w] != self.stamp {
            self.saved_at[w] = self.stamp;
            undo.workers.push((
                w,
                self.free[w],
                self.free_slots[w],
                self.occupants[w].clone(),
            ));
        }
    }

    /// Saves a tenant's use (once per cycle) before the cycle changes it.
    pub(crate) fn save_tenant(&self, undo: &mut Undo, tenant: &TenantId) {
        if self.kept() && !undo.tenants.iter().any(|(t, _)| t == tenant) {
            undo.tenants
                .push((tenant.clone(), self.tenants.get(tenant).copied()));
        }
    }

    /// Rolls back what the cycle changed. Static sets computed during the cycle are kept: they
    /// do not depend on the cycle's placements.
    pub(crate) fn roll_back(&mut self, undo: Undo) {
        for (w, free, free_slots, occupants) in undo.workers {
            for o in &self.occupants[w] {
                self.index_of_job.remove(&o.job);
            }
            for o in &occupants {
                self.index_of_job.insert(o.job, w);
            }
            self.occupants[w] = occupants;
            self.free[w] = free;
            self.free_slots[w] = free_slots;
            self.refresh_block(w);
        }
        for (t, u) in undo.tenants {
            match u {
                Some(u) => {
                    self.tenants.insert(t, u);
                }
                None => {
                    self.tenants.remove(&t);
                }
            }
        }
        self.preemptible = undo.preemptible;
    }
}

fn is_no_execute(t: &Taint) -> bool {
    t.effect == TaintEffect::NoExecute
}
