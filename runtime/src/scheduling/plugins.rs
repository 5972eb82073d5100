//! The plugin trait and the built-in filters and scorers, all implemented through it.
//!
//! A filter answers "may this job run on this worker now?" with `Err(reason)` naming why not; a
//! scorer returns a raw number (higher = better) that the pipeline normalises to 0–100 over the
//! feasible workers and multiplies by the plugin's weight.

use std::borrow::Cow;

use super::ProfileConfig;
use super::constraints::{JobAffinityKind, TaintEffect, selector_matches, tolerated};
use super::pipeline::CycleState;
use super::view::{ClusterView, QueuedJob, WorkerInfo};
use crate::resources::Resources;

/// Why a filter rejected a worker: a short phrase counted in summaries ("insufficient cpu").
pub type Reason = Cow<'static, str>;

/// The worker a plugin is asked about, with what is free on it at this point of the cycle.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Position of the worker in id order (stable within a cycle).
    pub index: usize,
    /// The worker.
    pub info: &'a WorkerInfo,
    /// Free resources now (the view's, minus what this cycle already placed).
    pub free: Resources,
    /// Free slots now.
    pub free_slots: u32,
    /// The worker's capacity (a copy of `info.capacity`, kept contiguous for speed).
    pub capacity: Resources,
    /// The worker's slots (a copy of `info.slots`).
    pub slots: u32,
    /// The worker carries at least one PreferNoSchedule taint.
    pub prefer_no_schedule: bool,
}

/// Read-only access to the cycle for plugins.
pub struct SchedulingContext<'c, 'v> {
    pub(crate) view: &'v ClusterView,
    pub(crate) profile_name: &'c str,
    pub(crate) profile: &'c ProfileConfig,
    pub(crate) relaxed: bool,
    pub(crate) state: &'c CycleState<'v>,
}

impl<'c, 'v> SchedulingContext<'c, 'v> {
    /// The cycle's view.
    pub fn view(&self) -> &'v ClusterView {
        self.view
    }
    /// The profile the job is scheduled with.
    pub fn profile_name(&self) -> &str {
        self.profile_name
    }
    /// The profile's configuration.
    pub fn profile(&self) -> &ProfileConfig {
        self.profile
    }
    /// True when the job failed often enough that soft constraints are ignored.
    pub fn relaxed(&self) -> bool {
        self.relaxed
    }
    /// Number of workers in the view.
    pub fn worker_count(&self) -> usize {
        self.state.workers.len()
    }
    /// Jobs placed (or nominated) so far in this cycle.
    pub fn placed_this_cycle(&self) -> u64 {
        self.state.placed_count
    }
    /// Where round-robin points now (a worker index).
    pub fn round_robin_position(&self) -> usize {
        let n = self.state.workers.len().max(1) as u64;
        (self
            .view
            .cycle
            .wrapping_mul(7919)
            .wrapping_add(self.state.placed_count)
            % n) as usize
    }
    /// Matching-job counts per topology domain for a job-affinity term of the job being
    /// scheduled (prepared by the pipeline before its filters run).
    pub fn domain_counts(
        &self,
        selector: &std::collections::BTreeMap<String, String>,
        topology_key: &str,
    ) -> Option<&DomainCounts> {
        self.state.topology.get(selector, topology_key)
    }
}

/// How many running (or placed this cycle) jobs matching a selector sit in each topology domain.
/// Domains are the distinct values of the topology key over the view's workers.
#[derive(Debug, Clone, Default)]
pub struct DomainCounts {
    /// Per worker index: its domain, or `u32::MAX` when it lacks the topology key.
    pub(crate) domain_of: Vec<u32>,
    /// Per domain: matching jobs.
    pub(crate) counts: Vec<u32>,
    /// count → number of domains with that count (the minimum is its first key).
    pub(crate) histogram: std::collections::BTreeMap<u32, u32>,
    pub(crate) total: u32,
}

impl DomainCounts {
    /// Matching jobs in the domain of the worker at `worker_index`; `None` when the worker has
    /// no domain (lacks the topology key).
    pub fn count_at(&self, worker_index: usize) -> Option<u32> {
        match self.domain_of.get(worker_index) {
            Some(&d) if d != u32::MAX => Some(self.counts[d as usize]),
            _ => None,
        }
    }
    /// Smallest count over all domains.
    pub fn min(&self) -> u32 {
        self.histogram.keys().next().copied().unwrap_or(0)
    }
    /// Matching jobs in all domains.
    pub fn total(&self) -> u32 {
        self.total
    }
    pub(crate) fn add_at(&mut self, worker_index: usize, delta: i64) -> bool {
        let Some(&d) = self.domain_of.get(worker_index) else {
            return false;
        };
        if d == u32::MAX {
            return false;
        }
        let c = &mut self.counts[d as usize];
        if let Some(n) = self.histogram.get_mut(c) {
            *n -= 1;
            if *n == 0 {
                self.histogram.remove(c);
            }
        }
        *c = (*c as i64 + delta).max(0) as u32;
        *self.histogram.entry(*c).or_insert(0) += 1;
        self.total = (self.total as i64 + delta).max(0) as u32;
        true
    }
}

/// A scheduling plugin: a filter, a scorer, or both. Built-ins implement it too.
///
/// Filters must depend only on the job's resources, constraints and labels and on the cycle
/// state, and must only get stricter as the cycle places jobs — the pipeline caches "this shape
/// fits nowhere" on that basis. A plugin that cannot promise this returns `false` from
/// [`SchedulingPlugin::cacheable`].
pub trait SchedulingPlugin: Send + Sync {
    /// Unique name (used for weights, enabling/disabling and explanations).
    fn name(&self) -> &str;

    /// `Err(reason)` when `job` may not run on `worker`.
    fn filter(
        &self,
        _ctx: &SchedulingContext<'_, '_>,
        _job: &QueuedJob,
        _worker: &Candidate<'_>,
    ) -> Result<(), Reason> {
        Ok(())
    }

    /// Raw score, higher is better; `None` = this plugin does not score this job.
    fn score(
        &self,
        _ctx: &SchedulingContext<'_, '_>,
        _job: &QueuedJob,
        _worker: &Candidate<'_>,
    ) -> Option<f64> {
        None
    }

    /// Called after `job` was placed (or nominated) on `worker`.
    fn on_scheduled(
        &self,
        _ctx: &SchedulingContext<'_, '_>,
        _job: &QueuedJob,
        _worker: &WorkerInfo,
    ) {
    }

    /// A soft preference: its score is ignored once the job's failures reach the profile's
    /// `relax_soft_after_failures`.
    fn soft(&self) -> bool {
        false
    }

    /// See the trait documentation; `false` disables the unplaceable-shape cache for profiles
    /// using this plugin.
    fn cacheable(&self) -> bool {
        true
    }

    /// Whether the filter only checks resources and slots (preemption evaluates a worker with
    /// these filters skipped, since evicting victims changes their answer).
    fn resource_filter(&self) -> bool {
        false
    }
}

/// Names of the built-in plugins, in the order their filters run.
pub const BUILTIN_PLUGINS: [&str; 12] = [
    "worker_state",
    "node_selector",
    "node_affinity",
    "taint_toleration",
    "slots",
    "resources",
    "job_affinity",
    "spread",
    "least_loaded",
    "balanced",
    "most_allocated",
    "round_robin",
];

/// Builds a built-in plugin by name.
pub fn builtin(name: &str) -> Option<Box<dyn SchedulingPlugin>> {
    Some(match name {
        "worker_state" => Box::new(WorkerStateFilter),
        "slots" => Box::new(SlotsFilter),
        "resources" => Box::new(ResourcesFilter),
        "node_selector" => Box::new(NodeSelectorFilter),
        "node_affinity" => Box::new(NodeAffinityPlugin),
        "taint_toleration" => Box::new(TaintTolerationPlugin),
        "job_affinity" => Box::new(JobAffinityFilter),
        "spread" => Box::new(SpreadScore),
        "least_loaded" => Box::new(LeastLoadedScore),
        "balanced" => Box::new(BalancedScore),
        "most_allocated" => Box::new(MostAllocatedScore),
        "round_robin" => Box::new(RoundRobinScore),
        _ => return None,
    })
}

/// Only Idle and Busy workers accept work.
pub struct WorkerStateFilter;
impl SchedulingPlugin for WorkerStateFilter {
    fn name(&self) -> &str {
        "worker_state"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        _: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        if w.info.state.accepts_work() {
            Ok(())
        } else {
            Err(Cow::Borrowed("worker not accepting work"))
        }
    }
}

/// A free slot is needed.
pub struct SlotsFilter;
impl SchedulingPlugin for SlotsFilter {
    fn name(&self) -> &str {
        "slots"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        _: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        if w.free_slots > 0 {
            Ok(())
        } else {
            Err(Cow::Borrowed("no free slot"))
        }
    }
    fn resource_filter(&self) -> bool {
        true
    }
}

/// The request must fit in what is free (cpu, memory, ephemeral storage, gpu).
pub struct ResourcesFilter;
impl SchedulingPlugin for ResourcesFilter {
    fn name(&self) -> &str {
        "resources"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        match shortfall(&job.resources, &w.free) {
            Some(k) => Err(Cow::Borrowed(RESOURCE_REASONS[k])),
            None => Ok(()),
        }
    }
    fn resource_filter(&self) -> bool {
        true
    }
}

/// Reasons of the resources filter, by dimension.
pub(crate) const RESOURCE_REASONS: [&str; 4] = [
    "insufficient cpu",
    "insufficient memory",
    "insufficient ephemeral-storage",
    "insufficient gpu",
];

/// The first dimension (index into [`RESOURCE_REASONS`]) in which `request` does not fit.
#[inline]
pub(crate) fn shortfall(request: &Resources, free: &Resources) -> Option<usize> {
    if request.cpu_millis > free.cpu_millis {
        Some(0)
    } else if request.memory_bytes > free.memory_bytes {
        Some(1)
    } else if request.ephemeral_storage_bytes > free.ephemeral_storage_bytes {
        Some(2)
    } else if request.gpus > free.gpus {
        Some(3)
    } else {
        None
    }
}

/// Every `node_selector` label must be present with that value.
pub struct NodeSelectorFilter;
impl SchedulingPlugin for NodeSelectorFilter {
    fn name(&self) -> &str {
        "node_selector"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        if selector_matches(&job.constraints.node_selector, &w.info.labels) {
            Ok(())
        } else {
            Err(Cow::Borrowed("node selector mismatch"))
        }
    }
}

/// Required terms filter; preferred terms score the sum of the weights they match (soft).
pub struct NodeAffinityPlugin;
impl SchedulingPlugin for NodeAffinityPlugin {
    fn name(&self) -> &str {
        "node_affinity"
    }
    fn filter(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        if job
            .constraints
            .node_affinity
            .required_matches(&w.info.labels)
        {
            Ok(())
        } else {
            Err(Cow::Borrowed("node affinity mismatch"))
        }
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let aff = &job.constraints.node_affinity;
        if aff.preferred.is_empty() {
            return None;
        }
        Some(aff.preferred_score(&w.info.labels) as f64)
    }
    fn soft(&self) -> bool {
        true
    }
}

/// NoSchedule and NoExecute taints the job does not tolerate filter; PreferNoSchedule ones
/// lower the score (soft).
pub struct TaintTolerationPlugin;
impl SchedulingPlugin for TaintTolerationPlugin {
    fn name(&self) -> &str {
        "taint_toleration"
    }
    fn filter(
        &self,
        ctx: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        let now_ms = ctx.view().now_ms;
        for t in &w.info.taints {
            let rejected = match t.effect {
                TaintEffect::PreferNoSchedule => false,
                TaintEffect::NoSchedule => !tolerated(&job.constraints.tolerations, t),
                // Tolerated for a while only: not once that while is over.
                TaintEffect::NoExecute => {
                    super::evict::eviction_due_at(&job.constraints.tolerations, t)
                        .is_some_and(|at| at <= now_ms)
                }
            };
            if rejected {
                return Err(Cow::Owned(format!("untolerated taint {}", t.key_value())));
            }
        }
        Ok(())
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        if !w.prefer_no_schedule {
            return Some(0.0);
        }
        let n = w
            .info
            .taints
            .iter()
            .filter(|t| {
                t.effect == TaintEffect::PreferNoSchedule
                    && !tolerated(&job.constraints.tolerations, t)
            })
            .count();
        Some(-(n as f64))
    }
    fn soft(&self) -> bool {
        true
    }
}

/// Inter-job affinity, anti-affinity and spread (hard; Spread becomes soft when relaxed).
pub struct JobAffinityFilter;
impl SchedulingPlugin for JobAffinityFilter {
    fn name(&self) -> &str {
        "job_affinity"
    }
    fn filter(
        &self,
        ctx: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Result<(), Reason> {
        for term in &job.constraints.job_affinity {
            let Some(counts) = ctx.domain_counts(&term.selector, &term.topology_key) else {
                continue;
            };
            let here = counts.count_at(w.index);
            match term.kind {
                JobAffinityKind::Affinity => {
                    let first_of_group = counts.total() == 0 && term.selects(&job.labels);
                    match here {
                        Some(c) if c > 0 || first_of_group => {}
                        _ => return Err(Cow::Borrowed("job affinity mismatch")),
                    }
                }
                JobAffinityKind::AntiAffinity => {
                    if here.is_some_and(|c| c > 0) {
                        return Err(Cow::Borrowed("job anti-affinity conflict"));
                    }
                }
                JobAffinityKind::Spread { max_skew } => {
                    if ctx.relaxed() {
                        continue;
                    }
                    let Some(c) = here else {
                        return Err(Cow::Owned(format!(
                            "missing topology label {}",
                            term.topology_key
                        )));
                    };
                    let me = u32::from(term.selects(&job.labels));
                    if c + me > counts.min() + max_skew {
                        return Err(Cow::Borrowed("topology spread skew exceeded"));
                    }
                }
            }
        }
        Ok(())
    }
    fn cacheable(&self) -> bool {
        // Affinity and Spread can become satisfiable as jobs are placed; the pipeline never
        // caches shapes carrying such terms, so the plugin itself is safe to cache.
        true
    }
}

/// Fewer matching jobs in the worker's domain (over the job's Spread terms) = higher (soft).
pub struct SpreadScore;
impl SchedulingPlugin for SpreadScore {
    fn name(&self) -> &str {
        "spread"
    }
    fn score(
        &self,
        ctx: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let mut any = false;
        let mut sum = 0u64;
        for term in &job.constraints.job_affinity {
            if !matches!(term.kind, JobAffinityKind::Spread { .. }) {
                continue;
            }
            any = true;
            let counts = ctx.domain_counts(&term.selector, &term.topology_key)?;
            sum += counts.count_at(w.index).unwrap_or(0) as u64;
        }
        any.then_some(-(sum as f64))
    }
    fn soft(&self) -> bool {
        true
    }
}

fn frac(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Utilisation of cpu and memory after placing `job`.
fn utilisation_after(job: &QueuedJob, w: &Candidate<'_>) -> (f64, f64) {
    let cap = &w.capacity;
    let cpu_used = cap.cpu_millis.saturating_sub(w.free.cpu_millis) + job.resources.cpu_millis;
    let mem_used =
        cap.memory_bytes.saturating_sub(w.free.memory_bytes) + job.resources.memory_bytes;
    (
        frac(cpu_used, cap.cpu_millis).min(1.0),
        frac(mem_used, cap.memory_bytes).min(1.0),
    )
}

/// Most free capacity left after placement (mean free fraction of cpu, memory and slots).
pub struct LeastLoadedScore;
impl SchedulingPlugin for LeastLoadedScore {
    fn name(&self) -> &str {
        "least_loaded"
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let (cpu, mem) = utilisation_after(job, w);
        let slots = 1.0 - frac(w.free_slots.saturating_sub(1) as u64, w.slots as u64);
        Some(100.0 * (3.0 - cpu - mem - slots) / 3.0)
    }
}

/// Kubernetes' BalancedAllocation: 100 − stddev of the cpu and memory utilisation after
/// placement × 100.
pub struct BalancedScore;
impl SchedulingPlugin for BalancedScore {
    fn name(&self) -> &str {
        "balanced"
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let (cpu, mem) = utilisation_after(job, w);
        // The standard deviation of two values is half their distance.
        Some(100.0 - (cpu - mem).abs() / 2.0 * 100.0)
    }
}

/// Bin packing: the fullest worker (mean cpu and memory utilisation after placement) wins.
pub struct MostAllocatedScore;
impl SchedulingPlugin for MostAllocatedScore {
    fn name(&self) -> &str {
        "most_allocated"
    }
    fn score(
        &self,
        _: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let (cpu, mem) = utilisation_after(job, w);
        Some(100.0 * (cpu + mem) / 2.0)
    }
}

/// Deterministic rotation: the worker at the round-robin position scores highest, the one just
/// before it lowest. The position moves with the cycle counter and every placement.
pub struct RoundRobinScore;
impl SchedulingPlugin for RoundRobinScore {
    fn name(&self) -> &str {
        "round_robin"
    }
    fn score(
        &self,
        ctx: &SchedulingContext<'_, '_>,
        _: &QueuedJob,
        w: &Candidate<'_>,
    ) -> Option<f64> {
        let n = ctx.worker_count().max(1);
        let pos = ctx.round_robin_position();
        let distance = (w.index + n - pos) % n;
        Some((n - distance) as f64)
    }
}
