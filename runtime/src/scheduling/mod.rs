//! The scheduling pipeline: queue → filters → scores → preemption → (caller) bind.
//!
//! Pure and deterministic: [`Pipeline::schedule`] reads a [`ClusterView`] and returns an
//! [`Outcome`]; the same view always gives the same outcome. [`Pipeline::schedule_with`] does
//! the same from a [`ClusterIndex`] the caller keeps in step with its view between cycles. Nothing here talks to actors, clocks
//! or random sources. See `README.md` beside this file for the phases and the guarantees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{AttemptNo, Epoch, JobId, TenantId, WorkerId};

pub mod bench;
pub mod constraints;
mod evict;
mod fit;
mod index;
mod pipeline;
pub mod plugins;
mod queue;
pub mod view;

pub use constraints::{
    JobAffinityKind, JobAffinityTerm, LabelRequirement, NodeAffinity, NodeSelectorTerm,
    SchedulingConstraints, SelectorOp, Taint, TaintEffect, Toleration, TolerationOperator,
    WeightedTerm,
};
pub use evict::{Eviction, Evictions, evictions};
pub use fit::{WOULD_FIT_FILTERS, would_fit};
pub use index::ClusterIndex;
pub use pipeline::Pipeline;
pub use plugins::{Candidate, DomainCounts, Reason, SchedulingContext, SchedulingPlugin};
pub use queue::effective_rank;
pub use view::{ClusterView, QueuedJob, RunningJob, WorkerInfo};

/// The profile jobs without a `profile` use.
pub const DEFAULT_PROFILE: &str = "default";
/// Most profiles in a scheduler config.
pub const PROFILES_MAX: usize = 32;
/// Default aging interval: a waiting job's rank improves one level per minute.
pub const AGING_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// First backoff after a job was found unplaceable.
pub const UNSCHEDULABLE_BACKOFF_MS_MIN: u64 = 1_000;
/// Longest backoff between scheduling attempts of an unplaceable job.
pub const UNSCHEDULABLE_BACKOFF_MS_MAX: u64 = 60_000;

/// Errors of scheduler configuration, constraints and plugin registration. Each names the field,
/// the value and the reason.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SchedulingError {
    /// A field holds an invalid value.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A plugin was registered for a profile that does not exist.
    #[error("unknown scheduler profile {0:?}")]
    UnknownProfile(String),
    /// Two plugins of one profile share a name.
    #[error("plugin {plugin:?} is already registered in profile {profile:?}")]
    DuplicatePlugin {
        /// The profile.
        profile: String,
        /// The plugin name.
        plugin: String,
    },
}

fn invalid(
    field: impl Into<String>,
    value: impl ToString,
    reason: impl Into<String>,
) -> SchedulingError {
    SchedulingError::Invalid {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn validate_profile_name(name: &str) -> Result<(), SchedulingError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "scheduler profile",
            name,
            "1 to 63 ASCII letters, digits, '-', '_' or '.'",
        ))
    }
}

/// The order in which a profile's pending jobs are considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStrategy {
    /// Submission order, greedy: when a job fits nowhere, later jobs are still tried (first fit,
    /// an aggressive backfill without reservations).
    Fifo,
    /// Strict first-come-first-served: submission order, and when the first job fits nowhere now
    /// but would fit some worker once capacity frees, no later job of the profile starts this
    /// cycle (head-of-line blocking). A job that fits no worker even when empty does not block.
    Fcfs,
    /// Critical > High > Medium > Low > Batch, FIFO within a level, with aging.
    #[default]
    Priority,
    /// Dominant-resource fairness between tenants (weighted); priority then FIFO within a tenant.
    Fair,
    /// Priority order plus EASY backfill: the first job that fits nowhere gets a reservation that
    /// later jobs may not delay.
    Backfill,
}

/// Weights of the built-in scorers (0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    /// Free fraction after placement.
    pub least_loaded: u32,
    /// Balanced cpu/memory utilisation.
    pub balanced: u32,
    /// Bin packing.
    pub most_allocated: u32,
    /// Deterministic rotation.
    pub round_robin: u32,
    /// Preferred node affinity (soft).
    pub node_affinity: u32,
    /// PreferNoSchedule taints (soft).
    pub taint_toleration: u32,
    /// Fewer matching jobs in the domain (soft).
    pub spread: u32,
}

impl ScoreWeights {
    /// The weight of a built-in scorer by plugin name (`None` for other names).
    pub fn get(&self, plugin: &str) -> Option<u32> {
        Some(match plugin {
            "least_loaded" => self.least_loaded,
            "balanced" => self.balanced,
            "most_allocated" => self.most_allocated,
            "round_robin" => self.round_robin,
            "node_affinity" => self.node_affinity,
            "taint_toleration" => self.taint_toleration,
            "spread" => self.spread,
            _ => return None,
        })
    }

    const SOFT: ScoreWeights = ScoreWeights {
        least_loaded: 0,
        balanced: 0,
        most_allocated: 0,
        round_robin: 0,
        node_affinity: 2,
        taint_toleration: 1,
        spread: 2,
    };
}

/// How the feasible worker is picked: presets over [`ScoreWeights`] (the seed's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerSelectionStrategy {
    /// Spread load: least_loaded 3, balanced 1.
    #[default]
    LeastLoaded,
    /// Even cpu/memory use: balanced 3, least_loaded 1.
    ResourceBalance,
    /// Fill workers up: most_allocated 3, balanced 1.
    BinPacking,
    /// Rotate: round_robin 3.
    RoundRobin,
    /// Explicit weights.
    Custom(ScoreWeights),
}

impl WorkerSelectionStrategy {
    /// The weight set. Presets also weigh the soft constraints: node_affinity 2,
    /// taint_toleration 1, spread 2.
    pub fn weights(&self) -> ScoreWeights {
        let soft = ScoreWeights::SOFT;
        match self {
            WorkerSelectionStrategy::LeastLoaded => ScoreWeights {
                least_loaded: 3,
                balanced: 1,
                ..soft
            },
            WorkerSelectionStrategy::ResourceBalance => ScoreWeights {
                balanced: 3,
                least_loaded: 1,
                ..soft
            },
            WorkerSelectionStrategy::BinPacking => ScoreWeights {
                most_allocated: 3,
                balanced: 1,
                ..soft
            },
            WorkerSelectionStrategy::RoundRobin => ScoreWeights {
                round_robin: 3,
                ..soft
            },
            WorkerSelectionStrategy::Custom(w) => *w,
        }
    }
}

/// One scheduler profile (`[scheduler.profiles.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Queue order.
    pub queue: QueueStrategy,
    /// A waiting job's rank improves one level per interval (Priority, Fair, Backfill);
    /// 0 disables aging.
    pub aging_interval_ms: u64,
    /// Score preset (or custom weights).
    pub worker_selection: WorkerSelectionStrategy,
    /// Per-plugin weight overrides (built-in or custom; custom plugins default to 1).
    pub plugin_weights: BTreeMap<String, u32>,
    /// Built-in plugins to switch off by name (see [`plugins::BUILTIN_PLUGINS`]).
    pub disabled_plugins: Vec<String>,
    /// Let jobs that fit nowhere evict strictly lower-priority running jobs.
    pub preemption: bool,
    /// Preemptions this profile may decide per cycle.
    pub preemptions_per_cycle_max: u32,
    /// Fair-share weight per tenant (absent = 1).
    pub tenant_weights: BTreeMap<TenantId, u32>,
    /// After this many failed cycles soft constraints (preferred affinity, PreferNoSchedule,
    /// spread score and Spread terms) are ignored.
    pub relax_soft_after_failures: Option<u32>,
    /// Share of workers to find feasible before scoring, 1..=100; 0 = adaptive like Kubernetes
    /// (50% − 1% per 125 workers, at least 5%). 100 = exhaustive.
    pub percentage_of_workers_to_score: u32,
    /// Never stop the scan with fewer feasible workers than this (unless all were scanned).
    pub min_feasible_workers_to_score: u32,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            queue: QueueStrategy::Priority,
            aging_interval_ms: AGING_INTERVAL_MS_DEFAULT,
            worker_selection: WorkerSelectionStrategy::LeastLoaded,
            plugin_weights: BTreeMap::new(),
            disabled_plugins: Vec::new(),
            preemption: true,
            preemptions_per_cycle_max: 16,
            tenant_weights: BTreeMap::new(),
            relax_soft_after_failures: None,
            percentage_of_workers_to_score: 0,
            min_feasible_workers_to_score: 100,
        }
    }
}

impl ProfileConfig {
    /// Checks the profile; errors name the field, the value and the reason.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        if self.percentage_of_workers_to_score > 100 {
            return Err(invalid(
                "percentage_of_workers_to_score",
                self.percentage_of_workers_to_score,
                "must be between 0 (adaptive) and 100",
            ));
        }
        if self.min_feasible_workers_to_score == 0 {
            return Err(invalid(
                "min_feasible_workers_to_score",
                0,
                "must be at least 1",
            ));
        }
        if self.preemptions_per_cycle_max > 10_000 {
            return Err(invalid(
                "preemptions_per_cycle_max",
                self.preemptions_per_cycle_max,
                "at most 10000",
            ));
        }
        for name in &self.disabled_plugins {
            if !plugins::BUILTIN_PLUGINS.contains(&name.as_str()) {
                return Err(invalid(
                    "disabled_plugins",
                    name,
                    format!(
                        "not a built-in plugin; known: {}",
                        plugins::BUILTIN_PLUGINS.join(", ")
                    ),
                ));
            }
        }
        for (name, w) in &self.plugin_weights {
            if *w > 1000 {
                return Err(invalid(format!("plugin_weights.{name}"), w, "at most 1000"));
            }
        }
        for (tenant, w) in &self.tenant_weights {
            TenantId::new(tenant.as_str())
                .map_err(|e| invalid("tenant_weights", tenant, e.to_string()))?;
            if !(1..=1000).contains(w) {
                return Err(invalid(
                    format!("tenant_weights.{tenant}"),
                    w,
                    "must be between 1 and 1000",
                ));
            }
        }
        if self.aging_interval_ms != 0 && self.aging_interval_ms < 100 {
            return Err(invalid(
                "aging_interval_ms",
                self.aging_interval_ms,
                "must be 0 (off) or at least 100",
            ));
        }
        Ok(())
    }

    /// The weight a plugin gets in this profile.
    pub fn weight_of(&self, plugin: &str) -> u32 {
        self.plugin_weights
            .get(plugin)
            .copied()
            .or_else(|| self.worker_selection.weights().get(plugin))
            .unwrap_or(1)
    }
}

/// A tenant's limits (`[quotas.tenants.NAME]`); a job over them is held, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantQuota {
    /// Running (and placed) jobs at most.
    pub max_running_jobs: Option<u32>,
    /// CPU held by running jobs at most (millicores).
    pub max_cpu_millis: Option<u64>,
    /// Memory held by running jobs at most (bytes).
    pub max_memory_bytes: Option<u64>,
}

/// The scheduler's configuration: named profiles and tenant quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Profiles by name. A missing `"default"` is added with [`ProfileConfig::default`].
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Quotas by tenant.
    pub quotas: BTreeMap<TenantId, TenantQuota>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            profiles: BTreeMap::from([(DEFAULT_PROFILE.to_string(), ProfileConfig::default())]),
            quotas: BTreeMap::new(),
        }
    }
}

impl SchedulerConfig {
    /// Checks every profile and quota.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        if self.profiles.len() > PROFILES_MAX {
            return Err(invalid(
                "scheduler.profiles",
                self.profiles.len(),
                format!("at most {PROFILES_MAX} profiles"),
            ));
        }
        for (name, p) in &self.profiles {
            validate_profile_name(name)?;
            p.validate().map_err(|e| match e {
                SchedulingError::Invalid {
                    field,
                    value,
                    reason,
                } => SchedulingError::Invalid {
                    field: format!("scheduler.profiles.{name}.{field}"),
                    value,
                    reason,
                },
                other => other,
            })?;
        }
        for (tenant, q) in &self.quotas {
            TenantId::new(tenant.as_str())
                .map_err(|e| invalid("quotas.tenants", tenant, e.to_string()))?;
            if q.max_running_jobs == Some(0) {
                return Err(invalid(
                    format!("quotas.tenants.{tenant}.max_running_jobs"),
                    0,
                    "must be at least 1 (remove the tenant's jobs instead)",
                ));
            }
        }
        Ok(())
    }
}

/// A job to start on a worker now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The job.
    pub job: JobId,
    /// The attempt number it will run as.
    pub attempt: AttemptNo,
    /// The epoch of the view.
    pub epoch: Epoch,
    /// The chosen worker.
    pub worker: WorkerId,
}

/// A job nominated to a worker once `victims` have stopped (the caller stops them, returns them
/// to Pending, and binds the job afterwards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    /// The preempting job.
    pub job: JobId,
    /// The attempt number it will run as.
    pub attempt: AttemptNo,
    /// The epoch of the view.
    pub epoch: Epoch,
    /// The nominated worker.
    pub worker: WorkerId,
    /// Running jobs of strictly lower priority to stop.
    pub victims: Vec<JobId>,
}

/// A job that fits nowhere now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// The job.
    pub job: JobId,
    /// "0/12 workers fit: 5 insufficient cpu, ..." or "unknown scheduler profile X".
    pub summary: String,
}

/// A job kept waiting by its tenant's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The job.
    pub job: JobId,
    /// "tenant acme at quota: 4/4 running jobs".
    pub reason: String,
}

/// A job whose scheduling deadline passed while it was still unplaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// The job.
    pub job: JobId,
    /// `scheduling deadline exceeded: <last summary>`.
    pub reason: String,
}

/// The EASY-backfill reservation made this cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The blocked job at the head of a Backfill queue.
    pub job: JobId,
    /// Where it will fit.
    pub worker: WorkerId,
    /// When it will fit (from running jobs' expected ends).
    pub at_ms: u64,
}

/// One worker's score for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerScore {
    /// The worker.
    pub worker: WorkerId,
    /// Weighted sum.
    pub total: f64,
    /// Plugin → normalised score (0–100, before weighting).
    pub breakdown: BTreeMap<String, f64>,
}

/// Why a job went where it went (or nowhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The job.
    pub job: JobId,
    /// Reason → workers rejected for it (the first failing filter per scanned worker).
    pub filter_counts: BTreeMap<String, u32>,
    /// Feasible workers found (the scan stops early on large clusters).
    pub feasible: usize,
    /// Workers in the view.
    pub total: usize,
    /// Workers scanned.
    pub scanned: usize,
    /// The best three, best first.
    pub top_scores: Vec<WorkerScore>,
    /// The worker picked (placement or preemption).
    pub chosen: Option<WorkerId>,
    /// One line for people.
    pub summary: String,
}

/// The result of one cycle.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Jobs to start now, in decision order.
    pub placements: Vec<Placement>,
    /// Jobs nominated after evicting victims.
    pub preemptions: Vec<Preemption>,
    /// Jobs that fit nowhere, with the reason summary.
    pub unplaced: Vec<Unplaced>,
    /// Jobs held by tenant quotas.
    pub held: Vec<Held>,
    /// Jobs past their scheduling deadline.
    pub expired: Vec<Expired>,
    /// Running jobs to evict because of NoExecute taints.
    pub evictions: Vec<Eviction>,
    /// Earliest future NoExecute eviction (wake up then).
    pub next_eviction_at_ms: Option<u64>,
    /// The backfill reservation(s) made, one per Backfill profile at most.
    pub reservations: Vec<Reservation>,
    /// One per decided job when the view asked for explanations.
    pub explanations: Vec<Explanation>,
}

/// Ends the summary of a job kept waiting by a strict FCFS queue (the head waiting for capacity,
/// and the jobs behind it): the job waits its turn, which is not a scheduling failure.
pub const FCFS_WAIT_SUFFIX: &str = " (fcfs: waits its turn)";

/// The job is waiting in a strict FCFS queue rather than failing to fit (no backoff needed).
pub fn waits_fcfs_turn(summary: &str) -> bool {
    summary.ends_with(FCFS_WAIT_SUFFIX)
}

/// How long to wait before trying an unplaceable job again: 1 s after the first failure,
/// doubling, at most 60 s; 0 before any failure.
pub fn unschedulable_backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(16);
    (UNSCHEDULABLE_BACKOFF_MS_MIN << shift).min(UNSCHEDULABLE_BACKOFF_MS_MAX)
}

/// "0/12 workers fit: 5 insufficient cpu, 4 untolerated taint dedicated=gpu" — largest count
/// first, then by name.
pub fn summarize<'a>(total: usize, reasons: impl IntoIterator<Item = (&'a str, u32)>) -> String {
    if total == 0 {
        return "0/0 workers fit: no worker is registered".into();
    }
    let mut r: Vec<(&str, u32)> = reasons.into_iter().filter(|(_, n)| *n > 0).collect();
    r.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = r.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("0/{total} workers fit: {}", parts.join(", "))
}

#[cfg(test)]
mod tests;
