//! The pipeline proper: per-cycle state, the scan/filter/score loop, preemption and backfill.

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::constraints::{
    JobAffinityKind, SchedulingConstraints, selector_matches, topology_domain,
};
use super::evict::evictions;
use super::index::{BLOCK, ClusterIndex, Occupant, StaticSet, TenantUse, Undo};
use super::plugins::{self, Candidate, DomainCounts, Reason, SchedulingContext, SchedulingPlugin};
use super::queue::ProfileQueue;
use super::view::{ClusterView, QueuedJob, WorkerInfo};
use super::{
    DEFAULT_PROFILE, Expired, Explanation, FCFS_WAIT_SUFFIX, Held, Outcome, Placement, Preemption,
    ProfileConfig, QueueStrategy, Reservation, SchedulerConfig, SchedulingError, TenantQuota,
    Unplaced, WorkerScore, summarize,
};
use crate::ids::{JobId, TenantId};
use crate::job::Priority;
use crate::resources::{Resources, format_bytes_approx, format_cpu_millis};

/// FxHash, rustc's hasher: a multiply-rotate per word, much cheaper than SipHash for the short
/// keys of the per-cycle caches. Flooding resistance is not needed: the maps live for one cycle
/// and are keyed by data the control plane validated. (Hash maps are only used for lookups, so
/// the hasher never influences a decision.)
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
type HashSet<K> = std::collections::HashSet<K, FxBuild>;

struct PluginSlot {
    plugin: Box<dyn SchedulingPlugin>,
    weight: f64,
    builtin: bool,
}

/// Built-in filters that depend only on the worker's state, labels and taints, which do not
/// change within a cycle: evaluated once per distinct constraints per cycle.
const STATIC_FILTERS: [&str; 4] = [
    "worker_state",
    "node_selector",
    "node_affinity",
    "taint_toleration",
];
/// Built-ins that only score / only filter (the pipeline skips their no-op half).
const SCORE_ONLY: [&str; 5] = [
    "spread",
    "least_loaded",
    "balanced",
    "most_allocated",
    "round_robin",
];
const FILTER_ONLY: [&str; 5] = [
    "worker_state",
    "slots",
    "resources",
    "node_selector",
    "job_affinity",
];

/// Most distinct (selector, topology key) job-affinity terms counted per cycle.
const TOPOLOGY_TERMS_MAX: usize = 1024;

/// Most static-filter results kept (one per distinct constraints and profile); a full set is
/// cleared at the start of the next cycle.
pub(crate) const STATIC_SETS_MAX: usize = 1024;

struct ProfileRuntime {
    name: String,
    config: ProfileConfig,
    plugins: Vec<PluginSlot>,
    /// The leading plugins that are built-in static filters.
    static_prefix: usize,
    /// Plugins whose filter runs per worker after the static prefix.
    dynamic_filters: Vec<usize>,
    /// Every plugin whose filter does something.
    filters: Vec<usize>,
    /// Plugins whose score counts (weight > 0).
    scorers: Vec<usize>,
}

impl ProfileRuntime {
    fn new(name: String, config: ProfileConfig, plugins: Vec<PluginSlot>) -> Self {
        let mut p = ProfileRuntime {
            name,
            config,
            plugins,
            static_prefix: 0,
            dynamic_filters: Vec::new(),
            filters: Vec::new(),
            scorers: Vec::new(),
        };
        p.reindex();
        p
    }

    fn reindex(&mut self) {
        let builtin_in = |s: &PluginSlot, set: &[&str]| s.builtin && set.contains(&s.plugin.name());
        self.static_prefix = self
            .plugins
            .iter()
            .take_while(|s| builtin_in(s, &STATIC_FILTERS))
            .count();
        self.filters = (0..self.plugins.len())
            .filter(|&i| !builtin_in(&self.plugins[i], &SCORE_ONLY))
            .collect();
        self.dynamic_filters = self
            .filters
            .iter()
            .copied()
            .filter(|&i| i >= self.static_prefix)
            .collect();
        self.scorers = (0..self.plugins.len())
            .filter(|&i| {
                self.plugins[i].weight > 0.0 && !builtin_in(&self.plugins[i], &FILTER_ONLY)
            })
            .collect();
    }

    fn cacheable(&self) -> bool {
        self.plugins.iter().all(|p| p.plugin.cacheable())
    }
}

/// The scheduling pipeline: profiles with their plugins, and tenant quotas.
/// The one entry point is [`Pipeline::schedule`].
pub struct Pipeline {
    profiles: Vec<ProfileRuntime>,
    quotas: BTreeMap<TenantId, TenantQuota>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let profiles: Vec<(&str, Vec<&str>)> = self
            .profiles
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.plugins.iter().map(|s| s.plugin.name()).collect(),
                )
            })
            .collect();
        f.debug_struct("Pipeline")
            .field("profiles", &profiles)
            .finish()
    }
}

impl Pipeline {
    /// Builds the pipeline. The config is expected to be validated at the edge
    /// ([`SchedulerConfig::validate`]); a missing `"default"` profile is added.
    pub fn new(config: SchedulerConfig) -> Pipeline {
        let mut profiles = config.profiles;
        profiles.entry(DEFAULT_PROFILE.to_string()).or_default();
        let profiles = profiles
            .into_iter()
            .map(|(name, config)| {
                let plugins = plugins::BUILTIN_PLUGINS
                    .iter()
                    .filter(|n| !config.disabled_plugins.iter().any(|d| d == *n))
                    .filter_map(|n| plugins::builtin(n))
                    .map(|plugin| PluginSlot {
                        weight: config.weight_of(plugin.name()) as f64,
                        plugin,
                        builtin: true,
                    })
                    .collect();
                ProfileRuntime::new(name, config, plugins)
            })
            .collect();
        Pipeline {
            profiles,
            quotas: config.quotas,
        }
    }

    /// Adds a custom plugin to a profile; its filters run after the built-in ones, its weight is
    /// the profile's `plugin_weights` entry (default 1).
    pub fn register_plugin(
        &mut self,
        profile: &str,
        plugin: Box<dyn SchedulingPlugin>,
    ) -> Result<(), SchedulingError> {
        let p = self
            .profiles
            .iter_mut()
            .find(|p| p.name == profile)
            .ok_or_else(|| SchedulingError::UnknownProfile(profile.to_string()))?;
        if p.plugins.iter().any(|s| s.plugin.name() == plugin.name()) {
            return Err(SchedulingError::DuplicatePlugin {
                profile: profile.to_string(),
                plugin: plugin.name().to_string(),
            });
        }
        p.plugins.push(PluginSlot {
            weight: p.config.weight_of(plugin.name()) as f64,
            plugin,
            builtin: false,
        });
        p.reindex();
        Ok(())
    }

    /// Profile names, sorted.
    pub fn profile_names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }

    /// Plans one cycle. Pure and deterministic: the same view gives the same outcome.
    ///
    /// Profiles take turns, one job each, in name order; within a profile its queue strategy
    /// gives the order.
    pub fn schedule(&self, view: &ClusterView) -> Outcome {
        // A one-cycle index: no undo log, nothing copied to be compared next cycle.
        let mut index = ClusterIndex::one_cycle();
        self.schedule_with(view, &mut index)
    }

    /// [`Pipeline::schedule`] starting from `index`, an index the caller keeps in step with
    /// `view` between cycles (see [`ClusterIndex`]): the same outcome, without deriving the
    /// per-worker state from the whole view every cycle. The index is left as it was before the
    /// cycle's decisions; the caller reports the decisions it applies.
    pub fn schedule_with(&self, view: &ClusterView, index: &mut ClusterIndex) -> Outcome {
        let mut out = Outcome::default();
        let mut st = CycleState::new(view, std::mem::take(index), self.profiles.len());
        // Only NoExecute taints evict: skip the pass over the running jobs without any.
        if st.ix.no_execute_workers() > 0 {
            let ev = evictions(view);
            out.evictions = ev.evictions;
            out.next_eviction_at_ms = ev.next_at_ms;
        }
        let mut per_profile: Vec<Vec<usize>> = vec![Vec::new(); self.profiles.len()];
        for (i, job) in view.pending.iter().enumerate() {
            let name = job
                .constraints
                .profile
                .as_deref()
                .unwrap_or(DEFAULT_PROFILE);
            match self
                .profiles
                .binary_search_by(|p| p.name.as_str().cmp(name))
            {
                Ok(p) => per_profile[p].push(i),
                Err(_) => {
                    let summary = format!("unknown scheduler profile {name}");
                    fail(&mut out, view, job, summary, None);
                }
            }
        }
        let mut queues: Vec<ProfileQueue<'_>> = per_profile
            .into_iter()
            .zip(&self.profiles)
            .map(|(jobs, p)| ProfileQueue::build(&p.config, jobs, view))
            .collect();
        let mut cache: HashMap<ShapeKey<'_>, CachedFailure> = HashMap::default();
        let mut scratch = Scratch::default();
        // Strict FCFS profiles: the head that blocks the rest of the queue this cycle.
        let mut blocked_by: Vec<Option<JobId>> = vec![None; self.profiles.len()];
        loop {
            let mut progressed = false;
            for (p, q) in queues.iter_mut().enumerate() {
                if blocked_by[p].is_some() {
                    continue;
                }
                if let Some(j) = q.next(&st) {
                    progressed = true;
                    let unplaced = out.unplaced.len();
                    self.decide(
                        p,
                        &view.pending[j],
                        view,
                        &mut st,
                        &mut cache,
                        &mut scratch,
                        &mut out,
                    );
                    if self.profiles[p].config.queue == QueueStrategy::Fcfs
                        && out.unplaced.len() > unplaced
                        && self.fits_when_empty(p, view, &st, &view.pending[j])
                    {
                        blocked_by[p] = Some(view.pending[j].id);
                        mark_fcfs_wait(&mut out, view.pending[j].id);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        // Behind a blocked head, the rest of a strict FCFS queue waits its turn.
        for (p, q) in queues.iter_mut().enumerate() {
            let Some(head) = blocked_by[p] else {
                continue;
            };
            let summary = format!("behind job {head}{FCFS_WAIT_SUFFIX}");
            while let Some(j) = q.next(&st) {
                fail(&mut out, view, &view.pending[j], summary.clone(), None);
            }
        }
        *index = st.finish();
        out
    }

    /// Strict FCFS: could `job` fit some worker (all non-resource filters passing) once that
    /// worker's running jobs end? A job that could not is unschedulable and blocks nobody.
    fn fits_when_empty<'v>(
        &self,
        p: usize,
        view: &'v ClusterView,
        st: &CycleState<'v>,
        job: &QueuedJob,
    ) -> bool {
        let prof = &self.profiles[p];
        let relaxed = prof
            .config
            .relax_soft_after_failures
            .is_some_and(|n| job.schedule_failures >= n);
        let ctx = SchedulingContext {
            view,
            profile_name: &prof.name,
            profile: &prof.config,
            relaxed,
            state: st,
        };
        (0..st.workers.len()).any(|i| {
            job.resources.fits_in(&st.ix.capacity[i])
                && st.ix.slots[i] > 0
                && self.non_resource_filters_pass(prof, &ctx, job, &st.candidate(i))
        })
    }

    #[allow(clippy::too_many_arguments)] // the cycle's pieces, passed explicitly rather than bundled
    fn decide<'v>(
        &self,
        p: usize,
        job: &'v QueuedJob,
        view: &'v ClusterView,
        st: &mut CycleState<'v>,
        cache: &mut HashMap<ShapeKey<'v>, CachedFailure>,
        scratch: &mut Scratch<'v>,
        out: &mut Outcome,
    ) {
        let prof = &self.profiles[p];
        let relaxed = prof
            .config
            .relax_soft_after_failures
            .is_some_and(|n| job.schedule_failures >= n);

        if let Some(reason) = st.quota_block(&self.quotas, job) {
            if deadline_passed(view, job) {
                fail(out, view, job, reason, None);
            } else {
                if view.explain {
                    out.explanations.push(Explanation {
                        job: job.id,
                        filter_counts: BTreeMap::new(),
                        feasible: 0,
                        total: st.workers.len(),
                        scanned: 0,
                        top_scores: Vec::new(),
                        chosen: None,
                        summary: reason.clone(),
                    });
                }
                out.held.push(Held {
                    job: job.id,
                    reason,
                });
            }
            return;
        }

        let constraints: &'v SchedulingConstraints = &job.constraints;
        // Affinity and Spread terms can become satisfiable as matching jobs are placed: such
        // shapes are cached only until the topology counts change.
        let topology_sensitive = constraints
            .job_affinity
            .iter()
            .any(|t| t.kind != JobAffinityKind::AntiAffinity);
        let key = prof.cacheable().then(|| ShapeKey {
            profile: p,
            resources: job.resources,
            constraints,
            labels: (!constraints.job_affinity.is_empty()).then_some(&job.labels),
            relaxed,
            // A backfill reservation admits jobs by their expected end.
            time_limit_ms: (!st.reservations.is_empty()).then_some(job.time_limit_ms),
        });
        let preempt_ok = st.may_preempt(&prof.config, p, job);
        let rank = job.priority.rank() as usize;
        let cached = |cache: &HashMap<ShapeKey<'v>, CachedFailure>, st: &CycleState<'v>| {
            key.as_ref()
                .and_then(|k| cache.get(k))
                .filter(|c| c.topology_version.is_none_or(|v| v == st.topology_version))
                .is_some()
        };
        if let Some(k) = &key
            && cached(cache, st)
            && let Some(c) = cache.get(k)
            && (!preempt_ok || c.preemption_failed[rank])
        {
            // The counts only feed explanations: not copied otherwise.
            let counts = view.explain.then(|| (c.counts.clone(), c.scanned));
            let summary = c.summary.clone();
            fail(out, view, job, summary, counts);
            return;
        }

        for t in &constraints.job_affinity {
            if !st.ensure_topology(&t.selector, &t.topology_key) {
                let summary = format!(
                    "more than {TOPOLOGY_TERMS_MAX} distinct job-affinity terms this cycle; retried next cycle"
                );
                fail(out, view, job, summary, None);
                return;
            }
        }

        let n = st.workers.len();
        scratch.feasible.clear();
        scratch.reasons.clear();
        let mut scanned = 0;
        let mut next_start = st.scan_start;
        let known_infeasible = cached(cache, st);
        if n > 0 && !known_infeasible {
            let set = self.static_set(p, view, st, job);
            let limit = feasible_limit(&prof.config, n);
            let start = st.scan_start % n;
            let ctx = SchedulingContext {
                view,
                profile_name: &prof.name,
                profile: &prof.config,
                relaxed,
                state: st,
            };
            // This job's filters: built-ins that cannot fail for it are dropped, and leading
            // slots/resources checks are done inline (same reasons, no dynamic call).
            let base = if set.is_some() {
                &prof.dynamic_filters
            } else {
                &prof.filters
            };
            let mut which: Vec<usize> = base
                .iter()
                .copied()
                .filter(|&k| {
                    let s = &prof.plugins[k];
                    !(s.builtin
                        && s.plugin.name() == "job_affinity"
                        && constraints.job_affinity.is_empty())
                })
                .collect();
            let is = |k: Option<&usize>, name: &str| {
                k.is_some_and(|&k| prof.plugins[k].builtin && prof.plugins[k].plugin.name() == name)
            };
            let inline = is(which.first(), "slots") && is(which.get(1), "resources");
            if inline {
                which.drain(..2);
            }
            // Blocks of workers where no worker has a free slot and room for the job are
            // stepped over (the same feasible workers are found in the same order). The counts
            // of rejections are then incomplete: a job found to fit nowhere is scanned again
            // without skipping, and explaining turns skipping off.
            let mut skip = inline && !view.explain;
            loop {
                scratch.feasible.clear();
                scratch.reasons.clear();
                scratch.inline_counts = [0; 5];
                scanned = 0;
                let mut skipped = false;
                let mut visit = |i: usize, scratch: &mut Scratch<'v>| -> bool {
                    scanned += 1;
                    next_start = i + 1;
                    if inline {
                        if st.ix.free_slots[i] == 0 {
                            scratch.inline_counts[0] += 1;
                            return false;
                        }
                        if let Some(k) = plugins::shortfall(&job.resources, &st.ix.free[i]) {
                            scratch.inline_counts[1 + k] += 1;
                            return false;
                        }
                    }
                    let cand = st.candidate(i);
                    match self.filter(prof, &which, &ctx, job, &cand) {
                        Ok(()) => {
                            scratch.feasible.push(i);
                            scratch.feasible.len() >= limit
                        }
                        Err(r) => {
                            count_reason(&mut scratch.reasons, r);
                            false
                        }
                    }
                };
                let may_fit = |i: usize| st.ix.block_may_fit(i / BLOCK, &job.resources);
                let mut stopped = false;
                match set.map(|k| &st.ix.static_sets[k]) {
                    Some(set) => {
                        // Workers failing the static filters count once, with their reasons.
                        scratch.reasons.extend(set.reasons.iter().cloned());
                        let m = set.eligible.len();
                        let first = set.eligible.partition_point(|&i| (i as usize) < start);
                        let (tail, head) = set.eligible.split_at(first);
                        // The block check runs once per block entered, not per worker.
                        let mut block = usize::MAX;
                        'scan: for part in [head, tail] {
                            let mut k = 0;
                            while k < part.len() {
                                let i = part[k] as usize;
                                if skip && i / BLOCK != block {
                                    block = i / BLOCK;
                                    if !may_fit(i) {
                                        let end = ((block + 1) * BLOCK) as u32;
                                        k += part[k..].partition_point(|&x| x < end);
                                        skipped = true;
                                        continue;
                                    }
                                }
                                if visit(i, scratch) {
                                    stopped = true;
                                    break 'scan;
                                }
                                k += 1;
                            }
                        }
                        // The scan ends after the last eligible worker before `start`.
                        if !stopped && let Some(&last) = tail.last().or(head.last()) {
                            next_start = last as usize + 1;
                        }
                        scanned += n - m;
                    }
                    None => {
                        'scan: for (from, to) in [(start, n), (0, start)] {
                            let mut i = from;
                            let mut block = usize::MAX;
                            while i < to {
                                if skip && i / BLOCK != block {
                                    block = i / BLOCK;
                                    if !may_fit(i) {
                                        i = ((block + 1) * BLOCK).min(to);
                                        skipped = true;
                                        continue;
                                    }
                                }
                                if visit(i, scratch) {
                                    stopped = true;
                                    break 'scan;
                                }
                                i += 1;
                            }
                        }
                        if !stopped {
                            next_start = if start == 0 { n } else { start };
                        }
                    }
                }
                if scratch.feasible.is_empty() && skipped {
                    skip = false;
                    continue;
                }
                break;
            }
            let names = std::iter::once("no free slot").chain(plugins::RESOURCE_REASONS);
            for (name, c) in names.zip(scratch.inline_counts) {
                if c > 0 {
                    match scratch.reasons.iter_mut().find(|(r, _)| r.as_ref() == name) {
                        Some((_, n)) => *n += c,
                        None => scratch.reasons.push((Reason::Borrowed(name), c)),
                    }
                }
            }
        }

        if !scratch.feasible.is_empty() {
            let best = self.score(prof, view, st, job, relaxed, scratch);
            let w = scratch.feasible[best];
            st.scan_start = next_start;
            st.place(w, job, view.now_ms);
            self.notify(prof, view, st, relaxed, job, w);
            out.placements.push(Placement {
                job: job.id,
                attempt: job.next_attempt,
                epoch: view.epoch,
                worker: st.workers[w].id.clone(),
            });
            if view.explain {
                out.explanations.push(Explanation {
                    job: job.id,
                    filter_counts: to_counts(&scratch.reasons),
                    feasible: scratch.feasible.len(),
                    total: n,
                    scanned,
                    top_scores: std::mem::take(&mut scratch.top),
                    chosen: Some(st.workers[w].id.clone()),
                    summary: format!(
                        "placed on {} ({} of {} scanned workers feasible)",
                        st.workers[w].id,
                        scratch.feasible.len(),
                        scanned
                    ),
                });
            }
            return;
        }

        // Fits nowhere now.
        let (summary, counts, scanned) = match key.as_ref().and_then(|k| cache.get(k)) {
            Some(c) if known_infeasible => (c.summary.clone(), c.counts.clone(), c.scanned),
            _ => (
                summarize(n, scratch.reasons.iter().map(|(r, c)| (r.as_ref(), *c))),
                scratch.reasons.clone(),
                scanned,
            ),
        };
        if preempt_ok && let Some((w, victims)) = self.find_preemption(prof, view, st, job, relaxed)
        {
            for v in &victims {
                st.evict(*v);
            }
            st.place(w, job, view.now_ms);
            st.preemptions_by_profile[p] += 1;
            self.notify(prof, view, st, relaxed, job, w);
            let worker = st.workers[w].id.clone();
            if view.explain {
                out.explanations.push(Explanation {
                    job: job.id,
                    filter_counts: to_counts(&counts),
                    feasible: 0,
                    total: n,
                    scanned,
                    top_scores: Vec::new(),
                    chosen: Some(worker.clone()),
                    summary: format!(
                        "{summary}; preempting {} lower-priority job(s) on {worker}",
                        victims.len()
                    ),
                });
            }
            out.preemptions.push(Preemption {
                job: job.id,
                attempt: job.next_attempt,
                epoch: view.epoch,
                worker,
                victims,
            });
            // Victims freed capacity: "fits nowhere" is no longer known for any shape.
            cache.clear();
            return;
        }
        if prof.config.queue == QueueStrategy::Backfill
            && !st.reservations.iter().any(|r| r.profile == p)
            && let Some(r) = self.reserve(p, prof, view, st, job, relaxed)
        {
            out.reservations.push(Reservation {
                job: job.id,
                worker: st.workers[r.worker].id.clone(),
                at_ms: r.at_ms,
            });
            st.reservations.push(r);
        }
        if let Some(k) = key {
            let topology_version = topology_sensitive.then_some(st.topology_version);
            let fresh = || CachedFailure {
                summary: summary.clone(),
                counts: counts.clone(),
                scanned,
                preemption_failed: [false; 5],
                topology_version,
            };
            let entry = cache.entry(k).or_insert_with(fresh);
            if entry.topology_version != topology_version {
                *entry = fresh();
            }
            if preempt_ok {
                entry.preemption_failed[rank] = true;
            }
        }
        fail(out, view, job, summary, Some((counts, scanned)));
    }

    /// Runs the filters `which` (indices into the profile's plugins) in order, then the backfill
    /// reservations; the first failure wins.
    fn filter(
        &self,
        prof: &ProfileRuntime,
        which: &[usize],
        ctx: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        cand: &Candidate<'_>,
    ) -> Result<(), Reason> {
        for &k in which {
            prof.plugins[k].plugin.filter(ctx, job, cand)?;
        }
        for r in &ctx.state.reservations {
            if r.worker != cand.index || r.job == job.id {
                continue;
            }
            let end = job
                .time_limit_ms
                .map_or(u64::MAX, |t| ctx.view.now_ms.saturating_add(t));
            if end > r.at_ms && !(job.resources.fits_in(&r.extra) && r.extra_slots > 0) {
                return Err(Reason::Owned(format!("reserved for job {}", r.job)));
            }
        }
        Ok(())
    }

    /// The filters other than resources and slots pass (preemption and reservations look at
    /// workers as if capacity were freed).
    fn non_resource_filters_pass(
        &self,
        prof: &ProfileRuntime,
        ctx: &SchedulingContext<'_, '_>,
        job: &QueuedJob,
        cand: &Candidate<'_>,
    ) -> bool {
        prof.filters.iter().all(|&k| {
            let p = &prof.plugins[k].plugin;
            p.resource_filter() || p.filter(ctx, job, cand).is_ok()
        })
    }

    /// Index (into `st.ix.static_sets`) of the workers passing the profile's static filters for
    /// the job's constraints, computed once per cycle; `None` when the profile has no static
    /// prefix or the per-cycle limit is reached.
    fn static_set<'v>(
        &self,
        p: usize,
        view: &'v ClusterView,
        st: &mut CycleState<'v>,
        job: &'v QueuedJob,
    ) -> Option<usize> {
        let prof = &self.profiles[p];
        if prof.static_prefix == 0 {
            return None;
        }
        let constraints: &'v SchedulingConstraints = &job.constraints;
        if let Some(&k) = st.ix.static_index[p].get(constraints) {
            return Some(k);
        }
        if st.ix.static_sets.len() >= STATIC_SETS_MAX {
            return None;
        }
        let set = {
            let ctx = SchedulingContext {
                view,
                profile_name: &prof.name,
                profile: &prof.config,
                relaxed: false,
                state: st,
            };
            let mut set = StaticSet::default();
            for i in 0..st.workers.len() {
                let cand = st.candidate(i);
                let verdict = prof.plugins[..prof.static_prefix]
                    .iter()
                    .try_for_each(|s| s.plugin.filter(&ctx, job, &cand));
                match verdict {
                    Ok(()) => set.eligible.push(i as u32),
                    Err(r) => count_reason(&mut set.reasons, r),
                }
            }
            set
        };
        let k = st.ix.static_sets.len();
        st.ix.static_index[p].insert(constraints.clone(), k);
        st.ix.static_sets.push(set);
        Some(st.ix.static_sets.len() - 1)
    }

    /// Scores the feasible workers, returns the index (into `scratch.feasible`) of the best and
    /// fills `scratch.top` when explaining.
    fn score<'v>(
        &self,
        prof: &ProfileRuntime,
        view: &'v ClusterView,
        st: &CycleState<'v>,
        job: &QueuedJob,
        relaxed: bool,
        scratch: &mut Scratch<'v>,
    ) -> usize {
        let nf = scratch.feasible.len();
        if nf == 1 && !view.explain {
            return 0;
        }
        let ctx = SchedulingContext {
            view,
            profile_name: &prof.name,
            profile: &prof.config,
            relaxed,
            state: st,
        };
        scratch.totals.clear();
        scratch.totals.resize(nf, 0.0);
        scratch.cands.clear();
        scratch
            .cands
            .extend(scratch.feasible.iter().map(|&w| st.candidate(w)));
        scratch.raw.clear();
        scratch.breakdown.clear();
        let c = &job.constraints;
        for &k in &prof.scorers {
            let s = &prof.plugins[k];
            if relaxed && s.plugin.soft() {
                continue;
            }
            if s.builtin {
                let idle = match s.plugin.name() {
                    "node_affinity" => c.node_affinity.preferred.is_empty(),
                    "spread" => !c
                        .job_affinity
                        .iter()
                        .any(|t| matches!(t.kind, JobAffinityKind::Spread { .. })),
                    _ => false,
                };
                if idle {
                    continue;
                }
            }
            scratch.raw.clear();
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for cand in &scratch.cands {
                let v = s.plugin.score(&ctx, job, cand);
                if let Some(v) = v {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                scratch.raw.push(v);
            }
            if lo > hi {
                continue; // not a scorer for this job
            }
            for (k, v) in scratch.raw.iter().enumerate() {
                let norm = match v {
                    None => 0.0,
                    Some(_) if hi <= lo => 100.0,
                    Some(v) => (v - lo) / (hi - lo) * 100.0,
                };
                scratch.totals[k] += s.weight * norm;
                if view.explain {
                    scratch
                        .breakdown
                        .push((k, s.plugin.name().to_string(), norm));
                }
            }
        }
        // Best: highest total, ties to the lower worker id (lower index = lower id).
        let better = |a: usize, b: usize| {
            let (ta, tb) = (scratch.totals[a], scratch.totals[b]);
            tb.partial_cmp(&ta)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(scratch.feasible[a].cmp(&scratch.feasible[b]))
        };
        if !view.explain {
            return (0..nf).min_by(|&a, &b| better(a, b)).unwrap_or(0);
        }
        let mut order: Vec<usize> = (0..nf).collect();
        order.sort_by(|&a, &b| better(a, b));
        scratch.top = order
            .iter()
            .take(3)
            .map(|&k| WorkerScore {
                worker: st.workers[scratch.feasible[k]].id.clone(),
                total: scratch.totals[k],
                breakdown: scratch
                    .breakdown
                    .iter()
                    .filter(|(i, _, _)| *i == k)
                    .map(|(_, n, v)| (n.clone(), *v))
                    .collect(),
            })
            .collect();
        order[0]
    }

    fn notify<'v>(
        &self,
        prof: &ProfileRuntime,
        view: &'v ClusterView,
        st: &CycleState<'v>,
        relaxed: bool,
        job: &QueuedJob,
        w: usize,
    ) {
        let ctx = SchedulingContext {
            view,
            profile_name: &prof.name,
            profile: &prof.config,
            relaxed,
            state: st,
        };
        for s in &prof.plugins {
            s.plugin.on_scheduled(&ctx, job, st.workers[w]);
        }
    }

    /// Cheapest set of strictly lower-priority running jobs whose eviction lets `job` fit, over
    /// all workers where the non-resource filters pass. Minimises (highest victim priority,
    /// victim count, sum of victim priorities, worker id).
    fn find_preemption<'v>(
        &self,
        prof: &ProfileRuntime,
        view: &'v ClusterView,
        st: &CycleState<'v>,
        job: &QueuedJob,
        relaxed: bool,
    ) -> Option<(usize, Vec<JobId>)> {
        let ctx = SchedulingContext {
            view,
            profile_name: &prof.name,
            profile: &prof.config,
            relaxed,
            state: st,
        };
        let rank = job.priority.rank();
        // (highest victim priority, victims, sum of victim priorities, worker index)
        type Cost = (u8, usize, u32, usize);
        let mut best: Option<(Cost, Vec<JobId>)> = None;
        for i in 0..st.workers.len() {
            let pool: Vec<&Occupant> = st.ix.occupants[i]
                .iter()
                .filter(|o| o.running && o.priority.rank() > rank && !st.victims.contains(&o.job))
                .collect();
            if pool.is_empty() {
                continue;
            }
            let cand = st.candidate(i);
            let mut free = cand.free;
            for o in &pool {
                free = free.saturating_add(&o.resources);
            }
            let mut slots = cand.free_slots + pool.len() as u32;
            if !job.resources.fits_in(&free) || slots == 0 {
                continue;
            }
            if !self.non_resource_filters_pass(prof, &ctx, job, &cand) {
                continue;
            }
            let mut pool = pool;
            // Reprieve the most important, longest-running jobs first.
            pool.sort_by_key(|o| (o.priority.rank(), o.started_at_ms, o.job));
            let mut victims: Vec<&Occupant> = Vec::new();
            for o in pool {
                let without = free.saturating_sub(&o.resources);
                if job.resources.fits_in(&without) && slots > 1 {
                    free = without;
                    slots -= 1;
                } else {
                    victims.push(o);
                }
            }
            if victims.is_empty() {
                continue; // it would fit without evicting: blocked by something else
            }
            let value = |p: Priority| 4 - p.rank();
            let cost = (
                victims.iter().map(|o| value(o.priority)).max().unwrap_or(0),
                victims.len(),
                victims
                    .iter()
                    .map(|o| value(o.priority) as u32)
                    .sum::<u32>(),
                i,
            );
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                let mut ids: Vec<JobId> = victims.iter().map(|o| o.job).collect();
                ids.sort();
                best = Some((cost, ids));
            }
        }
        best.map(|((_, _, _, i), v)| (i, v))
    }

    /// EASY backfill: the earliest time `job` fits on some worker, from the expected ends of the
    /// jobs there (jobs without a time limit never end).
    fn reserve<'v>(
        &self,
        p: usize,
        prof: &ProfileRuntime,
        view: &'v ClusterView,
        st: &CycleState<'v>,
        job: &QueuedJob,
        relaxed: bool,
    ) -> Option<ActiveReservation> {
        let ctx = SchedulingContext {
            view,
            profile_name: &prof.name,
            profile: &prof.config,
            relaxed,
            state: st,
        };
        let fits = |free: &Resources, slots: u32| job.resources.fits_in(free) && slots > 0;
        let mut best: Option<(u64, usize)> = None;
        for i in 0..st.workers.len() {
            let cand = st.candidate(i);
            if !self.non_resource_filters_pass(prof, &ctx, job, &cand) {
                continue;
            }
            let mut ends: Vec<(u64, Resources)> = st.ix.occupants[i]
                .iter()
                .filter(|o| !st.victims.contains(&o.job))
                .map(|o| (o.end_at(view.now_ms), o.resources))
                .collect();
            ends.sort_by_key(|(e, _)| *e);
            let (mut free, mut slots) = (cand.free, cand.free_slots);
            let mut at = fits(&free, slots).then_some(view.now_ms);
            for (end, res) in ends {
                if at.is_some() || end == u64::MAX {
                    break;
                }
                free = free.saturating_add(&res);
                slots += 1;
                if fits(&free, slots) {
                    at = Some(end);
                }
            }
            if let Some(at) = at
                && best.is_none_or(|b| (at, i) < b)
            {
                best = Some((at, i));
            }
        }
        let (at_ms, w) = best?;
        let cand = st.candidate(w);
        let (mut free, mut slots) = (cand.free, cand.free_slots);
        for o in &st.ix.occupants[w] {
            if o.end_at(view.now_ms) <= at_ms && !st.victims.contains(&o.job) {
                free = free.saturating_add(&o.resources);
                slots += 1;
            }
        }
        Some(ActiveReservation {
            profile: p,
            job: job.id,
            worker: w,
            at_ms,
            extra: free.saturating_sub(&job.resources),
            extra_slots: slots.saturating_sub(1),
        })
    }
}

/// Marks the unplaced head of a strict FCFS queue as waiting its turn (not a failure).
fn mark_fcfs_wait(out: &mut Outcome, job: JobId) {
    if let Some(u) = out.unplaced.last_mut().filter(|u| u.job == job) {
        u.summary.push_str(FCFS_WAIT_SUFFIX);
    }
    if let Some(e) = out.explanations.last_mut().filter(|e| e.job == job) {
        e.summary.push_str(FCFS_WAIT_SUFFIX);
    }
}

fn deadline_passed(view: &ClusterView, job: &QueuedJob) -> bool {
    job.deadline_at_ms.is_some_and(|d| view.now_ms >= d)
}

/// Records a job that is not placed: expired when its deadline passed, else unplaced.
fn fail(
    out: &mut Outcome,
    view: &ClusterView,
    job: &QueuedJob,
    summary: String,
    counts: Option<(Vec<(Reason, u32)>, usize)>,
) {
    let expired = deadline_passed(view, job);
    let line = if expired {
        format!("scheduling deadline exceeded: {summary}")
    } else {
        summary
    };
    if view.explain {
        let (counts, scanned) = counts.unwrap_or_default();
        out.explanations.push(Explanation {
            job: job.id,
            filter_counts: to_counts(&counts),
            feasible: 0,
            total: view.workers.len(),
            scanned,
            top_scores: Vec::new(),
            chosen: None,
            summary: line.clone(),
        });
    }
    if expired {
        out.expired.push(Expired {
            job: job.id,
            reason: line,
        });
    } else {
        out.unplaced.push(Unplaced {
            job: job.id,
            summary: line,
        });
    }
}

fn count_reason(reasons: &mut Vec<(Reason, u32)>, r: Reason) {
    let same = |a: &str, b: &str| (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b;
    match reasons.iter_mut().find(|(k, _)| same(k, &r)) {
        Some((_, n)) => *n += 1,
        None => reasons.push((r, 1)),
    }
}

fn to_counts(reasons: &[(Reason, u32)]) -> BTreeMap<String, u32> {
    reasons.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

/// How many feasible workers to find before scoring.
fn feasible_limit(config: &ProfileConfig, n: usize) -> usize {
    let pct = match config.percentage_of_workers_to_score {
        0 => (50 - (n / 125).min(45)) as u64,
        p => p.min(100) as u64,
    };
    let by_pct = (n as u64 * pct).div_ceil(100) as usize;
    by_pct
        .max(config.min_feasible_workers_to_score as usize)
        .clamp(1, n.max(1))
}

#[derive(Default)]
struct Scratch<'v> {
    feasible: Vec<usize>,
    cands: Vec<Candidate<'v>>,
    /// Inline slot/resource rejections: no free slot, cpu, memory, ephemeral-storage, gpu.
    inline_counts: [u32; 5],
    reasons: Vec<(Reason, u32)>,
    raw: Vec<Option<f64>>,
    totals: Vec<f64>,
    breakdown: Vec<(usize, String, f64)>,
    top: Vec<WorkerScore>,
}

/// "This shape fits nowhere this cycle": valid while capacity only shrinks (cleared after a
/// preemption). Shapes with Affinity or Spread terms also expire when topology counts change.
#[derive(PartialEq, Eq, Hash)]
struct ShapeKey<'v> {
    profile: usize,
    resources: Resources,
    constraints: &'v SchedulingConstraints,
    labels: Option<&'v BTreeMap<String, String>>,
    relaxed: bool,
    time_limit_ms: Option<Option<u64>>,
}

struct CachedFailure {
    summary: String,
    counts: Vec<(Reason, u32)>,
    scanned: usize,
    preemption_failed: [bool; 5],
    /// For shapes with Affinity/Spread terms: valid while the topology counts are unchanged.
    topology_version: Option<u64>,
}

pub(crate) struct ActiveReservation {
    profile: usize,
    job: JobId,
    worker: usize,
    at_ms: u64,
    /// What the reserved worker has beyond the reserved job's needs at `at_ms`.
    extra: Resources,
    extra_slots: u32,
}

struct TopologyEntry<'v> {
    selector: &'v BTreeMap<String, String>,
    key: &'v str,
    counts: DomainCounts,
}

/// Matching-job counts per topology domain, one entry per distinct (selector, topology key).
#[derive(Default)]
pub(crate) struct TopologyIndex<'v> {
    entries: Vec<TopologyEntry<'v>>,
    by_key: HashMap<(&'v BTreeMap<String, String>, &'v str), usize>,
}

impl<'v> TopologyIndex<'v> {
    pub(crate) fn get(
        &self,
        selector: &BTreeMap<String, String>,
        key: &str,
    ) -> Option<&DomainCounts> {
        // Fast path: plugins pass the job's own term, whose addresses an entry usually holds.
        let same = |e: &TopologyEntry<'v>| {
            std::ptr::eq(e.selector, selector)
                && std::ptr::eq(e.key.as_ptr(), key.as_ptr())
                && e.key.len() == key.len()
        };
        if let Some(e) = self.entries.iter().find(|e| same(e)) {
            return Some(&e.counts);
        }
        self.by_key
            .get(&(selector, key))
            .map(|&i| &self.entries[i].counts)
    }
}

/// Everything that changes while one cycle is planned.
pub(crate) struct CycleState<'v> {
    /// Workers in id order.
    pub(crate) workers: Vec<&'v WorkerInfo>,
    /// The per-worker state, changed by the cycle's decisions and rolled back by `finish`.
    ix: ClusterIndex,
    undo: Undo,
    pub(crate) topology: TopologyIndex<'v>,
    pub(crate) placed_count: u64,
    /// Bumped whenever a topology count changes.
    topology_version: u64,
    scan_start: usize,
    victims: HashSet<JobId>,
    preemptions_by_profile: Vec<u32>,
    reservations: Vec<ActiveReservation>,
}

impl<'v> CycleState<'v> {
    /// Starts a cycle from an index in step with `view`.
    pub(crate) fn new(view: &'v ClusterView, mut ix: ClusterIndex, profiles: usize) -> Self {
        ix.sync(view, profiles);
        let workers: Vec<&'v WorkerInfo> = ix
            .order
            .iter()
            .map(|&k| &view.workers[k as usize])
            .collect();
        CycleState {
            scan_start: (view.cycle as usize).wrapping_mul(104_729) % workers.len().max(1),
            workers,
            undo: ix.begin(),
            ix,
            topology: TopologyIndex::default(),
            placed_count: 0,
            topology_version: 0,
            victims: HashSet::default(),
            preemptions_by_profile: vec![0; profiles],
            reservations: Vec::new(),
        }
    }

    /// Ends the cycle: the index as it was before the cycle's decisions.
    pub(crate) fn finish(self) -> ClusterIndex {
        let mut ix = self.ix;
        ix.roll_back(self.undo);
        ix
    }

    pub(crate) fn candidate(&self, i: usize) -> Candidate<'v> {
        Candidate {
            index: i,
            info: self.workers[i],
            free: self.ix.free[i],
            free_slots: self.ix.free_slots[i],
            capacity: self.ix.capacity[i],
            slots: self.ix.slots[i],
            prefer_no_schedule: self.ix.prefer_no_schedule[i],
        }
    }

    /// Dominant share of a tenant: max over cpu, memory and gpu of its allocation ÷ capacity.
    pub(crate) fn dominant_share(&self, tenant: &TenantId) -> f64 {
        let Some(u) = self.ix.tenants.get(tenant) else {
            return 0.0;
        };
        let c = &self.ix.capacity_total;
        let f = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        f(u.resources.cpu_millis, c.cpu_millis)
            .max(f(u.resources.memory_bytes, c.memory_bytes))
            .max(f(u.resources.gpus as u64, c.gpus as u64))
    }

    fn quota_block(
        &self,
        quotas: &BTreeMap<TenantId, TenantQuota>,
        job: &QueuedJob,
    ) -> Option<String> {
        let q = quotas.get(&job.tenant)?;
        let u = self
            .ix
            .tenants
            .get(&job.tenant)
            .copied()
            .unwrap_or_default();
        let t = &job.tenant;
        if let Some(max) = q.max_running_jobs
            && u.jobs >= max
        {
            return Some(format!(
                "tenant {t} at quota: {}/{max} running jobs",
                u.jobs
            ));
        }
        if let Some(max) = q.max_cpu_millis
            && u.resources.cpu_millis + job.resources.cpu_millis > max
        {
            return Some(format!(
                "tenant {t} at quota: cpu {}/{} in use, job needs {}",
                format_cpu_millis(u.resources.cpu_millis),
                format_cpu_millis(max),
                format_cpu_millis(job.resources.cpu_millis)
            ));
        }
        if let Some(max) = q.max_memory_bytes
            && u.resources.memory_bytes + job.resources.memory_bytes > max
        {
            return Some(format!(
                "tenant {t} at quota: memory {}/{} in use, job needs {}",
                format_bytes_approx(u.resources.memory_bytes),
                format_bytes_approx(max),
                format_bytes_approx(job.resources.memory_bytes)
            ));
        }
        None
    }

    fn may_preempt(&self, config: &ProfileConfig, p: usize, job: &QueuedJob) -> bool {
        let rank = job.priority.rank() as usize;
        // Critical, High and Medium preempt strictly lower priorities; Low and Batch nothing.
        config.preemption
            && rank <= Priority::Medium.rank() as usize
            && self.preemptions_by_profile[p] < config.preemptions_per_cycle_max
            && self.ix.preemptible[(rank + 1).min(5)..]
                .iter()
                .any(|&n| n > 0)
    }

    /// Prepares the counts for a job-affinity term; false when the per-cycle limit of distinct
    /// terms is reached.
    fn ensure_topology(&mut self, selector: &'v BTreeMap<String, String>, key: &'v str) -> bool {
        if self.topology.by_key.contains_key(&(selector, key)) {
            return true;
        }
        if self.topology.entries.len() >= TOPOLOGY_TERMS_MAX {
            return false;
        }
        let mut ids: HashMap<&'v str, u32> = HashMap::default();
        let mut counts = DomainCounts {
            domain_of: Vec::with_capacity(self.workers.len()),
            ..Default::default()
        };
        for w in &self.workers {
            let d = match topology_domain(key, w.id.as_str(), &w.labels) {
                Some(name) => {
                    let next = ids.len() as u32;
                    *ids.entry(name).or_insert(next)
                }
                None => u32::MAX,
            };
            counts.domain_of.push(d);
        }
        counts.counts = vec![0; ids.len()];
        if !ids.is_empty() {
            counts.histogram.insert(0, ids.len() as u32);
        }
        for (i, occupants) in self.ix.occupants.iter().enumerate() {
            for o in occupants {
                if selector_matches(selector, &o.labels) {
                    counts.add_at(i, 1);
                }
            }
        }
        self.topology
            .by_key
            .insert((selector, key), self.topology.entries.len());
        self.topology.entries.push(TopologyEntry {
            selector,
            key,
            counts,
        });
        true
    }

    fn update_topology(&mut self, w: usize, labels: &BTreeMap<String, String>, delta: i64) {
        for e in &mut self.topology.entries {
            if selector_matches(e.selector, labels) && e.counts.add_at(w, delta) {
                self.topology_version += 1;
            }
        }
    }

    fn place(&mut self, w: usize, job: &'v QueuedJob, now_ms: u64) {
        let ix = &mut self.ix;
        debug_assert!(job.resources.fits_in(&ix.free[w]) && ix.free_slots[w] > 0);
        ix.save_worker(&mut self.undo, w);
        ix.save_tenant(&mut self.undo, &job.tenant);
        ix.free[w] = ix.free[w].saturating_sub(&job.resources);
        ix.free_slots[w] = ix.free_slots[w].saturating_sub(1);
        ix.refresh_block(w);
        let end_ms = job
            .time_limit_ms
            .map_or(u64::MAX, |t| now_ms.saturating_add(t));
        for r in &mut self.reservations {
            if r.worker == w && r.job != job.id && end_ms > r.at_ms {
                r.extra = r.extra.saturating_sub(&job.resources);
                r.extra_slots = r.extra_slots.saturating_sub(1);
            }
        }
        ix.occupants[w].push(Occupant {
            job: job.id,
            priority: job.priority,
            tenant: job.tenant.clone(),
            resources: job.resources,
            labels: job.labels.clone(),
            started_at_ms: now_ms,
            end_ms,
            running: false,
        });
        ix.index_of_job.insert(job.id, w);
        if !ix.tenants.contains_key(&job.tenant) {
            ix.tenants.insert(job.tenant.clone(), TenantUse::default());
        }
        let u = ix.tenants.get_mut(&job.tenant).expect("inserted above");
        u.jobs += 1;
        u.resources = u.resources.saturating_add(&job.resources);
        self.update_topology(w, &job.labels, 1);
        self.placed_count += 1;
    }

    fn evict(&mut self, job: JobId) {
        let ix = &mut self.ix;
        let Some(&w) = ix.index_of_job.get(&job) else {
            return;
        };
        let Some(pos) = ix.occupants[w].iter().position(|o| o.job == job) else {
            return;
        };
        ix.save_worker(&mut self.undo, w);
        let o = ix.occupants[w].remove(pos);
        ix.save_tenant(&mut self.undo, &o.tenant);
        self.victims.insert(job);
        ix.index_of_job.remove(&job);
        ix.free[w] = ix.free[w].saturating_add(&o.resources);
        ix.free_slots[w] += 1;
        ix.refresh_block(w);
        if o.running {
            ix.preemptible[o.priority.rank() as usize] -= 1;
        }
        if let Some(u) = ix.tenants.get_mut(&o.tenant) {
            u.jobs = u.jobs.saturating_sub(1);
            u.resources = u.resources.saturating_sub(&o.resources);
        }
        self.update_topology(w, &o.labels, -1);
    }
}
